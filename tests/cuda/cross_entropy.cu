// The device softmax cross-entropy and fused LM head (kernels/cross_entropy.cuh) against the host
// kernels (kernels/cross_entropy.hpp) on the same random inputs.
//
// Row kernel, V = 7, 262 (256-thread blocks), 50257, 131072, 262144 (1024-thread blocks), rows
// with ignored targets (-1, -100), -inf logits and a padded row stride; fp32, bf16 and fp16 logits.
// The results are not bitwise equal to the host's, and are not meant to be: the host computes
// exp(x - max) with the C library's expf and sums in double in index order; the device uses CUDA's
// expf (<= 2 ulp), sums in fp32 (each thread a strided slice, merged by an online-softmax tree),
// and rounds the per-row loss to fp32. x - max itself is the same fp32 number on both sides.
// Tolerances:
//   row loss      |d| <= 1e-6 (|loss| + 1)          (fp32 sum of up to 256 terms per thread: ~1e-7 typical)
//   loss sum      |d| <= 1e-6 sum (|loss| + 1)
//   fp32 grads    |d| <= 2e-6 (|ref| + g [v = t]) + 1e-37 (expf, the sum and grad_scale / S each a few ulp)
//   bf16 grads    |d| <= (2^-8 + 2e-6) (|ref| + g [v = t]) + 1e-37 (one bf16 rounding of the fp32 value:
//                 half an ulp of 8 significant bits)
//   fp16 grads    |d| <= (2^-11 + 2e-6) (|ref| + g [v = t]) + 2^-25 (one fp16 rounding: half an ulp of
//                 11 significant bits, and half the subnormal spacing for the small probabilities)
//   16-bit loss   as fp32: the bf16 / fp16 logits widen exactly and the arithmetic is fp32.
// Ignored rows: gradient exactly 0; -inf logits: gradient exactly 0; padding never written;
// want_grad = false leaves the logits bit for bit and gives the same losses bit for bit.
//
// Fused LM head, fp32 (and bf16 / fp16 inputs with fp32 or 16-bit gradients), chunk sizes 1, 7, 32, N and
// N + 5, against the host lm_head_cross_entropy; bounds per element from float64 magnitudes:
//   L[n,v] = sum_c |h w|, Lmax[n] = max_v L; a logit is off by <= tol L (both GEMMs), which moves
//   the loss by <= 2 tol Lmax and dlogits[n,v] by <= 2 g p[n,v] tol Lmax, so
//   loss   |d| <= tol sum_n (2 Lmax[n] + |loss_n| + 1)
//   dh     |d| <= tol (sum_v |dl w| + 2 g Lmax[n] max_v |w[v,c]|)
//   dW     |d| <= tol (|dW0| + sum_n |dl h| + sum_n 2 g p[n,v] Lmax[n] |h[n,c]|)
// with tol = 2e-5 for fp32 (fp32 GEMMs over K <= 2053 on both sides), 2^-7 for bf16 inputs and 2^-10
// for fp16 (logits and dlogits stored in the 16-bit type: half an ulp, 2^-8 or 2^-11 relative, each),
// plus in fp16 the absolute 2^-25 of each subnormal dlogit (2^-25 sum_v |w| on dh, 2^-25 sum_n |h| on
// dW), plus the rounding of dh, and per chunk of dW, when they are 16-bit.
// Also: repeating a call gives the same bits; the loss without gradients equals the loss with them
// bit for bit; fully ignored chunks give dh = 0 rows.
// NaN logits: the row's loss and gradient are NaN, the other rows unaffected.
// fp16 overflow: with a grad_scale as large as fp16 loss scaling passes (2^24), the seed gradient at
// the target (-grad_scale (1 - p)) is stored as -Inf, never clamped to -65504, and the fused call's
// fp32 dh and dW come out non-finite (what makes a loss-scaled step skip); in fp32 they stay finite.
// Errors: a target >= V names the first such row and its value, leaves the logits untouched (row
// kernel) or dh zero and dW unchanged (fused), and the workspace works again afterwards.
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
#include <vector>

#include "reason/core/bf16.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/cross_entropy.cuh"
#include "reason/kernels/cross_entropy.hpp"
#include "cuda/cuda_test_util.hpp"

using namespace reason;

namespace {

int failures = 0;

void report(bool ok, const std::string& what, double ratio) {
  if (!ok) ++failures;
  std::printf("%s %s: error / bound %.3g\n", ok ? "ok  " : "FAIL", what.c_str(), ratio);
}

using test::from_float;
using test::to_float;
template <class T>
const char* type_name() {
  return test::storage_name<T>();
}

template <class T>
std::vector<T> download(const gpu::DeviceBuffer<T>& d) {
  std::vector<T> h(d.size());
  d.copy_to(h);
  return h;
}

// ---------------------------------------------------------------------------------------------
// The row kernel.

template <class T>
void check_rows(gpu::CrossEntropyWorkspace& ws, index_t N, index_t V, index_t pad, float grad_scale,
                std::uint64_t seed) {
  Philox rng(seed, 7);
  const index_t ld = V + pad;
  std::vector<T> x(static_cast<std::size_t>(N * ld));
  for (auto& e : x) e = from_float<T>(static_cast<float>(rng.uniform_double() * 8 - 4));
  std::vector<std::int32_t> targets(static_cast<std::size_t>(N));
  for (index_t n = 0; n < N; ++n) {
    targets[n] = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(V)));
    if (n % 5 == 2) targets[n] = -1;
    if (n % 11 == 4) targets[n] = -100;
  }
  if (N > 1) targets[1] = static_cast<std::int32_t>(V - 1);  // the last column as target
  if (N > 3 && V > 1) {  // row 3: every logit -inf but the target's (loss 0, gradient 0)
    targets[3] = static_cast<std::int32_t>(V / 2);
    for (index_t v = 0; v < V; ++v)
      if (v != V / 2) x[3 * ld + v] = from_float<T>(-INFINITY);
  }
  if (N > 0 && V > 2) {  // row 0: a few -inf logits besides the target
    targets[0] = 0;
    for (index_t v = 1; v < V; v += std::max<index_t>(2, V / 5)) x[v] = from_float<T>(-INFINITY);
  }
  // Host reference on the same values, widened to float.
  std::vector<float> xf(x.size()), dl_ref(static_cast<std::size_t>(N * V));
  for (std::size_t i = 0; i < x.size(); ++i) xf[i] = to_float(x[i]);
  const View<const float, 2> xv(xf.data(), {N, V}, {ld, 1});
  const View<const std::int32_t, 1> tv(targets.data(), {N});
  std::vector<double> loss_ref;
  kernels::detail::ce_rows<float>(xv, tv, 0, grad_scale, make_view(dl_ref.data(), N, V), true, loss_ref);
  const auto host = kernels::softmax_cross_entropy<float>(xv, tv, grad_scale, View<float, 2>{});

  gpu::DeviceBuffer<T> dx(x.size());
  gpu::DeviceBuffer<std::int32_t> dt(targets.size());
  dt.copy_from(targets);
  const View<const std::int32_t, 1> dtv(dt.data(), {N});
  const View<T, 2> dxv(dx.data(), {N, V}, {ld, 1});

  // Loss only: the logits stay as they were.
  dx.copy_from(x);
  const auto res_nograd = gpu::softmax_cross_entropy<T>(ws, dxv, dtv, grad_scale, false);
  std::vector<float> loss_nograd(static_cast<std::size_t>(N));
  REASON_CUDA_CHECK(cudaMemcpy(loss_nograd.data(), ws.row_losses(), N * sizeof(float), cudaMemcpyDeviceToHost));
  const bool untouched = std::memcmp(download(dx).data(), x.data(), x.size() * sizeof(T)) == 0;

  // With the gradient.
  const auto res = gpu::softmax_cross_entropy<T>(ws, dxv, dtv, grad_scale, true);
  std::vector<float> loss_got(static_cast<std::size_t>(N));
  REASON_CUDA_CHECK(cudaMemcpy(loss_got.data(), ws.row_losses(), N * sizeof(float), cudaMemcpyDeviceToHost));
  const std::vector<T> got = download(dx);

  double worst_loss = 0, worst_grad = 0, mag = 0;
  bool ignored_zero = true, pad_kept = true, same_loss = std::memcmp(loss_nograd.data(), loss_got.data(), N * sizeof(float)) == 0;
  const double rel_grad = test::StorageRounding<T>::rel + 2e-6, abs_grad = test::StorageRounding<T>::abs + 1e-37;
  for (index_t n = 0; n < N; ++n) {
    mag += std::abs(loss_ref[n]) + 1;
    worst_loss = std::max(worst_loss, std::abs(double(loss_got[n]) - loss_ref[n]) / (1e-6 * (std::abs(loss_ref[n]) + 1)));
    for (index_t v = 0; v < V; ++v) {
      const double g = to_float(got[n * ld + v]), r = dl_ref[n * V + v];
      if (targets[n] < 0) {
        ignored_zero = ignored_zero && g == 0;
        continue;
      }
      const double bound = rel_grad * (std::abs(r) + (v == targets[n] ? std::abs(grad_scale) : 0.0)) + abs_grad;
      worst_grad = std::max(worst_grad, std::abs(g - r) / bound);
    }
    for (index_t v = V; v < ld; ++v) pad_kept = pad_kept && std::memcmp(&got[n * ld + v], &x[n * ld + v], sizeof(T)) == 0;
  }
  const double sum_ratio = std::abs(res.loss_sum - host.loss_sum) / (1e-6 * mag + 1e-300);
  const bool ok = worst_loss <= 1 && worst_grad <= 1 && sum_ratio <= 1 && res.count == host.count &&
                  res_nograd.count == host.count && res_nograd.loss_sum == res.loss_sum && ignored_zero && pad_kept &&
                  untouched && same_loss;
  char what[256];
  std::snprintf(what, sizeof what, "rows %s N %lld V %lld pad %lld g %g: loss %.3g grad %.3g sum %.3g (count %lld/%lld)%s%s%s%s",
                type_name<T>(), static_cast<long long>(N), static_cast<long long>(V), static_cast<long long>(pad),
                grad_scale, worst_loss, worst_grad, sum_ratio, static_cast<long long>(res.count),
                static_cast<long long>(host.count), ignored_zero ? "" : " (ignored row not zero)",
                pad_kept ? "" : " (padding written)", untouched ? "" : " (want_grad=false wrote logits)",
                same_loss && res_nograd.loss_sum == res.loss_sum ? "" : " (loss differs without gradient)");
  report(ok, what, std::max({worst_loss, worst_grad, sum_ratio}));
}

// ---------------------------------------------------------------------------------------------
// The fused LM head.

struct LmRef {
  std::vector<float> dh, dw;       // the host kernel's results (dw starting from dw0)
  kernels::CrossEntropyResult res;
  std::vector<double> loss_row;    // float64 per-row loss (0 for ignored)
  std::vector<double> lmax;        // [N] max_v sum_c |h w|
  std::vector<double> dl;          // [N, V] float64 grad_scale * (softmax - onehot)
  std::vector<double> p;           // [N, V] float64 softmax (0 for ignored rows)
};

LmRef lm_reference(const std::vector<float>& h, const std::vector<float>& w, const std::vector<std::int32_t>& t,
                   const std::vector<float>& dw0, index_t N, index_t C, index_t V, float g) {
  LmRef r;
  r.dh.assign(static_cast<std::size_t>(N * C), 0.0f);
  r.dw = dw0;
  std::vector<float> scratch(static_cast<std::size_t>(16 * V));
  r.res = kernels::lm_head_cross_entropy<float>(make_view(h.data(), N, C), make_view(w.data(), V, C),
                                                View<const std::int32_t, 1>(t.data(), {N}), g,
                                                make_view(scratch.data(), 16, V), make_view(r.dh.data(), N, C),
                                                make_view(r.dw.data(), V, C));
  r.loss_row.assign(N, 0.0);
  r.lmax.assign(N, 0.0);
  r.dl.assign(static_cast<std::size_t>(N * V), 0.0);
  r.p.assign(static_cast<std::size_t>(N * V), 0.0);
  std::vector<double> z(V);
  for (index_t n = 0; n < N; ++n) {
    double mx = -INFINITY;
    for (index_t v = 0; v < V; ++v) {
      double s = 0, a = 0;
      for (index_t c = 0; c < C; ++c) {
        s += double(h[n * C + c]) * double(w[v * C + c]);
        a += std::abs(double(h[n * C + c]) * double(w[v * C + c]));
      }
      z[v] = s;
      mx = std::max(mx, s);
      r.lmax[n] = std::max(r.lmax[n], a);
    }
    if (t[n] < 0) continue;
    double sum = 0;
    for (index_t v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
    r.loss_row[n] = mx + std::log(sum) - z[t[n]];
    for (index_t v = 0; v < V; ++v) {
      r.p[n * V + v] = std::exp(z[v] - mx) / sum;
      r.dl[n * V + v] = g * (r.p[n * V + v] - (v == t[n] ? 1.0 : 0.0));
    }
  }
  return r;
}

/// One fused call on the device; results back on the host as float.
template <class T, class G>
struct LmGot {
  kernels::CrossEntropyResult res;
  std::vector<float> dh, dw;
};

template <class T, class G>
LmGot<T, G> lm_device(gpu::CublasLtGemm& gemm, gpu::CrossEntropyWorkspace& ws, const std::vector<T>& h,
                      const std::vector<T>& w, const std::vector<std::int32_t>& t, const std::vector<G>& dw0,
                      index_t N, index_t C, index_t V, float g, index_t R, bool want_dh, bool want_dw) {
  gpu::DeviceBuffer<T> dh_in(h.size()), dw_in(w.size()), scratch(static_cast<std::size_t>(R * V));
  gpu::DeviceBuffer<std::int32_t> dt(t.size());
  gpu::DeviceBuffer<G> ddh(static_cast<std::size_t>(N * C)), ddw(dw0.size());
  dh_in.copy_from(h);
  dw_in.copy_from(w);
  dt.copy_from(t);
  ddw.copy_from(dw0);
  std::vector<G> nan_fill(static_cast<std::size_t>(N * C), from_float<G>(NAN));  // dh must be overwritten
  ddh.copy_from(nan_fill);
  LmGot<T, G> out;
  out.res = gpu::lm_head_cross_entropy<T, G>(
      gemm, ws, make_view<const T>(dh_in.data(), N, C), make_view<const T>(dw_in.data(), V, C),
      View<const std::int32_t, 1>(dt.data(), {N}), g, make_view(scratch.data(), R, V),
      want_dh ? make_view(ddh.data(), N, C) : View<G, 2>{}, want_dw ? make_view(ddw.data(), V, C) : View<G, 2>{});
  for (G e : download(ddh)) out.dh.push_back(to_float(e));
  for (G e : download(ddw)) out.dw.push_back(to_float(e));
  return out;
}

template <class T, class G>
void check_lm_head(gpu::CublasLtGemm& gemm, gpu::CrossEntropyWorkspace& ws, index_t N, index_t C, index_t V,
                   std::uint64_t seed) {
  Philox rng(seed, 9);
  std::vector<T> h(static_cast<std::size_t>(N * C)), w(static_cast<std::size_t>(V * C));
  std::vector<G> dw0(static_cast<std::size_t>(V * C));
  for (auto& e : h) e = from_float<T>(static_cast<float>(rng.uniform_double() * 2 - 1));
  for (auto& e : w) e = from_float<T>(static_cast<float>(rng.uniform_double() - 0.5));
  for (auto& e : dw0) e = from_float<G>(static_cast<float>(rng.uniform_double() * 0.02 - 0.01));
  std::vector<std::int32_t> t(static_cast<std::size_t>(N));
  index_t count = 0;
  for (index_t n = 0; n < N; ++n) {
    t[n] = n % 4 == 1 ? -1 : static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(V)));
    if (n >= N - 9) t[n] = -100;  // the last rows ignored: whole chunks for small R
    count += t[n] >= 0;
  }
  const float g = 1.0f / static_cast<float>(count);
  std::vector<float> hf, wf, dw0f;
  for (T e : h) hf.push_back(to_float(e));
  for (T e : w) wf.push_back(to_float(e));
  for (G e : dw0) dw0f.push_back(to_float(e));
  const LmRef ref = lm_reference(hf, wf, t, dw0f, N, C, V, g);

  // 16-bit inputs: logits and dlogits rounded to T (bf16 2^-8, fp16 2^-11 relative): tol twice that.
  const double tol = std::is_same_v<T, float> ? 2e-5 : 2 * test::StorageRounding<T>::rel;
  const double dl_abs = test::StorageRounding<T>::abs;  // a subnormal fp16 dlogit's absolute rounding
  const double out_rel = test::StorageRounding<G>::rel, out_abs = test::StorageRounding<G>::abs;
  // sum_v |w[v, c]| and sum over counted rows of |h[n, c]|: what the dlogits' absolute rounding moves.
  std::vector<double> wsum(static_cast<std::size_t>(C), 0.0), hsum(static_cast<std::size_t>(C), 0.0);
  for (index_t v = 0; v < V; ++v)
    for (index_t c = 0; c < C; ++c) wsum[c] += std::abs(double(wf[v * C + c]));
  for (index_t n = 0; n < N; ++n)
    if (t[n] >= 0)
      for (index_t c = 0; c < C; ++c) hsum[c] += std::abs(double(hf[n * C + c]));
  // Column maxima of |w| for the dh bound.
  std::vector<double> wmax(static_cast<std::size_t>(C), 0.0);
  for (index_t v = 0; v < V; ++v)
    for (index_t c = 0; c < C; ++c) wmax[c] = std::max(wmax[c], std::abs(double(wf[v * C + c])));

  for (index_t R : {index_t{1}, index_t{7}, index_t{32}, N, N + 5}) {
    const index_t chunks = (N + R - 1) / R;
    const auto got = lm_device<T, G>(gemm, ws, h, w, t, dw0, N, C, V, g, R, true, true);
    // Loss.
    double loss_mag = 0;
    for (index_t n = 0; n < N; ++n)
      if (t[n] >= 0) loss_mag += 2 * ref.lmax[n] + std::abs(ref.loss_row[n]) + 1;
    const double loss_ratio = std::abs(got.res.loss_sum - ref.res.loss_sum) / (tol * loss_mag);
    // dh.
    double dh_ratio = 0;
    for (index_t n = 0; n < N; ++n)
      for (index_t c = 0; c < C; ++c) {
        double s = 0;
        for (index_t v = 0; v < V; ++v) s += std::abs(ref.dl[n * V + v] * wf[v * C + c]);
        const double r = ref.dh[n * C + c];
        double bound = tol * (s + 2 * g * ref.lmax[n] * wmax[c]) + (t[n] >= 0 ? dl_abs * wsum[c] : 0.0) + 1e-30;
        bound += out_rel * std::abs(r) + out_abs;
        const double d = std::abs(got.dh[n * C + c] - r);
        dh_ratio = std::max(dh_ratio, std::isnan(d) ? INFINITY : d / bound);
      }
    // dW.
    double dw_ratio = 0;
    for (index_t v = 0; v < V; ++v)
      for (index_t c = 0; c < C; ++c) {
        double s = 0, e = 0;
        for (index_t n = 0; n < N; ++n) {
          s += std::abs(ref.dl[n * V + v] * hf[n * C + c]);
          e += 2 * g * ref.p[n * V + v] * ref.lmax[n] * std::abs(hf[n * C + c]);
        }
        const double r = ref.dw[v * C + c], base = std::abs(dw0f[v * C + c]);
        double bound = tol * (base + s + e) + dl_abs * hsum[c] + 1e-30;
        bound += static_cast<double>(chunks + 1) * (out_rel * (base + s) + out_abs);
        const double d = std::abs(got.dw[v * C + c] - r);
        dw_ratio = std::max(dw_ratio, std::isnan(d) ? INFINITY : d / bound);
      }
    // Ignored tail rows: dh exactly zero.
    bool tail_zero = true;
    for (index_t n = N - 9; n < N; ++n)
      for (index_t c = 0; c < C; ++c) tail_zero = tail_zero && got.dh[n * C + c] == 0.0f;
    // The same call again gives the same bits; without gradients, the same loss bits.
    const auto again = lm_device<T, G>(gemm, ws, h, w, t, dw0, N, C, V, g, R, true, true);
    const auto no_grad = lm_device<T, G>(gemm, ws, h, w, t, dw0, N, C, V, g, R, false, false);
    const auto dh_only = lm_device<T, G>(gemm, ws, h, w, t, dw0, N, C, V, g, R, true, false);
    const bool repeat = again.res.loss_sum == got.res.loss_sum && again.dh == got.dh && again.dw == got.dw;
    const bool loss_same = no_grad.res.loss_sum == got.res.loss_sum && dh_only.res.loss_sum == got.res.loss_sum &&
                           dh_only.dh == got.dh;
    const bool dw_kept = no_grad.dw == dw0f && dh_only.dw == dw0f;
    const bool ok = loss_ratio <= 1 && dh_ratio <= 1 && dw_ratio <= 1 && got.res.count == ref.res.count && tail_zero &&
                    repeat && loss_same && dw_kept;
    char what[256];
    std::snprintf(what, sizeof what, "lm_head %s in, %s grads N %lld C %lld V %lld R %lld: loss %.3g dh %.3g dw %.3g%s%s%s%s",
                  type_name<T>(), type_name<G>(), static_cast<long long>(N), static_cast<long long>(C),
                  static_cast<long long>(V), static_cast<long long>(R), loss_ratio, dh_ratio, dw_ratio,
                  tail_zero ? "" : " (ignored rows: dh not 0)", repeat ? "" : " (repeat differs)",
                  loss_same ? "" : " (loss differs without gradients)", dw_kept ? "" : " (empty dw written)");
    report(ok, what, std::max({loss_ratio, dh_ratio, dw_ratio}));
  }
}

// ---------------------------------------------------------------------------------------------
// A NaN logit makes its row's loss and gradient NaN (as on the host), wherever it sits in the
// per-thread slices (first element of a thread, a thread with one element), and only that row's.

void check_nan(gpu::CrossEntropyWorkspace& ws) {
  for (index_t V : {index_t{7}, index_t{300}, index_t{5000}}) {
    const index_t N = 3;
    Philox rng(static_cast<std::uint64_t>(V), 5);
    std::vector<float> x(static_cast<std::size_t>(N * V));
    for (auto& e : x) e = static_cast<float>(rng.uniform_double() * 4 - 2);
    x[0] = NAN;              // row 0: NaN as the first element of thread 0
    x[V + V - 1] = NAN;      // row 1: NaN as the last element
    const std::vector<std::int32_t> t = {3, 1, 2};
    gpu::DeviceBuffer<float> dx(x.size());
    gpu::DeviceBuffer<std::int32_t> dt(t.size());
    dx.copy_from(x);
    dt.copy_from(t);
    const auto res = gpu::softmax_cross_entropy<float>(ws, make_view(dx.data(), N, V),
                                                        View<const std::int32_t, 1>(dt.data(), {N}), 1.0f, true);
    std::vector<float> loss(static_cast<std::size_t>(N));
    REASON_CUDA_CHECK(cudaMemcpy(loss.data(), ws.row_losses(), N * sizeof(float), cudaMemcpyDeviceToHost));
    const std::vector<float> g = download(dx);
    bool nan_rows = std::isnan(loss[0]) && std::isnan(loss[1]) && std::isnan(res.loss_sum), clean_row = !std::isnan(loss[2]);
    for (index_t v = 0; v < V; ++v) {
      nan_rows = nan_rows && std::isnan(g[v]) && std::isnan(g[V + v]);
      clean_row = clean_row && std::isfinite(g[2 * V + v]);
    }
    const bool ok = nan_rows && clean_row;
    if (!ok) ++failures;
    std::printf("%s NaN logits, V %lld: rows with a NaN %s, the clean row %s\n", ok ? "ok  " : "FAIL",
                static_cast<long long>(V), nan_rows ? "NaN" : "NOT NaN", clean_row ? "finite" : "NOT finite");
  }
}

// ---------------------------------------------------------------------------------------------
// fp16: a seed gradient beyond 65504 is stored as Inf (never clamped) and reaches dh and dW.

void check_fp16_overflow(gpu::CublasLtGemm& gemm, gpu::CrossEntropyWorkspace& ws) {
  const index_t N = 4, V = 300, C = 16;
  const float big = 0x1p24f;  // a grad_scale as fp16 loss scaling passes: S 2^24 times 1 / tokens >= 1
  Philox rng(77, 4);
  std::vector<__half> x(static_cast<std::size_t>(N * V));
  for (auto& e : x) e = from_float<__half>(static_cast<float>(rng.uniform_double() * 4 - 2));
  const std::vector<std::int32_t> t = {0, 17, 299, 150};
  gpu::DeviceBuffer<__half> dx(x.size());
  gpu::DeviceBuffer<std::int32_t> dt(t.size());
  dx.copy_from(x);
  dt.copy_from(t);
  const View<const std::int32_t, 1> dtv(dt.data(), {N});
  const auto res = gpu::softmax_cross_entropy<__half>(ws, make_view(dx.data(), N, V), dtv, big, true);
  const std::vector<__half> g = download(dx);
  // Row kernel: the target's -big (1 - p) is -Inf; the others are big p, +Inf exactly where that
  // exceeds fp16's range (p from the widened logits in double; a 1% margin around 65520).
  bool rows_ok = std::isfinite(res.loss_sum);
  for (index_t n = 0; n < N; ++n) {
    double mx = -INFINITY, sum = 0;
    for (index_t v = 0; v < V; ++v) mx = std::max(mx, double(to_float(x[n * V + v])));
    for (index_t v = 0; v < V; ++v) sum += std::exp(double(to_float(x[n * V + v])) - mx);
    for (index_t v = 0; v < V; ++v) {
      const float got = to_float(g[n * V + v]);
      const double want = double(big) * std::exp(double(to_float(x[n * V + v])) - mx) / sum;
      if (v == t[n])
        rows_ok = rows_ok && got == -INFINITY;
      else if (want > 65520 * 1.01)
        rows_ok = rows_ok && got == INFINITY;
      else if (want < 65520 * 0.99)
        rows_ok = rows_ok && std::isfinite(got) && std::abs(got - want) <= (0x1p-11 + 1e-5) * want + 0x1p-25;
    }
  }
  // Fused: every dh element of a counted row, and every dW row of a target, is non-finite.
  std::vector<__half> h(static_cast<std::size_t>(N * C)), w(static_cast<std::size_t>(V * C));
  for (auto& e : h) e = from_float<__half>(static_cast<float>(rng.uniform_double() * 2 - 1));
  for (auto& e : w) e = from_float<__half>(static_cast<float>(rng.uniform_double() - 0.5));
  const auto got = lm_device<__half, float>(gemm, ws, h, w, t, std::vector<float>(w.size(), 0.0f), N, C, V, big, 3,
                                            true, true);
  bool fused_ok = std::isfinite(got.res.loss_sum);
  for (index_t n = 0; n < N; ++n)
    for (index_t c = 0; c < C; ++c)
      fused_ok = fused_ok && !std::isfinite(got.dh[n * C + c]) && !std::isfinite(got.dw[t[n] * C + c]);
  // The same in fp32 stays finite: it is the fp16 storage that overflows.
  std::vector<float> hf, wf;
  for (__half e : h) hf.push_back(to_float(e));
  for (__half e : w) wf.push_back(to_float(e));
  const auto f32 = lm_device<float, float>(gemm, ws, hf, wf, t, std::vector<float>(wf.size(), 0.0f), N, C, V, big, 3,
                                           true, true);
  bool control_finite = true;
  for (float e : f32.dh) control_finite = control_finite && std::isfinite(e);
  for (float e : f32.dw) control_finite = control_finite && std::isfinite(e);
  const bool ok = rows_ok && fused_ok && control_finite;
  if (!ok) ++failures;
  std::printf("%s fp16 seed gradient at grad_scale 2^24: rows %s, fused dh / dW %s, fp32 control %s\n",
              ok ? "ok  " : "FAIL", rows_ok ? "-Inf at targets, +Inf past 65504" : "WRONG",
              fused_ok ? "non-finite" : "NOT non-finite", control_finite ? "finite" : "NOT finite");
}

// ---------------------------------------------------------------------------------------------
// Errors.

bool names(const Error& e, const std::string& part) { return std::string(e.what()).find(part) != std::string::npos; }

void check_errors(gpu::CublasLtGemm& gemm, gpu::CrossEntropyWorkspace& ws) {
  const index_t N = 12, V = 300, C = 16;
  Philox rng(99, 3);
  std::vector<float> x(static_cast<std::size_t>(N * V));
  for (auto& e : x) e = static_cast<float>(rng.uniform_double() * 4 - 2);
  std::vector<std::int32_t> t(static_cast<std::size_t>(N));
  for (auto& e : t) e = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(V)));
  t[2] = -1;
  t[5] = static_cast<std::int32_t>(V);       // the first bad row
  t[9] = static_cast<std::int32_t>(V + 77);  // a later one
  gpu::DeviceBuffer<float> dx(x.size());
  gpu::DeviceBuffer<std::int32_t> dt(t.size());
  dx.copy_from(x);
  dt.copy_from(t);
  const View<const std::int32_t, 1> dtv(dt.data(), {N});
  // Row kernel: named error, logits untouched.
  {
    bool ok = false;
    std::string msg = "no error";
    try {
      (void)gpu::softmax_cross_entropy<float>(ws, make_view(dx.data(), N, V), dtv, 1.0f, true);
    } catch (const Error& e) {
      msg = e.what();
      ok = names(e, "targets[5] = 300 is out of range for vocabulary size 300") && names(e, "gpu::softmax_cross_entropy");
    }
    const bool untouched = download(dx) == x;
    if (!ok || !untouched) ++failures;
    std::printf("%s out-of-range target (rows): %s%s\n", ok && untouched ? "ok  " : "FAIL", msg.c_str(),
                untouched ? "" : " (logits written)");
  }
  // The workspace works again, and agrees with the host.
  {
    t[5] = 3;
    t[9] = -1;
    dt.copy_from(t);
    const auto res = gpu::softmax_cross_entropy<float>(ws, make_view(dx.data(), N, V), dtv, 1.0f, false);
    const auto host = kernels::softmax_cross_entropy<float>(make_view<const float>(x.data(), N, V),
                                                            View<const std::int32_t, 1>(t.data(), {N}), 1.0f,
                                                            View<float, 2>{});
    const bool ok = res.count == host.count && std::abs(res.loss_sum - host.loss_sum) <= 1e-6 * (std::abs(host.loss_sum) + N);
    if (!ok) ++failures;
    std::printf("%s after the error: loss %.9g host %.9g count %lld\n", ok ? "ok  " : "FAIL", res.loss_sum, host.loss_sum,
                static_cast<long long>(res.count));
  }
  // Fused: named error in a later chunk, dh zero, dW unchanged.
  {
    std::vector<float> h(static_cast<std::size_t>(N * C)), w(static_cast<std::size_t>(V * C)), dw0(w.size());
    for (auto& e : h) e = static_cast<float>(rng.uniform_double() * 2 - 1);
    for (auto& e : w) e = static_cast<float>(rng.uniform_double() - 0.5);
    for (auto& e : dw0) e = static_cast<float>(rng.uniform_double() * 2 - 1);
    t[10] = static_cast<std::int32_t>(V + 1);
    bool ok = false;
    std::string msg = "no error";
    try {
      (void)lm_device<float, float>(gemm, ws, h, w, t, dw0, N, C, V, 0.5f, 4, true, true);
    } catch (const Error& e) {
      msg = e.what();
      ok = names(e, "targets[10] = 301 is out of range for vocabulary size 300") &&
           names(e, "gpu::lm_head_cross_entropy");
    }
    if (!ok) ++failures;
    std::printf("%s out-of-range target (fused): %s\n", ok ? "ok  " : "FAIL", msg.c_str());
    // The same through buffers kept here, to look at dh and dW after the throw.
    gpu::DeviceBuffer<float> dh_in(h.size()), dw_in(w.size()), scratch(static_cast<std::size_t>(4 * V)),
        ddh(h.size()), ddw(w.size());
    dh_in.copy_from(h);
    dw_in.copy_from(w);
    ddw.copy_from(dw0);
    dt.copy_from(t);
    try {
      (void)gpu::lm_head_cross_entropy<float>(gemm, ws, make_view<const float>(dh_in.data(), N, C),
                                               make_view<const float>(dw_in.data(), V, C), dtv, 0.5f,
                                               make_view(scratch.data(), 4, V), make_view(ddh.data(), N, C),
                                               make_view(ddw.data(), V, C));
    } catch (const Error&) {
    }
    bool dh_zero = true;
    for (float e : download(ddh)) dh_zero = dh_zero && e == 0.0f;
    const bool dw_same = download(ddw) == dw0;
    if (!dh_zero || !dw_same) ++failures;
    std::printf("%s after the fused error: dh %s, dW %s\n", dh_zero && dw_same ? "ok  " : "FAIL",
                dh_zero ? "zero" : "NOT zero", dw_same ? "unchanged" : "CHANGED");
    // Bad arguments are named.
    try {
      (void)gpu::lm_head_cross_entropy<float>(gemm, ws, make_view<const float>(dh_in.data(), N, C),
                                               make_view<const float>(dw_in.data(), V, C), dtv, 0.5f,
                                               make_view(scratch.data(), 4, V - 1), View<float, 2>{}, View<float, 2>{});
      ++failures;
      std::printf("FAIL: a scratch of the wrong width was accepted\n");
    } catch (const Error& e) {
      const bool named = names(e, "scratch");
      if (!named) ++failures;
      std::printf("%s bad scratch: %s\n", named ? "ok  " : "FAIL", e.what());
    }
  }
}

}  // namespace

int main() {
  try {
    if (const int rc = test::exit_status_without_gpu(); rc >= 0) return rc;
    (void)gpu::require_device(0);
    gpu::CublasLtGemm gemm;
    gpu::CrossEntropyWorkspace ws;
    std::uint64_t seed = 1;
    struct RowCase {
      index_t N, V, pad;
      float g;
    };
    const RowCase rows[] = {{37, 7, 0, 1.0f},      {33, 262, 8, 0.37f},    {8, 50257, 0, 1.0f / 6},
                            {5, 131072, 0, 1.0f},  {3, 262144, 3, 0.5f},   {1, 1, 0, 1.0f}};
    for (const auto& c : rows) {
      check_rows<float>(ws, c.N, c.V, c.pad, c.g, ++seed);
      check_rows<__nv_bfloat16>(ws, c.N, c.V, c.pad, c.g, ++seed);
      check_rows<__half>(ws, c.N, c.V, c.pad, c.g, ++seed);
    }
    check_lm_head<float, float>(gemm, ws, 50, 64, 517, ++seed);
    check_lm_head<float, float>(gemm, ws, 40, 40, 2053, ++seed);
    check_lm_head<__nv_bfloat16, float>(gemm, ws, 50, 64, 517, ++seed);
    check_lm_head<__nv_bfloat16, __nv_bfloat16>(gemm, ws, 40, 32, 1024, ++seed);
    check_lm_head<__half, float>(gemm, ws, 50, 64, 517, ++seed);
    check_lm_head<__half, __half>(gemm, ws, 40, 32, 1024, ++seed);
    check_fp16_overflow(gemm, ws);
    check_nan(ws);
    check_errors(gemm, ws);
    std::printf("%s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
