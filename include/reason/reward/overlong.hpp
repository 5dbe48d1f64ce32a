// reason/reward/overlong.hpp — DAPO's soft punishment of over-long responses.
//
// DAPO (Yu et al. 2025, "DAPO: an open-source LLM reinforcement learning system at scale", §3.4,
// eq. 13): with a maximum length L and a punishment cache C,
//     R(y) = 0                     if |y| <= L - C
//          = ((L - C) - |y|) / C   if L - C < |y| <= L
//          = -1                    if |y| > L,
// a ramp instead of a cliff, so a response a few tokens too long is not punished like a rambling
// one. Design rule: |y| is measured in *tokens* as data::Tokenizer counts them (one per byte,
// one per special tag; reward/tags.hpp counts without encoding), over the generated completion
// without the <pad>s that end it (batch padding is not generation). Range [-1, 0]. L and C are
// compile-time numbers, checked: 0 < C <= L.
#pragma once

#include <cstdint>
#include <string_view>

#include "reason/data/arithmetic.hpp"
#include "reason/reward/tags.hpp"

namespace reason::reward {

struct OverlongConfig {
  std::int64_t max_length = 0;  // L: longer responses get -1
  std::int64_t cache = 0;       // C: the ramp from 0 down to -1 spans lengths L-C .. L
};

/// Soft overlong punishment: 0, a linear ramp to -1, then -1.
template <OverlongConfig C>
struct Overlong {
  static_assert(C.cache > 0 && C.cache <= C.max_length,
                "reward::Overlong<OverlongConfig{.max_length = L, .cache = C}>: needs 0 < C <= L");
  static constexpr const char* name = "overlong";
  static constexpr float min_score = -1.0f, max_score = 0.0f;

  /// The DAPO punishment for a response of `length` tokens.
  [[nodiscard]] static constexpr float punishment(std::int64_t length) {
    const std::int64_t soft = C.max_length - C.cache;
    if (length <= soft) return 0.0f;
    if (length > C.max_length) return -1.0f;
    return static_cast<float>(static_cast<double>(soft - length) / static_cast<double>(C.cache));
  }

  /// Tokens of the completion, trailing <pad>s excluded.
  [[nodiscard]] static std::int64_t length(std::string_view completion) {
    const TagScan s = scan_tags(completion);
    return static_cast<std::int64_t>(s.tokens() - s.trailing_pads);
  }

  [[nodiscard]] float score(std::string_view completion, const data::Problem& /*sample*/) const {
    return punishment(length(completion));
  }
};

}  // namespace reason::reward
