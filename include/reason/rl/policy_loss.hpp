// reason/rl/policy_loss.hpp — what every policy-gradient loss shares: the clipped surrogate,
// how per-token losses are aggregated, and the row routine that turns a per-token loss into
// gradients on the logits for Transformer::forward_objective.
//
// The PPO-clip surrogate per token (Schulman et al. 2017, PPO, eq. 7; DAPO's decoupled range,
// Yu et al. 2025, DAPO §3.1 "clip-higher"), ratio r_t = exp(logp_t - logp_old_t):
//   l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)
//   dl_t/dlogp_t = -r_t A_t, or exactly 0 where the clip is active: A_t > 0 and r_t > 1 + eps_high,
//   or A_t < 0 and r_t < 1 - eps_low (the min picks the constant clipped term).
//
// Aggregation — how the per-token losses of a batch of B sequences become one number
// (n_b = completion tokens of sequence b, B = sequences, i.e. rows of the batch):
//   sequence_mean  L = 1/B sum_b 1/n_b sum_t l_bt       GRPO (DeepSeekMath eq. 3, R1 eq. 1)
//   token_mean     L = 1/(sum_b n_b) sum_b sum_t l_bt   DAPO (Yu et al. 2025, §3.3)
//   fixed_length   L = 1/(B L_max) sum_b sum_t l_bt     Dr. GRPO (Liu et al. 2025, §3.1),
//                                                       L_max a constant (the generation budget)
// Every mode gives all tokens of sequence b one weight w_b, so L = sum_b w_b sum_t l_bt. For
// gradient accumulation over micro-batches pass the whole step's counts in a Normaliser, as the
// SFT trainer does with its token count.
//
// Row convention (the model's): row b L + t of the [B L, V] logits predicts token t + 1 of
// sequence b; mask(b, t) != 0 marks the rows whose next token was sampled (the completion), and
// mask(b, L - 1) must be 0. The row routine takes log_softmax in place, reads logp of the next
// token, asks the algorithm for (l_t, dl_t/dlogp_t), and overwrites the row with
//   c (onehot(next) - softmax),   c = w_b dl_t/dlogp_t   (d logp / d logits = onehot - softmax).
// Rows are processed in parallel and reduced in row order: the result does not depend on threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/cross_entropy.hpp"

namespace reason::rl {

/// How per-token losses are averaged into the batch loss (see the formulas above).
enum class Aggregation {
  sequence_mean,  // GRPO: mean over a sequence's tokens, then over sequences
  token_mean,     // DAPO: sum over all tokens / total token count
  fixed_length,   // Dr. GRPO: sum over all tokens / (max_length * sequences)
};

/// Overrides of the batch's own counts (0 keeps the batch's): for micro-batches, the whole step's.
struct Normaliser {
  double sequences = 0;   // B in sequence_mean and fixed_length
  double tokens = 0;      // sum_b n_b in token_mean
  double max_length = 0;  // L_max in fixed_length (required there: a constant of the run)
};

/// A per-token surrogate and its derivative with respect to logp.
struct SurrogateTerm {
  double loss = 0;
  double dlogp = 0;
  double ratio = 1;
  bool clipped = false;  // the clip is active: no gradient from this token's surrogate
};

/// The PPO-clip surrogate -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) at one token.
inline SurrogateTerm clipped_surrogate(double logp, double logp_old, double advantage, double eps_low,
                                       double eps_high) {
  const double ratio = std::exp(logp - logp_old);
  const bool clipped = (advantage > 0 && ratio > 1 + eps_high) || (advantage < 0 && ratio < 1 - eps_low);
  if (clipped) return {-std::clamp(ratio, 1 - eps_low, 1 + eps_high) * advantage, 0.0, ratio, true};
  return {-ratio * advantage, -ratio * advantage, ratio, false};
}

/// The weight w_b of every token of sequence b under aggregation A, for mask [B, L].
template <Aggregation A>
std::vector<double> sequence_weights(View<const std::uint8_t, 2> mask, const Normaliser& n) {
  const index_t B = mask.size(0), L = mask.size(1);
  std::vector<double> count(static_cast<std::size_t>(B), 0.0);
  double total = 0;
  for (index_t b = 0; b < B; ++b) {
    for (index_t t = 0; t < L; ++t) count[static_cast<std::size_t>(b)] += mask(b, t) != 0;
    total += count[static_cast<std::size_t>(b)];
  }
  const double seqs = n.sequences > 0 ? n.sequences : static_cast<double>(B);
  std::vector<double> w(static_cast<std::size_t>(B), 0.0);
  for (std::size_t b = 0; b < w.size(); ++b) {
    if (count[b] == 0) continue;
    if constexpr (A == Aggregation::sequence_mean) {
      w[b] = 1.0 / (count[b] * seqs);
    } else if constexpr (A == Aggregation::token_mean) {
      w[b] = 1.0 / (n.tokens > 0 ? n.tokens : total);
    } else {
      REASON_CHECK(n.max_length > 0, "Aggregation::fixed_length needs Normaliser::max_length > 0 "
                   "(the constant generation budget of Dr. GRPO)");
      w[b] = 1.0 / (n.max_length * seqs);
    }
  }
  return w;
}

/// What one token contributes, from the algorithm: its loss, d loss / d logp, and statistics.
struct TokenTerm {
  double loss = 0;
  double dlogp = 0;
  double ratio = 1;
  double kl = 0;
  bool clipped = false;
};

/// Statistics over the completion positions of the last forward_objective pass.
struct PolicyStats {
  double loss = 0;          // the aggregated loss (what the objective returned, summed)
  index_t tokens = 0;       // completion positions seen
  double mean_ratio = 0;    // pi_theta / pi_old
  double clip_fraction = 0; // share of tokens whose surrogate was clipped (zero gradient)
  double mean_kl = 0;       // k3 estimate of KL(pi_theta || pi_ref), when the algorithm has one
  double mean_entropy = 0;  // entropy of pi_theta(. | prefix)
};

namespace detail {

inline void check_rollout(const char* fn, View<const std::int32_t, 2> tokens, View<const std::uint8_t, 2> mask) {
  const index_t B = tokens.size(0), L = tokens.size(1);
  expect_shape(mask, fn, {B, L});
  for (index_t b = 0; b < B; ++b)
    REASON_CHECK(!mask(b, L - 1), fn, ": mask(", b, ", ", L - 1, ") is set, but the last position has no next token");
}

/// Accumulates PolicyStats over the chunks of one pass (reset when the pass starts at row 0).
class PolicyRows {
 public:
  PolicyRows(View<const std::int32_t, 2> tokens, View<const std::uint8_t, 2> mask, std::vector<double> weights)
      : tokens_(tokens), mask_(mask), weights_(std::move(weights)) {}

  /// One chunk of logits [R, V] for rows [first_row, first_row + R): term(b, t, logp) -> TokenTerm.
  template <class T, class Term>
  double run(index_t first_row, View<T, 2> logits, Term&& term) {
    const index_t R = logits.size(0), V = logits.size(1), L = tokens_.size(1);
    REASON_CHECK(first_row >= 0 && first_row + R <= tokens_.size(0) * L, "policy objective: rows [", first_row, ", ",
                 first_row + R, ") outside the batch of ", tokens_.size(0) * L, " rows (wrong tokens for this batch?)");
    if (first_row == 0) sums_ = {};
    rows_.assign(static_cast<std::size_t>(R), Row{});
    parallel_for(R, std::max<index_t>(1, 16384 / std::max<index_t>(1, V)), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const index_t row = first_row + r, b = row / L, t = row % L;
        T* x = logits.row(r);
        if (!mask_(b, t)) {
          std::fill(x, x + V, T(0));
          continue;
        }
        const std::int32_t next = tokens_(b, t + 1);
        REASON_CHECK(next >= 0 && next < V, "policy objective: token (", b, ", ", t + 1, ") = ", next,
                     " outside the vocabulary of ", V);
        kernels::log_softmax<T>(std::span<const T>(x, static_cast<std::size_t>(V)), std::span<T>(x, static_cast<std::size_t>(V)));
        double entropy = 0;
        for (index_t v = 0; v < V; ++v)
          if (x[v] > -INFINITY) entropy -= std::exp(static_cast<double>(x[v])) * static_cast<double>(x[v]);
        const TokenTerm k = term(b, t, static_cast<double>(x[next]));
        const double w = weights_[static_cast<std::size_t>(b)];
        const double c = w * k.dlogp;
        for (index_t v = 0; v < V; ++v) x[v] = static_cast<T>(-c * std::exp(static_cast<double>(x[v])));
        x[next] += static_cast<T>(c);
        rows_[static_cast<std::size_t>(r)] = {w * k.loss, k.ratio, k.kl, entropy, k.clipped, true};
      }
    });
    double loss = 0;
    for (const Row& r : rows_) {
      if (!r.counted) continue;
      loss += r.loss;
      sums_.tokens += 1;
      sums_.ratio += r.ratio;
      sums_.kl += r.kl;
      sums_.entropy += r.entropy;
      sums_.clipped += r.clipped;
    }
    sums_.loss += loss;
    return loss;
  }

  [[nodiscard]] PolicyStats stats() const {
    PolicyStats s;
    s.loss = sums_.loss;
    s.tokens = static_cast<index_t>(sums_.tokens);
    if (sums_.tokens > 0) {
      s.mean_ratio = sums_.ratio / sums_.tokens;
      s.clip_fraction = sums_.clipped / sums_.tokens;
      s.mean_kl = sums_.kl / sums_.tokens;
      s.mean_entropy = sums_.entropy / sums_.tokens;
    }
    return s;
  }

  [[nodiscard]] std::span<const double> weights() const { return weights_; }
  [[nodiscard]] View<const std::int32_t, 2> tokens() const { return tokens_; }
  [[nodiscard]] View<const std::uint8_t, 2> mask() const { return mask_; }

 private:
  struct Row {
    double loss = 0, ratio = 0, kl = 0, entropy = 0;
    bool clipped = false, counted = false;
  };
  struct Sums {
    double loss = 0, tokens = 0, ratio = 0, kl = 0, entropy = 0, clipped = 0;
  };
  View<const std::int32_t, 2> tokens_;
  View<const std::uint8_t, 2> mask_;
  std::vector<double> weights_;
  std::vector<Row> rows_;
  Sums sums_;
};

}  // namespace detail

}  // namespace reason::rl
