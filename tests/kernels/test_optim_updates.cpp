#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/kernels/adamw.hpp"
#include "reason/kernels/sgd.hpp"
#include "support/gradcheck.hpp"

using namespace reason;
using namespace reason::kernels;
using namespace reason::test;

namespace {

struct AdamState {
  std::vector<double> p, m, v;
};

/// AdamW as the paper writes it, one element at a time, in double.
void adamw_reference(AdamState& s, const std::vector<double>& g, double lr, double b1, double b2, double eps,
                     double wd, std::int64_t t) {
  for (std::size_t i = 0; i < s.p.size(); ++i) {
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    const double mhat = s.m[i] / (1 - std::pow(b1, double(t)));
    const double vhat = s.v[i] / (1 - std::pow(b2, double(t)));
    s.p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * s.p[i]);
  }
}

template <class T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

/// Largest |a - b| / max(|b|, floor): relative for double; for float, whose stored state is
/// rounded every step (and m = b1 m + (1 - b1) g cancels), relative to the O(1) inputs.
template <class T>
double max_rel(const std::vector<T>& a, const std::vector<double>& b) {
  const double floor = std::is_same_v<T, float> ? 1.0 : 1e-3;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(double(a[i]) - b[i]) / std::max(std::abs(b[i]), floor);
    if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
  }
  return worst;
}

std::vector<double> random(std::size_t n, Philox& rng, double lo = -1, double hi = 1) {
  std::vector<double> x(n);
  fill_uniform<double>(x, rng, lo, hi);
  return x;
}

}  // namespace

TEST_CASE_TEMPLATE("adamw_update: ten steps match a hand-written float64 AdamW", T, float, double) {
  Philox rng(test_seed(), 50);
  INFO("seed " << rng.seed());
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
  for (std::size_t n : {std::size_t{13}, std::size_t{100003}}) {  // the second one is split across threads
    INFO("n " << n);
    AdamState ref{random(n, rng), std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
    std::vector<T> p = cast<T>(ref.p), m(n, T(0)), v(n, T(0));
    for (auto& x : ref.p) x = double(T(x));  // start from the same (rounded) parameters
    for (std::int64_t t = 1; t <= 10; ++t) {
      std::vector<double> g = random(n, rng, -2, 2);
      if (!std::is_same_v<T, double>)
        for (auto& x : g) x = double(T(x));
      const std::vector<T> gt = cast<T>(g);
      adamw_update<T>(p, gt, m, v, lr, b1, b2, eps, wd, t);
      adamw_reference(ref, g, lr, b1, b2, eps, wd, t);
      INFO("t " << t);
      CHECK(max_rel(p, ref.p) <= tol);
      CHECK(max_rel(m, ref.m) <= tol);
      CHECK(max_rel(v, ref.v) <= tol);
    }
  }
}

TEST_CASE("adamw_update: bias correction at t = 1, 2 and 10 from a given state") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  // t = 1 from zero moments: mhat = g, vhat = g^2, so the step is lr * (g / (|g| + eps) + wd p).
  std::vector<double> p = {1.0, -2.0, 0.5}, g = {0.3, -0.02, 4.0}, m(3, 0.0), v(3, 0.0);
  adamw_update<double>(p, g, m, v, lr, b1, b2, eps, wd, 1);
  const double p0[] = {1.0, -2.0, 0.5};
  for (int i = 0; i < 3; ++i) {
    const double expect = p0[i] - lr * (g[i] / (std::abs(g[i]) + eps) + wd * p0[i]);
    CHECK(p[i] == doctest::Approx(expect).epsilon(1e-14));
    CHECK(m[i] == doctest::Approx(0.1 * g[i]).epsilon(1e-14));
    CHECK(v[i] == doctest::Approx(0.001 * g[i] * g[i]).epsilon(1e-14));
  }
  // t = 2 and t = 10 from a nonzero state: the corrections are 1 - b^t.
  for (std::int64_t t : {2, 10}) {
    std::vector<double> q = {0.7}, gg = {-0.4}, mm = {0.05}, vv = {0.002};
    adamw_update<double>(q, gg, mm, vv, lr, b1, b2, eps, wd, t);
    const double m1 = 0.9 * 0.05 + 0.1 * -0.4, v1 = 0.999 * 0.002 + 0.001 * 0.16;
    const double expect = 0.7 - lr * ((m1 / (1 - std::pow(0.9, double(t)))) /
                                          (std::sqrt(v1 / (1 - std::pow(0.999, double(t)))) + eps) +
                                      wd * 0.7);
    INFO("t " << t);
    CHECK(q[0] == doctest::Approx(expect).epsilon(1e-14));
  }
}

TEST_CASE("adamw_update: bad sizes and hyper-parameters are errors") {
  std::vector<float> p(4), g(4), m(4), v(3);
  CHECK_THROWS_WITH_AS(adamw_update<float>(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1),
                       "adamw_update: v has 3 elements, expected 4 (the size of p)", Error);
  v.resize(4);
  CHECK_THROWS_WITH_AS(adamw_update<float>(p, std::span<const float>(g).first(2), m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1),
                       "adamw_update: g has 2 elements, expected 4 (the size of p)", Error);
  CHECK_THROWS_WITH_AS(adamw_update<float>(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 0),
                       "adamw_update: step t = 0, expected t >= 1 (steps count from 1)", Error);
  CHECK_THROWS_WITH_AS(adamw_update<float>(p, g, m, v, 1e-3, 1.0, 0.95, 1e-8, 0.0, 1),
                       "adamw_update: beta1 = 1, expected 0 <= beta1 < 1", Error);
}

namespace {

/// SGD with momentum as the header's formula says, in double.
void sgd_reference(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& buf, double lr,
                   double mu, double wd, bool nesterov) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    buf[i] = mu * buf[i] + g[i];
    const double step = nesterov ? g[i] + mu * buf[i] : buf[i];
    p[i] = p[i] - lr * step - lr * wd * p[i];
  }
}

}  // namespace

TEST_CASE_TEMPLATE("sgd_momentum_update: heavy-ball and Nesterov steps match a float64 reference", T, float, double) {
  Philox rng(test_seed(), 51);
  INFO("seed " << rng.seed());
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
  for (bool nesterov : {false, true}) {
    for (std::size_t n : {std::size_t{7}, std::size_t{70001}}) {
      INFO("nesterov " << nesterov << " n " << n);
      std::vector<double> pr = random(n, rng), buf_r(n, 0.0);
      for (auto& x : pr) x = double(T(x));
      std::vector<T> p = cast<T>(pr), buf(n, T(0));
      for (int step = 0; step < 5; ++step) {
        std::vector<double> g = random(n, rng);
        for (auto& x : g) x = double(T(x));
        const std::vector<T> gt = cast<T>(g);
        sgd_momentum_update<T>(p, gt, buf, 0.05, 0.9, 0.01, nesterov);
        sgd_reference(pr, g, buf_r, 0.05, 0.9, 0.01, nesterov);
        CHECK(max_rel(p, pr) <= tol);
        CHECK(max_rel(buf, buf_r) <= tol);
      }
    }
  }
}

TEST_CASE("sgd_momentum_update: a hand-computed Nesterov step, plain SGD without a buffer, bad sizes") {
  std::vector<double> p = {1.0}, g = {0.5}, buf = {0.2};
  sgd_momentum_update<double>(p, g, buf, 0.1, 0.9, 0.0, true);
  CHECK(buf[0] == doctest::Approx(0.68));               // 0.9 * 0.2 + 0.5
  CHECK(p[0] == doctest::Approx(1.0 - 0.1 * (0.5 + 0.9 * 0.68)));
  std::vector<double> q = {2.0}, none;
  sgd_momentum_update<double>(q, g, none, 0.1, 0.0, 0.5, false);
  CHECK(q[0] == doctest::Approx(2.0 - 0.05 - 0.1));  // lr g + lr wd p
  CHECK_THROWS_WITH_AS(sgd_momentum_update<double>(q, g, none, 0.1, 0.9, 0.0, false),
                       "sgd_momentum_update: buf has 0 elements, expected 1 (the size of p; empty is allowed only with "
                       "momentum 0)",
                       Error);
  std::vector<double> g2 = {1.0, 2.0};
  CHECK_THROWS_WITH_AS(sgd_momentum_update<double>(q, g2, buf, 0.1, 0.9, 0.0, false),
                       "sgd_momentum_update: g has 2 elements, expected 1 (the size of p)", Error);
}
