// examples/r1/pipeline.hpp — the four stages of the R1 example and what they share.
//
// The types are the recipe (one `using` per choice); Options are the numbers. Every stage writes
// its metrics as whole JSONL lines, redraws chart.svg, and saves a safetensors checkpoint.
// Par is the policy model's trainers' parallelism policy: train::SingleProcess, examples::
// MpiDataParallel under `mpirun -np N r1 --dp N`, parallel::TensorParallel under `--tp N` (the
// policy built with `sharding`: each rank holds its share of the heads and FFN units and trains on
// every row), parallel::ExpertParallel under `--ep N` (an MoE policy's routed experts spread over
// the ranks, each training on its share of the rows), or parallel::Pipeline under `--pp N` (each rank
// a stage of consecutive layers, working on every row). StudentPar is the distilled student's: the
// same as Par, except under a split, where the small dense student trains data parallel over the
// same ranks. Every rank runs the same Pipeline; the
// data-parallel stages split each step's batch over the ranks; stages hand the next one the unsplit
// weights (a split trainer gathers them); rank 0 alone evaluates, quantizes, prints and writes
// (examples/common/parallel_options.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/attention_choice.hpp"
#include "common/backend.hpp"
#include "common/ffn_choice.hpp"
#include "common/parallel_options.hpp"
#include "common/router_metrics.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"
#include "reason/data/problem_json.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/sft_source.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/io/jsonl.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/reward/accuracy.hpp"
#include "reason/reward/format.hpp"
#include "reason/reward/weighted.hpp"
#include "reason/rl/distill.hpp"
#include "reason/rl/evaluate.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/grpo_checkpoint.hpp"
#include "reason/rl/grpo_trainer.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/train_buffers.hpp"
#include "reason/train/progress.hpp"
#include "reason/train/trainer.hpp"
#include "svg_chart.hpp"

namespace r1 {

using namespace reason;

// The recipe. The attention policy is the build's choice (-DREASON_EXAMPLE_ATTENTION=<variant>,
// default multi_head: GQA with RoPE, head_dim 32); see examples/common/attention_choice.hpp. So is
// the policy's feed-forward policy (-DREASON_EXAMPLE_FFN=<variant>, default dense: SwiGLU; moe,
// moe_switch: mixtures of experts; examples/common/ffn_choice.hpp).
using AttentionChoice = examples::AttentionChoice;
using Attention = examples::Attention;
using FfnChoice = examples::FfnChoice;
using HostNet = model::Transformer<Attention,         // attention policy
                                   examples::Ffn,     // feed-forward policy
                                   norm::RMSNorm,     // norm policy
                                   linear::Dense,     // linear-layer policy
                                   precision::Fp32>;  // number types
// The distilled student is always dense: DeepSeek-R1 §2.4 distils its MoE model into dense Qwen and
// Llama models. (With the dense FFN choice it is the same type as HostNet.)
using HostStudentNet = model::Transformer<Attention, ffn::SwiGLU, norm::RMSNorm, linear::Dense, precision::Fp32>;
// `--device cuda` runs the same Pipeline with gpu::DenseTransformer<32, Fp32 | Bf16 | Fp16> as both
// (the dense multi_head build; main.cpp).
using Optimizer = optim::AdamW;
using R1Reward = reward::Weighted<reward::Weights{0.8f, 0.2f},  // R1 §2.2.2: accuracy and format rules
                                  reward::Accuracy, reward::Format>;
using GrpoLoss = rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f}>;  // GRPO with DAPO's clip-higher
using StudentLoss = rl::Distill<rl::DistillConfig{.divergence = rl::Divergence::forward_kl}>;  // Hinton et al.

struct ModelSize {
  index_t width = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 384;
};

struct Options {
  std::string out = "r1_out";
  std::uint64_t seed = 1234;
  std::string from = "sft", until = "quantize", checkpoint;
  std::string device = "cpu";     // cpu, or cuda (the dense multi_head build on a GPU)
  std::string precision = "fp32";  // with cuda: fp32, or bf16 / fp16 compute with fp32 master weights
  ModelSize teacher;
  ModelSize student{.width = 96, .layers = 3, .heads = 3, .kv_heads = 3, .ffn = 256};
  index_t seq = 96;
  // stage 1
  std::int64_t sft_steps = 2000;
  index_t sft_batch = 32;
  double sft_lr = 3e-3;
  double flawed = 0.5;  // share of order-sensitive level-3 cold-start traces solved left to right
  // stage 2
  std::int64_t grpo_steps = 250;
  index_t prompts = 16, group_size = 8;
  double grpo_lr = 1e-4, beta = 0.04;
  int mu = 1;
  int advantage_sign = 1;
  float temperature = 1.0f;
  std::vector<double> grpo_levels{0.0, 0.0, 1.0, 0.0};
  // stage 3
  std::vector<int> eval_levels{3};
  int eval_per_level = 512;
  index_t eval_samples = 8;
  // stage 4
  std::int64_t distill_steps = 1200;
  double distill_alpha = 0.5;
  std::int64_t log_every = 50;
  // processes: --dp, --zero, --tp, --ep, --pp (examples/common/parallel_options.hpp); the batches above are global
  examples::ParallelOptions parallel;
};

enum class Stage { sft = 0, grpo = 1, eval = 2, distill = 3, quantize = 4 };

inline Stage stage_of(const std::string& name) {
  if (name == "sft") return Stage::sft;
  if (name == "grpo") return Stage::grpo;
  if (name == "eval") return Stage::eval;
  if (name == "distill") return Stage::distill;
  if (name == "quantize") return Stage::quantize;
  fail("r1: unknown stage '", name, "' (sft, grpo, eval, distill, quantize)");
}

/// The held-out problems of the levels evaluated (make_held_out's streams, so a level's set does
/// not depend on which other levels are evaluated).
inline data::HeldOut eval_set(const Options& o) {
  const data::HeldOut all = data::make_held_out(o.seed, o.eval_per_level);
  std::vector<data::Problem> kept;
  for (const data::Problem& p : all.problems)
    if (std::find(o.eval_levels.begin(), o.eval_levels.end(), p.difficulty) != o.eval_levels.end()) kept.push_back(p);
  REASON_CHECK(!kept.empty(), "r1: --eval-levels selects no held-out problems (levels are 1-4)");
  return data::HeldOut::from_problems(std::move(kept));
}

/// The cold-start curriculum: single operations, then mostly multi-step expressions, then a mix.
inline data::Curriculum sft_curriculum(std::int64_t steps) { return data::Curriculum::standard(steps, 0.2, 0.8); }

inline model::Config config_of(const ModelSize& m, index_t seq) {
  return {.vocab_size = data::Tokenizer::vocab_size,
          .hidden_size = m.width,
          .num_layers = m.layers,
          .num_heads = m.heads,
          .num_kv_heads = m.kv_heads,
          .intermediate_size = m.ffn,
          .max_seq_len = seq};
}

/// The policy's model config: the flags' sizes and the FFN choice's numbers (expert width, dense layers).
inline model::Config policy_config(const ModelSize& m, index_t seq) { return examples::with_ffn<FfnChoice>(config_of(m, seq)); }

/// A model's evaluation, named.
struct Evaluated {
  std::string model;
  std::size_t params = 0;
  rl::EvalReport report;
};

/// The policy's greedy evaluation with its linear layers in one weight format (stage 5).
struct QuantizedEval {
  std::string format;
  std::size_t bytes = 0;
  double tokens_per_s = 0;
  rl::EvalReport report;
};

/// The stages for a policy model Net and a dense student StudentNet (host or CUDA models), on this
/// process or as one of `ranks` with the policy's trainers' policy Par (its model built with
/// `sharding` when Par splits it) and the student's StudentPar.
template <class Net, class StudentNet, class Par = train::SingleProcess, class StudentPar = Par>
class Pipeline {
 public:
  using Policy = rl::GrpoTrainer<Net, Optimizer, GrpoLoss, infer::Temperature, R1Reward, Par>;
  using Sharding = model::Sharding<typename Net::T>;

  Pipeline(Options o, examples::Ranks& ranks, const Par& parallel = {}, Sharding sharding = {},
           const StudentPar& student_parallel = {})
      : o_(std::move(o)),
        ranks_(ranks),
        par_(parallel),
        student_par_(student_parallel),
        sharding_(sharding),
        held_out_(eval_set(o_)),
        sampler_(held_out_),
        out_(o_.out) {
    REASON_CHECK(o_.grpo_levels.size() == 4, "r1: --grpo-levels needs 4 weights, got ", o_.grpo_levels.size());
    if (!ranks_.writer()) return;  // rank 0 writes
    std::filesystem::create_directories(out_);
    const bool fresh = stage_of(o_.from) == Stage::sft && o_.checkpoint.empty();
    if (fresh) std::filesystem::remove(out_ / "metrics.jsonl");  // a fresh run starts a fresh log
    metrics_.emplace(out_ / "metrics.jsonl");
    data::write_problems_jsonl(out_ / "heldout.jsonl", held_out_.problems);
  }

  int run();

 private:
  std::vector<float> run_sft(const model::Config& mc, const std::string& resume);
  std::vector<float> run_grpo(const model::Config& mc, const std::vector<float>& init, const std::string& resume);
  template <class EvalNet = Net>
  Evaluated run_eval(const std::string& name, const model::Config& mc, const std::vector<float>& params);
  std::vector<float> run_distill(const model::Config& teacher_config, const model::Config& student_config,
                                 const std::vector<float>& teacher);
  void run_quantize(const model::Config& mc, const std::vector<float>& params);
  template <class Linear>
  void evaluate_format(const std::string& format, const model::Config& mc, const std::vector<float>& params);
  void print_table() const;
  void draw_chart();
  bool runs(Stage s) const { return s >= stage_of(o_.from) && s <= stage_of(o_.until); }
  /// A metrics line (rank 0's file; nothing on the other ranks).
  void log(const io::Json& row) {
    if (metrics_) metrics_->write(row);
  }
  /// Whether the student's trainer reduces over ranks (a data-parallel policy).
  static constexpr bool distributed = !std::is_same_v<StudentPar, train::SingleProcess>;
  /// Whether Par splits the policy model (each rank holds a share; its trainers gather the weights).
  static constexpr bool split = train::SplitModelBuffers<typename Par::template buffers<Net, typename Net::T, Optimizer>>;
  /// The policy model of this rank: the whole model, or its share under a split.
  Net policy_net(const model::Config& mc) const {
    if constexpr (split)
      return Net(mc, sharding_);
    else
      return Net(mc);
  }
  /// An MoE policy's router statistics since the last call, over every rank's tokens: summed over
  /// the ranks when each trained on its own share (data parallel). None for a dense model.
  std::vector<moe::RouterStats> router_stats(Net& net) {
    std::vector<moe::RouterStats> stats;
    if constexpr (Net::routed) {
      stats = net.take_router_stats();
#if REASON_WITH_MPI
      if (o_.parallel.data_ranks() > 1)
        examples::sum_router_stats(stats, static_cast<std::size_t>(Net::ffn_policy::experts),
                                   [&](std::span<double> v) { ranks_.world().all_reduce(v, parallel::ReduceOp::sum); });
#endif
    }
    return stats;
  }
  /// The unsplit weights of a trainer of the policy (gathered from every rank under a split: a collective).
  template <class Trainer>
  std::vector<float> whole_weights(Trainer& t) const {
    t.to_host();  // (a GPU run's parameters to the host; nothing on the host)
    if constexpr (split)
      return t.buffers().gather_full();
    else
      return {t.params().begin(), t.params().end()};
  }

  Options o_;
  examples::Ranks& ranks_;
  Par par_;
  StudentPar student_par_;
  Sharding sharding_;
  data::HeldOut held_out_;
  data::TrainingSampler sampler_;
  std::filesystem::path out_;
  std::optional<io::JsonlWriter> metrics_;
  std::vector<Evaluated> evals_;
  std::vector<QuantizedEval> quantized_;  // stage 5, fp32 first
  std::vector<std::string> router_notes_;  // MoE builds: each training stage's final router balance
  double seconds_ = 0;
};

}  // namespace r1

#include "stages.hpp"
