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
//
// Expert parallelism (GShard, Lepikhin et al. 2021: experts spread over devices, tokens sent to
// them and back by AllToAll; DeepSeek-V3 §3.2: the all-to-all dispatch and combine of its
// training framework): built with a model::ShardGroup of ep ranks, rank r holds only experts
// [r E/ep, (r + 1) E/ep), under their global names and unsplit shapes, with the gate and the shared
// experts replicated. Each rank routes its own N tokens (a capacity applies per rank, to its own
// tokens: GShard's per-group capacity) and sorts its kept assignments by global expert as above;
// a rank's experts are consecutive, so the rows bound for rank j are one contiguous block. Then
//   forward:  all_to_all   the row counts (rank j learns how many rows each rank sends each of its experts)
//             all_to_all_v the rows to their experts' ranks (dispatch)
//             each local expert runs on the rows it received, from every rank
//             all_to_all_v the outputs back, in the order they were sent; combine as above
//   backward: all_to_all_v d(outputs) to the experts' ranks; expert backward; all_to_all_v d(inputs)
//             back (the forward's counts are kept: no second count exchange)
// The rows a rank receives arrive packed by source rank, and within it by expert; they are
// regrouped so that each local expert's rows (rank 0's tokens first, then rank 1's, ...) are
// contiguous: one GEMM per expert, over its rows in the order one process has them on the ranks'
// batches laid end to end. The permutation is kept to undo it. An expert's parameter gradients
// are therefore complete on its rank (it saw every rank's tokens); a replicated tensor's gradient
// is this rank's part, which the trainer sums (parallel/model_parallel.hpp). Router statistics,
// stats() and the aux loss stay per rank: the Transformer sums the load over the group before the
// gates balance; a sequence-wise loss (SequenceLoss) adds up over the ranks to one process's, a
// batch-wise one (SwitchLoss) becomes each rank's own (GShard's per-group loss). Every rank of the
// group runs each forward and backward in step, decoding included: a rank with no rows for some
// expert still takes part (zero counts).
// Memory: how many rows a rank receives is known only after the count exchange (up to ep times its
// own kept rows, when every rank routes everything to it), and the arena is carved before the
// forward routes. So the receiving side lives in the module's own std::vector buffers, grown to the
// largest exchange seen and reused after (no allocation once a run has reached its peak): the
// received rows grouped by expert and the local experts' activations, kept for backward, and the
// rows in transit and the backward's scratch. The arena keeps what depends on this rank's own rows
// (routing, the rows sent and returned). When the ranks' loads are even a rank receives about its
// own kept rows, so a layer needs about what it needs unsplit plus the rows in transit. The buffers
// hold the last forward's exchange: a backward must follow its own forward, with no other forward
// of the layer in between (checked).
#pragma once

#include <algorithm>
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
#include "reason/model/sharding.hpp"
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
      View<std::int64_t, 1> exchange;  // [1] expert parallel: which of the module's forwards filled its
                                       // received rows for this one (empty without a group)
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
    /// The whole layer: every expert on this process.
    Module(ParamLayout& layout, const std::string& name, const ffn::Dims& d) : Module(layout, name, d, nullptr) {}
    /// This rank's share of an expert-parallel layer (see the top of this file): experts
    /// [r E/ep, (r + 1) E/ep) of `experts_group`'s rank r, the gate and shared experts whole.
    /// A null group is the whole layer.
    Module(ParamLayout& layout, const std::string& name, const ffn::Dims& d, model::ShardGroup<T>* experts_group)
        : width_(d.width), group_(experts_group) {
      REASON_CHECK(d.expert_hidden > 0, "moe::MoE '", name, "': expert_hidden = ", d.expert_hidden,
                   "; set the routed experts' width (model::Config::moe_intermediate_size) > 0");
      if (group_ != nullptr) {
        const int ep = group_->size();
        REASON_CHECK(ep >= 1 && experts % ep == 0, "moe::MoE '", name, "': expert parallelism over ", ep,
                     " ranks needs the experts to divide evenly among them; experts = ", experts,
                     " is not a multiple of ", ep);
        local_experts_ = experts / ep;
        first_expert_ = group_->rank() * local_experts_;
      }
      gate_ = GateModule(layout, name + ".gate", d.width, d.init_std);
      ffn::Dims ed = d;
      ed.hidden = d.expert_hidden;
      for (int e = first_expert_; e < first_expert_ + local_experts_; ++e)
        experts_.emplace_back(layout, name + ".experts." + std::to_string(e), ed);
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
      if (group_ == nullptr) {  // expert parallel: the experts' rows are the received ones (Exchange)
        s.expert_bytes = block_bytes(kept, experts, [&](Arena& a, index_t r) { (void)experts_[0].carve(a, r); });
        s.expert_block = arena.allocate<std::byte>(s.expert_bytes, "moe.experts");
      } else {
        s.exchange = arena.view<std::int64_t>("moe.exchange", 1);
      }
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
      if (group_ == nullptr) {
        s.expert_bytes = block_bytes(kept, experts, [&](Arena& a, index_t r) { (void)experts_[0].carve_scratch(a, r); });
        s.expert_block = arena.allocate<std::byte>(s.expert_bytes, "moe.expert_scratch");
      }
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
      if (group_ != nullptr) {
        exchange_forward(params, s, d.kept);
      } else {
        Arena block(s.expert_block, s.expert_bytes);
        for (int e = 0; e < experts; ++e) {
          const index_t a = s.offsets(e), b = s.offsets(e + 1);
          if (a == b) continue;
          const auto saved = experts_[e].carve(block, b - a);
          experts_[e].forward(params, s.xs.slice(0, a, b), saved, s.ys.slice(0, a, b));
        }
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
      if (group_ != nullptr) {
        exchange_backward(params, grads, s, sc);
      } else {
        Arena block(s.expert_block, s.expert_bytes), scratch(sc.expert_block, sc.expert_bytes);
        for (int e = 0; e < experts; ++e) {  // the same carving order as forward, so the same views
          const index_t a = s.offsets(e), b = s.offsets(e + 1);
          if (a == b) continue;
          const auto saved = experts_[e].carve(block, b - a);
          const auto work = experts_[e].carve_scratch(scratch, b - a);
          experts_[e].backward(params, grads, s.xs.slice(0, a, b), saved, work, sc.dys.slice(0, a, b), sc.dxs.slice(0, a, b));
        }
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
    /// Routed expert `e` (its index in the whole layer); under expert parallelism, this rank's only.
    [[nodiscard]] const ExpertModule& expert(int e) const {
      REASON_CHECK(e >= first_expert_ && e < first_expert_ + local_experts_, "moe::MoE::expert(", e, "): this ",
                   group_ ? "rank" : "layer", " holds experts [", first_expert_, ", ", first_expert_ + local_experts_, ")");
      return experts_[static_cast<std::size_t>(e - first_expert_)];
    }
    [[nodiscard]] const ExpertModule& shared() const { return shared_; }
    /// The experts this module holds: [first_expert(), first_expert() + local_experts()).
    [[nodiscard]] int first_expert() const { return first_expert_; }
    [[nodiscard]] int local_experts() const { return local_experts_; }
    /// The expert-parallel group (null: the whole layer on this process).
    [[nodiscard]] model::ShardGroup<T>* expert_group() const { return group_; }
    /// Expert parallel: rows this rank's experts received in the last forward, and the bytes the
    /// module's exchange buffers hold now (their peak so far).
    [[nodiscard]] index_t received_rows() const { return ex_.rows; }
    [[nodiscard]] std::size_t exchange_bytes() const {
      return (ex_.xs.size() + ex_.wire.size() + ex_.work.size() + ex_.dxs.size()) * sizeof(T) + ex_.acts.size() +
             ex_.scratch.size();
    }

   private:
    /// Expert parallel: what the last forward exchanged, and the buffers the local experts run in.
    /// Rows a rank receives are "wire" rows (packed by source rank, then by expert) or "grouped"
    /// rows (by local expert, then by source rank); grouped row g is wire row regroup[g].
    struct Exchange {
      std::int64_t forwards = 0;  // forwards run; Saved::exchange names the one the buffers hold
      index_t kept = 0, rows = 0;  // rows this rank sent (its kept assignments) and received
      std::vector<std::int64_t> send_rows, recv_rows;      // [ep, L] rows to rank j's / from rank i for local expert l
      std::vector<std::int64_t> send_counts, recv_counts;  // [ep] elements to / from each rank
      std::vector<index_t> group_offsets;                   // [L + 1] local expert l owns grouped rows
                                                            // [group_offsets[l], group_offsets[l + 1])
      std::vector<index_t> fill;                            // [L] building the permutation
      std::vector<std::int32_t> regroup, ungroup;          // [rows] grouped <- wire, wire <- grouped
      std::vector<T> xs;           // [rows, C] the received inputs, grouped (kept for backward)
      std::vector<std::byte> acts; // the local experts' activations, carved in expert order (kept for backward)
      std::vector<T> wire;         // [rows, C] rows in transit (received inputs; outputs going back; dys; dxs)
      std::vector<T> work;         // [rows, C] grouped outputs (forward), grouped dys (backward)
      std::vector<T> dxs;          // [rows, C] grouped d(inputs)
      std::vector<std::byte> scratch;  // the local experts' backward scratch
    };

    /// At least n elements (grown, never shrunk: a run reaches its peak and then reuses it; one
    /// element at least, so every span handed to the communicator has a buffer).
    template <class U>
    static U* reserve(std::vector<U>& v, std::size_t n) {
      if (v.size() < std::max<std::size_t>(n, 1)) v.resize(std::max<std::size_t>(n, 1));
      return v.data();
    }
    /// The first `n` rows of a contiguous [rows, C] view, as the communicator takes them.
    std::span<T> first_rows(View<T, 2> v, index_t n) const { return {v.data, static_cast<std::size_t>(n * width_)}; }

    /// Forward of the routed experts under expert parallelism: s.xs [kept, C] (sorted by global
    /// expert) go to the experts' ranks; s.ys [kept, C] receive their outputs in the same order.
    void exchange_forward(const T* params, const Saved& s, index_t kept) const {
      const int ep = group_->size(), L = local_experts_;
      const index_t c = width_;
      Exchange& ex = ex_;
      s.exchange(0) = ++ex.forwards;
      ex.kept = kept;
      // Counts: [j L + l] rows for rank j's local expert l; what comes back is [i L + l] rows from rank i.
      ex.send_rows.resize(static_cast<std::size_t>(ep * L));
      ex.recv_rows.resize(static_cast<std::size_t>(ep * L));
      for (int e = 0; e < experts; ++e) ex.send_rows[static_cast<std::size_t>(e)] = s.offsets(e + 1) - s.offsets(e);
      group_->all_to_all(ex.send_rows, ex.recv_rows);
      ex.send_counts.assign(static_cast<std::size_t>(ep), 0);
      ex.recv_counts.assign(static_cast<std::size_t>(ep), 0);
      ex.group_offsets.assign(static_cast<std::size_t>(L + 1), 0);
      for (int i = 0; i < ep; ++i)
        for (int l = 0; l < L; ++l) {
          const auto at = static_cast<std::size_t>(i * L + l);
          ex.send_counts[static_cast<std::size_t>(i)] += ex.send_rows[at] * c;
          ex.recv_counts[static_cast<std::size_t>(i)] += ex.recv_rows[at] * c;
          ex.group_offsets[static_cast<std::size_t>(l + 1)] += ex.recv_rows[at];
        }
      for (std::size_t l = 0; l < static_cast<std::size_t>(L); ++l) ex.group_offsets[l + 1] += ex.group_offsets[l];
      const index_t r = ex.rows = ex.group_offsets[static_cast<std::size_t>(L)];
      REASON_CHECK(r <= index_t{0x7fffffff}, "moe::MoE: expert parallel: ", r, " received rows exceed the int32 row index");

      // The permutation between wire order (source, expert, token) and grouped order (expert, source, token).
      reserve(ex.regroup, static_cast<std::size_t>(r));
      reserve(ex.ungroup, static_cast<std::size_t>(r));
      ex.fill.assign(ex.group_offsets.begin(), ex.group_offsets.end() - 1);
      for (index_t w = 0, i = 0; i < ep; ++i)  // w: wire row; wire order is (source, expert, token)
        for (int l = 0; l < L; ++l)
          for (std::int64_t j = 0; j < ex.recv_rows[static_cast<std::size_t>(i * L + l)]; ++j, ++w) {
            const index_t g = ex.fill[static_cast<std::size_t>(l)]++;
            ex.regroup[static_cast<std::size_t>(g)] = static_cast<std::int32_t>(w);
            ex.ungroup[static_cast<std::size_t>(w)] = static_cast<std::int32_t>(g);
          }

      // Dispatch: the rows to the experts' ranks, then grouped by local expert.
      const auto n_elems = static_cast<std::size_t>(r * c);
      const auto wire = make_view(reserve(ex.wire, n_elems), r, c);
      const auto xs = make_view(reserve(ex.xs, n_elems), r, c);
      const auto ys = make_view(reserve(ex.work, n_elems), r, c);
      group_->all_to_all_v(first_rows(s.xs, kept), ex.send_counts, std::span<T>(wire.data, n_elems), ex.recv_counts);
      kernels::moe_gather<T>(View<const T, 2>(wire), permutation(ex.regroup, r), r, xs);

      // Each local expert on its rows from every rank.
      const std::size_t acts_bytes = block_bytes(r, L, [&](Arena& a, index_t rr) { (void)experts_[0].carve(a, rr); });
      Arena block(reserve(ex.acts, acts_bytes), acts_bytes);
      for (int l = 0; l < L; ++l) {
        const index_t a = ex.group_offsets[static_cast<std::size_t>(l)], b = ex.group_offsets[static_cast<std::size_t>(l + 1)];
        if (a == b) continue;
        const auto saved = experts_[static_cast<std::size_t>(l)].carve(block, b - a);
        experts_[static_cast<std::size_t>(l)].forward(params, View<const T, 2>(xs.slice(0, a, b)), saved, ys.slice(0, a, b));
      }

      // Combine: the outputs back in wire order, to the ranks that sent the rows.
      kernels::moe_gather<T>(View<const T, 2>(ys), permutation(ex.ungroup, r), r, wire);
      group_->all_to_all_v(std::span<const T>(wire.data, n_elems), ex.recv_counts, first_rows(s.ys, kept), ex.send_counts);
    }

    /// Backward of the routed experts under expert parallelism: sc.dys [kept, C] go to the experts'
    /// ranks, the experts' parameter gradients accumulate, sc.dxs [kept, C] come back.
    void exchange_backward(const T* params, T* grads, const Saved& s, const Scratch& sc) const {
      Exchange& ex = ex_;
      REASON_CHECK(s.exchange(0) == ex.forwards, "moe::MoE::backward: expert parallel: this layer ran another forward (",
                   ex.forwards - s.exchange(0), " since the one being differentiated); it keeps only its last forward's "
                   "received rows, so a backward must follow its own forward");
      const int L = local_experts_;
      const index_t c = width_, r = ex.rows, kept = ex.kept;
      const auto n_elems = static_cast<std::size_t>(r * c);
      const auto wire = make_view(reserve(ex.wire, n_elems), r, c);
      const auto xs = make_view(ex.xs.data(), r, c);
      const auto dys = make_view(reserve(ex.work, n_elems), r, c);
      const auto dxs = make_view(reserve(ex.dxs, n_elems), r, c);
      group_->all_to_all_v(first_rows(sc.dys, kept), ex.send_counts, std::span<T>(wire.data, n_elems), ex.recv_counts);
      kernels::moe_gather<T>(View<const T, 2>(wire), permutation(ex.regroup, r), r, dys);

      const std::size_t acts_bytes = block_bytes(r, L, [&](Arena& a, index_t rr) { (void)experts_[0].carve(a, rr); });
      const std::size_t scratch_bytes =
          block_bytes(r, L, [&](Arena& a, index_t rr) { (void)experts_[0].carve_scratch(a, rr); });
      Arena block(ex.acts.data(), acts_bytes), scratch(reserve(ex.scratch, scratch_bytes), scratch_bytes);
      for (int l = 0; l < L; ++l) {  // the forward's carving order, so the forward's views
        const index_t a = ex.group_offsets[static_cast<std::size_t>(l)], b = ex.group_offsets[static_cast<std::size_t>(l + 1)];
        if (a == b) continue;
        const ExpertModule& m = experts_[static_cast<std::size_t>(l)];
        const auto saved = m.carve(block, b - a);
        const auto work = m.carve_scratch(scratch, b - a);
        m.backward(params, grads, View<const T, 2>(xs.slice(0, a, b)), saved, work, View<const T, 2>(dys.slice(0, a, b)),
                   dxs.slice(0, a, b));
      }

      kernels::moe_gather<T>(View<const T, 2>(dxs), permutation(ex.ungroup, r), r, wire);
      group_->all_to_all_v(std::span<const T>(wire.data, n_elems), ex.recv_counts, first_rows(sc.dxs, kept), ex.send_counts);
    }

    static View<const std::int32_t, 1> permutation(const std::vector<std::int32_t>& p, index_t r) {
      return make_view(p.data(), r);
    }

    template <class U>
    static View<const U, 2> rows(View<U, 2> v, index_t n) { return v.slice(0, 0, n); }
    static index_t segment(const Saved& s, index_t n) { return s.segment > 0 && n % s.segment == 0 ? s.segment : n; }

    /// Bytes of one block from which each of `count` experts carves its own rows (rows summing to
    /// at most `kept`): the carving of all rows at once plus one row's worth of alignment per expert.
    template <class Carve>
    static std::size_t block_bytes(index_t kept, int count, Carve&& carve) {
      const std::size_t all = Arena::measure([&](Arena& a) { carve(a, kept); });
      const std::size_t one = Arena::measure([&](Arena& a) { carve(a, index_t{1}); });
      return all + static_cast<std::size_t>(count) * one;
    }

    index_t width_ = 0;
    model::ShardGroup<T>* group_ = nullptr;  // expert parallel: the ranks the experts are spread over
    int first_expert_ = 0, local_experts_ = experts;  // experts_[i] is expert first_expert_ + i
    GateModule gate_;
    std::vector<ExpertModule> experts_;
    ExpertModule shared_;
    mutable Exchange ex_;  // expert parallel: the forward's received rows (written by the const forward,
                           // as the arena's activations are; see the top of this file)
  };
};

}  // namespace reason::moe
