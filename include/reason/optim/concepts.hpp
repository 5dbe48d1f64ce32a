// reason/optim/concepts.hpp — what an optimizer policy provides.
//
// A runtime Config of its numbers (and settings(): them by name, for checkpoints), a fixed number of state slots laid out like the
// parameters (named, for checkpoints), and step(layout, params, grads, state, lr, t).
#pragma once

#include <concepts>
#include <cstdint>
#include <map>
#include <string>
#include <span>

#include "reason/core/param_layout.hpp"

namespace reason::optim {

template <class O>
concept Optimizer = requires(const O o, const ParamLayout& layout, std::span<float> p, std::span<const float> g,
                             std::span<float> s) {
  typename O::Config;
  { O::name } -> std::convertible_to<const char*>;
  { O::state_slots } -> std::convertible_to<int>;
  { O::slot_names[0] } -> std::convertible_to<const char*>;
  o.step(layout, p, g, s, 1.0, std::int64_t{1});
  { o.settings() } -> std::convertible_to<std::map<std::string, double>>;
};

}  // namespace reason::optim
