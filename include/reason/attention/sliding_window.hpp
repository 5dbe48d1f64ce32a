// reason/attention/sliding_window.hpp — local attention over the last W positions (Mistral style).
//
// Beltagy et al., "Longformer" (2020); Jiang et al., "Mistral 7B" (2023). Query t sees positions
// [t - W + 1, t]. The decode cache is a ring buffer of W slots per layer (position p in slot
// p % W), so a generation of any length keeps 2 Hkv D W values per layer and sequence. Because
// the ring overwrites, decoding can only re-feed the last position, not rewind further
// (cache_history() = W tells the model so).
//
//   using Attn = attention::SlidingWindow<attention::Shape{.head_dim = 64}, 256>;
//
// With W >= the sequence length it is full causal attention, bit for bit (kernels/attention_window.hpp).
#pragma once

#include <algorithm>
#include <string>

#include "reason/attention/multi_head.hpp"
#include "reason/attention/projected.hpp"
#include "reason/kernels/attention_window.hpp"

namespace reason::attention {

/// The last `W` positions, the query's own included; a ring-buffer cache of W slots.
template <int W>
struct Window {
  static_assert(W > 0, "attention::SlidingWindow: the window W must be positive (a query always sees itself)");
  static constexpr const char* name = "sliding_window";
  static constexpr bool bidirectional = false;
  static constexpr int window = W;
  static std::string signature() { return std::string(name) + "(W=" + std::to_string(W) + ")"; }

  template <class T>
  class Core {
   public:
    struct Saved {
      View<T, 4> probs;  // [B, H, T, W] the band of probabilities (kernels/attention_window.hpp)
    };
    struct Scratch {};
    struct Cache {
      View<T, 4> k, v;  // [B, R, Hkv, D] ring buffers, R = min(W, max_seq) slots
    };

    Core() = default;
    Core(ParamLayout&, const std::string&, const PatternDims& d) : d_(d) {}

    Saved carve(Arena& arena, index_t batch, index_t seq) const {
      return {arena.view<T>("attention.window_probs", batch, d_.heads, seq, index_t{W})};
    }
    Scratch carve_scratch(Arena&, index_t, index_t) const { return {}; }

    void forward(const T*, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, const Saved& s,
                 View<T, 4> out) const {
      kernels::attention_window_forward<T>(q, k, v, W, s.probs, out);
    }
    void backward(const T*, T*, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, const Saved& s,
                  const Scratch&, View<const T, 4> dout, View<T, 4> dq, View<T, 4> dk, View<T, 4> dv) const {
      kernels::attention_window_backward<T>(q, k, v, W, s.probs, dout, dq, dk, dv);
    }

    [[nodiscard]] static index_t slots(index_t max_seq) { return std::min<index_t>(W, max_seq); }
    [[nodiscard]] index_t cache_elems(index_t max_seq) const {
      return 2 * slots(max_seq) * d_.kv_heads * d_.head_dim;
    }
    [[nodiscard]] index_t cache_history() const { return W; }
    Cache cache_at(T* memory, index_t batch, index_t max_seq) const {
      const index_t r = slots(max_seq), half = batch * r * d_.kv_heads * d_.head_dim;
      return {make_view(memory, batch, r, d_.kv_heads, d_.head_dim),
              make_view(memory + half, batch, r, d_.kv_heads, d_.head_dim)};
    }
    void append(const Cache& c, index_t pos, View<const T, 3> k, View<const T, 3> v) const {
      const index_t r = c.k.size(1);
      REASON_CHECK(r == W || pos < r, "attention decode: position ", pos, " outside the cache of ", r, " positions");
      Full::Core<T>::copy_rows(c.k, pos % r, k);
      Full::Core<T>::copy_rows(c.v, pos % r, v);
    }
    [[nodiscard]] index_t decode_scratch_elems(index_t) const { return 0; }
    void decode(const T*, View<const T, 3> q, const Cache& c, index_t pos, T*, View<T, 3> out) const {
      kernels::attention_window_decode<T>(q, c.k, c.v, W, pos, out);
    }

   private:
    PatternDims d_;
  };
};

/// Causal attention over the last W positions, with H / Hkv query heads per KV head.
template <Shape S, int W>
using SlidingWindow = Projected<S, Window<W>>;

}  // namespace reason::attention
