// The flash attention kernels (kernels/attention.cuh) against the host kernels
// (kernels/attention.hpp) computed in double on the same inputs rounded to the storage type.
//
// Cases: fp32, bf16 and fp16 storage; D 32, 64, 128; causal and not; MHA (H 4 = Hkv) and GQA (H 8,
// Hkv 2); T 1, 37, 200 (not multiples of any tile) and 513, 64, 128 for some; B 2; q, k, v and
// dq, dk, dv as strided column blocks of one fused [B, T, H + 2 Hkv + 1, D] buffer whose last head
// is padding the kernels must not touch (out has a padding head too); a 16-bit buffer offset by one
// element (not 16-byte aligned: the SIMT fallback); the decode step for len 1, 100, 1000 against
// kernels::attention_decode; bitwise-identical repeats of forward, backward and decode; and the
// argument errors (checked before the GPU test, so they run on any machine). The "uniform" cases
// (q = 0, one-hot v) make the forward's arithmetic exact, so out and lse are checked to a rounding
// or two: a wrongly masked key on any row (the causal diagonal, the end of the sequence inside a
// tile) is caught there even where the general bound below would absorb it on a long row.
//
// Error bounds (u = 2^-24, the fp32 unit roundoff; r = 2^-8 for bf16, 2^-11 for fp16, the 16-bit
// type's; all in natural-log units).
// Scores: each s_tu = q_t . k_u / sqrt(D) is an fp32 dot product of exactly representable
// products (bf16 and fp16 products are exact in fp32), so |ds_tu| <= gs a_tu with
// a_tu = sum_d |q k| / sqrt(D) and gs = 2 (D + 16) u (a sequential sum has D u; twice that covers
// the tensor cores' blocked accumulation and truncation). Each probability
// p_u = 2^(s_u log2(e)/sqrt(D) - m) is then relatively off by
//     delta_u = gs a_u + 8 u (|s_u| + |s_max| + 1)
// (rounding of the log2-scaled score, the running max and the fp32 argument; exp2 within 2 ulp);
// the running max itself cancels between numerator and denominator. Sums of n terms in fp32
// (O, l, dV, dK, dQ accumulations, the per-tile rescaling) add ga = (n + 32) u relative to the sum
// of the absolute terms. Writing rp = r on the tensor-core path (P and dS rounded to the 16-bit type
// as the A operand), 0 otherwise, and ro = r for 16-bit storage (the final rounding of each output);
// fp16 also rounds values below its smallest normal 2^-14 absolutely, by up to pa = 2^-25 (P and dS
// on the tensor-core path) and oa = 2^-25 (outputs); both are 0 for bf16 and fp32:
//   out_td : S1 (2 max_u delta_u + rp + 2 ga) + pa S0 / l + ro |out| + oa,   S1 = sum_u p_u |v_ud|,
//            S0 = sum_u |v_ud|, l = exp(lse_t - max_u s_tu) >= 1 (P is rounded relative to the row max);
//   lse_t  : max_u delta_u + ga + 8 u (|lse| + |s_max| + 1 + log n);
//   backward, per visible (t, u): P recomputed from the device's lse is off by
//            dP_tu = gs a_tu + L_t + 8 u (|s_tu| + |lse_t| + 1)   (L_t the lse bound above);
//            dp_tu = dout_t . v_u is off by gs sum_d |dout v|; delta_t = dout_t . out'_t (out' the
//            device's out, as a training step passes it) by sum_d |dout_td| |out'_td - out_td|
//            + gs sum_d |dout out|;
//            ds_tu = p (dp - delta) by w_tu = p (e_dp + e_delta) + |ds| dP + 3 u p (|dp| + |delta|),
//            and by w_tu (1 + rp) + rp |ds| + pa once rounded for the tensor cores; then
//   dv_ud  : sum_t [p (dP + rp) + pa + ga p] |dout_td| + ro |dv| + oa;
//   dk_ud  : scale sum_t [w' + ga |ds|] |q_td| + ro |dk| + oa;     dq_td likewise with |k_ud|;
// sums over t run over the kv head's group of query heads for dk, dv. Every bound is then
// multiplied by 1.25. These are worst-case bounds: the measured errors (printed as the largest
// error / bound, and the largest error relative to the tensor's largest reference value) are far
// below them. A wrong key, a wrong mask or a wrong fragment index is an O(p |v|) error on some
// element, not a rounding, and does not fit.
// Exit status: 0 pass, 1 a check failed, 77 no GPU (CTest: skipped), 2 an unexpected error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/attention.cuh"
#include "reason/kernels/attention.hpp"

namespace dev = reason::gpu;
namespace host = reason::kernels;
using reason::index_t;
using reason::Philox;
using reason::View;
using bf = __nv_bfloat16;
using f16 = __half;

namespace {

int failures = 0;
constexpr double u32 = 0x1p-24;  // fp32 unit roundoff
constexpr double kSafety = 1.25;

template <class T>
const char* type_name() {
  return reason::test::storage_name<T>();
}
/// The rounding of T: relative (half an ulp: bf16 2^-8, fp16 2^-11, fp32 0 — its values are the
/// fp32 results) and absolute below fp16's smallest normal (2^-25; 0 otherwise).
template <class T>
constexpr double round_rel = reason::test::StorageRounding<T>::rel;
template <class T>
constexpr double round_abs = reason::test::StorageRounding<T>::abs;

using reason::test::from_float;
using reason::test::to_float;
template <class T>
std::uint32_t bits_of(T x) {
  std::uint32_t b = 0;
  std::memcpy(&b, &x, sizeof x);
  return b;
}
template <class T>
bool same_bits(T a, T b) {
  return bits_of(a) == bits_of(b);
}
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

template <class T>
struct Dev {
  dev::DeviceBuffer<T> buf;
  explicit Dev(const std::vector<T>& h) : buf(h.size()) { buf.copy_from(h); }
  [[nodiscard]] std::vector<T> get() const {
    std::vector<T> h(buf.size());
    buf.copy_to(h);
    return h;
  }
  T* p() { return buf.data(); }
};

/// One printed line per tensor: the worst error / bound, the worst error relative to the
/// tensor's largest reference magnitude, how many elements exceed their bound, extra failures.
struct Report {
  std::string what;
  double worst = 0, worst_abs = 0, scale = 0;
  std::size_t over = 0, count = 0;
  std::string extra;

  explicit Report(std::string w) : what(std::move(w)) {}
  void add(double got, double ref, double bound) {
    ++count;
    const double err = std::abs(got - ref);
    scale = std::max(scale, std::abs(ref));
    if (!(err <= bound)) {  // NaN fails too
      ++over;
      worst = std::max(worst, std::isfinite(err) ? err / std::max(bound, 1e-300) : 1e300);
    } else if (bound > 0) {
      worst = std::max(worst, err / bound);
    }
    worst_abs = std::max(worst_abs, std::isfinite(err) ? err : 1e300);
  }
  void require(bool ok, const std::string& why) {
    if (!ok && extra.find(why) == std::string::npos) extra += (extra.empty() ? "" : "; ") + why;
  }
  void finish() {
    const bool ok = over == 0 && extra.empty();
    if (!ok) ++failures;
    std::printf("%s %s: error/bound %.3f, max error %.3g (%.2e of max |ref| %.3g), over %zu of %zu%s%s\n",
                ok ? "ok  " : "FAIL", what.c_str(), worst, worst_abs, scale > 0 ? worst_abs / scale : 0.0, scale, over,
                count, extra.empty() ? "" : ", ", extra.c_str());
  }
};

std::string label(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

template <class T, int R>
View<T, R> view(T* p, typename View<T, R>::shape_type shape, typename View<T, R>::shape_type stride) {
  return View<T, R>(p, shape, stride);
}

std::vector<float> uniform(Philox& rng, std::size_t count, float lo, float hi) {
  std::vector<float> v(count);
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

struct Case {
  index_t B, T, H, Hkv, D;
  bool causal;
  index_t offset;        // elements before the fused buffers' first element (1: not 16-byte aligned)
  bool uniform = false;  // q = 0 and one-hot v (v_u = e_(u mod D)): exact arithmetic, see attention_case
};

/// The double reference and the per-element error bounds of one case.
struct Reference {
  std::vector<double> out, lse, dq, dk, dv;            // [B,T,H,D], [B,H,T], [B,T,H,D], [B,T,Hkv,D] x 2
  std::vector<double> b_out, b_lse, b_dq, b_dk, b_dv;  // bounds, same layouts
};

/// Roundings (see the header): rp, pa of P and dS on the tensor-core path (relative, absolute),
/// ro, oa of the stored outputs.
struct Roundings {
  double rp = 0, pa = 0, ro = 0, oa = 0;
};

/// Host arrays: q [B,T,H,D], k, v [B,T,Hkv,D], dout [B,T,H,D] (contiguous, double, the stored values).
Reference reference(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>& dout, const std::vector<double>& out_dev,
                    const Roundings& rd) {
  const double rp = rd.rp, pa = rd.pa, ro = rd.ro, oa = rd.oa;
  const index_t B = c.B, Tn = c.T, H = c.H, Hkv = c.Hkv, D = c.D, G = H / Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const double gs = 2.0 * static_cast<double>(D + 16) * u32;
  Reference r;
  const auto nq = static_cast<std::size_t>(B * Tn * H * D), nk = static_cast<std::size_t>(B * Tn * Hkv * D);
  r.out.assign(nq, 0);
  r.dq.assign(nq, 0);
  r.dk.assign(nk, 0);
  r.dv.assign(nk, 0);
  r.lse.assign(static_cast<std::size_t>(B * H * Tn), 0);
  r.b_out = r.out;
  r.b_dq = r.dq;
  r.b_lse = r.lse;
  r.b_dk.assign(nk, 0);
  r.b_dv.assign(nk, 0);
  std::vector<double> probs(static_cast<std::size_t>(B * H * Tn * Tn));
  const auto cq = [&](const std::vector<double>& x, index_t heads) {
    return View<const double, 4>(x.data(), {B, Tn, heads, D});
  };
  host::attention_forward<double>(cq(q, H), cq(k, Hkv), cq(v, Hkv), c.causal,
                                  View<double, 4>(probs.data(), {B, H, Tn, Tn}),
                                  View<double, 4>(r.out.data(), {B, Tn, H, D}));
  host::attention_backward<double>(
      cq(q, H), cq(k, Hkv), cq(v, Hkv), View<const double, 4>(probs.data(), {B, H, Tn, Tn}), cq(dout, H),
      View<double, 4>(r.dq.data(), {B, Tn, H, D}), View<double, 4>(r.dk.data(), {B, Tn, Hkv, D}),
      View<double, 4>(r.dv.data(), {B, Tn, Hkv, D}));

  const auto qi = [&](index_t b, index_t t, index_t h, index_t d) {
    return static_cast<std::size_t>(((b * Tn + t) * H + h) * D + d);
  };
  const auto ki = [&](index_t b, index_t t, index_t g, index_t d) {
    return static_cast<std::size_t>(((b * Tn + t) * Hkv + g) * D + d);
  };
  // Per (b, h): partial dk / dv bounds [T, D], summed over the group afterwards in a fixed order.
  std::vector<double> pk(static_cast<std::size_t>(B * H * Tn * D), 0), pv(pk.size(), 0);
  reason::parallel_for(B * H, 1, [&](index_t i0, index_t i1) {
    std::vector<double> s(Tn * Tn), a(Tn * Tn), p(Tn * Tn), w(Tn * Tn), ads(Tn * Tn), pd(Tn * Tn);
    for (index_t i = i0; i < i1; ++i) {
      const index_t b = i / H, h = i % H, g = h / G;
      const double ga = (static_cast<double>(Tn) + 32) * u32;
      const double gag = (static_cast<double>(G * Tn) + 32) * u32;
      std::vector<double> lam(Tn), del(Tn), edel(Tn);
      for (index_t t = 0; t < Tn; ++t) {
        const index_t n = c.causal ? t + 1 : Tn;
        double mx = -INFINITY;
        for (index_t uu = 0; uu < n; ++uu) {
          double dot = 0, ab = 0;
          for (index_t d = 0; d < D; ++d) {
            dot += q[qi(b, t, h, d)] * k[ki(b, uu, g, d)];
            ab += std::abs(q[qi(b, t, h, d)] * k[ki(b, uu, g, d)]);
          }
          s[t * Tn + uu] = dot * scale;
          a[t * Tn + uu] = ab * scale;
          mx = std::max(mx, dot * scale);
        }
        double sum = 0;
        for (index_t uu = 0; uu < n; ++uu) sum += std::exp(s[t * Tn + uu] - mx);
        const double lse = mx + std::log(sum);
        double dmax = 0;
        for (index_t uu = 0; uu < n; ++uu) {
          p[t * Tn + uu] = std::exp(s[t * Tn + uu] - lse);
          dmax = std::max(dmax, gs * a[t * Tn + uu] + 8 * u32 * (std::abs(s[t * Tn + uu]) + std::abs(mx) + 1));
        }
        r.lse[(b * H + h) * Tn + t] = lse;
        lam[t] = kSafety * (dmax + ga + 8 * u32 * (std::abs(lse) + std::abs(mx) + 1 + std::log(n + 1.0)));
        r.b_lse[(b * H + h) * Tn + t] = lam[t];
        // out bounds, then delta (exact) and its error from the device's out.
        double dl = 0, ed = 0;
        for (index_t d = 0; d < D; ++d) {
          double s1 = 0, s0 = 0;
          for (index_t uu = 0; uu < n; ++uu) {
            s1 += p[t * Tn + uu] * std::abs(v[ki(b, uu, g, d)]);
            s0 += std::abs(v[ki(b, uu, g, d)]);
          }
          const std::size_t e = qi(b, t, h, d);
          const double b0 = kSafety * (s1 * (2 * dmax + rp + 2 * ga) + pa * std::exp(mx - lse) * s0);
          r.b_out[e] = b0 + ro * (std::abs(r.out[e]) + b0) + oa + 1e-30;
          dl += dout[e] * r.out[e];
          ed += std::abs(dout[e]) * std::abs(out_dev[e] - r.out[e]) + gs * std::abs(dout[e] * r.out[e]);
        }
        del[t] = dl;
        edel[t] = ed;
        for (index_t uu = 0; uu < n; ++uu) {
          double dp = 0, adp = 0;
          for (index_t d = 0; d < D; ++d) {
            dp += dout[qi(b, t, h, d)] * v[ki(b, uu, g, d)];
            adp += std::abs(dout[qi(b, t, h, d)] * v[ki(b, uu, g, d)]);
          }
          const double pp = p[t * Tn + uu], ds = pp * (dp - dl);
          const double dP = gs * a[t * Tn + uu] + lam[t] + 8 * u32 * (std::abs(s[t * Tn + uu]) + std::abs(lse) + 1);
          const double wds = pp * (gs * adp + ed) + std::abs(ds) * dP + 3 * u32 * pp * (std::abs(dp) + std::abs(dl));
          w[t * Tn + uu] = wds * (1 + rp) + rp * std::abs(ds) + pa + gag * std::abs(ds);
          ads[t * Tn + uu] = std::abs(ds);
          pd[t * Tn + uu] = pp * (dP + rp) * 1.01 + pa + gag * pp;
        }
      }
      // dq_td, and the partial dk_u, dv_u of this head.
      for (index_t t = 0; t < Tn; ++t) {
        const index_t n = c.causal ? t + 1 : Tn;
        for (index_t d = 0; d < D; ++d) {
          double bq = 0;
          for (index_t uu = 0; uu < n; ++uu) bq += w[t * Tn + uu] * std::abs(k[ki(b, uu, g, d)]);
          const std::size_t e = qi(b, t, h, d);
          const double b0 = kSafety * scale * bq;
          r.b_dq[e] = b0 + ro * (std::abs(r.dq[e]) + b0) + oa + 1e-30;
        }
      }
      for (index_t uu = 0; uu < Tn; ++uu)
        for (index_t d = 0; d < D; ++d) {
          double bk = 0, bv = 0;
          for (index_t t = c.causal ? uu : 0; t < Tn; ++t) {
            bk += w[t * Tn + uu] * std::abs(q[qi(b, t, h, d)]);
            bv += pd[t * Tn + uu] * std::abs(dout[qi(b, t, h, d)]);
          }
          pk[static_cast<std::size_t>(((b * H + h) * Tn + uu) * D + d)] = scale * bk;
          pv[static_cast<std::size_t>(((b * H + h) * Tn + uu) * D + d)] = bv;
        }
    }
  });
  for (index_t b = 0; b < B; ++b)
    for (index_t g = 0; g < Hkv; ++g)
      for (index_t uu = 0; uu < Tn; ++uu)
        for (index_t d = 0; d < D; ++d) {
          double bk = 0, bv = 0;
          for (index_t h = g * G; h < (g + 1) * G; ++h) {
            bk += pk[static_cast<std::size_t>(((b * H + h) * Tn + uu) * D + d)];
            bv += pv[static_cast<std::size_t>(((b * H + h) * Tn + uu) * D + d)];
          }
          const std::size_t e = ki(b, uu, g, d);
          const double k0 = kSafety * bk, v0 = kSafety * bv;
          r.b_dk[e] = k0 + (ro + u32) * (std::abs(r.dk[e]) + k0) + oa + 1e-30;
          r.b_dv[e] = v0 + ro * (std::abs(r.dv[e]) + v0) + oa + 1e-30;
        }
  return r;
}

template <class T>
void attention_case(dev::Stream& st, dev::FlashAttentionWorkspace& ws, const Case& c, std::uint64_t seed) {
  const index_t B = c.B, Tn = c.T, H = c.H, Hkv = c.Hkv, D = c.D, W = H + 2 * Hkv + 1, off = c.offset;
  Philox rng(seed, 21);
  const std::size_t fused = static_cast<std::size_t>(B * Tn * W * D);
  // Inputs as stored (T) and as the reference sees them (double), in the fused layout.
  std::vector<T> qkv(fused + off);
  auto raw = uniform(rng, fused + off, -1.0f, 1.0f);
  const auto fi = [&](index_t b, index_t t, index_t head, index_t d) {
    return static_cast<std::size_t>(off + ((b * Tn + t) * W + head) * D + d);
  };
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (index_t d = 0; d < D; ++d) {
        for (index_t h = 0; h < H; ++h)  // some peaky rows
          raw[fi(b, t, h, d)] *= c.uniform ? 0.0f : (t % 5 == 0 ? 18.0f : 3.0f);
        if (c.uniform)
          for (index_t g = 0; g < Hkv; ++g) raw[fi(b, t, H + Hkv + g, d)] = d == t % D ? 1.0f : 0.0f;
      }
  for (std::size_t i = 0; i < raw.size(); ++i) qkv[i] = from_float<T>(raw[i]);
  std::vector<double> q(static_cast<std::size_t>(B * Tn * H * D)), k(static_cast<std::size_t>(B * Tn * Hkv * D)),
      v(k.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (index_t d = 0; d < D; ++d) {
        for (index_t h = 0; h < H; ++h) q[((b * Tn + t) * H + h) * D + d] = to_float(qkv[fi(b, t, h, d)]);
        for (index_t g = 0; g < Hkv; ++g) {
          k[((b * Tn + t) * Hkv + g) * D + d] = to_float(qkv[fi(b, t, H + g, d)]);
          v[((b * Tn + t) * Hkv + g) * D + d] = to_float(qkv[fi(b, t, H + Hkv + g, d)]);
        }
      }
  const auto rdo = uniform(rng, q.size() + off, -1.0f, 1.0f);
  std::vector<T> dout_t(rdo.size());
  std::vector<double> dout(q.size());
  for (std::size_t i = 0; i < rdo.size(); ++i) dout_t[i] = from_float<T>(rdo[i]);
  for (std::size_t i = 0; i < q.size(); ++i) dout[i] = to_float(dout_t[i + off]);

  // Device buffers: out [B, T, H + 1, D] (padding head), dqkv like qkv, filled with a sentinel.
  const T sentinel = from_float<T>(-9876.0f);
  const index_t Wo = H + 1;
  Dev<T> dqkv_in(qkv), ddout(dout_t),
      dout_buf(std::vector<T>(static_cast<std::size_t>(B * Tn * Wo * D) + off, sentinel));
  Dev<T> dgrad(std::vector<T>(qkv.size(), sentinel));
  Dev<float> dlse(std::vector<float>(static_cast<std::size_t>(B * H * Tn), -1.0f));
  const index_t s0 = Tn * W * D, s1 = W * D;
  const auto in_view = [&](T* base, index_t head0, index_t heads) {
    return view<T, 4>(base + off + head0 * D, {B, Tn, heads, D}, {s0, s1, D, 1});
  };
  const auto qv = View<const T, 4>(in_view(dqkv_in.p(), 0, H));
  const auto kv = View<const T, 4>(in_view(dqkv_in.p(), H, Hkv));
  const auto vv = View<const T, 4>(in_view(dqkv_in.p(), H + Hkv, Hkv));
  const auto ov = view<T, 4>(dout_buf.p() + off, {B, Tn, H, D}, {Tn * Wo * D, Wo * D, D, 1});
  const auto dov = view<const T, 4>(ddout.p() + off, {B, Tn, H, D}, {Tn * H * D, H * D, D, 1});
  const auto lv = view<float, 3>(dlse.p(), {B, H, Tn}, {H * Tn, Tn, 1});

  dev::flash_attention_forward<T>(qv, kv, vv, c.causal, ov, lv, st.get());
  st.synchronize();
  const auto out1 = dout_buf.get();
  const auto lse1 = dlse.get();
  dev::flash_attention_forward<T>(qv, kv, vv, c.causal, ov, lv, st.get());  // again: the same bits
  st.synchronize();
  const bool fwd_repeat = same_bits(out1, dout_buf.get()) && same_bits(lse1, dlse.get());

  const auto run_backward = [&] {
    dev::flash_attention_backward<T>(ws, qv, kv, vv, View<const T, 4>(ov), View<const float, 3>(lv), dov, c.causal,
                                     in_view(dgrad.p(), 0, H), in_view(dgrad.p(), H, Hkv),
                                     in_view(dgrad.p(), H + Hkv, Hkv), st.get());
    st.synchronize();
    return dgrad.get();
  };
  const auto grad1 = run_backward();
  const bool bwd_repeat = same_bits(grad1, run_backward());

  const bool tensor_cores = off % 8 == 0 && !std::is_same_v<T, float>;  // aligned 16-bit: the mma kernels
  const Roundings rd{tensor_cores ? round_rel<T> : 0.0, tensor_cores ? round_abs<T> : 0.0, round_rel<T>, round_abs<T>};
  std::vector<double> out_dev(q.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d)
          out_dev[((b * Tn + t) * H + h) * D + d] = to_float(out1[off + ((b * Tn + t) * Wo + h) * D + d]);
  const Reference r = reference(c, q, k, v, dout, out_dev, rd);

  const std::string name =
      label("%s D %lld T %lld H %lld Hkv %lld %s%s%s", type_name<T>(), static_cast<long long>(D),
            static_cast<long long>(Tn), static_cast<long long>(H), static_cast<long long>(Hkv),
            c.causal ? "causal" : "full", off ? " (unaligned: SIMT)" : "", c.uniform ? " uniform" : "");
  Report ro_(name + " out");
  Report rl(name + " lse");
  Report rq(name + " dq"), rk(name + " dk"), rv(name + " dv");
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t) {
      for (index_t h = 0; h < Wo; ++h)
        for (index_t d = 0; d < D; ++d) {
          const T got = out1[off + ((b * Tn + t) * Wo + h) * D + d];
          if (h == H) {
            ro_.require(same_bits(got, sentinel), "out padding written");
            continue;
          }
          const std::size_t e = ((b * Tn + t) * H + h) * D + d;
          ro_.add(to_float(got), r.out[e], r.b_out[e]);
        }
      for (index_t head = 0; head < W; ++head)
        for (index_t d = 0; d < D; ++d) {
          const T got = grad1[fi(b, t, head, d)];
          if (head < H) {
            const std::size_t e = ((b * Tn + t) * H + head) * D + d;
            rq.add(to_float(got), r.dq[e], r.b_dq[e]);
          } else if (head < H + Hkv) {
            const std::size_t e = ((b * Tn + t) * Hkv + head - H) * D + d;
            rk.add(to_float(got), r.dk[e], r.b_dk[e]);
          } else if (head < H + 2 * Hkv) {
            const std::size_t e = ((b * Tn + t) * Hkv + head - H - Hkv) * D + d;
            rv.add(to_float(got), r.dv[e], r.b_dv[e]);
          } else {
            rq.require(same_bits(got, sentinel), "dqkv padding written");
          }
        }
    }
  for (std::size_t i = 0; i < lse1.size(); ++i) rl.add(lse1[i], r.lse[i], r.b_lse[i]);
  for (index_t i = 0; i < off; ++i) {
    ro_.require(same_bits(out1[i], sentinel), "out written before its start");
    rq.require(same_bits(grad1[i], sentinel), "dqkv written before its start");
  }
  if (c.uniform) {
    // q = 0: every visible score is exactly 0, every p exactly 1 (also as bf16 / fp16), l the exact
    // count of visible keys and O the exact count of visible keys u with u mod D = d, so out = O / l has
    // one fp32 rounding (two with the reciprocal) and a 16-bit type one more; lse = ln(n) within a few
    // ulps. The bounds allow 8 u (in case the exp2 of 0 were not exactly 1); a key masked wrongly — one too
    // many or too few on any row — changes O or l by 1, a relative change of at least 1 / T.
    Report ex(name + " out and lse exact");
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tn; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d) {
            const double ref = r.out[((b * Tn + t) * H + h) * D + d];
            ex.add(to_float(out1[off + ((b * Tn + t) * Wo + h) * D + d]), ref,
                   (rd.ro + 8 * u32) * std::abs(ref) + rd.oa);
          }
    for (std::size_t i = 0; i < lse1.size(); ++i) ex.add(lse1[i], r.lse[i], 4 * u32 * std::abs(r.lse[i]) + 8 * u32);
    ex.finish();
  }
  ro_.require(fwd_repeat, "a second forward differs (not deterministic)");
  rq.require(bwd_repeat, "a second backward differs (not deterministic)");
  ro_.finish();
  rl.finish();
  rq.finish();
  rk.finish();
  rv.finish();
}

// ---------------------------------------------------------------------------------------------
// Decode

template <class T>
void decode_case(dev::Stream& st, index_t B, index_t H, index_t Hkv, index_t D, index_t S, index_t len, index_t offset,
                 std::uint64_t seed) {
  Philox rng(seed, 22);
  const std::size_t nq = static_cast<std::size_t>(B * H * D), nc = static_cast<std::size_t>(B * S * Hkv * D);
  auto rq = uniform(rng, nq + offset, -6.0f, 6.0f);
  auto rk = uniform(rng, nc + offset, -1.0f, 1.0f);
  auto rv = uniform(rng, nc + offset, -1.0f, 1.0f);
  std::vector<T> qt(rq.size()), kt(rk.size()), vt(rv.size());
  for (std::size_t i = 0; i < rq.size(); ++i) qt[i] = from_float<T>(rq[i]);
  for (std::size_t i = 0; i < rk.size(); ++i) {
    kt[i] = from_float<T>(rk[i]);
    vt[i] = from_float<T>(rv[i]);
  }
  std::vector<double> q(nq), k(nc), v(nc), out(nq);
  for (std::size_t i = 0; i < nq; ++i) q[i] = to_float(qt[i + offset]);
  for (std::size_t i = 0; i < nc; ++i) {
    k[i] = to_float(kt[i + offset]);
    v[i] = to_float(vt[i + offset]);
  }
  host::attention_decode<double>(
      View<const double, 3>(q.data(), {B, H, D}), View<const double, 4>(k.data(), {B, S, Hkv, D}),
      View<const double, 4>(v.data(), {B, S, Hkv, D}), len, View<double, 3>(out.data(), {B, H, D}));

  const T sentinel = from_float<T>(5555.0f);
  Dev<T> dq(qt), dk(kt), dv(vt), dout(std::vector<T>(nq + offset, sentinel));
  const auto run = [&] {
    dev::attention_decode<T>(
        View<const T, 3>(dq.p() + offset, {B, H, D}), View<const T, 4>(dk.p() + offset, {B, S, Hkv, D}),
        View<const T, 4>(dv.p() + offset, {B, S, Hkv, D}), len, View<T, 3>(dout.p() + offset, {B, H, D}), st.get());
    st.synchronize();
    return dout.get();
  };
  const auto got = run();
  const bool repeat = same_bits(got, run());

  Report rep(label("decode %s D %lld H %lld Hkv %lld len %lld of %lld%s", type_name<T>(), static_cast<long long>(D),
                   static_cast<long long>(H), static_cast<long long>(Hkv), static_cast<long long>(len),
                   static_cast<long long>(S), offset ? " (unaligned)" : ""));
  const index_t G = H / Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D)), gs = 2.0 * static_cast<double>(D + 16) * u32;
  const double ga = (static_cast<double>(len) + 32) * u32, ro = round_rel<T>, oa = round_abs<T>;
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h) {
      const index_t g = h / G;
      std::vector<double> s(len);
      double mx = -INFINITY, dmax = 0;
      for (index_t uu = 0; uu < len; ++uu) {
        double dot = 0, ab = 0;
        for (index_t d = 0; d < D; ++d) {
          dot += q[(b * H + h) * D + d] * k[((b * S + uu) * Hkv + g) * D + d];
          ab += std::abs(q[(b * H + h) * D + d] * k[((b * S + uu) * Hkv + g) * D + d]);
        }
        s[uu] = dot * scale;
        mx = std::max(mx, s[uu]);
        dmax = std::max(dmax, gs * ab * scale + 8 * u32 * std::abs(dot * scale));
      }
      double sum = 0;
      for (index_t uu = 0; uu < len; ++uu) sum += std::exp(s[uu] - mx);
      dmax += 8 * u32 * (std::abs(mx) + 1);
      for (index_t d = 0; d < D; ++d) {
        double s1 = 0;
        for (index_t uu = 0; uu < len; ++uu)
          s1 += std::exp(s[uu] - mx) / sum * std::abs(v[((b * S + uu) * Hkv + g) * D + d]);
        const std::size_t e = static_cast<std::size_t>((b * H + h) * D + d);
        const double b0 = kSafety * s1 * (2 * dmax + 2 * ga);
        rep.add(to_float(got[e + offset]), out[e], b0 + ro * (std::abs(out[e]) + b0) + oa + 1e-30);
      }
    }
  for (index_t i = 0; i < offset; ++i) rep.require(same_bits(got[i], sentinel), "out written before its start");
  rep.require(repeat, "a second decode differs (not deterministic)");
  rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Timing (informational): bf16 and fp16, the forward's and backward's FLOP rates.

template <class T>
void timing(dev::Stream& st, index_t B, index_t Tn, index_t H, index_t D, bool causal) {
  const index_t W = 3 * H;
  const std::size_t n = static_cast<std::size_t>(B * Tn * W * D);
  std::vector<T> h(n);  // a cheap hash in [-1, 1): these inputs only need to be finite
  for (std::size_t i = 0; i < n; ++i)
    h[i] = from_float<T>(static_cast<float>((static_cast<std::uint32_t>(i) * 2654435761u) >> 8) * 0x1p-23f - 1.0f);
  Dev<T> qkv(h), grad(h), out(std::vector<T>(static_cast<std::size_t>(B * Tn * H * D))),
      dout(std::vector<T>(out.buf.size()));
  dev::DeviceBuffer<float> lse(static_cast<std::size_t>(B * H * Tn));
  dev::FlashAttentionWorkspace ws;
  const index_t s0 = Tn * W * D, s1 = W * D;
  const auto qv = view<const T, 4>(qkv.p(), {B, Tn, H, D}, {s0, s1, D, 1});
  const auto kv = view<const T, 4>(qkv.p() + H * D, {B, Tn, H, D}, {s0, s1, D, 1});
  const auto vv = view<const T, 4>(qkv.p() + 2 * H * D, {B, Tn, H, D}, {s0, s1, D, 1});
  const auto ov = View<T, 4>(out.p(), {B, Tn, H, D});
  const auto lv = View<float, 3>(lse.data(), {B, H, Tn});
  const auto fwd = [&] { dev::flash_attention_forward<T>(qv, kv, vv, causal, ov, lv, st.get()); };
  const auto bwd = [&] {
    dev::flash_attention_backward<T>(ws, qv, kv, vv, View<const T, 4>(ov), View<const float, 3>(lv),
                                      View<const T, 4>(dout.p(), {B, Tn, H, D}), causal,
                                      view<T, 4>(grad.p(), {B, Tn, H, D}, {s0, s1, D, 1}),
                                      view<T, 4>(grad.p() + H * D, {B, Tn, H, D}, {s0, s1, D, 1}),
                                      view<T, 4>(grad.p() + 2 * H * D, {B, Tn, H, D}, {s0, s1, D, 1}), st.get());
  };
  const double flops = 4.0 * static_cast<double>(B * H) * static_cast<double>(Tn) * static_cast<double>(Tn) *
                       static_cast<double>(D) * (causal ? 0.5 : 1.0);
  const auto time = [&](auto&& f) {
    for (int i = 0; i < 2; ++i) f();
    dev::Event a, z;
    a.record(st.get());
    constexpr int reps = 10;
    for (int i = 0; i < reps; ++i) f();
    z.record(st.get());
    return static_cast<double>(z.elapsed_ms_since(a)) / reps;
  };
  const double tf = time(fwd), tb = time(bwd);
  std::printf(
      "timing %s B %lld T %lld H %lld D %lld %s: forward %.3f ms (%.0f TFLOP/s), backward %.3f ms (%.0f TFLOP/s "
      "counting 2.5x the forward's FLOPs)\n",
      type_name<T>(), static_cast<long long>(B), static_cast<long long>(Tn), static_cast<long long>(H),
      static_cast<long long>(D), causal ? "causal" : "full", tf, flops / tf * 1e-9, tb, 2.5 * flops / tb * 1e-9);
}

// ---------------------------------------------------------------------------------------------
// Argument errors (no device memory is touched: every check precedes the first CUDA call)

int error_failures = 0;
template <class F>
void expect_error(F&& f, const std::string& needle, const char* what) {
  const std::string wrong = reason::test::error_mismatch(f, needle);
  std::printf("%s error: %s%s%s\n", wrong.empty() ? "ok  " : "FAIL", what, wrong.empty() ? "" : ": ", wrong.c_str());
  error_failures += wrong.empty() ? 0 : 1;
}

void argument_errors() {
  auto* bp = reinterpret_cast<bf*>(std::uintptr_t{4096});
  auto* fp = reinterpret_cast<float*>(std::uintptr_t{8192});
  const auto bv = [&](index_t b, index_t t, index_t h, index_t d) { return View<bf, 4>(bp, {b, t, h, d}); };
  const auto cbv = [&](index_t b, index_t t, index_t h, index_t d) { return View<const bf, 4>(bp, {b, t, h, d}); };
  const auto fv = [&](index_t b, index_t t, index_t h, index_t d) { return View<float, 4>(fp, {b, t, h, d}); };
  const auto cfv = [&](index_t b, index_t t, index_t h, index_t d) { return View<const float, 4>(fp, {b, t, h, d}); };
  const View<float, 3> lse(fp, {2, 8, 4});
  auto* hp = reinterpret_cast<f16*>(std::uintptr_t{4096});
  const auto hv = [&](index_t b, index_t t, index_t h, index_t d) { return View<f16, 4>(hp, {b, t, h, d}); };
  const auto chv = [&](index_t b, index_t t, index_t h, index_t d) { return View<const f16, 4>(hp, {b, t, h, d}); };
  dev::FlashAttentionWorkspace ws;  // empty: nothing is allocated before the checks pass
  expect_error(
      [&] {
        dev::flash_attention_forward<bf>(cbv(2, 4, 2, 80), cbv(2, 4, 2, 80), cbv(2, 4, 2, 80), true, bv(2, 4, 2, 80),
                                         View<float, 3>{}, nullptr);
      },
      "gpu::flash_attention_forward: q has head dimension 80 (shape [2, 4, 2, 80]); supported head dimensions are 32, "
      "64 and 128",
      "forward rejects head dimension 80");
  expect_error(
      [&] {
        dev::flash_attention_forward<f16>(chv(2, 4, 8, 64), chv(2, 4, 3, 64), chv(2, 4, 3, 64), true, hv(2, 4, 8, 64),
                                          View<float, 3>{}, nullptr);
      },
      "gpu::flash_attention_forward: q has 8 heads, which is not a multiple of the 3 kv heads of k",
      "forward (fp16) rejects H % Hkv != 0");
  expect_error(
      [&] {
        dev::flash_attention_forward<bf>(cbv(2, 4, 8, 64), cbv(2, 4, 3, 64), cbv(2, 4, 3, 64), true, bv(2, 4, 8, 64),
                                         View<float, 3>{}, nullptr);
      },
      "gpu::flash_attention_forward: q has 8 heads, which is not a multiple of the 3 kv heads of k",
      "forward rejects H % Hkv != 0");
  expect_error(
      [&] {
        dev::flash_attention_forward<float>(cfv(2, 4, 8, 64), cfv(2, 5, 2, 64), cfv(2, 4, 2, 64), false,
                                            fv(2, 4, 8, 64), View<float, 3>{}, nullptr);
      },
      "gpu::flash_attention_forward: k: shape [2, 5, 2, 64], expected [2, 4, 2, 64]", "forward names a wrong k");
  expect_error(
      [&] {
        dev::flash_attention_forward<bf>(cbv(2, 4, 8, 64), cbv(2, 4, 2, 64), cbv(2, 4, 2, 64), true, bv(2, 4, 8, 32),
                                         View<float, 3>{}, nullptr);
      },
      "gpu::flash_attention_forward: out: shape [2, 4, 8, 32], expected [2, 4, 8, 64]", "forward names a wrong out");
  expect_error(
      [&] {
        const View<const bf, 4> q(bp, {2, 4, 8, 64}, {4096, 1024, 128, 2});
        dev::flash_attention_forward<bf>(q, cbv(2, 4, 2, 64), cbv(2, 4, 2, 64), true, bv(2, 4, 8, 64), View<float, 3>{},
                                         nullptr);
      },
      "gpu::flash_attention_forward: q: innermost stride 2, expected 1", "forward names a strided q");
  expect_error(
      [&] {
        dev::flash_attention_forward<float>(cfv(2, 4, 8, 64), cfv(2, 4, 2, 64), cfv(2, 4, 2, 64), true, fv(2, 4, 8, 64),
                                            View<float, 3>(fp, {2, 8, 5}), nullptr);
      },
      "gpu::flash_attention_forward: lse: shape [2, 8, 5], expected [2, 8, 4]", "forward names a wrong lse");
  expect_error(
      [&] {
        dev::flash_attention_backward<bf>(ws, cbv(2, 4, 8, 64), cbv(2, 4, 2, 64), cbv(2, 4, 2, 64), cbv(2, 4, 8, 64),
                                          lse, cbv(2, 4, 8, 64), true, bv(2, 4, 8, 64), bv(2, 4, 8, 64),
                                          bv(2, 4, 2, 64), nullptr);
      },
      "gpu::flash_attention_backward: dk: shape [2, 4, 8, 64], expected [2, 4, 2, 64]", "backward names a wrong dk");
  expect_error(
      [&] {
        dev::flash_attention_backward<f16>(ws, chv(2, 4, 8, 64), chv(2, 4, 2, 64), chv(2, 4, 2, 64), chv(2, 4, 8, 64),
                                           lse, chv(2, 4, 8, 64), true, hv(2, 4, 8, 64), hv(2, 4, 2, 64),
                                           hv(2, 4, 1, 64), nullptr);
      },
      "gpu::flash_attention_backward: dv: shape [2, 4, 1, 64], expected [2, 4, 2, 64]",
      "backward (fp16) names a wrong dv");
  expect_error(
      [&] {
        dev::flash_attention_backward<float>(ws, cfv(2, 4, 8, 64), cfv(2, 4, 2, 64), cfv(2, 4, 2, 64), cfv(2, 4, 8, 64),
                                             View<const float, 3>{}, cfv(2, 4, 8, 64), false, fv(2, 4, 8, 64),
                                             fv(2, 4, 2, 64), fv(2, 4, 2, 64), nullptr);
      },
      "gpu::flash_attention_backward: lse: shape [0, 0, 0], expected [2, 8, 4]", "backward requires lse");
  expect_error(
      [&] {
        dev::flash_attention_backward<bf>(ws, cbv(2, 4, 8, 64), cbv(2, 4, 2, 64), cbv(2, 4, 2, 64), cbv(2, 4, 8, 64),
                                          lse, cbv(2, 3, 8, 64), true, bv(2, 4, 8, 64), bv(2, 4, 2, 64),
                                          bv(2, 4, 2, 64), nullptr);
      },
      "gpu::flash_attention_backward: dout: shape [2, 3, 8, 64], expected [2, 4, 8, 64]",
      "backward names a wrong dout");
  expect_error(
      [&] {
        dev::flash_attention_backward<bf>(ws, cbv(2, 4, 8, 48), cbv(2, 4, 2, 48), cbv(2, 4, 2, 48), cbv(2, 4, 8, 48),
                                          lse, cbv(2, 4, 8, 48), true, bv(2, 4, 8, 48), bv(2, 4, 2, 48),
                                          bv(2, 4, 2, 48), nullptr);
      },
      "gpu::flash_attention_backward: q has head dimension 48", "backward rejects head dimension 48");
  const auto c3 = [&](index_t b, index_t h, index_t d) { return View<const bf, 3>(bp, {b, h, d}); };
  expect_error(
      [&] {
        dev::attention_decode<bf>(c3(2, 8, 64), cbv(2, 16, 2, 64), cbv(2, 16, 2, 64), 0, View<bf, 3>(bp, {2, 8, 64}),
                                  nullptr);
      },
      "gpu::attention_decode: len 0 is out of range [1, 16] of the cache (k_cache shape [2, 16, 2, 64])",
      "decode rejects len 0");
  expect_error(
      [&] {
        dev::attention_decode<f16>(View<const f16, 3>(hp, {2, 8, 64}), chv(2, 16, 2, 64), chv(2, 16, 2, 64), 17,
                                   View<f16, 3>(hp, {2, 8, 64}), nullptr);
      },
      "gpu::attention_decode: len 17 is out of range [1, 16]", "decode (fp16) rejects len > S");
  expect_error(
      [&] {
        dev::attention_decode<bf>(c3(2, 8, 64), cbv(2, 16, 2, 64), cbv(2, 16, 2, 64), 17, View<bf, 3>(bp, {2, 8, 64}),
                                  nullptr);
      },
      "gpu::attention_decode: len 17 is out of range [1, 16]", "decode rejects len > S");
  expect_error(
      [&] {
        dev::attention_decode<bf>(c3(2, 8, 16), cbv(2, 16, 2, 16), cbv(2, 16, 2, 16), 3, View<bf, 3>(bp, {2, 8, 16}),
                                  nullptr);
      },
      "gpu::attention_decode: q has head dimension 16 (shape [2, 8, 16])", "decode rejects head dimension 16");
  expect_error(
      [&] {
        dev::attention_decode<bf>(c3(2, 8, 64), cbv(2, 16, 3, 64), cbv(2, 16, 3, 64), 3, View<bf, 3>(bp, {2, 8, 64}),
                                  nullptr);
      },
      "gpu::attention_decode: q has 8 heads, which is not a multiple of the 3 kv heads", "decode rejects H % Hkv != 0");
  expect_error(
      [&] {
        dev::attention_decode<bf>(c3(2, 8, 64), cbv(2, 16, 2, 64), cbv(2, 15, 2, 64), 3, View<bf, 3>(bp, {2, 8, 64}),
                                  nullptr);
      },
      "gpu::attention_decode: v_cache: shape [2, 15, 2, 64], expected [2, 16, 2, 64]", "decode names a wrong v_cache");
  expect_error(
      [&] {
        dev::attention_decode<bf>(c3(2, 8, 64), cbv(2, 16, 2, 64), cbv(2, 16, 2, 64), 3, View<bf, 3>(bp, {2, 4, 64}),
                                  nullptr);
      },
      "gpu::attention_decode: out: shape [2, 4, 64], expected [2, 8, 64]", "decode names a wrong out");
}

}  // namespace

int main() {
  try {
    argument_errors();
    if (const int rc = reason::test::exit_status_without_gpu(error_failures); rc >= 0) return rc;
    (void)dev::require_device(0);
    dev::Stream st;
    dev::FlashAttentionWorkspace ws;
    std::uint64_t seed = 300;
    failures += error_failures;

    for (index_t D : {index_t{32}, index_t{64}, index_t{128}})
      for (bool causal : {false, true})
        for (index_t heads : {index_t{4}, index_t{8}})
          for (index_t Tn : {index_t{1}, index_t{37}, index_t{200}}) {
            const Case c{2, Tn, heads, heads == 8 ? index_t{2} : heads, D, causal, 0};
            attention_case<float>(st, ws, c, ++seed);
            attention_case<bf>(st, ws, c, ++seed);
            attention_case<f16>(st, ws, c, ++seed);
          }
    for (bool causal : {false, true}) {  // longer sequences (513: one past a tile multiple), exact multiples
      attention_case<bf>(st, ws, {2, 513, 8, 2, 128, causal, 0}, ++seed);
      attention_case<f16>(st, ws, {2, 513, 8, 2, 128, causal, 0}, ++seed);
      attention_case<float>(st, ws, {2, 513, 8, 2, 128, causal, 0}, ++seed);
      attention_case<bf>(st, ws, {2, 513, 4, 4, 64, causal, 0}, ++seed);
      attention_case<f16>(st, ws, {2, 513, 4, 4, 64, causal, 0}, ++seed);
      attention_case<bf>(st, ws, {2, 128, 8, 2, 128, causal, 0}, ++seed);
      attention_case<f16>(st, ws, {2, 128, 8, 2, 128, causal, 0}, ++seed);
      attention_case<bf>(st, ws, {2, 64, 8, 2, 64, causal, 0}, ++seed);
      attention_case<f16>(st, ws, {2, 64, 8, 2, 64, causal, 0}, ++seed);
      attention_case<bf>(st, ws, {2, 256, 8, 2, 32, causal, 0}, ++seed);
      attention_case<f16>(st, ws, {2, 256, 8, 2, 32, causal, 0}, ++seed);
    }
    for (bool causal : {false, true})  // exact arithmetic: every mask edge checked to the last bit
      for (index_t D : {index_t{32}, index_t{64}, index_t{128}}) {
        attention_case<bf>(st, ws, {2, 200, 8, 2, D, causal, 0, true}, ++seed);
        attention_case<f16>(st, ws, {2, 200, 8, 2, D, causal, 0, true}, ++seed);
        attention_case<float>(st, ws, {2, 200, 4, 4, D, causal, 0, true}, ++seed);
      }
    attention_case<bf>(st, ws, {1, 1100, 2, 1, 128, true, 0, true}, ++seed);
    attention_case<f16>(st, ws, {1, 1100, 2, 1, 128, true, 0, true}, ++seed);
    // Not 16-byte aligned: the 16-bit SIMT fallback.
    attention_case<bf>(st, ws, {2, 200, 8, 2, 64, true, 1}, ++seed);
    attention_case<f16>(st, ws, {2, 200, 8, 2, 64, true, 1}, ++seed);
    attention_case<bf>(st, ws, {2, 37, 4, 4, 128, false, 1}, ++seed);
    attention_case<f16>(st, ws, {2, 37, 4, 4, 128, false, 1}, ++seed);

    for (index_t D : {index_t{32}, index_t{64}, index_t{128}})
      for (index_t len : {index_t{1}, index_t{100}, index_t{1000}}) {
        decode_case<float>(st, 2, 8, 2, D, 1024, len, 0, ++seed);
        decode_case<bf>(st, 2, 8, 2, D, 1024, len, 0, ++seed);
        decode_case<f16>(st, 2, 8, 2, D, 1024, len, 0, ++seed);
      }
    decode_case<bf>(st, 2, 4, 4, 128, 1024, 1000, 0, ++seed);
    decode_case<f16>(st, 2, 4, 4, 128, 1024, 1000, 0, ++seed);
    decode_case<bf>(st, 2, 8, 2, 128, 1024, 100, 1, ++seed);  // unaligned: scalar loads
    decode_case<f16>(st, 2, 8, 2, 128, 1024, 100, 1, ++seed);
    decode_case<float>(st, 2, 8, 1, 64, 1024, 777, 1, ++seed);

    timing<bf>(st, 4, 4096, 16, 128, false);
    timing<bf>(st, 4, 4096, 16, 128, true);
    timing<bf>(st, 4, 4096, 32, 64, true);
    timing<f16>(st, 4, 4096, 16, 128, true);

    std::printf("%s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
