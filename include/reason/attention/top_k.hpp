// reason/attention/top_k.hpp — top-k sparse attention: each query attends to its k best keys.
//
// Gupta et al., "Memory-efficient Transformers via Top-k Attention" (2021). Each query scores every
// visible key, keeps the K highest (ties to the earlier key) and masks the rest before the softmax;
// gradients flow through the kept entries only (kernels/attention_topk.hpp). The selection needs
// every key, so the cache is MultiHead's: k and v of [B, S, Hkv, D], every position kept.
//
//   using Attn = attention::TopK<attention::Shape{.head_dim = 64}, 32>;
//
// With K >= the sequence length it is full attention, bit for bit.
#pragma once

#include <string>

#include "reason/attention/multi_head.hpp"
#include "reason/attention/projected.hpp"
#include "reason/kernels/attention_topk.hpp"

namespace reason::attention {

/// The K highest-scoring visible keys of each query; the cache keeps every position.
template <int K>
struct TopKKeys {
  static_assert(K > 0, "attention::TopK: k must be positive (each query keeps at least one key)");
  static constexpr const char* name = "top_k";
  static constexpr bool bidirectional = true;
  static constexpr int top_k = K;
  static std::string signature() { return std::string(name) + "(k=" + std::to_string(K) + ")"; }

  template <class T>
  class Core : public Full::Core<T> {  // Full's saved probabilities, backward and cache; its own selection
    using Base = typename Full::template Core<T>;

   public:
    using typename Base::Cache;
    using typename Base::Saved;
    using typename Base::Scratch;

    Core() = default;
    Core(ParamLayout& layout, const std::string& name, const PatternDims& d) : Base(layout, name, d), causal_(d.causal) {}

    void forward(const T*, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, const Saved& s,
                 View<T, 4> out) const {
      kernels::attention_topk_forward<T>(q, k, v, causal_, K, s.probs, out);
    }
    void decode(const T*, View<const T, 3> q, const Cache& c, index_t pos, T*, View<T, 3> out) const {
      kernels::attention_topk_decode<T>(q, c.k, c.v, pos + 1, K, out);
    }

   private:
    bool causal_ = true;
  };
};

/// Attention to each query's K best keys, with H / Hkv query heads per KV head.
template <Shape S, int K>
using TopK = Projected<S, TopKKeys<K>>;

}  // namespace reason::attention
