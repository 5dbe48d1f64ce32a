// reason/rl/dpo.hpp — Direct Preference Optimization on pairs of chosen and rejected completions.
//
// Rafailov et al. 2023, "Direct Preference Optimization", eq. 7: for a prompt x with a chosen
// completion y_c and a rejected one y_r, with sequence log-probs log pi(y | x) = sum over the
// completion tokens of log pi(y_t | x, y_<t) under the policy and under the frozen reference,
//   z    = beta ((logp_c - logp_ref_c) - (logp_r - logp_ref_r))
//   loss = -log sigmoid(z) = softplus(-z)
//   d loss / d logp_c = -beta sigmoid(-z),   d loss / d logp_r = +beta sigmoid(-z)
// and each token's log-prob inherits its sequence's derivative. The batch loss is the mean over
// pairs. The implicit rewards beta (logp - logp_ref) give the usual statistics: accuracy (the
// share of pairs with z > 0) and the mean margin z.
//
// Design rule: the loss is not a sum over tokens — every token's gradient needs its whole
// sequence's log-prob and its partner's — so training takes two passes through the model: an
// evaluation pass (measure(), grads null) that records the sequence log-probs, then the training
// pass (the Batch itself as the objective) that writes c_b (onehot - softmax) per completion row.
// forward() runs both. The two passes run the same kernels on the same weights, so the log-probs
// of the second equal the first's. Batch layout: P pairs in 2P rows, chosen sequences in rows
// [0, P), their rejected partners in rows [P, 2P) (pair i = rows i and P + i).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/rl/policy_loss.hpp"
#include "reason/rl/token_logp.hpp"

namespace reason::rl {

namespace detail {
/// softplus(x) = log(1 + exp(x)), without overflow.
inline double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }
inline double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}
}  // namespace detail

/// The DPO loss of one pair and its derivatives with respect to the two policy log-probs.
struct DpoTerm {
  double loss = 0;
  double dlogp_chosen = 0;
  double dlogp_rejected = 0;
  double z = 0;  // beta times the difference of log-ratios: > 0 when the policy prefers the chosen one
};

/// Run-time coefficients of the DPO loss.
struct DpoCoefficients {
  double beta = 0.1;  // inverse temperature of the implicit reward (Rafailov et al.: 0.1 to 0.5)
  double pairs = 0;   // normaliser: 0 = this batch's pairs; the step's pairs for micro-batches
};

struct DpoStats {
  double loss = 0;         // mean over pairs (times P / normaliser)
  double accuracy = 0;     // share of pairs with z > 0
  double mean_margin = 0;  // mean z
};

struct Dpo {
  static DpoTerm pair(double logp_chosen, double logp_ref_chosen, double logp_rejected, double logp_ref_rejected,
                      double beta) {
    const double z = beta * ((logp_chosen - logp_ref_chosen) - (logp_rejected - logp_ref_rejected));
    const double s = detail::sigmoid(-z);
    return {detail::softplus(-z), -beta * s, beta * s, z};
  }

  template <class T>
  class Batch {
   public:
    /// tokens, mask [2P, L] (chosen rows first, then rejected); ref_logps [2P] the reference's
    /// sequence log-probs (TokenLogProbs + sequence_logps on the reference model).
    Batch(View<const std::int32_t, 2> tokens, View<const std::uint8_t, 2> mask, std::span<const T> ref_logps,
          DpoCoefficients coef)
        : tokens_(tokens), mask_(mask), ref_(ref_logps), coef_(coef),
          token_logps_(static_cast<std::size_t>(tokens.size(0) * tokens.size(1)), T(0)),
          logps_(static_cast<std::size_t>(tokens.size(0)), T(0)) {
      const index_t B = tokens.size(0);
      detail::check_rollout("Dpo::Batch: mask", tokens, mask);
      REASON_CHECK(B % 2 == 0 && B > 0, "Dpo::Batch: ", B, " rows; expected 2P (P chosen, then P rejected)");
      REASON_CHECK(ref_logps.size() == static_cast<std::size_t>(B), "Dpo::Batch: ", ref_logps.size(),
                   " reference log-probs for ", B, " sequences");
    }
    Batch(const Batch&) = delete;  // measure() hands out a callable that points here
    Batch& operator=(const Batch&) = delete;

    /// The evaluation objective of the first pass: records the policy's sequence log-probs.
    [[nodiscard]] auto measure() {
      return [this](index_t first_row, View<T, 2> logits) {
        const auto view = make_view(token_logps_.data(), tokens_.size(0), tokens_.size(1));
        TokenLogProbs<T> rec(tokens_, mask_, view);
        rec(first_row, logits);
        if (first_row + logits.size(0) == tokens_.size(0) * tokens_.size(1)) {  // the pass is complete
          sequence_logps<T>(view, mask_, std::span<T>(logps_));
          measured_ = true;
        }
        return 0.0;
      };
    }

    /// The training objective (after a measure() pass on the same weights): returns the batch
    /// loss with the first chunk and writes every completion row's gradient.
    double operator()(index_t first_row, View<T, 2> logits) {
      REASON_CHECK(measured_, "Dpo::Batch: run a forward_objective pass with measure() first");
      const index_t P = tokens_.size(0) / 2, L = tokens_.size(1);
      if (first_row == 0) {
        coeff_.assign(static_cast<std::size_t>(2 * P), 0.0);
        const double norm = coef_.pairs > 0 ? coef_.pairs : static_cast<double>(P);
        stats_ = {};
        for (index_t i = 0; i < P; ++i) {
          const auto c = static_cast<std::size_t>(i), r = static_cast<std::size_t>(P + i);
          const DpoTerm d = pair(logps_[c], ref_[c], logps_[r], ref_[r], coef_.beta);
          coeff_[c] = d.dlogp_chosen / norm;
          coeff_[r] = d.dlogp_rejected / norm;
          stats_.loss += d.loss / norm;
          stats_.accuracy += d.z > 0 ? 1.0 / static_cast<double>(P) : 0.0;
          stats_.mean_margin += d.z / static_cast<double>(P);
        }
      }
      const index_t V = logits.size(1);
      for (index_t r = 0; r < logits.size(0); ++r) {
        const index_t row = first_row + r, b = row / L, t = row % L;
        T* x = logits.row(r);
        if (!mask_(b, t)) {
          std::fill(x, x + V, T(0));
          continue;
        }
        const std::int32_t next = tokens_(b, t + 1);
        REASON_CHECK(next >= 0 && next < V, "Dpo::Batch: token (", b, ", ", t + 1, ") = ", next,
                     " outside the vocabulary of ", V);
        const auto xs = std::span<T>(x, static_cast<std::size_t>(V));
        kernels::log_softmax<T>(xs, xs);
        const double c = coeff_[static_cast<std::size_t>(b)];
        for (index_t v = 0; v < V; ++v) x[v] = static_cast<T>(-c * std::exp(static_cast<double>(x[v])));
        x[next] += static_cast<T>(c);
      }
      return first_row == 0 ? stats_.loss : 0.0;
    }

    /// Both passes: measure, then the training pass with gradients (backward() may follow).
    template <class Net>
    double forward(Net& net, const T* params, T* grads) {
      auto m = measure();
      net.forward_objective(params, nullptr, tokens_, m);
      return net.forward_objective(params, grads, tokens_, *this);
    }

    /// The loss from the last measure() pass (no gradient pass needed).
    [[nodiscard]] double loss() const {
      REASON_CHECK(measured_, "Dpo::Batch::loss: no measure() pass yet");
      const index_t P = tokens_.size(0) / 2;
      const double norm = coef_.pairs > 0 ? coef_.pairs : static_cast<double>(P);
      double l = 0;
      for (index_t i = 0; i < P; ++i) {
        const auto c = static_cast<std::size_t>(i), r = static_cast<std::size_t>(P + i);
        l += pair(logps_[c], ref_[c], logps_[r], ref_[r], coef_.beta).loss / norm;
      }
      return l;
    }

    /// The policy's sequence log-probs [2P] from the last measure() pass.
    [[nodiscard]] std::span<const T> policy_logps() const { return logps_; }
    [[nodiscard]] DpoStats stats() const { return stats_; }

   private:
    View<const std::int32_t, 2> tokens_;
    View<const std::uint8_t, 2> mask_;
    std::span<const T> ref_;
    DpoCoefficients coef_;
    std::vector<T> token_logps_;  // [2P, L]
    std::vector<T> logps_;        // [2P]
    std::vector<double> coeff_;   // [2P] d loss / d logp of each sequence
    DpoStats stats_;
    bool measured_ = false;
  };
};

}  // namespace reason::rl
