// reason/optim/adamw.hpp — AdamW: Adam with decoupled weight decay.
//
// Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (moments, bias correction);
// Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (the decay acts on
// the weights directly, not through the gradient). Per element, at step t >= 1:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd p)
// Weight decay applies to matrices only (ParamInfo::decay), not to norm gains and biases.
// State: two slots (m, v), each laid out like the parameters.
#pragma once

#include <array>
#include <map>
#include <string>
#include <span>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/kernels/adamw.hpp"

namespace reason::optim {

struct AdamW {
  struct Config {
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double weight_decay = 0.1;
  };
  static constexpr const char* name = "adamw";
  static constexpr int state_slots = 2;
  static constexpr std::array<const char*, state_slots> slot_names{"exp_avg", "exp_avg_sq"};

  Config config;

  /// The numbers, for checkpoints (a resume with other numbers is refused).
  [[nodiscard]] std::map<std::string, double> settings() const {
    return {{"beta1", config.beta1}, {"beta2", config.beta2}, {"eps", config.eps}, {"weight_decay", config.weight_decay}};
  }

  /// One update of every tensor in `layout`; `state` holds state_slots * layout.size() values.
  template <class T>
  void step(const ParamLayout& layout, std::span<T> params, std::span<const T> grads, std::span<T> state, double lr,
            std::int64_t t) const {
    const std::size_t n = layout.size();
    REASON_CHECK(params.size() == n && grads.size() == n && state.size() == state_slots * n, "AdamW::step: params ",
                 params.size(), ", grads ", grads.size(), ", state ", state.size(), " elements; expected ", n, ", ", n,
                 " and ", state_slots * n, " for this layout");
    for (const ParamInfo& p : layout.params()) {
      if (!p.trainable) continue;  // a buffer its module sets (ParamInfo::trainable)
      kernels::adamw_update<T>(params.subspan(p.offset, p.numel), grads.subspan(p.offset, p.numel),
                               state.subspan(p.offset, p.numel), state.subspan(n + p.offset, p.numel), lr, config.beta1,
                               config.beta2, config.eps, p.decay ? config.weight_decay : 0.0, t);
    }
  }
};

}  // namespace reason::optim
