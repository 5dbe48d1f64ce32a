#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernel_test_util.hpp"
#include "reason/kernels/rmsnorm.hpp"

using namespace reason;
using namespace reason::kernels;
using namespace reason::test;

namespace {

constexpr index_t kN = 7, kC = 13;
constexpr double kEps = 1e-5;

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-13;
}

using Backward = void (*)(View<const double, 2>, View<const double, 1>, View<const double, 1>, View<const double, 2>,
                          View<double, 2>, View<double, 1>);

struct RmsGradcheck {
  GradcheckResult x, weight;
};

RmsGradcheck rmsnorm_gradcheck(Backward backward, index_t pad, Philox& rng) {
  Mat<double> x(kN, kC, pad), y(kN, kC, pad), r(kN, kC, pad), dx(kN, kC, pad);
  Vec<double> w(kC, pad + 1), rstd(kN, pad + 1), dw(kC, pad + 1);
  x.randomize(rng), r.randomize(rng), w.randomize(rng, 0.5, 1.5), dw.randomize(rng);
  const Vec<double> dw0 = dw;
  auto loss = [&] {
    rmsnorm_forward<double>(x.cview(), w.cview(), kEps, y.view(), rstd.view());
    return dot(y, r);
  };
  loss();  // rstd for the backward
  dx.fill(99.0);
  backward(x.cview(), w.cview(), rstd.cview(), r.cview(), dx.view(), dw.view());
  RmsGradcheck out;
  out.x = gradcheck(loss, x.all(), grad_buffer(dx));
  out.weight = gradcheck(loss, w.all(), diff(dw.buf, dw0.buf));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("rmsnorm: forward and backward match a float64 reference, strided too", T, float, double) {
  Philox rng(test_seed(), 30);
  INFO("seed " << rng.seed());
  for (index_t pad : {0, 3}) {
    INFO("pad " << pad);
    Mat<T> x(kN, kC, pad), y(kN, kC, pad), dy(kN, kC, pad), dx(kN, kC, pad);
    Vec<T> w(kC, pad + 1), rstd(kN, pad + 1), dw(kC, pad + 1);
    x.randomize(rng, -2, 2), dy.randomize(rng), w.randomize(rng, 0.5, 1.5), dw.randomize(rng);
    const Vec<T> dw0 = dw;
    y.fill(std::numeric_limits<T>::quiet_NaN());
    dx.fill(std::numeric_limits<T>::quiet_NaN());
    rmsnorm_forward<T>(x.cview(), w.cview(), T(kEps), y.view(), rstd.view());
    rmsnorm_backward<T>(x.cview(), w.cview(), rstd.cview(), dy.cview(), dx.view(), dw.view());
    Mat<double> yr(kN, kC), dxr(kN, kC);
    std::vector<double> dwr(kC);
    for (index_t c = 0; c < kC; ++c) dwr[c] = double(dw0(c));
    for (index_t n = 0; n < kN; ++n) {
      double ms = 0;
      for (index_t c = 0; c < kC; ++c) ms += double(x(n, c)) * double(x(n, c)) / kC;
      const double s = 1 / std::sqrt(ms + kEps);
      CHECK(std::abs(double(rstd(n)) - s) <= tol<T>() * s);
      // dx by the chain rule written out the long way: dy_i/dx_j = w_i (s delta_ij - x_i x_j s^3 / C).
      for (index_t c = 0; c < kC; ++c) {
        yr(n, c) = double(x(n, c)) * s * double(w(c));
        dwr[c] += double(dy(n, c)) * double(x(n, c)) * s;
        double g = 0;
        for (index_t i = 0; i < kC; ++i) {
          const double jac = double(w(i)) * ((i == c ? s : 0.0) - double(x(n, i)) * double(x(n, c)) * s * s * s / kC);
          g += double(dy(n, i)) * jac;
        }
        dxr(n, c) = g;
      }
    }
    CHECK(max_abs_diff(y, yr) <= tol<T>() * 4);
    CHECK(max_abs_diff(dx, dxr) <= tol<T>() * 4 * kC);
    for (index_t c = 0; c < kC; ++c) CHECK(std::abs(double(dw(c)) - dwr[c]) <= tol<T>() * 4 * kN);
    CHECK(y.padding_intact());
    CHECK(dx.padding_intact());
  }
}

TEST_CASE("rmsnorm: backward passes central finite differences and a broken one fails") {
  Philox rng(test_seed(), 31);
  for (index_t pad : {0, 2}) {
    const auto r = rmsnorm_gradcheck(&rmsnorm_backward<double>, pad, rng);
    INFO("pad " << pad << " dx " << r.x.describe() << " dweight " << r.weight.describe());
    CHECK(r.x.ok);
    CHECK(r.weight.ok);
  }
  // Drops the term through rstd (treats rstd as a constant): dx = rstd * dy * weight.
  Backward no_rstd_term = [](View<const double, 2> x, View<const double, 1> w, View<const double, 1> rstd,
                             View<const double, 2> dy, View<double, 2> dx, View<double, 1> dw) {
    rmsnorm_backward<double>(x, w, rstd, dy, dx, dw);
    for (index_t n = 0; n < x.shape[0]; ++n)
      for (index_t c = 0; c < x.shape[1]; ++c) dx(n, c) = rstd(n) * dy(n, c) * w(c);
  };
  // dweight off by a relative 1e-4.
  Backward perturbed = [](View<const double, 2> x, View<const double, 1> w, View<const double, 1> rstd,
                          View<const double, 2> dy, View<double, 2> dx, View<double, 1> dw) {
    std::vector<double> before(static_cast<std::size_t>(dw.shape[0]));
    for (index_t c = 0; c < dw.shape[0]; ++c) before[c] = dw(c);
    rmsnorm_backward<double>(x, w, rstd, dy, dx, dw);
    dw(5) = before[5] + (dw(5) - before[5]) * (1 + 1e-4);
  };
  const auto a = rmsnorm_gradcheck(no_rstd_term, 1, rng);
  INFO("no rstd term: " << a.x.describe());
  CHECK_FALSE(a.x.ok);
  const auto b = rmsnorm_gradcheck(perturbed, 1, rng);
  INFO("perturbed dweight: " << b.weight.describe());
  CHECK_FALSE(b.weight.ok);
  CHECK(b.x.ok);
}

TEST_CASE("rmsnorm: a zero row stays finite, rstd may be left out at inference, bad shapes are errors") {
  std::vector<float> x(2 * 4, 0.0f), w(4, 1.0f), y(8), rstd(2);
  x[4] = 3;
  rmsnorm_forward<float>(make_view<const float>(x.data(), 2, 4), make_view<const float>(w.data(), 4), 1e-6f,
                         make_view(y.data(), 2, 4), View<float, 1>{});
  for (int i = 0; i < 4; ++i) CHECK(y[i] == 0.0f);
  CHECK(y[4] == doctest::Approx(2.0f).epsilon(1e-5));  // 3 / sqrt(9 / 4)
  CHECK_THROWS_WITH_AS(rmsnorm_forward<float>(make_view<const float>(x.data(), 2, 4),
                                              make_view<const float>(w.data(), 3), 1e-6f, make_view(y.data(), 2, 4),
                                              make_view(rstd.data(), 2)),
                       "rmsnorm_forward: weight: shape [3], expected [4]", Error);
  CHECK_THROWS_WITH_AS(rmsnorm_forward<float>(make_view<const float>(x.data(), 2, 4),
                                              make_view<const float>(w.data(), 4), 1e-6f, make_view(y.data(), 2, 4),
                                              make_view(rstd.data(), 1)),
                       "rmsnorm_forward: rstd: shape [1], expected [2]", Error);
  CHECK_THROWS_WITH_AS(rmsnorm_forward<float>(make_view<const float>(x.data(), 2, 4),
                                              make_view<const float>(w.data(), 4), -1.0f, make_view(y.data(), 2, 4),
                                              make_view(rstd.data(), 2)),
                       "rmsnorm_forward: eps = -1, expected eps >= 0", Error);
  CHECK_THROWS_WITH_AS(rmsnorm_backward<float>(make_view<const float>(x.data(), 2, 4),
                                               make_view<const float>(w.data(), 4),
                                               make_view<const float>(rstd.data(), 2),
                                               make_view<const float>(y.data(), 2, 4), make_view(y.data(), 4, 2),
                                               make_view(w.data(), 4)),
                       "rmsnorm_backward: dx: shape [4, 2], expected [2, 4]", Error);
}
