// reason/train/trainer.hpp — the supervised training loop: micro-batches, accumulation, clipping, the optimizer step.
//
// Design rule: the trainer owns the three flat buffers (parameters, gradients, optimizer
// state: train_buffers_t, on the host or, for a CUDA model such as gpu::DenseTransformer, on the
// device) and the position in the run (step, micro-batch), and nothing else; the data come from
// a BatchSource that is a pure function of (step, micro). The whole state of a run is thus a
// handful of buffers and integers, which a checkpoint stores exactly (train/checkpoint.hpp), so
// a run interrupted anywhere — mid-warmup, mid-accumulation — and resumed is bit-identical to
// one that never stopped.
//
// One optimizer step = `micro_batches` forward/backward passes whose parameter gradients add
// up; the loss of every micro-batch is scaled by 1 / (target tokens of the whole step), so
// accumulating k micro-batches equals one batch k times larger. Then global-norm clipping,
// the learning rate of the schedule, and the optimizer update — and, for an MoE model, the
// gates' balancing update on the step's expert load.
//
// Loss scaling (train/loss_scale.hpp; on by default for a precision policy that asks for it,
// precision::Fp16): the seed gradient is multiplied by S, the gradients are divided by S before
// clipping, and a step whose gradients are not finite is skipped (StepStats::skipped) instead of
// being an error: the parameters, the optimizer state and AdamW's step count t stay as they were,
// S backs off, and the run goes on with the next step's data.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/optim/concepts.hpp"
#include "reason/train/balance_experts.hpp"
#include "reason/train/clip.hpp"
#include "reason/train/loss_scale.hpp"
#include "reason/train/schedule.hpp"
#include "reason/train/token_batch.hpp"
#include "reason/train/train_buffers.hpp"

namespace reason::train {

struct TrainConfig {
  std::int64_t total_steps = 1000;
  int micro_batches = 1;        // gradient accumulation: micro-batches per optimizer step
  index_t batch = 16;           // sequences per micro-batch
  index_t seq = 64;             // tokens per sequence
  double max_grad_norm = 1.0;   // <= 0 disables clipping
  CosineSchedule schedule{};
  std::uint64_t seed = 1;       // parameter initialisation
  LossScaleConfig loss_scale{};  // dynamic loss scaling (by default: when the precision asks for it)

  void validate() const {
    REASON_CHECK(total_steps > 0 && micro_batches > 0 && batch > 0 && seq > 0, "TrainConfig: total_steps = ",
                 total_steps, ", micro_batches = ", micro_batches, ", batch = ", batch, ", seq = ", seq,
                 "; all must be > 0");
    schedule.validate();
    loss_scale.validate();
  }
};

/// What one optimizer step did.
struct StepStats {
  std::int64_t step = 0;  // the step just completed (0-based)
  double loss = 0;        // mean over the step's target tokens
  index_t tokens = 0;     // target tokens in the step
  double lr = 0;
  double grad_norm = 0;   // before clipping (unscaled; not finite when skipped)
  double loss_scale = 1;  // S the step's gradients were computed with (1 without loss scaling)
  bool skipped = false;   // loss scaling found non-finite gradients: nothing was updated
};

/// Where a supervised run stands — the next step, how many of its micro-batches are done and
/// their summed loss — and that step's micro-batches, drawn together (cheap next to the passes) so
/// the step's target-token count, the loss normaliser, is known before the first backward.
class RunPosition {
 public:
  [[nodiscard]] std::int64_t step() const { return step_; }
  [[nodiscard]] int micro() const { return micro_; }
  [[nodiscard]] double loss_sum() const { return loss_sum_; }
  [[nodiscard]] index_t loss_count() const { return loss_count_; }

  /// Moves to a position (a checkpoint's); `who` names the trainer in the error.
  void set(std::int64_t step, int micro, double loss_sum, index_t loss_count, const TrainConfig& cfg, const char* who) {
    REASON_CHECK(step >= 0 && micro >= 0 && micro < cfg.micro_batches, who, ": position step ", step, " micro ", micro,
                 " is outside the run (micro_batches = ", cfg.micro_batches, ")");
    step_ = step;
    micro_ = micro;
    loss_sum_ = loss_sum;
    loss_count_ = loss_count;
    batches_step_ = -1;
  }

  /// The current micro-batch, drawing the step's batches from `source` when the step is new to it.
  const TokenBatch& batch(const BatchSource& source, const TrainConfig& cfg, const char* who) {
    REASON_CHECK(step_ < cfg.total_steps, who, ": the run is complete (", cfg.total_steps, " steps)");
    if (batches_step_ != step_) {
      batches_.resize(static_cast<std::size_t>(cfg.micro_batches));
      step_tokens_ = 0;
      for (int m = 0; m < cfg.micro_batches; ++m) {
        TokenBatch& b = batches_[static_cast<std::size_t>(m)];
        source(step_, m, b);
        REASON_CHECK(b.batch == cfg.batch && b.seq <= cfg.seq &&
                         b.tokens.size() == static_cast<std::size_t>(b.batch * b.seq) && b.targets.size() == b.tokens.size(),
                     who, ": micro-batch ", m, " of step ", step_, " is [", b.batch, ", ", b.seq, "], expected [", cfg.batch,
                     ", <= ", cfg.seq, "] with tokens and targets of that size");
        step_tokens_ += b.target_count();
      }
      batches_step_ = step_;
    }
    return batches_[static_cast<std::size_t>(micro_)];
  }
  /// Micro-batch m of the current step (after batch() has drawn them).
  [[nodiscard]] const TokenBatch& micro_batch(int m) const {
    REASON_CHECK(batches_step_ == step_ && m >= 0 && static_cast<std::size_t>(m) < batches_.size(),
                 "RunPosition::micro_batch: micro-batch ", m, " of a step not drawn");
    return batches_[static_cast<std::size_t>(m)];
  }
  /// The loss scale of every micro-batch of the step: 1 / (target tokens in the whole step).
  [[nodiscard]] double grad_scale() const { return 1.0 / static_cast<double>(std::max<index_t>(1, step_tokens_)); }

  /// Whether the current step's micro-batches are drawn (batch() draws them when they are not).
  [[nodiscard]] bool drawn() const { return batches_step_ == step_; }
  /// Target tokens in the whole step (what grad_scale() divides by); set_step_tokens replaces the
  /// count, e.g. by the sum over data-parallel ranks.
  [[nodiscard]] index_t step_tokens() const { return step_tokens_; }
  void set_step_tokens(index_t n) { step_tokens_ = n; }

  /// Adds a finished micro-batch's loss; true when it completes the step's accumulation.
  bool add(double loss_sum, index_t count, const TrainConfig& cfg) {
    loss_sum_ += loss_sum;
    loss_count_ += count;
    return ++micro_ >= cfg.micro_batches;
  }
  /// The completed step's statistics once its gradient norm is known (nothing when the loss scaler
  /// skipped the step): throws, naming the step, when the norm is not finite (the caller has not
  /// updated anything yet), else adds the schedule's lr.
  [[nodiscard]] StepStats stats(std::optional<double> grad_norm, double loss_scale, const TrainConfig& cfg,
                                const char* who) const {
    StepStats s;
    s.step = step_;
    s.tokens = loss_count_;
    s.loss = loss_count_ ? loss_sum_ / static_cast<double>(loss_count_) : 0.0;
    s.loss_scale = loss_scale;
    s.lr = cfg.schedule.lr(step_);
    if (!grad_norm) {
      s.skipped = true;
      s.grad_norm = std::numeric_limits<double>::quiet_NaN();
      return s;
    }
    s.grad_norm = *grad_norm;
    REASON_CHECK(std::isfinite(s.grad_norm), who, ": step ", step_, ": the gradient norm is ", s.grad_norm, " (loss ",
                 s.loss, "); the parameters were left unchanged");
    return s;
  }
  /// After the optimizer step: on to the next step.
  void next_step() {
    ++step_;
    micro_ = 0;
    loss_sum_ = 0;
    loss_count_ = 0;
  }

 private:
  std::int64_t step_ = 0;
  int micro_ = 0;
  double loss_sum_ = 0;
  index_t loss_count_ = 0;
  std::vector<TokenBatch> batches_;
  std::int64_t batches_step_ = -1;
  index_t step_tokens_ = 0;
};

/// Par: the parallelism policy (train::SingleProcess; parallel::DataParallel<C>, parallel::Zero<Stage, C>
/// and parallel::ExpertParallel<C> run one trainer per rank, each on its own share of every step's
/// batch; parallel::TensorParallel<C> and parallel::Pipeline<C> one per rank of a split model, on the
/// whole batch — a pipeline stage runs each step's micro-batches in the 1F1B schedule).
template <class Net, class Opt, class Par = SingleProcess>
class Trainer {
  static_assert(optim::Optimizer<Opt>,
                "train::Trainer<Net, Opt>: Opt must be an optimizer policy (e.g. optim::AdamW, optim::SgdMomentum)");

 public:
  using T = typename Net::T;

  /// Parameters, gradients and optimizer state: on the host or a CUDA model's device buffers, as
  /// the parallelism policy makes them.
  using Buffers = typename Par::template buffers<Net, T, Opt>;

  /// Starts from layout().initialize(seed) (on the host; a CUDA model gets the same values uploaded).
  Trainer(Net& net, Opt optimizer, TrainConfig config, const Par& parallel = {})
      : net_(net),
        opt_(optimizer),
        cfg_((config.validate(), config)),
        buf_(parallel.template make_buffers<Opt>(
            net, std::span<const T>(initial_params<T>(net, config.seed)), /*with_reference=*/false)),
        scaler_(cfg_.loss_scale, loss_scaling_enabled<typename PrecisionOf<Net>::type>(cfg_.loss_scale)) {
    net_.reserve(cfg_.batch, cfg_.seq);
    if constexpr (distributed) data_ranks_ = static_cast<int>(sum_across_ranks(1.0));
  }

  [[nodiscard]] const TrainConfig& config() const { return cfg_; }
  [[nodiscard]] Net& net() const { return net_; }
  [[nodiscard]] const Opt& optimizer() const { return opt_; }
  /// The loss scale and its bookkeeping (scale() == 1 and never skipping when scaling is off).
  [[nodiscard]] const DynamicLossScaler& loss_scaler() const { return scaler_; }
  /// Restores the scaler's state (used by the checkpoint loader).
  void set_loss_scale_state(double scale, std::int64_t good_steps, std::int64_t skipped) {
    scaler_.set_state(scale, good_steps, skipped, "Trainer");
  }
  /// The buffers as host spans (for a CUDA model: mirrors, valid after to_host(), uploaded by
  /// from_host(); the checkpoint functions call both).
  [[nodiscard]] std::span<T> params() { return buf_.host_params(); }
  [[nodiscard]] std::span<const T> params() const { return buf_.host_params(); }
  [[nodiscard]] std::span<T> grads() { return buf_.host_grads(); }
  [[nodiscard]] std::span<const T> grads() const { return buf_.host_grads(); }
  [[nodiscard]] std::span<T> optimizer_state() { return buf_.host_state(); }
  [[nodiscard]] std::span<const T> optimizer_state() const { return buf_.host_state(); }
  void to_host() const { buf_.to_host(); }
  void from_host() { buf_.from_host(); }
  /// The parameters the model reads (device memory for a CUDA model).
  [[nodiscard]] const T* model_params() const { return buf_.params(); }

  /// The next step to run (0-based) and how many of its micro-batches are done.
  [[nodiscard]] std::int64_t step() const { return pos_.step(); }
  [[nodiscard]] int micro() const { return pos_.micro(); }
  [[nodiscard]] bool done() const { return pos_.step() >= cfg_.total_steps; }
  /// The summed loss and token count of the current step's finished micro-batches.
  [[nodiscard]] double partial_loss_sum() const { return pos_.loss_sum(); }
  [[nodiscard]] index_t partial_loss_count() const { return pos_.loss_count(); }

  /// Restores the position in the run (used by the checkpoint loader with the buffers it fills).
  void set_position(std::int64_t step, int micro, double loss_sum, index_t loss_count) {
    pos_.set(step, micro, loss_sum, loss_count, cfg_, "Trainer");
  }

  /// Runs the next micro-batch. When it completes the step's accumulation, clips, updates the
  /// parameters and returns the step's statistics; otherwise returns nothing.
  std::optional<StepStats> run_micro(const BatchSource& source) {
    if constexpr (pipelined) return run_pipelined_step(source);
    const bool fresh = !pos_.drawn();
    const TokenBatch& b = pos_.batch(source, cfg_, "Trainer");
    if constexpr (distributed)  // every rank divides by the whole step's tokens, over all ranks
      if (fresh) pos_.set_step_tokens(static_cast<index_t>(sum_across_ranks(static_cast<double>(pos_.step_tokens()))));
    if (pos_.micro() == 0) buf_.zero_grads();
    const double loss_scale = scaler_.scale();
    const auto r = net_.forward(buf_.params(), buf_.grads(), b.tokens_view(), b.targets_view(),
                                static_cast<T>(pos_.grad_scale() * loss_scale));
    net_.backward(buf_.params(), buf_.grads());
    if constexpr (requires { buf_.after_backward(); }) buf_.after_backward();
    if (!pos_.add(r.loss_sum, r.count, cfg_)) return std::nullopt;
    return finish_step(loss_scale);
  }

  /// Runs the rest of the current step.
  StepStats run_step(const BatchSource& source) {
    for (;;)
      if (auto s = run_micro(source)) return *s;
  }

  /// How many ranks share each step's batch, each training on config().batch sequences of every
  /// micro-batch: the ranks of a distributed policy (data or expert parallel), else 1. A checkpoint
  /// records the global batch, config().batch x data_ranks(), so it resumes on any number of ranks.
  [[nodiscard]] int data_ranks() const { return data_ranks_; }

  /// The buffers themselves (a parallelism policy's report: e.g. optimizer_state_bytes()).
  [[nodiscard]] const Buffers& buffers() const { return buf_; }
  /// Whether this process writes checkpoints: under a distributed policy only rank 0 does.
  [[nodiscard]] bool checkpoint_writer() const {
    if constexpr (requires { buf_.rank(); })
      return buf_.rank() == 0;
    else
      return true;
  }

 private:
  static constexpr bool distributed = requires(Buffers& b, std::span<double> v) { b.sum_across_ranks(v); };
  /// A pipeline stage's buffers (parallel::Pipeline) run a whole step's micro-batches at once.
  static constexpr bool pipelined = requires { Buffers::pipelined; };

  /// A pipeline stage: the step's micro-batches in the policy's schedule (parallel/pipeline.hpp).
  StepStats run_pipelined_step(const BatchSource& source) {
    REASON_CHECK(pos_.micro() == 0, "Trainer: a pipeline step runs all its micro-batches at once; the run stands at micro-batch ",
                 pos_.micro(), " of step ", pos_.step());
    (void)pos_.batch(source, cfg_, "Trainer");  // draws the step's micro-batches
    buf_.zero_grads();
    const double loss_scale = scaler_.scale();
    const T grad_scale = static_cast<T>(pos_.grad_scale() * loss_scale);
    std::vector<std::pair<double, index_t>> losses(static_cast<std::size_t>(cfg_.micro_batches));
    buf_.run_1f1b(
        net_, cfg_.micro_batches,
        [&](int m) { return pos_.micro_batch(m).batch * pos_.micro_batch(m).seq; },
        [&](int m, View<const T, 2> input) {
          const TokenBatch& b = pos_.micro_batch(m);
          const auto r = net_.stage_forward(buf_.params(), buf_.grads(), b.tokens_view(), b.targets_view(), grad_scale, input);
          losses[static_cast<std::size_t>(m)] = {r.loss_sum, r.count};  // the last stage's; zero before it
        },
        [&](int, View<const T, 2> output_grad) { net_.stage_backward(buf_.params(), buf_.grads(), output_grad); });
    for (const auto& [sum, count] : losses) (void)pos_.add(sum, count, cfg_);
    return finish_step(loss_scale);
  }

  /// After the step's last backward: clip (skipping the step on overflow under loss scaling),
  /// report the loss over every rank's tokens, step the optimizer and the gates' balance.
  StepStats finish_step(double loss_scale) {
    StepStats s = pos_.stats(scaler_.unscale_and_clip(buf_, cfg_.max_grad_norm), loss_scale, cfg_, "Trainer");
    if constexpr (distributed || pipelined) {  // the loss over every rank's tokens, or the last stage's
      double v[2] = {pos_.loss_sum(), static_cast<double>(pos_.loss_count())};
      if constexpr (pipelined)
        buf_.sum_over_group(std::span<double>(v));
      else
        buf_.sum_across_ranks(std::span<double>(v));
      s.tokens = static_cast<index_t>(v[1]);
      s.loss = v[1] > 0 ? v[0] / v[1] : 0.0;
    }
    // AdamW's t counts the updates made, not the steps run: a skipped step made none.
    if (!s.skipped) buf_.step(opt_, s.lr, s.step + 1 - scaler_.skipped_steps());
    // An MoE model's gates balance their experts on this step's load over every rank's tokens
    // (moe::BiasBalance; the load is a count of routed tokens, unaffected by the overflow that skips a step).
    train::balance_experts(net_, buf_);
    pos_.next_step();
    return s;
  }

  double sum_across_ranks(double x) {
    buf_.sum_across_ranks(std::span<double>(&x, 1));
    return x;
  }

  Net& net_;
  Opt opt_;
  TrainConfig cfg_;
  Buffers buf_;
  DynamicLossScaler scaler_;
  RunPosition pos_;
  int data_ranks_ = 1;
};

}  // namespace reason::train
