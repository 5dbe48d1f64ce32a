// reason/rl/token_logp.hpp — log-probabilities of the sampled tokens, as a forward_objective.
//
// Every policy loss needs log pi(o_t | o_<t) of the tokens a rollout sampled, under several
// models: the policy at sampling time (logp_old), the reference (logp_ref, for the KL term),
// and for DPO the summed sequence log-prob
//   log pi(y | x) = sum_t log pi(y_t | x, y_<t)        (Rafailov et al. 2023, eq. 7's log pi(y|x)).
// TokenLogProbs records them with the same chunked LM head a training pass uses, so logp_old
// recomputed this way equals the training pass's to the last bit (ratio exactly 1 at the first
// update). Log-probs recorded while decoding may differ by rounding (docs/architecture.md).
//
// Design rule: an evaluation objective. It writes out(b, t) = log pi(tokens(b, t + 1)) where
// mask(b, t) != 0 (0 elsewhere), leaves zero gradients and returns 0, so it may also run inside a
// training pass without changing any gradient. Row b L + t predicts token t + 1 (the model's rows).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/cross_entropy.hpp"

namespace reason::rl {

template <class T>
class TokenLogProbs {
 public:
  /// tokens, mask [B, L]; out [B, L] receives the log-probs (0 at unmasked positions).
  TokenLogProbs(View<const std::int32_t, 2> tokens, View<const std::uint8_t, 2> mask, View<T, 2> out)
      : tokens_(tokens), mask_(mask), out_(out) {
    expect_shape(mask, "TokenLogProbs: mask", tokens.shape);
    expect_shape(out, "TokenLogProbs: out", tokens.shape);
    const index_t B = tokens.size(0), L = tokens.size(1);
    for (index_t b = 0; b < B; ++b)
      REASON_CHECK(!mask(b, L - 1), "TokenLogProbs: mask(", b, ", ", L - 1, ") is set, but the last position has no next token");
  }

  double operator()(index_t first_row, View<T, 2> logits) {
    const index_t R = logits.size(0), V = logits.size(1), L = tokens_.size(1);
    REASON_CHECK(first_row + R <= tokens_.size(0) * L, "TokenLogProbs: rows beyond the batch (wrong tokens?)");
    parallel_for(R, std::max<index_t>(1, 16384 / std::max<index_t>(1, V)), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const index_t row = first_row + r, b = row / L, t = row % L;
        T* x = logits.row(r);
        out_(b, t) = T(0);
        if (mask_(b, t)) {
          const std::int32_t next = tokens_(b, t + 1);
          REASON_CHECK(next >= 0 && next < V, "TokenLogProbs: token (", b, ", ", t + 1, ") = ", next,
                       " outside the vocabulary of ", V);
          const auto xs = std::span<T>(x, static_cast<std::size_t>(V));
          kernels::log_softmax<T>(xs, xs);
          out_(b, t) = x[next];
        }
        std::fill(x, x + V, T(0));
      }
    });
    return 0.0;
  }

 private:
  View<const std::int32_t, 2> tokens_;
  View<const std::uint8_t, 2> mask_;
  View<T, 2> out_;
};

/// Sums of per-position log-probs [B, L] over the masked positions: sequence log-probs [B].
template <class T>
void sequence_logps(View<const T, 2> token_logps, View<const std::uint8_t, 2> mask, std::span<T> out) {
  const index_t B = token_logps.size(0), L = token_logps.size(1);
  expect_shape(mask, "sequence_logps: mask", {B, L});
  REASON_CHECK(out.size() == static_cast<std::size_t>(B), "sequence_logps: out has ", out.size(), " entries for ", B,
               " sequences");
  for (index_t b = 0; b < B; ++b) {
    double s = 0;
    for (index_t t = 0; t < L; ++t)
      if (mask(b, t)) s += static_cast<double>(token_logps(b, t));
    out[static_cast<std::size_t>(b)] = static_cast<T>(s);
  }
}

}  // namespace reason::rl
