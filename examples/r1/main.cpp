// examples/r1 — the whole DeepSeek-R1 recipe at laptop scale, on the CPU (or a GPU: --device cuda).
//
// DeepSeek-AI 2025, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via Reinforcement
// Learning". Five stages; the first four save a safetensors checkpoint, and each can start from one:
//   1 sft      cold start: a small transformer imitates worked arithmetic traces in the template
//              <think>steps</think><answer>N</answer> (§2.3.1), on a curriculum of levels 1-4;
//   2 grpo     reinforcement learning with rule rewards, 0.8 accuracy + 0.2 format (§2.2.2), GRPO
//              (Shao et al. 2024) with a k3 KL penalty to the frozen SFT model as reference;
//   3 eval     greedy accuracy (± its standard error), pass@k from n samples (Chen et al. 2021),
//              format rate and completion length on held-out problems, for every model;
//   4 distill  a smaller student learns from the RL model's correct greedy answers to fresh
//              problems (§2.4), with the teacher's soft targets (Hinton et al. 2015) mixed in.
//   5 quantize the RL model with its linear layers in fp32, bf16, INT8, INT4 and FP8 (DeepSeek-V3
//              §3.3 blocks): greedy accuracy, model bytes and tokens/s side by side, on the CPU.
// The held-out problems are never drawn for training (data::TrainingSampler). The attention policy
// of teacher and student is the build's choice: -DREASON_EXAMPLE_ATTENTION=<variant> (multi_head,
// sliding_window, top_k, hierarchical, mla; examples/common/attention_choice.hpp). So is the
// feed-forward policy of the policy model: -DREASON_EXAMPLE_FFN=<variant> (dense, moe, moe_switch;
// examples/common/ffn_choice.hpp); the student is dense either way. An MoE build adds each SFT and
// GRPO step's router statistics to its metrics line (examples/common/router_metrics.hpp).
//
// `--device cuda` runs every stage on a GPU (gpu::DenseTransformer in fp32, or bf16 / fp16 with fp32
// master weights: --precision bf16 | fp16) in the dense multi_head build: training, rollouts with a
// device KV cache, the frozen reference, evaluation and distillation; rewards are host code either way.
//
// Outputs in --out: metrics.jsonl (one whole line per step of every stage and per evaluation),
// chart.svg (the curves), sft.safetensors, grpo.safetensors, student.safetensors (checkpoints;
// their tensors under layout names are the weights), heldout.jsonl, eval_<model>.jsonl.
// `--from grpo --checkpoint out/sft.safetensors` starts at stage 2 from a saved SFT model; given
// a checkpoint of the starting stage's own kind, that stage resumes where it stopped.
//
// Data parallel on the CPU: `mpirun -np N r1 --dp N [--zero 1|2]` runs the pipeline on N ranks.
// SFT and distillation split each step's --sft-batch sequences, GRPO each step's --prompts
// questions (each rank samples, scores and trains its own groups; rl/grpo_trainer.hpp), with the
// loss over every rank's tokens and the gradients summed; rank 0 alone evaluates, quantizes,
// prints and writes. Without --dp the run is the one-process run, unchanged.
// Tensor parallel: `mpirun -np N r1 --tp N` splits the policy's attention heads and FFN units over
// the ranks (Megatron) in SFT and GRPO — every rank works on every row, and GRPO's rollouts are the
// same on every rank (rl/grpo_trainer.hpp); the stages hand on the gathered unsplit weights, and the
// small student trains data parallel over the same ranks. Dense builds with q/k/v attention only.
// Expert parallel: `mpirun -np N r1 --ep N` in an MoE build (REASON_EXAMPLE_FFN=moe; the target r1_moe)
// spreads each MoE layer's routed experts over the ranks in SFT and GRPO; every rank trains on its
// share of each step's batch or questions, as under --dp, and GRPO's rollouts decode in lockstep (each
// decode step exchanges the ranks' tokens; infer/lockstep.hpp). The student trains data parallel.
// Pipeline parallel: `mpirun -np N r1 --pp N` (dense builds, at least N layers) makes each rank a stage
// of consecutive layers in SFT and GRPO: every stage works on every row, each decode step passes
// through the stages (every stage gets the last one's logits and samples the same tokens), and the
// training passes run in the 1F1B schedule. The student trains data parallel.
// On GPUs: `mpirun -np N r1 --device cuda --dp N` runs every training stage data parallel with one
// GPU per rank over NCCL (examples/common/gpu_data_parallel.hpp; not yet run: it needs N GPUs).
// examples/common/parallel_options.hpp says when MPI starts and how the ranks agree on errors.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/backend_options.hpp"
#include "common/gpu_data_parallel.hpp"
#include "common/model_split.hpp"
#include "common/parallel_options.hpp"
#include "pipeline.hpp"

using namespace reason;

namespace {

/// Several ranks: each step's batches must split over the ranks that share them (an OptionError on
/// every rank alike). SFT and GRPO over the data-parallel ranks; distillation over every rank (the
/// student trains data parallel under --tp too).
void check_shares(const r1::Options& o, examples::Ranks& ranks) {
  const r1::Stage from = r1::stage_of(o.from), until = r1::stage_of(o.until);
  auto runs = [&](r1::Stage s) { return s >= from && s <= until; };
  if (runs(r1::Stage::sft)) (void)ranks.share(o.sft_batch, "--sft-batch");
  if (runs(r1::Stage::grpo)) (void)ranks.share(o.prompts, "--prompts");
  if (runs(r1::Stage::distill) && o.sft_batch % ranks.size() != 0)
    examples::option_error("r1: --sft-batch ", o.sft_batch, " does not split over the ", ranks.size(),
                           " ranks the student trains on (choose a multiple of ", ranks.size(), ")");
}

#if REASON_EXAMPLE_CUDA
/// The pipeline of CUDA model G on this process's GPU, or data parallel with one GPU per rank (NCCL).
template <class G>
int run_on_gpus(const r1::Options& o, examples::Ranks& ranks) {
  if (ranks.size() == 1) {
    (void)gpu::require_device(0);  // before any output: no GPU, no pipeline
    return r1::Pipeline<G, G>(o, ranks).run();
  }
#if REASON_WITH_NCCL && REASON_WITH_MPI
  check_shares(o, ranks);
  examples::NcclDataParallel nccl(ranks);  // the rank's GPU becomes current before any model is built
  return r1::Pipeline<G, G, examples::NcclDataParallel::Policy>(o, ranks, nccl.policy(), {}, nccl.policy()).run();
#else
  fail("r1: unreachable: several GPUs without NCCL (check_gpu_parallel refuses them)");
#endif
}
#endif

/// --device cuda: the pipeline with the CUDA model of this build's (dense, multi_head) configuration,
/// on one GPU or data parallel over one GPU per rank (examples/common/gpu_data_parallel.hpp).
int run_on_gpu(const r1::Options& o, examples::Ranks& ranks) {
#if REASON_EXAMPLE_CUDA  // set by CMake only for the dense multi_head build (examples/common/cuda_models.cu)
  examples::check_gpu_parallel(o.parallel, ranks.size(), "r1");
  static_assert(r1::HostNet::head_dim == 32 && !r1::HostNet::routed, "r1: the CUDA build is the dense multi_head model");
  static_assert(std::is_same_v<r1::HostNet, r1::HostStudentNet>, "r1: the CUDA build's policy and student are dense");
  if (o.precision == "bf16") return run_on_gpus<gpu::DenseTransformer<32, precision::Bf16>>(o, ranks);
  if (o.precision == "fp16") return run_on_gpus<gpu::DenseTransformer<32, precision::Fp16>>(o, ranks);
  return run_on_gpus<gpu::DenseTransformer<32, precision::Fp32>>(o, ranks);
#else
  (void)o;
  (void)ranks;
  fail("r1: --device cuda: this build has no CUDA backend (it needs nvcc at configure time and the dense multi_head "
       "configuration: REASON_EXAMPLE_ATTENTION=multi_head, REASON_EXAMPLE_FFN=dense); this build is ",
       examples::AttentionChoice::name, ", ", examples::FfnChoice::name);
#endif
}

/// The host pipeline on this process, data parallel over the MPI world (an MoE policy's gates
/// balance on the expert load of every rank's tokens: train::balance_experts), or with the policy
/// split over it: tensor (--tp), expert (--ep) or pipeline (--pp) parallel; the student then trains
/// data parallel over the same ranks.
template <class Policy = r1::HostNet>
int run_on_host(const r1::Options& o, examples::Ranks& ranks) {
  if (o.precision != "fp32")
    examples::option_error("r1: --precision ", o.precision, " needs --device cuda (the host computes in fp32)");
  if (ranks.size() > 1) check_shares(o, ranks);
  examples::check_model_split<Policy>(o.parallel, r1::policy_config(o.teacher, o.seq), "r1");
  return examples::run_split<Policy>(ranks, [&]<class Par>(const Par& parallel, model::Sharding<float> sharding) {
    if constexpr (std::is_same_v<Par, train::SingleProcess>) {
      return r1::Pipeline<Policy, r1::HostStudentNet>(o, ranks, parallel, sharding).run();
    } else {
#if REASON_WITH_MPI  // (several ranks: the student trains data parallel over all of them, whatever Par is)
      return r1::Pipeline<Policy, r1::HostStudentNet, Par, examples::MpiDataParallel>(o, ranks, parallel, sharding,
                                                                                     ranks.policy())
          .run();
#endif
    }
  });
}

}  // namespace

int main(int argc, char** argv) try {
  r1::Options o;
  CLI::App app{"reason R1 pipeline: SFT cold start -> GRPO with rule rewards -> evaluation -> distillation"};
  app.add_option("--out", o.out, "output directory")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of data, held-out set, initialisation and sampling")->capture_default_str();
  app.add_option("--from", o.from, "first stage to run: sft, grpo, eval, distill or quantize")
      ->check(CLI::IsMember({"sft", "grpo", "eval", "distill", "quantize"}))
      ->capture_default_str();
  app.add_option("--checkpoint", o.checkpoint,
                 "model to start --from with (a checkpoint of an earlier stage), or a checkpoint of that stage to resume");
  examples::add_backend_options(app, o.device, o.precision, "cpu, or cuda: every stage on a GPU (dense multi_head build)");
  app.add_option("--until", o.until, "last stage to run")->check(CLI::IsMember({"sft", "grpo", "eval", "distill", "quantize"}))
      ->capture_default_str();
  // model
  app.add_option("--width", o.teacher.width, "hidden size of the policy (heads x 32)")->capture_default_str();
  app.add_option("--layers", o.teacher.layers, "transformer blocks of the policy")->capture_default_str();
  app.add_option("--heads", o.teacher.heads, "query heads of the policy (head_dim 32)")->capture_default_str();
  app.add_option("--kv-heads", o.teacher.kv_heads, "key/value heads of the policy (GQA)")->capture_default_str();
  app.add_option("--ffn", o.teacher.ffn, "SwiGLU hidden width of the policy (of its dense layers in an MoE build)")
      ->capture_default_str();
  app.add_option("--seq", o.seq, "maximum sequence length")->capture_default_str();
  // stage 1
  app.add_option("--sft-steps", o.sft_steps, "SFT optimizer steps")->capture_default_str();
  app.add_option("--sft-batch", o.sft_batch, "SFT sequences per step")->capture_default_str();
  app.add_option("--sft-lr", o.sft_lr, "SFT peak learning rate (cosine)")->capture_default_str();
  app.add_option("--flawed", o.flawed,
                 "share of order-sensitive level-3 cold-start traces written left to right, ignoring precedence")
      ->capture_default_str();
  // stage 2
  app.add_option("--grpo-steps", o.grpo_steps, "GRPO steps (one rollout batch each)")->capture_default_str();
  app.add_option("--prompts", o.prompts, "GRPO questions per step")->capture_default_str();
  app.add_option("--group-size,-G", o.group_size, "GRPO completions per question")->capture_default_str();
  app.add_option("--grpo-lr", o.grpo_lr, "GRPO learning rate (constant after warmup)")->capture_default_str();
  app.add_option("--beta", o.beta, "KL penalty to the reference (k3 estimator)")->capture_default_str();
  app.add_option("--advantage-sign", o.advantage_sign, "+1; -1 trains against the reward (the control experiment)")
      ->check(CLI::IsMember({-1, 1}))
      ->capture_default_str();
  app.add_option("--mu", o.mu, "optimisation passes per rollout batch")->capture_default_str();
  app.add_option("--temperature", o.temperature, "sampling temperature of GRPO rollouts and pass@k")->capture_default_str();
  app.add_option("--grpo-levels", o.grpo_levels, "weights of levels 1-4 in GRPO questions")->expected(4)->capture_default_str();
  // stage 3
  app.add_option("--eval-levels", o.eval_levels, "levels of the held-out task")->capture_default_str();
  app.add_option("--eval-per-level", o.eval_per_level, "held-out problems per level")->capture_default_str();
  app.add_option("--eval-samples", o.eval_samples, "samples per problem for pass@k (n)")->capture_default_str();
  // stage 4
  app.add_option("--student-width", o.student.width, "hidden size of the student")->capture_default_str();
  app.add_option("--student-layers", o.student.layers, "transformer blocks of the student")->capture_default_str();
  app.add_option("--student-ffn", o.student.ffn, "SwiGLU width of the student")->capture_default_str();
  app.add_option("--distill-steps", o.distill_steps, "distillation steps")->capture_default_str();
  app.add_option("--distill-alpha", o.distill_alpha, "weight of the teacher's soft targets (1 - alpha on its tokens)")
      ->capture_default_str();
  app.add_option("--log-every", o.log_every, "steps between progress lines")->capture_default_str();
  examples::add_parallel_options(app, o.parallel,
                                 {examples::Split::tensor, examples::Split::expert, examples::Split::pipeline});
  CLI11_PARSE(app, argc, argv);
  o.student.heads = std::max<index_t>(1, o.student.width / 32);
  o.student.kv_heads = o.student.heads % 2 == 0 ? o.student.heads / 2 : o.student.heads;
  examples::Ranks ranks(o.parallel, "r1");  // MPI starts here when --dp or --tp > 1, or under mpirun
  return ranks.run([&](examples::Ranks& r) { return o.device == "cuda" ? run_on_gpu(o, r) : run_on_host(o, r); });
} catch (const std::exception& e) {
  std::fprintf(stderr, "r1: error: %s\n", e.what());
  return 1;
}
