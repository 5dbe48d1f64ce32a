// bench/bench_train_step.cpp — a whole training step of the example transformer, and where its time goes.
//
// Model: model::Transformer<attention::MultiHead<Shape{.head_dim = 32}>, ffn::SwiGLU> (RMSNorm,
// dense fp32), multi-head attention (kv heads = heads), vocabulary 262 (the byte tokenizer), trained
// by train::Trainer with AdamW on random tokens, batch 32 x seq 64. Two sizes:
//   w128_l4_h4_f384   width 128, 4 layers, 4 heads, SwiGLU 384 (the SFT example's default)
//   w256_l6_h8_f768   width 256, 6 layers, 8 heads, SwiGLU 768
// Benchmarks per size:
//   train_step        Trainer::run_step: forward, fused LM-head loss, backward, clipping, AdamW;
//   forward_backward  Transformer::forward + backward only (the step without clipping and optimizer);
//   step_gemms        only the GEMMs of one step, same shapes and order-independent (kernels::gemm);
//   step_attention    only the attention kernels of one step (forward + backward, every layer);
//   loss              forward-only mean loss (evaluation), batch 64 x 64;
//   decode_step       greedy decoding with the KV cache, batch 64, positions 0..63 per iteration.
// FLOPs: 6 x (matrix parameters, LM head included, embedding excluded: a lookup) x tokens for a
// training step, 2 x that per token forward-only, plus the attention's own FLOPs (4 D per scored
// query-key pair forward, 8 D backward; causal pairs T (T + 1) / 2 per sequence and head).
// Counters: tokens/s and FLOP/s. Real time: everything runs on reason's pool.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/kernels/attention.hpp"
#include "reason/kernels/gemm.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/train/trainer.hpp"

using namespace reason;
using kernels::Trans;

namespace {

using Attention = attention::MultiHead<attention::Shape{.head_dim = 32}>;  // MHA/GQA with RoPE, D = 32
using Net = model::Transformer<Attention,         // attention policy
                               ffn::SwiGLU,       // feed-forward policy
                               norm::RMSNorm,     // norm policy
                               linear::Dense,     // linear-layer policy
                               precision::Fp32>;  // number types
using Trainer = train::Trainer<Net, optim::AdamW>;
constexpr index_t D = Net::head_dim;

struct Size {
  const char* name;
  index_t width, layers, heads, ffn;
};
constexpr Size sizes[] = {{"w128_l4_h4_f384", 128, 4, 4, 384}, {"w256_l6_h8_f768", 256, 6, 8, 768}};
constexpr index_t train_batch = 32, seq = 64, eval_batch = 64;

model::Config config_of(const Size& s) {
  return {.vocab_size = 262,
          .hidden_size = s.width,
          .num_layers = s.layers,
          .num_heads = s.heads,
          .num_kv_heads = s.heads,
          .intermediate_size = s.ffn,
          .max_seq_len = seq};
}

/// Parameters that take part in matrix products: every matrix but the embedding table.
double matrix_params(const Net& net) {
  double n = 0;
  for (const auto& p : net.layout().params())
    if (p.shape.size() >= 2 && p.name != "embed.weight") n += double(p.numel);
  return n;
}

/// Forward attention FLOPs of all layers over `batch` causal sequences of `t` tokens.
double attention_flops(const model::Config& c, index_t batch, index_t t) {
  return 4.0 * double(D) * double(c.num_heads) * double(batch) * double(t) * double(t + 1) / 2 * double(c.num_layers);
}

/// Random tokens, targets the next token (every position has one): a pure function of (step, micro).
void random_batch(index_t batch, index_t vocab, std::uint64_t stream, train::TokenBatch& out) {
  Philox rng(7, stream);
  out.resize(batch, seq);
  for (index_t b = 0; b < batch; ++b) {
    for (index_t t = 0; t <= seq; ++t) {
      const auto tok = static_cast<std::int32_t>(rng.next_u32() % static_cast<std::uint32_t>(vocab));
      if (t < seq) out.tokens[std::size_t(b * seq + t)] = tok;
      if (t > 0) out.targets[std::size_t(b * seq + t - 1)] = tok;
    }
  }
}

train::TrainConfig train_config() {
  train::TrainConfig tc;
  tc.total_steps = std::int64_t{1} << 40;  // never done while timing
  tc.batch = train_batch;
  tc.seq = seq;
  tc.schedule.total_steps = 1000;
  return tc;
}

void train_counters(benchmark::State& state, const Net& net, index_t batch) {
  const double tokens = double(batch * seq);
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] =
      benchmark::Counter(6.0 * matrix_params(net) * tokens + 3.0 * attention_flops(net.config(), batch, seq),
                         benchmark::Counter::kIsIterationInvariantRate);
  state.counters["params"] = double(net.num_params());
}

void run_train_step(benchmark::State& state, const Size& s) {
  Net net(config_of(s));
  Trainer trainer(net, optim::AdamW{}, train_config());
  const index_t vocab = net.config().vocab_size;
  const train::BatchSource source = [&](std::int64_t step, int micro, train::TokenBatch& out) {
    random_batch(train_batch, vocab, std::uint64_t(step) * 16 + std::uint64_t(micro), out);
  };
  trainer.run_step(source);  // warm-up: first touch of the arena and optimizer state
  for (auto _ : state) benchmark::DoNotOptimize(trainer.run_step(source));
  train_counters(state, net, train_batch);
}

void run_forward_backward(benchmark::State& state, const Size& s) {
  Net net(config_of(s));
  Trainer trainer(net, optim::AdamW{}, train_config());  // owns initialised params and grads; net reserved
  train::TokenBatch b;
  random_batch(train_batch, net.config().vocab_size, 1, b);
  const float scale = 1.0f / float(b.target_count());
  auto pass = [&] {
    std::fill(trainer.grads().begin(), trainer.grads().end(), 0.0f);  // as the trainer does before a step
    benchmark::DoNotOptimize(net.forward(trainer.params().data(), trainer.grads().data(), b.tokens_view(), b.targets_view(), scale));
    net.backward(trainer.params().data(), trainer.grads().data());
  };
  pass();  // warm-up: first touch of the activation arena
  for (auto _ : state) pass();
  train_counters(state, net, train_batch);
}

struct GemmCall {
  Trans ta, tb;
  index_t M, N, K;
  float beta;
};

/// The GEMMs of one training step, as the model issues them (linear.hpp, lm_head.hpp).
std::vector<GemmCall> step_gemm_calls(const model::Config& c, index_t rows) {
  std::vector<GemmCall> g;
  auto linear = [&](index_t m, index_t in, index_t out) {
    g.push_back({Trans::N, Trans::T, m, out, in, 0.0f});  // y = x W^T
    g.push_back({Trans::N, Trans::N, m, in, out, 0.0f});  // dx = dy W
    g.push_back({Trans::T, Trans::N, out, in, m, 1.0f});  // dW += dy^T x
  };
  for (index_t l = 0; l < c.num_layers; ++l) {
    linear(rows, c.hidden_size, (c.num_heads + 2 * c.num_kv_heads) * D);  // qkv
    linear(rows, c.num_heads * D, c.hidden_size);                         // o
    linear(rows, c.hidden_size, 2 * c.intermediate_size);                 // gate_up
    linear(rows, c.intermediate_size, c.hidden_size);                     // down
  }
  for (index_t r0 = 0; r0 < rows; r0 += Net::loss_chunk_rows)  // the fused LM head, a chunk of rows at a time
    linear(std::min(Net::loss_chunk_rows, rows - r0), c.hidden_size, c.vocab_size);
  return g;
}

void run_step_gemms(benchmark::State& state, const Size& s) {
  const model::Config c = config_of(s);
  const auto calls = step_gemm_calls(c, train_batch * seq);
  std::size_t most = 0;
  double flops = 0;
  for (const auto& g : calls) {
    most = std::max({most, std::size_t(g.M * g.K), std::size_t(g.K * g.N), std::size_t(g.M * g.N)});
    flops += 2.0 * double(g.M) * double(g.N) * double(g.K);
  }
  const std::vector<float> a = bench::random_floats(most, 1), b = bench::random_floats(most, 2);
  std::vector<float> out(most, 0.0f);
  for (auto _ : state) {
    for (const auto& g : calls) {
      const auto A = g.ta == Trans::N ? make_view(a.data(), g.M, g.K) : make_view(a.data(), g.K, g.M);
      const auto B = g.tb == Trans::N ? make_view(b.data(), g.K, g.N) : make_view(b.data(), g.N, g.K);
      kernels::gemm<float>(g.ta, g.tb, 1.0f, View<const float, 2>(A), View<const float, 2>(B), g.beta,
                           make_view(out.data(), g.M, g.N));
    }
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemms"] = double(calls.size());
}

void run_step_attention(benchmark::State& state, const Size& s) {
  const model::Config c = config_of(s);
  const index_t B = train_batch, H = c.num_heads, Hkv = c.num_kv_heads, w = H + 2 * Hkv;
  const std::vector<float> qkv = bench::random_floats(std::size_t(B * seq * w * D), 1);
  const std::vector<float> dout = bench::random_floats(std::size_t(B * seq * H * D), 2);
  std::vector<float> dqkv(qkv.size()), probs(std::size_t(B * H * seq * seq)), out(dout.size());
  auto split = [&](const float* base, index_t h0, index_t heads) {
    return View<const float, 4>(base + h0 * D, {B, seq, heads, D}, {seq * w * D, w * D, D, 1});
  };
  auto split_mut = [&](float* base, index_t h0, index_t heads) {
    return View<float, 4>(base + h0 * D, {B, seq, heads, D}, {seq * w * D, w * D, D, 1});
  };
  const auto q = split(qkv.data(), 0, H), k = split(qkv.data(), H, Hkv), v = split(qkv.data(), H + Hkv, Hkv);
  const auto P = make_view(probs.data(), B, H, seq, seq);
  for (auto _ : state) {
    for (index_t l = 0; l < c.num_layers; ++l) {
      kernels::attention_forward<float>(q, k, v, true, P, make_view(out.data(), B, seq, H, D));
      kernels::attention_backward<float>(q, k, v, P, make_view(dout.data(), B, seq, H, D), split_mut(dqkv.data(), 0, H),
                                         split_mut(dqkv.data(), H, Hkv), split_mut(dqkv.data(), H + Hkv, Hkv));
    }
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(3.0 * attention_flops(c, B, seq), benchmark::Counter::kIsIterationInvariantRate);
}

void run_loss(benchmark::State& state, const Size& s) {
  Net net(config_of(s));
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), 1);
  net.reserve(eval_batch, seq);
  train::TokenBatch b;
  random_batch(eval_batch, net.config().vocab_size, 2, b);
  benchmark::DoNotOptimize(net.loss(params.data(), b.tokens_view(), b.targets_view()));  // warm-up: first touch
  for (auto _ : state) benchmark::DoNotOptimize(net.loss(params.data(), b.tokens_view(), b.targets_view()));
  const double tokens = double(eval_batch * seq);
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * matrix_params(net) * tokens + attention_flops(net.config(), eval_batch, seq),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void run_decode(benchmark::State& state, const Size& s) {
  Net net(config_of(s));
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), 1);
  const index_t vocab = net.config().vocab_size;
  auto st = net.make_decode_state(eval_batch, seq);
  std::vector<std::int32_t> feed(std::size_t(eval_batch), 1);
  std::vector<float> logits(std::size_t(eval_batch * vocab));
  for (auto _ : state) {
    // One greedy sequence per batch row, positions 0..seq-1; each position's key/value overwrite
    // the previous iteration's, and position p reads only positions <= p.
    std::fill(feed.begin(), feed.end(), 1);
    for (index_t pos = 0; pos < seq; ++pos) {
      net.decode_step(params.data(), make_view(static_cast<const std::int32_t*>(feed.data()), eval_batch), pos, st,
                      make_view(logits.data(), eval_batch, vocab));
      for (index_t b = 0; b < eval_batch; ++b) {
        const float* row = logits.data() + b * vocab;
        feed[std::size_t(b)] = static_cast<std::int32_t>(std::max_element(row, row + vocab) - row);
      }
    }
    benchmark::DoNotOptimize(feed.data());
  }
  const double tokens = double(eval_batch * seq);
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * matrix_params(net) * tokens + attention_flops(net.config(), eval_batch, seq),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  for (const Size& s : sizes) {
    const std::string suffix = std::string("/") + s.name + "/B:" + std::to_string(train_batch) + "/T:" + std::to_string(seq);
    const std::string eval_suffix = std::string("/") + s.name + "/B:" + std::to_string(eval_batch) + "/T:" + std::to_string(seq);
    auto add = [](const std::string& name, auto fn, const Size& size) {
      benchmark::RegisterBenchmark(name.c_str(), fn, size)->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    add("train_step" + suffix, run_train_step, s);
    add("forward_backward" + suffix, run_forward_backward, s);
    add("step_gemms" + suffix, run_step_gemms, s);
    add("step_attention" + suffix, run_step_attention, s);
    add("loss" + eval_suffix, run_loss, s);
    add("decode_step" + eval_suffix, run_decode, s);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
