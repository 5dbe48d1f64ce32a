// reason/kernels/attention.hpp — scaled dot-product attention with grouped KV heads.
//
// Vaswani et al., "Attention Is All You Need" (2017): out = softmax(q k^T / sqrt(D)) v.
// Ainslie et al., "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
// Checkpoints" (2023): H query heads share Hkv key/value heads; query head h reads kv head
// h / (H / Hkv). Hkv == H is multi-head attention, Hkv == 1 multi-query attention.
//
// Design rule: one row routine, `attend_row`, computes a query row against a run of keys, and
// training (attention_forward, all rows) and generation (attention_decode, one new row against
// the KV cache) both call it. So a token's output during a rollout is bit-identical to the one the
// trainer recomputes for it — the property the rest of the library keeps. The softmax subtracts
// the row max; masked (causal) keys are never scored, and their probabilities are stored as 0.
// The forward saves the probabilities [B, H, T, T] (llm.c's "att"); the backward reads them and
// recomputes nothing. Work is split over (batch, head) in the forward and over (batch, kv head) in
// the backward, where each kv head's gradient sums over its group in a fixed order: results do not
// depend on the thread count. All four-dimensional views may be strided (q, k and v are usually
// slices of one fused qkv buffer [B, T, H + 2 Hkv, D]); the innermost dimension must be unit-stride.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

namespace detail {

/// The number of query heads per kv head, checking that H is a multiple of Hkv.
inline index_t gqa_group(const char* fn, index_t H, index_t Hkv, index_t D) {
  REASON_CHECK(Hkv > 0 && H % Hkv == 0, fn, ": q has ", H, " heads, which is not a multiple of the ", Hkv,
               " kv heads of k (grouped-query attention needs H % Hkv == 0)");
  REASON_CHECK(D > 0, fn, ": head dimension is ", D, ", expected at least 1");
  return H / Hkv;
}

/// One query row against keys 0..n-1: p[u] = softmax_u(scale * q . k_u), out = sum_u p[u] v_u.
///   q [D]; k, v: key u at k + u * k_step (unit inner stride); p [n] written; out [D] written.
template <class T>
void attend_row(const T* q, const T* k, index_t k_step, const T* v, index_t v_step, index_t n, index_t D, T scale,
                T* p, T* out) {
  T mx = -INFINITY;
  for (index_t u = 0; u < n; ++u) {
    const T* ku = k + u * k_step;
    T s = 0;
    for (index_t d = 0; d < D; ++d) s += q[d] * ku[d];
    p[u] = s * scale;
    mx = std::max(mx, p[u]);
  }
  T sum = 0;
  for (index_t u = 0; u < n; ++u) {
    p[u] = std::exp(p[u] - mx);
    sum += p[u];
  }
  const T inv = T(1) / sum;
  for (index_t d = 0; d < D; ++d) out[d] = 0;
  for (index_t u = 0; u < n; ++u) {
    p[u] *= inv;
    const T pu = p[u];
    const T* vu = v + u * v_step;
    for (index_t d = 0; d < D; ++d) out[d] += pu * vu[d];
  }
}

}  // namespace detail

/// Forward. Inputs are read, probs and out written.
///   q [B, T, H, D]; k, v [B, T, Hkv, D] with H % Hkv == 0;
///   probs [B, H, T, T] softmax probabilities saved for the backward (0 above the diagonal when
///   causal), or an empty View when no backward will run; out [B, T, H, D]. Scale 1/sqrt(D).
template <class T>
void attention_forward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                       View<const std::type_identity_t<T>, 4> v, bool causal, View<T, 4> probs, View<T, 4> out) {
  constexpr const char* fn = "attention_forward";
  const index_t B = q.shape[0], Tn = q.shape[1], H = q.shape[2], D = q.shape[3], Hkv = k.shape[2];
  const index_t group = detail::gqa_group(fn, H, Hkv, D);
  expect_view(q, fn, "q", {B, Tn, H, D});
  expect_view(k, fn, "k", {B, Tn, Hkv, D});
  expect_view(v, fn, "v", {B, Tn, Hkv, D});
  expect_view(out, fn, "out", {B, Tn, H, D});
  const bool save = probs.data != nullptr;
  if (save) expect_view(probs, fn, "probs", {B, H, Tn, Tn});
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, Tn * Tn * D));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> scratch(save ? 0 : Tn);
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      for (index_t t = 0; t < Tn; ++t) {
        const index_t n = causal ? t + 1 : Tn;
        T* p = save ? probs.row(b, h, t) : scratch.data();
        detail::attend_row(q.row(b, t, h), k.row(b, 0, g), k.stride[1], v.row(b, 0, g), v.stride[1], n, D, scale, p,
                           out.row(b, t, h));
        if (save) std::fill(p + n, p + Tn, T(0));
      }
    }
  });
}

/// Backward. Overwrites dq, dk and dv (activation gradients).
///   q [B, T, H, D]; k, v [B, T, Hkv, D]; probs [B, H, T, T] from attention_forward on the same
///   inputs (its zeros carry the causal mask); dout [B, T, H, D]; dq [B, T, H, D]; dk, dv [B, T, Hkv, D].
template <class T>
void attention_backward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                        View<const std::type_identity_t<T>, 4> v, View<const std::type_identity_t<T>, 4> probs,
                        View<const std::type_identity_t<T>, 4> dout, View<T, 4> dq, View<T, 4> dk, View<T, 4> dv) {
  constexpr const char* fn = "attention_backward";
  const index_t B = q.shape[0], Tn = q.shape[1], H = q.shape[2], D = q.shape[3], Hkv = k.shape[2];
  const index_t group = detail::gqa_group(fn, H, Hkv, D);
  expect_view(q, fn, "q", {B, Tn, H, D});
  expect_view(k, fn, "k", {B, Tn, Hkv, D});
  expect_view(v, fn, "v", {B, Tn, Hkv, D});
  expect_view(probs, fn, "probs", {B, H, Tn, Tn});
  expect_view(dout, fn, "dout", {B, Tn, H, D});
  expect_view(dq, fn, "dq", {B, Tn, H, D});
  expect_view(dk, fn, "dk", {B, Tn, Hkv, D});
  expect_view(dv, fn, "dv", {B, Tn, Hkv, D});
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, group * Tn * Tn * D));
  parallel_for(B * Hkv, grain, [&](index_t i0, index_t i1) {
    std::vector<T> dp(Tn);
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / Hkv, g = i % Hkv;
      for (index_t u = 0; u < Tn; ++u) {
        std::fill(dk.row(b, u, g), dk.row(b, u, g) + D, T(0));
        std::fill(dv.row(b, u, g), dv.row(b, u, g) + D, T(0));
      }
      for (index_t h = g * group; h < (g + 1) * group; ++h) {
        for (index_t t = 0; t < Tn; ++t) {
          const T* p = probs.row(b, h, t);
          const T* go = dout.row(b, t, h);
          const T* qt = q.row(b, t, h);
          T* gq = dq.row(b, t, h);
          // dp[u] = dout_t . v_u; the softmax Jacobian needs sum_u p[u] dp[u]. Zero probabilities
          // (masked keys) contribute nothing to any gradient and are skipped.
          T pdp = 0;
          for (index_t u = 0; u < Tn; ++u) {
            if (p[u] == T(0)) continue;
            const T* vu = v.row(b, u, g);
            T s = 0;
            for (index_t d = 0; d < D; ++d) s += go[d] * vu[d];
            dp[u] = s;
            pdp += p[u] * s;
          }
          std::fill(gq, gq + D, T(0));
          for (index_t u = 0; u < Tn; ++u) {
            if (p[u] == T(0)) continue;
            const T ds = p[u] * (dp[u] - pdp) * scale;  // d loss / d (q_t . k_u)
            const T* ku = k.row(b, u, g);
            T* gk = dk.row(b, u, g);
            T* gv = dv.row(b, u, g);
            for (index_t d = 0; d < D; ++d) {
              gq[d] += ds * ku[d];
              gk[d] += ds * qt[d];
              gv[d] += p[u] * go[d];
            }
          }
        }
      }
    }
  });
}

/// One decoding step against a KV cache: the new token's query attends to positions [0, len).
///   q [B, H, D]; k_cache, v_cache [B, S, Hkv, D] holding positions 0..len-1 (1 <= len <= S);
///   out [B, H, D] written. Equal, bit for bit, to row len-1 of the causal attention_forward.
template <class T>
void attention_decode(View<const std::type_identity_t<T>, 3> q, View<const std::type_identity_t<T>, 4> k_cache,
                      View<const std::type_identity_t<T>, 4> v_cache, index_t len, View<T, 3> out) {
  constexpr const char* fn = "attention_decode";
  const index_t B = q.shape[0], H = q.shape[1], D = q.shape[2], S = k_cache.shape[1], Hkv = k_cache.shape[2];
  const index_t group = detail::gqa_group(fn, H, Hkv, D);
  expect_view(q, fn, "q", {B, H, D});
  expect_view(k_cache, fn, "k_cache", {B, S, Hkv, D});
  expect_view(v_cache, fn, "v_cache", {B, S, Hkv, D});
  expect_view(out, fn, "out", {B, H, D});
  REASON_CHECK(len >= 1 && len <= S, fn, ": len ", len, " is out of range [1, ", S, "] of the cache (k_cache shape ",
               shape_string(k_cache.shape), ")");
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, len * D));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> p(len);
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      detail::attend_row(q.row(b, h), k_cache.row(b, 0, g), k_cache.stride[1], v_cache.row(b, 0, g),
                         v_cache.stride[1], len, D, scale, p.data(), out.row(b, h));
    }
  });
}

}  // namespace reason::kernels
