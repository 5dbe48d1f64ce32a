// tests/quant/quant_test_util.hpp — inputs and float64 references for the quantizer tests.
//
// Inputs are test::Mat<float> (kernels/kernel_test_util.hpp): optionally padded rows, so every
// quantizer also sees strided views. `adversarial_inputs` names the inputs each round-trip test
// runs besides fresh random ones: all zeros, one huge outlier (1e30 and ±3e38), subnormals only,
// rows of constants (what breaks a min/max grid that does not contain 0), tiny normals, rows
// whose magnitudes differ by decades (per-row against per-tensor grids).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernel_test_util.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"

namespace reason::test {

/// rows x cols uniform in [lo, hi), rows padded by `pad`.
inline Mat<float> random_mat(index_t rows, index_t cols, Philox& rng, double lo = -1.0, double hi = 1.0,
                             index_t pad = 0) {
  Mat<float> m(rows, cols, pad, -777.0f);
  m.randomize(rng, lo, hi);
  return m;
}

/// Named inputs that stress a quantizer's grid choice (see the header comment).
inline std::vector<std::pair<std::string, Mat<float>>> adversarial_inputs(index_t rows, index_t cols, Philox& rng) {
  std::vector<std::pair<std::string, Mat<float>>> in;
  in.emplace_back("all zeros", Mat<float>(rows, cols));
  for (float outlier : {1e30f, 3e38f, -3e38f}) {
    Mat<float> m = random_mat(rows, cols, rng);
    m(rows / 2, cols / 3) = outlier;
    std::ostringstream name;
    name << "one outlier " << outlier;
    in.emplace_back(name.str(), std::move(m));
  }
  Mat<float> sub(rows, cols);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      const auto k = static_cast<int>(rng.uniform_double() * double(1 << 23));  // k * 2^-149: every subnormal
      sub(r, c) = (rng.uniform() < 0.5f ? -1.0f : 1.0f) * std::ldexp(float(k), -149);
    }
  in.emplace_back("subnormals", std::move(sub));
  Mat<float> constant(rows, cols);
  const float values[] = {5.0f, -3.25f, 1e-3f, 0.0f, 123456.0f, -7e-20f};
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) constant(r, c) = values[r % 6];
  in.emplace_back("constant rows", std::move(constant));
  in.emplace_back("tiny normals", random_mat(rows, cols, rng, -1e-30, 1e-30));
  Mat<float> decades = random_mat(rows, cols, rng);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) decades(r, c) *= std::pow(10.0f, float(r % 9) - 4.0f);
  in.emplace_back("rows a decade apart", std::move(decades));
  return in;
}

/// The float64 product y = a b^T of two float matrices (a [M, K], b [N, K]) and sum_k |a b| per
/// output, the scale of its rounding error.
struct ProductRef {
  Mat<double> y, abs_sum;
};
inline ProductRef product_f64(const Mat<float>& a, const Mat<float>& b) {
  ProductRef ref{Mat<double>(a.rows, b.rows), Mat<double>(a.rows, b.rows)};
  for (index_t m = 0; m < a.rows; ++m)
    for (index_t n = 0; n < b.rows; ++n) {
      double s = 0, abs_s = 0;
      for (index_t k = 0; k < a.cols; ++k) {
        const double p = double(a(m, k)) * double(b(n, k));
        s += p;
        abs_s += std::abs(p);
      }
      ref.y(m, n) = s;
      ref.abs_sum(m, n) = abs_s;
    }
  return ref;
}

/// Elements of `y` farther from `ref.y` than rel * abs_sum + floor (0 when all are within).
inline index_t product_mismatches(const Mat<float>& y, const ProductRef& ref, double rel, double floor = 0.0) {
  index_t bad = 0;
  for (index_t m = 0; m < y.rows; ++m)
    for (index_t n = 0; n < y.cols; ++n)
      if (!(std::abs(double(y(m, n)) - ref.y(m, n)) <= rel * ref.abs_sum(m, n) + floor)) ++bad;
  return bad;
}

}  // namespace reason::test
