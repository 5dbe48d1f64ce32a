// reason/train/loss_scale.hpp — dynamic loss scaling for fp16 compute.
//
// Micikevicius et al., "Mixed Precision Training" (ICLR 2018), §3.2: fp16's smallest normal is
// 2^-14 (subnormals reach 2^-24), so activation gradients that small flush to zero. Multiplying the
// loss by S moves every gradient S times higher (backpropagation is linear in the seed gradient);
// the fp32 parameter gradients are divided by S again before clipping and the optimizer step.
// S is chosen dynamically (as in NVIDIA Apex / PyTorch's GradScaler):
//   a step whose gradients hold an Inf or a NaN (an fp16 activation gradient overflowed 65504)
//   is skipped — no parameter, optimizer state or optimizer step count changes — and S is
//   multiplied by backoff_factor; after growth_interval consecutive good steps S is multiplied by
//   growth_factor.
// Design rule: S and both factors are powers of two. Multiplying by a power of two commutes with
// rounding (barring overflow and underflow), so the scaled gradients are exactly S times the
// unscaled ones and unscaling is exact: on a model whose gradients neither overflow nor underflow
// (any fp32 model), training with loss scaling is bit-identical to training without it.
//
// Which trainers scale: LossScaleConfig::Mode::by_precision (the default) scales when the model's
// precision policy asks for it (precision::Fp16::loss_scaling); `dynamic` forces it on, `off` off.
// The scaler's state (S, the run of good steps, the count of skipped steps) is part of a run's
// state and goes into checkpoints (train/checkpoint.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"

namespace reason::train {

struct LossScaleConfig {
  enum class Mode { by_precision, dynamic, off };
  Mode mode = Mode::by_precision;
  double initial_scale = 65536.0;  // 2^16, Apex's and GradScaler's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int growth_interval = 2000;      // consecutive good steps before S grows
  double min_scale = 1.0;          // S never backs off below this (a run stuck there keeps skipping)
  double max_scale = 16777216.0;   // 2^24: S never grows past this

  void validate() const {
    const auto pow2 = [](double v) {
      int e = 0;
      return v > 0 && std::isfinite(v) && std::frexp(v, &e) == 0.5;
    };
    REASON_CHECK(pow2(initial_scale) && pow2(growth_factor) && pow2(backoff_factor) && pow2(min_scale) &&
                     pow2(max_scale),
                 "LossScaleConfig: initial_scale = ", initial_scale, ", growth_factor = ", growth_factor,
                 ", backoff_factor = ", backoff_factor, ", min_scale = ", min_scale, ", max_scale = ", max_scale,
                 "; all must be powers of two (so that scaling and unscaling are exact)");
    REASON_CHECK(growth_factor > 1 && backoff_factor < 1 && growth_interval > 0 && min_scale <= initial_scale &&
                     initial_scale <= max_scale,
                 "LossScaleConfig: need growth_factor > 1 (", growth_factor, "), backoff_factor < 1 (", backoff_factor,
                 "), growth_interval > 0 (", growth_interval, ") and min_scale <= initial_scale <= max_scale (",
                 min_scale, ", ", initial_scale, ", ", max_scale, ")");
  }
};

/// Whether a trainer of a model with precision policy `Precision` scales its loss under `c`.
template <class Precision>
[[nodiscard]] constexpr bool loss_scaling_enabled(const LossScaleConfig& c) {
  if (c.mode == LossScaleConfig::Mode::off) return false;
  if (c.mode == LossScaleConfig::Mode::dynamic) return true;
  if constexpr (requires { Precision::loss_scaling; })
    return Precision::loss_scaling;
  else
    return false;
}

/// The precision policy a model names (`Net::precision_policy`), or void when it names none.
template <class Net>
struct PrecisionOf {
  using type = void;
};
template <class Net>
  requires requires { typename Net::precision_policy; }
struct PrecisionOf<Net> {
  using type = typename Net::precision_policy;
};

/// S and its bookkeeping. When disabled, scale() is 1 and nothing is ever skipped.
class DynamicLossScaler {
 public:
  DynamicLossScaler() = default;
  DynamicLossScaler(const LossScaleConfig& config, bool enabled)
      : cfg_((config.validate(), config)), enabled_(enabled), scale_(enabled ? config.initial_scale : 1.0) {}

  [[nodiscard]] bool enabled() const { return enabled_; }
  /// The factor the loss (the seed gradient) is multiplied by: S, or 1 when disabled.
  [[nodiscard]] double scale() const { return scale_; }
  /// Consecutive good steps since S last changed.
  [[nodiscard]] std::int64_t good_steps() const { return good_steps_; }
  /// Steps skipped for non-finite gradients so far in the run.
  [[nodiscard]] std::int64_t skipped_steps() const { return skipped_; }

  /// Clips the step's scaled gradients in `buffers` (train_buffers_t) after dividing them by S, and
  /// updates S. Returns the gradient norm (unscaled, before clipping), or nothing when the step must
  /// be skipped: its gradients are not finite and scaling is on (the gradients are then left as
  /// they were; the caller zeroes them with the next step). With scaling off a non-finite norm is
  /// returned as it is, for the caller's error.
  template <class Buffers>
  std::optional<double> unscale_and_clip(Buffers& buffers, double max_grad_norm) {
    const double norm = buffers.clip_grad_norm(max_grad_norm, 1.0 / scale_);
    if (!enabled_) return norm;
    if (!std::isfinite(norm)) {
      scale_ = std::max(cfg_.min_scale, scale_ * cfg_.backoff_factor);
      good_steps_ = 0;
      ++skipped_;
      return std::nullopt;
    }
    if (++good_steps_ >= cfg_.growth_interval) {
      scale_ = std::min(cfg_.max_scale, scale_ * cfg_.growth_factor);
      good_steps_ = 0;
    }
    return norm;
  }

  /// Restores the state a checkpoint recorded; `who` names the caller in the error.
  void set_state(double scale, std::int64_t good_steps, std::int64_t skipped, const std::string& who) {
    REASON_CHECK(enabled_ || (scale == 1.0 && good_steps == 0 && skipped == 0), who,
                 ": loss scale state (scale ", scale, ", good steps ", good_steps, ", skipped ", skipped,
                 ") for a run without loss scaling");
    int e = 0;
    REASON_CHECK(!enabled_ || (std::frexp(scale, &e) == 0.5 && scale >= cfg_.min_scale && scale <= cfg_.max_scale &&
                               good_steps >= 0 && good_steps < cfg_.growth_interval && skipped >= 0),
                 who, ": loss scale state (scale ", scale, ", good steps ", good_steps, ", skipped ", skipped,
                 ") is impossible under this LossScaleConfig");
    scale_ = scale;
    good_steps_ = good_steps;
    skipped_ = skipped;
  }

 private:
  LossScaleConfig cfg_{};
  bool enabled_ = false;
  double scale_ = 1.0;
  std::int64_t good_steps_ = 0;
  std::int64_t skipped_ = 0;
};

/// A forward_objective objective (kernels/lm_head.hpp's contract: `objective(first_row, logits)`
/// overwrites the logits with d(loss)/d(logits) and returns the loss) whose gradient is multiplied by
/// `scale`: how a loop that trains through forward_objective (rl::GrpoTrainer) scales its loss.
/// The returned loss is the objective's own, unscaled. With scale 1 it changes nothing.
template <class Objective>
struct ScaledObjective {
  Objective& objective;
  double scale = 1;

  template <class T>
  double operator()(index_t first_row, View<T, 2> logits) {
    const double loss = objective(first_row, logits);
    if (scale != 1.0) {
      const T s = static_cast<T>(scale);
      for (index_t r = 0; r < logits.size(0); ++r)
        for (T *x = logits.row(r), *end = x + logits.size(1); x != end; ++x) *x *= s;
    }
    return loss;
  }
};

}  // namespace reason::train
