// reason/attention/multi_head.hpp — multi-head / grouped-query / multi-query causal attention with RoPE.
//
// Vaswani et al., "Attention Is All You Need", 2017; GQA: Ainslie et al., 2023 (query head h
// reads key/value head h / (H / Hkv); Hkv == H is MHA, Hkv == 1 is MQA); RoPE: Su et al.,
// "RoFormer", 2021. The module is pre-norm-agnostic: x is the normalised residual stream.
//
// Layout: one fused input projection "qkv" of [(H + 2 Hkv) D, C], so q, k and v come from one
// GEMM as column blocks of one [N, (H + 2 Hkv) D] buffer; the attention kernel reads them as
// strided [B, T, heads, D] views of it. Output projection "o" is [C, H D].
//
// Decoding: the KV cache this policy defines is k and v of [B, S, Hkv, D] per layer (keys
// after RoPE); infer/ owns the memory and hands the module its slice.
#pragma once

#include <cmath>
#include <string>

#include "reason/attention/shape.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/attention.hpp"
#include "reason/kernels/rope.hpp"

namespace reason::attention {

/// Full (causal) attention over all earlier positions, with H / Hkv query heads per KV head.
template <Shape S>
struct MultiHead {
  static_assert(S.head_dim > 0 && S.head_dim % 2 == 0,
                "attention::MultiHead: Shape::head_dim must be positive and even (RoPE rotates pairs of dimensions)");
  static constexpr Shape shape = S;
  static constexpr int head_dim = S.head_dim;
  static constexpr const char* name = "multi_head";

  template <class T, class Linear>
  class Module {
   public:
    static constexpr index_t D = S.head_dim;

    /// What forward keeps for backward, per layer.
    struct Saved {
      View<T, 2> qkv;    // [N, (H + 2 Hkv) D], q and k after RoPE
      View<T, 4> probs;  // [B, H, T, T] softmax probabilities
      View<T, 2> ctx;    // [N, H D] attention output before the o projection
    };
    /// Backward's temporaries, shared by all layers.
    struct Scratch {
      View<T, 2> dqkv;  // [N, (H + 2 Hkv) D]
      View<T, 2> dctx;  // [N, H D]
    };
    /// One layer's KV cache: keys (after RoPE) and values of every position so far.
    struct Cache {
      View<T, 4> k, v;  // [B, S, Hkv, D]
    };

    Module() = default;
    Module(ParamLayout& layout, const std::string& name, const Dims& d)
        : heads_(d.heads), kv_heads_(d.kv_heads), rope_(d.max_seq, S.head_dim, d.rope_theta) {
      REASON_CHECK(d.heads % d.kv_heads == 0, name, ": heads = ", d.heads, " is not a multiple of kv_heads = ", d.kv_heads);
      qkv_ = typename Linear::template Module<T>(layout, name + ".qkv", d.width, (d.heads + 2 * d.kv_heads) * D, d.init_std);
      o_ = typename Linear::template Module<T>(layout, name + ".o", d.heads * D, d.width, d.out_std);
    }

    [[nodiscard]] index_t qkv_width() const { return (heads_ + 2 * kv_heads_) * D; }

    Saved carve(Arena& arena, index_t batch, index_t seq) const {
      const index_t n = batch * seq;
      return {arena.view<T>("attention.qkv", n, qkv_width()), arena.view<T>("attention.probs", batch, heads_, seq, seq),
              arena.view<T>("attention.ctx", n, heads_ * D)};
    }
    Scratch carve_scratch(Arena& arena, index_t batch, index_t seq) const {
      const index_t n = batch * seq;
      return {arena.view<T>("attention.dqkv", n, qkv_width()), arena.view<T>("attention.dctx", n, heads_ * D)};
    }

    /// y [N, C] = attention(x [N, C]) for N = B T rows in batch-major order; pos [N] the positions.
    void forward(const T* params, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos, const Saved& s,
                 View<T, 2> y) const {
      REASON_CHECK(batch > 0 && x.size(0) % batch == 0, "attention forward: ", x.size(0), " rows do not split into ",
                   batch, " sequences");
      const index_t seq = x.size(0) / batch;
      qkv_.forward(params, x, s.qkv);
      kernels::rope_forward<T>(rope_, pos, heads_view(s.qkv, 0, heads_));
      kernels::rope_forward<T>(rope_, pos, heads_view(s.qkv, heads_, kv_heads_));
      kernels::attention_forward<T>(split4(s.qkv, batch, seq, 0, heads_), split4(s.qkv, batch, seq, heads_, kv_heads_),
                                    split4(s.qkv, batch, seq, heads_ + kv_heads_, kv_heads_), S.causal, s.probs,
                                    split4(s.ctx, batch, seq, 0, heads_));
      o_.forward(params, s.ctx, y);
    }

    /// dx [N, C] (overwrite) from dy [N, C]; parameter gradients accumulate into grads.
    void backward(const T* params, T* grads, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos,
                  const Saved& s, const Scratch& scratch, View<const T, 2> dy, View<T, 2> dx) const {
      REASON_CHECK(batch > 0 && x.size(0) % batch == 0, "attention backward: ", x.size(0), " rows do not split into ",
                   batch, " sequences");
      const index_t seq = x.size(0) / batch;
      o_.backward(params, grads, s.ctx, dy, scratch.dctx);
      kernels::attention_backward<T>(split4(s.qkv, batch, seq, 0, heads_), split4(s.qkv, batch, seq, heads_, kv_heads_),
                                     split4(s.qkv, batch, seq, heads_ + kv_heads_, kv_heads_), s.probs,
                                     split4(scratch.dctx, batch, seq, 0, heads_),
                                     split4(scratch.dqkv, batch, seq, 0, heads_),
                                     split4(scratch.dqkv, batch, seq, heads_, kv_heads_),
                                     split4(scratch.dqkv, batch, seq, heads_ + kv_heads_, kv_heads_));
      kernels::rope_backward<T>(rope_, pos, heads_view(scratch.dqkv, 0, heads_));
      kernels::rope_backward<T>(rope_, pos, heads_view(scratch.dqkv, heads_, kv_heads_));
      qkv_.backward(params, grads, x, scratch.dqkv, dx);
    }

    /// KV-cache elements per sequence position, per layer (k and v).
    [[nodiscard]] index_t cache_elems_per_token() const { return 2 * kv_heads_ * D; }
    /// The cache views over `memory` (batch * max_seq * cache_elems_per_token() elements).
    Cache cache_at(T* memory, index_t batch, index_t max_seq) const {
      const index_t half = batch * max_seq * kv_heads_ * D;
      return {make_view(memory, batch, max_seq, kv_heads_, D), make_view(memory + half, batch, max_seq, kv_heads_, D)};
    }
    /// Scratch for one decode step of `batch` rows: qkv [B, (H + 2 Hkv) D] then ctx [B, H D].
    [[nodiscard]] index_t decode_scratch_elems(index_t batch) const { return batch * (qkv_width() + heads_ * D); }

    /// One new token per sequence at position `pos` (the same for the batch): x, y [B, C].
    /// Appends its key and value to the cache, then attends over positions [0, pos].
    void decode(const T* params, View<const T, 2> x, index_t pos, const Cache& cache, T* scratch, View<T, 2> y) const {
      const index_t batch = x.size(0);
      REASON_CHECK(pos >= 0 && pos < cache.k.size(1), "attention decode: position ", pos, " outside the cache of ",
                   cache.k.size(1), " positions");
      auto qkv = make_view(scratch, batch, qkv_width());
      auto ctx = make_view(scratch + batch * qkv_width(), batch, heads_ * D);
      qkv_.forward(params, x, qkv);
      const auto pos32 = static_cast<std::int32_t>(pos);
      const View<const std::int32_t, 1> pv(&pos32, {batch}, {0});  // every row at `pos`: a stride-0 view
      kernels::rope_forward<T>(rope_, pv, heads_view(qkv, 0, heads_));
      kernels::rope_forward<T>(rope_, pv, heads_view(qkv, heads_, kv_heads_));
      for (index_t b = 0; b < batch; ++b)
        for (index_t h = 0; h < kv_heads_; ++h)
          for (index_t i = 0; i < D; ++i) {
            cache.k(b, pos, h, i) = qkv(b, (heads_ + h) * D + i);
            cache.v(b, pos, h, i) = qkv(b, (heads_ + kv_heads_ + h) * D + i);
          }
      kernels::attention_decode<T>(heads_view(qkv, 0, heads_), cache.k, cache.v, pos + 1, heads_view(ctx, 0, heads_));
      o_.forward(params, ctx, y);
    }

   private:
    /// Columns [first D, (first + count) D) of a [N, *] buffer as [N, count, D].
    static View<T, 3> heads_view(View<T, 2> buf, index_t first, index_t count) {
      return View<T, 3>(buf.data + first * D, {buf.size(0), count, D}, {buf.stride[0], D, 1});
    }
    /// The same columns as [B, T, count, D].
    static View<T, 4> split4(View<T, 2> buf, index_t batch, index_t seq, index_t first, index_t count) {
      return View<T, 4>(buf.data + first * D, {batch, seq, count, D}, {seq * buf.stride[0], buf.stride[0], D, 1});
    }

    index_t heads_ = 0, kv_heads_ = 0;
    kernels::RopeTable<T> rope_{1, 2};
    typename Linear::template Module<T> qkv_, o_;
  };
};

}  // namespace reason::attention
