#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "quant/quant_test_util.hpp"
#include "reason/quant/fp8_block.hpp"

using namespace reason;
using namespace reason::quant;
using namespace reason::test;

namespace {

/// Violations of the fp8 round-trip bound |x - s q| <= max(2^-(m+1) |x|, s 2^-(bias+m)): half an fp8
/// ulp of x / s, relative for normal codes, half the subnormal spacing below; times the block scale.
template <class Fp8>
index_t fp8_round_trip_violations(const Mat<float>& x, const Fp8BlockMatrix<Fp8>& q) {
  using L = Fp8Limits<Fp8>;
  Mat<float> dq(x.rows, x.cols);
  dequantize_fp8_blocks(q, dq.view());
  index_t bad = 0;
  for (index_t r = 0; r < x.rows; ++r)
    for (index_t c = 0; c < x.cols; ++c) {
      const double ax = std::abs(double(x(r, c))), s = q.scale(r, c);
      const double half_ulp = std::max(std::ldexp(ax, -(L::mantissa_bits + 1)), s * std::ldexp(1.0, -(L::bias + L::mantissa_bits)));
      if (!(std::abs(double(x(r, c)) - double(dq(r, c))) <= half_ulp * (1 + 1e-5) + 0x1p-23 * ax)) ++bad;
    }
  return bad;
}

template <class Fp8>
Mat<float> dequantized(const Fp8BlockMatrix<Fp8>& q) {
  Mat<float> m(q.rows, q.cols);
  dequantize_fp8_blocks(q, m.view());
  return m;
}

/// The documented product, written out: per 128-wide chunk the exact dot product of the fp8 values
/// (long double, summed backwards), rounded to float, then acc = fma(chunk, s_x s_w, acc) in order.
template <class Fp8>
Mat<float> documented_product(const Fp8BlockMatrix<Fp8>& x, const Fp8BlockMatrix<Fp8>& w) {
  Mat<float> y(x.rows, w.rows);
  for (index_t m = 0; m < x.rows; ++m)
    for (index_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      for (index_t k0 = 0; k0 < x.cols; k0 += 128) {
        long double chunk = 0;
        for (index_t k = std::min(x.cols, k0 + 128) - 1; k >= k0; --k)
          chunk += static_cast<long double>(static_cast<float>(x.row(m)[k])) * static_cast<float>(w.row(n)[k]);
        acc = std::fma(static_cast<float>(chunk), x.scale(m, k0) * w.scale(n, k0), acc);
      }
      y(m, n) = acc;
    }
  return y;
}

/// Elements where a and b differ (same shape, padding ignored).
index_t differences(const Mat<float>& a, const Mat<float>& b) {
  index_t d = 0;
  for (index_t r = 0; r < a.rows; ++r)
    for (index_t c = 0; c < a.cols; ++c) d += a(r, c) != b(r, c);
  return d;
}

}  // namespace

TEST_CASE_TEMPLATE("fp8 block round trip: within half an fp8 ulp times the block scale, random and adversarial inputs",
                   Fp8, fp8_e4m3, fp8_e5m2) {
  Philox rng(test_seed(), 720);
  INFO("seed " << rng.seed());
  const index_t R = 130, C = 300;  // ragged edges: blocks of 128 and 2 rows, 128, 128 and 44 columns
  auto inputs = adversarial_inputs(R, C, rng);
  inputs.emplace_back("random", random_mat(R, C, rng, -3.0, 3.0, 2));
  for (const auto& input : inputs) {
    const std::string& label = input.first;
    const Mat<float>& x = input.second;
    for (index_t block_rows : {index_t(128), index_t(1)}) {
      INFO(label << ", blocks of " << block_rows << " x 128");
      const Fp8BlockMatrix<Fp8> q = quantize_fp8_blocks<Fp8>(x.cview(), block_rows, "x");
      CHECK(q.scales.size() == std::size_t(((R + block_rows - 1) / block_rows) * 3));
      CHECK(fp8_round_trip_violations(x, q) == 0);
      // Each block's scale is amax / fp8_max (1 when amax is 0, never below FLT_MIN), and each code
      // is reason's CUDA-exact conversion of x / s.
      index_t bad_scales = 0, bad_codes = 0;
      for (index_t rb = 0; rb < q.row_blocks(); ++rb)
        for (index_t cb = 0; cb < 3; ++cb) {
          float amax = 0.0f;
          for (index_t r = rb * block_rows; r < std::min(R, (rb + 1) * block_rows); ++r)
            for (index_t c = cb * 128; c < std::min(C, (cb + 1) * 128); ++c) amax = std::max(amax, std::abs(x(r, c)));
          const float s = amax == 0.0f ? 1.0f
                                       : std::max(static_cast<float>(double(amax) / double(Fp8Limits<Fp8>::max_finite)), FLT_MIN);
          bad_scales += q.scale(rb * block_rows, cb * 128) != s;
        }
      for (index_t r = 0; r < R; ++r)
        for (index_t c = 0; c < C; ++c) bad_codes += q.row(r)[c].bits != Fp8(x(r, c) / q.scale(r, c)).bits;
      CHECK(bad_scales == 0);
      CHECK(bad_codes == 0);
    }
  }
}

TEST_CASE("fp8 block scales: DeepSeek-V3's fp8 maxima and tile shapes") {
  CHECK(Fp8Limits<fp8_e4m3>::max_finite == 448.0f);
  CHECK(Fp8Limits<fp8_e5m2>::max_finite == 57344.0f);
  static_assert(Fp8E4M3Block::weight_block == 128 && Fp8E4M3Block::activation_tile == 128);
  Philox rng(test_seed(), 721);
  const Mat<float> w = random_mat(256, 384, rng), x = random_mat(3, 384, rng);
  const auto qw = Fp8E4M3Block::quantize(w.cview()), qx = Fp8E4M3Block::quantize_activations(x.cview());
  CHECK(qw.block_rows == 128);
  CHECK(qw.scales.size() == 2u * 3u);  // 128 x 128 blocks
  CHECK(qx.block_rows == 1);
  CHECK(qx.scales.size() == 3u * 3u);  // 1 x 128 tiles
  CHECK(qw.bytes() == std::size_t(256 * 384 + 4 * 6));
}

TEST_CASE_TEMPLATE("fp8 block product: against the float64 product of the dequantized operands", Fp8, fp8_e4m3, fp8_e5m2) {
  using Q = Fp8Block<Fp8>;
  static_assert(Quantizer<Q>);
  Philox rng(test_seed(), 722);
  INFO("seed " << rng.seed() << ", " << std::string(Q::name));
  const index_t M = 19, N = 140, K = 300;
  Mat<float> x = random_mat(M, K, rng, -1.0, 1.0, 1), w = random_mat(N, K, rng, -0.05, 0.05, 4);
  for (index_t m = 0; m < M; ++m) x(m, (m * 37) % K) = 60.0f;  // an outlier per token
  const typename Q::Packed qw = Q::quantize(w.cview()), qx = Q::quantize_activations(x.cview());
  Mat<float> y(M, N, 3), y_direct(M, N, 3);
  Q::matmul(x.cview(), qw, y.view());
  matmul_fp8_blocks(qx, qw, y_direct.view());
  CHECK(y.buf == y_direct.buf);
  CHECK(y.padding_intact());
  const ProductRef ref = product_f64(dequantized(qx), dequantized(qw));
  // Roundings: the dequantized operands (2^-24 each), each chunk's float, s_x s_w and each promotion.
  CHECK(product_mismatches(y, ref, 0x1p-24 * 12) == 0);
  if constexpr (std::is_same_v<Fp8, fp8_e4m3>) CHECK(differences(y, documented_product(qx, qw)) == 0);  // bit for bit
}

TEST_CASE("fp8 block product promotion: exact 128-wide chunks, scaled and added to an fp32 accumulator") {
  static_assert(std::is_same_v<Fp8E4M3Block::accumulator_t, float>);
  static_assert(std::is_same_v<Fp8E4M3Block::chunk_accumulator_t, double>);
  static_assert(Fp8E4M3Block::promotion_interval == 128 && Fp8E5M2Block::promotion_interval == 128);
  SUBCASE("inside a chunk nothing is lost: 448^2 + 2^-18 - 448^2 = 2^-18") {
    Mat<float> x(1, 256), w(1, 256);
    x(0, 0) = 448.0f, x(0, 1) = 0x1p-9f, x(0, 2) = 448.0f;  // tile amax 448: scale 1
    w(0, 0) = 448.0f, w(0, 1) = 0x1p-9f, w(0, 2) = -448.0f;  // 2^-9: E4M3's smallest subnormal
    const auto qx = Fp8E4M3Block::quantize_activations(x.cview()), qw = Fp8E4M3Block::quantize(w.cview());
    CHECK(qx.scales[0] == 1.0f);
    CHECK(qw.scales[0] == 1.0f);
    float running = 0.0f;  // what one fp32 accumulator over the products gives
    for (int k = 0; k < 3; ++k) running += x(0, k) * w(0, k);
    CHECK(running == 0.0f);
    Mat<float> y(1, 1);
    matmul_fp8_blocks(qx, qw, y.view());
    CHECK(y(0, 0) == 0x1p-18f);
  }
  SUBCASE("every chunk is promoted with its own scales") {
    const index_t K = 640;  // five chunks
    Philox rng(test_seed(), 723);
    Mat<float> x = random_mat(4, K, rng), w = random_mat(3, K, rng);
    for (index_t k = 0; k < K; ++k) {
      const int c = int(k / 128);
      for (index_t m = 0; m < 4; ++m) x(m, k) = std::ldexp(x(m, k), 9 * c - 20);  // tile scales 2^-29 ... 2^16 apart
      for (index_t n = 0; n < 3; ++n) w(n, k) = std::ldexp(w(n, k), 5 - 7 * c);
    }
    const auto qx = Fp8E4M3Block::quantize_activations(x.cview()), qw = Fp8E4M3Block::quantize(w.cview());
    Mat<float> y(4, 3);
    matmul_fp8_blocks(qx, qw, y.view());
    CHECK(differences(y, documented_product(qx, qw)) == 0);
    const ProductRef ref = product_f64(dequantized(qx), dequantized(qw));
    CHECK(product_mismatches(y, ref, 0x1p-24 * 14) == 0);
  }
}

TEST_CASE("fp8 block: Inf and NaN inputs are rejected with the tensor's name and the element's index") {
  Philox rng(test_seed(), 724);
  Mat<float> w = random_mat(130, 140, rng);
  w(129, 130) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS((void)Fp8E4M3Block::quantize(w.cview(), "lm_head.weight"),
                       doctest::Contains("lm_head.weight: element [129, 130] is +Inf"), Error);
  w(129, 130) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS((void)Fp8E5M2Block::quantize(w.cview(), "w"), doctest::Contains("w: element [129, 130] is NaN"), Error);
  w(129, 130) = 0.0f;
  const auto qw = Fp8E5M2Block::quantize(w.cview());
  Mat<float> x = random_mat(2, 140, rng), y(2, 130);
  x(0, 3) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(Fp8E5M2Block::matmul(x.cview(), qw, y.view()), doctest::Contains("x: element [0, 3] is -Inf"),
                       Error);
}
