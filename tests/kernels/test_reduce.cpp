#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "reason/kernels/reduce.hpp"
#include "support/gradcheck.hpp"

using namespace reason;
using namespace reason::kernels;
using namespace reason::test;

namespace {

template <class T>
long double sum_squares_long_double(const std::vector<T>& x) {
  long double s = 0;
  for (T v : x) s += (long double)v * (long double)v;
  return s;
}

}  // namespace

TEST_CASE_TEMPLATE("sum_squares: equals a long double reference at several sizes", T, float, double) {
  Philox rng(test_seed(), 60);
  INFO("seed " << rng.seed());
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{16385}, std::size_t{300007}}) {
    std::vector<T> x(n);
    fill_uniform<T>(x, rng, -3, 3);
    const long double ref = sum_squares_long_double(x);
    const double got = sum_squares<T>(x);
    INFO("n " << n << " got " << got << " reference " << double(ref));
    CHECK(std::abs((long double)got - ref) <= 1e-13L * ref);
  }
}

TEST_CASE("sum_squares: the result depends on the chunking only, never on the thread split") {
  Philox rng(test_seed(), 61);
  std::vector<float> x(1'000'003);
  fill_uniform<float>(x, rng, -1, 1);
  const std::span<const float> xs(x);
  const double base = sum_squares<float>(xs);
  const std::int64_t chunk = kernels::detail::sum_squares_chunk;
  // grain 1: as many threads as the pool has; grain = all chunks: one thread; odd grains in between.
  for (std::int64_t grain : {std::int64_t{1}, std::int64_t{3}, std::int64_t{17}, std::int64_t{1} << 30}) {
    INFO("grain " << grain);
    CHECK(kernels::detail::sum_squares_chunked(xs, chunk, grain) == base);
  }
  // The same fixed order written out serially: chunk partials, then summed in index order.
  double serial = 0;
  for (std::size_t b = 0; b < x.size(); b += std::size_t(chunk)) {
    const std::size_t e = std::min(x.size(), b + std::size_t(chunk));
    serial += kernels::detail::sum_squares_serial(x.data() + b, std::int64_t(e - b));
  }
  CHECK(serial == base);
  // A different chunking is a different (but equally accurate) order.
  const double other = kernels::detail::sum_squares_chunked(xs, 1000, 1);
  CHECK(std::abs(other - base) <= 1e-12 * base);
  CHECK_THROWS_WITH_AS(kernels::detail::sum_squares_chunked(xs, 0, 1), "sum_squares: chunk = 0, expected chunk >= 1",
                       Error);
}

TEST_CASE_TEMPLATE("scale: multiplies every element, serial and threaded sizes", T, float, double) {
  Philox rng(test_seed(), 62);
  for (std::size_t n : {std::size_t{0}, std::size_t{5}, std::size_t{100001}}) {
    std::vector<T> x(n);
    fill_uniform<T>(x, rng);
    const std::vector<T> x0 = x;
    scale<T>(x, T(-0.375));
    bool same = true;
    for (std::size_t i = 0; i < n; ++i) same = same && x[i] == x0[i] * T(-0.375);
    INFO("n " << n);
    CHECK(same);
  }
}
