// reason/quant/fp8_block.hpp — FP8 (E4M3, E5M2) with DeepSeek-V3's fine-grained block scaling.
//
// DeepSeek-V3 Technical Report (arXiv:2412.19437), §3.3.2 "Improved Precision from Quantization
// and Multiplication":
//   - scales are fp32 and shared by a tile: 1 x 128 for activations (per token, per 128 channels),
//     128 x 128 for weights (128 output rows x 128 input channels);
//   - each tile's scale comes from its absolute maximum, taken online: s = amax / fp8_max
//     (fp8_max = 448 for E4M3, 57344 for E5M2), and the code is fp8(x / s);
//   - the GEMM's inner products are promoted: every N_C = 128 elements of K the tensor cores' partial
//     sum is multiplied by the two tiles' scales and added to an fp32 accumulator on CUDA cores.
// Here (host reference): edge blocks may be smaller than 128 (any shape is accepted); an all-zero
// tile gets s = 1 and a tile of subnormals s >= FLT_MIN (as quant/grid.hpp does for integer grids);
// codes round to nearest even through reason::fp8_e4m3 / fp8_e5m2, bit-exact with CUDA's
// __nv_fp8_e4m3(float) (saturating: x / s never exceeds fp8_max by more than a rounding).
// Round trip: |x - s q| <= max(2^-(m+1) |x|, s 2^-(bias+m)) (half an fp8 ulp: relative for normal
// codes, half the subnormal spacing below), m = 3, bias = 7 for E4M3; m = 2, bias = 15 for E5M2.
//
// Layout (Fp8BlockMatrix): codes [rows, cols] row-major, one byte each; scales
// [ceil(rows / block_rows), ceil(cols / 128)] fp32, block_rows = 128 for weights, 1 for activations.
//
// Product y [M, N] = x [M, K] W [N, K]^T, per output, for each 128-wide chunk c of K in order:
//   chunk_c = float( sum_{k in c} q_x[m, k] q_w[n, k] )                  (chunk_accumulator_t = double)
//   acc     = fma(chunk_c, s_x[m, c] * s_w[n, c], acc)                  (accumulator_t = float)
// The fp8 codes are read through a 256-entry table of their exact float values; a product of two
// fp8 values is exact in float, and the chunk sum runs in 8 double lanes. For E4M3 every product
// is a multiple of 2^-18 below 2^18, so a 128-term sum is exact in double in any order and chunk_c
// is the correctly rounded chunk dot product; for E5M2 (products from 2^-32 to 2^32) it is exact
// unless one chunk spans more than 53 bits of magnitudes. The promotion is thus done every
// promotion_interval = 128 elements of K, with a wider accumulator inside a chunk than a tensor
// core's (whose limited accumulation precision is what DeepSeek-V3's promotion repairs).
#pragma once

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/fp8.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/quant/checks.hpp"
#include "reason/quant/concepts.hpp"

namespace reason::quant {

/// The constants of one fp8 format.
template <class Fp8>
struct Fp8Limits {
  static_assert(std::is_same_v<Fp8, fp8_e4m3> || std::is_same_v<Fp8, fp8_e5m2>,
                "quant::Fp8Limits: the element type must be reason::fp8_e4m3 or reason::fp8_e5m2");
  static constexpr int mantissa_bits = Fp8::Format::man;
  static constexpr int bias = Fp8::Format::bias;
  /// The largest finite value: 448 (E4M3), 57344 (E5M2).
  static constexpr float max_finite = static_cast<float>(Fp8::from_bits(Fp8::Format::max_finite));
  /// The exact float value of every encoding (NaN for E4M3's 0x7F/0xFF, E5M2's NaNs; E5M2's ±Inf).
  static constexpr std::array<float, 256> values = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[static_cast<std::size_t>(b)] = static_cast<float>(Fp8::from_bits(static_cast<std::uint8_t>(b)));
    return t;
  }();
};

/// An fp8 matrix [rows, cols] with one fp32 scale per block of block_rows x 128.
template <class Fp8>
struct Fp8BlockMatrix {
  static constexpr index_t block_cols = 128;

  index_t rows = 0, cols = 0;
  index_t block_rows = 128;    // 128 for weights (128 x 128 blocks), 1 for activations (1 x 128 tiles)
  std::vector<Fp8> codes;      // [rows, cols], row-major
  std::vector<float> scales;   // [ceil(rows / block_rows), ceil(cols / 128)]

  [[nodiscard]] index_t row_blocks() const { return (rows + block_rows - 1) / block_rows; }
  [[nodiscard]] index_t col_blocks() const { return (cols + block_cols - 1) / block_cols; }
  /// The scale of element [r, c].
  [[nodiscard]] float scale(index_t r, index_t c) const {
    return scales[static_cast<std::size_t>((r / block_rows) * col_blocks() + c / block_cols)];
  }
  [[nodiscard]] const Fp8* row(index_t r) const { return codes.data() + r * cols; }
  /// Every byte stored: codes and scales.
  [[nodiscard]] std::size_t bytes() const { return codes.size() + 4 * scales.size(); }
};

/// Quantizes x [rows, cols] to fp8 in blocks of block_rows x 128 (1 for activation tiles, 128 for
/// weight blocks), s = amax / fp8_max per block. Inf or NaN is an error naming `name` and the element.
template <class Fp8>
[[nodiscard]] Fp8BlockMatrix<Fp8> quantize_fp8_blocks(View<const float, 2> x, index_t block_rows,
                                                      std::string_view name = "x") {
  constexpr std::string_view fn = "quantize_fp8_blocks";
  detail::expect_matrix(x, fn, name);
  REASON_CHECK(block_rows >= 1, fn, ": ", name, ": block_rows ", block_rows, " must be at least 1");
  Fp8BlockMatrix<Fp8> q;
  q.rows = x.shape[0];
  q.cols = x.shape[1];
  q.block_rows = block_rows;
  const index_t rb = q.row_blocks(), cb = q.col_blocks(), bc = q.block_cols;
  q.codes.resize(static_cast<std::size_t>(q.rows * q.cols));
  q.scales.assign(static_cast<std::size_t>(rb * cb), 1.0f);
  const index_t grain = std::max<index_t>(1, 16384 / std::max<index_t>(block_rows * q.cols, 1));
  parallel_for(rb, grain, [&](index_t b0, index_t b1) {
    for (index_t b = b0; b < b1; ++b) {
      const index_t r0 = b * block_rows, r1 = std::min(q.rows, r0 + block_rows);
      for (index_t c = 0; c < cb; ++c) {
        const index_t c0 = c * bc, c1 = std::min(q.cols, c0 + bc);
        float amax = 0.0f;
        for (index_t r = r0; r < r1; ++r) {
          const detail::MinMax m = detail::row_min_max(x, r, c0, c1, fn, name);
          amax = std::max({amax, -m.lo, m.hi});
        }
        const float s = amax > 0.0f ? std::max(static_cast<float>(double(amax) / double(Fp8Limits<Fp8>::max_finite)), FLT_MIN)
                                    : 1.0f;
        q.scales[static_cast<std::size_t>(b * cb + c)] = s;
        for (index_t r = r0; r < r1; ++r) {
          const float* xr = x.row(r);
          Fp8* qr = q.codes.data() + r * q.cols;
          for (index_t k = c0; k < c1; ++k) qr[k] = Fp8(xr[k] / s);
        }
      }
    }
  });
  return q;
}

/// out [rows, cols] = s * float(code), the float value of every code.
template <class Fp8>
void dequantize_fp8_blocks(const Fp8BlockMatrix<Fp8>& q, View<float, 2> out) {
  detail::expect_output(out, "dequantize_fp8_blocks", "out", q.rows, q.cols);
  for (index_t r = 0; r < q.rows; ++r) {
    const Fp8* qr = q.row(r);
    float* o = out.row(r);
    for (index_t c = 0; c < q.cols; ++c) o[c] = q.scale(r, c) * Fp8Limits<Fp8>::values[qr[c].bits];
  }
}

namespace detail {

/// sum_k a[k] b[k] in 8 double lanes; each float product of two fp8 values is exact.
inline double fp8_chunk_dot(const float* a, const float* b, index_t n) {
  double lane[8] = {};
  index_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; ++l) lane[l] += double(a[k + l] * b[k + l]);
  for (; k < n; ++k) lane[0] += double(a[k] * b[k]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/// dst[k] = the float value of codes[k], k < n.
template <class Fp8>
void decode_fp8(const Fp8* codes, index_t n, float* dst) {
  for (index_t k = 0; k < n; ++k) dst[k] = Fp8Limits<Fp8>::values[codes[k].bits];
}

}  // namespace detail

/// y [M, N] = x [M, K] w [N, K]^T on the fp8 codes, promoted into an fp32 accumulator every 128
/// elements of K with the two blocks' scales (see the header comment).
template <class Fp8>
void matmul_fp8_blocks(const Fp8BlockMatrix<Fp8>& x, const Fp8BlockMatrix<Fp8>& w, View<float, 2> y) {
  constexpr std::string_view fn = "matmul_fp8_blocks";
  REASON_CHECK(x.cols == w.cols, fn, ": x is [", x.rows, ", ", x.cols, "] but w is [", w.rows, ", ", w.cols,
               "]: inner dimensions differ");
  detail::expect_output(y, fn, "y", x.rows, w.rows);
  const index_t m_len = x.rows, n_len = w.rows, k_len = x.cols, chunk = x.block_cols, chunks = x.col_blocks();
  constexpr index_t mb = 16, nb = 32;  // a tile: 16 rows of x against 32 weight rows
  const index_t mt = (m_len + mb - 1) / mb, nt = (n_len + nb - 1) / nb;
  const double work = double(m_len) * double(n_len) * double(k_len);
  parallel_for(mt * nt, work < (1 << 19) ? mt * nt : 1, [&](index_t t0, index_t t1) {
    std::vector<float> xf(static_cast<std::size_t>(mb * k_len));  // the tile's x rows as exact floats
    float wf[Fp8BlockMatrix<Fp8>::block_cols];                       // one chunk of one weight row
    float acc[mb];
    index_t decoded_m0 = -1;
    for (index_t t = t0; t < t1; ++t) {
      const index_t m0 = (t / nt) * mb, n0 = (t % nt) * nb;
      const index_t m1 = std::min(m_len, m0 + mb), n1 = std::min(n_len, n0 + nb);
      if (m0 != decoded_m0) {
        for (index_t m = m0; m < m1; ++m) detail::decode_fp8(x.row(m), k_len, xf.data() + (m - m0) * k_len);
        decoded_m0 = m0;
      }
      for (index_t n = n0; n < n1; ++n) {
        std::fill(acc, acc + mb, 0.0f);
        for (index_t c = 0; c < chunks; ++c) {
          const index_t k0 = c * chunk, len = std::min(chunk, k_len - k0);
          detail::decode_fp8(w.row(n) + k0, len, wf);
          const float sw = w.scale(n, k0);
          for (index_t m = m0; m < m1; ++m) {
            const auto partial = static_cast<float>(detail::fp8_chunk_dot(xf.data() + (m - m0) * k_len + k0, wf, len));
            acc[m - m0] = std::fma(partial, x.scale(m, k0) * sw, acc[m - m0]);  // the promotion
          }
        }
        for (index_t m = m0; m < m1; ++m) y(m, n) = acc[m - m0];
      }
    }
  });
}

/// FP8 weights and activations with DeepSeek-V3's fine-grained scaling: 128 x 128 weight blocks,
/// 1 x 128 activation tiles (quantized on the fly), fp32 scales, promotion every 128 elements of K.
template <class Fp8>
struct Fp8Block {
  static_assert(std::is_same_v<Fp8, fp8_e4m3> || std::is_same_v<Fp8, fp8_e5m2>,
                "quant::Fp8Block: the element type must be reason::fp8_e4m3 or reason::fp8_e5m2");
  using element_t = Fp8;
  using Packed = Fp8BlockMatrix<Fp8>;
  using chunk_accumulator_t = double;  // the sum inside one 128-wide chunk of K
  using accumulator_t = float;         // the promoted sum across chunks
  static constexpr int bits = 8;
  static constexpr index_t weight_block = 128;       // weights: 128 x 128 blocks
  static constexpr index_t activation_tile = 128;    // activations: 1 x 128 tiles
  static constexpr index_t promotion_interval = 128;  // elements of K between promotions
  static constexpr const char* name = std::is_same_v<Fp8, fp8_e4m3> ? "fp8_e4m3_block128" : "fp8_e5m2_block128";

  [[nodiscard]] static Packed quantize(View<const float, 2> w, std::string_view tensor = "weight") {
    return quantize_fp8_blocks<Fp8>(w, weight_block, tensor);
  }
  [[nodiscard]] static Packed quantize_activations(View<const float, 2> x, std::string_view tensor = "x") {
    return quantize_fp8_blocks<Fp8>(x, 1, tensor);
  }
  static void dequantize(const Packed& w, View<float, 2> out) { dequantize_fp8_blocks(w, out); }
  /// y [N, out] = x [N, in] W^T: x quantized to 1 x 128 tiles on the fly, then the fp8 product.
  static void matmul(View<const float, 2> x, const Packed& w, View<float, 2> y) {
    REASON_CHECK(x.shape[1] == w.cols, name, "::matmul: x: shape ", shape_string(x.shape), ", expected [N, ", w.cols,
                 "] (the weight is [", w.rows, ", ", w.cols, "])");
    matmul_fp8_blocks(quantize_activations(x), w, y);
  }
};

using Fp8E4M3Block = Fp8Block<fp8_e4m3>;
using Fp8E5M2Block = Fp8Block<fp8_e5m2>;

static_assert(Quantizer<Fp8E4M3Block> && Quantizer<Fp8E5M2Block>);

}  // namespace reason::quant
