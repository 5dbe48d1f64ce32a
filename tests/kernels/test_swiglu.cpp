#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernel_test_util.hpp"
#include "reason/kernels/swiglu.hpp"

using namespace reason;
using namespace reason::kernels;
using namespace reason::test;

namespace {

constexpr index_t kN = 7, kF = 13;

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-14;
}

using Backward = void (*)(View<const double, 2>, View<const double, 2>, View<const double, 2>, View<double, 2>,
                          View<double, 2>);

struct SwigluGradcheck {
  GradcheckResult g, u;
};

SwigluGradcheck swiglu_gradcheck(Backward backward, index_t pad, Philox& rng) {
  Mat<double> g(kN, kF, pad), u(kN, kF, pad), h(kN, kF, pad), r(kN, kF, pad), dg(kN, kF, pad), du(kN, kF, pad);
  g.randomize(rng, -4, 4), u.randomize(rng, -2, 2), r.randomize(rng);
  auto loss = [&] {
    swiglu_forward<double>(g.cview(), u.cview(), h.view());
    return dot(h, r);
  };
  dg.fill(5.0), du.fill(-5.0);
  backward(g.cview(), u.cview(), r.cview(), dg.view(), du.view());
  SwigluGradcheck out;
  out.g = gradcheck(loss, g.all(), grad_buffer(dg));
  out.u = gradcheck(loss, u.all(), grad_buffer(du));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("swiglu: forward and backward match a float64 reference, strided too", T, float, double) {
  Philox rng(test_seed(), 40);
  INFO("seed " << rng.seed());
  for (index_t pad : {0, 3}) {
    INFO("pad " << pad);
    Mat<T> g(kN, kF, pad), u(kN, kF, pad), h(kN, kF, pad), dh(kN, kF, pad), dg(kN, kF, pad), du(kN, kF, pad);
    g.randomize(rng, -6, 6), u.randomize(rng, -2, 2), dh.randomize(rng);
    h.fill(std::numeric_limits<T>::quiet_NaN());
    dg.fill(std::numeric_limits<T>::quiet_NaN());
    du.fill(std::numeric_limits<T>::quiet_NaN());
    swiglu_forward<T>(g.cview(), u.cview(), h.view());
    swiglu_backward<T>(g.cview(), u.cview(), dh.cview(), dg.view(), du.view());
    Mat<double> hr(kN, kF), dgr(kN, kF), dur(kN, kF);
    for (index_t n = 0; n < kN; ++n)
      for (index_t f = 0; f < kF; ++f) {
        const double x = double(g(n, f)), s = 1 / (1 + std::exp(-x));
        hr(n, f) = x * s * double(u(n, f));
        dgr(n, f) = double(dh(n, f)) * double(u(n, f)) * (s + x * s * (1 - s));
        dur(n, f) = double(dh(n, f)) * x * s;
      }
    CHECK(max_abs_diff(h, hr) <= tol<T>() * 12);
    CHECK(max_abs_diff(dg, dgr) <= tol<T>() * 12);
    CHECK(max_abs_diff(du, dur) <= tol<T>() * 12);
    CHECK(h.padding_intact());
    CHECK(dg.padding_intact());
    CHECK(du.padding_intact());
  }
}

TEST_CASE("swiglu: backward passes central finite differences and a broken one fails") {
  Philox rng(test_seed(), 41);
  for (index_t pad : {0, 2}) {
    const auto r = swiglu_gradcheck(&swiglu_backward<double>, pad, rng);
    INFO("pad " << pad << " dg " << r.g.describe() << " du " << r.u.describe());
    CHECK(r.g.ok);
    CHECK(r.u.ok);
  }
  // Drops the sigmoid-derivative term: dg = dh * u * s.
  Backward no_sigmoid_term = [](View<const double, 2> g, View<const double, 2> u, View<const double, 2> dh,
                                View<double, 2> dg, View<double, 2> du) {
    swiglu_backward<double>(g, u, dh, dg, du);
    for (index_t n = 0; n < g.shape[0]; ++n)
      for (index_t f = 0; f < g.shape[1]; ++f) dg(n, f) = dh(n, f) * u(n, f) / (1 + std::exp(-g(n, f)));
  };
  Backward perturbed = [](View<const double, 2> g, View<const double, 2> u, View<const double, 2> dh,
                          View<double, 2> dg, View<double, 2> du) {
    swiglu_backward<double>(g, u, dh, dg, du);
    du(3, 4) *= 1 + 1e-4;
  };
  const auto a = swiglu_gradcheck(no_sigmoid_term, 1, rng);
  INFO("no sigmoid term: " << a.g.describe());
  CHECK_FALSE(a.g.ok);
  const auto b = swiglu_gradcheck(perturbed, 1, rng);
  INFO("perturbed du: " << b.u.describe());
  CHECK_FALSE(b.u.ok);
  CHECK(b.g.ok);
}

TEST_CASE("swiglu: saturated gates stay finite, bad shapes are errors naming the argument") {
  std::vector<float> g = {-1000.0f, 1000.0f, 0.0f}, u = {2.0f, 3.0f, 4.0f}, h(3), dh = {1, 1, 1}, dg(3), du(3);
  swiglu_forward<float>(make_view<const float>(g.data(), 1, 3), make_view<const float>(u.data(), 1, 3),
                        make_view(h.data(), 1, 3));
  CHECK(h[0] == 0.0f);
  CHECK(h[1] == 3000.0f);
  CHECK(h[2] == 0.0f);
  swiglu_backward<float>(make_view<const float>(g.data(), 1, 3), make_view<const float>(u.data(), 1, 3),
                         make_view<const float>(dh.data(), 1, 3), make_view(dg.data(), 1, 3),
                         make_view(du.data(), 1, 3));
  CHECK(dg[0] == 0.0f);
  CHECK(dg[1] == 3.0f);
  CHECK(dg[2] == 2.0f);  // u * sigmoid(0) * (1 + 0)
  CHECK_THROWS_WITH_AS(swiglu_forward<float>(make_view<const float>(g.data(), 1, 3),
                                             make_view<const float>(u.data(), 3, 1), make_view(h.data(), 1, 3)),
                       "swiglu_forward: u: shape [3, 1], expected [1, 3]", Error);
  CHECK_THROWS_WITH_AS(swiglu_backward<float>(make_view<const float>(g.data(), 1, 3),
                                              make_view<const float>(u.data(), 1, 3),
                                              make_view<const float>(dh.data(), 1, 3), make_view(dg.data(), 1, 2),
                                              make_view(du.data(), 1, 3)),
                       "swiglu_backward: dg: shape [1, 2], expected [1, 3]", Error);
}
