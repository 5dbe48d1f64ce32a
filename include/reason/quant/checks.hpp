// reason/quant/checks.hpp — the input checks every quantizer shares.
//
// Design rule (core/error.hpp): bad input never quantizes silently. A non-finite weight or
// activation has no code on any grid, and one Inf would turn a whole block's scale into Inf or
// NaN, so quantizers reject it with the function, the tensor's name and the element's index:
//   "quantize_int8: layers.0.attn.qkv.weight: element [3, 17] is NaN; quantization needs finite values".
// Matrices are row-major with unit inner stride (rows of a wider buffer are fine).
#pragma once

#include <algorithm>
#include <cmath>
#include <string_view>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"

namespace reason::quant::detail {

/// Throws the error for a non-finite element [r, c] of tensor `name` given to `fn`.
[[noreturn]] inline void fail_not_finite(std::string_view fn, std::string_view name, index_t r, index_t c, float v) {
  fail(fn, ": ", name, ": element [", r, ", ", c, "] is ", std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"),
       "; quantization needs finite values");
}

/// Min and max of x[r, c0:c1], rejecting Inf and NaN with the element's index.
struct MinMax {
  float lo, hi;
};
inline MinMax row_min_max(const View<const float, 2>& x, index_t r, index_t c0, index_t c1, std::string_view fn,
                          std::string_view name) {
  const float* row = x.row(r);
  float lo = 0.0f, hi = 0.0f;
  if (c1 > c0) lo = hi = row[c0];
  bool finite = true;
  for (index_t c = c0; c < c1; ++c) {
    lo = std::min(lo, row[c]);
    hi = std::max(hi, row[c]);
    finite &= std::isfinite(row[c]);
  }
  if (!finite) [[unlikely]] {
    for (index_t c = c0; c < c1; ++c)
      if (!std::isfinite(row[c])) fail_not_finite(fn, name, r, c, row[c]);
  }
  return {lo, hi};
}

/// Throws unless x is a readable [rows, cols] matrix with unit inner stride.
inline void expect_matrix(const View<const float, 2>& x, std::string_view fn, std::string_view name) {
  if (x.data == nullptr && x.numel() > 0) [[unlikely]] fail(fn, ": ", name, " is empty (data is null)");
  if (x.shape[1] > 1 && x.stride[1] != 1) [[unlikely]] {
    fail(fn, ": ", name, ": innermost stride ", x.stride[1], ", expected 1 (shape ", shape_string(x.shape), ")");
  }
}

/// Throws unless y is a writable [rows, cols] matrix with unit inner stride.
inline void expect_output(const View<float, 2>& y, std::string_view fn, std::string_view name, index_t rows,
                          index_t cols) {
  if (y.shape[0] != rows || y.shape[1] != cols) [[unlikely]] {
    fail(fn, ": ", name, ": shape ", shape_string(y.shape), ", expected ", shape_string({rows, cols}));
  }
  expect_matrix(View<const float, 2>(y), fn, name);
}

}  // namespace reason::quant::detail
