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
// (Ctrl-C, --stop-after) between steps only; its checkpoint records the global batch, so any --dp
// that splits the same --batch resumes it, one process included. MoE builds too: the
// gates balance on every rank's expert load, and the metrics' router statistics are summed over
// the ranks (the whole batch's).
// The model split on the CPU, one way per run (examples/common/model_split.hpp):
//   mpirun -np N sft --tp N       tensor parallel: each rank holds heads / N of every attention and
//                                 ffn / N of every FFN, and trains on the whole batch (dense builds;
//                                 multi_head, sliding_window or top_k attention)
//   mpirun -np N sft_moe --ep N   expert parallel: each rank holds 8 / N of each MoE layer's experts
//                                 and trains on --batch / N sequences (MoE builds)
//   mpirun -np N sft --pp N       pipeline parallel: each rank a stage of consecutive layers, every
//                                 step's micro-batches in the 1F1B schedule (dense builds; use
//                                 --micro-batches > 1 to fill the pipeline)
// Each prints a line about rank 0's share (parameter and optimizer-state bytes, its experts or
// layers), trains to the losses of one process up to rounding, stops between steps only, and writes
// checkpoints of the unsplit model (every rank's share gathered: one process resumes them). At the
// end every rank gathers the parameters and rank 0 evaluates them with the unsplit model. What a
// build cannot split (and numbers that do not divide over the ranks) is refused before training;
// --stop-micro and --device cuda take no split.
// On GPUs: `mpirun -np N sft --device cuda --dp N` trains data parallel with one GPU per rank, the
// gradients all-reduced by NCCL on the model's stream (examples/common/gpu_data_parallel.hpp; a
// build with NCCL; not yet run: it needs a machine with N GPUs).
// examples/common/parallel_options.hpp says when MPI starts and how the ranks agree on errors.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include "common/attention_choice.hpp"
#include "common/ffn_choice.hpp"
#include "common/gpu_data_parallel.hpp"
#include "common/model_split.hpp"
#include "common/parallel_options.hpp"
#include "sft/sft_run.hpp"

using namespace reason;

using Net = sft::NetWith<examples::Attention, examples::FfnChoice>;  // this build's attention and FFN; the rest fixed

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

/// Trains and evaluates model `M` (this build's host model, or the CUDA model) with the options'
/// data, on this process (Par = train::SingleProcess) or as one rank of a run over several: data
/// parallel (examples::MpiDataParallel) or the model split over the ranks (`sharding` and the
/// matching policy: examples/common/model_split.hpp).
template <class M, class Par = train::SingleProcess>
int train_and_evaluate(const sft::Options& o, examples::Ranks& ranks, const Par& parallel = {},
                       model::Sharding<typename M::T> sharding = {}) {
  namespace fs = std::filesystem;
  using Run = sft::Run<M, examples::FfnChoice, Par>;
  const sft::Data data(o, ranks.rank());
  if (ranks.writer()) data::write_problems_jsonl(fs::path(o.out) / "heldout.jsonl", data.held_out.problems);
  Run run(o, parallel, sharding);

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
  if constexpr (Run::split) {
    std::printf("%s\n", examples::split_summary(run.net(), run.trainer().buffers()).c_str());
  } else if constexpr (Run::distributed) {
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
  // Rank 0 evaluates: a split model once every rank has gathered its parameters whole (a collective).
  std::optional<sft::Evaluation> evaluation;
  if constexpr (Run::split) {
    const auto whole = run.gather_params();
    if (ranks.writer()) evaluation = run.evaluate(data.held_out, whole);
  } else if (ranks.writer()) {
    evaluation = run.evaluate(data.held_out);
  }
  if (!evaluation) return 0;
  // Dense builds' metrics lines stay as they were; MoE builds tag their evaluation with the FFN variant.
  sft::report(*evaluation, o.out, *metrics, examples::AttentionChoice::name,
              Net::routed ? examples::FfnChoice::name : "");
  std::printf("total time %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

/// This build's host model on this process, data parallel over the MPI world, or split over it
/// (--tp, --ep, --pp: what the build cannot split is refused first, on every rank alike).
int train_on_host(const sft::Options& o, examples::Ranks& ranks) {
  examples::check_model_split<Net>(o.parallel, examples::with_ffn<examples::FfnChoice>(sft::model_config(o)), "sft");
  return examples::run_split<Net>(ranks, [&]<class Par>(const Par& parallel, model::Sharding<float> sharding) {
    return train_and_evaluate<Net>(o, ranks, parallel, sharding);
  });
}

#if REASON_EXAMPLE_CUDA
/// The CUDA model M on this process's GPU, or data parallel with one GPU per rank (NCCL).
template <class M>
int train_on_gpus(const sft::Options& o, examples::Ranks& ranks) {
  if (ranks.size() == 1) return train_and_evaluate<M>(o, ranks);
#if REASON_WITH_NCCL && REASON_WITH_MPI
  examples::NcclDataParallel nccl(ranks);  // the rank's GPU becomes current before the model is built
  return train_and_evaluate<M>(o, ranks, nccl.policy());
#else
  fail("sft: unreachable: several GPUs without NCCL (check_gpu_parallel refuses them)");
#endif
}
#endif

/// --device cuda: the CUDA model of this build's (dense, multi_head) configuration, on one GPU or
/// data parallel over one GPU per rank (examples/common/gpu_data_parallel.hpp).
int train_and_evaluate_on_gpu(const sft::Options& o, examples::Ranks& ranks) {
#if REASON_EXAMPLE_CUDA  // set by CMake only for the dense multi_head build (examples/common/cuda_models.cu)
  examples::check_gpu_parallel(o.parallel, ranks.size(), "sft");
  static_assert(Net::head_dim == 32 && !Net::routed, "sft: the CUDA build of sft is the dense multi_head model");
  if (o.precision == "bf16") return train_on_gpus<gpu::DenseTransformer<32, precision::Bf16>>(o, ranks);
  if (o.precision == "fp16") return train_on_gpus<gpu::DenseTransformer<32, precision::Fp16>>(o, ranks);
  return train_on_gpus<gpu::DenseTransformer<32, precision::Fp32>>(o, ranks);
#else
  (void)o;
  (void)ranks;
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
  examples::add_parallel_options(app, o.parallel,
                                 {examples::Split::tensor, examples::Split::expert, examples::Split::pipeline});
  CLI11_PARSE(app, argc, argv);

  examples::Ranks ranks(o.parallel, "sft");  // MPI starts here when --dp/--tp/--ep/--pp > 1 or under mpirun
  return ranks.run([&](examples::Ranks& r) {
    if (o.stop_micro >= o.micro_batches)
      examples::option_error("sft: --stop-micro ", o.stop_micro, " must be below --micro-batches ", o.micro_batches);
    if (o.stop_micro > 0 && r.size() > 1)
      examples::option_error("sft: --stop-micro needs ", o.parallel.flag(), " 1: a ", o.parallel.kind(),
                             "-parallel run stops between steps");
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
