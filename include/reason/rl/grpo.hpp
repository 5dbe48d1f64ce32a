// reason/rl/grpo.hpp — the GRPO loss: a clipped surrogate on group-relative advantages plus a
// k3 KL penalty to a reference policy, per token, on the logits of Transformer::forward_objective.
//
// Shao et al. 2024, DeepSeekMath, eq. 3 (and DeepSeek-R1, eq. 1), per completion token t of
// sequence i, with ratio r_it = exp(logp_it - logp_old_it) and one advantage A_i per sequence
// (rl/advantages.hpp):
//   l_it = -min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i) + beta k3_it
//   k3_it = exp(logp_ref_it - logp_it) - (logp_ref_it - logp_it) - 1              (rl/kl.hpp)
//   dl_it/dlogp_it = [not clipped] (-r_it A_i) + beta (1 - exp(logp_ref_it - logp_it))
// then aggregated by GrpoConfig::aggregation (rl/policy_loss.hpp): sequence_mean is GRPO's
// 1/G sum_i 1/|o_i| sum_t; token_mean is DAPO's (Yu et al. 2025, §3.3); fixed_length is
// Dr. GRPO's (Liu et al. 2025). eps_high > eps_low is DAPO's clip-higher (§3.1).
//
// Design rule: the clip range and the aggregation select the algorithm, so they are a
// structural config passed as a template argument,
//   using Dapo = rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f,
//                                        .aggregation = rl::Aggregation::token_mean}>;
// while beta and the normaliser are run-time coefficients. Grpo<C>::token is the element-wise
// loss; Grpo<C>::Batch<T> is the objective for Transformer::forward_objective over a rollout
// batch, and reports the mean ratio, clip fraction, mean KL and mean entropy of the pass.
#pragma once

#include <cstdint>
#include <span>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/rl/kl.hpp"
#include "reason/rl/policy_loss.hpp"

namespace reason::rl {

/// The numbers that make GRPO, DAPO or Dr. GRPO (a structural NTTP).
struct GrpoConfig {
  float eps_low = 0.2f;   // ratio clipped below at 1 - eps_low
  float eps_high = 0.2f;  // ... and above at 1 + eps_high (DAPO: 0.28)
  Aggregation aggregation = Aggregation::sequence_mean;
};

/// Run-time coefficients of the GRPO loss.
struct GrpoCoefficients {
  double beta = 0.04;       // KL penalty (DeepSeekMath: 0.04; DAPO and Dr. GRPO: 0)
  Normaliser normaliser{};  // step-wide counts for micro-batches; max_length for fixed_length
};

/// The rollout batch a policy loss trains on; every view is [B, L] over the same rows.
template <class T>
struct RolloutBatch {
  View<const std::int32_t, 2> tokens;  // [B, L] prompt + completion, padded
  View<const std::uint8_t, 2> mask;    // [B, L] 1 where the next token (t + 1) was sampled
  View<const T, 2> logp_old;           // [B, L] log pi_old(tokens(b, t + 1)) at masked positions
  View<const T, 2> logp_ref;           // [B, L] log pi_ref(...), or empty when beta = 0
  std::span<const T> advantages;       // [B] one per sequence (GRPO); unused by PPO
};

template <GrpoConfig C>
struct Grpo {
  static_assert(C.eps_low > 0 && C.eps_low < 1, "rl::GrpoConfig: eps_low must lie in (0, 1)");
  static_assert(C.eps_high > 0, "rl::GrpoConfig: eps_high must be > 0");
  static constexpr GrpoConfig config = C;

  /// The loss of one token and d loss / d logp: the clipped surrogate plus beta k3.
  static TokenTerm token(double logp, double logp_old, double logp_ref, double advantage, double beta) {
    const SurrogateTerm s = clipped_surrogate(logp, logp_old, advantage, C.eps_low, C.eps_high);
    TokenTerm t{s.loss, s.dlogp, s.ratio, 0.0, s.clipped};
    if (beta != 0) {
      const KlTerm kl = k3(logp, logp_ref);
      t.kl = kl.value;
      t.loss += beta * kl.value;
      t.dlogp += beta * kl.dlogp;
    }
    return t;
  }

  /// The GRPO objective over one rollout batch: pass it to Transformer::forward_objective with
  /// the batch's tokens; stats() describes the last pass.
  template <class T>
  class Batch {
   public:
    Batch(const RolloutBatch<T>& batch, GrpoCoefficients coef)
        : b_(batch), coef_(coef), rows_(batch.tokens, batch.mask, make_weights(batch, coef)) {}

    double operator()(index_t first_row, View<T, 2> logits) {
      return rows_.run(first_row, logits, [&](index_t b, index_t t, double logp) {
        const double ref = coef_.beta != 0 ? static_cast<double>(b_.logp_ref(b, t)) : 0.0;
        return token(logp, static_cast<double>(b_.logp_old(b, t)), ref,
                     static_cast<double>(b_.advantages[static_cast<std::size_t>(b)]), coef_.beta);
      });
    }

    [[nodiscard]] PolicyStats stats() const { return rows_.stats(); }
    /// w_b: the weight of each token of sequence b in the aggregated loss.
    [[nodiscard]] std::span<const double> weights() const { return rows_.weights(); }

   private:
    static std::vector<double> make_weights(const RolloutBatch<T>& r, const GrpoCoefficients& coef) {
      const index_t B = r.tokens.size(0), L = r.tokens.size(1);
      detail::check_rollout("Grpo::Batch: mask", r.tokens, r.mask);
      expect_shape(r.logp_old, "Grpo::Batch: logp_old", {B, L});
      if (coef.beta != 0) expect_shape(r.logp_ref, "Grpo::Batch: logp_ref (needed when beta != 0)", {B, L});
      REASON_CHECK(r.advantages.size() == static_cast<std::size_t>(B), "Grpo::Batch: ", r.advantages.size(),
                   " advantages for ", B, " sequences (one per sequence)");
      return sequence_weights<C.aggregation>(r.mask, coef.normaliser);
    }

    RolloutBatch<T> b_;
    GrpoCoefficients coef_;
    detail::PolicyRows rows_;
  };
};

}  // namespace reason::rl
