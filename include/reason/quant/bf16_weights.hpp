// reason/quant/bf16_weights.hpp — bf16 weight storage as a quantizer policy (the CPU's "bf16").
//
// The weights are rounded to bfloat16 (round to nearest even, core/bf16.hpp: the bits CUDA's
// __float2bfloat16 gives) and kept as 2 bytes each; the product decodes each weight row to float
// once per tile of activations and accumulates in float:
//   y[m, n] = sum_k x[m, k] float(bf16(W[n, k]))
// So it is weight-only bf16: activations stay fp32, which is what a bf16 model's weights cost in
// memory and lose in precision, on a machine without bf16 arithmetic. (The GPU's bf16 compute is
// precision::Bf16 of gpu::DenseTransformer.)
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>
#include <vector>

#include "reason/core/bf16.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/quant/checks.hpp"
#include "reason/quant/concepts.hpp"

namespace reason::quant {

/// bf16 weights [rows, cols], row-major.
struct Bf16Matrix {
  index_t rows = 0, cols = 0;
  std::vector<bf16> values;
  [[nodiscard]] std::size_t bytes() const { return values.size() * sizeof(bf16); }
};

struct Bf16Weights {
  static constexpr const char* name = "bf16";
  static constexpr int bits = 16;
  using Packed = Bf16Matrix;

  /// Rounds w [out, in] to bf16; Inf or NaN is an error naming `tensor` and the element.
  [[nodiscard]] static Packed quantize(View<const float, 2> w, std::string_view tensor = "weight") {
    constexpr std::string_view fn = "quantize_bf16";
    detail::expect_matrix(w, fn, tensor);
    Packed p{w.shape[0], w.shape[1], {}};
    p.values.reserve(static_cast<std::size_t>(p.rows * p.cols));
    for (index_t r = 0; r < p.rows; ++r) {
      (void)detail::row_min_max(w, r, 0, p.cols, fn, tensor);  // rejects Inf / NaN with the index
      for (index_t c = 0; c < p.cols; ++c) p.values.push_back(bf16(w(r, c)));
    }
    return p;
  }
  static void dequantize(const Packed& w, View<float, 2> out) {
    detail::expect_output(out, "dequantize_bf16", "out", w.rows, w.cols);
    for (index_t r = 0; r < w.rows; ++r)
      for (index_t c = 0; c < w.cols; ++c) out(r, c) = static_cast<float>(w.values[static_cast<std::size_t>(r * w.cols + c)]);
  }
  /// y [M, out] = x [M, in] W^T, each weight row decoded once per block of 16 activation rows.
  static void matmul(View<const float, 2> x, const Packed& w, View<float, 2> y) {
    constexpr std::string_view fn = "matmul_bf16";
    detail::expect_matrix(x, fn, "x");
    REASON_CHECK(x.shape[1] == w.cols, fn, ": x: shape ", shape_string(x.shape), ", expected [M, ", w.cols,
                 "] (the weight is [", w.rows, ", ", w.cols, "])");
    detail::expect_output(y, fn, "y", x.shape[0], w.rows);
    const index_t m_len = x.shape[0], n_len = w.rows, k_len = w.cols;
    constexpr index_t mb = 16;
    const index_t mt = (m_len + mb - 1) / mb;
    const double work = double(m_len) * double(n_len) * double(k_len);
    parallel_for(mt * n_len, work < (1 << 20) ? mt * n_len : 1, [&](index_t t0, index_t t1) {
      std::vector<float> row(static_cast<std::size_t>(k_len));
      index_t decoded = -1;
      for (index_t t = t0; t < t1; ++t) {
        const index_t n = t % n_len, m0 = (t / n_len) * mb, m1 = std::min(m_len, m0 + mb);
        if (n != decoded) {
          const bf16* src = w.values.data() + n * k_len;
          for (index_t k = 0; k < k_len; ++k) row[static_cast<std::size_t>(k)] = static_cast<float>(src[k]);
          decoded = n;
        }
        for (index_t m = m0; m < m1; ++m) {
          const float* xr = x.row(m);
          float acc = 0.0f;
          for (index_t k = 0; k < k_len; ++k) acc += xr[k] * row[static_cast<std::size_t>(k)];
          y(m, n) = acc;
        }
      }
    });
  }
};

static_assert(Quantizer<Bf16Weights>);

}  // namespace reason::quant
