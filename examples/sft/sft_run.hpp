// examples/sft/sft_run.hpp — the SFT example's run as a template over the model type: flags, data,
// the training loop (metrics, checkpoints, interruption) and the greedy held-out evaluation.
//
// examples/sft runs it for the attention and feed-forward policies the build was configured with
// (sft_moe: the DeepSeek-V3-style MoE FFN); examples/attention_swap runs the same code once per
// attention policy, with the dense FFN, on the same data and seed. Under `mpirun -np N sft --dp N`
// (examples/common/parallel_options.hpp) the trainer's parallelism policy is Par (data parallel,
// ZeRO-1/2) and each rank trains on its share of every micro-batch (Options::parallel.dp ranks).
// Under --tp, --ep or --pp (examples/common/model_split.hpp) the model is this rank's share, built
// with the sharding Run is given, and Par the split's policy: tensor-parallel ranks and pipeline
// stages draw the whole batch, expert-parallel ranks their share; a split model is evaluated by
// the unsplit model on its gathered parameters.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/backend.hpp"
#include "common/backend_options.hpp"
#include "common/ffn_choice.hpp"
#include "common/parallel_options.hpp"
#include "common/router_metrics.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"
#include "reason/data/problem_json.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/sft_source.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/io/jsonl.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/communicator.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/progress.hpp"
#include "reason/train/trainer.hpp"

namespace sft {

using namespace reason;

/// The examples' model with attention policy `Attention` and the feed-forward policy of `FfnVariant`
/// (a variant of common/ffn_choice.hpp; dense SwiGLU by default); the other choices are fixed.
template <class Attention, class FfnVariant = examples::ffn_variants::dense>
using NetWith = model::Transformer<Attention,                    // attention policy
                                   typename FfnVariant::type,    // feed-forward policy
                                   norm::RMSNorm,                // norm policy
                                   linear::Dense,                // linear-layer policy
                                   precision::Fp32>;             // number types
using Optimizer = optim::AdamW;

struct Options {
  // model
  index_t width = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 384, seq = 96;
  // training
  std::int64_t steps = 3200;
  int micro_batches = 1;
  index_t batch = 32;
  double lr = 3e-3, min_lr = 1e-4, weight_decay = 0.05, clip = 1.0;
  std::int64_t warmup = 150;
  std::uint64_t seed = 1234;
  // evaluation and output
  int eval_per_level = 128;
  // backend
  std::string device = "cpu";     // cpu, or cuda (the dense multi_head model on a GPU)
  std::string precision = "fp32";  // cuda: fp32, bf16 or fp16 (fp32 master weights)
  std::string out = "sft_out";
  std::string resume;
  std::string eval_jsonl;  // evaluate on these problems instead of generated ones
  std::int64_t checkpoint_every = 200;
  std::int64_t stop_after = -1;  // simulate an interruption: checkpoint and exit after this many steps
  int stop_micro = 0;            // ... and this many micro-batches of the next step (mid-accumulation)
  std::int64_t log_every = 50;
  // processes (sft's --dp, --zero, --tp, --ep, --pp; examples/common/parallel_options.hpp): batch is
  // the global one
  examples::ParallelOptions parallel;
};

/// The flags of the model, the training run and the evaluation (each program adds its own output flags).
inline void add_options(CLI::App& app, Options& o) {
  app.add_option("--width", o.width, "model width (hidden size)")->capture_default_str();
  app.add_option("--layers", o.layers, "transformer blocks")->capture_default_str();
  app.add_option("--heads", o.heads, "query heads (head_dim is 32)")->capture_default_str();
  app.add_option("--kv-heads", o.kv_heads, "key/value heads (GQA)")->capture_default_str();
  app.add_option("--ffn", o.ffn, "SwiGLU hidden width (of the dense layers of an MoE model)")->capture_default_str();
  app.add_option("--seq", o.seq, "maximum sequence length")->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str();
  app.add_option("--micro-batches", o.micro_batches, "micro-batches accumulated per step")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "final learning rate of the cosine schedule")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warmup steps")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app.add_option("--clip", o.clip, "global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of data, held-out set and initialisation")->capture_default_str();
  app.add_option("--eval-per-level", o.eval_per_level, "held-out problems per difficulty level")->capture_default_str();
  app.add_option("--eval-jsonl", o.eval_jsonl,
                 "held-out problems (JSONL: question, answer, difficulty, trace) instead of generated ones; "
                 "training never draws them");
  app.add_option("--log-every", o.log_every, "steps between progress lines when not on a terminal")->capture_default_str();
  examples::add_backend_options(app, o.device, o.precision, "cpu, or cuda: train and generate on a GPU (dense multi_head build)");
}

inline model::Config model_config(const Options& o) {
  return {.vocab_size = data::Tokenizer::vocab_size,
          .hidden_size = o.width,
          .num_layers = o.layers,
          .num_heads = o.heads,
          .num_kv_heads = o.kv_heads,
          .intermediate_size = o.ffn,
          .max_seq_len = o.seq};
}

/// The trainer's config; under data or expert parallelism its batch is one rank's share of o.batch.
inline train::TrainConfig train_config(const Options& o) {
  train::TrainConfig tc;
  tc.total_steps = o.steps;
  tc.micro_batches = o.micro_batches;
  tc.batch = o.batch / o.parallel.data_ranks();
  tc.seq = o.seq;
  tc.max_grad_norm = o.clip;
  tc.schedule = {.peak_lr = o.lr, .min_lr = o.min_lr, .warmup_steps = o.warmup, .total_steps = o.steps};
  tc.seed = o.seed;
  return tc;
}

/// The run's data: a held-out set first, then training problems that avoid it, drawn per (step,
/// micro) from a counter-based stream so the batches are a pure function of the position in the
/// run — and independent of the model, so every attention variant sees the same batches. `source`
/// gives rank `rank`'s rows of every micro-batch of o.batch sequences (all of them on one process,
/// and on every tensor-parallel rank and pipeline stage).
/// (Not copyable: the sampler and the source refer to the members before them.)
class Data {
 public:
  explicit Data(const Options& o, int rank = 0)
      : held_out(o.eval_jsonl.empty() ? data::make_held_out(o.seed, o.eval_per_level)
                                      : data::HeldOut::from_problems(data::read_problems_jsonl(o.eval_jsonl))),
        sampler(held_out),
        curriculum(data::Curriculum::standard(o.steps)),
        source(examples::batch_share(
            data::sft_source(sampler, curriculum,
                             {.seed = o.seed, .batch = o.batch, .micro_batches = o.micro_batches, .max_seq = o.seq}),
            rank, o.parallel.data_ranks())) {}
  Data(const Data&) = delete;
  Data& operator=(const Data&) = delete;

  const data::HeldOut held_out;
  const data::TrainingSampler sampler;
  const data::Curriculum curriculum;
  const train::BatchSource source;
};

/// Exact-match counts of a set of held-out problems.
struct Score {
  int total = 0, correct = 0, formatted = 0;
  double tokens = 0;  // completion tokens

  void add(bool is_correct, bool is_formatted, std::size_t completion_tokens) {
    ++total;
    correct += is_correct;
    formatted += is_formatted;
    tokens += static_cast<double>(completion_tokens);
  }
  [[nodiscard]] double accuracy() const { return static_cast<double>(correct) / std::max(1, total); }
  /// The binomial standard error of accuracy() as an estimate of the model's accuracy on the task.
  [[nodiscard]] double standard_error() const {
    const double p = accuracy();
    return std::sqrt(p * (1 - p) / std::max(1, total));
  }
  [[nodiscard]] double format_rate() const { return static_cast<double>(formatted) / std::max(1, total); }
  [[nodiscard]] double mean_tokens() const { return tokens / std::max(1, total); }
};

struct Evaluation {
  std::map<int, Score> levels;
  Score all;
  std::vector<io::Json> rows;  // every completion (eval.jsonl)
  double seconds = 0;
  std::int64_t generated = 0;  // completion tokens
  [[nodiscard]] double tokens_per_second() const { return static_cast<double>(generated) / std::max(seconds, 1e-9); }
};

struct Trained {
  bool finished = false;  // false: interrupted, a checkpoint to resume from was written
  double seconds = 0;     // training time of this process
  double target_tokens_per_s = 0;
  double final_loss = 0;  // mean loss of the last (up to) 50 steps
  examples::RouterWindow router;  // MoE models: the router statistics of the last (up to) 50 steps
};

/// The lines every run prints about its data and schedule.
inline void print_training(const Options& o, const Data& d) {
  std::printf("training: %lld steps x %d x %lld sequences, AdamW lr %.1e cosine to %.1e after %lld warmup steps\n",
              static_cast<long long>(o.steps), o.micro_batches, static_cast<long long>(o.batch), o.lr, o.min_lr,
              static_cast<long long>(o.warmup));
  std::printf("held-out: %zu problems (%s), disjoint from training\n", d.held_out.size(),
              o.eval_jsonl.empty() ? "generated" : o.eval_jsonl.c_str());
}

/// One model trained and evaluated by the SFT recipe: `Net` is NetWith<Attention, FfnVariant>, and
/// FfnVariant's numbers (expert width, dense layers) complete the model config. Par: the trainer's
/// parallelism policy (one process; examples::MpiDataParallel; or a split model's
/// parallel::TensorParallel / ExpertParallel / Pipeline, with the model built with `sharding` over
/// the same ranks: examples/common/model_split.hpp). Under several ranks every rank runs the same Run.
template <class Net, class FfnVariant = examples::ffn_variants::dense, class Par = train::SingleProcess>
class Run {
  static_assert(std::is_same_v<typename Net::ffn_policy, typename FfnVariant::type>,
                "sft::Run<Net, FfnVariant>: Net's feed-forward policy is not FfnVariant's");

 public:
  using T = typename Net::T;
  using Trainer = train::Trainer<Net, Optimizer, Par>;
  /// Several ranks: each step's statistics are over all of them; checkpoints only between steps.
  static constexpr bool distributed = !std::is_same_v<Par, train::SingleProcess>;
  /// The model is split over the ranks (each holds a share of it; see evaluate()).
  static constexpr bool split = train::SplitModelBuffers<typename Trainer::Buffers>;
  /// Every rank trains on its own share of the batch (data or expert parallel).
  static constexpr bool own_data = requires(typename Trainer::Buffers& b, std::span<double> v) {
    b.sum_across_ranks(v);
  };

  explicit Run(const Options& o, const Par& parallel = {}, model::Sharding<T> sharding = {})
      : o_(o),
        parallel_(parallel),
        net_(make_net(examples::with_ffn<FfnVariant>(model_config(o)), sharding)),
        trainer_(net_, Optimizer{.config = {.weight_decay = o.weight_decay}}, train_config(o), parallel) {
    if constexpr (split) whole_.emplace(net_.config());
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  /// The model this rank trains (a split model: this rank's share).
  [[nodiscard]] const Net& net() const { return net_; }
  [[nodiscard]] Trainer& trainer() { return trainer_; }

  /// After train::load_checkpoint of a checkpoint written mid-step: the router statistics of that
  /// step's micro-batches before the interruption (metadata "router.partial"), which the resumed
  /// step's metrics line includes. (The library itself restores the step's expert load, which the
  /// balancing update after the step needs.)
  void resume_router(const io::SafetensorsMetadata& meta) {
    if constexpr (Net::routed) {
      const auto it = meta.find(router_partial_key);
      router_carried_ = it == meta.end() ? std::vector<moe::RouterStats>{} : examples::router_stats_from_string(it->second);
    }
  }

  /// The decode cache of one sequence of max_seq_len tokens, every layer (a split model: the whole model's).
  [[nodiscard]] std::size_t cache_bytes_per_sequence() const { return cache_bytes(whole_model()); }

  /// The model's description (a split model: the whole model's, as one process has it).
  void print_model() const {
    const Net& net = whole_model();
    const model::Config& mc = net.config();
    std::printf("model: %lld layers, width %lld, %lld heads (%lld kv), head_dim %d, ffn %lld, vocab %lld: %zu parameters\n",
                static_cast<long long>(mc.num_layers), static_cast<long long>(mc.hidden_size),
                static_cast<long long>(mc.num_heads), static_cast<long long>(mc.num_kv_heads), Net::head_dim,
                static_cast<long long>(mc.intermediate_size), static_cast<long long>(mc.vocab_size), net.num_params());
    const std::size_t cache = cache_bytes(net);
    std::printf("attention: %s; decode cache %zu bytes per sequence of %lld tokens (%.0f per token)\n",
                Net::attention_signature().c_str(), cache, static_cast<long long>(mc.max_seq_len),
                static_cast<double>(cache) / static_cast<double>(mc.max_seq_len));
    std::printf("%s\n", examples::ffn_description<Net>(mc).c_str());
    if constexpr (requires { Net::on_device; })
      std::printf("backend: CUDA, precision %s (fp32 master weights, gradients and AdamW state)\n",
                  Net::precision_policy::name);
    if constexpr (Net::routed)
      std::printf("parameters: %zu in all, %zu active per token\n", net.num_params(), examples::active_params(net));
  }

  /// Trains to the last step, writing a metrics line per step (when `metrics` is given: rank 0)
  /// and a checkpoint every o.checkpoint_every steps and at the end. Stops early — checkpoint
  /// written, finished = false — when stop() says so or after o.stop_after steps. Several ranks:
  /// stop() is asked once per step on every rank (it must agree over them: examples::Ranks::any)
  /// and a run stops between steps only (a rank's accumulated gradients are its own, or its part).
  /// Data- and expert-parallel MoE runs sum each step's router statistics over the ranks.
  Trained train(const Data& d, io::JsonlWriter* metrics, const std::filesystem::path& ckpt,
                const io::SafetensorsMetadata& extra, const std::function<bool()>& stop = {}) {
    auto stopping = [&] { return stop && stop(); };
    // o.stop_after steps and then o.stop_micro micro-batches of the next (a checkpoint mid-accumulation)
    auto stop_point = [&] {
      return o_.stop_after >= 0 && trainer_.step() >= o_.stop_after && trainer_.micro() >= o_.stop_micro;
    };
    const std::int64_t tail_from = o_.steps - std::min<std::int64_t>(50, o_.steps);
    double tail_loss = 0;
    int tail = 0;
    examples::RouterWindow tail_router;
    train::Progress progress(o_.steps, o_.log_every);
    progress.restart(trainer_.step());
    while (!trainer_.done()) {
      std::optional<train::StepStats> s = trainer_.run_micro(d.source);
      if (!s) {
        if (!distributed && (stopping() || (o_.stop_micro > 0 && stop_point()))) break;
        continue;
      }
      const std::string stage = d.curriculum.stage(s->step).name;
      std::vector<moe::RouterStats> router;  // MoE models: the step's router statistics
      std::string progress_extra = stage;
      if constexpr (Net::routed) {
        router = net_.take_router_stats();
        if constexpr (own_data) {  // each rank routed its own tokens: the whole batch's statistics are the sum
          const auto experts = static_cast<std::size_t>(Net::ffn_policy::experts);
          examples::sum_router_stats(router, experts, [&](std::span<double> v) {
            parallel_.comm->all_reduce(v, parallel::ReduceOp::sum);
          });
        }
        if (!router_carried_.empty()) {  // the step began before a resume: its first micro-batches
          for (std::size_t i = 0; i < router.size(); ++i) router_carried_[i].add(router[i]);
          router = std::move(router_carried_);
          router_carried_.clear();
        }
        examples::RouterWindow step_router;
        step_router.add(router);
        char load[48];
        std::snprintf(load, sizeof load, "  load max/mean %.2f", step_router.max_over_mean());
        progress_extra += load;
        if (s->step >= tail_from) tail_router.add(router);
      }
      progress.step(s->step, s->loss, s->lr, s->tokens, progress_extra);
      io::Json row{{"step", s->step + 1},
                   {"loss", s->loss},
                   {"lr", s->lr},
                   {"grad_norm", s->grad_norm},
                   {"target_tokens", s->tokens},
                   {"target_tokens_per_s", progress.tokens_per_second()},
                   {"elapsed_s", progress.elapsed()},
                   {"stage", stage}};
      if constexpr (Net::routed) examples::add_router_fields(row, router, net_.config().first_dense_layers);
      if (trainer_.loss_scaler().enabled()) {  // fp16: the loss scale and whether the step overflowed
        row["loss_scale"] = s->loss_scale;
        row["skipped"] = s->skipped;
      }
      if (metrics) metrics->write(row);
      if (s->step >= tail_from) {
        tail_loss += s->loss;
        ++tail;
      }
      if (stopping() || (o_.stop_micro == 0 && stop_point())) break;
      if (o_.checkpoint_every > 0 && trainer_.step() % o_.checkpoint_every == 0) train::save_checkpoint(ckpt, trainer_, extra);
    }
    Trained t{.finished = trainer_.done(),
              .seconds = progress.elapsed(),
              .target_tokens_per_s = progress.tokens_per_second(),
              .final_loss = tail_loss / std::max(1, tail),
              .router = tail_router};
    if constexpr (Net::routed)
      if (!t.router.empty()) progress.line(t.router.summary());
    io::SafetensorsMetadata meta = extra;
    if constexpr (Net::routed) {
      if (trainer_.micro() > 0) {  // stopped mid-step: keep the step's router statistics so far
        examples::RouterWindow partial;
        partial.add(router_carried_, false);
        partial.add(net_.take_router_stats(), false);
        router_carried_ = partial.layers();
        meta[router_partial_key] = examples::router_stats_to_string(router_carried_);
      }
    }
    train::save_checkpoint(ckpt, trainer_, meta);  // the final weights, or where to resume
    if (!t.finished)
      progress.line("stopped at step " + std::to_string(trainer_.step()) + " (micro-batch " +
                    std::to_string(trainer_.micro()) + "); resume with --resume " + ckpt.string());
    return t;
  }

  /// Greedy decoding (with the KV cache) of every held-out problem, exact match of the <answer>, by
  /// this process's model (one process; data parallel: every rank's replica is the same).
  [[nodiscard]] Evaluation evaluate(const data::HeldOut& held_out) const
    requires(!split)
  {
    return evaluate(net_, trainer_.model_params(), held_out);
  }

  /// A split model's parameters assembled whole from every rank's share, bit for bit what a
  /// checkpoint holds (a collective: every rank calls it).
  [[nodiscard]] std::vector<T> gather_params() const
    requires split
  {
    return trainer_.buffers().gather_full();
  }
  /// The same evaluation by the unsplit model of the same config with `whole` = gather_params(), on
  /// one rank (greedy decoding of the split model would need every rank in lockstep).
  [[nodiscard]] Evaluation evaluate(const data::HeldOut& held_out, std::span<const T> whole) const
    requires split
  {
    REASON_CHECK(whole.size() == whole_model().num_params(), "sft::Run::evaluate: ", whole.size(),
                 " parameters, the unsplit model has ", whole_model().num_params());
    return evaluate(whole_model(), whole.data(), held_out);
  }

 private:
  static constexpr const char* router_partial_key = "router.partial";

  static Net make_net(const model::Config& c, model::Sharding<T> sharding) {
    if constexpr (split) {
      return Net(c, sharding);
    } else {
      REASON_CHECK(sharding.tensor == nullptr && sharding.expert == nullptr && sharding.pipeline == nullptr,
                   "sft::Run: a model sharding needs a split-model policy (TensorParallel, ExpertParallel, Pipeline)");
      return Net(c);
    }
  }
  /// The model unsplit: net_ itself, or for a split model one of the same config (its description;
  /// the evaluation of the gathered parameters).
  [[nodiscard]] const Net& whole_model() const {
    if constexpr (split)
      return *whole_;
    else
      return net_;
  }
  static std::size_t cache_bytes(const Net& net) {
    return net.make_decode_state(1, net.config().max_seq_len).cache_bytes();
  }
  /// Greedy decoding of every held-out problem by `net` with `params`.
  Evaluation evaluate(const Net& net, const T* params, const data::HeldOut& held_out) const {
    const auto t0 = std::chrono::steady_clock::now();
    Evaluation e;
    const std::size_t eval_batch = 128;
    const std::vector<data::Problem>& problems = held_out.problems;
    for (std::size_t first = 0; first < problems.size(); first += eval_batch) {
      const std::size_t last = std::min(problems.size(), first + eval_batch);
      std::vector<std::vector<std::int32_t>> prompts;
      for (std::size_t i = first; i < last; ++i) prompts.push_back(data::prompt_tokens(problems[i]));
      const auto completions = infer::generate_greedy(net, params, std::span(prompts), o_.seq, data::Tokenizer::eos);
      for (std::size_t i = first; i < last; ++i) {
        const data::Problem& p = problems[i];
        const auto& c = completions[i - first];
        e.generated += static_cast<std::int64_t>(c.size());
        const std::string text = "<think>" + data::Tokenizer::decode(c);
        const auto parsed = data::parse_completion(text);
        const bool correct = parsed && parsed->answer == p.answer;
        e.levels[p.difficulty].add(correct, parsed.has_value(), c.size());
        e.all.add(correct, parsed.has_value(), c.size());
        e.rows.push_back({{"question", p.question}, {"answer", p.answer}, {"difficulty", p.difficulty},
                          {"completion", io::utf8_sanitized(text)}, {"correct", correct}});
      }
    }
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return e;
  }

  Options o_;
  Par parallel_;  // (its communicator sums the router statistics of data- and expert-parallel runs)
  Net net_;
  Trainer trainer_;
  std::optional<Net> whole_;  // a split model: the unsplit one (whole_model())
  std::vector<moe::RouterStats> router_carried_;  // MoE models: the current step's statistics before a resume
};

/// Prints the evaluation per level, writes its lines to `metrics` (tagged with the attention
/// variant, and with the FFN variant when `ffn` is given) and every completion to <dir>/eval.jsonl.
inline void report(const Evaluation& e, const std::filesystem::path& dir, io::JsonlWriter& metrics,
                   const std::string& attention, const std::string& ffn = {}) {
  io::write_jsonl(dir / "eval.jsonl", e.rows);
  std::printf("\nheld-out exact-match accuracy (greedy, %d problems, %.1f s, %.0f generated tokens/s)\n", e.all.total,
              e.seconds, e.tokens_per_second());
  std::printf("  level  problems  correct  accuracy  format-ok  mean tokens\n");
  for (const auto& [level, sc] : e.levels) {
    std::printf("  %5d  %8d  %7d  %7.1f%%  %8.1f%%  %11.1f\n", level, sc.total, sc.correct, 100 * sc.accuracy(),
                100 * sc.format_rate(), sc.mean_tokens());
    io::Json line{{"eval_level", level},
                  {"problems", sc.total},
                  {"accuracy", sc.accuracy()},
                  {"format_ok", sc.format_rate()},
                  {"mean_response_tokens", sc.mean_tokens()},
                  {"attention", attention}};
    if (!ffn.empty()) line["ffn"] = ffn;
    metrics.write(line);
  }
  std::printf("  all    %8d  %7d  %7.1f%% ± %.1f (standard error)\n", e.all.total, e.all.correct, 100 * e.all.accuracy(),
              100 * e.all.standard_error());
}

}  // namespace sft
