// reason/kernels/attention_topk.hpp — top-k sparse attention: each query keeps its k best keys.
//
// Gupta et al., "Memory-efficient Transformers via Top-k Attention" (2021); the token selection of
// DeepSeek-V3.2's sparse attention. Row t scores every visible key, keeps the k highest scores
// (ties go to the earlier key, so the choice is deterministic) and masks the rest to -inf before
// the softmax: dropped keys get probability exactly 0. The selection is piecewise constant, so the
// gradient is the softmax gradient over the kept keys only — which is attention_backward reading
// the saved probabilities, whose zeros already say "no gradient here".
//
// A row with k >= its visible keys keeps them all and runs attend_row itself: top-k with
// k >= T equals full attention bit for bit. Training rows and decoding steps go through the same
// row routine, so a generated token's output equals the one training recomputes bit for bit.
// The host form scores all keys (the selection needs them) and saves [B, H, T, T] probabilities
// like the dense kernel; it is the reference the CUDA kernel will be checked against.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "reason/kernels/attention.hpp"

namespace reason::kernels {

namespace detail {

/// attend_row keeping only the `top_k` highest-scoring of the n keys (all of them when n <= top_k).
/// `tmp` holds n scratch values.
template <class T>
void attend_row_topk(const T* q, const T* k, index_t k_step, const T* v, index_t v_step, index_t n, index_t D,
                     index_t top_k, T scale, T* p, T* tmp, T* out) {
  if (n <= top_k) {
    attend_row(q, k, k_step, v, v_step, n, D, D, scale, p, out);
    return;
  }
  row_dots(q, k, k_step, n, D, scale, p);
  std::copy(p, p + n, tmp);
  std::nth_element(tmp, tmp + (top_k - 1), tmp + n, std::greater<T>());
  const T threshold = tmp[top_k - 1];
  index_t above = 0;
  for (index_t u = 0; u < n; ++u) above += p[u] > threshold;
  index_t ties = top_k - above;  // keys equal to the threshold that still fit, earliest first
  for (index_t u = 0; u < n; ++u) {
    const bool keep = p[u] > threshold || (p[u] == threshold && ties-- > 0);
    if (!keep) p[u] = -INFINITY;
  }
  const T mx = row_max(p, n);
  const T inv = T(1) / exp_shifted(p, n, mx);  // exp(-inf) is exactly 0
  for (index_t u = 0; u < n; ++u) p[u] *= inv;
  for (index_t d = 0; d < D; ++d) out[d] = 0;
  add_weighted_rows(p, index_t{1}, v, v_step, n, D, out);
}

inline void check_top_k(const char* fn, index_t top_k) {
  REASON_CHECK(top_k >= 1, fn, ": top_k ", top_k, " must be at least 1");
}

}  // namespace detail

/// Forward. q [B, T, H, D]; k, v [B, T, Hkv, D]; top_k >= 1; probs [B, H, T, T] (0 for masked and
/// dropped keys) or an empty View when no backward will run; out [B, T, H, D]. The backward is
/// attention_backward on these probabilities.
template <class T>
void attention_topk_forward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                            View<const std::type_identity_t<T>, 4> v, bool causal, index_t top_k, View<T, 4> probs,
                            View<T, 4> out) {
  constexpr const char* fn = "attention_topk_forward";
  detail::check_top_k(fn, top_k);
  const auto sz = detail::check_attention<T>(fn, q, k, v, out, "out", true);
  const index_t B = sz.B, Tn = sz.T, H = sz.H, D = sz.Dk, group = sz.group;
  const bool save = probs.data != nullptr;
  if (save) expect_view(probs, fn, "probs", {B, H, Tn, Tn});
  const T scale = detail::softmax_scale<T>(0, D);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, Tn * Tn * 2 * D));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> scratch(static_cast<std::size_t>(save ? Tn : 2 * Tn));
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      for (index_t t = 0; t < Tn; ++t) {
        const index_t n = causal ? t + 1 : Tn;
        T* p = save ? probs.row(b, h, t) : scratch.data() + Tn;
        detail::attend_row_topk(q.row(b, t, h), k.row(b, 0, g), k.stride[1], v.row(b, 0, g), v.stride[1], n, D, top_k,
                                scale, p, scratch.data(), out.row(b, t, h));
        if (save) std::fill(p + n, p + Tn, T(0));
      }
    }
  });
}

/// One decoding step: the new query attends to the top_k best of cache positions [0, len).
/// q [B, H, D]; k_cache, v_cache [B, S, Hkv, D]; out [B, H, D]. Equal, bit for bit, to row len-1
/// of the causal attention_topk_forward.
template <class T>
void attention_topk_decode(View<const std::type_identity_t<T>, 3> q, View<const std::type_identity_t<T>, 4> k_cache,
                           View<const std::type_identity_t<T>, 4> v_cache, index_t len, index_t top_k,
                           View<T, 3> out) {
  constexpr const char* fn = "attention_topk_decode";
  detail::check_top_k(fn, top_k);
  const auto sz = detail::check_decode<T>(fn, q, k_cache, v_cache, out, "k_cache", "v_cache", true);
  const index_t B = sz.B, H = sz.H, S = sz.S, D = sz.Dk, group = sz.group;
  REASON_CHECK(len >= 1 && len <= S, fn, ": len ", len, " is out of range [1, ", S, "] of the cache (k_cache shape ",
               shape_string(k_cache.shape), ")");
  const T scale = detail::softmax_scale<T>(0, D);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, len * 2 * D));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> p(static_cast<std::size_t>(2 * len));
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      detail::attend_row_topk(q.row(b, h), k_cache.row(b, 0, g), k_cache.stride[1], v_cache.row(b, 0, g),
                              v_cache.stride[1], len, D, top_k, scale, p.data(), p.data() + len, out.row(b, h));
    }
  });
}

}  // namespace reason::kernels
