// reason/attention/hierarchical.hpp — a global and a local branch mixed by learned per-head gates.
//
// The two-level form of hierarchical sparse attention (Yuan et al., "Native Sparse Attention",
// DeepSeek 2025, which mixes compressed/selected/sliding branches by gates; here the branches are
// any two patterns, typically full or top-k attention for the global view and a sliding window for
// the local one). Both branches read the same q, k and v; for head h
//
//   out_h = g_global[h] * global(q, k, v)_h + g_local[h] * local(q, k, v)_h
//
// with g a learned parameter "<name>.gate" of [2, H] initialised to ones, so an untrained model
// starts as the plain sum — which `PlainSum` keeps fixed (no parameters). The branches are the
// patterns of the two policies, composed, not copied: their forward, backward, caches and decode
// are the branches' own. The cache holds both branches' caches (for MultiHead + SlidingWindow, the
// full cache plus a ring of W slots); decoding may rewind as far as the shorter history allows.
//
//   using S = attention::Shape{.head_dim = 64};
//   using Attn = attention::Hierarchical<attention::MultiHead<S>, attention::SlidingWindow<S, 128>>;
#pragma once

#include <algorithm>
#include <string>

#include "reason/attention/projected.hpp"

namespace reason::attention {

/// Learned per-head gates, initialised to 1 (the plain sum).
struct LearnedGate {
  static constexpr const char* name = "learned_gate";
  static constexpr bool learned = true;
};
/// The gates fixed at 1: out = global + local.
struct PlainSum {
  static constexpr const char* name = "plain_sum";
  static constexpr bool learned = false;
};

/// The pattern of Hierarchical: two patterns on the same q, k, v, mixed per head.
template <class GlobalPattern, class LocalPattern, class Gate>
struct Mixed {
  static constexpr const char* name = "hierarchical";
  static constexpr bool bidirectional = GlobalPattern::bidirectional && LocalPattern::bidirectional;
  static std::string signature() {
    return std::string(name) + "(" + GlobalPattern::signature() + ", " + LocalPattern::signature() + ", " + Gate::name + ")";
  }

  template <class T>
  class Core {
    using GlobalCore = typename GlobalPattern::template Core<T>;
    using LocalCore = typename LocalPattern::template Core<T>;

   public:
    struct Saved {
      typename GlobalCore::Saved global;
      typename LocalCore::Saved local;
      View<T, 4> out_global, out_local;  // [B, T, H, D] the branches' outputs, for the gate gradient
    };
    struct Scratch {
      typename GlobalCore::Scratch global;
      typename LocalCore::Scratch local;
      View<T, 4> dbranch;  // [B, T, H, D] d(branch output) = gate * dout
      View<T, 4> dq;       // [B, T, H, D] the local branch's gradients, added to the global one's
      View<T, 4> dk, dv;   // [B, T, Hkv, D]
    };
    struct Cache {
      typename GlobalCore::Cache global;
      typename LocalCore::Cache local;
    };

    Core() = default;
    Core(ParamLayout& layout, const std::string& name, const PatternDims& d)
        : d_(d), global_(layout, name + ".global", d), local_(layout, name + ".local", d) {
      if constexpr (Gate::learned) gate_ = layout.add(name + ".gate", {2, d.heads}, Init::ones);
    }

    Saved carve(Arena& arena, index_t batch, index_t seq) const {
      Saved s;
      s.global = global_.carve(arena, batch, seq);
      s.local = local_.carve(arena, batch, seq);
      s.out_global = arena.view<T>("attention.out_global", batch, seq, d_.heads, d_.head_dim);
      s.out_local = arena.view<T>("attention.out_local", batch, seq, d_.heads, d_.head_dim);
      return s;
    }
    Scratch carve_scratch(Arena& arena, index_t batch, index_t seq) const {
      Scratch s;
      s.global = global_.carve_scratch(arena, batch, seq);
      s.local = local_.carve_scratch(arena, batch, seq);
      s.dbranch = arena.view<T>("attention.dbranch", batch, seq, d_.heads, d_.head_dim);
      s.dq = arena.view<T>("attention.dq_local", batch, seq, d_.heads, d_.head_dim);
      s.dk = arena.view<T>("attention.dk_local", batch, seq, d_.kv_heads, d_.head_dim);
      s.dv = arena.view<T>("attention.dv_local", batch, seq, d_.kv_heads, d_.head_dim);
      return s;
    }

    void forward(const T* params, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, const Saved& s,
                 View<T, 4> out) const {
      global_.forward(params, q, k, v, s.global, s.out_global);
      local_.forward(params, q, k, v, s.local, s.out_local);
      mix(params, flat(s.out_global), flat(s.out_local), flat(out));
    }

    void backward(const T* params, T* grads, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v,
                  const Saved& s, const Scratch& scratch, View<const T, 4> dout, View<T, 4> dq, View<T, 4> dk,
                  View<T, 4> dv) const {
      if constexpr (Gate::learned) {  // d g_branch[h] = sum over (b, t, d) of dout * branch output
        T* dg = grads + gate_;
        for_rows(dout, [&](index_t b, index_t t, index_t h) {
          const T *go = dout.row(b, t, h), *og = s.out_global.row(b, t, h), *ol = s.out_local.row(b, t, h);
          T sg = 0, sl = 0;
          for (index_t i = 0; i < d_.head_dim; ++i) {
            sg += go[i] * og[i];
            sl += go[i] * ol[i];
          }
          dg[h] += sg;
          dg[d_.heads + h] += sl;
        });
      }
      scale_heads(params, 0, dout, scratch.dbranch);
      global_.backward(params, grads, q, k, v, s.global, scratch.global, scratch.dbranch, dq, dk, dv);
      scale_heads(params, 1, dout, scratch.dbranch);
      local_.backward(params, grads, q, k, v, s.local, scratch.local, scratch.dbranch, scratch.dq, scratch.dk,
                      scratch.dv);
      add(scratch.dq, dq);
      add(scratch.dk, dk);
      add(scratch.dv, dv);
    }

    [[nodiscard]] index_t cache_elems(index_t max_seq) const {
      return global_.cache_elems(max_seq) + local_.cache_elems(max_seq);
    }
    [[nodiscard]] index_t cache_history() const {
      const index_t g = global_.cache_history(), l = local_.cache_history();
      return g == 0 ? l : l == 0 ? g : std::min(g, l);
    }
    Cache cache_at(T* memory, index_t batch, index_t max_seq) const {
      return {global_.cache_at(memory, batch, max_seq),
              local_.cache_at(memory + batch * global_.cache_elems(max_seq), batch, max_seq)};
    }
    void append(const Cache& c, index_t pos, View<const T, 3> k, View<const T, 3> v) const {
      global_.append(c.global, pos, k, v);
      local_.append(c.local, pos, k, v);
    }
    /// out_global, out_local [B, H, D], then the branches' own scratch.
    [[nodiscard]] index_t decode_scratch_elems(index_t batch) const {
      return 2 * batch * d_.heads * d_.head_dim + global_.decode_scratch_elems(batch) + local_.decode_scratch_elems(batch);
    }
    void decode(const T* params, View<const T, 3> q, const Cache& c, index_t pos, T* scratch, View<T, 3> out) const {
      const index_t batch = q.size(0), one = batch * d_.heads * d_.head_dim;
      const auto og = make_view(scratch, batch, d_.heads, d_.head_dim);
      const auto ol = make_view(scratch + one, batch, d_.heads, d_.head_dim);
      T* rest = scratch + 2 * one;
      global_.decode(params, q, c.global, pos, rest, og);
      local_.decode(params, q, c.local, pos, rest + global_.decode_scratch_elems(batch), ol);
      mix(params, og, ol, out);
    }

    /// The gates of head h: {global, local}.
    [[nodiscard]] std::pair<T, T> gates(const T* params, index_t h) const {
      if constexpr (Gate::learned) return {params[gate_ + h], params[gate_ + d_.heads + h]};
      return {T(1), T(1)};
    }

   private:
    /// A [B, T, H, D] view as [B T, H, D] (B and T are one run of rows in every view here).
    static View<T, 3> flat(View<T, 4> x) {
      return View<T, 3>(x.data, {x.size(0) * x.size(1), x.size(2), x.size(3)}, {x.stride[1], x.stride[2], x.stride[3]});
    }
    static View<const T, 3> flat(View<const T, 4> x) {
      return View<const T, 3>(x.data, {x.size(0) * x.size(1), x.size(2), x.size(3)}, {x.stride[1], x.stride[2], x.stride[3]});
    }
    /// out[r, h, :] = g_global[h] og[r, h, :] + g_local[h] ol[r, h, :].
    void mix(const T* params, View<const T, 3> og, View<const T, 3> ol, View<T, 3> out) const {
      for (index_t r = 0; r < out.size(0); ++r)
        for (index_t h = 0; h < out.size(1); ++h) {
          const auto [wg, wl] = gates(params, h);
          const T *a = og.row(r, h), *b = ol.row(r, h);
          T* o = out.row(r, h);
          for (index_t i = 0; i < d_.head_dim; ++i) o[i] = wg * a[i] + wl * b[i];
        }
    }
    /// dst[b, t, h, :] = gate(branch)[h] * src[b, t, h, :].
    void scale_heads(const T* params, int branch, View<const T, 4> src, View<T, 4> dst) const {
      for_rows(src, [&](index_t b, index_t t, index_t h) {
        const auto g = gates(params, h);
        const T w = branch == 0 ? g.first : g.second;
        const T* x = src.row(b, t, h);
        T* y = dst.row(b, t, h);
        for (index_t i = 0; i < d_.head_dim; ++i) y[i] = w * x[i];
      });
    }
    static void add(View<const T, 4> src, View<T, 4> dst) {
      for_rows(src, [&](index_t b, index_t t, index_t h) {
        const T* x = src.row(b, t, h);
        T* y = dst.row(b, t, h);
        for (index_t i = 0; i < src.size(3); ++i) y[i] += x[i];
      });
    }
    template <class F>
    static void for_rows(View<const T, 4> x, F&& f) {
      for (index_t b = 0; b < x.size(0); ++b)
        for (index_t t = 0; t < x.size(1); ++t)
          for (index_t h = 0; h < x.size(2); ++h) f(b, t, h);
    }

    PatternDims d_;
    GlobalCore global_;
    LocalCore local_;
    std::size_t gate_ = 0;
  };
};

/// A global and a local policy (both on the projection shell, with the same Shape) as one: shared
/// q/k/v projections, each branch's own pattern, per-head gates (learned, or fixed by PlainSum).
template <class Global, class Local, class Gate = LearnedGate>
struct Hierarchical : Projected<Global::shape, Mixed<typename Global::pattern, typename Local::pattern, Gate>> {
  static_assert(Global::shape == Local::shape,
                "attention::Hierarchical<Global, Local>: both branches must have the same Shape (head_dim, causal)");
};

}  // namespace reason::attention
