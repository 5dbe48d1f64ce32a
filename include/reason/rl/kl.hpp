// reason/rl/kl.hpp — the per-token k3 estimator of KL(pi_theta || pi_ref).
//
// GRPO keeps the policy near a reference model with a KL penalty estimated from the sampled
// token alone (Schulman 2020, "Approximating KL Divergence", estimator k3; DeepSeekMath eq. 4):
//   d  = log pi_ref(o_t) - log pi_theta(o_t)
//   k3 = exp(d) - d - 1
// Under o_t ~ pi_theta it is unbiased for KL(pi_theta || pi_ref) (E[exp(d)] = 1), and since
// e^d >= 1 + d it is >= 0 per token, with equality exactly when the two log-probs are equal —
// lower variance than k1 = -d, unlike which it never goes negative.
// Its derivative with respect to the policy's log-prob (d depends on logp with slope -1):
//   d k3 / d logp = 1 - exp(d)
// Design rule: element-wise, in double; the batch objectives (grpo.hpp) call it per token.
#pragma once

#include <cmath>

namespace reason::rl {

/// A per-token value and its derivative with respect to the policy's log-prob.
struct KlTerm {
  double value = 0;  // k3 >= 0
  double dlogp = 0;  // d k3 / d logp
};

/// k3 estimate of KL(pi_theta || pi_ref) at one sampled token: logp = log pi_theta(o_t),
/// logp_ref = log pi_ref(o_t).
inline KlTerm k3(double logp, double logp_ref) {
  const double d = logp_ref - logp;
  const double e = std::exp(d);
  // expm1 keeps e - 1 - d accurate when d is tiny (the usual case: the policies are close).
  return {std::expm1(d) - d, 1.0 - e};
}

}  // namespace reason::rl
