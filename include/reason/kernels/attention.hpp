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
//
// Speed on the host (portable x86-64: SSE2, no -march): every inner loop runs over contiguous D or
// over a row of probabilities. q . k_u sums four keys per pass in 8 float lanes (packs of two
// 16-byte registers, added pairwise at the end); sum_u p_u v_u adds four weighted rows per pass; the
// softmax's exp is a vectorized Cephes polynomial in float (std::exp in double). The backward
// goes row by row (dP = dout v^T, dS = P (dP - rowsum(P dP)), dq = dS k) keeping dS of one head in
// a [T, T] scratch, then column by column (dk_u = sum_t dS[t, u] q_t, dv_u = sum_t P[t, u] dout_t),
// so no gradient row is read and written once per (query, key) pair. Every sum has a fixed order
// that depends only on the sizes.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
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

/// The sizes of a training-time call, read from q [B, T, H, Dk], k [B, T, Hkv, Dk], v [B, T, Hkv, Dv]
/// and out (or dout) [B, T, H, Dv], all checked; `same_width` also requires Dv == Dk.
struct AttentionSizes {
  index_t B, T, H, Hkv, Dk, Dv, group;
};
template <class T, class Out>
AttentionSizes check_attention(const char* fn, const View<const T, 4>& q, const View<const T, 4>& k,
                               const View<const T, 4>& v, const View<Out, 4>& out, const char* out_name,
                               bool same_width) {
  const index_t B = q.shape[0], Tn = q.shape[1], H = q.shape[2], Dk = q.shape[3], Hkv = k.shape[2];
  const index_t Dv = same_width ? Dk : v.shape[3];
  const index_t group = gqa_group(fn, H, Hkv, Dk);
  expect_view(q, fn, "q", {B, Tn, H, Dk});
  expect_view(k, fn, "k", {B, Tn, Hkv, Dk});
  expect_view(v, fn, "v", {B, Tn, Hkv, Dv});
  expect_view(out, fn, out_name, {B, Tn, H, Dv});
  return {B, Tn, H, Hkv, Dk, Dv, group};
}

/// The sizes of a decoding step, read from q [B, H, Dk], caches k [B, S, Hkv, Dk], v [B, S, Hkv, Dv]
/// and out [B, H, Dv], all checked; `same_width` also requires Dv == Dk.
struct DecodeSizes {
  index_t B, H, S, Hkv, Dk, Dv, group;
};
template <class T>
DecodeSizes check_decode(const char* fn, const View<const T, 3>& q, const View<const T, 4>& k_cache,
                         const View<const T, 4>& v_cache, const View<T, 3>& out, const char* k_name, const char* v_name,
                         bool same_width) {
  const index_t B = q.shape[0], H = q.shape[1], Dk = q.shape[2], S = k_cache.shape[1], Hkv = k_cache.shape[2];
  const index_t Dv = same_width ? Dk : v_cache.shape[3];
  const index_t group = gqa_group(fn, H, Hkv, Dk);
  expect_view(q, fn, "q", {B, H, Dk});
  expect_view(k_cache, fn, k_name, {B, S, Hkv, Dk});
  expect_view(v_cache, fn, v_name, {B, S, Hkv, Dv});
  expect_view(out, fn, "out", {B, H, Dv});
  return {B, H, S, Hkv, Dk, Dv, group};
}

/// Lanes of the partial sums: 32 bytes' worth (8 floats, 4 doubles), held as two packs of 16 bytes.
/// Sums over D and over keys are kept in this many independent partial sums, element i in lane
/// i % kLanes, and added pairwise at the end: a fixed order, the same on every thread and for every
/// caller.
template <class T>
inline constexpr int kLanes = static_cast<int>(32 / sizeof(T));
template <class T>
inline constexpr int kPack = kLanes<T> / 2;

/// A pack of kPack<T> = 16 bytes of partial sums. With GCC and Clang it is a generic vector (a
/// language extension, not an instruction set: one SSE2 register at baseline x86-64); elsewhere an
/// array with the same element-wise arithmetic. GCC 12 does not vectorize the equivalent plain
/// loops over lanes (it vectorizes across D iterations instead, with shuffles), hence the pack.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(REASON_ATTENTION_NO_VECTOR_EXT)
#define REASON_ATTENTION_VECTOR_EXT 1
template <class T>
struct Pack;
template <>
struct Pack<float> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct Pack<double> {
  typedef double type __attribute__((vector_size(16)));
};
template <class T>
using pack_t = typename Pack<T>::type;
#else
template <class T>
struct pack_t {  // trivial: `pack_t<T> a = {}` is zero
  T v[kPack<T>];
  T operator[](int j) const { return v[j]; }
  pack_t operator*(const pack_t& o) const {
    pack_t r;
    for (int j = 0; j < kPack<T>; ++j) r.v[j] = v[j] * o.v[j];
    return r;
  }
  pack_t& operator+=(const pack_t& o) {
    for (int j = 0; j < kPack<T>; ++j) v[j] += o.v[j];
    return *this;
  }
};
#endif

template <class T>
inline pack_t<T> pack_load(const T* p) {
  pack_t<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// The pairwise sum of kLanes<T> partial sums.
template <class T>
inline T lane_sum(T (&s)[kLanes<T>]) {
  for (int w = kLanes<T> / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) s[j] += s[j + w];
  return s[0];
}

/// The pairwise sum of the lanes of two packs (lanes 0..kPack-1, then kPack..kLanes-1).
template <class T>
inline T lane_sum(pack_t<T> a, pack_t<T> b) {
  T s[kLanes<T>];
  for (int j = 0; j < kPack<T>; ++j) {
    s[j] = a[j];
    s[kPack<T> + j] = b[j];
  }
  return lane_sum<T>(s);
}

/// s[u] = scale * (x . r_u) for rows r_u = rows + u * step, u < n; four rows per pass share the
/// loads of x. The last D % kLanes elements are summed as one more zero-padded step. Each row's sum
/// has the same order in the four-row and the one-row path.
template <class T>
void row_dots(const T* __restrict x, const T* __restrict rows, index_t step, index_t n, index_t D, T scale,
              T* __restrict s) {
  constexpr int L = kLanes<T>, P = kPack<T>;
  const index_t Dv = D - D % L;
  const int tail = static_cast<int>(D - Dv);
  T xt[L] = {};
  for (int j = 0; j < tail; ++j) xt[j] = x[Dv + j];
  const pack_t<T> xta = pack_load(xt), xtb = pack_load(xt + P);
  index_t u = 0;
  for (; u + 4 <= n; u += 4) {
    const T* r0 = rows + u * step;
    const T* r1 = r0 + step;
    const T* r2 = r1 + step;
    const T* r3 = r2 + step;
    pack_t<T> a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
    for (index_t d = 0; d < Dv; d += L) {
      const pack_t<T> xa = pack_load(x + d), xb = pack_load(x + d + P);
      a0 += xa * pack_load(r0 + d);
      b0 += xb * pack_load(r0 + d + P);
      a1 += xa * pack_load(r1 + d);
      b1 += xb * pack_load(r1 + d + P);
      a2 += xa * pack_load(r2 + d);
      b2 += xb * pack_load(r2 + d + P);
      a3 += xa * pack_load(r3 + d);
      b3 += xb * pack_load(r3 + d + P);
    }
    if (tail > 0) {
      T rt[4][L] = {};
      for (int j = 0; j < tail; ++j) {
        rt[0][j] = r0[Dv + j];
        rt[1][j] = r1[Dv + j];
        rt[2][j] = r2[Dv + j];
        rt[3][j] = r3[Dv + j];
      }
      a0 += xta * pack_load(rt[0]);
      b0 += xtb * pack_load(rt[0] + P);
      a1 += xta * pack_load(rt[1]);
      b1 += xtb * pack_load(rt[1] + P);
      a2 += xta * pack_load(rt[2]);
      b2 += xtb * pack_load(rt[2] + P);
      a3 += xta * pack_load(rt[3]);
      b3 += xtb * pack_load(rt[3] + P);
    }
    s[u] = scale * lane_sum<T>(a0, b0);
    s[u + 1] = scale * lane_sum<T>(a1, b1);
    s[u + 2] = scale * lane_sum<T>(a2, b2);
    s[u + 3] = scale * lane_sum<T>(a3, b3);
  }
  for (; u < n; ++u) {
    const T* r0 = rows + u * step;
    pack_t<T> a0 = {}, b0 = {};
    for (index_t d = 0; d < Dv; d += L) {
      a0 += pack_load(x + d) * pack_load(r0 + d);
      b0 += pack_load(x + d + P) * pack_load(r0 + d + P);
    }
    if (tail > 0) {
      T rt[L] = {};
      for (int j = 0; j < tail; ++j) rt[j] = r0[Dv + j];
      a0 += xta * pack_load(rt);
      b0 += xtb * pack_load(rt + P);
    }
    s[u] = scale * lane_sum<T>(a0, b0);
  }
}

/// o[d] += sum_u w[u * w_step] r_u[d] for rows r_u = rows + u * step, u < n; four rows per pass,
/// added to o as ((w0 r0 + w1 r1) + (w2 r2 + w3 r3)). A plain loop over contiguous d: GCC vectorizes
/// it as it stands. (Accumulating a block of columns in registers over all rows, or over chunks of
/// 8 or 16 rows, measured no faster: each row's D elements are then read in several passes.)
template <class T>
void add_weighted_rows(const T* __restrict w, index_t w_step, const T* __restrict rows, index_t step, index_t n,
                       index_t D, T* __restrict o) {
  index_t u = 0;
  for (; u + 4 <= n; u += 4) {
    const T w0 = w[u * w_step], w1 = w[(u + 1) * w_step], w2 = w[(u + 2) * w_step], w3 = w[(u + 3) * w_step];
    const T* __restrict r0 = rows + u * step;
    const T* __restrict r1 = r0 + step;
    const T* __restrict r2 = r1 + step;
    const T* __restrict r3 = r2 + step;
    for (index_t d = 0; d < D; ++d) o[d] += (w0 * r0[d] + w1 * r1[d]) + (w2 * r2[d] + w3 * r3[d]);
  }
  for (; u < n; ++u) {
    const T w0 = w[u * w_step];
    const T* __restrict r0 = rows + u * step;
    for (index_t d = 0; d < D; ++d) o[d] += w0 * r0[d];
  }
}

/// exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial in r times
/// 2^n built in the exponent bits; within 1.3 ulp of exp over [-87.3, 0]). exp(0) is exactly 1;
/// below -87.3 (where expf leaves the normal range) it returns 0. The scalar form; the float rows
/// use the pack form below, which gives the same bits lane by lane (checked over 10^6 inputs).
inline float exp_nonpositive(float x) {
  constexpr float lo = -87.3365447f, log2e = 1.44269504088896341f, c1 = 0.693359375f, c2 = -2.12194440e-4f;
  constexpr float round = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float xc = x < lo ? lo : x;
  const float fn = (xc * log2e + round) - round;
  const float r = (xc - fn * c1) - fn * c2;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const float two_n = std::bit_cast<float>((static_cast<std::int32_t>(fn) + 127) << 23);
  return x < lo ? 0.0f : y * two_n;
}

#if REASON_ATTENTION_VECTOR_EXT
/// exp_nonpositive on a pack: the same operations lane by lane, so the same results.
inline pack_t<float> exp_nonpositive(pack_t<float> x) {
  typedef std::int32_t ipack __attribute__((vector_size(16)));
  constexpr float lo = -87.3365447f, log2e = 1.44269504088896341f, c1 = 0.693359375f, c2 = -2.12194440e-4f;
  constexpr float round = 12582912.0f;
  const pack_t<float> lov = {lo, lo, lo, lo}, zero = {};
  const pack_t<float> xc = x < lov ? lov : x;
  const pack_t<float> fn = (xc * log2e + round) - round;
  const pack_t<float> r = (xc - fn * c1) - fn * c2;
  pack_t<float> y = pack_t<float>{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const ipack bits = (__builtin_convertvector(fn, ipack) + 127) << 23;
  pack_t<float> two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < lov ? zero : y * two_n;
}
#endif

/// p[u] = exp(p[u] - mx) for u < n; returns the sum of the new p (lane partial sums, fixed order).
template <class T>
T exp_shifted(T* __restrict p, index_t n, T mx) {
  constexpr int L = kLanes<T>;
#if REASON_ATTENTION_VECTOR_EXT
  if constexpr (std::is_same_v<T, float>) {
    constexpr int P = kPack<T>;
    const index_t nv = n - n % L;
    pack_t<float> a = {}, b = {};
    for (index_t u = 0; u <= n - L; u += L) {  // the tail is one more step, padded with exp(-inf) = 0
      const pack_t<float> ea = exp_nonpositive(pack_load(p + u) - mx), eb = exp_nonpositive(pack_load(p + u + P) - mx);
      std::memcpy(p + u, &ea, sizeof ea);
      std::memcpy(p + u + P, &eb, sizeof eb);
      a += ea;
      b += eb;
    }
    if (nv < n) {
      float t[L];
      for (int j = 0; j < L; ++j) t[j] = nv + j < n ? p[nv + j] : -INFINITY;
      const pack_t<float> ea = exp_nonpositive(pack_load(t) - mx), eb = exp_nonpositive(pack_load(t + P) - mx);
      a += ea;
      b += eb;
      std::memcpy(t, &ea, sizeof ea);
      std::memcpy(t + P, &eb, sizeof eb);
      for (index_t u = nv; u < n; ++u) p[u] = t[u - nv];
    }
    return lane_sum<float>(a, b);
  }
#endif
  T a[L] = {};
  for (index_t u = 0; u < n; ++u) {
    if constexpr (std::is_same_v<T, float>) {
      p[u] = exp_nonpositive(p[u] - mx);
    } else {
      p[u] = std::exp(p[u] - mx);
    }
    a[u % L] += p[u];
  }
  return lane_sum<T>(a);
}

/// max of p[0..n), n >= 1.
template <class T>
T row_max(const T* __restrict p, index_t n) {
  constexpr int L = kLanes<T>;
  T m[L];
  for (int j = 0; j < L; ++j) m[j] = p[0];
  const index_t nv = n - n % L;
  for (index_t u = 0; u < nv; u += L)
    for (int j = 0; j < L; ++j) m[j] = m[j] < p[u + j] ? p[u + j] : m[j];
  for (index_t u = nv; u < n; ++u) m[0] = m[0] < p[u] ? p[u] : m[0];
  T mx = m[0];
  for (int j = 1; j < L; ++j) mx = mx < m[j] ? m[j] : mx;
  return mx;
}

/// sum_u a[u] b[u] over u < n (lane partial sums, fixed order).
template <class T>
T row_dot(const T* __restrict a, const T* __restrict b, index_t n) {
  constexpr int L = kLanes<T>;
  T s[L] = {};
  const index_t nv = n - n % L;
  for (index_t u = 0; u < nv; u += L)
    for (int j = 0; j < L; ++j) s[j] += a[u + j] * b[u + j];
  for (index_t u = nv; u < n; ++u) s[u - nv] += a[u] * b[u];
  return lane_sum(s);
}

/// One query row against keys 0..n-1: p[u] = softmax_u(scale * q . k_u), out = sum_u p[u] v_u.
///   q [Dk]; k, v: key u at k + u * k_step, value u at v + u * v_step (unit inner stride);
///   p [n] written; out [Dv] written.
/// Every sum has a fixed order that depends on n, Dk and Dv only, so the full forward's row t and
/// the decode step at len = t + 1 compute the same numbers.
template <class T>
void attend_row(const T* q, const T* k, index_t k_step, const T* v, index_t v_step, index_t n, index_t Dk,
                index_t Dv, T scale, T* p, T* out) {
  row_dots(q, k, k_step, n, Dk, scale, p);
  const T mx = row_max(p, n);
  const T inv = T(1) / exp_shifted(p, n, mx);
  for (index_t u = 0; u < n; ++u) p[u] *= inv;
  for (index_t d = 0; d < Dv; ++d) out[d] = 0;
  add_weighted_rows(p, index_t{1}, v, v_step, n, Dv, out);
}

/// The softmax scale: `scale` when given (> 0), else 1 / sqrt(Dk).
template <class T>
T softmax_scale(double scale, index_t Dk) {
  return static_cast<T>(scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(Dk)));
}

}  // namespace detail

/// Forward. Inputs are read, probs and out written.
///   q [B, T, H, Dk]; k [B, T, Hkv, Dk]; v [B, T, Hkv, Dv] with H % Hkv == 0 (Dv == Dk except in
///   MLA's expanded form); probs [B, H, T, T] softmax probabilities saved for the backward (0 above
///   the diagonal when causal), or an empty View when no backward will run; out [B, T, H, Dv].
///   scale: the softmax scale, 1 / sqrt(Dk) when 0.
template <class T>
void attention_forward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                       View<const std::type_identity_t<T>, 4> v, bool causal, View<T, 4> probs, View<T, 4> out,
                       double scale = 0) {
  constexpr const char* fn = "attention_forward";
  const auto sz = detail::check_attention<T>(fn, q, k, v, out, "out", false);
  const index_t B = sz.B, Tn = sz.T, H = sz.H, Dk = sz.Dk, Dv = sz.Dv, group = sz.group;
  const bool save = probs.data != nullptr;
  if (save) expect_view(probs, fn, "probs", {B, H, Tn, Tn});
  const T s = detail::softmax_scale<T>(scale, Dk);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, Tn * Tn * (Dk + Dv)));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> scratch(save ? 0 : Tn);
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      for (index_t t = 0; t < Tn; ++t) {
        const index_t n = causal ? t + 1 : Tn;
        T* p = save ? probs.row(b, h, t) : scratch.data();
        detail::attend_row(q.row(b, t, h), k.row(b, 0, g), k.stride[1], v.row(b, 0, g), v.stride[1], n, Dk, Dv, s, p,
                           out.row(b, t, h));
        if (save) std::fill(p + n, p + Tn, T(0));
      }
    }
  });
}

/// Backward. Overwrites dq, dk and dv (activation gradients).
///   q [B, T, H, Dk]; k [B, T, Hkv, Dk]; v [B, T, Hkv, Dv]; probs [B, H, T, T] from attention_forward
///   on the same inputs (its zeros carry the causal mask, and any other mask: a key whose
///   probability is 0 gets no gradient from that row); dout [B, T, H, Dv]; dq [B, T, H, Dk];
///   dk [B, T, Hkv, Dk]; dv [B, T, Hkv, Dv]. scale as in the forward.
template <class T>
void attention_backward(View<const std::type_identity_t<T>, 4> q, View<const std::type_identity_t<T>, 4> k,
                        View<const std::type_identity_t<T>, 4> v, View<const std::type_identity_t<T>, 4> probs,
                        View<const std::type_identity_t<T>, 4> dout, View<T, 4> dq, View<T, 4> dk, View<T, 4> dv,
                        double scale = 0) {
  constexpr const char* fn = "attention_backward";
  const auto sz = detail::check_attention<T>(fn, q, k, v, dout, "dout", false);
  const index_t B = sz.B, Tn = sz.T, H = sz.H, Hkv = sz.Hkv, Dk = sz.Dk, Dv = sz.Dv, group = sz.group;
  expect_view(probs, fn, "probs", {B, H, Tn, Tn});
  expect_view(dq, fn, "dq", {B, Tn, H, Dk});
  expect_view(dk, fn, "dk", {B, Tn, Hkv, Dk});
  expect_view(dv, fn, "dv", {B, Tn, Hkv, Dv});
  const T s = detail::softmax_scale<T>(scale, Dk);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, group * Tn * Tn * (Dk + Dv)));
  parallel_for(B * Hkv, grain, [&](index_t i0, index_t i1) {
    std::vector<T> dsm(Tn * Tn);   // [T, T] dS of one (batch, query head), scale included
    std::vector<index_t> first(Tn);  // first[u]: the first query row whose probabilities reach key u
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / Hkv, g = i % Hkv;
      for (index_t u = 0; u < Tn; ++u) {
        std::fill(dk.row(b, u, g), dk.row(b, u, g) + Dk, T(0));
        std::fill(dv.row(b, u, g), dv.row(b, u, g) + Dv, T(0));
      }
      for (index_t h = g * group; h < (g + 1) * group; ++h) {
        // Rows: dP[t, u] = dout_t . v_u, dS[t, u] = P[t, u] (dP[t, u] - sum_u' P[t, u'] dP[t, u']) * scale,
        // dq_t = sum_u dS[t, u] k_u. Keys past the last non-zero probability of a row (the causal
        // mask) are skipped; zeros inside the run contribute exact zeros.
        index_t reach = 0, next = 0;
        for (index_t t = 0; t < Tn; ++t) {
          const T* p = probs.row(b, h, t);
          index_t n = Tn;  // one past the last non-zero probability: zeros are skipped 8 at a time
          for (bool zero = true; zero && n >= 8; n -= zero ? 8 : 0)
            for (int j = 1; j <= 8; ++j) zero &= p[n - j] == T(0);
          while (n > 0 && p[n - 1] == T(0)) --n;
          T* ds = dsm.data() + t * Tn;
          detail::row_dots(dout.row(b, t, h), v.row(b, 0, g), v.stride[1], n, Dv, T(1), ds);
          const T pdp = detail::row_dot(p, static_cast<const T*>(ds), n);
          for (index_t u = 0; u < n; ++u) ds[u] = p[u] * (ds[u] - pdp) * s;
          std::fill(ds + n, ds + Tn, T(0));
          T* gq = dq.row(b, t, h);
          std::fill(gq, gq + Dk, T(0));
          detail::add_weighted_rows(static_cast<const T*>(ds), index_t{1}, k.row(b, 0, g), k.stride[1], n, Dk, gq);
          for (reach = std::max(reach, n); next < reach; ++next) first[next] = t;
        }
        for (; next < Tn; ++next) first[next] = Tn;
        // Columns: dk_u += sum_t dS[t, u] q_t, dv_u += sum_t P[t, u] dout_t over the rows t >= first[u].
        for (index_t u = 0; u < Tn; ++u) {
          const index_t f = first[u];
          if (f == Tn) continue;
          detail::add_weighted_rows(static_cast<const T*>(dsm.data() + f * Tn + u), Tn, q.row(b, f, h), q.stride[1],
                                    Tn - f, Dk, dk.row(b, u, g));
          detail::add_weighted_rows(probs.row(b, h, f) + u, probs.stride[2], dout.row(b, f, h), dout.stride[1], Tn - f,
                                    Dv, dv.row(b, u, g));
        }
      }
    }
  });
}

/// One decoding step against a KV cache: the new token's query attends to positions [0, len).
///   q [B, H, Dk]; k_cache [B, S, Hkv, Dk], v_cache [B, S, Hkv, Dv] holding positions 0..len-1
///   (1 <= len <= S); out [B, H, Dv] written. scale as in the forward (MLA's absorbed decode
///   passes the scale of its expanded form). Equal, bit for bit, to row len-1 of the causal
///   attention_forward. v_cache may alias the first Dv columns of k_cache (MLA's latent).
template <class T>
void attention_decode(View<const std::type_identity_t<T>, 3> q, View<const std::type_identity_t<T>, 4> k_cache,
                      View<const std::type_identity_t<T>, 4> v_cache, index_t len, View<T, 3> out, double scale = 0) {
  constexpr const char* fn = "attention_decode";
  const auto sz = detail::check_decode<T>(fn, q, k_cache, v_cache, out, "k_cache", "v_cache", false);
  const index_t B = sz.B, H = sz.H, S = sz.S, Dk = sz.Dk, Dv = sz.Dv, group = sz.group;
  REASON_CHECK(len >= 1 && len <= S, fn, ": len ", len, " is out of range [1, ", S, "] of the cache (k_cache shape ",
               shape_string(k_cache.shape), ")");
  const T s = detail::softmax_scale<T>(scale, Dk);
  const index_t grain = std::max<index_t>(1, 32768 / std::max<index_t>(1, len * (Dk + Dv)));
  parallel_for(B * H, grain, [&](index_t i0, index_t i1) {
    std::vector<T> p(len);
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / group;
      detail::attend_row(q.row(b, h), k_cache.row(b, 0, g), k_cache.stride[1], v_cache.row(b, 0, g),
                         v_cache.stride[1], len, Dk, Dv, s, p.data(), out.row(b, h));
    }
  });
}

}  // namespace reason::kernels
