// reason/train/token_batch.hpp — one micro-batch of token ids and next-token targets.
//
// tokens[b, t] is the input at position t; targets[b, t] is the token the model should
// predict there, or -1 where nothing is predicted (prompt, padding). Both [batch, seq] int32.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "reason/core/view.hpp"

namespace reason::train {

struct TokenBatch {
  index_t batch = 0, seq = 0;
  std::vector<std::int32_t> tokens, targets;  // [batch, seq] each

  void resize(index_t b, index_t s) {
    batch = b;
    seq = s;
    tokens.assign(static_cast<std::size_t>(b * s), 0);
    targets.assign(static_cast<std::size_t>(b * s), -1);
  }
  [[nodiscard]] View<const std::int32_t, 2> tokens_view() const { return make_view(tokens.data(), batch, seq); }
  [[nodiscard]] View<const std::int32_t, 2> targets_view() const { return make_view(targets.data(), batch, seq); }
  /// Number of positions with a target (what the loss averages over).
  [[nodiscard]] index_t target_count() const {
    index_t n = 0;
    for (auto t : targets) n += t >= 0;
    return n;
  }
};

/// Fills micro-batch `micro` of optimizer step `step`. It must be a pure function of
/// (step, micro) — e.g. drawing from Philox(seed, stream = step * micro_batches + micro) — so
/// that a resumed run sees exactly the batches an uninterrupted one would.
using BatchSource = std::function<void(std::int64_t step, int micro, TokenBatch& out)>;

}  // namespace reason::train
