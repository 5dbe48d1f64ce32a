// bench/cuda/bench_cuda_train.cu — training throughput of the CUDA model: gpu::Trainer::run_step
// (forward, fused LM-head loss, backward, clipping, AdamW) of gpu::DenseTransformer on random tokens.
//
//   train_step/gpt2_small/B:8/T:1024   width 768, 12 layers, 12 heads (head_dim 64, kv 12), SwiGLU 2048,
//                                      vocab 50304, bf16 compute with fp32 master weights — the model
//                                      bench/torch_side_by_side.py trains in PyTorch for comparison;
//   train_step/sft_example/B:32/T:96   the SFT example's model (width 128, 4 layers, 4 heads of 32,
//                                      kv 2, SwiGLU 384, vocab 262), bf16 and fp32: small-shape overhead.
// Each iteration is one optimizer step (one micro-batch), timed with CUDA events on the model's
// stream (run_step itself waits for the gradient norm, so the span covers the whole step).
// Counters: tokens/s (B T per step), FLOP/s = (6 · matrix parameters (LM head included, embedding
// excluded) · tokens + attention 12 · B · H · D · T(T+1)/2 (forward 4, backward 8)) per second.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_bench_common.hpp"
#include "reason/core/philox.hpp"
#include "reason/model/gpu_transformer.cuh"
#include "reason/train/gpu_train_buffers.cuh"
#include "reason/train/gpu_trainer.hpp"

namespace {

using namespace reason;

struct ModelCase {
  const char* name;
  model::Config config;
  index_t batch, seq;
};

template <int HeadDim, class Precision>
void train_step(benchmark::State& state, ModelCase mc) {
  bench::guarded(state, [&] {
    using Net = gpu::DenseTransformer<HeadDim, Precision>;
    Net net(mc.config);
    train::TrainConfig tc;
    tc.total_steps = 1'000'000;
    tc.batch = mc.batch;
    tc.seq = mc.seq;
    tc.schedule = {.peak_lr = 1e-4, .min_lr = 1e-5, .warmup_steps = 10, .total_steps = tc.total_steps};
    gpu::Trainer<Net> trainer(net, optim::AdamW{}, tc);
    const index_t vocab = mc.config.vocab_size, batch = mc.batch, seq = mc.seq;
    const train::BatchSource source = [vocab, batch, seq](std::int64_t step, int, train::TokenBatch& out) {
      Philox rng(7, static_cast<std::uint64_t>(step));
      out.batch = batch;
      out.seq = seq;
      out.tokens.resize(static_cast<std::size_t>(batch * seq));
      out.targets.resize(out.tokens.size());
      for (auto& t : out.tokens) t = static_cast<std::int32_t>(rng.next_u32() % vocab);
      for (auto& t : out.targets) t = static_cast<std::int32_t>(rng.next_u32() % vocab);
    };
    (void)trainer.run_step(source);  // warm-up: GEMM plans, workspaces
    gpu::Event start, stop;
    for (auto _ : state) {
      start.record(net.stream());
      (void)trainer.run_step(source);
      stop.record(net.stream());
      state.SetIterationTime(static_cast<double>(stop.elapsed_ms_since(start)) * 1e-3);
    }
    const model::Config& c = mc.config;
    double matrix_params = 0;
    for (const ParamInfo& p : net.layout().params())
      if (p.shape.size() == 2 && p.name != "embed.weight") matrix_params += static_cast<double>(p.numel);
    const double tokens = static_cast<double>(batch * seq);
    const double pairs = static_cast<double>(seq) * static_cast<double>(seq + 1) / 2.0;
    const double attention = 12.0 * static_cast<double>(batch * c.num_heads * HeadDim) * pairs * c.num_layers;
    bench::set_roofline(state, 6.0 * matrix_params * tokens + attention, 0.0);
    state.counters.erase("bytes/s");
    state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["params"] = static_cast<double>(net.num_params());
  });
}

}  // namespace

int main(int argc, char** argv) {
  return bench::gpu_bench_main(argc, argv, "bench_cuda_train", [] {
    const ModelCase gpt2{"gpt2_small",
                         {.vocab_size = 50304, .hidden_size = 768, .num_layers = 12, .num_heads = 12, .num_kv_heads = 12,
                          .intermediate_size = 2048, .max_seq_len = 1024},
                         8, 1024};
    const ModelCase sft{"sft_example",
                        {.vocab_size = 262, .hidden_size = 128, .num_layers = 4, .num_heads = 4, .num_kv_heads = 2,
                         .intermediate_size = 384, .max_seq_len = 96},
                        32, 96};
    auto name = [](const ModelCase& m, const char* precision) {
      return std::string("train_step/") + m.name + "/B:" + std::to_string(m.batch) + "/T:" + std::to_string(m.seq) +
             precision;
    };
    benchmark::RegisterBenchmark(name(gpt2, "").c_str(), train_step<64, precision::Bf16>, gpt2)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(name(sft, "").c_str(), train_step<32, precision::Bf16>, sft)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(name(sft, "/fp32").c_str(), train_step<32, precision::Fp32>, sft)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  });
}
