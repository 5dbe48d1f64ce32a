// reason/optim/sgd.hpp — SGD with (optionally Nesterov) momentum and decoupled weight decay.
//
// Polyak's heavy ball / Sutskever et al., "On the importance of initialization and momentum
// in deep learning", ICML 2013 (Nesterov form); the update PyTorch's torch.optim.SGD performs:
//   buf = mu buf + g;  p -= lr (nesterov ? g + mu buf : buf) + lr wd p
// State: one slot (the momentum buffer).
#pragma once

#include <array>
#include <map>
#include <string>
#include <span>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/kernels/sgd.hpp"

namespace reason::optim {

struct SgdMomentum {
  struct Config {
    double momentum = 0.9;
    double weight_decay = 0.0;
    bool nesterov = false;
  };
  static constexpr const char* name = "sgd_momentum";
  static constexpr int state_slots = 1;
  static constexpr std::array<const char*, state_slots> slot_names{"momentum_buffer"};

  Config config;

  /// The numbers, for checkpoints (a resume with other numbers is refused).
  [[nodiscard]] std::map<std::string, double> settings() const {
    return {{"momentum", config.momentum}, {"weight_decay", config.weight_decay}, {"nesterov", config.nesterov ? 1.0 : 0.0}};
  }

  template <class T>
  void step(const ParamLayout& layout, std::span<T> params, std::span<const T> grads, std::span<T> state, double lr,
            std::int64_t /*t*/) const {
    const std::size_t n = layout.size();
    REASON_CHECK(params.size() == n && grads.size() == n && state.size() == state_slots * n, "SgdMomentum::step: params ",
                 params.size(), ", grads ", grads.size(), ", state ", state.size(), " elements; expected ", n, ", ", n,
                 " and ", state_slots * n, " for this layout");
    for (const ParamInfo& p : layout.params()) {
      if (!p.trainable) continue;  // a buffer its module sets (ParamInfo::trainable)
      kernels::sgd_momentum_update<T>(params.subspan(p.offset, p.numel), grads.subspan(p.offset, p.numel),
                                      state.subspan(p.offset, p.numel), lr, config.momentum,
                                      p.decay ? config.weight_decay : 0.0, config.nesterov);
    }
  }
};

}  // namespace reason::optim
