// examples/sft — the SFT cold start of an R1-style pipeline, on the CPU.
//
// A small decoder-only transformer learns to answer generated arithmetic problems in the
// R1 template `<think>worked steps</think><answer>N</answer><eos>` from worked solutions
// (DeepSeek-AI, "DeepSeek-R1", 2025, §2.3.1: cold-start data). Training follows a curriculum
// (single operations -> multi-step -> mixed); at the end every held-out problem (disjoint from
// training by construction) is answered by greedy decoding with the KV cache, and exact-match
// accuracy is reported per difficulty level.
//
// The attention policy is a compile-time choice: configure with -DREASON_EXAMPLE_ATTENTION=<variant>
// (multi_head, sliding_window, top_k, hierarchical, mla; examples/common/attention_choice.hpp). So is
// the feed-forward policy: -DREASON_EXAMPLE_FFN=<variant> (dense, moe, moe_switch; examples/common/
// ffn_choice.hpp); the target sft_moe is this program built with the DeepSeek-V3-style moe variant.
// The run itself is examples/sft/sft_run.hpp, shared with examples/attention_swap.
//
// Outputs in --out: metrics.jsonl (one line per step, then one per level of the evaluation),
// heldout.jsonl (the evaluation problems), checkpoint.safetensors (resume with --resume; its
// tensors under their layout names are also the trained weights), eval.jsonl (every held-out
// completion). An MoE build adds each step's router statistics to its metrics line
// (examples/common/router_metrics.hpp).
// Ctrl-C stops after the current micro-batch and writes a checkpoint to resume from.
//
// Data parallel on the CPU: `mpirun -np N sft --dp N [--zero 1|2]` trains the same model on N
// ranks, each on --batch / N sequences of every micro-batch (the global batch and the run stay
// those of `sft`: the same data, the loss over every rank's tokens, the same steps up to rounding);
// rank 0 prints and writes, and evaluates the held-out set at the end. A data-parallel run stops
// (Ctrl-C, --stop-after) between steps only and resumes with the same --dp.
// examples/common/parallel_options.hpp says when MPI starts and how the ranks agree on errors.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <type_traits>

#include "common/attention_choice.hpp"
#include "common/ffn_choice.hpp"
#include "common/parallel_options.hpp"
#include "sft/sft_run.hpp"

using namespace reason;

using Net = sft::NetWith<examples::Attention, examples::FfnChoice>;  // this build's attention and FFN; the rest fixed

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

/// Trains and evaluates model `M` (this build's host model, or the CUDA model) with the options'
/// data, on this process (Par = train::SingleProcess) or as one rank of a data-parallel run.
template <class M, class Par = train::SingleProcess>
int train_and_evaluate(const sft::Options& o, examples::Ranks& ranks, const Par& parallel = {}) {
  namespace fs = std::filesystem;
  const sft::Data data(o, ranks.rank());
  if (ranks.writer()) data::write_problems_jsonl(fs::path(o.out) / "heldout.jsonl", data.held_out.problems);
  sft::Run<M, examples::FfnChoice, Par> run(o, parallel);

  const fs::path ckpt = fs::path(o.out) / "checkpoint.safetensors";
  // The held-out set decides which problems training avoids: part of the run's identity. (The
  // checkpoint also records the attention and FFN policies; a resume with others is refused.)
  const io::SafetensorsMetadata extra{{"example", "sft"},
                                      {"data.eval_per_level", std::to_string(o.eval_per_level)},
                                      {"data.eval_jsonl", o.eval_jsonl}};
  if (!o.resume.empty()) {
    const auto meta = train::load_checkpoint(o.resume, run.trainer());
    run.resume_router(meta);
    for (const auto& [key, value] : extra) {
      const auto it = meta.find(key);
      REASON_CHECK(it != meta.end() && it->second == value, "sft: '", o.resume, "' was written with ", key, " = '",
                   it == meta.end() ? std::string("(missing)") : it->second, "', this run has '", value, "'");
    }
    std::printf("resumed from %s at step %lld (micro-batch %d)\n", o.resume.c_str(),
                static_cast<long long>(run.trainer().step()), run.trainer().micro());
  }

  std::printf("built with REASON_EXAMPLE_ATTENTION=%s: %s\n", examples::AttentionChoice::name,
              examples::AttentionChoice::detail);
  std::printf("built with REASON_EXAMPLE_FFN=%s: %s\n", examples::FfnChoice::name, examples::FfnChoice::detail);
  run.print_model();
  sft::print_training(o, data);
  if constexpr (!std::is_same_v<Par, train::SingleProcess>) {
    const std::size_t state = run.trainer().buffers().optimizer_state_bytes();
    std::printf("data parallel: %d ranks x %lld sequences per micro-batch, %s; optimizer state %zu bytes on rank 0 "
                "(of %zu)\n",
                ranks.size(), static_cast<long long>(o.batch / ranks.size()),
                o.parallel.zero == 0 ? "replicated (ZeRO off)"
                                     : (o.parallel.zero == 1 ? "ZeRO-1 (optimizer state sharded)"
                                                             : "ZeRO-2 (optimizer state and gradients sharded)"),
                state, 2 * run.net().num_params() * sizeof(float));
  }

  const fs::path metrics_path = fs::path(o.out) / "metrics.jsonl";
  std::optional<io::JsonlWriter> metrics;  // rank 0's
  if (ranks.writer()) {
    if (o.resume.empty()) fs::remove(metrics_path);  // a fresh run starts a fresh log; a resumed one appends
    metrics.emplace(metrics_path);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto stop = [&] { return ranks.any(g_stop.load()); };  // every rank stops at the same step
  if (!run.train(data, metrics ? &*metrics : nullptr, ckpt, extra, stop).finished) return 0;
  if (!ranks.writer()) return 0;  // rank 0 evaluates
  // Dense builds' metrics lines stay as they were; MoE builds tag their evaluation with the FFN variant.
  sft::report(run.evaluate(data.held_out), o.out, *metrics, examples::AttentionChoice::name,
              Net::routed ? examples::FfnChoice::name : "");
  std::printf("total time %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

/// This build's host model on this process, or data parallel over the MPI world (a template so
/// that an MoE build does not compile the data-parallel run it refuses).
template <class M = Net>
int train_on_host(const sft::Options& o, examples::Ranks& ranks) {
  if (ranks.size() == 1) return train_and_evaluate<M>(o, ranks);
#if REASON_WITH_MPI
  if constexpr (M::routed)
    examples::option_error("sft: --dp > 1 with an MoE model (REASON_EXAMPLE_FFN=", examples::FfnChoice::name,
                           "): each rank's gates would balance on its own expert load and the replicas drift apart; "
                           "data parallelism trains the dense builds");
  else
    return train_and_evaluate<M>(o, ranks, ranks.policy());
#endif
  fail("sft: unreachable: several ranks without MPI");
}

/// --device cuda: the CUDA model of this build's (dense, multi_head) configuration.
int train_and_evaluate_on_gpu(const sft::Options& o, examples::Ranks& ranks) {
  if (ranks.size() > 1)
    examples::option_error("sft: --dp > 1 trains on the CPU (MPI); data parallelism on GPUs needs NCCL and is not "
                           "written for the examples yet");
#if REASON_EXAMPLE_CUDA  // set by CMake only for the dense multi_head build (examples/common/cuda_models.cu)
  static_assert(Net::head_dim == 32 && !Net::routed, "sft: the CUDA build of sft is the dense multi_head model");
  if (o.precision == "bf16") return train_and_evaluate<gpu::DenseTransformer<32, precision::Bf16>>(o, ranks);
  if (o.precision == "fp16") return train_and_evaluate<gpu::DenseTransformer<32, precision::Fp16>>(o, ranks);
  return train_and_evaluate<gpu::DenseTransformer<32, precision::Fp32>>(o, ranks);
#else
  (void)o;
  fail("sft: --device cuda: this build has no CUDA backend (it needs nvcc at configure time and the dense multi_head "
       "configuration: REASON_EXAMPLE_ATTENTION=multi_head, REASON_EXAMPLE_FFN=dense); this build is ",
       examples::AttentionChoice::name, ", ", examples::FfnChoice::name);
#endif
}

}  // namespace

int main(int argc, char** argv) try {
  sft::Options o;
  CLI::App app{"reason SFT example: a small transformer learns verifiable arithmetic in <think>/<answer> form"};
  sft::add_options(app, o);
  app.add_option("--out", o.out, "output directory")->capture_default_str();
  app.add_option("--resume", o.resume, "checkpoint to resume from");
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")->capture_default_str();
  app.add_option("--stop-after", o.stop_after, "checkpoint and exit after this many steps (simulated interruption)");
  app.add_option("--stop-micro", o.stop_micro,
                 "with --stop-after: stop that many micro-batches into the next step instead (mid-accumulation)")
      ->check(CLI::NonNegativeNumber);
  examples::add_parallel_options(app, o.parallel);
  CLI11_PARSE(app, argc, argv);

  examples::Ranks ranks(o.parallel, "sft");  // MPI starts here when --dp > 1 or under mpirun
  return ranks.run([&](examples::Ranks& r) {
    if (o.stop_micro >= o.micro_batches)
      examples::option_error("sft: --stop-micro ", o.stop_micro, " must be below --micro-batches ", o.micro_batches);
    if (o.stop_micro > 0 && r.size() > 1)
      examples::option_error("sft: --stop-micro needs --dp 1: a data-parallel run stops between steps");
    (void)r.share(o.batch, "--batch");
    if (o.device != "cuda" && o.precision != "fp32")
      examples::option_error("sft: --precision ", o.precision, " needs --device cuda (the host computes in fp32)");
    if (r.writer()) std::filesystem::create_directories(o.out);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    if (o.device == "cuda") return train_and_evaluate_on_gpu(o, r);
    return train_on_host(o, r);
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "sft: error: %s\n", e.what());
  return 1;
}
