// reason/kernels/attention_window.hpp — causal sliding-window (local) attention, Mistral style.
//
// Beltagy, Peters, Cohan, "Longformer" (2020); Jiang et al., "Mistral 7B" (2023): query t attends to
// the W most recent positions [t - W + 1, t], itself included. During decoding the keys and values
// live in a ring buffer of W slots (position p in slot p % W), so the cache stays W entries long
// however long the generation runs.
//
// Design rule, as in kernels/attention.hpp: training and decoding score a row through one routine,
// `attend_two_runs`, in the same key order, so a generated token's output is bit-identical to the
// one training recomputes. The order is the ring's slot order: once t >= W the window is the run
// [p0, t] (slots 0..t % W, p0 = t - t % W) followed by the run [t - W + 1, p0 - 1] (the remaining
// slots). For t < W there is one run [0, t], so with W >= T the forward equals full causal
// attention bit for bit.
//
// The forward saves the probabilities as a band [B, H, T, W] (entry j of row t belongs to key
// t - W + 1 + j; entries before key 0 are 0), T W instead of T^2 numbers. The backward walks each
// row's band: dP = dout v^T, dS = P (dP - rowsum(P dP)) scale, dq = dS k, and scatters dk, dv per
// key; work is split over (batch, kv head), so each gradient row has one writer and a fixed order.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "reason/kernels/attention.hpp"

namespace reason::kernels {

namespace detail {

/// One query row against two runs of keys, run 1 then run 2 (the keys of a wrapped ring buffer):
/// p[0, n1) for run 1 and p[n1, n1 + n2) for run 2, softmax over all of them, out = sum p v.
/// With n2 == 0 this is attend_row, operation for operation.
template <class T>
void attend_two_runs(const T* q, const T* k1, const T* v1, index_t n1, const T* k2, const T* v2, index_t n2,
                     index_t k_step, index_t v_step, index_t Dk, index_t Dv, T scale, T* p, T* out) {
  const index_t n = n1 + n2;
  row_dots(q, k1, k_step, n1, Dk, scale, p);
  if (n2 > 0) row_dots(q, k2, k_step, n2, Dk, scale, p + n1);
  const T mx = row_max(p, n);
  const T inv = T(1) / exp_shifted(p, n, mx);
  for (index_t u = 0; u < n; ++u) p[u] *= inv;
  for (index_t d = 0; d < Dv; ++d) out[d] = 0;
  add_weighted_rows(p, index_t{1}, v1, v_step, n1, Dv, out);
  if (n2 > 0) add_weighted_rows(p + n1, index_t{1}, v2, v_step, n2, Dv, out);
}

/// The window of query t in ring order: run 1 = positions [first1, first1 + n1), run 2 =
/// [first2, first2 + n2).
struct WindowRuns {
  index_t first1, n1, first2, n2;
};
inline WindowRuns window_runs(index_t t, index_t W) {
  if (t < W) return {0, t + 1, 0, 0};
  const index_t p0 = t - t % W;
  return {p0, t - p0 + 1, t - W + 1, p0 - (t - W + 1)};
}

inline void check_window(const char* fn, index_t W) {
  REASON_CHECK(W >= 1, fn, ": window ", W, " must be at least 1 (a query always sees itself)");
}

}  // namespace detail

/// Forward. q [B, T, H, D]; k, v [B, T, Hkv, D]; window W >= 1; probs [B, H, T, W] (the band, see
/// above) or an empty View when no backward will run; out [B, T, H, D].
template <class T>
void attention_window_forward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                              View<const std::type_identity_t<T>, 4> v, index_t window, View<T, 4> probs,
                              View<T, 4> out) {
  constexpr const char* fn = "attention_window_forward";
  detail::check_window(fn, window);
  const auto sz = detail::check_attention<T>(fn, q, k, v, out, "out", true);
  const index_t B = sz.B, Tn = sz.T, H = sz.H, D = sz.Dk, group = sz.group;
  const index_t W = window;
  const bool save = probs.data != nullptr;
  if (save) expect_view(probs, fn, "probs", {B, H, Tn, W});
  const T scale = detail::softmax_scale<T>(0, D);
  const index_t span = std::min(W, Tn);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, Tn * span * 2 * D));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> p(static_cast<std::size_t>(span));
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      for (index_t t = 0; t < Tn; ++t) {
        const auto r = detail::window_runs(t, W);
        detail::attend_two_runs(q.row(b, t, h), k.row(b, r.first1, g), v.row(b, r.first1, g), r.n1,
                                k.row(b, r.first2, g), v.row(b, r.first2, g), r.n2, k.stride[1], v.stride[1], D, D,
                                scale, p.data(), out.row(b, t, h));
        if (!save) continue;
        // Band entry j is key t - W + 1 + j: run 2 (the older keys) first, then run 1.
        T* band = probs.row(b, h, t);
        const index_t lead = W - (r.n1 + r.n2);  // entries before key 0
        std::fill(band, band + lead, T(0));
        std::copy(p.data() + r.n1, p.data() + r.n1 + r.n2, band + lead);
        std::copy(p.data(), p.data() + r.n1, band + lead + r.n2);
      }
    }
  });
}

/// Backward. Overwrites dq [B, T, H, D], dk, dv [B, T, Hkv, D]; probs the band from the forward
/// on the same inputs with the same window; dout [B, T, H, D].
template <class T>
void attention_window_backward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                               View<const std::type_identity_t<T>, 4> v, index_t window,
                               View<const std::type_identity_t<T>, 4> probs, View<const std::type_identity_t<T>, 4> dout,
                               View<T, 4> dq, View<T, 4> dk, View<T, 4> dv) {
  constexpr const char* fn = "attention_window_backward";
  detail::check_window(fn, window);
  const auto sz = detail::check_attention<T>(fn, q, k, v, dout, "dout", true);
  const index_t B = sz.B, Tn = sz.T, H = sz.H, Hkv = sz.Hkv, D = sz.Dk, group = sz.group;
  const index_t W = window;
  expect_view(probs, fn, "probs", {B, H, Tn, W});
  expect_view(dq, fn, "dq", {B, Tn, H, D});
  expect_view(dk, fn, "dk", {B, Tn, Hkv, D});
  expect_view(dv, fn, "dv", {B, Tn, Hkv, D});
  const T scale = detail::softmax_scale<T>(0, D);
  const index_t span = std::min(W, Tn);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, group * Tn * span * 4 * D));
  parallel_for(B * Hkv, grain, [&](index_t i0, index_t i1) {
    std::vector<T> ds(static_cast<std::size_t>(span));
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / Hkv, g = i % Hkv;
      for (index_t u = 0; u < Tn; ++u) {
        std::fill(dk.row(b, u, g), dk.row(b, u, g) + D, T(0));
        std::fill(dv.row(b, u, g), dv.row(b, u, g) + D, T(0));
      }
      for (index_t h = g * group; h < (g + 1) * group; ++h) {
        for (index_t t = 0; t < Tn; ++t) {
          const index_t lo = std::max<index_t>(0, t - W + 1), n = t - lo + 1;
          const T* p = probs.row(b, h, t) + (lo - (t - W + 1));  // P over keys lo..t, in key order
          const T* go = dout.row(b, t, h);
          const T* qt = q.row(b, t, h);
          detail::row_dots(go, v.row(b, lo, g), v.stride[1], n, D, T(1), ds.data());
          const T pdp = detail::row_dot(p, static_cast<const T*>(ds.data()), n);
          for (index_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - pdp) * scale;
          T* gq = dq.row(b, t, h);
          std::fill(gq, gq + D, T(0));
          detail::add_weighted_rows(static_cast<const T*>(ds.data()), index_t{1}, k.row(b, lo, g), k.stride[1], n, D, gq);
          for (index_t j = 0; j < n; ++j) {
            T* gk = dk.row(b, lo + j, g);
            T* gv = dv.row(b, lo + j, g);
            const T dsj = ds[j], pj = p[j];
            for (index_t d = 0; d < D; ++d) {
              gk[d] += dsj * qt[d];
              gv[d] += pj * go[d];
            }
          }
        }
      }
    }
  });
}

/// One decoding step against a ring-buffer cache: k_ring, v_ring [B, R, Hkv, D] with R slots,
/// position p in slot p % R; the new token (position pos, already in its slot) attends to
/// [pos - W + 1, pos]. R == W, or R < W when the whole sequence fits (pos < R). q [B, H, D];
/// out [B, H, D]. Equal, bit for bit, to row pos of attention_window_forward.
template <class T>
void attention_window_decode(View<const std::type_identity_t<T>, 3> q, View<const std::type_identity_t<T>, 4> k_ring,
                             View<const std::type_identity_t<T>, 4> v_ring, index_t window, index_t pos,
                             View<T, 3> out) {
  constexpr const char* fn = "attention_window_decode";
  detail::check_window(fn, window);
  const auto sz = detail::check_decode<T>(fn, q, k_ring, v_ring, out, "k_ring", "v_ring", true);
  const index_t B = sz.B, H = sz.H, R = sz.S, D = sz.Dk, group = sz.group;
  REASON_CHECK(R == window || (R < window && pos < R), fn, ": a ring of ", R, " slots cannot hold position ", pos,
               " of a window of ", window, " (k_ring shape ", shape_string(k_ring.shape), ")");
  REASON_CHECK(pos >= 0, fn, ": position ", pos, " is negative");
  const auto r = detail::window_runs(pos, window);
  const index_t s1 = 0, s2 = r.n1;  // run 1 starts at slot 0 (p0 % W == 0), run 2 right after it
  const T scale = detail::softmax_scale<T>(0, D);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, (r.n1 + r.n2) * 2 * D));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> p(static_cast<std::size_t>(r.n1 + r.n2));
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      detail::attend_two_runs(q.row(b, h), k_ring.row(b, s1, g), v_ring.row(b, s1, g), r.n1,
                              r.n2 > 0 ? k_ring.row(b, s2, g) : k_ring.row(b, s1, g),
                              r.n2 > 0 ? v_ring.row(b, s2, g) : v_ring.row(b, s1, g), r.n2, k_ring.stride[1],
                              v_ring.stride[1], D, D, scale, p.data(), out.row(b, h));
    }
  });
}

}  // namespace reason::kernels
