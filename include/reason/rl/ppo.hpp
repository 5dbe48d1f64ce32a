// reason/rl/ppo.hpp — PPO for language models: the clipped surrogate on per-token advantages,
// a value head on the final hidden states, and the clipped value loss.
//
// Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7 (policy) and eq. 9
// (value term), with per-token advantages A_t and returns R_t from GAE (rl/advantages.hpp,
// Schulman et al. 2016) and ratio r_t = exp(logp_t - logp_old_t):
//   policy  l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)       (rl/policy_loss.hpp)
//   value   V_t = h_t . w + b                                                  (ValueHead)
//           lv_t = 1/2 max((V_t - R_t)^2, (V_old_t + clip(V_t - V_old_t, -eps_v, eps_v) - R_t)^2)
//           dlv_t/dV_t = V_t - R_t, except 0 when the clipped branch is the larger one and
//           |V_t - V_old_t| > eps_v (the clipped branch is then constant in V_t)
// (the value clip as in OpenAI baselines' ppo2 and the RLHF stacks; eps_v <= 0 turns it off).
// Both are aggregated over completion positions like GRPO (PpoConfig::aggregation); the KL to
// the reference belongs in the per-token rewards that GAE reads (Ouyang et al. 2022, eq. 2).
//
// Design rule: the clip ranges and the aggregation are a structural NTTP (PpoConfig), the
// value coefficient is run-time. The surrogate is an objective for forward_objective; the value
// head owns a tiny flat parameter buffer (layout(): value_head.weight [C], value_head.bias [1]) and
// adds its gradient into Transformer::hidden_grad(), so actor and critic can share one trunk and
// one backward(): forward_objective(surrogate) -> value head on final_hidden() -> backward().
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/rl/advantages.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/policy_loss.hpp"

namespace reason::rl {

/// The numbers that make this PPO (a structural NTTP).
struct PpoConfig {
  float eps_low = 0.2f;     // policy ratio clipped below at 1 - eps_low
  float eps_high = 0.2f;    // ... and above at 1 + eps_high
  float value_clip = 0.2f;  // eps_v: the value moves at most this far from V_old; <= 0: no clip
  Aggregation aggregation = Aggregation::token_mean;
};

/// A value and its derivative with respect to the value.
struct ValueTerm {
  double loss = 0;
  double dvalue = 0;
  bool clipped = false;  // the clipped branch was taken and is constant: no gradient
};

template <PpoConfig C>
struct Ppo {
  static_assert(C.eps_low > 0 && C.eps_low < 1, "rl::PpoConfig: eps_low must lie in (0, 1)");
  static_assert(C.eps_high > 0, "rl::PpoConfig: eps_high must be > 0");
  static constexpr PpoConfig config = C;

  /// The clipped surrogate of one token.
  static TokenTerm token(double logp, double logp_old, double advantage) {
    const SurrogateTerm s = clipped_surrogate(logp, logp_old, advantage, C.eps_low, C.eps_high);
    return {s.loss, s.dlogp, s.ratio, 0.0, s.clipped};
  }

  /// The (clipped) value loss of one position: value V, V_old from the rollout, return R.
  static ValueTerm value_token(double value, double value_old, double ret) {
    const double e = value - ret;
    if constexpr (C.value_clip > 0) {
      const double eps = C.value_clip;
      const double vc = value_old + std::clamp(value - value_old, -eps, eps);
      const double ec = vc - ret;
      if (ec * ec > e * e) {
        const bool flat = std::abs(value - value_old) > eps;
        return {0.5 * ec * ec, flat ? 0.0 : ec, flat};
      }
    }
    return {0.5 * e * e, e, false};
  }

  /// The policy objective over a rollout with per-token advantages [B, L] (RolloutBatch's
  /// logp_ref and advantages are not used).
  template <class T>
  class Batch {
   public:
    Batch(const RolloutBatch<T>& batch, View<const T, 2> advantages, Normaliser normaliser = {})
        : b_(batch), adv_(advantages), rows_(batch.tokens, batch.mask, make_weights(batch, advantages, normaliser)) {}

    double operator()(index_t first_row, View<T, 2> logits) {
      return rows_.run(first_row, logits, [&](index_t b, index_t t, double logp) {
        return token(logp, static_cast<double>(b_.logp_old(b, t)), static_cast<double>(adv_(b, t)));
      });
    }

    [[nodiscard]] PolicyStats stats() const { return rows_.stats(); }
    [[nodiscard]] std::span<const double> weights() const { return rows_.weights(); }

   private:
    static std::vector<double> make_weights(const RolloutBatch<T>& r, View<const T, 2> adv, const Normaliser& n) {
      detail::check_rollout("Ppo::Batch: mask", r.tokens, r.mask);
      expect_shape(r.logp_old, "Ppo::Batch: logp_old", r.tokens.shape);
      expect_shape(adv, "Ppo::Batch: advantages", r.tokens.shape);
      return sequence_weights<C.aggregation>(r.mask, n);
    }

    RolloutBatch<T> b_;
    View<const T, 2> adv_;
    detail::PolicyRows rows_;
  };

  /// coef * (aggregated value loss) over the masked positions of values [B, L]; dvalues [B, L]
  /// is overwritten with its gradient (0 at unmasked positions). Returns the loss.
  template <class T>
  static double value_loss(View<const T, 2> values, View<const T, 2> values_old, View<const T, 2> returns,
                           View<const std::uint8_t, 2> mask, double coef, View<T, 2> dvalues,
                           const Normaliser& normaliser = {}) {
    const index_t B = values.size(0), L = values.size(1);
    expect_shape(values_old, "Ppo::value_loss: values_old", {B, L});
    expect_shape(returns, "Ppo::value_loss: returns", {B, L});
    expect_shape(mask, "Ppo::value_loss: mask", {B, L});
    expect_shape(dvalues, "Ppo::value_loss: dvalues", {B, L});
    const std::vector<double> w = sequence_weights<C.aggregation>(mask, normaliser);
    double loss = 0;
    for (index_t b = 0; b < B; ++b) {
      for (index_t t = 0; t < L; ++t) {
        dvalues(b, t) = T(0);
        if (!mask(b, t)) continue;
        const ValueTerm v = value_token(static_cast<double>(values(b, t)), static_cast<double>(values_old(b, t)),
                                        static_cast<double>(returns(b, t)));
        const double s = coef * w[static_cast<std::size_t>(b)];
        loss += s * v.loss;
        dvalues(b, t) = static_cast<T>(s * v.dvalue);
      }
    }
    return loss;
  }
};

/// A scalar head on the final hidden states: value = h . w + b for every row of h [N, C].
/// Its parameters live in their own flat buffer laid out by layout().
template <class T>
class ValueHead {
 public:
  explicit ValueHead(index_t width, double init_std = 0.02) : width_(width) {
    REASON_CHECK(width > 0, "ValueHead: width = ", width, ", expected > 0");
    weight_ = layout_.add("value_head.weight", {width}, Init::normal, init_std);
    bias_ = layout_.add("value_head.bias", {1}, Init::zeros);
  }

  [[nodiscard]] const ParamLayout& layout() const { return layout_; }
  [[nodiscard]] std::size_t num_params() const { return layout_.size(); }

  /// values [N] = h [N, C] . w + b.
  void forward(const T* params, View<const T, 2> h, View<T, 1> values) const {
    const index_t N = h.size(0);
    expect_shape(h, "ValueHead::forward: h", {N, width_});
    expect_shape(values, "ValueHead::forward: values", {N});
    const T* w = params + weight_;
    for (index_t n = 0; n < N; ++n) {
      double s = static_cast<double>(params[bias_]);
      for (index_t c = 0; c < width_; ++c) s += static_cast<double>(h(n, c)) * static_cast<double>(w[c]);
      values(n) = static_cast<T>(s);
    }
  }

  /// From dvalues [N]: grads += (dw, db); dh [N, C] += dvalues w (dh is the model's
  /// hidden_grad(), which other heads may already have written, so this head adds).
  void backward(const T* params, T* grads, View<const T, 2> h, View<const T, 1> dvalues, View<T, 2> dh) const {
    const index_t N = h.size(0);
    expect_shape(h, "ValueHead::backward: h", {N, width_});
    expect_shape(dvalues, "ValueHead::backward: dvalues", {N});
    expect_shape(dh, "ValueHead::backward: dh", {N, width_});
    const T* w = params + weight_;
    T* dw = grads + weight_;
    double db = 0;
    for (index_t n = 0; n < N; ++n) {
      const T g = dvalues(n);
      if (g == T(0)) continue;
      db += static_cast<double>(g);
      for (index_t c = 0; c < width_; ++c) {
        dw[c] += g * h(n, c);
        dh(n, c) += g * w[c];
      }
    }
    grads[bias_] += static_cast<T>(db);
  }

 private:
  index_t width_;
  ParamLayout layout_;
  std::size_t weight_ = 0, bias_ = 0;
};

}  // namespace reason::rl
