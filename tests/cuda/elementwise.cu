// The element-wise CUDA kernels — RMSNorm (+ fused residual add), SwiGLU, RoPE, embedding
// (kernels/*.cuh) — against the host kernels (kernels/*.hpp) on the same random inputs.
//
// fp32 storage: the host kernel in float on the same values. bf16 / fp16 storage: the host kernel
// in float on the inputs rounded to the storage type; the device's 16-bit output may differ from
// that fp32 reference by its own rounding, at most half an ulp — 2^-8 |ref| in bf16 (8 significant
// bits), 2^-11 |ref| in fp16 (11) plus 2^-25 near zero (half fp16's subnormal spacing) — on top of
// the fp32 bound. The fp32 bounds (u = 2^-24, the fp32 unit roundoff) follow each kernel's arithmetic:
//   RMSNorm     the device sums a row in fp32 (k = C / threads-per-row + log2(threads-per-row)
//               roundings), the host in double; everything after the row sums is the same
//               sequence of fp32 operations on both sides. rstd within (k/2 + 2) u, y within
//               (k/2 + 6) u relative; dx within |x| dk + 2u (|k x| + |dx|) where dk is the bound
//               on the row's k from the fp32 dot; dweight within (N + N/16 + 17) u (|init| + sum |terms|)
//               (the host adds the N rows one after another in fp32, the device in 16 strands).
//   SwiGLU      CUDA's expf is within 2 ulp, glibc's within 1: sigmoid within 10u relative, h and du
//               within 16u, dg within the same propagated through 1 + g (1 - s) (which cancels at
//               g ~ -1.28, so the bound is on the terms, not on |dg|).
//   RoPE        the same fp32 operations in the same order with the same table: bitwise in fp32
//               (reported), required within 2u (|a| + |b|) should the host compiler contract.
//   Embedding   copies and in-order fp32 sums: required bitwise (bf16 / fp16: the rounding of the
//               host's fp32 sum, by the host's reason::bf16 / reason::fp16, which must agree with the
//               device's __float2bfloat16_rn / __float2half_rn bit for bit; so must the fused
//               residual add's stored sum).
// Also: odd sizes (N 1, 3, 1000; C 64, 130, 4096, 8192; unaligned rows fall back to scalar
// access), strided views (q and k as column blocks of a fused qkv buffer, g and u as halves of
// gate_up, padded rows whose padding must stay untouched), in-place dx = dy and dg = dh, repeated
// token ids, out-of-range ids and positions, bitwise determinism of the reductions over two runs,
// and the shape errors (checked before the GPU test, so they run on any machine).
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

#include "reason/core/bf16.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/embedding.cuh"
#include "reason/kernels/embedding.hpp"
#include "reason/kernels/rmsnorm.cuh"
#include "reason/kernels/rmsnorm.hpp"
#include "reason/kernels/rope.cuh"
#include "reason/kernels/rope.hpp"
#include "reason/kernels/swiglu.cuh"
#include "reason/kernels/swiglu.hpp"
#include "cuda/cuda_test_util.hpp"

namespace dev = reason::gpu;
namespace host = reason::kernels;
using reason::Error;
using reason::index_t;
using reason::Philox;
using reason::View;
using bf = __nv_bfloat16;
using f16 = __half;

namespace {

int failures = 0;
constexpr double u = 0x1p-24;    // fp32 unit roundoff

template <class T>
const char* type_name() {
  return reason::test::storage_name<T>();
}
/// The rounding of a stored output: relative (half an ulp: 2^-8 bf16, 2^-11 fp16) and absolute
/// near zero (fp16's subnormals: 2^-25).
template <class T>
constexpr double out_round() {
  return reason::test::StorageRounding<T>::rel;
}
template <class T>
constexpr double out_abs() {
  return reason::test::StorageRounding<T>::abs;
}

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

/// Values stored as T, and the float copy (exact) that the host reference runs on.
template <class T>
struct Data {
  std::vector<T> t;
  std::vector<float> f;
};
template <class T>
Data<T> store(const std::vector<float>& raw) {
  Data<T> d;
  d.t.resize(raw.size());
  d.f.resize(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    d.t[i] = from_float<T>(raw[i]);
    d.f[i] = to_float(d.t[i]);
  }
  return d;
}
std::vector<float> uniform(Philox& rng, std::size_t count, float lo, float hi) {
  std::vector<float> v(count);
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

template <class T>
struct Dev {
  dev::DeviceBuffer<T> buf;
  explicit Dev(const std::vector<T>& h) : buf(h.size()) { buf.copy_from(h); }
  void set(const std::vector<T>& h) { buf.copy_from(h); }
  [[nodiscard]] std::vector<T> get() const {
    std::vector<T> h(buf.size());
    buf.copy_to(h);
    return h;
  }
  T* p() { return buf.data(); }
};

/// One printed line: the worst error / bound, how many elements differ in bits, and any extra failure.
struct Report {
  std::string what;
  double worst = 0;
  std::size_t over = 0, not_bitwise = 0, count = 0;
  std::string extra;
  bool bitwise_required = false;

  explicit Report(std::string w, bool bitwise = false) : what(std::move(w)), bitwise_required(bitwise) {}
  void add(double got, double ref, double bound) {
    ++count;
    const double err = std::abs(got - ref);
    if (!(err <= bound)) {  // NaN fails too
      ++over;
      worst = std::max(worst, std::isfinite(err) ? err / std::max(bound, 1e-300) : 1e300);
    } else if (bound > 0) {
      worst = std::max(worst, err / bound);
    }
  }
  void bits(bool equal) { not_bitwise += equal ? 0 : 1; }
  void require(bool ok, const std::string& why) {
    if (!ok && extra.find(why) == std::string::npos) extra += (extra.empty() ? "" : "; ") + why;
  }
  void finish() {
    const bool ok = over == 0 && extra.empty() && !(bitwise_required && not_bitwise > 0);
    if (!ok) ++failures;
    std::printf("%s %s: error/bound %.3f over %zu of %zu, %zu not bitwise%s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(),
                worst, over, count, not_bitwise, bitwise_required ? " (bitwise required)" : "",
                extra.empty() ? "" : ", ", extra.c_str());
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

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// Row r scaled by 2^(r % 7 - 3): rows of different magnitude.
std::vector<float> norm_input(Philox& rng, index_t n, index_t ld) {
  auto v = uniform(rng, static_cast<std::size_t>(n * ld), -2.0f, 2.0f);
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < ld; ++j) v[r * ld + j] = std::ldexp(v[r * ld + j], static_cast<int>(r % 7) - 3);
  return v;
}

/// The longest chain of fp32 roundings in the device's row sum: a thread's own elements (up to a
/// whole 16-byte vector more than C / threads), the 5-level warp butterfly, then (a block per row)
/// the 8 warp sums added in order; one more for slack.
double row_sum_roundings(index_t c) {
  const int threads = dev::rmsnorm_threads_per_row(c);
  const double per_thread = std::ceil(static_cast<double>(c) / (threads * 8.0)) * 8;
  return per_thread + 5 + (threads > 32 ? threads / 32 : 0) + 1;
}

template <class T>
void rmsnorm_forward_case(dev::Stream& st, index_t n, index_t c, index_t pad, bool residual, std::uint64_t seed) {
  Philox rng(seed, 11);
  const index_t ld = c + pad;
  const auto sz = static_cast<std::size_t>(n * ld);
  const float eps = 1e-5f;
  auto x = store<T>(norm_input(rng, n, ld));
  auto w = store<T>(uniform(rng, static_cast<std::size_t>(c), 0.5f, 1.5f));
  auto b = store<T>(residual ? uniform(rng, sz, -1.0f, 1.0f) : std::vector<float>(sz, 0.0f));
  // Host: the residual add rounded to T as stored, then the norm of the stored values.
  std::vector<float> xf = x.f;
  if (residual)
    for (index_t r = 0; r < n; ++r)
      for (index_t j = 0; j < c; ++j) xf[r * ld + j] = to_float(from_float<T>(x.f[r * ld + j] + b.f[r * ld + j]));
  std::vector<float> yf(sz, 0.0f), rf(static_cast<std::size_t>(n));
  host::rmsnorm_forward<float>(view<const float, 2>(xf.data(), {n, c}, {ld, 1}), view<const float, 1>(w.f.data(), {c}, {1}),
                               eps, view<float, 2>(yf.data(), {n, c}, {ld, 1}), view<float, 1>(rf.data(), {n}, {1}));

  const T sentinel = from_float<T>(12345.0f);
  Dev<T> dx(x.t), dw(w.t), db(b.t), dy(std::vector<T>(sz, sentinel));
  dev::DeviceBuffer<float> drstd(static_cast<std::size_t>(n));
  if (residual) {
    dev::add_rmsnorm_forward<T>(view<T, 2>(dx.p(), {n, c}, {ld, 1}), view<const T, 2>(db.p(), {n, c}, {ld, 1}),
                                view<const T, 1>(dw.p(), {c}, {1}), eps, view<T, 2>(dy.p(), {n, c}, {ld, 1}),
                                view<float, 1>(drstd.data(), {n}, {1}), st.get());
  } else {
    dev::rmsnorm_forward<T>(view<const T, 2>(dx.p(), {n, c}, {ld, 1}), view<const T, 1>(dw.p(), {c}, {1}), eps,
                            view<T, 2>(dy.p(), {n, c}, {ld, 1}), view<float, 1>(drstd.data(), {n}, {1}), st.get());
  }
  st.synchronize();
  const auto y = dy.get(), xr = dx.get();
  std::vector<float> rstd(static_cast<std::size_t>(n));
  drstd.copy_to(rstd);

  const double k = row_sum_roundings(c);
  const double rel_s = (k / 2 + 2) * u, rel_y = (k / 2 + 6) * u;
  Report rep(label("rmsnorm fwd%s %s N %lld C %lld pad %lld", residual ? "+residual" : "", type_name<T>(),
                   static_cast<long long>(n), static_cast<long long>(c), static_cast<long long>(pad)));
  for (index_t r = 0; r < n; ++r) rep.add(rstd[r], rf[r], rel_s * std::abs(rf[r]));
  for (index_t r = 0; r < n; ++r) {
    for (index_t j = 0; j < c; ++j) {
      const std::size_t i = r * ld + j;
      const double ref = yf[i], b0 = rel_y * std::abs(ref);
      rep.add(to_float(y[i]), ref, b0 + out_round<T>() * (std::abs(ref) + b0) + out_abs<T>());
      rep.bits(same_bits(y[i], from_float<T>(yf[i])));
      if (residual) rep.require(same_bits(xr[i], from_float<T>(xf[i])), "residual not the rounded sum");
    }
    for (index_t j = c; j < ld; ++j) {
      rep.require(same_bits(y[r * ld + j], sentinel), "y padding written");
      rep.require(same_bits(xr[r * ld + j], x.t[r * ld + j]), "x padding written");
    }
  }
  rep.finish();
}

template <class T, class G>
void rmsnorm_backward_case(dev::Stream& st, index_t n, index_t c, index_t pad, bool in_place, std::uint64_t seed) {
  Philox rng(seed, 12);
  const index_t ld = c + pad;
  const auto sz = static_cast<std::size_t>(n * ld);
  auto x = store<T>(norm_input(rng, n, ld));
  auto w = store<T>(uniform(rng, static_cast<std::size_t>(c), 0.5f, 1.5f));
  auto dy = store<T>(uniform(rng, sz, -1.0f, 1.0f));
  auto dw0 = store<G>(uniform(rng, static_cast<std::size_t>(c), -1.0f, 1.0f));
  std::vector<float> yf(sz), rf(static_cast<std::size_t>(n));
  const auto xv = view<const float, 2>(x.f.data(), {n, c}, {ld, 1});
  const auto wv = view<const float, 1>(w.f.data(), {c}, {1});
  host::rmsnorm_forward<float>(xv, wv, 1e-5f, view<float, 2>(yf.data(), {n, c}, {ld, 1}), view<float, 1>(rf.data(), {n}, {1}));
  std::vector<float> dxf(sz, 0.0f), dwf = dw0.f;
  host::rmsnorm_backward<float>(xv, wv, view<const float, 1>(rf.data(), {n}, {1}),
                                view<const float, 2>(dy.f.data(), {n, c}, {ld, 1}), view<float, 2>(dxf.data(), {n, c}, {ld, 1}),
                                view<float, 1>(dwf.data(), {c}, {1}));

  const T sentinel = from_float<T>(-777.0f);
  Dev<T> dx_(x.t), dw_(w.t), ddy(dy.t), ddx(std::vector<T>(sz, sentinel));
  Dev<G> ddw(dw0.t);
  Dev<float> drstd(rf);
  T* dx_ptr = in_place ? ddy.p() : ddx.p();
  auto run = [&] {
    dev::rmsnorm_backward<T, G>(view<const T, 2>(dx_.p(), {n, c}, {ld, 1}), view<const T, 1>(dw_.p(), {c}, {1}),
                                view<const float, 1>(drstd.p(), {n}, {1}), view<const T, 2>(ddy.p(), {n, c}, {ld, 1}),
                                view<T, 2>(dx_ptr, {n, c}, {ld, 1}), view<G, 1>(ddw.p(), {c}, {1}), st.get());
    st.synchronize();
  };
  run();
  const auto dx = in_place ? ddy.get() : ddx.get();
  const auto dw = ddw.get();

  Report rep(label("rmsnorm bwd %s dweight %s N %lld C %lld pad %lld%s", type_name<T>(), type_name<G>(),
                   static_cast<long long>(n), static_cast<long long>(c), static_cast<long long>(pad),
                   in_place ? " dx = dy" : ""));
  const double kdot = row_sum_roundings(c) + 1;
  for (index_t r = 0; r < n; ++r) {
    const double s = rf[r];
    double dot = 0, mag = 0;
    for (index_t j = 0; j < c; ++j) {
      const std::size_t i = r * ld + j;
      dot += double(dy.f[i]) * w.f[j] * x.f[i];
      mag += std::abs(double(dy.f[i]) * w.f[j] * x.f[i]);
    }
    const double kk = dot * s * s * s / static_cast<double>(c);
    const double dk = kdot * u * mag * s * s * s / static_cast<double>(c) + 2 * u * std::abs(kk);
    for (index_t j = 0; j < c; ++j) {
      const std::size_t i = r * ld + j;
      const double ref = dxf[i], ax = std::abs(double(x.f[i]));
      const double b0 = 1.1 * (ax * dk + 2 * u * (std::abs(kk) * ax + std::abs(ref)));
      rep.add(to_float(dx[i]), ref, b0 + out_round<T>() * (std::abs(ref) + b0) + out_abs<T>());
      rep.bits(same_bits(dx[i], from_float<T>(dxf[i])));
    }
    for (index_t j = c; j < ld; ++j)
      rep.require(same_bits(dx[r * ld + j], in_place ? dy.t[r * ld + j] : sentinel), "dx padding written");
  }
  const double strands = static_cast<double>(n) + std::ceil(n / 16.0) + 17;
  for (index_t j = 0; j < c; ++j) {
    double terms = 0;
    for (index_t r = 0; r < n; ++r) terms += std::abs(double(dy.f[r * ld + j]) * x.f[r * ld + j] * rf[r]);
    const double ref = dwf[j], b0 = 1.01 * strands * u * (std::abs(double(dw0.f[j])) + terms);
    rep.add(to_float(dw[j]), ref, b0 + out_round<G>() * (std::abs(ref) + b0) + out_abs<G>());
    rep.bits(same_bits(dw[j], from_float<G>(dwf[j])));
  }
  if (!in_place) {  // the same inputs again: the same bits
    ddw.set(dw0.t);
    run();
    const auto dx2 = ddx.get();
    const auto dw2 = ddw.get();
    bool same = true;
    for (std::size_t i = 0; i < sz; ++i) same = same && same_bits(dx[i], dx2[i]);
    for (index_t j = 0; j < c; ++j) same = same && same_bits(dw[j], dw2[j]);
    rep.require(same, "a second run differs (not deterministic)");
  }
  rep.finish();
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// layout 0: separate contiguous buffers; 1: g, u (and dg, du) the column halves of [N, 2F]
/// (the FFN's gate_up); 2: every row padded by one element (unaligned: the scalar path).
template <class T>
void swiglu_case(dev::Stream& st, index_t n, index_t f, int layout, bool in_place, std::uint64_t seed) {
  Philox rng(seed, 13);
  const auto nf = static_cast<std::size_t>(n * f);
  auto graw = uniform(rng, nf, -8.0f, 8.0f);
  const float special[] = {-100.0f, -30.0f, 30.0f, 100.0f, 0.0f, -1.2785f, 1e-3f, -1e-3f};
  for (std::size_t i = 0; i < nf; i += 37) graw[i] = special[(i / 37) % 8];
  auto g = store<T>(graw);
  auto uu = store<T>(uniform(rng, nf, -2.0f, 2.0f));
  auto dh = store<T>(uniform(rng, nf, -2.0f, 2.0f));
  std::vector<float> hf(nf), dgf(nf), duf(nf);
  const auto cv = [&](const std::vector<float>& v) { return view<const float, 2>(v.data(), {n, f}, {f, 1}); };
  host::swiglu_forward<float>(cv(g.f), cv(uu.f), view<float, 2>(hf.data(), {n, f}, {f, 1}));
  host::swiglu_backward<float>(cv(g.f), cv(uu.f), cv(dh.f), view<float, 2>(dgf.data(), {n, f}, {f, 1}),
                               view<float, 2>(duf.data(), {n, f}, {f, 1}));

  // Device layout: g at gu[r * ld_gu + j], u at gu[off_u + r * ld_gu + j]; h, dh at [r * ld_o + j].
  const index_t ld_gu = layout == 1 ? 2 * f : (layout == 2 ? f + 1 : f);
  const index_t off_u = layout == 1 ? f : n * ld_gu;
  const index_t ld_o = layout == 2 ? f + 1 : f;
  const T sentinel = from_float<T>(4321.0f);
  std::vector<T> gu(static_cast<std::size_t>(2 * n * ld_gu), sentinel), dho(static_cast<std::size_t>(n * ld_o), sentinel);
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < f; ++j) {
      gu[r * ld_gu + j] = g.t[r * f + j];
      gu[off_u + r * ld_gu + j] = uu.t[r * f + j];
      dho[r * ld_o + j] = dh.t[r * f + j];
    }
  Dev<T> dgu(gu), ddh(dho), dh_out(std::vector<T>(dho.size(), sentinel)), dgrad(std::vector<T>(gu.size(), sentinel));
  const auto gview = view<const T, 2>(dgu.p(), {n, f}, {ld_gu, 1});
  const auto uview = view<const T, 2>(dgu.p() + off_u, {n, f}, {ld_gu, 1});
  dev::swiglu_forward<T>(gview, uview, view<T, 2>(dh_out.p(), {n, f}, {ld_o, 1}), st.get());
  // in_place: dg overwrites dh (same layout), du goes to the second half of dgrad.
  T* dg_ptr = in_place ? ddh.p() : dgrad.p();
  const index_t ld_dg = in_place ? ld_o : ld_gu;
  dev::swiglu_backward<T>(gview, uview, view<const T, 2>(ddh.p(), {n, f}, {ld_o, 1}),
                          view<T, 2>(dg_ptr, {n, f}, {ld_dg, 1}), view<T, 2>(dgrad.p() + off_u, {n, f}, {ld_gu, 1}),
                          st.get());
  st.synchronize();
  const auto h = dh_out.get(), dgr = dgrad.get(), dhr = ddh.get();
  const auto& dg_all = in_place ? dhr : dgr;

  Report rep(label("swiglu fwd+bwd %s N %lld F %lld layout %s%s", type_name<T>(), static_cast<long long>(n),
                   static_cast<long long>(f), layout == 0 ? "separate" : (layout == 1 ? "gate_up halves" : "padded"),
                   in_place ? " dg = dh" : ""));
  for (index_t r = 0; r < n; ++r) {
    for (index_t j = 0; j < f; ++j) {
      const std::size_t i = r * f + j;
      const double gd = g.f[i], ud = uu.f[i], dd = dh.f[i];
      const double s = 1.0 / (1.0 + std::exp(-gd));
      const double slope = 1.0 + gd * (1.0 - s);
      const double bh = 1.1 * 16 * u * std::abs(gd * s * ud);
      const double bdg = 1.1 * (std::abs(dd * ud) * s *
                                    (12 * u * std::abs(slope) + 10 * u * std::abs(gd) * s + 4 * u * std::abs(gd * (1 - s))) +
                                6 * u * std::abs(double(dgf[i])));
      const double bdu = 1.1 * 14 * u * std::abs(dd * gd * s);
      const T hv = h[r * ld_o + j], dgv = dg_all[r * ld_dg + j], duv = dgr[off_u + r * ld_gu + j];
      rep.add(to_float(hv), hf[i], bh + out_round<T>() * (std::abs(hf[i]) + bh) + out_abs<T>() + 1e-37);
      rep.add(to_float(dgv), dgf[i], bdg + out_round<T>() * (std::abs(dgf[i]) + bdg) + out_abs<T>() + 1e-37);
      rep.add(to_float(duv), duf[i], bdu + out_round<T>() * (std::abs(duf[i]) + bdu) + out_abs<T>() + 1e-37);
      rep.bits(same_bits(hv, from_float<T>(hf[i])));
      rep.bits(same_bits(dgv, from_float<T>(dgf[i])));
      rep.bits(same_bits(duv, from_float<T>(duf[i])));
    }
    for (index_t j = f; j < ld_o; ++j) rep.require(same_bits(h[r * ld_o + j], sentinel), "h padding written");
    if (!in_place)
      for (index_t j = f; j < ld_gu; ++j)
        if (layout == 2) rep.require(same_bits(dgr[r * ld_gu + j], sentinel), "dg padding written");
  }
  rep.finish();
}

// ---------------------------------------------------------------------------------------------
// RoPE

struct HeadView {  // a [N, H, D] view into a flat buffer: offset and strides in elements
  index_t offset, heads, s0, s1, s2;
};

/// Compares `got` with `ref` over the views (bound 2u (|a| + |b|) from the pair's inputs in
/// `orig`, plus the 16-bit rounding); every element outside the views must keep its bits.
template <class T>
void compare_rope(Report& rep, const std::vector<T>& orig_t, const std::vector<float>& orig,
                  const std::vector<T>& got, const std::vector<float>& ref, const std::vector<HeadView>& views,
                  index_t n, index_t d, const std::vector<bool>& row_rotated) {
  std::vector<char> covered(got.size(), 0);
  const index_t half = d / 2;
  for (const auto& v : views)
    for (index_t r = 0; r < n; ++r)
      for (index_t h = 0; h < v.heads; ++h)
        for (index_t i = 0; i < d; ++i) {
          const auto at = [&](index_t k) { return static_cast<std::size_t>(v.offset + r * v.s0 + h * v.s1 + k * v.s2); };
          const std::size_t e = at(i), partner = at(i < half ? i + half : i - half);
          if (!row_rotated[r]) continue;  // checked as untouched below
          covered[e] = 1;
          const double b0 = 2 * u * (std::abs(double(orig[e])) + std::abs(double(orig[partner])));
          rep.add(to_float(got[e]), ref[e], b0 + out_round<T>() * (std::abs(double(ref[e])) + b0) + out_abs<T>());
          rep.bits(same_bits(got[e], from_float<T>(ref[e])));
        }
  for (std::size_t e = 0; e < got.size(); ++e)
    if (!covered[e]) rep.require(same_bits(got[e], orig_t[e]), "an element outside the rotated heads changed");
}

/// q and k as column blocks of qkv [N, (H + 2 Hkv) D], as attention::Projected lays them out.
template <class T>
void rope_qkv_case(dev::Stream& st, const host::RopeTable<float>& table, const dev::DeviceRopeTable& dtable, index_t n,
                   index_t heads, index_t kv_heads, bool backward, std::uint64_t seed) {
  Philox rng(seed, 14);
  const index_t d = table.head_dim(), width = (heads + 2 * kv_heads) * d;
  auto buf = store<T>(uniform(rng, static_cast<std::size_t>(n * width), -2.0f, 2.0f));
  std::vector<std::int32_t> pos(static_cast<std::size_t>(n));
  for (auto& p : pos) p = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(table.max_positions())));
  const std::vector<HeadView> views = {{0, heads, width, d, 1}, {heads * d, kv_heads, width, d, 1}};
  std::vector<float> ref = buf.f;
  const auto pv = view<const std::int32_t, 1>(pos.data(), {n}, {1});
  for (const auto& v : views) {
    const auto x = view<float, 3>(ref.data() + v.offset, {n, v.heads, d}, {v.s0, v.s1, v.s2});
    backward ? host::rope_backward<float>(table, pv, x) : host::rope_forward<float>(table, pv, x);
  }
  Dev<T> dbuf(buf.t);
  Dev<std::int32_t> dpos(pos);
  const auto dpv = view<const std::int32_t, 1>(dpos.p(), {n}, {1});
  for (const auto& v : views) {
    const auto x = view<T, 3>(dbuf.p() + v.offset, {n, v.heads, d}, {v.s0, v.s1, v.s2});
    backward ? dev::rope_backward<T>(dtable, dpv, x, st.get()) : dev::rope_forward<T>(dtable, dpv, x, st.get());
  }
  st.synchronize();
  Report rep(label("rope %s %s qkv N %lld H %lld Hkv %lld D %lld", backward ? "bwd" : "fwd", type_name<T>(),
                   static_cast<long long>(n), static_cast<long long>(heads), static_cast<long long>(kv_heads),
                   static_cast<long long>(d)));
  compare_rope(rep, buf.t, buf.f, dbuf.get(), ref, views, n, d, std::vector<bool>(static_cast<std::size_t>(n), true));
  rep.finish();
}

/// Head-minor strides {H D, 1, H} (the innermost dimension not unit-stride), a stride-0 position
/// vector (decoding: every row at one position), and an out-of-range position (row untouched).
template <class T>
void rope_odd_cases(dev::Stream& st, const host::RopeTable<float>& table, const dev::DeviceRopeTable& dtable,
                    std::uint64_t seed) {
  const index_t d = table.head_dim(), heads = 3;
  {
    const index_t n = 5;
    Philox rng(seed, 15);
    auto buf = store<T>(uniform(rng, static_cast<std::size_t>(n * heads * d), -2.0f, 2.0f));
    std::vector<std::int32_t> pos = {0, 1, 17, 1000, static_cast<std::int32_t>(table.max_positions() - 1)};
    const HeadView hv{0, heads, heads * d, 1, heads};
    std::vector<float> ref = buf.f;
    host::rope_forward<float>(table, view<const std::int32_t, 1>(pos.data(), {n}, {1}),
                              view<float, 3>(ref.data(), {n, heads, d}, {hv.s0, hv.s1, hv.s2}));
    Dev<T> dbuf(buf.t);
    Dev<std::int32_t> dpos(pos);
    dev::rope_forward<T>(dtable, view<const std::int32_t, 1>(dpos.p(), {n}, {1}),
                         view<T, 3>(dbuf.p(), {n, heads, d}, {hv.s0, hv.s1, hv.s2}), st.get());
    st.synchronize();
    Report rep(label("rope fwd %s head-minor strides {H D, 1, H} N %lld D %lld", type_name<T>(),
                     static_cast<long long>(n), static_cast<long long>(d)));
    compare_rope(rep, buf.t, buf.f, dbuf.get(), ref, {hv}, n, d, std::vector<bool>(n, true));
    rep.finish();
  }
  {
    const index_t n = 3;
    Philox rng(seed, 16);
    auto buf = store<T>(uniform(rng, static_cast<std::size_t>(n * heads * d), -2.0f, 2.0f));
    const std::int32_t at = 7;
    std::vector<float> ref = buf.f;
    host::rope_forward<float>(table, view<const std::int32_t, 1>(&at, {n}, {0}),
                              view<float, 3>(ref.data(), {n, heads, d}, {heads * d, d, 1}));
    Dev<T> dbuf(buf.t);
    Dev<std::int32_t> dpos(std::vector<std::int32_t>{at});
    dev::rope_forward<T>(dtable, view<const std::int32_t, 1>(dpos.p(), {n}, {0}),
                         view<T, 3>(dbuf.p(), {n, heads, d}, {heads * d, d, 1}), st.get());
    st.synchronize();
    Report rep(label("rope fwd %s decode (pos stride 0) N %lld D %lld", type_name<T>(), static_cast<long long>(n),
                     static_cast<long long>(d)));
    compare_rope(rep, buf.t, buf.f, dbuf.get(), ref, {{0, heads, heads * d, d, 1}}, n, d, std::vector<bool>(n, true));
    rep.finish();
  }
  {
    const index_t n = 3;
    Philox rng(seed, 17);
    auto buf = store<T>(uniform(rng, static_cast<std::size_t>(n * heads * d), -2.0f, 2.0f));
    const auto bad = static_cast<std::int32_t>(table.max_positions());
    std::vector<std::int32_t> pos = {5, bad, 9}, host_pos = {5, 0, 9};
    std::vector<float> ref = buf.f;
    host::rope_forward<float>(table, view<const std::int32_t, 1>(host_pos.data(), {n}, {1}),
                              view<float, 3>(ref.data(), {n, heads, d}, {heads * d, d, 1}));
    Dev<T> dbuf(buf.t);
    Dev<std::int32_t> dpos(pos);
    const auto dpv = view<const std::int32_t, 1>(dpos.p(), {n}, {1});
    dev::rope_forward<T>(dtable, dpv, view<T, 3>(dbuf.p(), {n, heads, d}, {heads * d, d, 1}), st.get());
    st.synchronize();
    Report rep(label("rope fwd %s out-of-range position: its row untouched, check_positions names it", type_name<T>()));
    compare_rope(rep, buf.t, buf.f, dbuf.get(), ref, {{0, heads, heads * d, d, 1}}, n, d, {true, false, true});
    std::string msg;
    try {
      dev::check_positions(dtable, dpv, st.get());
    } catch (const Error& e) {
      msg = e.what();
    }
    rep.require(msg.find("pos[1] = " + std::to_string(bad) + " is out of range") != std::string::npos,
                "check_positions said \"" + msg + "\"");
    bool quiet = true;
    try {
      dev::check_positions(dtable, view<const std::int32_t, 1>(dpos.p(), {1}, {1}), st.get());
    } catch (const Error&) {
      quiet = false;
    }
    rep.require(quiet, "check_positions threw on valid positions");
    rep.finish();
  }
}

// ---------------------------------------------------------------------------------------------
// Embedding

/// tokens: mode 0 uniform over the vocabulary (repeats when N > V), 1 every position the same id.
template <class T, class G>
void embedding_case(dev::Stream& st, index_t n, index_t vocab, index_t c, index_t pad, int mode, std::uint64_t seed) {
  Philox rng(seed, 18);
  const index_t ld = c + pad;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(n));
  for (auto& t : tokens)
    t = mode == 1 ? static_cast<std::int32_t>(vocab - 1)
                  : static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab)));
  auto table = store<T>(uniform(rng, static_cast<std::size_t>(vocab * ld), -1.0f, 1.0f));
  auto dout = store<T>(uniform(rng, static_cast<std::size_t>(n * ld), -1.0f, 1.0f));
  auto dt0 = store<G>(uniform(rng, static_cast<std::size_t>(vocab * ld), -1.0f, 1.0f));
  const auto tv = view<const std::int32_t, 1>(tokens.data(), {n}, {1});
  std::vector<float> outf(static_cast<std::size_t>(n * ld), 0.0f), dtf = dt0.f;
  host::embedding_forward<float>(tv, view<const float, 2>(table.f.data(), {vocab, c}, {ld, 1}),
                                 view<float, 2>(outf.data(), {n, c}, {ld, 1}));
  host::embedding_backward<float>(tv, view<const float, 2>(dout.f.data(), {n, c}, {ld, 1}),
                                  view<float, 2>(dtf.data(), {vocab, c}, {ld, 1}));

  const T sentinel = from_float<T>(-55.0f);
  Dev<std::int32_t> dtok(tokens);
  Dev<T> dtable(table.t), dout_(dout.t), dout_out(std::vector<T>(outf.size(), sentinel));
  Dev<G> ddt(dt0.t);
  const auto dtv = view<const std::int32_t, 1>(dtok.p(), {n}, {1});
  dev::embedding_forward<T>(dtv, view<const T, 2>(dtable.p(), {vocab, c}, {ld, 1}),
                            view<T, 2>(dout_out.p(), {n, c}, {ld, 1}), st.get());
  auto backward = [&] {
    dev::embedding_backward<T, G>(dtv, view<const T, 2>(dout_.p(), {n, c}, {ld, 1}),
                                  view<G, 2>(ddt.p(), {vocab, c}, {ld, 1}), st.get());
    st.synchronize();
  };
  backward();
  const auto out = dout_out.get();
  const auto dt = ddt.get();

  Report rep(label("embedding fwd+bwd %s dtable %s N %lld V %lld C %lld pad %lld%s", type_name<T>(), type_name<G>(),
                   static_cast<long long>(n), static_cast<long long>(vocab), static_cast<long long>(c),
                   static_cast<long long>(pad), mode == 1 ? " one repeated id" : " repeated ids"),
             true);
  for (index_t r = 0; r < n; ++r) {
    for (index_t j = 0; j < c; ++j) {
      const std::size_t i = r * ld + j;
      rep.add(to_float(out[i]), outf[i], 0.0);
      rep.bits(same_bits(out[i], from_float<T>(outf[i])));
    }
    for (index_t j = c; j < ld; ++j) rep.require(same_bits(out[r * ld + j], sentinel), "out padding written");
  }
  for (std::size_t i = 0; i < dt.size(); ++i) {  // padding included: it must keep its bits
    const double ref = to_float(from_float<G>(dtf[i]));
    rep.add(to_float(dt[i]), ref, out_round<G>() * std::abs(double(dtf[i])));
    rep.bits(same_bits(dt[i], from_float<G>(dtf[i])));
  }
  ddt.set(dt0.t);
  backward();
  const auto dt2 = ddt.get();
  bool same = true;
  for (std::size_t i = 0; i < dt.size(); ++i) same = same && same_bits(dt[i], dt2[i]);
  rep.require(same, "a second backward differs (not deterministic)");
  rep.finish();
}

/// Ids outside [0, V): the forward writes a NaN row, the backward skips the position, check_tokens names it.
template <class T>
void embedding_bad_ids(dev::Stream& st, std::uint64_t seed) {
  Philox rng(seed, 19);
  const index_t vocab = 6, c = 40, n = 5;
  const std::vector<std::int32_t> tokens = {3, static_cast<std::int32_t>(vocab), 1, -1, 3};
  const std::vector<std::int32_t> kept_tokens = {3, 1, 3};
  const std::vector<index_t> kept = {0, 2, 4};
  auto table = store<T>(uniform(rng, static_cast<std::size_t>(vocab * c), -1.0f, 1.0f));
  auto dout = store<T>(uniform(rng, static_cast<std::size_t>(n * c), -1.0f, 1.0f));
  auto dt0 = store<T>(uniform(rng, static_cast<std::size_t>(vocab * c), -1.0f, 1.0f));
  std::vector<float> kept_dout;
  for (index_t r : kept) kept_dout.insert(kept_dout.end(), dout.f.begin() + r * c, dout.f.begin() + (r + 1) * c);
  std::vector<float> dtf = dt0.f;
  host::embedding_backward<float>(view<const std::int32_t, 1>(kept_tokens.data(), {3}, {1}),
                                  view<const float, 2>(kept_dout.data(), {3, c}, {c, 1}),
                                  view<float, 2>(dtf.data(), {vocab, c}, {c, 1}));
  Dev<std::int32_t> dtok(tokens);
  Dev<T> dtable(table.t), dout_(dout.t), dout_out(std::vector<T>(static_cast<std::size_t>(n * c), from_float<T>(0.0f)));
  Dev<T> ddt(dt0.t);
  const auto dtv = view<const std::int32_t, 1>(dtok.p(), {n}, {1});
  dev::embedding_forward<T>(dtv, view<const T, 2>(dtable.p(), {vocab, c}, {c, 1}), view<T, 2>(dout_out.p(), {n, c}, {c, 1}),
                            st.get());
  dev::embedding_backward<T, T>(dtv, view<const T, 2>(dout_.p(), {n, c}, {c, 1}), view<T, 2>(ddt.p(), {vocab, c}, {c, 1}),
                                st.get());
  st.synchronize();
  const auto out = dout_out.get(), dt = ddt.get();
  Report rep(label("embedding %s ids outside [0, V): NaN rows, skipped in backward, named by check_tokens", type_name<T>()),
             true);
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < c; ++j) {
      const float v = to_float(out[r * c + j]);
      if (tokens[r] < 0 || tokens[r] >= vocab)
        rep.require(std::isnan(v), "a bad id's row is not NaN");
      else
        rep.bits(same_bits(out[r * c + j], table.t[tokens[r] * c + j]));
    }
  for (std::size_t i = 0; i < dt.size(); ++i) rep.bits(same_bits(dt[i], from_float<T>(dtf[i])));
  std::string msg;
  try {
    dev::check_tokens(dtv, vocab, st.get());
  } catch (const Error& e) {
    msg = e.what();
  }
  rep.require(msg.find("tokens[1] = 6 is outside the vocabulary [0, 6)") != std::string::npos,
              "check_tokens said \"" + msg + "\"");
  rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Argument errors: thrown before any launch, so they need no GPU (the pointers are never read).

int error_failures = 0;
template <class F>
void expect_error(F&& f, const std::string& needle, const char* what) {
  const std::string wrong = reason::test::error_mismatch(f, needle);
  std::printf("%s error: %s%s%s\n", wrong.empty() ? "ok  " : "FAIL", what, wrong.empty() ? "" : ": ", wrong.c_str());
  error_failures += wrong.empty() ? 0 : 1;
}

void argument_errors() {
  auto* fp = reinterpret_cast<float*>(std::uintptr_t{4096});
  auto* bp = reinterpret_cast<bf*>(std::uintptr_t{4096});
  auto* hp = reinterpret_cast<f16*>(std::uintptr_t{4096});
  auto* ip = reinterpret_cast<std::int32_t*>(std::uintptr_t{4096});
  expect_error(
      [&] {
        dev::rmsnorm_forward<float>(view<const float, 2>(fp, {4, 64}, {64, 1}), view<const float, 1>(fp, {65}, {1}),
                                    1e-5f, view<float, 2>(fp, {4, 64}, {64, 1}), View<float, 1>{}, nullptr);
      },
      "gpu::rmsnorm_forward: weight: shape [65], expected [64]", "rmsnorm_forward names a wrong weight");
  expect_error(
      [&] {
        dev::rmsnorm_forward<float>(view<const float, 2>(fp, {4, 64}, {64, 1}), view<const float, 1>(fp, {64}, {1}),
                                    -1.0f, view<float, 2>(fp, {4, 64}, {64, 1}), View<float, 1>{}, nullptr);
      },
      "eps = -1", "rmsnorm_forward rejects a negative eps");
  expect_error(
      [&] {
        dev::add_rmsnorm_forward<bf>(view<bf, 2>(bp, {4, 64}, {64, 1}), view<const bf, 2>(bp, {3, 64}, {64, 1}),
                                     view<const bf, 1>(bp, {64}, {1}), 1e-5f, view<bf, 2>(bp, {4, 64}, {64, 1}),
                                     View<float, 1>{}, nullptr);
      },
      "gpu::add_rmsnorm_forward: branch: shape [3, 64], expected [4, 64]", "add_rmsnorm_forward names a wrong branch");
  expect_error(
      [&] {
        dev::add_rmsnorm_forward<f16>(view<f16, 2>(hp, {4, 64}, {64, 1}), view<const f16, 2>(hp, {4, 64}, {64, 1}),
                                      view<const f16, 1>(hp, {63}, {1}), 1e-5f, view<f16, 2>(hp, {4, 64}, {64, 1}),
                                      View<float, 1>{}, nullptr);
      },
      "gpu::add_rmsnorm_forward: weight: shape [63], expected [64]", "add_rmsnorm_forward (fp16) names a wrong weight");
  expect_error(
      [&] {
        dev::rmsnorm_backward<float, float>(view<const float, 2>(fp, {4, 64}, {64, 1}), view<const float, 1>(fp, {64}, {1}),
                                            view<const float, 1>(fp, {4}, {1}), view<const float, 2>(fp, {4, 64}, {64, 1}),
                                            view<float, 2>(fp, {4, 64}, {128, 2}), view<float, 1>(fp, {64}, {1}), nullptr);
      },
      "gpu::rmsnorm_backward: dx: innermost stride 2", "rmsnorm_backward names a strided dx");
  expect_error(
      [&] {
        dev::rmsnorm_backward<bf, float>(view<const bf, 2>(bp, {4, 64}, {64, 1}), view<const bf, 1>(bp, {64}, {1}),
                                         view<const float, 1>(fp, {5}, {1}), view<const bf, 2>(bp, {4, 64}, {64, 1}),
                                         view<bf, 2>(bp, {4, 64}, {64, 1}), view<float, 1>(fp, {64}, {1}), nullptr);
      },
      "gpu::rmsnorm_backward: rstd: shape [5], expected [4]", "rmsnorm_backward names a wrong rstd");
  expect_error(
      [&] {
        dev::swiglu_backward<float>(view<const float, 2>(fp, {4, 64}, {64, 1}), view<const float, 2>(fp, {4, 64}, {64, 1}),
                                    view<const float, 2>(fp, {4, 64}, {64, 1}), view<float, 2>(fp, {4, 64}, {64, 1}),
                                    view<float, 2>(fp, {4, 63}, {64, 1}), nullptr);
      },
      "gpu::swiglu_backward: du: shape [4, 63], expected [4, 64]", "swiglu_backward names a wrong du");
  expect_error(
      [&] {
        const dev::DeviceRopeTable empty(0, 4);  // no positions: no device memory needed
        dev::rope_forward<float>(empty, view<const std::int32_t, 1>(ip, {2}, {1}), view<float, 3>(fp, {2, 3, 6}, {18, 6, 1}),
                                 nullptr);
      },
      "gpu::rope_forward: x: shape [2, 3, 6], expected [2, 3, 4]", "rope_forward names a wrong head width");
  expect_error(
      [&] {
        dev::embedding_forward<float>(view<const std::int32_t, 1>(ip, {5}, {1}), view<const float, 2>(fp, {10, 8}, {8, 1}),
                                      view<float, 2>(fp, {5, 7}, {7, 1}), nullptr);
      },
      "gpu::embedding_forward: out: shape [5, 7], expected [5, 8]", "embedding_forward names a wrong out");
  expect_error(
      [&] {
        dev::embedding_backward<bf, float>(view<const std::int32_t, 1>(ip, {5}, {1}), view<const bf, 2>(bp, {4, 8}, {8, 1}),
                                           view<float, 2>(fp, {10, 8}, {8, 1}), nullptr);
      },
      "gpu::embedding_backward: dout: shape [4, 8], expected [5, 8]", "embedding_backward names a wrong dout");
  expect_error(
      [&] {
        dev::swiglu_forward<f16>(view<const f16, 2>(hp, {4, 64}, {64, 1}), view<const f16, 2>(hp, {4, 64}, {64, 1}),
                                 view<f16, 2>(hp, {5, 64}, {64, 1}), nullptr);
      },
      "gpu::swiglu_forward: h: shape [5, 64], expected [4, 64]", "swiglu_forward (fp16) names a wrong h");
}

}  // namespace

int main() {
  try {
    argument_errors();
    if (const int rc = reason::test::exit_status_without_gpu(error_failures); rc >= 0) return rc;
    (void)dev::require_device(0);
    dev::Stream st;
    std::uint64_t seed = 100;
    failures += error_failures;

    const index_t rows[] = {1, 3, 1000};
    const index_t cols[] = {64, 130, 4096};
    // RMSNorm
    for (index_t n : rows)
      for (index_t c : cols) {
        rmsnorm_forward_case<float>(st, n, c, 0, false, ++seed);
        rmsnorm_forward_case<bf>(st, n, c, 0, false, ++seed);
        rmsnorm_forward_case<f16>(st, n, c, 0, false, ++seed);
        rmsnorm_backward_case<float, float>(st, n, c, 0, false, ++seed);
        rmsnorm_backward_case<bf, bf>(st, n, c, 0, false, ++seed);
        rmsnorm_backward_case<f16, f16>(st, n, c, 0, false, ++seed);
        rmsnorm_backward_case<bf, float>(st, n, c, 0, false, ++seed);
        rmsnorm_backward_case<f16, float>(st, n, c, 0, false, ++seed);
      }
    for (index_t c : {index_t{1}, index_t{1024}, index_t{1025}, index_t{8192}}) {
      rmsnorm_forward_case<float>(st, 3, c, 0, false, ++seed);
      rmsnorm_forward_case<bf>(st, 3, c, 0, false, ++seed);
      rmsnorm_forward_case<f16>(st, 3, c, 0, false, ++seed);
      rmsnorm_backward_case<float, float>(st, 3, c, 0, false, ++seed);
      rmsnorm_backward_case<bf, bf>(st, 3, c, 0, false, ++seed);
      rmsnorm_backward_case<f16, f16>(st, 3, c, 0, false, ++seed);
    }
    for (index_t c : {index_t{64}, index_t{4096}}) {  // padded rows: unaligned, the scalar path
      rmsnorm_forward_case<float>(st, 7, c, 1, false, ++seed);
      rmsnorm_forward_case<bf>(st, 7, c, 3, false, ++seed);
      rmsnorm_forward_case<f16>(st, 7, c, 3, false, ++seed);
      rmsnorm_backward_case<float, float>(st, 7, c, 1, false, ++seed);
      rmsnorm_backward_case<bf, bf>(st, 7, c, 3, false, ++seed);
      rmsnorm_backward_case<f16, f16>(st, 7, c, 3, false, ++seed);
    }
    for (index_t n : {index_t{3}, index_t{1000}})
      for (index_t c : cols) {
        rmsnorm_forward_case<float>(st, n, c, 0, true, ++seed);
        rmsnorm_forward_case<bf>(st, n, c, 0, true, ++seed);
        rmsnorm_forward_case<f16>(st, n, c, 0, true, ++seed);
      }
    rmsnorm_forward_case<bf>(st, 5, 4096, 8, true, ++seed);
    rmsnorm_forward_case<f16>(st, 5, 4096, 8, true, ++seed);
    rmsnorm_backward_case<float, float>(st, 3, 130, 0, true, ++seed);
    rmsnorm_backward_case<bf, float>(st, 1000, 4096, 0, true, ++seed);
    rmsnorm_backward_case<f16, float>(st, 1000, 4096, 0, true, ++seed);
    rmsnorm_backward_case<float, float>(st, 5, 64, 2, true, ++seed);

    // SwiGLU
    for (index_t n : rows)
      for (index_t f : cols)
        for (int layout : {0, 1, 2}) {
          swiglu_case<float>(st, n, f, layout, false, ++seed);
          swiglu_case<bf>(st, n, f, layout, false, ++seed);
          swiglu_case<f16>(st, n, f, layout, false, ++seed);
        }
    swiglu_case<float>(st, 3, 130, 0, true, ++seed);
    swiglu_case<bf>(st, 1000, 4096, 0, true, ++seed);
    swiglu_case<f16>(st, 1000, 4096, 0, true, ++seed);
    swiglu_case<float>(st, 7, 64, 2, true, ++seed);

    // RoPE
    for (int d : {64, 130, 128}) {
      const host::RopeTable<float> table(2048, d);
      const dev::DeviceRopeTable dtable(table);
      for (index_t n : rows)
        for (bool backward : {false, true}) {
          rope_qkv_case<float>(st, table, dtable, n, 4, 2, backward, ++seed);
          rope_qkv_case<bf>(st, table, dtable, n, 4, 2, backward, ++seed);
          rope_qkv_case<f16>(st, table, dtable, n, 4, 2, backward, ++seed);
        }
      rope_qkv_case<float>(st, table, dtable, 17, 6, 6, false, ++seed);  // no GQA: H == Hkv
      rope_odd_cases<float>(st, table, dtable, ++seed);
      rope_odd_cases<bf>(st, table, dtable, ++seed);
      rope_odd_cases<f16>(st, table, dtable, ++seed);
    }

    // Embedding
    for (index_t n : rows)
      for (index_t c : cols) {
        embedding_case<float, float>(st, n, 50, c, 0, 0, ++seed);
        embedding_case<bf, bf>(st, n, 50, c, 0, 0, ++seed);
        embedding_case<f16, f16>(st, n, 50, c, 0, 0, ++seed);
        embedding_case<bf, float>(st, n, 50, c, 0, 0, ++seed);
        embedding_case<f16, float>(st, n, 50, c, 0, 0, ++seed);
      }
    embedding_case<float, float>(st, 1000, 7, 130, 0, 1, ++seed);
    embedding_case<bf, bf>(st, 1000, 7, 4096, 0, 1, ++seed);
    embedding_case<f16, f16>(st, 1000, 7, 4096, 0, 1, ++seed);
    embedding_case<float, float>(st, 1000, 32000, 64, 0, 0, ++seed);  // a realistic vocabulary, few repeats
    embedding_case<float, float>(st, 300, 64, 64, 3, 0, ++seed);     // padded rows: the scalar gather
    embedding_case<bf, float>(st, 300, 64, 130, 5, 0, ++seed);
    embedding_case<f16, float>(st, 300, 64, 130, 5, 0, ++seed);
    embedding_bad_ids<float>(st, ++seed);
    embedding_bad_ids<bf>(st, ++seed);
    embedding_bad_ids<f16>(st, ++seed);
    // Nothing to do is not an error.
    dev::embedding_backward<float, float>(View<const std::int32_t, 1>{}, View<const float, 2>(nullptr, {0, 8}),
                                          View<float, 2>(nullptr, {0, 8}), st.get());

    std::printf("%s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
