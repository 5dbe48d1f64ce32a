// reason/rl/bradley_terry.hpp — the pairwise loss a reward model learns human preferences from.
//
// Bradley & Terry 1952 model P(chosen > rejected) = sigmoid(r_c - r_r); a reward model r_theta
// maximises its log-likelihood over comparisons (Ouyang et al. 2022, InstructGPT, eq. 1;
// Llama 2's optional margin m, Touvron et al. 2023, eq. 2):
//   loss = -log sigmoid(r_c - r_r - m) = softplus(-(r_c - r_r - m))
//   d loss / d r_c = -sigmoid(-(r_c - r_r - m)),   d loss / d r_r = +sigmoid(-(r_c - r_r - m))
// Design rule: element-wise on the two scalar rewards, in double and overflow-free (softplus);
// the learned reward model that produces r_c and r_r (a head on a Transformer's final hidden
// state, like ppo.hpp's ValueHead) pushes these derivatives into its hidden_grad().
#pragma once

#include <algorithm>
#include <cmath>
#include <span>

#include "reason/core/error.hpp"

namespace reason::rl {

struct BradleyTerryTerm {
  double loss = 0;
  double dchosen = 0;    // d loss / d r_chosen
  double drejected = 0;  // d loss / d r_rejected
};

/// -log sigmoid(r_chosen - r_rejected - margin) and its two derivatives.
inline BradleyTerryTerm bradley_terry(double r_chosen, double r_rejected, double margin = 0) {
  const double d = r_chosen - r_rejected - margin;
  const double loss = std::max(-d, 0.0) + std::log1p(std::exp(-std::abs(d)));  // softplus(-d)
  const double s = d >= 0 ? std::exp(-d) / (1.0 + std::exp(-d)) : 1.0 / (1.0 + std::exp(d));  // sigmoid(-d)
  return {loss, -s, s};
}

/// Mean loss over pairs (r_chosen[i], r_rejected[i]); gradients into d_chosen, d_rejected
/// (overwritten, already divided by the number of pairs). Returns the mean loss.
inline double bradley_terry_mean(std::span<const double> r_chosen, std::span<const double> r_rejected,
                                 std::span<double> d_chosen, std::span<double> d_rejected) {
  const std::size_t n = r_chosen.size();
  REASON_CHECK(r_rejected.size() == n && d_chosen.size() == n && d_rejected.size() == n,
               "bradley_terry_mean: ", n, " chosen rewards but ", r_rejected.size(), " rejected, ", d_chosen.size(),
               " and ", d_rejected.size(), " gradient slots");
  double loss = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const BradleyTerryTerm t = bradley_terry(r_chosen[i], r_rejected[i]);
    loss += t.loss / static_cast<double>(n);
    d_chosen[i] = t.dchosen / static_cast<double>(n);
    d_rejected[i] = t.drejected / static_cast<double>(n);
  }
  return loss;
}

}  // namespace reason::rl
