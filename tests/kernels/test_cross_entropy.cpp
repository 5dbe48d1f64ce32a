// Softmax cross-entropy and its fusion with the LM head: a float64 reference, fused == unfused for
// chunk sizes that do and do not divide N, finite differences, log_softmax, and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "reason/kernels/cross_entropy.hpp"
#include "reason/kernels/gemm.hpp"
#include "support/gradcheck.hpp"

using namespace reason;
using namespace reason::kernels;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

struct RefCe {
  double loss_sum = 0;
  index_t count = 0;
  std::vector<double> dlogits;  // [N, V]
};

/// Naive float64 softmax cross-entropy of logits [N, V] (row-major).
template <class T>
RefCe reference(const std::vector<T>& logits, index_t N, index_t V, const std::vector<std::int32_t>& targets,
                double grad_scale) {
  RefCe r;
  r.dlogits.assign(N * V, 0);
  for (index_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    double mx = -inf, sum = 0;
    for (index_t v = 0; v < V; ++v) mx = std::max(mx, double(logits[n * V + v]));
    for (index_t v = 0; v < V; ++v) sum += std::exp(double(logits[n * V + v]) - mx);
    const double lse = mx + std::log(sum);
    r.loss_sum += lse - double(logits[n * V + targets[n]]);
    r.count++;
    for (index_t v = 0; v < V; ++v)
      r.dlogits[n * V + v] = grad_scale * (std::exp(double(logits[n * V + v]) - lse) - (v == targets[n]));
  }
  return r;
}

std::vector<std::int32_t> random_targets(index_t N, index_t V, Philox& rng) {
  std::vector<std::int32_t> t(N);
  for (auto& x : t) x = rng.below(4) == 0 ? -1 - std::int32_t(rng.below(100)) : std::int32_t(rng.below(V));
  return t;
}

/// The unfused path: logits = h w^T by gemm, softmax_cross_entropy, dh = dlogits w, dw += dlogits^T h.
template <class T>
CrossEntropyResult unfused(View<const T, 2> h, View<const T, 2> w, const std::vector<std::int32_t>& targets, T scale,
                           View<T, 2> dh, View<T, 2> dw) {
  const index_t N = h.shape[0], V = w.shape[0];
  std::vector<T> logits(N * V), dl(N * V);
  auto lv = make_view(logits.data(), N, V), dv = make_view(dl.data(), N, V);
  gemm<T>(Trans::N, Trans::T, T(1), h, w, T(0), lv);
  const auto r = softmax_cross_entropy<T>(lv, make_view(targets.data(), N), scale, dv);
  gemm<T>(Trans::N, Trans::N, T(1), dv, w, T(0), dh);
  gemm<T>(Trans::T, Trans::N, T(1), dv, h, T(1), dw);
  return r;
}

template <class T>
double max_diff(View<T, 2> a, View<T, 2> b) {
  double m = 0;
  for (index_t i = 0; i < a.shape[0]; ++i)
    for (index_t j = 0; j < a.shape[1]; ++j) {
      const double d = std::abs(double(a(i, j)) - double(b(i, j)));
      m = std::isnan(d) ? inf : std::max(m, d);
    }
  return m;
}

}  // namespace

TEST_CASE_TEMPLATE("softmax_cross_entropy matches a float64 reference, with ignored rows, -inf and huge logits", T,
                   float, double) {
  Philox rng(test::test_seed(), 20);
  INFO("seed ", test::test_seed());
  const index_t N = 13, V = 37;
  std::vector<T> logits(N * V);
  test::fill_uniform(std::span<T>(logits), rng, -4, 4);
  auto targets = random_targets(N, V, rng);
  targets[0] = 5;
  targets[1] = -1;
  targets[2] = 36;
  logits[0 * V + 7] = -std::numeric_limits<T>::infinity();   // a masked logit: probability 0, no NaN
  for (index_t v = 0; v < V; ++v) logits[2 * V + v] += T(1000);  // a shifted row: stable, same softmax
  const T scale = T(0.3);
  const RefCe ref = reference(logits, N, V, targets, double(scale));
  std::vector<T> dl(N * V, std::numeric_limits<T>::quiet_NaN());
  auto dv = make_view(dl.data(), N, V);
  const auto r = softmax_cross_entropy<T>(make_view(logits.data(), N, V), make_view(targets.data(), N), scale, dv);
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  CHECK(r.count == ref.count);
  CHECK(r.count < N);
  CHECK(std::abs(r.loss_sum - ref.loss_sum) <= tol * 10 * std::abs(ref.loss_sum));
  double worst = 0;
  for (std::size_t i = 0; i < dl.size(); ++i) worst = std::max(worst, std::abs(double(dl[i]) - ref.dlogits[i]));
  CHECK(worst <= tol);
  CHECK(dl[0 * V + 7] == T(0));
  for (index_t v = 0; v < V; ++v) REQUIRE(dl[1 * V + v] == T(0));  // ignored row: zero gradient
  // Without dlogits the loss is the same.
  const auto r2 = softmax_cross_entropy<T>(make_view(logits.data(), N, V), make_view(targets.data(), N), scale,
                                           View<T, 2>{});
  CHECK(r2.loss_sum == r.loss_sum);
  CHECK(r2.count == r.count);
}

TEST_CASE_TEMPLATE("lm_head_cross_entropy equals the unfused path for every chunk size", T, float, double) {
  Philox rng(test::test_seed(), 21);
  INFO("seed ", test::test_seed());
  const index_t N = 11, C = 10, V = 37;
  // h and dh are strided: rows of [N, C + 3] buffers.
  std::vector<T> hbuf(N * (C + 3)), w(V * C), dw0(V * C);
  test::fill_uniform(std::span<T>(hbuf), rng);
  test::fill_uniform(std::span<T>(w), rng);
  test::fill_uniform(std::span<T>(dw0), rng);
  auto h = make_view(hbuf.data(), N, C + 3).slice(1, 2, 2 + C);
  auto wv = make_view(w.data(), V, C);
  auto targets = random_targets(N, V, rng);
  for (index_t n = 0; n < 4; ++n) targets[n] = -100;  // a fully ignored first chunk for R <= 4
  targets[6] = 0;
  targets[7] = 36;
  targets[8] = -1;  // and one ignored row inside a later chunk
  const T scale = T(1.0 / 7);

  std::vector<T> dh_ref(N * C), dw_ref = dw0;
  const auto ref = unfused<T>(h, wv, targets, scale, make_view(dh_ref.data(), N, C), make_view(dw_ref.data(), V, C));
  CHECK(ref.count == std::count_if(targets.begin(), targets.end(), [](std::int32_t t) { return t >= 0; }));
  CHECK(ref.count < N - 4);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  for (index_t R : {1, 3, 4, 5, 11, 14}) {
    CAPTURE(R);
    std::vector<T> scratch(R * V), dhbuf(N * (C + 3), std::numeric_limits<T>::quiet_NaN()), dw = dw0;
    auto dh = make_view(dhbuf.data(), N, C + 3).slice(1, 1, 1 + C);
    const auto r = lm_head_cross_entropy<T>(h, wv, make_view(targets.data(), N), scale, make_view(scratch.data(), R, V),
                                            dh, make_view(dw.data(), V, C));
    CHECK(r.count == ref.count);
    CHECK(std::abs(r.loss_sum - ref.loss_sum) <= tol * std::abs(ref.loss_sum));
    CHECK(max_diff(dh, make_view(dh_ref.data(), N, C)) <= tol);
    CHECK(max_diff(make_view(dw.data(), V, C), make_view(dw_ref.data(), V, C)) <= tol);
    for (index_t c = 0; c < C; ++c) REQUIRE(dh(0, c) == T(0));  // ignored rows: zero, not NaN
    CHECK(dhbuf[0] != dhbuf[0]);                                 // outside the slice: untouched

    // Loss only: no gradients, dw untouched.
    std::vector<T> dw2 = dw0;
    const auto r2 = lm_head_cross_entropy<T>(h, wv, make_view(targets.data(), N), scale,
                                             make_view(scratch.data(), R, V), View<T, 2>{}, View<T, 2>{});
    CHECK(r2.loss_sum == r.loss_sum);
    // dh only.
    std::vector<T> dh3(N * C);
    (void)lm_head_cross_entropy<T>(h, wv, make_view(targets.data(), N), scale, make_view(scratch.data(), R, V),
                                   make_view(dh3.data(), N, C), View<T, 2>{});
    CHECK(max_diff(make_view(dh3.data(), N, C), make_view(dh_ref.data(), N, C)) <= tol);
    CHECK(dw2 == dw0);
  }
}

TEST_CASE("cross-entropy gradients pass finite differences, broken ones fail") {
  Philox rng(test::test_seed(), 22);
  INFO("seed ", test::test_seed());
  const index_t N = 7, C = 6, V = 13;
  std::vector<double> hbuf(N * (C + 2)), w(V * C);
  test::fill_uniform(std::span<double>(hbuf), rng, -2, 2);
  test::fill_uniform(std::span<double>(w), rng, -2, 2);
  auto targets = random_targets(N, V, rng);
  targets[3] = -1;
  targets[4] = 12;
  const double scale = 0.37;
  auto h = make_view(hbuf.data(), N, C + 2).slice(1, 1, 1 + C);  // strided
  std::vector<double> scratch(3 * V);
  auto loss = [&] {
    const auto r = lm_head_cross_entropy<double>(h, make_view(w.data(), V, C), make_view(targets.data(), N), scale,
                                                 make_view(scratch.data(), 3, V), View<double, 2>{}, View<double, 2>{});
    return scale * r.loss_sum;
  };
  // Analytic gradients: dh into the slice of a zeroed buffer shaped like hbuf, dw into zeros.
  std::vector<double> dhbuf(hbuf.size(), 0.0), dw(V * C, 0.0);
  (void)lm_head_cross_entropy<double>(h, make_view(w.data(), V, C), make_view(targets.data(), N), scale,
                                      make_view(scratch.data(), 3, V),
                                      make_view(dhbuf.data(), N, C + 2).slice(1, 1, 1 + C), make_view(dw.data(), V, C));
  const auto gh = test::gradcheck(loss, hbuf, dhbuf);
  const auto gw = test::gradcheck(loss, w, dw);
  INFO(gh.describe(), " / ", gw.describe());
  CHECK(gh.ok);
  CHECK(gw.ok);
  std::vector<double> dw_bad = dw;
  dw_bad[5 * C + 2] *= 1 + 1e-5;
  CHECK_FALSE(test::gradcheck(loss, w, dw_bad).ok);

  // The unfused softmax_cross_entropy gradient with respect to the logits.
  std::vector<double> logits(N * V), dl(N * V);
  test::fill_uniform(std::span<double>(logits), rng, -3, 3);
  auto ce = [&] {
    return scale * softmax_cross_entropy<double>(make_view(logits.data(), N, V), make_view(targets.data(), N), scale,
                                                 View<double, 2>{})
                       .loss_sum;
  };
  (void)softmax_cross_entropy<double>(make_view(logits.data(), N, V), make_view(targets.data(), N), scale,
                                      make_view(dl.data(), N, V));
  const auto gl = test::gradcheck(ce, logits, dl);
  INFO(gl.describe());
  CHECK(gl.ok);
  // A backward that forgets the one-hot term fails.
  std::vector<double> dl_bad = dl;
  for (index_t n = 0; n < N; ++n)
    if (targets[n] >= 0) dl_bad[n * V + targets[n]] += scale;
  CHECK_FALSE(test::gradcheck(ce, logits, dl_bad).ok);
}

TEST_CASE_TEMPLATE("log_softmax matches a float64 reference, keeps -inf without NaN, and is stable", T, float, double) {
  Philox rng(test::test_seed(), 23);
  std::vector<T> x(29), out(29);
  test::fill_uniform(std::span<T>(x), rng, -5, 5);
  x[3] = -std::numeric_limits<T>::infinity();
  x[10] += T(3e4);  // dominates: exp(x - max) must not overflow
  log_softmax<T>(x, out);
  double mx = -inf, sum = 0, psum = 0;
  for (T v : x) mx = std::max(mx, double(v));
  for (T v : x) sum += std::exp(double(v) - mx);
  const double lse = mx + std::log(sum);
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE_FALSE(std::isnan(out[i]));
    if (i != 3) CHECK(std::abs(double(out[i]) - (double(x[i]) - lse)) <= (std::is_same_v<T, float> ? 1e-5 : 1e-12) * (1 + std::abs(double(x[i]) - lse)));
    psum += std::exp(double(out[i]));
  }
  CHECK(out[3] == -std::numeric_limits<T>::infinity());
  CHECK(std::abs(psum - 1) <= 1e-6);
  log_softmax<T>(out, out);  // in place; log_softmax of a log-softmax is itself
  CHECK(std::abs(double(out[10])) <= 1e-6);
}

TEST_CASE("cross-entropy: out-of-range targets and bad shapes are errors naming the argument") {
  const index_t N = 4, C = 3, V = 5;
  std::vector<float> h(N * C, 0.1f), w(V * C, 0.2f), scratch(2 * V), dh(N * C), dw(V * C, 1.0f), logits(N * V);
  std::vector<std::int32_t> targets = {1, -1, 5, 2};
  const auto tv = make_view(targets.data(), N);
  CHECK_THROWS_WITH_AS(softmax_cross_entropy<float>(make_view(logits.data(), N, V), tv, 1.0f, View<float, 2>{}),
                       "softmax_cross_entropy: targets[2] = 5 is out of range for vocabulary size 5 (negative means "
                       "ignored)",
                       Error);
  CHECK_THROWS_WITH_AS((void)lm_head_cross_entropy<float>(make_view(h.data(), N, C), make_view(w.data(), V, C), tv, 1.0f,
                                                          make_view(scratch.data(), 2, V), make_view(dh.data(), N, C),
                                                          make_view(dw.data(), V, C)),
                       "lm_head_cross_entropy: targets[2] = 5 is out of range for vocabulary size 5 (negative means "
                       "ignored)",
                       Error);
  for (float x : dw) REQUIRE(x == 1.0f);  // nothing accumulated before the error
  targets[2] = 0;
  auto call = [&](View<const float, 2> hv, View<float, 2> sv, View<float, 2> dhv, View<float, 2> dwv, index_t nt) {
    (void)lm_head_cross_entropy<float>(hv, make_view(w.data(), V, C), make_view(targets.data(), nt), 1.0f, sv, dhv, dwv);
  };
  CHECK_THROWS_WITH_AS(call(make_view(h.data(), N, 2), make_view(scratch.data(), 2, V), {}, {}, N),
                       "lm_head_cross_entropy: h: shape [4, 2], expected [4, 3]", Error);
  CHECK_THROWS_WITH_AS(call(make_view(h.data(), N, C), make_view(scratch.data(), 2, V), {}, {}, 3),
                       "lm_head_cross_entropy: targets: shape [3], expected [4]", Error);
  CHECK_THROWS_WITH_AS(call(make_view(h.data(), N, C), make_view(scratch.data(), 2, 4), {}, {}, N),
                       "lm_head_cross_entropy: scratch: shape [2, 4], expected [R, 5] with R >= 1 rows per chunk",
                       Error);
  CHECK_THROWS_WITH_AS(call(make_view(h.data(), N, C), make_view(scratch.data(), 0, V), {}, {}, N),
                       "lm_head_cross_entropy: scratch: shape [0, 5], expected [R, 5] with R >= 1 rows per chunk",
                       Error);
  CHECK_THROWS_WITH_AS(call(make_view(h.data(), N, C), make_view(scratch.data(), 2, V), make_view(dh.data(), N - 1, C),
                            {}, N),
                       "lm_head_cross_entropy: dh: shape [3, 3], expected [4, 3]", Error);
  CHECK_THROWS_WITH_AS(call(make_view(h.data(), N, C), make_view(scratch.data(), 2, V), {}, make_view(dw.data(), V, 2),
                            N),
                       "lm_head_cross_entropy: dw: shape [5, 2], expected [5, 3]", Error);
  CHECK_THROWS_WITH_AS(softmax_cross_entropy<float>(make_view(logits.data(), N, V), tv, 1.0f, make_view(dh.data(), N, C)),
                       "softmax_cross_entropy: dlogits: shape [4, 3], expected [4, 5]", Error);
  std::vector<float> a(3, -INFINITY), b(2);
  CHECK_THROWS_WITH_AS(log_softmax<float>(a, b), "log_softmax: out has 2 entries, expected 3 (one per logit)", Error);
  CHECK_THROWS_WITH_AS(log_softmax<float>(a, a),
                       "log_softmax: every one of the 3 logits is -inf (or NaN): there is no distribution", Error);
  CHECK_THROWS_WITH_AS(log_softmax<float>(std::span<const float>{}, std::span<float>{}), "log_softmax: logits is empty",
                       Error);
}
