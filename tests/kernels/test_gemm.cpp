#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernel_test_util.hpp"
#include "reason/kernels/gemm.hpp"

using namespace reason;
using namespace reason::kernels;
using reason::test::Mat;

namespace {

template <class T>
using GemmFn = void (*)(Trans, Trans, T, View<const T, 2>, View<const T, 2>, T, View<T, 2>);

template <class T>
GemmFn<T> path(bool blocked) {
  return blocked ? &kernels::detail::gemm_blocked<T> : &gemm<T>;
}

/// Runs C = alpha op(A) op(B) + beta C through `fn` on random A, B, C (C NaN when nan_c) and
/// returns the largest error relative to the per-element scale |alpha| sum|a b| + |beta c|,
/// measured in units of K * epsilon(T) (so <= ~1 for a correct product).
template <class T>
double gemm_error(GemmFn<T> fn, Trans ta, Trans tb, index_t M, index_t N, index_t K, T alpha, T beta, index_t pad,
                  Philox& rng, bool nan_c = false, bool* padding_ok = nullptr) {
  Mat<T> A = ta == Trans::N ? Mat<T>(M, K, pad) : Mat<T>(K, M, pad);
  Mat<T> B = tb == Trans::N ? Mat<T>(K, N, pad) : Mat<T>(N, K, pad + 2);
  Mat<T> C(M, N, pad);
  A.randomize(rng);
  B.randomize(rng);
  if (nan_c) {
    C.fill(std::numeric_limits<T>::quiet_NaN());
  } else {
    C.randomize(rng);
  }
  const Mat<T> C0 = C;
  fn(ta, tb, alpha, A.cview(), B.cview(), beta, C.view());
  if (padding_ok) *padding_ok = C.padding_intact();
  auto a = [&](index_t i, index_t k) { return (long double)(ta == Trans::N ? A(i, k) : A(k, i)); };
  auto b = [&](index_t k, index_t j) { return (long double)(tb == Trans::N ? B(k, j) : B(j, k)); };
  double worst = 0;
  for (index_t i = 0; i < M; ++i) {
    for (index_t j = 0; j < N; ++j) {
      long double s = 0, mag = 0;
      for (index_t k = 0; k < K; ++k) {
        s += a(i, k) * b(k, j);
        mag += std::abs(a(i, k) * b(k, j));
      }
      const long double c0 = beta == T(0) ? 0.0L : (long double)C0(i, j);
      const long double ref = (long double)alpha * s + (long double)beta * c0;
      const long double scale = std::abs((long double)alpha) * mag + std::abs((long double)beta * c0) + 1e-30L;
      const double err = double(std::abs((long double)C(i, j) - ref) / scale) /
                         (double(K + 2) * std::numeric_limits<T>::epsilon());
      if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
    }
  }
  return worst;
}

}  // namespace

TEST_CASE_TEMPLATE("gemm: all four Trans combinations with alpha and beta, CBLAS and blocked", T, float, double) {
  Philox rng(reason::test::test_seed(), 1);
  INFO("seed " << rng.seed());
  const struct {
    index_t m, n, k;
  } shapes[] = {{7, 13, 5}, {1, 1, 1}, {5, 1, 9}, {1, 17, 3}, {70, 33, 140}};
  const T ab[][2] = {{T(1), T(0)}, {T(0.7), T(-1.3)}, {T(-2), T(1)}};
  for (bool blocked : {false, true}) {
    for (Trans ta : {Trans::N, Trans::T}) {
      for (Trans tb : {Trans::N, Trans::T}) {
        for (const auto& s : shapes) {
          for (const auto& coef : ab) {
            for (index_t pad : {0, 3}) {
              bool padding_ok = false;
              const double err = gemm_error(path<T>(blocked), ta, tb, s.m, s.n, s.k, coef[0], coef[1], pad, rng,
                                            false, &padding_ok);
              INFO("blocked " << blocked << " ta " << int(ta) << " tb " << int(tb) << " M " << s.m << " N " << s.n
                              << " K " << s.k << " alpha " << coef[0] << " beta " << coef[1] << " pad " << pad);
              CHECK(err <= 2.0);
              CHECK(padding_ok);
            }
          }
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE("gemm: beta 0 ignores NaN in C and alpha 0 reads neither A nor B", T, float, double) {
  Philox rng(reason::test::test_seed(), 2);
  for (bool blocked : {false, true}) {
    INFO("blocked " << blocked);
    for (Trans ta : {Trans::N, Trans::T}) {
      CHECK(gemm_error(path<T>(blocked), ta, Trans::T, 7, 13, 5, T(1.5), T(0), 2, rng, /*nan_c=*/true) <= 2.0);
    }
    Mat<T> A(4, 3), B(3, 5), C(4, 5, 1);
    A.fill(std::numeric_limits<T>::quiet_NaN());
    B.randomize(rng);
    C.fill(T(3));
    path<T>(blocked)(Trans::N, Trans::N, T(0), A.cview(), B.cview(), T(2), C.view());
    for (index_t i = 0; i < 4; ++i)
      for (index_t j = 0; j < 5; ++j) CHECK(C(i, j) == T(6));
    C.fill(std::numeric_limits<T>::quiet_NaN());
    path<T>(blocked)(Trans::N, Trans::N, T(0), A.cview(), B.cview(), T(0), C.view());
    for (index_t i = 0; i < 4; ++i)
      for (index_t j = 0; j < 5; ++j) CHECK(C(i, j) == T(0));
  }
}

TEST_CASE_TEMPLATE("gemm: empty dimensions, K = 0 scales C, a single row with any row stride", T, float, double) {
  Philox rng(reason::test::test_seed(), 3);
  for (bool blocked : {false, true}) {
    INFO("blocked " << blocked);
    Mat<T> A(3, 0), B(0, 4), C(3, 4);
    C.fill(T(2));
    path<T>(blocked)(Trans::N, Trans::N, T(1), A.cview(), B.cview(), T(0.5), C.view());
    for (index_t i = 0; i < 3; ++i)
      for (index_t j = 0; j < 4; ++j) CHECK(C(i, j) == T(1));
    Mat<T> A0(0, 5), B0(5, 4), C0(0, 4);
    CHECK_NOTHROW(path<T>(blocked)(Trans::N, Trans::N, T(1), A0.cview(), B0.cview(), T(0), C0.view()));
    // A [1, 3] whose row stride is 0 (a broadcast row): the stride of a single row is never used.
    std::vector<T> a = {T(1), T(2), T(3)}, b(6, T(1)), c(2, T(0));
    View<const T, 2> Av(a.data(), {1, 3}, {0, 1});
    path<T>(blocked)(Trans::N, Trans::N, T(1), Av, make_view<const T>(b.data(), 3, 2), T(0), make_view(c.data(), 1, 2));
    CHECK(c[0] == T(6));
    CHECK(c[1] == T(6));
  }
}

TEST_CASE("gemm: a large-ish product exercises the blocking and the threads") {
  Philox rng(reason::test::test_seed(), 4);
  for (bool blocked : {false, true}) {
    INFO("blocked " << blocked);
    for (Trans ta : {Trans::N, Trans::T}) {
      for (Trans tb : {Trans::N, Trans::T}) {
        INFO("ta " << int(ta) << " tb " << int(tb));
        CHECK(gemm_error(path<double>(blocked), ta, tb, 300, 200, 150, 0.9, -0.4, 5, rng) <= 2.0);
      }
    }
    CHECK(gemm_error(path<float>(blocked), Trans::N, Trans::T, 300, 200, 150, 1.0f, 0.0f, 0, rng) <= 2.0);
    CHECK(gemm_error(path<float>(blocked), Trans::T, Trans::N, 257, 301, 129, 1.0f, 1.0f, 1, rng) <= 2.0);
  }
}

TEST_CASE("gemm: the error check would catch a wrong product") {
  // A gemm that drops the last k term: the same measure must report it.
  Philox rng(reason::test::test_seed(), 5);
  GemmFn<double> broken = [](Trans ta, Trans tb, double alpha, View<const double, 2> A, View<const double, 2> B,
                             double beta, View<double, 2> C) {
    if (ta == Trans::N) A = A.slice(1, 0, A.shape[1] - 1);
    else A = A.slice(0, 0, A.shape[0] - 1);
    if (tb == Trans::N) B = B.slice(0, 0, B.shape[0] - 1);
    else B = B.slice(1, 0, B.shape[1] - 1);
    gemm(ta, tb, alpha, A, B, beta, C);
  };
  CHECK(gemm_error(broken, Trans::N, Trans::T, 7, 13, 5, 1.0, 0.0, 0, rng) > 2.0);
}

TEST_CASE("gemm: bad shapes and strides are errors naming A, B, C and the op shapes") {
  std::vector<float> a(13 * 13), b(13 * 13), c(13 * 13);
  auto A = make_view<const float>(a.data(), 7, 13);
  for (bool blocked : {false, true}) {
    auto fn = path<float>(blocked);
    CHECK_THROWS_WITH_AS(fn(Trans::N, Trans::T, 1.0f, A, make_view<const float>(b.data(), 5, 12), 0.0f,
                            make_view(c.data(), 7, 5)),
                         "gemm: op(A) is [7, 13] (A [7, 13], Trans::N) but op(B) is [12, 5] (B [5, 12], Trans::T): "
                         "inner dimensions 13 and 12 differ",
                         Error);
    CHECK_THROWS_WITH_AS(fn(Trans::N, Trans::N, 1.0f, A, make_view<const float>(b.data(), 13, 4), 0.0f,
                            make_view(c.data(), 7, 5)),
                         "gemm: C: shape [7, 5], expected [7, 4] (op(A) [7, 13] times op(B) [13, 4])", Error);
    View<const float, 2> At(a.data(), {13, 7}, {1, 13});  // a transposed view: not unit inner stride
    CHECK_THROWS_WITH_AS(fn(Trans::T, Trans::N, 1.0f, At, make_view<const float>(b.data(), 13, 4), 0.0f,
                            make_view(c.data(), 7, 4)),
                         "gemm: A: innermost stride 13, expected 1 (shape [13, 7])", Error);
    View<float, 2> Cover(c.data(), {7, 5}, {4, 1});  // rows overlap
    CHECK_THROWS_WITH_AS(fn(Trans::N, Trans::T, 1.0f, A, make_view<const float>(b.data(), 5, 13), 0.0f, Cover),
                         "gemm: C: row stride 4 is smaller than the row length (shape [7, 5]); rows must not overlap",
                         Error);
  }
}
