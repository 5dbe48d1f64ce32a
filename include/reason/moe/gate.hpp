// reason/moe/gate.hpp — top-k gates: which experts see a token, and with what weight.
//
//   SoftmaxTopK<GateConfig, Capacity = NoDrop, AuxLoss = NoAuxLoss>
//       s = softmax(x W^T) over the experts; the k best; weights s_e, renormalised over the k
//       when GateConfig::normalize (Switch / GShard / Mixtral).
//   SigmoidTopK<GateConfig, Capacity = NoDrop, Balance = BiasBalance<>, AuxLoss = NoAuxLoss>
//       s = sigmoid(x W^T); the k best by s + b (b the balancing bias, selection only); weights
//       routed_scale * s_e / sum of the chosen s (DeepSeek-V3 eqs. 13-16).
// Both may limit routing to groups of experts (GateConfig::groups). The router weight W [E, C]
// ("<name>.weight") is kept in the model's parameter type and is not a Linear policy: a
// quantized model still routes in full precision, as DeepSeek-V3 does.
//
// Backward, with dw the gradient of the combine weights:
//   ds     = d(weights)/ds^T dw  (+ the aux loss's gradient through p)
//   dlogit = s (ds - sum_j s_j ds_j)   (softmax)   or   ds s (1 - s)   (sigmoid)
//   dW += dlogit^T x,   dx += dlogit W.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "reason/core/arena.hpp"
#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/gemm.hpp"
#include "reason/kernels/moe_route.hpp"
#include "reason/moe/balance.hpp"
#include "reason/moe/capacity.hpp"
#include "reason/moe/gate_config.hpp"

namespace reason::moe {

enum class Scoring { softmax, sigmoid };

template <Scoring S, GateConfig G, class Cap, class Balance, class Aux>
struct TopKGate {
  static_assert(G.experts >= 1, "moe::GateConfig: experts must be >= 1");
  static_assert(G.top_k >= 1 && G.top_k <= G.experts, "moe::GateConfig: top_k must be in [1, experts]");
  static_assert(G.groups >= 1 && G.experts % G.groups == 0, "moe::GateConfig: groups must divide experts");
  static_assert(G.groups == 1 || (G.top_groups >= 1 && G.top_groups <= G.groups),
                "moe::GateConfig: top_groups must be in [1, groups]");
  static_assert(G.top_k > G.experts || G.groups < 1 || G.experts % G.groups != 0 ||  // reported above
                    G.top_k <= kept_groups(G) * (G.experts / G.groups),
                "moe::GateConfig: top_k exceeds the experts of the groups a token may use (top_groups * experts / groups)");
  static_assert(G.routed_scale > 0.0f, "moe::GateConfig: routed_scale must be > 0");
  static_assert(requires { Cap::drops; Cap::slots(index_t{}, 1, 1); },
                "moe gate: Capacity must be a capacity policy (moe::Capacity<factor> or moe::NoDrop)");
  static_assert(requires { Balance::has_bias; }, "moe gate: Balance must be moe::BiasBalance<gamma> or moe::NoBias");
  static_assert(requires { Aux::active; Aux::alpha; },
                "moe gate: AuxLoss must be moe::SwitchLoss<alpha>, moe::SequenceLoss<alpha> or moe::NoAuxLoss");

  static constexpr GateConfig config = G;
  static constexpr Scoring scoring = S;
  static constexpr int experts = G.experts;
  static constexpr int top_k = G.top_k;
  using capacity_policy = Cap;
  using balance_policy = Balance;
  using aux_loss_policy = Aux;

  /// "sigmoid_top_k(E=64, k=6, groups=8/3, scale=2.5)" and its capacity, balance and loss policies.
  static std::string signature() {
    std::string s = std::string(S == Scoring::softmax ? "softmax" : "sigmoid") + "_top_k(E=" + std::to_string(G.experts) +
                    ", k=" + std::to_string(G.top_k);
    if (G.groups > 1) s += ", groups=" + std::to_string(G.groups) + "/" + std::to_string(G.top_groups);
    if (!G.normalize) s += ", unnormalized";
    if (G.routed_scale != 1.0f) s += ", scale=" + detail::shortest(G.routed_scale);
    s += "), " + Cap::signature();
    if constexpr (Balance::has_bias) s += ", " + Balance::signature();
    if constexpr (Aux::active) s += ", " + Aux::signature();
    return s;
  }

  template <class T>
  class Module {
   public:
    struct Saved {
      View<T, 2> scores;              // [N, E] softmax or sigmoid of x W^T
      View<std::int32_t, 2> experts;  // [N, k] the chosen experts, best first
      View<T, 2> weights;             // [N, k] their combine weights (from unbiased scores)
      View<T, 2> probs;               // [N, E] the aux loss's P per token (sigmoid: scores / row sum)
    };
    struct Scratch {
      View<T, 2> dscores;  // [N, E], becomes d(logits) in place
      View<T, 2> dprobs;   // [N, E] (aux loss only)
    };

    Module() = default;
    Module(ParamLayout& layout, const std::string& name, index_t width, double init_std) : width_(width) {
      weight_ = layout.add(name + ".weight", {G.experts, width}, Init::normal, init_std);
      if constexpr (Balance::has_bias) bias_ = layout.add_buffer(name + ".e_score_correction_bias", {G.experts}, Init::zeros);
    }

    Saved carve(Arena& arena, index_t rows) const {
      Saved s;
      s.scores = arena.view<T>("gate.scores", rows, index_t{G.experts});
      s.experts = arena.view<std::int32_t>("gate.experts", rows, index_t{G.top_k});
      s.weights = arena.view<T>("gate.weights", rows, index_t{G.top_k});
      if constexpr (Aux::active) s.probs = S == Scoring::softmax ? s.scores : arena.view<T>("gate.probs", rows, index_t{G.experts});
      return s;
    }
    Scratch carve_scratch(Arena& arena, index_t rows) const {
      Scratch s;
      s.dscores = arena.view<T>("gate.dscores", rows, index_t{G.experts});
      if constexpr (Aux::active) s.dprobs = arena.view<T>("gate.dprobs", rows, index_t{G.experts});
      return s;
    }

    /// Routes the rows of x [N, C]; returns this forward's aux loss (0 without one). `segment`
    /// is the rows of one sequence (the sequence-wise loss's unit).
    double forward(const T* params, View<const T, 2> x, const Saved& s, index_t segment) const {
      const index_t n = x.size(0);
      expect_shape(x, "moe gate: x", {n, width_});
      kernels::gemm<T>(kernels::Trans::N, kernels::Trans::T, T(1), x, weight(params), T(0), rows(s.scores, n));
      parallel_for(n, std::max<index_t>(1, 4096 / G.experts), [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) activate(s.scores.row(r));
      });
      const auto scores = const_rows(s.scores, n);
      kernels::moe_select<T>(scores, bias(params), G.top_k, G.groups, kept_groups(G), rows(s.experts, n));
      kernels::moe_weights<T>(scores, const_rows(s.experts, n), G.normalize, G.routed_scale, rows(s.weights, n));
      if constexpr (!Aux::active) {
        return 0.0;
      } else {
        if (n == 0) return 0.0;  // an expert-parallel rank without tokens in this forward: no loss
        if constexpr (S == Scoring::sigmoid) {
          for (index_t r = 0; r < n; ++r) {
            double z = 0;
            for (index_t i = 0; i < G.experts; ++i) z += static_cast<double>(s.scores(r, i));
            for (index_t i = 0; i < G.experts; ++i) s.probs(r, i) = static_cast<T>(static_cast<double>(s.scores(r, i)) / z);
          }
        }
        return kernels::moe_balance_loss<T>(const_rows(s.probs, n), const_rows(s.experts, n), Aux::per_sequence ? segment : n,
                                            Aux::alpha);
      }
    }

    /// Gradients from dweights [N, k] (and from the aux loss, scaled by aux_weight): the router
    /// weight's accumulate, dx [N, C] accumulates (+=).
    void backward(const T* params, T* grads, View<const T, 2> x, const Saved& s, const Scratch& sc,
                  View<const T, 2> dweights, double aux_weight, index_t segment, View<T, 2> dx) const {
      const index_t n = x.size(0);
      const View<T, 2> ds = rows(sc.dscores, n);
      for (index_t r = 0; r < n; ++r) std::fill(ds.row(r), ds.row(r) + G.experts, T(0));
      const auto scores = const_rows(s.scores, n);
      kernels::moe_weights_backward<T>(scores, const_rows(s.experts, n), G.normalize, G.routed_scale, dweights, ds);
      if constexpr (Aux::active) {
        if (aux_weight != 0 && n > 0) {
          const View<T, 2> dp = rows(sc.dprobs, n);
          for (index_t r = 0; r < n; ++r) std::fill(dp.row(r), dp.row(r) + G.experts, T(0));
          kernels::moe_balance_loss_backward<T>(const_rows(s.experts, n), Aux::per_sequence ? segment : n, Aux::alpha,
                                                aux_weight, dp);
          for (index_t r = 0; r < n; ++r) {
            if constexpr (S == Scoring::softmax) {
              for (index_t i = 0; i < G.experts; ++i) ds(r, i) += dp(r, i);
            } else {  // p = s / z: ds_j += (dp_j - sum_i dp_i p_i) / z
              double z = 0, dot = 0;
              for (index_t i = 0; i < G.experts; ++i) {
                z += static_cast<double>(s.scores(r, i));
                dot += static_cast<double>(dp(r, i)) * static_cast<double>(s.probs(r, i));
              }
              for (index_t i = 0; i < G.experts; ++i) ds(r, i) += static_cast<T>((static_cast<double>(dp(r, i)) - dot) / z);
            }
          }
        }
      }
      for (index_t r = 0; r < n; ++r) {  // d(scores) -> d(logits), in place
        const T* sr = s.scores.row(r);
        T* d = ds.row(r);
        if constexpr (S == Scoring::softmax) {
          T dot = T(0);
          for (index_t i = 0; i < G.experts; ++i) dot += sr[i] * d[i];
          for (index_t i = 0; i < G.experts; ++i) d[i] = sr[i] * (d[i] - dot);
        } else {
          for (index_t i = 0; i < G.experts; ++i) d[i] *= sr[i] * (T(1) - sr[i]);
        }
      }
      kernels::gemm<T>(kernels::Trans::T, kernels::Trans::N, T(1), View<const T, 2>(ds), x, T(1),
                       matrix_at(grads, weight_, G.experts, width_));
      kernels::gemm<T>(kernels::Trans::N, kernels::Trans::N, T(1), View<const T, 2>(ds), weight(params), T(1), dx);
    }

    /// The balancing bias update after an optimizer step, from load [E] (no-op without a bias).
    void balance(T* params, std::span<const double> load) const {
      REASON_CHECK(static_cast<index_t>(load.size()) == G.experts, "moe gate: balance: load has ", load.size(),
                   " entries, expected ", G.experts);
      if constexpr (Balance::has_bias) Balance::update(vector_at(params, bias_, G.experts), load);
    }

    [[nodiscard]] View<const T, 2> weight(const T* p) const { return matrix_at(p, weight_, G.experts, width_); }
    /// The balancing bias [E], or an empty view without one.
    [[nodiscard]] View<const T, 1> bias(const T* p) const {
      if constexpr (Balance::has_bias) return vector_at(p, bias_, G.experts);
      return {};
    }

   private:
    static void activate(T* logits) {
      if constexpr (S == Scoring::softmax) {
        T m = logits[0];
        for (index_t i = 1; i < G.experts; ++i) m = std::max(m, logits[i]);
        T z = T(0);
        for (index_t i = 0; i < G.experts; ++i) z += (logits[i] = std::exp(logits[i] - m));
        for (index_t i = 0; i < G.experts; ++i) logits[i] /= z;
      } else {
        for (index_t i = 0; i < G.experts; ++i) logits[i] = T(1) / (T(1) + std::exp(-logits[i]));
      }
    }
    template <class U>
    static View<U, 2> rows(View<U, 2> v, index_t n) { return v.slice(0, 0, n); }
    template <class U>
    static View<const U, 2> const_rows(View<U, 2> v, index_t n) { return v.slice(0, 0, n); }

    index_t width_ = 0;
    std::size_t weight_ = 0, bias_ = 0;
  };
};

template <GateConfig G, class Cap = NoDrop, class AuxLoss = NoAuxLoss>
struct SoftmaxTopK : TopKGate<Scoring::softmax, G, Cap, NoBias, AuxLoss> {
  static constexpr const char* name = "softmax_top_k";
};

template <GateConfig G, class Cap = NoDrop, class Balance = BiasBalance<>, class AuxLoss = NoAuxLoss>
struct SigmoidTopK : TopKGate<Scoring::sigmoid, G, Cap, Balance, AuxLoss> {
  static constexpr const char* name = "sigmoid_top_k";
};

}  // namespace reason::moe
