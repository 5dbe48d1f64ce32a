#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "quant/quant_test_util.hpp"
#include "reason/quant/int8.hpp"

using namespace reason;
using namespace reason::quant;
using namespace reason::test;

namespace {

/// Checks |x - dq(q(x))| <= s / 2 element by element (s the element's scale; 2^-24 slack for the
/// float rounding of s and of s (q - z)); returns the number of violations.
index_t int8_round_trip_violations(const Mat<float>& x, const Int8Matrix& q) {
  Mat<float> dq(x.rows, x.cols);
  dequantize_int8(q, dq.view());
  index_t bad = 0;
  for (index_t r = 0; r < x.rows; ++r)
    for (index_t c = 0; c < x.cols; ++c) {
      const double err = std::abs(double(x(r, c)) - double(dq(r, c)));
      if (!(err <= 0.5 * double(q.scale(r)) * (1 + 1e-6) + 0x1p-23 * std::abs(double(x(r, c))))) ++bad;
    }
  return bad;
}

/// The float value of every code of q, as a matrix.
Mat<float> dequantized(const Int8Matrix& q) {
  Mat<float> m(q.rows, q.cols);
  dequantize_int8(q, m.view());
  return m;
}

constexpr Symmetry kSymmetries[] = {Symmetry::symmetric, Symmetry::asymmetric};

}  // namespace

TEST_CASE("int8 round trip: |x - dq(q(x))| <= scale / 2 on random and adversarial inputs, every grid choice") {
  Philox rng(test_seed(), 700);
  INFO("seed " << rng.seed());
  auto inputs = adversarial_inputs(12, 70, rng);
  for (int i = 0; i < 3; ++i) inputs.emplace_back("random", random_mat(12, 70, rng, -4.0, 4.0, i));
  inputs.emplace_back("random, all positive", random_mat(12, 70, rng, 2.0, 3.0));
  for (const auto& input : inputs) {
    const std::string& label = input.first;
    const Mat<float>& x = input.second;
    for (Symmetry sym : kSymmetries) {
      for (bool per_row : {true, false}) {
        INFO(label << (sym == Symmetry::symmetric ? ", symmetric" : ", asymmetric") << (per_row ? ", per row" : ", per tensor"));
        const Int8Matrix q = quantize_int8(x.cview(), sym, per_row, "x");
        CHECK(q.scales.size() == (per_row ? 12u : 1u));
        CHECK(q.symmetric() == (sym == Symmetry::symmetric));
        CHECK(int8_round_trip_violations(x, q) == 0);
        for (std::size_t r = 0; r < q.scales.size(); ++r) {
          CHECK(q.scales[r] >= FLT_MIN);  // never a subnormal or zero scale
          CHECK(std::isfinite(q.scales[r]));
        }
        if (sym == Symmetry::symmetric) CHECK(std::count(q.codes.begin(), q.codes.end(), std::int8_t(-128)) == 0);
        std::int64_t sum0 = 0;
        for (index_t c = 0; c < q.cols; ++c) sum0 += q.row(0)[c];
        CHECK(q.row_sums[0] == sum0);
      }
    }
  }
}

TEST_CASE("int8 grids: the documented scales and zero points, zeros decode to exactly 0") {
  Mat<float> x(3, 4);
  const float rows[3][4] = {{-2.54f, 1.0f, 0.5f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}, {2.0f, 3.0f, 4.0f, 5.0f}};
  for (index_t r = 0; r < 3; ++r)
    for (index_t c = 0; c < 4; ++c) x(r, c) = rows[r][c];
  const Int8Matrix s = quantize_int8(x.cview(), Symmetry::symmetric, true);
  CHECK(s.scales[0] == static_cast<float>(double(2.54f) / 127.0));  // absmax / 127, rounded once
  CHECK(s.scales[1] == 1.0f);                               // an all-zero row
  CHECK(s.row(0)[0] == -127);
  CHECK(s.row(0)[3] == 0);
  const Int8Matrix a = quantize_int8(x.cview(), Symmetry::asymmetric, true);
  CHECK(a.scales[0] == static_cast<float>((1.0 + double(2.54f)) / 255.0));  // (hi - lo) / 255
  CHECK(a.zero_point(0) == -128 - static_cast<std::int32_t>(std::nearbyint(double(-2.54f) / double(a.scales[0]))));
  CHECK(a.row(0)[0] == -128);
  CHECK(a.row(0)[1] == 127);
  CHECK(a.scales[1] == 1.0f);
  CHECK(a.zero_point(1) == -128);
  CHECK(a.row(1)[2] == -128);
  CHECK(a.scales[2] == static_cast<float>(5.0 / 255.0));  // the range [2, 5] is widened to [0, 5]
  CHECK(a.zero_point(2) == -128);
  const Mat<float> dq = dequantized(a);
  CHECK(dq(0, 3) == 0.0f);  // 0 is exactly representable on every affine grid
  CHECK(dq(1, 0) == 0.0f);
  CHECK(dequantized(s)(1, 2) == 0.0f);
}

TEST_CASE("int8: Inf and NaN inputs are rejected with the tensor's name and the element's index") {
  Mat<float> w(4, 9);
  w.fill(0.5f);
  w(2, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS((void)Int8Symmetric::quantize(w.cview(), "layers.1.ffn.down.weight"),
                       doctest::Contains("layers.1.ffn.down.weight: element [2, 5] is NaN"), Error);
  w(2, 5) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS((void)quantize_int8(w.cview(), Symmetry::asymmetric, false, "w"),
                       doctest::Contains("w: element [2, 5] is +Inf"), Error);
  w(2, 5) = 1.0f;
  const Int8Matrix q = Int8Asymmetric::quantize(w.cview());
  Mat<float> x(3, 9), y(3, 4);
  x.fill(1.0f);
  x(1, 8) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(Int8Asymmetric::matmul(x.cview(), q, y.view()), doctest::Contains("x: element [1, 8] is -Inf"),
                       Error);
}

TEST_CASE("int8 product: accumulates int8 x int8 in int32, exact up to the final float scaling") {
  static_assert(std::is_same_v<Int8Symmetric::accumulator_t, std::int32_t>);
  static_assert(std::is_same_v<Int8Asymmetric::accumulator_t, std::int32_t>);
  static_assert(std::is_same_v<decltype(quant::detail::dot_int8(nullptr, nullptr, 0)), std::int32_t>);
  Philox rng(test_seed(), 701);
  INFO("seed " << rng.seed());
  const index_t M = 37, N = 45, K = 300;  // K: four 64-wide chunks and a remainder
  Mat<float> x = random_mat(M, K, rng, -1.0, 1.0, 3), w = random_mat(N, K, rng, -0.2, 0.3, 1);
  for (index_t m = 0; m < M; ++m)
    for (index_t k = 0; k < K; ++k) x(m, k) *= float(1 + m % 5);  // rows of different ranges
  for (Symmetry sym : kSymmetries) {
    for (bool x_rows : {true, false}) {
      for (bool w_rows : {true, false}) {
        INFO((sym == Symmetry::symmetric ? "symmetric" : "asymmetric") << " x per " << (x_rows ? "token" : "tensor")
                                                                      << ", w per " << (w_rows ? "channel" : "tensor"));
        const Int8Matrix qx = quantize_int8(x.cview(), sym, x_rows), qw = quantize_int8(w.cview(), sym, w_rows);
        Mat<std::int32_t> acc(M, N);
        int8_accumulate(qx, qw, acc.view());
        Mat<float> y(M, N, 2);
        matmul_int8(qx, qw, y.view());
        CHECK(y.padding_intact());
        index_t acc_bad = 0, y_bad = 0;
        for (index_t m = 0; m < M; ++m)
          for (index_t n = 0; n < N; ++n) {
            std::int64_t raw = 0, total = 0;
            for (index_t k = 0; k < K; ++k) {
              raw += std::int64_t(qx.row(m)[k]) * qw.row(n)[k];
              total += (std::int64_t(qx.row(m)[k]) - qx.zero_point(m)) * (std::int64_t(qw.row(n)[k]) - qw.zero_point(n));
            }
            acc_bad += acc(m, n) != raw;
            const auto expected = static_cast<float>(double(qx.scale(m)) * double(qw.scale(n)) * double(total));
            y_bad += y(m, n) != expected;
          }
        CHECK(acc_bad == 0);
        CHECK(y_bad == 0);
        // Against the float64 product of the dequantized operands: each dequantized value carries
        // one float rounding (2^-24 relative), the result one more.
        const ProductRef ref = product_f64(dequantized(qx), dequantized(qw));
        CHECK(product_mismatches(y, ref, 0x1p-22 + 0x1p-23) == 0);
      }
    }
  }
}

TEST_CASE_TEMPLATE("int8 policy: matmul quantizes activations on the fly and equals the product of the quantized operands",
                   Q, Int8Symmetric, Int8Asymmetric,
                   Int8<Int8Scheme{.weights = WeightScale::per_tensor, .activations = ActivationScale::per_tensor}>,
                   Int8<Int8Scheme{.symmetry = Symmetry::asymmetric, .activations = ActivationScale::per_tensor}>) {
  static_assert(Quantizer<Q>);
  static_assert(Q::bits == 8);
  Philox rng(test_seed(), 702);
  const index_t M = 9, N = 70, K = 130;
  const Mat<float> x = random_mat(M, K, rng, -2.0, 1.0, 5), w = random_mat(N, K, rng, -1.0, 1.0, 2);
  const typename Q::Packed qw = Q::quantize(w.cview());
  CHECK(qw.rows == N);
  CHECK(qw.cols == K);
  CHECK(qw.bytes() == std::size_t(N * K) + 4 * (qw.scales.size() + qw.zero_points.size() + std::size_t(N)));
  Mat<float> y(M, N), y_ref(M, N);
  Q::matmul(x.cview(), qw, y.view());
  matmul_int8(Q::quantize_activations(x.cview()), qw, y_ref.view());
  CHECK(y.buf == y_ref.buf);
  // The product of quantized operands is close to the float product (a sanity check of the scheme).
  const ProductRef exact = product_f64(x, w);
  CHECK(product_mismatches(y, exact, 0.02) == 0);
}

TEST_CASE("int8 product: the int32 accumulator's range is guarded at K = 131071") {
  CHECK(int8_max_inner_dim == 131071);
  Int8Matrix a;
  a.rows = 1;
  a.cols = int8_max_inner_dim;
  a.codes.assign(std::size_t(a.cols), std::int8_t(-128));  // the largest product, 2^14, everywhere
  a.scales = {1.0f};
  a.row_sums = {-128 * std::int32_t(a.cols)};
  Int8Matrix b = a;
  Mat<std::int32_t> acc(1, 1);
  int8_accumulate(a, b, acc.view());
  CHECK(acc(0, 0) == std::int32_t(16384) * std::int32_t(int8_max_inner_dim));  // 2^31 - 2^14: fits
  Mat<float> y(1, 1);
  matmul_int8(a, b, y.view());
  CHECK(y(0, 0) == static_cast<float>(16384.0 * double(int8_max_inner_dim)));
  a.cols = b.cols = int8_max_inner_dim + 1;
  a.codes.push_back(0);
  b.codes.push_back(0);
  CHECK_THROWS_WITH_AS(matmul_int8(a, b, y.view()), doctest::Contains("inner dimension 131072 exceeds 131071"), Error);
}

TEST_CASE("int8 product: shape errors name the operand") {
  Philox rng(test_seed(), 703);
  const Mat<float> x = random_mat(4, 16, rng), w = random_mat(6, 16, rng), w_short = random_mat(6, 15, rng);
  const Int8Matrix qw = Int8Symmetric::quantize(w.cview()), qshort = Int8Symmetric::quantize(w_short.cview());
  Mat<float> y(4, 6), y_bad(4, 5);
  CHECK_THROWS_WITH_AS(Int8Symmetric::matmul(x.cview(), qw, y_bad.view()),
                       doctest::Contains("matmul_int8: y: shape [4, 5], expected [4, 6]"), Error);
  CHECK_THROWS_WITH_AS(Int8Symmetric::matmul(x.cview(), qshort, y.view()),
                       doctest::Contains("x: shape [4, 16], expected [N, 15]"), Error);
  Mat<float> out_bad(6, 15);
  CHECK_THROWS_WITH_AS(dequantize_int8(qw, out_bad.view()), doctest::Contains("out: shape [6, 15], expected [6, 16]"),
                       Error);
}
