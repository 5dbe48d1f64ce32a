// reason/quant/int8.hpp — INT8 weights and activations with an int8 x int8 -> int32 product.
//
// Layout: an Int8Matrix [rows, cols] holds int8 codes row-major and one grid (quant/grid.hpp) per
// row or one for the whole matrix:
//   weights W [out, in]:   per_channel = one grid per output row, per_tensor = one grid;
//   activations x [N, in]: per_token   = one grid per row (token), per_tensor = one grid.
// Symmetric grids: z = 0, q in [-127, 127], s = absmax / 127 (LLM.int8(), Dettmers et al. 2022);
// asymmetric grids: q in [-128, 127] over [min(lo, 0), max(hi, 0)], s = (hi - lo) / 255,
// z = -128 - round(lo / s) (Jacob et al. 2018, §2.1, with int8 rather than uint8 codes).
//
// Product (Jacob et al. 2018, §2.3, eqs. 7-8): with x = s_x (q_x - z_x), w = s_w (q_w - z_w),
//   y[m, n] = s_x[m] s_w[n] * sum_k (q_x[m,k] - z_x[m]) (q_w[n,k] - z_w[n])
//           = s_x[m] s_w[n] * ( A[m,n] - z_w[n] R_x[m] - z_x[m] R_w[n] + K z_x[m] z_w[n] ),
// where A = sum_k q_x q_w is the int8 x int8 product accumulated in int32 (`accumulator_t`) and
// R_x[m] = sum_k q_x[m,k], R_w[n] = sum_k q_w[n,k] are the row sums each Int8Matrix stores. The
// correction terms are added in int64, and the result is scaled once:
//   y[m, n] = float( double(s_x[m]) * double(s_w[n]) * double(total) ),
// so the product is exact up to that final scaling. |q_x q_w| <= 2^14, so A fits in int32 for
// K <= 2^17 - 1 (int8_max_inner_dim); a longer K is rejected. The int32 dot products run in fixed
// 64-element chunks, which the compiler vectorises at -O2; tiles of 64 x 64 outputs are spread
// over reason's thread pool, each output computed by one thread (the results are exact integers).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/quant/checks.hpp"
#include "reason/quant/concepts.hpp"
#include "reason/quant/grid.hpp"

namespace reason::quant {

/// How many grids a weight matrix [out, in] gets: one, or one per output row.
enum class WeightScale : std::uint8_t { per_tensor, per_channel };
/// How many grids an activation matrix [N, in] gets: one, or one per row (token).
enum class ActivationScale : std::uint8_t { per_tensor, per_token };

/// The numbers of an INT8 scheme (a structural aggregate: pass it as `Int8<Int8Scheme{...}>`).
struct Int8Scheme {
  Symmetry symmetry = Symmetry::symmetric;
  WeightScale weights = WeightScale::per_channel;
  ActivationScale activations = ActivationScale::per_token;
};

/// An int8 matrix [rows, cols] with its grids.
struct Int8Matrix {
  index_t rows = 0, cols = 0;
  std::vector<std::int8_t> codes;         // [rows, cols], row-major
  std::vector<float> scales;              // [rows] (one grid per row) or [1] (one for all)
  std::vector<std::int32_t> zero_points;  // like scales; empty when symmetric (every z is 0)
  std::vector<std::int32_t> row_sums;     // [rows]: sum_c codes[r, c], for a product with an asymmetric partner

  [[nodiscard]] bool symmetric() const { return zero_points.empty(); }
  [[nodiscard]] float scale(index_t r) const { return scales[scales.size() == 1 ? 0 : static_cast<std::size_t>(r)]; }
  [[nodiscard]] std::int32_t zero_point(index_t r) const {
    if (zero_points.empty()) return 0;
    return zero_points[zero_points.size() == 1 ? 0 : static_cast<std::size_t>(r)];
  }
  [[nodiscard]] const std::int8_t* row(index_t r) const { return codes.data() + r * cols; }
  /// Every byte stored: codes, scales, zero points, row sums.
  [[nodiscard]] std::size_t bytes() const {
    return codes.size() + 4 * (scales.size() + zero_points.size() + row_sums.size());
  }
};

namespace detail {

/// int32 dot product of two int8 rows; fixed 64-element chunks let -O2 vectorise it.
inline std::int32_t dot_int8(const std::int8_t* a, const std::int8_t* b, index_t k_len) {
  std::int32_t s = 0;
  index_t k0 = 0;
  for (; k0 + 64 <= k_len; k0 += 64)
    for (int k = 0; k < 64; ++k) s += std::int32_t(a[k0 + k]) * std::int32_t(b[k0 + k]);
  for (; k0 < k_len; ++k0) s += std::int32_t(a[k0]) * std::int32_t(b[k0]);
  return s;
}

/// Calls epilogue(m, n, A[m, n]) for every output, A = sum_k a[m, k] b[n, k] in int32, in 64 x 64
/// tiles spread over the thread pool.
template <class Epilogue>
void int8_dot_products(const Int8Matrix& a, const Int8Matrix& b, Epilogue&& epilogue) {
  constexpr index_t tile = 64;
  const index_t mt = (a.rows + tile - 1) / tile, nt = (b.rows + tile - 1) / tile;
  const double work = double(a.rows) * double(b.rows) * double(a.cols);
  parallel_for(mt * nt, work < (1 << 20) ? mt * nt : 1, [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t m0 = (t / nt) * tile, n0 = (t % nt) * tile;
      const index_t m1 = std::min(a.rows, m0 + tile), n1 = std::min(b.rows, n0 + tile);
      for (index_t m = m0; m < m1; ++m)
        for (index_t n = n0; n < n1; ++n) epilogue(m, n, dot_int8(a.row(m), b.row(n), a.cols));
    }
  });
}

}  // namespace detail

/// Quantizes x [rows, cols] to int8: one grid per row (one_grid_per_row) or one for all; symmetric grids
/// over the absolute maximum, asymmetric over [min, max]. Inf or NaN is an error naming `name`.
inline Int8Matrix quantize_int8(View<const float, 2> x, Symmetry symmetry, bool one_grid_per_row,
                                std::string_view name = "x") {
  constexpr std::string_view fn = "quantize_int8";
  detail::expect_matrix(x, fn, name);
  Int8Matrix q;
  q.rows = x.shape[0];
  q.cols = x.shape[1];
  const auto rows = static_cast<std::size_t>(q.rows);
  std::vector<detail::MinMax> ranges(rows);
  const index_t grain = std::max<index_t>(1, 16384 / std::max<index_t>(q.cols, 1));
  parallel_for(q.rows, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) ranges[static_cast<std::size_t>(r)] = detail::row_min_max(x, r, 0, q.cols, fn, name);
  });
  std::vector<IntGrid> grids;
  constexpr std::int32_t qmax = 127;
  const std::int32_t qmin = symmetry == Symmetry::symmetric ? -127 : -128;
  if (one_grid_per_row) {
    grids.reserve(rows);
    for (const auto& m : ranges) grids.push_back(detail::grid_of(m, symmetry, qmin, qmax));
  } else {
    detail::MinMax all{0.0f, 0.0f};
    for (const auto& m : ranges) all = {std::min(all.lo, m.lo), std::max(all.hi, m.hi)};
    grids.push_back(detail::grid_of(all, symmetry, qmin, qmax));
  }
  for (const IntGrid& g : grids) {
    q.scales.push_back(g.scale);
    if (symmetry == Symmetry::asymmetric) q.zero_points.push_back(g.zero_point);
  }
  q.codes.resize(rows * static_cast<std::size_t>(q.cols));
  q.row_sums.resize(rows);
  parallel_for(q.rows, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const IntGrid& g = grids[one_grid_per_row ? static_cast<std::size_t>(r) : 0];
      const float* xr = x.row(r);
      std::int8_t* qr = q.codes.data() + r * q.cols;
      std::int32_t sum = 0;
      for (index_t c = 0; c < q.cols; ++c) {
        const std::int32_t code = g.code(xr[c]);
        qr[c] = static_cast<std::int8_t>(code);
        sum += code;
      }
      q.row_sums[static_cast<std::size_t>(r)] = sum;
    }
  });
  return q;
}

/// out [rows, cols] = s (q - z), the float value of every code.
inline void dequantize_int8(const Int8Matrix& q, View<float, 2> out) {
  detail::expect_output(out, "dequantize_int8", "out", q.rows, q.cols);
  for (index_t r = 0; r < q.rows; ++r) {
    const IntGrid g{q.scale(r), q.zero_point(r), -128, 127};
    const std::int8_t* qr = q.row(r);
    float* o = out.row(r);
    for (index_t c = 0; c < q.cols; ++c) o[c] = g.value(qr[c]);
  }
}

/// The largest inner dimension whose int8 x int8 products provably fit the int32 accumulator:
/// K (-128)^2 = K 2^14 <= 2^31 - 1.
inline constexpr index_t int8_max_inner_dim = (index_t(1) << 17) - 1;

/// The int32 accumulators alone: acc [M, N] = sum_k x[m, k] w[n, k] on the codes (no zero points
/// or scales). What matmul_int8 computes before its epilogue, exposed for tests.
inline void int8_accumulate(const Int8Matrix& x, const Int8Matrix& w, View<std::int32_t, 2> acc) {
  REASON_CHECK(x.cols == w.cols, "int8_accumulate: x is [", x.rows, ", ", x.cols, "] but w is [", w.rows, ", ", w.cols,
               "]: inner dimensions differ");
  REASON_CHECK(x.cols <= int8_max_inner_dim, "int8_accumulate: inner dimension ", x.cols, " exceeds ",
               int8_max_inner_dim, ", beyond which an int32 accumulator can overflow");
  REASON_CHECK(acc.shape[0] == x.rows && acc.shape[1] == w.rows, "int8_accumulate: acc: shape ",
               shape_string(acc.shape), ", expected ", shape_string({x.rows, w.rows}));
  detail::int8_dot_products(x, w, [&](index_t m, index_t n, std::int32_t a) { acc(m, n) = a; });
}

/// y [M, N] = x [M, K] w [N, K]^T on the int8 codes: int32 accumulation, zero-point corrections
/// in int64, one scaling to float (see the header comment).
inline void matmul_int8(const Int8Matrix& x, const Int8Matrix& w, View<float, 2> y) {
  constexpr std::string_view fn = "matmul_int8";
  REASON_CHECK(x.cols == w.cols, fn, ": x is [", x.rows, ", ", x.cols, "] but w is [", w.rows, ", ", w.cols,
               "]: inner dimensions differ");
  REASON_CHECK(x.cols <= int8_max_inner_dim, fn, ": inner dimension ", x.cols, " exceeds ", int8_max_inner_dim,
               ", beyond which an int32 accumulator can overflow");
  detail::expect_output(y, fn, "y", x.rows, w.rows);
  const bool corrections = !x.symmetric() || !w.symmetric();
  const std::int64_t k_len = x.cols;
  detail::int8_dot_products(x, w, [&](index_t m, index_t n, std::int32_t a) {
    std::int64_t total = a;
    if (corrections) {
      const std::int64_t zx = x.zero_point(m), zw = w.zero_point(n);
      total += -zw * x.row_sums[static_cast<std::size_t>(m)] - zx * w.row_sums[static_cast<std::size_t>(n)] +
               k_len * zx * zw;
    }
    y(m, n) = static_cast<float>(double(x.scale(m)) * double(w.scale(n)) * double(total));
  });
}

/// INT8 weights and activations, chosen by an Int8Scheme; the product runs on int8 codes with int32
/// accumulation, activations quantized on the fly.
template <Int8Scheme S = Int8Scheme{}>
struct Int8 {
  static constexpr Int8Scheme scheme = S;
  static constexpr int bits = 8;
  using accumulator_t = std::int32_t;  // the type sum_k q_x q_w is accumulated in
  using Packed = Int8Matrix;
  static constexpr const char* name =
      S.symmetry == Symmetry::symmetric
          ? (S.weights == WeightScale::per_channel
                 ? (S.activations == ActivationScale::per_token ? "int8_sym_channel_token" : "int8_sym_channel_tensor")
                 : (S.activations == ActivationScale::per_token ? "int8_sym_tensor_token" : "int8_sym_tensor_tensor"))
          : (S.weights == WeightScale::per_channel
                 ? (S.activations == ActivationScale::per_token ? "int8_asym_channel_token" : "int8_asym_channel_tensor")
                 : (S.activations == ActivationScale::per_token ? "int8_asym_tensor_token" : "int8_asym_tensor_tensor"));

  /// Weights w [out, in] -> int8 codes with the scheme's weight grids.
  [[nodiscard]] static Packed quantize(View<const float, 2> w, std::string_view tensor = "weight") {
    return quantize_int8(w, S.symmetry, S.weights == WeightScale::per_channel, tensor);
  }
  /// Activations x [N, in] -> int8 codes with the scheme's activation grids.
  [[nodiscard]] static Int8Matrix quantize_activations(View<const float, 2> x, std::string_view tensor = "x") {
    return quantize_int8(x, S.symmetry, S.activations == ActivationScale::per_token, tensor);
  }
  static void dequantize(const Packed& w, View<float, 2> out) { dequantize_int8(w, out); }
  /// y [N, out] = x [N, in] W^T: x quantized on the fly, then the int8 product.
  static void matmul(View<const float, 2> x, const Packed& w, View<float, 2> y) {
    REASON_CHECK(x.shape[1] == w.cols, name, "::matmul: x: shape ", shape_string(x.shape), ", expected [N, ", w.cols,
                 "] (the weight is [", w.rows, ", ", w.cols, "])");
    matmul_int8(quantize_activations(x), w, y);
  }
};

/// The common schemes: per-channel weights with per-token activations, symmetric or asymmetric.
using Int8Symmetric = Int8<Int8Scheme{}>;
using Int8Asymmetric = Int8<Int8Scheme{.symmetry = Symmetry::asymmetric}>;

static_assert(Quantizer<Int8Symmetric> && Quantizer<Int8Asymmetric>);

}  // namespace reason::quant
