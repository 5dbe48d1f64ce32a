// Rotary position embedding: a float64 reference, the rotate_half pairing, orthogonality, the
// relative-position property, backward = inverse, finite differences, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "reason/kernels/rope.hpp"
#include "support/gradcheck.hpp"

using namespace reason;
using namespace reason::kernels;

namespace {

/// Naive float64 rotation of one head vector x [D] to position pos (pairs (i, i + D/2)).
std::vector<double> rope_ref(const std::vector<double>& x, double pos, double theta) {
  const int D = static_cast<int>(x.size()), half = D / 2;
  std::vector<double> y(D);
  for (int i = 0; i < half; ++i) {
    const double a = pos * std::pow(theta, -2.0 * i / D);
    y[i] = x[i] * std::cos(a) - x[i + half] * std::sin(a);
    y[i + half] = x[i] * std::sin(a) + x[i + half] * std::cos(a);
  }
  return y;
}

/// A fused buffer [N, H + 2 Hkv, D] (the model's qkv layout) whose k part is the strided view under test.
template <class T>
struct Fused {
  index_t N, H, Hkv, D;
  std::vector<T> buf;
  Fused(index_t n, index_t h, index_t hkv, index_t d) : N(n), H(h), Hkv(hkv), D(d), buf(n * (h + 2 * hkv) * d) {}
  View<T, 3> all() { return make_view(buf.data(), N, H + 2 * Hkv, D); }
  View<T, 3> k() { return all().slice(1, H, H + Hkv); }  // [N, Hkv, D], strided
};

}  // namespace

TEST_CASE_TEMPLATE("rope_forward matches a float64 reference on a strided slice of a fused qkv buffer", T, float,
                   double) {
  Philox rng(test::test_seed(), 1);
  INFO("seed ", test::test_seed());
  for (double theta : {10000.0, 500000.0}) {
    for (index_t D : {6, 10}) {
      Fused<T> f(7, 3, 2, D);
      test::fill_uniform(std::span<T>(f.buf), rng);
      const std::vector<T> before = f.buf;
      const std::vector<std::int32_t> pos = {5, 0, 63, 17, 17, 2, 40};  // any order, repeats allowed
      const RopeTable<T> table(64, static_cast<int>(D), theta);
      CHECK(table.max_positions() == 64);
      CHECK(table.head_dim() == D);
      auto x = f.k();
      rope_forward<T>(table, make_view(pos.data(), 7), x);
      const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
      double worst = 0;
      for (index_t n = 0; n < f.N; ++n) {
        for (index_t h = 0; h < f.H + 2 * f.Hkv; ++h) {
          const bool rotated = h >= f.H && h < f.H + f.Hkv;
          std::vector<double> in(D);
          for (index_t d = 0; d < D; ++d) in[d] = before[(n * (f.H + 2 * f.Hkv) + h) * D + d];
          const std::vector<double> want = rotated ? rope_ref(in, pos[n], theta) : in;
          for (index_t d = 0; d < D; ++d) {
            const double got = f.all()(n, h, d);
            if (!rotated) REQUIRE(got == want[d]);  // q and v parts untouched, bit for bit
            worst = std::max(worst, std::abs(got - want[d]));
          }
        }
      }
      CHECK(worst <= tol);
    }
  }
}

TEST_CASE("rope pairs coordinate i with i + D/2 (rotate_half), not adjacent coordinates") {
  const RopeTable<double> table(4, 4);
  std::vector<double> x = {1, 0, 0, 0};  // e_0 at position 1 rotates towards e_2 by 1 radian
  const std::int32_t p = 1;
  rope_forward<double>(table, make_view(&p, 1), make_view(x.data(), 1, 1, 4));
  CHECK(x[0] == doctest::Approx(std::cos(1.0)));
  CHECK(x[1] == 0.0);
  CHECK(x[2] == doctest::Approx(std::sin(1.0)));
  CHECK(x[3] == 0.0);
  CHECK(table.cos(0, 1) == 1.0);  // position 0 is the identity
  CHECK(table.sin(0, 1) == 0.0);
  CHECK(table.cos(3, 1) == doctest::Approx(std::cos(3 * std::pow(10000.0, -0.5))));
}

TEST_CASE_TEMPLATE("rope preserves norms and rope_backward inverts rope_forward", T, float, double) {
  Philox rng(test::test_seed(), 2);
  Fused<T> f(9, 2, 3, 10);
  test::fill_uniform(std::span<T>(f.buf), rng);
  const std::vector<T> before = f.buf;
  std::vector<std::int32_t> pos(9);
  for (auto& p : pos) p = static_cast<std::int32_t>(rng.below(1000));
  const RopeTable<T> table(1000, 10);
  auto x = f.k();
  rope_forward<T>(table, make_view(pos.data(), 9), x);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  bool moved = false;
  for (index_t n = 0; n < 9; ++n) {
    for (index_t h = 0; h < 3; ++h) {
      double n0 = 0, n1 = 0;
      for (index_t d = 0; d < 10; ++d) {
        const double b = before[(n * 8 + 2 + h) * 10 + d], a = x(n, h, d);
        n0 += b * b;
        n1 += a * a;
        moved |= std::abs(a - b) > 1e-3;
      }
      CHECK(std::abs(std::sqrt(n1) - std::sqrt(n0)) <= tol);
    }
  }
  CHECK(moved);  // it did rotate
  rope_backward<T>(table, make_view(pos.data(), 9), x);
  double worst = 0;
  for (std::size_t i = 0; i < before.size(); ++i) worst = std::max(worst, std::abs(double(f.buf[i]) - before[i]));
  CHECK(worst <= tol);
}

TEST_CASE("rope: the dot product of rope(q, m) and rope(k, n) depends only on m - n") {
  Philox rng(test::test_seed(), 3);
  const int D = 10;
  const RopeTable<double> table(512, D);
  std::vector<double> q(D), k(D);
  test::fill_uniform(std::span<double>(q), rng);
  test::fill_uniform(std::span<double>(k), rng);
  auto score = [&](std::int32_t m, std::int32_t n) {
    std::vector<double> x(2 * D);
    std::copy(q.begin(), q.end(), x.begin());
    std::copy(k.begin(), k.end(), x.begin() + D);
    const std::int32_t pos[2] = {m, n};
    rope_forward<double>(table, make_view(pos, 2), make_view(x.data(), 2, 1, D));
    double s = 0;
    for (int d = 0; d < D; ++d) s += x[d] * x[D + d];
    return s;
  };
  for (auto [m, n] : {std::pair{7, 3}, std::pair{3, 7}, std::pair{100, 100}, std::pair{250, 11}}) {
    const double s0 = score(m, n);
    for (int shift : {1, 17, 200}) CHECK(std::abs(score(m + shift, n + shift) - s0) <= 1e-12);
  }
  CHECK(std::abs(score(7, 3) - score(7, 4)) > 1e-3);  // and it does depend on the offset
}

TEST_CASE("rope_backward passes a finite-difference check on a strided view, a broken one fails") {
  Philox rng(test::test_seed(), 4);
  INFO("seed ", test::test_seed());
  Fused<double> f(6, 2, 2, 6);
  test::fill_uniform(std::span<double>(f.buf), rng);
  std::vector<double> R(6 * 2 * 6);
  test::fill_uniform(std::span<double>(R), rng);
  const std::vector<std::int32_t> pos = {3, 9, 0, 1, 30, 12};
  const RopeTable<double> table(31, 6);
  auto loss = [&] {
    Fused<double> g = f;
    auto x = g.k();
    rope_forward<double>(table, make_view(pos.data(), 6), x);
    double l = 0;
    for (index_t n = 0; n < 6; ++n)
      for (index_t h = 0; h < 2; ++h)
        for (index_t d = 0; d < 6; ++d) l += x(n, h, d) * R[(n * 2 + h) * 6 + d];
    return l;
  };
  // The analytic gradient of the whole fused buffer: dL/dx in the k slice, zero elsewhere.
  auto analytic = [&](bool broken) {
    Fused<double> g(6, 2, 2, 6);
    auto dx = g.k();
    for (index_t n = 0; n < 6; ++n)
      for (index_t h = 0; h < 2; ++h)
        for (index_t d = 0; d < 6; ++d) dx(n, h, d) = R[(n * 2 + h) * 6 + d];
    if (broken) {
      rope_forward<double>(table, make_view(pos.data(), 6), dx);  // rotates the wrong way
    } else {
      rope_backward<double>(table, make_view(pos.data(), 6), dx);
    }
    return g.buf;
  };
  const auto good = test::gradcheck(loss, f.buf, analytic(false));
  INFO(good.describe());
  CHECK(good.ok);
  const auto bad = test::gradcheck(loss, f.buf, analytic(true));
  CHECK_FALSE(bad.ok);
}

TEST_CASE("rope: bad head_dim, shapes and out-of-range positions are errors that leave x untouched") {
  CHECK_THROWS_WITH_AS(RopeTable<float>(8, 7), "RopeTable: head_dim 7 must be positive and even (rotate_half pairs i with i + head_dim/2)", Error);
  CHECK_THROWS_WITH_AS(RopeTable<float>(-1, 8), "RopeTable: max_positions -1 is negative", Error);
  CHECK_THROWS_WITH_AS(RopeTable<float>(8, 8, 0.0), "RopeTable: theta 0 must be positive and finite", Error);
  const RopeTable<float> table(8, 8);
  std::vector<float> x(3 * 2 * 8, 0.5f);
  const std::vector<float> before = x;
  std::vector<std::int32_t> pos = {0, 3, 8};
  auto xv = make_view(x.data(), 3, 2, 8);
  CHECK_THROWS_WITH_AS(rope_forward<float>(table, make_view(pos.data(), 3), xv),
                       "rope_forward: pos[2] = 8 is out of range [0, 8) of the RopeTable", Error);
  pos = {0, -1, 2};
  CHECK_THROWS_WITH_AS(rope_backward<float>(table, make_view(pos.data(), 3), xv),
                       "rope_backward: pos[1] = -1 is out of range [0, 8) of the RopeTable", Error);
  CHECK(x == before);
  pos = {0, 1, 2};
  CHECK_THROWS_WITH_AS(rope_forward<float>(table, make_view(pos.data(), 3), make_view(x.data(), 3, 2, 6)),
                       "rope_forward: x: shape [3, 2, 6], expected [3, 2, 8] (N from pos, D from the table)", Error);
  CHECK_THROWS_WITH_AS(rope_backward<float>(table, make_view(pos.data(), 2), xv),
                       "rope_backward: dx: shape [3, 2, 8], expected [2, 2, 8] (N from pos, D from the table)", Error);
  CHECK_THROWS_WITH_AS(rope_forward<float>(table, make_view(pos.data(), 3), View<float, 3>(nullptr, {3, 2, 8})),
                       "rope_forward: x is empty (data is null)", Error);
  CHECK(x == before);
}
