// reason/moe/moe.hpp — the mixture-of-experts feed-forward policy.
//
//   using Ffn = moe::MoE<moe::SigmoidTopK<moe::GateConfig{.experts = 64, .top_k = 6}>,  // gate
//                        ffn::SwiGLU,                                                  // each expert
//                        moe::Shared<2>>;                                              // always-on experts
//
// DeepSeekMoE (Dai et al. 2024) as used in DeepSeek-V3 (§2.1.2, eq. 12):
//   y_t = sum_{i shared} FFN_i(x_t) + sum_{j = 1..k} w_{t,j} FFN_{e_{t,j}}(x_t)
// with fine-grained routed experts (each an `Expert` FFN of width ffn::Dims::expert_hidden) and
// `Shared<n>` always-on experts, which are one Expert FFN of width n * expert_hidden (the sum of n
// FFNs equals one whose hidden units are theirs side by side; DeepSeek-V3 stores them so).
// It satisfies the feed-forward concept, so it drops into model::Transformer in place of the
// dense FFN; the model keeps its first Config::first_dense_layers layers dense.
//
// A forward: the gate routes (gate.hpp); dispatch sorts the kept assignments by expert
// (kernels/moe_dispatch.hpp: permutation + offsets, the grouped-GEMM layout) and gathers their
// rows; each expert runs on its contiguous rows; combine adds the weighted outputs back in token
// order (dropped assignments add nothing: the token keeps only its residual and shared path).
// Each expert's activations are carved, in expert order, from one block sized for the most
// rows a forward can keep, so memory follows the kept assignments, not experts x tokens.
//
// Parameters ("<name>.gate.weight", "<name>.gate.e_score_correction_bias", "<name>.experts.<i>.*",
// "<name>.shared_experts.*") follow DeepSeek-V3's checkpoint names where they have one.
#pragma once

#include <cstddef>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "reason/core/arena.hpp"
#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/kernels/moe_dispatch.hpp"
#include "reason/linear/dense.hpp"
#include "reason/moe/gate.hpp"
#include "reason/moe/router_stats.hpp"

namespace reason::moe {

/// n always-on experts (DeepSeekMoE's shared experts); Shared<0>: none.
template <int N>
struct Shared {
  static_assert(N >= 0, "moe::Shared<n>: the number of shared experts must be >= 0");
  static constexpr int count = N;
};

/// What MoE needs of a gate: compile-time experts and top_k, capacity and balance policies, and
/// Module<T> that routes, goes back, and updates its balancing state.
template <class G>
concept GatePolicy = requires(typename G::template Module<float> m, Arena& arena, const float* p, float* g,
                              View<const float, 2> x, std::span<const double> load) {
  { G::experts } -> std::convertible_to<int>;
  { G::top_k } -> std::convertible_to<int>;
  typename G::capacity_policy;
  { G::signature() } -> std::convertible_to<std::string>;
  { m.forward(p, x, m.carve(arena, index_t{}), index_t{}) } -> std::convertible_to<double>;
  m.backward(p, g, x, m.carve(arena, index_t{}), m.carve_scratch(arena, index_t{}), x, 1.0, index_t{},
             View<float, 2>{});
  m.balance(g, load);
};

/// What MoE needs of an expert: a feed-forward policy (ffn::SwiGLU).
template <class F>
concept ExpertPolicy = std::constructible_from<typename F::template Module<float, linear::Dense>, ParamLayout&, std::string, ffn::Dims> &&
                       requires(typename F::template Module<float, linear::Dense> m, Arena& arena, const float* p, float* g,
                                View<const float, 2> x, View<float, 2> y) {
  m.forward(p, x, m.carve(arena, index_t{}), y);
  m.backward(p, g, x, m.carve(arena, index_t{}), m.carve_scratch(arena, index_t{}), x, y);
};

template <class Gate, class Expert, class SharedExperts = Shared<0>>
struct MoE {
  static_assert(GatePolicy<Gate>,
                "moe::MoE<Gate, Expert, Shared>: Gate must be a gate policy (moe::SoftmaxTopK<...> or moe::SigmoidTopK<...>)");
  static_assert(ExpertPolicy<Expert>, "moe::MoE<Gate, Expert, Shared>: Expert must be a feed-forward policy (ffn::SwiGLU)");
  static_assert(requires { SharedExperts::count; }, "moe::MoE<Gate, Expert, Shared>: Shared must be moe::Shared<n>");

  static constexpr const char* name = "moe";
  static constexpr bool routed = true;
  static constexpr int experts = Gate::experts;
  static constexpr int top_k = Gate::top_k;
  static constexpr int shared_experts = SharedExperts::count;
  using gate_policy = Gate;
  using expert_policy = Expert;
  using dense_policy = Expert;  // the FFN of the model's dense layers (Config::first_dense_layers)
  using capacity_policy = typename Gate::capacity_policy;

  /// "moe(sigmoid_top_k(E=8, k=2), no_drop, bias_balance(0.001); expert=swiglu; shared=1)".
  static std::string signature() {
    return "moe(" + Gate::signature() + "; expert=" + Expert::name + "; shared=" + std::to_string(shared_experts) + ")";
  }

  /// The most assignments a forward of `rows` tokens keeps: all k per token (a forward that does
  /// not drop keeps them all, so that is what the activations are carved for).
  static index_t max_kept(index_t rows) { return rows * top_k; }

  template <class T, class Linear>
  class Module {
    using GateModule = typename Gate::template Module<T>;
    using ExpertModule = typename Expert::template Module<T, Linear>;

   public:
    struct Saved {
      typename GateModule::Saved gate;
      View<std::int32_t, 2> slot;     // [N, k] permuted row of each assignment, -1 if dropped
      View<std::int32_t, 1> perm;     // [S] token of each permuted row
      View<std::int32_t, 1> offsets;  // [E + 1] expert e owns permuted rows [offsets[e], offsets[e + 1])
      View<std::int32_t, 1> load;     // [E] assignments chosen per expert, before capacity
      View<T, 2> xs, ys;              // [S, C] expert inputs and outputs, permuted
      View<double, 1> aux;            // [2] this forward's aux loss; the weight of its gradient
      std::byte* shared_block = nullptr;  // the shared experts' activations, carved per forward for its rows
      std::size_t shared_bytes = 0;
      std::byte* expert_block = nullptr;  // the routed experts' activations
      std::size_t expert_bytes = 0;
      index_t segment = 0;            // rows per sequence (the sequence-wise loss's unit); 0: all rows
      bool drop_over_capacity = true;  // false: keep every assignment whatever the capacity policy
                                       // (the model's evaluation and decoding forwards)
    };
    struct Scratch {
      typename GateModule::Scratch gate;
      View<T, 2> dweights;  // [N, k]
      View<T, 2> dys, dxs;  // [S, C]
      std::byte* shared_block = nullptr;
      std::size_t shared_bytes = 0;
      std::byte* expert_block = nullptr;
      std::size_t expert_bytes = 0;
    };

    Module() = default;
    Module(ParamLayout& layout, const std::string& name, const ffn::Dims& d) : width_(d.width) {
      REASON_CHECK(d.expert_hidden > 0, "moe::MoE '", name, "': expert_hidden = ", d.expert_hidden,
                   "; set the routed experts' width (model::Config::moe_intermediate_size) > 0");
      gate_ = GateModule(layout, name + ".gate", d.width, d.init_std);
      ffn::Dims ed = d;
      ed.hidden = d.expert_hidden;
      for (int e = 0; e < experts; ++e) experts_.emplace_back(layout, name + ".experts." + std::to_string(e), ed);
      if constexpr (shared_experts > 0) {
        ed.hidden = d.expert_hidden * shared_experts;
        shared_ = ExpertModule(layout, name + ".shared_experts", ed);
      }
    }

    Saved carve(Arena& arena, index_t rows) const { return carve(arena, rows, 0); }
    /// Activations of a forward of `rows` tokens, sequences of `seq` rows each (0: one sequence).
    Saved carve(Arena& arena, index_t rows, index_t seq) const {
      const index_t kept = max_kept(rows);
      Saved s;
      s.gate = gate_.carve(arena, rows);
      s.slot = arena.view<std::int32_t>("moe.slot", rows, index_t{top_k});
      s.perm = arena.view<std::int32_t>("moe.perm", kept);
      s.offsets = arena.view<std::int32_t>("moe.offsets", index_t{experts} + 1);
      s.load = arena.view<std::int32_t>("moe.load", index_t{experts});
      s.xs = arena.view<T>("moe.xs", kept, width_);
      s.ys = arena.view<T>("moe.ys", kept, width_);
      s.aux = arena.view<double>("moe.aux", 2);
      if constexpr (shared_experts > 0) {  // carving fewer rows takes no more
        s.shared_bytes = Arena::measure([&](Arena& a) { (void)shared_.carve(a, rows); });
        s.shared_block = arena.allocate<std::byte>(s.shared_bytes, "moe.shared");
      }
      s.expert_bytes = block_bytes(kept, [&](Arena& a, index_t r) { (void)experts_[0].carve(a, r); });
      s.expert_block = arena.allocate<std::byte>(s.expert_bytes, "moe.experts");
      s.segment = seq;
      return s;
    }
    Scratch carve_scratch(Arena& arena, index_t rows) const {
      const index_t kept = max_kept(rows);
      Scratch s;
      s.gate = gate_.carve_scratch(arena, rows);
      s.dweights = arena.view<T>("moe.dweights", rows, index_t{top_k});
      s.dys = arena.view<T>("moe.dys", kept, width_);
      s.dxs = arena.view<T>("moe.dxs", kept, width_);
      if constexpr (shared_experts > 0) {
        s.shared_bytes = Arena::measure([&](Arena& a) { (void)shared_.carve_scratch(a, rows); });
        s.shared_block = arena.allocate<std::byte>(s.shared_bytes, "moe.shared_scratch");
      }
      s.expert_bytes = block_bytes(kept, [&](Arena& a, index_t r) { (void)experts_[0].carve_scratch(a, r); });
      s.expert_block = arena.allocate<std::byte>(s.expert_bytes, "moe.expert_scratch");
      return s;
    }

    /// y [N, C] from x [N, C] (N at most the rows carved).
    void forward(const T* params, View<const T, 2> x, const Saved& s, View<T, 2> y) const {
      const index_t n = x.size(0);
      REASON_CHECK(n <= s.slot.size(0), "moe::MoE::forward: x has ", n, " rows, the activations were carved for ",
                   s.slot.size(0));
      expect_shape(y, "moe::MoE::forward: y", {n, width_});
      s.aux(0) = gate_.forward(params, x, s.gate, segment(s, n));
      s.aux(1) = 1.0;  // a model sets its own weight (set_aux_weight)
      const auto d = kernels::moe_dispatch<T>(rows(s.gate.experts, n), rows(s.gate.weights, n), experts,
                                              s.drop_over_capacity ? capacity_policy::slots(n, top_k, experts) : -1,
                                              capacity_policy::order, s.perm,
                                              s.offsets, s.slot.slice(0, 0, n), s.load);
      kernels::moe_gather<T>(x, s.perm, d.kept, s.xs);
      Arena block(s.expert_block, s.expert_bytes);
      for (int e = 0; e < experts; ++e) {
        const index_t a = s.offsets(e), b = s.offsets(e + 1);
        if (a == b) continue;
        const auto saved = experts_[e].carve(block, b - a);
        experts_[e].forward(params, s.xs.slice(0, a, b), saved, s.ys.slice(0, a, b));
      }
      if constexpr (shared_experts > 0) {
        Arena shared_acts(s.shared_block, s.shared_bytes);  // views of this forward's n rows
        shared_.forward(params, x, shared_.carve(shared_acts, n), y);
      } else {
        for (index_t r = 0; r < n; ++r) std::fill(y.row(r), y.row(r) + width_, T(0));
      }
      kernels::moe_combine<T>(s.ys, rows(s.slot, n), rows(s.gate.weights, n), y);
    }

    /// dx [N, C] (overwrite) from dy [N, C]; parameter gradients accumulate, the aux loss's
    /// gradient (weighted by set_aux_weight, 1 by default) included.
    void backward(const T* params, T* grads, View<const T, 2> x, const Saved& s, const Scratch& sc, View<const T, 2> dy,
                  View<T, 2> dx) const {
      const index_t n = x.size(0);
      expect_shape(dy, "moe::MoE::backward: dy", {n, width_});
      expect_shape(dx, "moe::MoE::backward: dx", {n, width_});
      const auto dweights = sc.dweights.slice(0, 0, n);
      kernels::moe_combine_backward<T>(s.ys, rows(s.slot, n), rows(s.gate.weights, n), dy, sc.dys, dweights);
      Arena block(s.expert_block, s.expert_bytes), scratch(sc.expert_block, sc.expert_bytes);
      for (int e = 0; e < experts; ++e) {  // the same carving order as forward, so the same views
        const index_t a = s.offsets(e), b = s.offsets(e + 1);
        if (a == b) continue;
        const auto saved = experts_[e].carve(block, b - a);
        const auto work = experts_[e].carve_scratch(scratch, b - a);
        experts_[e].backward(params, grads, s.xs.slice(0, a, b), saved, work, sc.dys.slice(0, a, b), sc.dxs.slice(0, a, b));
      }
      if constexpr (shared_experts > 0) {
        Arena shared_acts(s.shared_block, s.shared_bytes), shared_work(sc.shared_block, sc.shared_bytes);  // forward's views
        shared_.backward(params, grads, x, shared_.carve(shared_acts, n), shared_.carve_scratch(shared_work, n), dy, dx);
      } else {
        for (index_t r = 0; r < n; ++r) std::fill(dx.row(r), dx.row(r) + width_, T(0));
      }
      kernels::moe_scatter_add<T>(sc.dxs, rows(s.slot, n), dx);
      gate_.backward(params, grads, x, s.gate, sc.gate, dweights, s.aux(1), segment(s, n), dx);
    }

    /// The weight of the aux loss's gradient in the next backward of `s` (the model's share of
    /// the step this forward is; 0 turns it off).
    static void set_aux_weight(const Saved& s, double weight) { s.aux(1) = weight; }

    /// The router's statistics of the last forward of `s` (one forward).
    [[nodiscard]] RouterStats stats(const Saved& s) const {
      RouterStats r;
      r.load.resize(experts);
      r.kept.resize(experts);
      for (int e = 0; e < experts; ++e) {
        r.load[e] = s.load(e);
        r.kept[e] = s.offsets(e + 1) - s.offsets(e);
      }
      r.aux_loss = s.aux(0);
      r.forwards = 1;
      return r;
    }

    /// After an optimizer step: the gate's balancing update from the step's load [E].
    void balance(T* params, std::span<const double> load) const { gate_.balance(params, load); }

    [[nodiscard]] const GateModule& gate() const { return gate_; }
    [[nodiscard]] const ExpertModule& expert(int e) const { return experts_.at(static_cast<std::size_t>(e)); }
    [[nodiscard]] const ExpertModule& shared() const { return shared_; }

   private:
    template <class U>
    static View<const U, 2> rows(View<U, 2> v, index_t n) { return v.slice(0, 0, n); }
    static index_t segment(const Saved& s, index_t n) { return s.segment > 0 && n % s.segment == 0 ? s.segment : n; }

    /// Bytes of one block from which every expert carves its own rows (rows summing to at most
    /// `kept`): the carving of all rows at once plus one row's worth of alignment per expert.
    template <class Carve>
    static std::size_t block_bytes(index_t kept, Carve&& carve) {
      const std::size_t all = Arena::measure([&](Arena& a) { carve(a, kept); });
      const std::size_t one = Arena::measure([&](Arena& a) { carve(a, index_t{1}); });
      return all + static_cast<std::size_t>(experts) * one;
    }

    index_t width_ = 0;
    GateModule gate_;
    std::vector<ExpertModule> experts_;
    ExpertModule shared_;
  };
};

}  // namespace reason::moe
