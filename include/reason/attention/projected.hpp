// reason/attention/projected.hpp — the projection shell shared by the q/k/v attention policies.
//
// MultiHead, SlidingWindow, TopK and Hierarchical differ only in which keys a query sees and how
// the keys are cached — the *pattern*. Everything around it is one shell, written once:
//
//   x [N, C] -> qkv projection [N, (H + 2 Hkv) D] -> RoPE on q and k -> pattern(q, k, v) -> ctx [N, H D]
//            -> o projection -> y [N, C]
//
// (Vaswani et al. 2017; GQA: Ainslie et al. 2023, query head h reads kv head h / (H / Hkv); RoPE:
// Su et al. 2021.) One fused input projection "qkv" of [(H + 2 Hkv) D, C] gives q, k and v as column
// blocks of one buffer, which the pattern reads as strided [B, T, heads, D] views. Output
// projection "o" is [C, H D]. The module is pre-norm-agnostic: x is the normalised residual stream.
//
// A pattern P is a type with `name`, `bidirectional` (whether it has a non-causal form) and a
// nested `Core<T>` built from (ParamLayout&, name, PatternDims) that provides
//   Saved / Scratch        what forward keeps for backward, and backward's temporaries;
//   carve(arena, B, T), carve_scratch(arena, B, T);
//   forward(params, q, k, v, saved, out)                       q, out [B, T, H, D]; k, v [B, T, Hkv, D]
//   backward(params, grads, q, k, v, saved, scratch, dout, dq, dk, dv)   overwrites dq, dk, dv;
//   Cache, cache_elems(max_seq), cache_history(), cache_at(memory, B, max_seq);
//   append(cache, pos, k, v)                                   k, v [B, Hkv, D] of position pos;
//   decode_scratch_elems(B), decode(params, q, cache, pos, scratch, out)   q, out [B, H, D].
// A pattern may own parameters (Hierarchical's gates) through the layout it is built with.
#pragma once

#include <cstdint>
#include <string>

#include "reason/attention/shape.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/rope.hpp"

namespace reason::attention {

template <Shape S, class Pattern>
struct Projected {
  static_assert(S.head_dim > 0 && S.head_dim % 2 == 0,
                "attention: Shape::head_dim must be positive and even (RoPE rotates pairs of dimensions)");
  static_assert(S.causal || Pattern::bidirectional,
                "attention: this pattern has no non-causal form (Shape{.causal = false} is for full and top-k attention)");
  static constexpr Shape shape = S;
  static constexpr int head_dim = S.head_dim;
  static constexpr const char* name = Pattern::name;
  using pattern = Pattern;
  /// The policy with its compile-time numbers, e.g. "sliding_window(W=256)", recorded in checkpoints.
  static std::string signature() { return Pattern::signature(); }

  template <class T, class Linear>
  class Module {
    using Core = typename Pattern::template Core<T>;

   public:
    static constexpr index_t D = S.head_dim;

    struct Saved {
      View<T, 2> qkv;  // [N, (H + 2 Hkv) D], q and k after RoPE
      typename Core::Saved core;
      View<T, 2> ctx;  // [N, H D] the pattern's output, before the o projection
    };
    struct Scratch {
      View<T, 2> dqkv;  // [N, (H + 2 Hkv) D]
      View<T, 2> dctx;  // [N, H D]
      typename Core::Scratch core;
    };
    using Cache = typename Core::Cache;

    Module() = default;
    Module(ParamLayout& layout, const std::string& prefix, const Dims& d)
        : heads_(d.heads), kv_heads_(d.kv_heads), rope_(d.max_seq, S.head_dim, d.rope_theta) {
      REASON_CHECK(d.heads > 0 && d.kv_heads > 0 && d.heads % d.kv_heads == 0, prefix, ": heads = ", d.heads,
                   " is not a positive multiple of kv_heads = ", d.kv_heads);
      qkv_ = typename Linear::template Module<T>(layout, prefix + ".qkv", d.width, (d.heads + 2 * d.kv_heads) * D, d.init_std);
      core_ = Core(layout, prefix, PatternDims{d.heads, d.kv_heads, D, S.causal});
      o_ = typename Linear::template Module<T>(layout, prefix + ".o", d.heads * D, d.width, d.out_std);
    }

    [[nodiscard]] index_t heads() const { return heads_; }
    [[nodiscard]] index_t kv_heads() const { return kv_heads_; }
    [[nodiscard]] index_t qkv_width() const { return (heads_ + 2 * kv_heads_) * D; }
    [[nodiscard]] const Core& core() const { return core_; }

    Saved carve(Arena& arena, index_t batch, index_t seq) const {
      const index_t n = batch * seq;
      Saved s;
      s.qkv = arena.view<T>("attention.qkv", n, qkv_width());
      s.core = core_.carve(arena, batch, seq);
      s.ctx = arena.view<T>("attention.ctx", n, heads_ * D);
      return s;
    }
    Scratch carve_scratch(Arena& arena, index_t batch, index_t seq) const {
      const index_t n = batch * seq;
      Scratch s;
      s.dqkv = arena.view<T>("attention.dqkv", n, qkv_width());
      s.dctx = arena.view<T>("attention.dctx", n, heads_ * D);
      s.core = core_.carve_scratch(arena, batch, seq);
      return s;
    }

    /// y [N, C] = attention(x [N, C]) for N = B T rows in batch-major order; pos [N] the positions.
    void forward(const T* params, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos, const Saved& s,
                 View<T, 2> y) const {
      const index_t seq = rows_per_sequence("attention forward", batch, x);
      qkv_.forward(params, x, s.qkv);
      kernels::rope_forward<T>(rope_, pos, heads_view(s.qkv, 0, heads_));
      kernels::rope_forward<T>(rope_, pos, heads_view(s.qkv, heads_, kv_heads_));
      core_.forward(params, q4(s.qkv, batch, seq), k4(s.qkv, batch, seq), v4(s.qkv, batch, seq), s.core,
                    split4(s.ctx, batch, seq, 0, heads_));
      o_.forward(params, s.ctx, y);
    }

    /// dx [N, C] (overwrite) from dy [N, C]; parameter gradients accumulate into grads.
    void backward(const T* params, T* grads, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos,
                  const Saved& s, const Scratch& scratch, View<const T, 2> dy, View<T, 2> dx) const {
      const index_t seq = rows_per_sequence("attention backward", batch, x);
      o_.backward(params, grads, s.ctx, dy, scratch.dctx);
      core_.backward(params, grads, q4(s.qkv, batch, seq), k4(s.qkv, batch, seq), v4(s.qkv, batch, seq), s.core,
                     scratch.core, split4(scratch.dctx, batch, seq, 0, heads_), q4(scratch.dqkv, batch, seq),
                     k4(scratch.dqkv, batch, seq), v4(scratch.dqkv, batch, seq));
      kernels::rope_backward<T>(rope_, pos, heads_view(scratch.dqkv, 0, heads_));
      kernels::rope_backward<T>(rope_, pos, heads_view(scratch.dqkv, heads_, kv_heads_));
      qkv_.backward(params, grads, x, scratch.dqkv, dx);
    }

    /// Elements of one sequence's cache in one layer, for up to max_seq positions.
    [[nodiscard]] index_t cache_elems(index_t max_seq) const { return core_.cache_elems(max_seq); }
    /// How many past positions the cache keeps (0: all).
    [[nodiscard]] index_t cache_history() const { return core_.cache_history(); }
    /// The cache views over `memory` (batch * cache_elems(max_seq) elements).
    Cache cache_at(T* memory, index_t batch, index_t max_seq) const { return core_.cache_at(memory, batch, max_seq); }
    /// Scratch for one decode step of `batch` rows: qkv [B, (H + 2 Hkv) D], ctx [B, H D], the pattern's.
    [[nodiscard]] index_t decode_scratch_elems(index_t batch) const {
      return batch * (qkv_width() + heads_ * D) + core_.decode_scratch_elems(batch);
    }

    /// One new token per sequence at position `pos` (the same for the batch): x, y [B, C].
    /// Puts its key and value in the cache, then attends as the pattern says.
    void decode(const T* params, View<const T, 2> x, index_t pos, const Cache& cache, T* scratch, View<T, 2> y) const {
      static_assert(S.causal, "attention: decoding needs causal attention");
      const index_t batch = x.size(0);
      REASON_CHECK(pos >= 0, "attention decode: position ", pos, " is negative");
      auto qkv = make_view(scratch, batch, qkv_width());
      auto ctx = make_view(scratch + batch * qkv_width(), batch, heads_ * D);
      T* core_scratch = scratch + batch * (qkv_width() + heads_ * D);
      qkv_.forward(params, x, qkv);
      const auto pos32 = static_cast<std::int32_t>(pos);
      const View<const std::int32_t, 1> pv(&pos32, {batch}, {0});  // every row at `pos`: a stride-0 view
      kernels::rope_forward<T>(rope_, pv, heads_view(qkv, 0, heads_));
      kernels::rope_forward<T>(rope_, pv, heads_view(qkv, heads_, kv_heads_));
      core_.append(cache, pos, View<const T, 3>(heads_view(qkv, heads_, kv_heads_)),
                   View<const T, 3>(heads_view(qkv, heads_ + kv_heads_, kv_heads_)));
      core_.decode(params, View<const T, 3>(heads_view(qkv, 0, heads_)), cache, pos, core_scratch,
                   heads_view(ctx, 0, heads_));
      o_.forward(params, ctx, y);
    }

   private:
    static index_t rows_per_sequence(const char* fn, index_t batch, View<const T, 2> x) {
      REASON_CHECK(batch > 0 && x.size(0) % batch == 0, fn, ": x has ", x.size(0), " rows, which do not split into ",
                   batch, " sequences");
      return x.size(0) / batch;
    }
    /// Columns [first D, (first + count) D) of a [N, *] buffer as [N, count, D].
    static View<T, 3> heads_view(View<T, 2> buf, index_t first, index_t count) {
      return View<T, 3>(buf.data + first * D, {buf.size(0), count, D}, {buf.stride[0], D, 1});
    }
    /// The same columns as [B, T, count, D].
    static View<T, 4> split4(View<T, 2> buf, index_t batch, index_t seq, index_t first, index_t count) {
      return View<T, 4>(buf.data + first * D, {batch, seq, count, D}, {seq * buf.stride[0], buf.stride[0], D, 1});
    }
    View<T, 4> q4(View<T, 2> buf, index_t b, index_t t) const { return split4(buf, b, t, 0, heads_); }
    View<T, 4> k4(View<T, 2> buf, index_t b, index_t t) const { return split4(buf, b, t, heads_, kv_heads_); }
    View<T, 4> v4(View<T, 2> buf, index_t b, index_t t) const { return split4(buf, b, t, heads_ + kv_heads_, kv_heads_); }

    index_t heads_ = 0, kv_heads_ = 0;
    kernels::RopeTable<T> rope_{1, 2};
    typename Linear::template Module<T> qkv_;
    Core core_;
    typename Linear::template Module<T> o_;
  };
};

}  // namespace reason::attention
