// reason/train/trainer.hpp — the supervised training loop: micro-batches, accumulation, clipping, the optimizer step.
//
// Design rule: the trainer owns the three flat buffers (parameters, gradients, optimizer
// state) and the position in the run (step, micro-batch), and nothing else; the data come from
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
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/optim/concepts.hpp"
#include "reason/train/clip.hpp"
#include "reason/train/schedule.hpp"
#include "reason/train/token_batch.hpp"

namespace reason::train {

struct TrainConfig {
  std::int64_t total_steps = 1000;
  int micro_batches = 1;        // gradient accumulation: micro-batches per optimizer step
  index_t batch = 16;           // sequences per micro-batch
  index_t seq = 64;             // tokens per sequence
  double max_grad_norm = 1.0;   // <= 0 disables clipping
  CosineSchedule schedule{};
  std::uint64_t seed = 1;       // parameter initialisation

  void validate() const {
    REASON_CHECK(total_steps > 0 && micro_batches > 0 && batch > 0 && seq > 0, "TrainConfig: total_steps = ",
                 total_steps, ", micro_batches = ", micro_batches, ", batch = ", batch, ", seq = ", seq,
                 "; all must be > 0");
    schedule.validate();
  }
};

/// What one optimizer step did.
struct StepStats {
  std::int64_t step = 0;  // the step just completed (0-based)
  double loss = 0;        // mean over the step's target tokens
  index_t tokens = 0;     // target tokens in the step
  double lr = 0;
  double grad_norm = 0;   // before clipping
};

/// The micro-batches of one optimizer step, drawn together (cheap next to the passes) so the
/// step's target-token count, the loss normaliser, is known before the first backward.
class StepBatches {
 public:
  /// Draws step `step`'s micro-batches from `source` unless they are the ones held; checks their shapes.
  void load(const BatchSource& source, const TrainConfig& cfg, std::int64_t step, const char* who) {
    if (step_ == step) return;
    batches_.resize(static_cast<std::size_t>(cfg.micro_batches));
    tokens_ = 0;
    for (int m = 0; m < cfg.micro_batches; ++m) {
      TokenBatch& b = batches_[static_cast<std::size_t>(m)];
      source(step, m, b);
      REASON_CHECK(b.batch == cfg.batch && b.seq <= cfg.seq && b.tokens.size() == static_cast<std::size_t>(b.batch * b.seq) &&
                       b.targets.size() == b.tokens.size(),
                   who, ": micro-batch ", m, " of step ", step, " is [", b.batch, ", ", b.seq, "], expected [", cfg.batch,
                   ", <= ", cfg.seq, "] with tokens and targets of that size");
      tokens_ += b.target_count();
    }
    step_ = step;
  }
  /// Forget the held step (after a position change).
  void invalidate() { step_ = -1; }
  [[nodiscard]] const TokenBatch& operator[](int micro) const { return batches_[static_cast<std::size_t>(micro)]; }
  /// Target tokens in the whole step.
  [[nodiscard]] index_t target_tokens() const { return tokens_; }

 private:
  std::vector<TokenBatch> batches_;
  std::int64_t step_ = -1;
  index_t tokens_ = 0;
};

template <class Net, class Opt>
class Trainer {
  static_assert(optim::Optimizer<Opt>,
                "train::Trainer<Net, Opt>: Opt must be an optimizer policy (e.g. optim::AdamW, optim::SgdMomentum)");

 public:
  using T = typename Net::T;

  Trainer(Net& net, Opt optimizer, TrainConfig config) : net_(net), opt_(optimizer), cfg_(config) {
    cfg_.validate();
    const std::size_t n = net_.num_params();
    params_.resize(n);
    grads_.assign(n, T(0));
    state_.assign(n * Opt::state_slots, T(0));
    net_.layout().initialize(std::span<T>(params_), cfg_.seed);
    net_.reserve(cfg_.batch, cfg_.seq);
  }

  [[nodiscard]] const TrainConfig& config() const { return cfg_; }
  [[nodiscard]] Net& net() const { return net_; }
  [[nodiscard]] const Opt& optimizer() const { return opt_; }
  [[nodiscard]] std::span<T> params() { return params_; }
  [[nodiscard]] std::span<const T> params() const { return params_; }
  [[nodiscard]] std::span<T> grads() { return grads_; }
  [[nodiscard]] std::span<const T> grads() const { return grads_; }
  [[nodiscard]] std::span<T> optimizer_state() { return state_; }
  [[nodiscard]] std::span<const T> optimizer_state() const { return state_; }

  /// The next step to run (0-based) and how many of its micro-batches are done.
  [[nodiscard]] std::int64_t step() const { return step_; }
  [[nodiscard]] int micro() const { return micro_; }
  [[nodiscard]] bool done() const { return step_ >= cfg_.total_steps; }
  /// The summed loss and token count of the current step's finished micro-batches.
  [[nodiscard]] double partial_loss_sum() const { return loss_sum_; }
  [[nodiscard]] index_t partial_loss_count() const { return loss_count_; }

  /// Restores the position in the run (used by the checkpoint loader with the buffers it fills).
  void set_position(std::int64_t step, int micro, double loss_sum, index_t loss_count) {
    REASON_CHECK(step >= 0 && micro >= 0 && micro < cfg_.micro_batches, "Trainer: position step ", step, " micro ",
                 micro, " is outside the run (micro_batches = ", cfg_.micro_batches, ")");
    step_ = step;
    micro_ = micro;
    loss_sum_ = loss_sum;
    loss_count_ = loss_count;
    batches_.invalidate();
  }

  /// Runs the next micro-batch. When it completes the step's accumulation, clips, updates the
  /// parameters and returns the step's statistics; otherwise returns nothing.
  std::optional<StepStats> run_micro(const BatchSource& source) {
    REASON_CHECK(!done(), "Trainer: the run is complete (", cfg_.total_steps, " steps)");
    batches_.load(source, cfg_, step_, "Trainer");
    if (micro_ == 0) std::fill(grads_.begin(), grads_.end(), T(0));
    const TokenBatch& b = batches_[micro_];
    const T scale = static_cast<T>(1.0 / static_cast<double>(std::max<index_t>(1, batches_.target_tokens())));
    const auto r = net_.forward(params_.data(), grads_.data(), b.tokens_view(), b.targets_view(), scale);
    net_.backward(params_.data(), grads_.data());
    loss_sum_ += r.loss_sum;
    loss_count_ += r.count;
    if (++micro_ < cfg_.micro_batches) return std::nullopt;

    StepStats s;
    s.step = step_;
    s.tokens = loss_count_;
    s.loss = loss_count_ ? loss_sum_ / static_cast<double>(loss_count_) : 0.0;
    s.grad_norm = clip_grad_norm<T>(std::span<T>(grads_), cfg_.max_grad_norm);
    REASON_CHECK(std::isfinite(s.grad_norm), "Trainer: step ", step_, ": the gradient norm is ", s.grad_norm,
                 " (loss ", s.loss, "); the parameters were left unchanged");
    s.lr = cfg_.schedule.lr(step_);
    opt_.step(net_.layout(), std::span<T>(params_), std::span<const T>(grads_), std::span<T>(state_), s.lr, step_ + 1);
    // An MoE model's gates balance their experts on this step's load (moe::BiasBalance).
    if constexpr (requires { net_.balance_experts(params_.data()); }) net_.balance_experts(params_.data());
    ++step_;
    micro_ = 0;
    loss_sum_ = 0;
    loss_count_ = 0;
    return s;
  }

  /// Runs the rest of the current step.
  StepStats run_step(const BatchSource& source) {
    for (;;)
      if (auto s = run_micro(source)) return *s;
  }

 private:
  Net& net_;
  Opt opt_;
  TrainConfig cfg_;
  std::vector<T> params_, grads_, state_;
  std::int64_t step_ = 0;
  int micro_ = 0;
  double loss_sum_ = 0;
  index_t loss_count_ = 0;
  StepBatches batches_;
};

}  // namespace reason::train
