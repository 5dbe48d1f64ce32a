#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "quant/quant_test_util.hpp"
#include "reason/quant/quant.hpp"

using namespace reason;
using namespace reason::quant;
using namespace reason::test;

namespace {

template <class T>
index_t differences(const Mat<T>& a, const Mat<T>& b) {
  index_t d = 0;
  for (index_t r = 0; r < a.rows; ++r)
    for (index_t c = 0; c < a.cols; ++c) d += !(a(r, c) == b(r, c));
  return d;
}

}  // namespace

TEST_CASE("fake quant forward equals dequantize(quantize(x)) with the same grids; nothing is clipped") {
  Philox rng(test_seed(), 730);
  INFO("seed " << rng.seed());
  const Mat<float> x = random_mat(9, 200, rng, -2.0, 5.0, 3);
  for (Symmetry sym : {Symmetry::symmetric, Symmetry::asymmetric}) {
    const Int8Matrix q = quantize_int8(x.cview(), sym, true);
    std::vector<IntGrid> grids;
    for (index_t r = 0; r < x.rows; ++r) {
      grids.push_back(IntGrid{q.scale(r), q.zero_point(r), sym == Symmetry::symmetric ? -127 : -128, 127});
    }
    Mat<float> y(9, 200, 1), dq(9, 200);
    Mat<std::uint8_t> pass(9, 200, 2, std::uint8_t(7));
    fake_quant_forward<IntGrid>(x.cview(), grids, y.view(), pass.view());
    dequantize_int8(q, dq.view());
    CHECK(differences(y, dq) == 0);
    CHECK(y.padding_intact());
    CHECK(pass.padding_intact());
    index_t clipped = 0;
    for (index_t r = 0; r < 9; ++r)
      for (index_t c = 0; c < 200; ++c) clipped += pass(r, c) == 0;
    CHECK(clipped == 0);  // grids from the tensor's own range clip nothing
  }
}

TEST_CASE_TEMPLATE("fake_quant_weights equals the policy's dequantize(quantize(w)) bit for bit", Q, Int8Symmetric,
                   Int8Asymmetric, Int4Group<64>, Int4Group<32, Symmetry::symmetric>, Fp8E4M3Block, Fp8E5M2Block) {
  Philox rng(test_seed(), 731);
  const Mat<float> w = random_mat(130, 256, rng, -0.3, 0.2, 2);
  Mat<float> wq(130, 256), dq(130, 256);
  fake_quant_weights<Q>(w.cview(), wq.view());
  Q::dequantize(Q::quantize(w.cview()), dq.view());
  CHECK(differences(wq, dq) == 0);
}

TEST_CASE("fake quant with a fixed range: clipped elements saturate and get no gradient (straight-through elsewhere)") {
  // An int8 grid for the range [-1, 1] (a fixed activation range, Jacob et al. §3.1): s = 2 / 255
  // rounded to float (slightly above), z = -128 - round(-1 / s) = -128 + 127 = -1.
  const IntGrid g = IntGrid::affine(-1.0f, 1.0f, -128, 127);
  CHECK(g.scale == static_cast<float>(2.0 / 255.0));
  CHECK(g.zero_point == -1);
  const float lo = g.value(-128), hi = g.value(127);
  const std::vector<float> values = {-3.0f, -1.0f, lo - 0.4f * g.scale, lo - 0.6f * g.scale, -0.2f, 0.0f, 0.7f,
                                     hi, hi + 0.4f * g.scale, hi + 0.6f * g.scale, 2.5f, 1e20f};
  // Inside the range, or within half a step of it (it rounds to an end code without clamping), the
  // gradient passes; farther out it is clipped.
  const std::vector<std::uint8_t> expected_pass = {0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0};
  const auto n = static_cast<index_t>(values.size());
  Mat<float> x(1, n), y(1, n), dy(1, n), dx(1, n, 1, -5.0f);
  Mat<std::uint8_t> pass(1, n);
  for (index_t c = 0; c < n; ++c) {
    x(0, c) = values[std::size_t(c)];
    dy(0, c) = float(c + 1);
  }
  fake_quant_forward<IntGrid>(x.cview(), std::vector<IntGrid>{g}, y.view(), pass.view());
  for (index_t c = 0; c < n; ++c) {
    INFO("x = " << x(0, c));
    CHECK(pass(0, c) == expected_pass[std::size_t(c)]);
    CHECK(y(0, c) == g.round_trip(x(0, c)));
    CHECK(y(0, c) >= lo);
    CHECK(y(0, c) <= hi);
  }
  CHECK(y(0, 0) == lo);   // saturated
  CHECK(y(0, 11) == hi);
  CHECK(y(0, 5) == 0.0f);
  fake_quant_backward(dy.cview(), pass.cview(), dx.view());
  for (index_t c = 0; c < n; ++c) CHECK(dx(0, c) == (expected_pass[std::size_t(c)] ? dy(0, c) : 0.0f));
  CHECK(dx.padding_intact());
}

TEST_CASE("fake quant on an fp8 grid: the mask is set where x / s rounds past the largest finite code") {
  const Fp8Grid<fp8_e4m3> g{0.5f};  // represents [-224, 224]; E4M3 rounds up to 464 to 448, beyond that it saturates
  CHECK(Fp8Grid<fp8_e4m3>::from_absmax(224.0f).scale == 0.5f);
  CHECK(Fp8Grid<fp8_e4m3>::from_absmax(0.0f).scale == 1.0f);
  const std::vector<float> values = {0.0f, 1.3f, -100.0f, 224.0f, 231.0f, 233.0f, -240.0f, 1e9f};
  const std::vector<std::uint8_t> expected_pass = {1, 1, 1, 1, 1, 0, 0, 0};
  const auto n = static_cast<index_t>(values.size());
  Mat<float> x(2, n), y(2, n), dx(2, n);
  Mat<std::uint8_t> pass(2, n);
  for (index_t c = 0; c < n; ++c) x(0, c) = x(1, c) = values[std::size_t(c)];
  const std::vector<Fp8Grid<fp8_e4m3>> per_row = {g, Fp8Grid<fp8_e4m3>{1000.0f}};
  fake_quant_forward<Fp8Grid<fp8_e4m3>>(x.cview(), per_row, y.view(), pass.view());
  for (index_t c = 0; c < n; ++c) {
    INFO("x = " << x(0, c));
    CHECK(pass(0, c) == expected_pass[std::size_t(c)]);
    CHECK(y(0, c) == 0.5f * static_cast<float>(fp8_e4m3(x(0, c) / 0.5f)));
    CHECK(pass(1, c) == (c == n - 1 ? 0 : 1));  // the second row's grid (scale 1000) clips only 1e9
  }
  CHECK(y(0, 5) == 224.0f);  // saturated to the largest code
  CHECK(y(0, 6) == -224.0f);
  fake_quant_backward(x.cview(), pass.cview(), dx.view());
  for (index_t c = 0; c < n; ++c) CHECK(dx(0, c) == (expected_pass[std::size_t(c)] ? x(0, c) : 0.0f));
}

TEST_CASE("fake quant: non-finite inputs and mismatched grids or shapes are errors") {
  Mat<float> x(3, 4), y(3, 4);
  Mat<std::uint8_t> pass(3, 4);
  x(2, 1) = std::numeric_limits<float>::quiet_NaN();
  const std::vector<IntGrid> one = {IntGrid::symmetric(1.0f, 127)}, two(2);
  CHECK_THROWS_WITH_AS(fake_quant_forward<IntGrid>(x.cview(), one, y.view(), pass.view(), "attn_in"),
                       doctest::Contains("attn_in: element [2, 1] is NaN"), Error);
  x(2, 1) = 0.0f;
  CHECK_THROWS_WITH_AS(fake_quant_forward<IntGrid>(x.cview(), two, y.view(), pass.view(), "attn_in"),
                       doctest::Contains("2 grids for attn_in with 3 rows"), Error);
  Mat<float> dx(3, 5);
  CHECK_THROWS_WITH_AS(fake_quant_backward(y.cview(), pass.cview(), dx.view()),
                       doctest::Contains("dx: shape [3, 5], expected [3, 4]"), Error);
}
