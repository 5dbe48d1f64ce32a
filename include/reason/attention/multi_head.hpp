// reason/attention/multi_head.hpp — multi-head / grouped-query / multi-query attention with RoPE.
//
// Vaswani et al., "Attention Is All You Need", 2017; GQA: Ainslie et al., 2023 (query head h
// reads key/value head h / (H / Hkv); Hkv == H is MHA, Hkv == 1 is MQA). Every query sees every
// earlier position (or every position, for an encoder: Shape{.causal = false}).
//
//   using Attn = attention::MultiHead<attention::Shape{.head_dim = 64}>;
//
// The pattern `Full` is the plain kernel (kernels/attention.hpp) behind the projection shell
// (attention/projected.hpp). Its KV cache is k and v of [B, S, Hkv, D] per layer, keys after RoPE:
// 2 Hkv D values per token per layer, growing with the sequence.
#pragma once

#include <algorithm>
#include <string>

#include "reason/attention/projected.hpp"
#include "reason/kernels/attention.hpp"

namespace reason::attention {

/// Every visible key; the cache keeps every position.
struct Full {
  static constexpr const char* name = "multi_head";
  static constexpr bool bidirectional = true;
  static std::string signature() { return name; }

  template <class T>
  class Core {
   public:
    struct Saved {
      View<T, 4> probs;  // [B, H, T, T] softmax probabilities
    };
    struct Scratch {};
    struct Cache {
      View<T, 4> k, v;  // [B, S, Hkv, D]
    };

    Core() = default;
    Core(ParamLayout&, const std::string&, const PatternDims& d) : d_(d) {}

    Saved carve(Arena& arena, index_t batch, index_t seq) const {
      return {arena.view<T>("attention.probs", batch, d_.heads, seq, seq)};
    }
    Scratch carve_scratch(Arena&, index_t, index_t) const { return {}; }

    void forward(const T*, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, const Saved& s,
                 View<T, 4> out) const {
      kernels::attention_forward<T>(q, k, v, d_.causal, s.probs, out);
    }
    void backward(const T*, T*, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, const Saved& s,
                  const Scratch&, View<const T, 4> dout, View<T, 4> dq, View<T, 4> dk, View<T, 4> dv) const {
      kernels::attention_backward<T>(q, k, v, s.probs, dout, dq, dk, dv);
    }

    [[nodiscard]] index_t cache_elems(index_t max_seq) const { return 2 * max_seq * d_.kv_heads * d_.head_dim; }
    [[nodiscard]] index_t cache_history() const { return 0; }
    Cache cache_at(T* memory, index_t batch, index_t max_seq) const {
      const index_t half = batch * max_seq * d_.kv_heads * d_.head_dim;
      return {make_view(memory, batch, max_seq, d_.kv_heads, d_.head_dim),
              make_view(memory + half, batch, max_seq, d_.kv_heads, d_.head_dim)};
    }
    /// Writes k, v [B, Hkv, D] of position pos into its slot.
    void append(const Cache& c, index_t pos, View<const T, 3> k, View<const T, 3> v) const {
      REASON_CHECK(pos < c.k.size(1), "attention decode: position ", pos, " outside the cache of ", c.k.size(1),
                   " positions");
      copy_rows(c.k, pos, k);
      copy_rows(c.v, pos, v);
    }
    [[nodiscard]] index_t decode_scratch_elems(index_t) const { return 0; }
    void decode(const T*, View<const T, 3> q, const Cache& c, index_t pos, T*, View<T, 3> out) const {
      kernels::attention_decode<T>(q, c.k, c.v, pos + 1, out);
    }

    /// cache[b, slot, :, :] = rows[b, :, :] for every sequence b.
    static void copy_rows(View<T, 4> cache, index_t slot, View<const T, 3> rows) {
      expect_shape(rows, "attention cache append: k/v", {cache.size(0), cache.size(2), cache.size(3)});
      for (index_t b = 0; b < cache.size(0); ++b)
        for (index_t h = 0; h < cache.size(2); ++h) std::copy(rows.row(b, h), rows.row(b, h) + cache.size(3), cache.row(b, slot, h));
    }

   private:
    PatternDims d_;
  };
};

/// Full causal (or bidirectional) attention with H / Hkv query heads per KV head.
template <Shape S>
using MultiHead = Projected<S, Full>;

}  // namespace reason::attention
