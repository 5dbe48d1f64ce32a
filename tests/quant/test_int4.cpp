#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "quant/quant_test_util.hpp"
#include "reason/quant/int4.hpp"

using namespace reason;
using namespace reason::quant;
using namespace reason::test;

namespace {

/// Violations of |w - dq(q(w))| <= s / 2 (s the element's group scale; 2^-24 slack for float rounding).
template <index_t G>
index_t int4_round_trip_violations(const Mat<float>& w, const Int4Matrix<G>& q) {
  Mat<float> dq(w.rows, w.cols);
  dequantize_int4(q, dq.view());
  index_t bad = 0;
  for (index_t r = 0; r < w.rows; ++r)
    for (index_t c = 0; c < w.cols; ++c) {
      const double err = std::abs(double(w(r, c)) - double(dq(r, c)));
      if (!(err <= 0.5 * double(q.scale(r, c / G)) * (1 + 1e-6) + 0x1p-23 * std::abs(double(w(r, c))))) ++bad;
    }
  return bad;
}

}  // namespace

static_assert(pack_int4(0x3, 0xA) == 0xA3);  // column 2j in the low nibble, 2j + 1 in the high one
static_assert(unpack_int4(0xA3, 0) == 0x3 && unpack_int4(0xA3, 1) == 0xA && unpack_int4(0xA3, 6) == 0x3);

TEST_CASE("int4 packing: codes, scales and zero points bit-exact with a hand-written layout") {
  SUBCASE("symmetric, group 32: u = q + 8, z = 8 implicit") {
    Mat<float> w(1, 32);
    for (index_t c = 0; c < 32; ++c) w(0, c) = float(c % 15) - 7.0f;  // absmax 7, so s = 1 and q = w
    const auto q = quantize_int4<32>(w.cview(), Symmetry::symmetric);
    // u(c) = c % 15 + 1: 1 2 3 ... 15 1 2 ... 15 1 2; byte j = u(2j) | u(2j + 1) << 4.
    const std::vector<std::uint8_t> expected = {0x21, 0x43, 0x65, 0x87, 0xA9, 0xCB, 0xED, 0x1F,
                                                0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE, 0x21};
    CHECK(q.codes == expected);
    CHECK(q.scales == std::vector<float>{1.0f});
    CHECK(q.zero_points.empty());
    CHECK(q.zero_point(0, 0) == 8);
    for (index_t c = 0; c < 32; ++c) CHECK(q.code(0, c) == std::uint8_t(c % 15 + 1));
    Mat<float> dq(1, 32);
    dequantize_int4(q, dq.view());
    CHECK(dq.buf == w.buf);
    CHECK(q.bytes() == 16 + 4);
  }
  SUBCASE("asymmetric, group 32, two rows: per-group scale and zero point") {
    Mat<float> w(2, 64);
    for (index_t c = 0; c < 64; ++c) {
      w(0, c) = float(c % 16);          // [0, 15]: s = 1, z = 0, u = w
      w(1, c) = -0.5f * float(c % 16);  // [-7.5, 0]: s = 0.5, z = 15, u = 15 - c % 16
    }
    const auto q = quantize_int4<32>(w.cview(), Symmetry::asymmetric);
    const std::vector<std::uint8_t> row0 = {0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE};
    const std::vector<std::uint8_t> row1 = {0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01};
    std::vector<std::uint8_t> expected;
    for (const auto* row : {&row0, &row0, &row0, &row0, &row1, &row1, &row1, &row1})
      expected.insert(expected.end(), row->begin(), row->end());
    CHECK(q.codes == expected);
    CHECK(q.scales == std::vector<float>{1.0f, 1.0f, 0.5f, 0.5f});
    CHECK(q.zero_points == std::vector<std::uint8_t>{0, 0, 15, 15});
    Mat<float> dq(2, 64);
    dequantize_int4(q, dq.view());
    CHECK(dq.buf == w.buf);
    CHECK(q.bytes() == 64 + 4 * 4 + 4);
  }
}

TEST_CASE_TEMPLATE("int4 round trip: |w - dq(q(w))| <= group scale / 2 on random and adversarial weights", Q,
                   Int4Group<32>, Int4Group<64>, Int4Group<128>, Int4Group<32, Symmetry::symmetric>,
                   Int4Group<128, Symmetry::symmetric>) {
  static_assert(Quantizer<Q>);
  static_assert(Q::bits == 4);
  Philox rng(test_seed(), 710);
  INFO("seed " << rng.seed() << ", " << std::string(Q::name));
  auto inputs = adversarial_inputs(7, 256, rng);
  inputs.emplace_back("random", random_mat(7, 256, rng, -0.1, 0.1, 3));
  inputs.emplace_back("random, all negative", random_mat(7, 256, rng, -3.0, -2.0));
  for (const auto& input : inputs) {
    const std::string& label = input.first;
    const Mat<float>& w = input.second;
    INFO(label);
    const typename Q::Packed q = Q::quantize(w.cview());
    CHECK(q.rows == 7);
    CHECK(q.cols == 256);
    CHECK(q.codes.size() == 7u * 128u);
    CHECK(q.scales.size() == std::size_t(7 * 256 / Q::group));
    CHECK(q.symmetric() == (Q::symmetry == Symmetry::symmetric));
    CHECK(int4_round_trip_violations(w, q) == 0);
    for (float s : q.scales) CHECK((s >= FLT_MIN && std::isfinite(s)));
    for (std::uint8_t z : q.zero_points) CHECK(z <= 15);
    if (Q::symmetry == Symmetry::symmetric) {
      index_t zero_codes = 0;  // symmetric codes are 8 + [-7, 7]: the nibble 0 is never used
      for (index_t r = 0; r < q.rows; ++r)
        for (index_t c = 0; c < q.cols; ++c) zero_codes += q.code(r, c) == 0;
      CHECK(zero_codes == 0);
    }
  }
}

TEST_CASE_TEMPLATE("int4 product: float activations against the float64 product with the dequantized weights", Q,
                   Int4Group<32>, Int4Group<64>, Int4Group<128>, Int4Group<64, Symmetry::symmetric>) {
  Philox rng(test_seed(), 711);
  INFO("seed " << rng.seed() << ", " << std::string(Q::name));
  for (index_t M : {1, 5, 37}) {
    const index_t N = 41, K = 384;
    INFO("M " << M);
    const Mat<float> x = random_mat(M, K, rng, -1.0, 1.0, 3);
    Mat<float> w = random_mat(N, K, rng, -0.5, 0.5, 1);
    for (index_t k = 0; k < K; k += 97) w(k % N, k) = 20.0f;  // a few outliers in some groups
    const typename Q::Packed q = Q::quantize(w.cview(), "w");
    Mat<float> y(M, N, 2), dq(N, K);
    Q::matmul(x.cview(), q, y.view());
    CHECK(y.padding_intact());
    Q::dequantize(q, dq.view());
    const ProductRef ref = product_f64(x, dq);
    // Float sums: 8-lane partial sums of a group, then one addition per group, each term with the
    // dequantized value's own rounding.
    CHECK(product_mismatches(y, ref, 0x1p-24 * double(Q::group / 8 + K / Q::group + 4)) == 0);
    // And within the round-trip bound of the float product: |y - x w^T| <= sum_k |x| s / 2.
    const ProductRef exact = product_f64(x, w);
    index_t beyond = 0;
    for (index_t m = 0; m < M; ++m)
      for (index_t n = 0; n < N; ++n) {
        double bound = 1e-5 * exact.abs_sum(m, n);
        for (index_t k = 0; k < K; ++k) bound += std::abs(double(x(m, k))) * 0.5 * double(q.scale(n, k / Q::group));
        beyond += !(std::abs(double(y(m, n)) - exact.y(m, n)) <= bound);
      }
    CHECK(beyond == 0);
  }
}

TEST_CASE("int4: shapes, a group size that does not divide in, Inf and NaN are errors naming the tensor") {
  Philox rng(test_seed(), 712);
  const Mat<float> w_ragged = random_mat(3, 96, rng);
  CHECK_THROWS_WITH_AS((void)Int4Group<64>::quantize(w_ragged.cview(), "layers.0.attn.o.weight"),
                       doctest::Contains("layers.0.attn.o.weight: shape [3, 96]: in features 96 is not a multiple of the group size 64"),
                       Error);
  Mat<float> w = random_mat(3, 128, rng);
  w(1, 77) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS((void)Int4Group<32>::quantize(w.cview(), "w"), doctest::Contains("w: element [1, 77] is NaN"), Error);
  w(1, 77) = -std::numeric_limits<float>::infinity();
  using Symmetric128 = Int4Group<128, Symmetry::symmetric>;
  CHECK_THROWS_WITH_AS((void)Symmetric128::quantize(w.cview(), "w"),
                       doctest::Contains("w: element [1, 77] is -Inf"), Error);
  w(1, 77) = 0.0f;
  const auto q = Int4Group<32>::quantize(w.cview());
  const Mat<float> x = random_mat(2, 127, rng);
  Mat<float> y(2, 3), y_bad(3, 3);
  CHECK_THROWS_WITH_AS(Int4Group<32>::matmul(x.cview(), q, y.view()),
                       doctest::Contains("matmul_int4: x: shape [2, 127], expected [M, 128]"), Error);
  const Mat<float> x_ok = random_mat(2, 128, rng);
  CHECK_THROWS_WITH_AS(Int4Group<32>::matmul(x_ok.cview(), q, y_bad.view()),
                       doctest::Contains("matmul_int4: y: shape [3, 3], expected [2, 3]"), Error);
}
