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
// Only training forwards drop: a model's evaluation forwards and its decoding keep every token
// (as Switch and GShard evaluate; a capacity over a decode batch of one token per sequence would
// drop tokens for no reason). So only NoDrop routes a token identically in generation and in the
// training forward of the same text — the property an RL policy's log-probabilities rely on.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <system_error>
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
  /// ceil(factor * tokens * top_k / experts), with the factor taken as the decimal it was written
  /// as (1.1f is 1.10000002 in binary; the shortest decimal that reads back as it, 1.1, is what
  /// the user meant), in exact integer arithmetic: a whole number of slots is never rounded up.
  static index_t slots(index_t tokens, int top_k, int experts) {
    char buf[64];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, Factor, std::chars_format::fixed);
    std::uint64_t num = 0, den = 1;
    int digits = 0;
    bool fraction = false, exact = ec == std::errc{};
    for (const char* c = buf; exact && c != end; ++c) {
      if (*c == '.') {
        fraction = true;
        continue;
      }
      if (++digits > 18) exact = false;  // beyond 64-bit digits: fall back to floating point
      num = num * 10 + static_cast<std::uint64_t>(*c - '0');
      if (fraction) den *= 10;
    }
    if (!exact) return static_cast<index_t>(std::ceil(static_cast<double>(Factor) * static_cast<double>(tokens) * top_k / experts));
    __extension__ using u128 = unsigned __int128;  // num * tokens * top_k needs up to ~128 bits
    const u128 a = static_cast<u128>(num) * static_cast<u128>(tokens) * static_cast<u128>(top_k);
    const u128 b = static_cast<u128>(den) * static_cast<u128>(experts);
    return static_cast<index_t>((a + b - 1) / b);
  }
  static std::string signature() {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, Factor);
    return "capacity(" + std::string(buf, end) + (Order == DropOrder::score ? ", by score)" : ")");
  }
};

}  // namespace reason::moe
