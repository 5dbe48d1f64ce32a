// The quantized products on the GPU (kernels/quant_int8.cuh, quant_int4.cuh, quant_fp8.cuh) against
// the host quantizers (quant/int8.hpp, int4.hpp, fp8_block.hpp), on fresh random inputs and
// adversarial ones (outliers, zero rows, an all-zero matrix, constant and one-signed rows, values
// near the smallest normal float, blocks of very different magnitude), shapes with ragged M, N and
// K, M = 1, padded rows and unaligned rows (the scalar-load paths).
//
// What is compared, and how:
//   uploads            the device copy of each Packed holds the host's bytes (and cuBLASLt's padded
//                      fp8 scale layout holds the host's scales at [p * L4 + b]);
//   INT8               device activation quantization == host quantize_activations, bit for bit
//                      (codes, scales, zero points, row sums); int32 accumulators == host
//                      int8_accumulate exactly, on the cuBLASLt path and on our kernel; y == host
//                      Int8<S>::matmul bit for bit (the epilogue is exact up to one rounding done
//                      in the host's order); y against the float64 product of the dequantized
//                      operands: |y - ref| <= 2^-22 sum|x_dq w_dq| + 2^-23 |ref| (each dequantized
//                      float is within 2^-24 of the exact s (q - z); y is one rounding of exact);
//   INT4 (no activation quantization): |y - ref| <= (K + 8) 2^-24 sum_k |x w_dq| against the
//                      float64 product with the dequantized W (the bound of any fp32 summation
//                      order), and against the host Int4Group::matmul within twice that;
//   FP8                device activation quantization == host, bit for bit (codes and tile
//                      scales); our kernel == host matmul_fp8_blocks bit for bit (E4M3 and E5M2);
//                      the cuBLASLt path (E4M3 on sm_90, M and N multiples of 4, K of 16) against
//                      the host within 2^-9 sum|x_dq w_dq| (the tensor cores' reduced-precision
//                      accumulation inside a 128-chunk; a wrong scale layout is off by far more:
//                      the "blocky" inputs give every 128-block its own magnitude), and against
//                      the float64 product of the dequantized operands (bound: our kernel
//                      (chunks + 4) 2^-24 sum|x_dq w_dq|, cuBLASLt the same 2^-9; both plus
//                      2^-150 sum|q_x q_w| where the float s_x s_w is subnormal).
//   paths              on sm_90 the (not tiny) shapes cuBLASLt's rules admit must take it (so the
//                      tensor-core path is really tested); a workspace with use_cublaslt = false
//                      runs our kernels on the same cases.
//   errors             wrong shapes, strides, misaligned pointers, a group size that does not
//                      divide K, a Packed that does not match the scheme, and NaN / Inf activations
//                      (at once, and deferred with synchronous_checks = false) give reason::Error
//                      messages naming the tensor.
// Exit status: 0 pass, 1 a check failed, 77 no GPU (CTest: skipped), 2 an unexpected error.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/cuda_check.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/quant_fp8.cuh"
#include "reason/kernels/quant_int4.cuh"
#include "reason/kernels/quant_int8.cuh"
#include "reason/quant/quant.hpp"
#include "cuda/cuda_test_util.hpp"

using namespace reason;
namespace hq = reason::quant;
namespace gq = reason::gpu::quant;

namespace {

int failures = 0;

void report(bool ok, const std::string& what) {
  if (!ok) ++failures;
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

// ---- inputs -----------------------------------------------------------------------------------

enum class Kind { uniform, outliers, zero_rows, zeros, constant, negative, tiny, blocky };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::uniform: return "uniform";
    case Kind::outliers: return "outliers";
    case Kind::zero_rows: return "zero_rows";
    case Kind::zeros: return "zeros";
    case Kind::constant: return "constant";
    case Kind::negative: return "negative";
    case Kind::tiny: return "tiny";
    case Kind::blocky: return "blocky";
  }
  return "?";
}

/// rows x cols values of the given kind (row-major, contiguous), from Philox(seed).
std::vector<float> make_input(index_t rows, index_t cols, Kind kind, std::uint64_t seed) {
  Philox rng(seed, 7);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      float& x = v[static_cast<std::size_t>(r * cols + c)];
      const float u = 2.0f * rng.uniform() - 1.0f;
      switch (kind) {
        case Kind::uniform: x = u; break;
        case Kind::outliers: x = (rng.uniform() < 0.01f) ? 100.0f * u : u; break;  // LLM.int8()-style outliers
        case Kind::zero_rows: x = (r % 3 == 1) ? 0.0f : u; break;
        case Kind::zeros: x = 0.0f; break;
        case Kind::constant: x = (r % 2 == 0) ? 0.75f : -2.5f; break;
        case Kind::negative: x = -std::abs(u) - 0.25f; break;
        case Kind::tiny: x = u * 3e-38f; break;  // scales hit the FLT_MIN floor; codes of subnormals
        case Kind::blocky:
          x = u * std::ldexp(1.0f, static_cast<int>((c / 128 * 5 + r / 128 * 3 + r % 3) % 17) - 8);
          break;
      }
    }
  return v;
}

// ---- device helpers ---------------------------------------------------------------------------

template <class T>
gpu::DeviceBuffer<T> upload_vec(const std::vector<T>& h) {
  gpu::DeviceBuffer<T> d(h.size(), "test buffer");
  d.copy_from(std::span<const T>(h));
  return d;
}

template <class T>
std::vector<T> download(const T* d, std::size_t n) {
  std::vector<T> h(n);
  if (n > 0) REASON_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

/// x [rows, cols] in a device buffer with row stride ld >= cols (padding filled with NaN, which no
/// kernel may read), at `offset` floats from the buffer's start (offset 1: rows not 16-byte aligned).
struct DeviceMatrix {
  gpu::DeviceBuffer<float> buf;
  index_t rows, cols, ld, offset;
  DeviceMatrix(const std::vector<float>& x, index_t rows_, index_t cols_, index_t pad = 0, index_t offset_ = 0)
      : rows(rows_), cols(cols_), ld(cols_ + pad), offset(offset_) {
    std::vector<float> h(static_cast<std::size_t>(offset + rows * ld), std::numeric_limits<float>::quiet_NaN());
    for (index_t r = 0; r < rows; ++r)
      std::memcpy(&h[static_cast<std::size_t>(offset + r * ld)], &x[static_cast<std::size_t>(r * cols)],
                  static_cast<std::size_t>(cols) * sizeof(float));
    buf = upload_vec(h);
  }
  View<float, 2> view() { return View<float, 2>(buf.data() + offset, {rows, cols}, {ld, 1}); }
  std::vector<float> full() const { return download(buf.data(), buf.size()); }
  /// The [rows, cols] values (no padding).
  std::vector<float> values() const {
    const std::vector<float> h = full();
    std::vector<float> v(static_cast<std::size_t>(rows * cols));
    for (index_t r = 0; r < rows; ++r)
      std::memcpy(&v[static_cast<std::size_t>(r * cols)], &h[static_cast<std::size_t>(offset + r * ld)],
                  static_cast<std::size_t>(cols) * sizeof(float));
    return v;
  }
  /// Whether the padding between rows is still NaN (never written).
  bool padding_kept() const {
    const std::vector<float> h = full();
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = cols; c < ld; ++c)
        if (!std::isnan(h[static_cast<std::size_t>(offset + r * ld + c)])) return false;
    return true;
  }
};

std::vector<float> nan_matrix(index_t rows, index_t cols) {
  return std::vector<float>(static_cast<std::size_t>(rows * cols), std::numeric_limits<float>::quiet_NaN());
}

// ---- comparisons ------------------------------------------------------------------------------

/// The number of positions where two arrays differ in their bytes, and the first one.
template <class T>
std::string bit_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size());
  std::size_t n = 0, first = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      if (n++ == 0) first = i;
    }
  if (n == 0) return {};
  std::string s = std::to_string(n) + " of " + std::to_string(a.size()) + " differ, first at " + std::to_string(first);
  if constexpr (std::is_arithmetic_v<T>)
    s += " (" + std::to_string(static_cast<double>(a[first])) + " vs " + std::to_string(static_cast<double>(b[first])) +
         ")";
  return s;
}

/// ref [M, N] = sum_k x[m, k] w[n, k] in double, and mag = sum_k |x w|.
struct Reference {
  std::vector<double> y, mag;
};
Reference reference(const std::vector<float>& x, const std::vector<float>& w, index_t M, index_t N, index_t K) {
  Reference r{std::vector<double>(static_cast<std::size_t>(M * N)),
              std::vector<double>(static_cast<std::size_t>(M * N))};
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) {
      double s = 0, a = 0;
      for (index_t k = 0; k < K; ++k) {
        const double p =
            double(x[static_cast<std::size_t>(m * K + k)]) * double(w[static_cast<std::size_t>(n * K + k)]);
        s += p;
        a += std::abs(p);
      }
      r.y[static_cast<std::size_t>(m * N + n)] = s;
      r.mag[static_cast<std::size_t>(m * N + n)] = a;
    }
  return r;
}

/// The largest |got - want| / bound(i) (<= 1 passes), for bound(i) = rel_mag mag[i] + rel_want |want[i]|
/// + (K + 8) 2^-149 (+ extra[i]): the third term for results that underflow float (each rounding
/// below FLT_MIN may lose up to the smallest subnormal; the "tiny" inputs' products do).
double worst_ratio(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag,
                   double rel_mag, double rel_want, index_t K, const std::vector<double>* extra = nullptr) {
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - want[i]);
    const double bound = rel_mag * mag[i] + rel_want * std::abs(want[i]) + double(K + 8) * 0x1p-149 +
                         (extra != nullptr ? (*extra)[i] : 0.0);
    worst = std::max(worst, std::isfinite(got[i]) ? err / bound : std::numeric_limits<double>::infinity());
  }
  return worst;
}

std::string shape_label(const char* scheme, index_t M, index_t N, index_t K, Kind kx, Kind kw) {
  return std::string(scheme) + " M " + std::to_string(M) + " N " + std::to_string(N) + " K " + std::to_string(K) +
         " x:" + kind_name(kx) + " w:" + kind_name(kw);
}

std::vector<double> as_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

/// Runs f, which must throw reason::Error containing `needle`.
template <class F>
void expect_error(const std::string& what, F&& f, const std::string& needle) {
  const std::string mismatch = test::error_mismatch(f, needle);
  report(mismatch.empty(), "error: " + what + (mismatch.empty() ? "" : " — " + mismatch));
}

// ---- INT8 -------------------------------------------------------------------------------------

struct Shape {
  index_t M, N, K;
};

template <hq::Int8Scheme S>
void check_int8(gq::Workspace& ws, const char* scheme, Shape s, Kind kx, Kind kw, std::uint64_t seed,
                bool require_cublaslt, index_t x_pad = 0, index_t x_offset = 0) {
  using Q = hq::Int8<S>;
  const auto [M, N, K] = s;
  const std::string label = shape_label(scheme, M, N, K, kx, kw) + (ws.options().use_cublaslt ? "" : " (own)");
  const std::vector<float> x = make_input(M, K, kx, seed), w = make_input(N, K, kw, seed + 1);
  const hq::Int8Matrix wq = Q::quantize(make_view(w.data(), N, K), "w");
  const hq::Int8Matrix xq = Q::quantize_activations(make_view(x.data(), M, K), "x");

  const gq::DevicePacked<Q> dw = gq::upload<Q>(wq);
  const std::string up = bit_diff(download(dw.codes.data(), dw.codes.size()), wq.codes) +
                         bit_diff(download(dw.scales.data(), dw.scales.size()), wq.scales) +
                         bit_diff(download(dw.zero_points.data(), dw.zero_points.size()), wq.zero_points) +
                         bit_diff(download(dw.row_sums.data(), dw.row_sums.size()), wq.row_sums);
  report(up.empty() && dw.bytes() == wq.bytes(), label + ": upload keeps the host bytes " + up);

  DeviceMatrix dx(x, M, K, x_pad, x_offset);
  // Activation quantization, bit for bit.
  const gq::Int8Operand aq = gq::quantize_activations<S>(ws, View<const float, 2>(dx.view()), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::size_t grids = xq.scales.size();
  std::string qd = bit_diff(download(aq.codes, xq.codes.size()), xq.codes) +
                   bit_diff(download(aq.scales, grids), xq.scales) +
                   bit_diff(download(aq.row_sums, xq.row_sums.size()), xq.row_sums);
  if (!xq.symmetric()) qd += bit_diff(download(aq.zero_points, grids), xq.zero_points);
  report(qd.empty() && aq.scale_per_row == (S.activations == hq::ActivationScale::per_token) &&
             aq.symmetric() == xq.symmetric(),
         label + ": activation codes, scales, zero points, row sums bit for bit " + qd);

  // int32 accumulators, exactly.
  std::vector<std::int32_t> acc_host(static_cast<std::size_t>(M * N));
  hq::int8_accumulate(xq, wq, make_view(acc_host.data(), M, N));
  gpu::DeviceBuffer<std::int32_t> dacc(acc_host.size(), "acc");
  const gq::MatmulPath acc_path =
      gq::int8_accumulate(ws, aq, dw.operand(), View<std::int32_t, 2>(dacc.data(), {M, N}), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::string ad = bit_diff(download(dacc.data(), dacc.size()), acc_host);
  report(ad.empty(), label + ": int32 accumulators exact (" + gq::path_name(acc_path) + ") " + ad);

  // The product: the host's bits, and the float64 reference of the dequantized operands.
  std::vector<float> y_host(static_cast<std::size_t>(M * N));
  Q::matmul(make_view(x.data(), M, K), wq, make_view(y_host.data(), M, N));
  DeviceMatrix dy(nan_matrix(M, N), M, N, 4);  // ldy = N + 4: a multiple of 4 where N is (IMMA's rule)
  const gq::MatmulPath path = gq::matmul(ws, View<const float, 2>(dx.view()), dw, dy.view(), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> y = dy.values();
  const std::string yd = bit_diff(y, y_host);
  std::vector<float> xd(x.size()), wd(w.size());
  hq::dequantize_int8(xq, make_view(xd.data(), M, K));
  Q::dequantize(wq, make_view(wd.data(), N, K));
  const Reference ref = reference(xd, wd, M, N, K);
  const double ratio = worst_ratio(y, ref.y, ref.mag, 0x1p-22, 0x1p-23, K);
  char buf[96];
  std::snprintf(buf, sizeof buf, ", float64 error / bound %.3g", ratio);
  report(yd.empty() && ratio <= 1.0 && dy.padding_kept(), label + ": y == host bit for bit (" + gq::path_name(path) +
                                                              ")" + buf +
                                                              (dy.padding_kept() ? "" : " padding written") + " " + yd);
  if (require_cublaslt && ws.options().use_cublaslt && ws.capability() / 10 == 9)
    report(path == gq::MatmulPath::cublaslt && acc_path == gq::MatmulPath::cublaslt,
           label + ": takes the cuBLASLt IMMA path on sm_90");
  if (!ws.options().use_cublaslt) report(path == gq::MatmulPath::own_kernel, label + ": own kernel when asked");
}

template <hq::Int8Scheme S>
void int8_cases(gq::Workspace& ws, const char* scheme, std::uint64_t& seed) {
  // {shape, must take cuBLASLt on sm_90}: its rules hold (N and K multiples of 4) and the shape is not
  // tiny (where the heuristic may fairly have no algorithm; such shapes still run, print their path
  // and are checked against the host all the same).
  const struct {
    Shape s;
    bool lt;
  } cases[] = {{{1, 128, 256}, false}, {{64, 96, 128}, true}, {{37, 160, 320}, true},
               {{5, 33, 65}, false},  {{1, 33, 64}, false},  {{130, 256, 1024}, true}};
  for (const auto& c : cases) check_int8<S>(ws, scheme, c.s, Kind::uniform, Kind::uniform, ++seed, c.lt);
  for (Kind k : {Kind::outliers, Kind::zero_rows, Kind::constant, Kind::negative, Kind::tiny})
    check_int8<S>(ws, scheme, {19, 64, 192}, k, k, ++seed, true);
  check_int8<S>(ws, scheme, {8, 64, 128}, Kind::zeros, Kind::uniform, ++seed, false);
  check_int8<S>(ws, scheme, {8, 64, 128}, Kind::uniform, Kind::zeros, ++seed, false);
  check_int8<S>(ws, scheme, {7, 48, 96}, Kind::uniform, Kind::outliers, ++seed, true, 5, 1);  // padded, unaligned rows
}

// ---- INT4 -------------------------------------------------------------------------------------

template <index_t G, hq::Symmetry Sym>
void check_int4(gq::Workspace& ws, Shape s, Kind kx, Kind kw, std::uint64_t seed, index_t x_pad = 0,
                index_t x_offset = 0) {
  using Q = hq::Int4Group<G, Sym>;
  const auto [M, N, K] = s;
  const std::string label = shape_label(Q::name, M, N, K, kx, kw) + (x_offset || x_pad ? " (strided x)" : "");
  const std::vector<float> x = make_input(M, K, kx, seed), w = make_input(N, K, kw, seed + 1);
  const hq::Int4Matrix<G> wq = Q::quantize(make_view(w.data(), N, K), "w");
  const gq::DevicePacked<Q> dw = gq::upload<Q>(wq);
  const std::string up = bit_diff(download(dw.codes.data(), dw.codes.size()), wq.codes) +
                         bit_diff(download(dw.scales.data(), dw.scales.size()), wq.scales) +
                         bit_diff(download(dw.zero_points.data(), dw.zero_points.size()), wq.zero_points);
  report(up.empty() && dw.bytes() == wq.bytes(), label + ": upload keeps the host bytes " + up);

  DeviceMatrix dx(x, M, K, x_pad, x_offset), dy(nan_matrix(M, N), M, N, 2);
  const gq::MatmulPath path = gq::matmul(ws, View<const float, 2>(dx.view()), dw, dy.view(), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> y = dy.values();
  std::vector<float> y_host(static_cast<std::size_t>(M * N)), wd(w.size());
  Q::matmul(make_view(x.data(), M, K), wq, make_view(y_host.data(), M, N));
  Q::dequantize(wq, make_view(wd.data(), N, K));
  const Reference ref = reference(x, wd, M, N, K);
  const double tol = double(K + 8) * 0x1p-24;
  const double r64 = worst_ratio(y, ref.y, ref.mag, tol, 0.0, K),
               rhost = worst_ratio(y, as_double(y_host), ref.mag, 2 * tol, 0.0, K);
  char buf[128];
  std::snprintf(buf, sizeof buf, " (%s, %s): error / bound vs float64 %.3g, vs host %.3g", gq::path_name(path),
                M <= gq::detail::int4_gemv_max_rows ? "gemv" : "tiled", r64, rhost);
  report(r64 <= 1.0 && rhost <= 1.0 && dy.padding_kept(), label + buf + (dy.padding_kept() ? "" : " padding written"));
}

template <index_t G, hq::Symmetry Sym>
void int4_cases(gq::Workspace& ws, std::uint64_t& seed) {
  for (const Shape s : {Shape{1, 100, 256}, Shape{2, 64, 512}, Shape{3, 64, 128}, Shape{8, 40, 384}, Shape{16, 72, 384},
                        Shape{17, 130, 256}, Shape{200, 256, 1024}, Shape{65, 129, 128}})
    check_int4<G, Sym>(ws, s, Kind::uniform, Kind::uniform, ++seed);
  for (Kind k : {Kind::outliers, Kind::zero_rows, Kind::constant, Kind::negative, Kind::tiny, Kind::zeros}) {
    check_int4<G, Sym>(ws, {1, 64, 256}, Kind::uniform, k, ++seed);
    check_int4<G, Sym>(ws, {33, 64, 256}, k, k, ++seed);
  }
  check_int4<G, Sym>(ws, {1, 64, 256}, Kind::uniform, Kind::uniform, ++seed, 0, 1);   // unaligned x rows
  check_int4<G, Sym>(ws, {40, 64, 256}, Kind::uniform, Kind::uniform, ++seed, 3, 0);  // padded x rows
}

// ---- FP8 --------------------------------------------------------------------------------------

template <class F>
void check_fp8(gq::Workspace& ws, Shape s, Kind kx, Kind kw, std::uint64_t seed, bool require_cublaslt,
               index_t x_pad = 0, index_t x_offset = 0) {
  using Q = hq::Fp8Block<F>;
  const auto [M, N, K] = s;
  const std::string label = shape_label(Q::name, M, N, K, kx, kw) + (ws.options().use_cublaslt ? "" : " (own)");
  const std::vector<float> x = make_input(M, K, kx, seed), w = make_input(N, K, kw, seed + 1);
  const hq::Fp8BlockMatrix<F> wq = Q::quantize(make_view(w.data(), N, K), "w");
  const hq::Fp8BlockMatrix<F> xq = Q::quantize_activations(make_view(x.data(), M, K), "x");
  auto bits_of = [](const std::vector<F>& v) {
    std::vector<std::uint8_t> b(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) b[i] = v[i].bits;
    return b;
  };

  const gq::DevicePacked<Q> dw = gq::upload<Q>(wq);
  std::string up = bit_diff(download(dw.codes.data(), dw.codes.size()), bits_of(wq.codes)) +
                   bit_diff(download(dw.scales.data(), dw.scales.size()), wq.scales);
  const index_t rb = wq.row_blocks(), cb = wq.col_blocks(), l4 = (cb + 3) / 4 * 4;
  const std::vector<float> lt = download(dw.cublaslt_scales(), static_cast<std::size_t>(rb * l4));
  for (index_t p = 0; p < rb; ++p)
    for (index_t b = 0; b < cb; ++b)
      if (lt[static_cast<std::size_t>(p * l4 + b)] != wq.scales[static_cast<std::size_t>(p * cb + b)])
        up = " cuBLASLt scale layout wrong";
  report(up.empty() && dw.bytes() == wq.bytes(), label + ": upload keeps the host bytes" + up);

  DeviceMatrix dx(x, M, K, x_pad, x_offset);
  const gq::Fp8Operand aq = gq::quantize_activations<F>(ws, View<const float, 2>(dx.view()), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> ts = download(aq.scales, static_cast<std::size_t>(M * cb));
  std::vector<float> ts_host(ts.size());  // the host's [M, cb] scales in the device's [cb, M] order
  for (index_t m = 0; m < M; ++m)
    for (index_t c = 0; c < cb; ++c)
      ts_host[static_cast<std::size_t>(c * M + m)] = xq.scales[static_cast<std::size_t>(m * cb + c)];
  const std::string qd = bit_diff(download(aq.codes, xq.codes.size()), bits_of(xq.codes)) + bit_diff(ts, ts_host);
  report(qd.empty(), label + ": activation codes and tile scales bit for bit " + qd);

  std::vector<float> y_host(static_cast<std::size_t>(M * N)), xd(x.size()), wd(w.size());
  Q::matmul(make_view(x.data(), M, K), wq, make_view(y_host.data(), M, N));
  hq::dequantize_fp8_blocks(xq, make_view(xd.data(), M, K));
  Q::dequantize(wq, make_view(wd.data(), N, K));
  const Reference ref = reference(xd, wd, M, N, K);
  // The promotion multiplies each chunk's code sum by fl(s_x s_w), a float: where that product is
  // below FLT_MIN (tiny activations against ordinary weights) it is a subnormal off by up to
  // 2^-150, so the bounds also allow 2^-150 sum_k |q_x q_w| (codes as fp8 values).
  std::vector<double> sub(static_cast<std::size_t>(M * N));
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) {
      double a = 0;
      for (index_t k = 0; k < K; ++k)
        a += std::abs(double(hq::Fp8Limits<F>::values[xq.codes[static_cast<std::size_t>(m * K + k)].bits]) *
                      double(hq::Fp8Limits<F>::values[wq.codes[static_cast<std::size_t>(n * K + k)].bits]));
      sub[static_cast<std::size_t>(m * N + n)] = 0x1p-150 * a;
    }
  const double own_tol = double(cb + 4) * 0x1p-24, lt_tol = 0x1p-9;
  char buf[128];

  // Our kernel on the device-quantized activations: the host's bits.
  DeviceMatrix dy_own(nan_matrix(M, N), M, N, 1);
  gq::fp8_matmul_own<F>(aq, dw, dy_own.view(), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> y_own = dy_own.values();
  const double r_own = worst_ratio(y_own, ref.y, ref.mag, own_tol, 0.0, K, &sub);
  std::snprintf(buf, sizeof buf, "; float64 error / bound %.3g", r_own);
  report(bit_diff(y_own, y_host).empty() && r_own <= 1.0 && dy_own.padding_kept(),
         label + ": own kernel == host matmul_fp8_blocks bit for bit " + bit_diff(y_own, y_host) + buf);

  // The whole product, whichever path it takes.
  DeviceMatrix dy(nan_matrix(M, N), M, N, 4);
  const gq::MatmulPath path = gq::matmul(ws, View<const float, 2>(dx.view()), dw, dy.view(), nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> y = dy.values();
  if (path == gq::MatmulPath::own_kernel) {
    report(bit_diff(y, y_host).empty() && dy.padding_kept(),
           label + ": matmul (own_kernel) == host bit for bit " + bit_diff(y, y_host));
  } else {
    const double r_host = worst_ratio(y, as_double(y_host), ref.mag, lt_tol, 0.0, K, &sub);
    const double r64 = worst_ratio(y, ref.y, ref.mag, lt_tol, 0.0, K, &sub);
    std::snprintf(buf, sizeof buf, ": matmul (cublaslt) error / bound vs host %.3g, vs float64 %.3g", r_host, r64);
    report(r_host <= 1.0 && r64 <= 1.0 && dy.padding_kept(), label + buf);
  }
  if (require_cublaslt && std::is_same_v<F, fp8_e4m3> && ws.options().use_cublaslt && ws.fp8_block_scaling())
    report(path == gq::MatmulPath::cublaslt, label + ": takes cuBLASLt's block-scaled fp8 path on sm_90");
}

template <class F>
void fp8_cases(gq::Workspace& ws, std::uint64_t& seed) {
  const struct {
    Shape s;
    bool lt;  // must take cuBLASLt on sm_90: M, N multiples of 4, K of 16, and not tiny (see int8_cases)
  } cases[] = {{{1, 96, 256}, false},    {{3, 100, 200}, false},  {{8, 64, 128}, false},
               {{20, 36, 130}, false},   {{64, 96, 320}, true},   {{48, 160, 512}, true},
               {{128, 256, 1024}, true}, {{36, 132, 2064}, true}, {{9, 40, 64}, false}};
  for (const auto& c : cases) check_fp8<F>(ws, c.s, Kind::uniform, Kind::uniform, ++seed, c.lt);
  for (Kind k : {Kind::outliers, Kind::zero_rows, Kind::constant, Kind::negative, Kind::tiny, Kind::blocky})
    check_fp8<F>(ws, {64, 256, 384}, k, k, ++seed, true);
  check_fp8<F>(ws, {4, 32, 256}, Kind::zeros, Kind::uniform, ++seed, false);
  check_fp8<F>(ws, {3, 64, 256}, Kind::tiny, Kind::uniform, ++seed, false);  // s_x s_w below FLT_MIN (our kernel)
  check_fp8<F>(ws, {260, 300, 640}, Kind::blocky, Kind::blocky, ++seed, true);
  check_fp8<F>(ws, {12, 64, 256}, Kind::uniform, Kind::outliers, ++seed, true, 7, 1);  // padded, unaligned rows
}

// ---- errors -----------------------------------------------------------------------------------

void error_cases(gq::Workspace& ws) {
  using Q8 = hq::Int8Symmetric;
  const index_t N = 32, K = 64;
  const std::vector<float> w = make_input(N, K, Kind::uniform, 99);
  const auto dw8 = gq::upload<Q8>(Q8::quantize(make_view(w.data(), N, K)));
  const auto dw4 = gq::upload<hq::Int4Group<32>>(hq::Int4Group<32>::quantize(make_view(w.data(), N, K)));
  const auto dwf = gq::upload<hq::Fp8E4M3Block>(hq::Fp8E4M3Block::quantize(make_view(w.data(), N, K)));
  DeviceMatrix x_bad(make_input(2, K + 1, Kind::uniform, 5), 2, K + 1), x(make_input(3, K, Kind::uniform, 6), 3, K),
      y(nan_matrix(3, N), 3, N), y_bad(nan_matrix(3, N + 1), 3, N + 1);
  const View<const float, 2> xv(x.view());

  expect_error(
      "int8 x of the wrong width", [&] { gq::matmul(ws, View<const float, 2>(x_bad.view()), dw8, y.view(), nullptr); },
      "matmul<int8_sym_channel_token>: x: shape [2, 65], expected [M, 64] (the weight is [32, 64])");
  expect_error(
      "int4 y of the wrong width", [&] { gq::matmul(ws, xv, dw4, y_bad.view(), nullptr); },
      "matmul<int4_g32_asym>: y: shape [3, 33], expected [3, 32]");
  expect_error(
      "fp8 x of the wrong width", [&] { gq::matmul(ws, View<const float, 2>(x_bad.view()), dwf, y.view(), nullptr); },
      "matmul<fp8_e4m3_block128>: x: shape [2, 65], expected [M, 64]");
  expect_error(
      "a strided inner dimension",
      [&] {
        gq::matmul(ws, View<const float, 2>(x.buf.data(), {3, K}, {K, 2}), dw8, y.view(), nullptr);
      },
      "x: innermost stride 2, expected 1");
  expect_error(
      "a misaligned x pointer",
      [&] {
        const auto* p = reinterpret_cast<const float*>(reinterpret_cast<const char*>(x.buf.data()) + 2);
        gq::matmul(ws, View<const float, 2>(p, {3, K}, {K, 1}), dw4, y.view(), nullptr);
      },
      "x: data pointer");
  expect_error(
      "overlapping y rows",
      [&] {
        gq::matmul(ws, xv, dwf, View<float, 2>(y.buf.data(), {3, N}, {N - 1, 1}), nullptr);
      },
      "y: row stride 31 is smaller than the row length");
  expect_error(
      "an int4 packing whose K is not a multiple of the group",
      [&] {
        hq::Int4Matrix<32> bad;
        bad.rows = 2;
        bad.cols = 48;
        (void)gq::upload<hq::Int4Group<32>>(bad);
      },
      "weight: shape [2, 48]: in features 48 is not a multiple of the group size 32");
  expect_error(
      "an int8 packing of another scheme",
      [&] { (void)gq::upload<hq::Int8Asymmetric>(Q8::quantize(make_view(w.data(), N, K))); },
      "zero points, expected 32 (asymmetric)");
  expect_error(
      "an fp8 activation packing as weights",
      [&] { (void)gq::upload<hq::Fp8E4M3Block>(hq::Fp8E4M3Block::quantize_activations(make_view(w.data(), N, K))); },
      "block_rows 1, expected 128");

  // Non-finite activations: the host quantizer's message, at once or when asked.
  std::vector<float> xn = make_input(3, K, Kind::uniform, 7);
  xn[static_cast<std::size_t>(1 * K + 5)] = std::numeric_limits<float>::quiet_NaN();
  xn[static_cast<std::size_t>(2 * K + 9)] = std::numeric_limits<float>::infinity();
  DeviceMatrix dxn(xn, 3, K);
  const View<const float, 2> xnv(dxn.view());
  expect_error(
      "a NaN activation (int8)", [&] { gq::matmul(ws, xnv, dw8, y.view(), nullptr); },
      "quantize_activations<int8_sym_channel_token>: x: element [1, 5] is NaN; quantization needs finite values");
  expect_error(
      "a NaN activation (fp8)", [&] { gq::matmul(ws, xnv, dwf, y.view(), nullptr); },
      "quantize_activations<fp8_e4m3_block128>: x: element [1, 5] is NaN");
  xn[static_cast<std::size_t>(1 * K + 5)] = 1.0f;
  DeviceMatrix dxi(xn, 3, K);
  expect_error(
      "an Inf activation (per-tensor int8)",
      [&] {
        using QT = hq::Int8<hq::Int8Scheme{.weights = hq::WeightScale::per_tensor,
                                           .activations = hq::ActivationScale::per_tensor}>;
        const auto d = gq::upload<QT>(QT::quantize(make_view(w.data(), N, K)));
        gq::matmul(ws, View<const float, 2>(dxi.view()), d, y.view(), nullptr);
      },
      "x: element [2, 9] is +Inf");
  gq::Workspace deferred(gq::WorkspaceOptions{.synchronous_checks = false});
  bool thrown_early = false;
  try {
    gq::matmul(deferred, xnv, dw8, y.view(), nullptr);
  } catch (const Error&) {
    thrown_early = true;
  }
  report(!thrown_early, "error: deferred checks do not throw inside matmul");
  expect_error(
      "a deferred non-finite check", [&] { deferred.check_finite("decode step", "x", nullptr); },
      "decode step: x: element [1, 5] is NaN");
  expect_error(
      "the deferred record is cleared once reported",
      [&] {
        deferred.check_finite("again", "x", nullptr);
        throw Error("nothing recorded");
      },
      "nothing recorded");
}

}  // namespace

int main() {
  try {
    if (const int rc = test::exit_status_without_gpu(); rc >= 0) return rc;
    const gpu::DeviceInfo dev = gpu::require_device(0);
    std::printf("device %s (sm_%d%d), cuBLASLt %zu\n", dev.name.c_str(), dev.major, dev.minor, cublasLtGetVersion());
    gq::Workspace ws, own(gq::WorkspaceOptions{.use_cublaslt = false});
    std::uint64_t seed = 1000;

    int8_cases<hq::Int8Scheme{}>(ws, "int8_sym_channel_token", seed);
    int8_cases<hq::Int8Scheme{.symmetry = hq::Symmetry::asymmetric}>(ws, "int8_asym_channel_token", seed);
    int8_cases<hq::Int8Scheme{.symmetry = hq::Symmetry::asymmetric}>(own, "int8_asym_channel_token", seed);
    constexpr hq::Int8Scheme tensor_sym{.weights = hq::WeightScale::per_tensor,
                                        .activations = hq::ActivationScale::per_tensor};
    constexpr hq::Int8Scheme tensor_asym{.symmetry = hq::Symmetry::asymmetric,
                                         .weights = hq::WeightScale::per_tensor,
                                         .activations = hq::ActivationScale::per_tensor};
    int8_cases<tensor_sym>(ws, "int8_sym_tensor_tensor", seed);
    int8_cases<tensor_asym>(ws, "int8_asym_tensor_tensor", seed);

    int4_cases<32, hq::Symmetry::asymmetric>(ws, seed);
    int4_cases<64, hq::Symmetry::asymmetric>(ws, seed);
    int4_cases<128, hq::Symmetry::asymmetric>(ws, seed);
    int4_cases<32, hq::Symmetry::symmetric>(ws, seed);
    int4_cases<128, hq::Symmetry::symmetric>(ws, seed);

    fp8_cases<fp8_e4m3>(ws, seed);
    fp8_cases<fp8_e4m3>(own, seed);
    fp8_cases<fp8_e5m2>(ws, seed);

    // The plan cache: the same shape again makes no new plan.
    const std::size_t plans = ws.cached_plans();
    check_int8<hq::Int8Scheme{}>(ws, "int8_sym_channel_token", {64, 96, 128}, Kind::uniform, Kind::uniform, ++seed,
                                 true);
    report(ws.cached_plans() == plans,
           "a repeated shape reuses its cuBLASLt plan (" + std::to_string(plans) + " plans)");

    error_cases(ws);
    std::printf("%s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
