// reason/moe/capacity.hpp — how many tokens an expert may take per forward.
//
//   Capacity<factor>        each expert has ceil(factor * tokens * top_k / experts) slots, where
//                           tokens are the rows of this forward on this process (GShard, Lepikhin
//                           et al. 2020, §2.2; Switch Transformer, Fedus et al. 2021, eq. 3). An
//                           assignment over capacity is dropped: that expert contributes nothing
//                           and the token passes through the residual. Earlier tokens keep their
//                           slots (DropOrder::token); DropOrder::score keeps the highest combine
//                           weights instead (batch prioritized routing, Riquelme et al. 2021).
//   NoDrop                  every assignment is kept (DeepSeek-V3 drops none).
// Decoding also applies the capacity, with the decode batch as its tokens: only NoDrop routes a
// token identically in generation and in a training forward.
#pragma once

#include <charconv>
#include <cmath>
#include <string>

#include "reason/core/view.hpp"
#include "reason/kernels/moe_dispatch.hpp"

namespace reason::moe {

using kernels::DropOrder;

struct NoDrop {
  static constexpr bool drops = false;
  static constexpr DropOrder order = DropOrder::token;
  /// Slots per expert; -1: unlimited.
  static constexpr index_t slots(index_t /*tokens*/, int /*top_k*/, int /*experts*/) { return -1; }
  static std::string signature() { return "no_drop"; }
};

template <float Factor, DropOrder Order = DropOrder::token>
struct Capacity {
  static_assert(Factor > 0.0f, "moe::Capacity<factor>: the capacity factor must be > 0");
  static constexpr bool drops = true;
  static constexpr float factor = Factor;
  static constexpr DropOrder order = Order;
  /// ceil(factor * tokens * top_k / experts). The product is formed in double and shaved by a
  /// relative 1e-6 first, so a factor that float cannot hold exactly (1.1f is 1.10000002) does
  /// not round a whole number of slots up to the next one.
  static index_t slots(index_t tokens, int top_k, int experts) {
    const double exact = static_cast<double>(Factor) * static_cast<double>(tokens) * top_k / experts;
    return static_cast<index_t>(std::ceil(exact * (1.0 - 1e-6)));
  }
  static std::string signature() {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, Factor);
    return "capacity(" + std::string(buf, end) + (Order == DropOrder::score ? ", by score)" : ")");
  }
};

}  // namespace reason::moe
