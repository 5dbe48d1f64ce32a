#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernel_test_util.hpp"
#include "reason/kernels/linear.hpp"

using namespace reason;
using namespace reason::kernels;
using namespace reason::test;

namespace {

constexpr index_t kN = 7, kIn = 13, kOut = 5;

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-13;
}

}  // namespace

TEST_CASE_TEMPLATE("linear: forward and backward match a float64 reference, strided and contiguous", T, float,
                   double) {
  Philox rng(test_seed(), 10);
  INFO("seed " << rng.seed());
  for (index_t pad : {0, 3}) {
    for (bool bias : {true, false}) {
      INFO("pad " << pad << " bias " << bias);
      Mat<T> x(kN, kIn, pad), w(kOut, kIn, pad + 1), y(kN, kOut, pad), dy(kN, kOut, pad);
      Vec<T> b(kOut, pad + 1);
      x.randomize(rng), w.randomize(rng), b.randomize(rng), dy.randomize(rng);
      y.fill(std::numeric_limits<T>::quiet_NaN());
      linear_forward<T>(x.cview(), w.cview(), bias ? b.cview() : View<const T, 1>{}, y.view());
      Mat<double> yr(kN, kOut);
      for (index_t n = 0; n < kN; ++n)
        for (index_t o = 0; o < kOut; ++o) {
          double s = bias ? double(b(o)) : 0.0;
          for (index_t i = 0; i < kIn; ++i) s += double(x(n, i)) * double(w(o, i));
          yr(n, o) = s;
        }
      CHECK(max_abs_diff(y, yr) <= tol<T>() * kIn);
      CHECK(y.padding_intact());

      Mat<T> dx(kN, kIn, pad), dw(kOut, kIn, pad);
      Vec<T> db(kOut, 2);
      dx.fill(std::numeric_limits<T>::quiet_NaN());  // overwritten
      dw.randomize(rng);                               // accumulated
      db.randomize(rng);
      const Mat<T> dw0 = dw;
      const Vec<T> db0 = db;
      linear_backward<T>(x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(), bias ? db.view() : View<T, 1>{});
      Mat<double> dxr(kN, kIn), dwr(kOut, kIn);
      for (index_t n = 0; n < kN; ++n)
        for (index_t i = 0; i < kIn; ++i)
          for (index_t o = 0; o < kOut; ++o) dxr(n, i) += double(dy(n, o)) * double(w(o, i));
      for (index_t o = 0; o < kOut; ++o)
        for (index_t i = 0; i < kIn; ++i) {
          dwr(o, i) = double(dw0(o, i));
          for (index_t n = 0; n < kN; ++n) dwr(o, i) += double(dy(n, o)) * double(x(n, i));
        }
      CHECK(max_abs_diff(dx, dxr) <= tol<T>() * kOut);
      CHECK(max_abs_diff(dw, dwr) <= tol<T>() * kN);
      CHECK(dx.padding_intact());
      CHECK(dw.padding_intact());
      for (index_t o = 0; o < kOut; ++o) {
        double s = double(db0(o));
        if (bias)
          for (index_t n = 0; n < kN; ++n) s += double(dy(n, o));
        CHECK(std::abs(double(db(o)) - s) <= tol<T>() * kN);
      }
    }
  }
}

namespace {

using Backward = void (*)(View<const double, 2>, View<const double, 2>, View<const double, 2>, View<double, 2>,
                          View<double, 2>, View<double, 1>);

struct LinearGradcheck {
  GradcheckResult x, w, b;
};

/// Gradchecks `backward` against finite differences of L = sum(linear_forward(x, w, b) * R).
LinearGradcheck linear_gradcheck(Backward backward, index_t pad, Philox& rng) {
  Mat<double> x(kN, kIn, pad), w(kOut, kIn, pad), y(kN, kOut, pad), r(kN, kOut, pad);
  Vec<double> b(kOut, pad + 1);
  x.randomize(rng), w.randomize(rng), b.randomize(rng), r.randomize(rng);
  auto loss = [&] {
    linear_forward<double>(x.cview(), w.cview(), b.cview(), y.view());
    return dot(y, r);
  };
  Mat<double> dx(kN, kIn, pad), dw(kOut, kIn, pad);
  Vec<double> db(kOut, pad + 1);
  dx.fill(123.0);
  dw.randomize(rng);
  db.randomize(rng);
  const Mat<double> dw0 = dw;
  const Vec<double> db0 = db;
  backward(x.cview(), w.cview(), r.cview(), dx.view(), dw.view(), db.view());  // dy = R
  LinearGradcheck out;
  const auto gx = grad_buffer(dx);
  const auto gw = diff(dw.buf, dw0.buf), gb = diff(db.buf, db0.buf);
  out.x = gradcheck(loss, x.all(), gx);
  out.w = gradcheck(loss, w.all(), gw);
  out.b = gradcheck(loss, b.all(), gb);
  return out;
}

}  // namespace

TEST_CASE("linear: backward passes central finite differences, strided too") {
  Philox rng(test_seed(), 11);
  INFO("seed " << rng.seed());
  for (index_t pad : {0, 2}) {
    const auto r = linear_gradcheck(&linear_backward<double>, pad, rng);
    INFO("pad " << pad << " dx " << r.x.describe() << " dw " << r.w.describe() << " db " << r.b.describe());
    CHECK(r.x.ok);
    CHECK(r.w.ok);
    CHECK(r.b.ok);
  }
}

TEST_CASE("linear: gradcheck reports a deliberately broken backward") {
  Philox rng(test_seed(), 12);
  // dx off by a relative 1e-4.
  Backward perturbed = [](View<const double, 2> x, View<const double, 2> w, View<const double, 2> dy,
                          View<double, 2> dx, View<double, 2> dw, View<double, 1> db) {
    linear_backward<double>(x, w, dy, dx, dw, db);
    dx(2, 3) *= 1 + 1e-4;
  };
  // db dropped, and dW missing the last position's term.
  Backward dropped = [](View<const double, 2> x, View<const double, 2> w, View<const double, 2> dy,
                        View<double, 2> dx, View<double, 2> dw, View<double, 1>) {
    gemm<double>(Trans::N, Trans::N, 1.0, dy, w, 0.0, dx);
    gemm<double>(Trans::T, Trans::N, 1.0, dy.slice(0, 0, kN - 1), x.slice(0, 0, kN - 1), 1.0, dw);
  };
  const auto p = linear_gradcheck(perturbed, 1, rng);
  INFO("perturbed dx: " << p.x.describe());
  CHECK_FALSE(p.x.ok);
  CHECK(p.w.ok);
  const auto d = linear_gradcheck(dropped, 1, rng);
  INFO("dropped db: " << d.b.describe() << " dw without a term: " << d.w.describe());
  CHECK_FALSE(d.b.ok);
  CHECK_FALSE(d.w.ok);
  CHECK(d.x.ok);
}

TEST_CASE("linear: empty dx and db are skipped") {
  Philox rng(test_seed(), 13);
  Mat<float> x(kN, kIn), w(kOut, kIn), dy(kN, kOut), dw(kOut, kIn);
  x.randomize(rng), w.randomize(rng), dy.randomize(rng);
  CHECK_NOTHROW(linear_backward<float>(x.cview(), w.cview(), dy.cview(), View<float, 2>{}, dw.view(), View<float, 1>{}));
  double s = 0;
  for (index_t n = 0; n < kN; ++n) s += double(dy(n, 1)) * double(x(n, 4));
  CHECK(std::abs(dw(1, 4) - s) <= 1e-5);
}

TEST_CASE("linear: bad shapes are errors naming the argument") {
  std::vector<float> buf(1000);
  auto x = make_view<const float>(buf.data(), 7, 13);
  auto w = make_view<const float>(buf.data(), 5, 13);
  auto w_bad = make_view<const float>(buf.data(), 5, 12);
  CHECK_THROWS_WITH_AS(linear_forward<float>(x, w_bad, {}, make_view(buf.data(), 7, 5)),
                       "linear_forward: w: shape [5, 12], expected [5, 13]", Error);
  CHECK_THROWS_WITH_AS(linear_forward<float>(x, w, make_view<const float>(buf.data(), 4), make_view(buf.data(), 7, 5)),
                       "linear_forward: b: shape [4], expected [5]", Error);
  CHECK_THROWS_WITH_AS(linear_forward<float>(x, w, {}, make_view(buf.data(), 7, 6)),
                       "linear_forward: y: shape [7, 6], expected [7, 5]", Error);
  View<const float, 2> xs(buf.data(), {7, 13}, {26, 2});
  CHECK_THROWS_WITH_AS(linear_forward<float>(xs, w, {}, make_view(buf.data(), 7, 5)),
                       "linear_forward: x: innermost stride 2, expected 1 (shape [7, 13])", Error);
  auto dy = make_view<const float>(buf.data(), 7, 5);
  CHECK_THROWS_WITH_AS(linear_backward<float>(x, w, make_view<const float>(buf.data(), 6, 5), {},
                                              make_view(buf.data(), 5, 13), {}),
                       "linear_backward: dy: shape [6, 5], expected [7, 5]", Error);
  CHECK_THROWS_WITH_AS(linear_backward<float>(x, w, dy, make_view(buf.data(), 7, 12), make_view(buf.data(), 5, 13), {}),
                       "linear_backward: dx: shape [7, 12], expected [7, 13]", Error);
  CHECK_THROWS_WITH_AS(linear_backward<float>(x, w, dy, {}, make_view(buf.data(), 13, 5), {}),
                       "linear_backward: dw: shape [13, 5], expected [5, 13]", Error);
  CHECK_THROWS_WITH_AS(linear_backward<float>(x, w, dy, {}, make_view(buf.data(), 5, 13), make_view(buf.data(), 7)),
                       "linear_backward: db: shape [7], expected [5]", Error);
}
