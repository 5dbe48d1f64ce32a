// reason/train/schedule.hpp — learning-rate schedule: linear warmup, then cosine decay.
//
// Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017
// (cosine annealing, here without restarts); linear warmup as in Goyal et al. 2017.
// Step s is 0-based: lr(s) = peak (s + 1) / warmup during warmup, then
// min + (peak - min) (1 + cos(pi progress)) / 2 with progress in [0, 1] over the rest.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "reason/core/error.hpp"

namespace reason::train {

struct CosineSchedule {
  double peak_lr = 1e-3;
  double min_lr = 1e-4;
  std::int64_t warmup_steps = 100;
  std::int64_t total_steps = 1000;

  void validate() const {
    REASON_CHECK(peak_lr > 0 && min_lr >= 0 && min_lr <= peak_lr, "CosineSchedule: need 0 <= min_lr (", min_lr,
                 ") <= peak_lr (", peak_lr, ") and peak_lr > 0");
    REASON_CHECK(warmup_steps >= 0 && total_steps > 0, "CosineSchedule: warmup_steps = ", warmup_steps,
                 ", total_steps = ", total_steps, "; expected >= 0 and > 0");
  }

  [[nodiscard]] double lr(std::int64_t step) const {
    if (step < warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    const double span = static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps));
    const double progress = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }
};

}  // namespace reason::train
