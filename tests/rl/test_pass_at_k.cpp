// pass@k (Chen et al. 2021): the product form against exact binomial ratios, unbiasedness
// (exact expectation over c ~ Binomial(n, p), and a Monte-Carlo of random k-subsets), large n
// without overflow, the group form over rewards, and errors outside the domain.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/rl/pass_at_k.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

/// C(n, k) exactly in 64 bits (n <= 60).
std::uint64_t binomial(std::int64_t n, std::int64_t k) {
  if (k < 0 || k > n) return 0;
  std::uint64_t r = 1;
  for (std::int64_t i = 1; i <= k; ++i) r = r * static_cast<std::uint64_t>(n - k + i) / static_cast<std::uint64_t>(i);
  return r;
}

}  // namespace

TEST_CASE("pass_at_k equals 1 - C(n-c k) / C(n k) computed with exact binomials") {
  CHECK(rl::pass_at_k(5, 2, 2) == doctest::Approx(0.7).epsilon(1e-15));     // 1 - 3/10
  CHECK(rl::pass_at_k(10, 3, 4) == doctest::Approx(1.0 - 35.0 / 210.0).epsilon(1e-15));
  CHECK(rl::pass_at_k(4, 0, 2) == 0.0);
  CHECK(rl::pass_at_k(4, 3, 2) == 1.0);  // n - c < k: every pair holds a correct sample
  CHECK(rl::pass_at_k(4, 4, 4) == 1.0);
  double worst = 0;
  for (std::int64_t n = 1; n <= 30; ++n)
    for (std::int64_t c = 0; c <= n; ++c)
      for (std::int64_t k = 1; k <= n; ++k) {
        const double exact = 1.0 - static_cast<double>(binomial(n - c, k)) / static_cast<double>(binomial(n, k));
        worst = std::max(worst, std::abs(rl::pass_at_k(n, c, k) - exact));
      }
  CHECK(worst < 1e-13);
}

TEST_CASE("pass_at_k with k = 1 is c / n and grows with k and with c") {
  for (std::int64_t n = 1; n <= 40; ++n)
    for (std::int64_t c = 0; c <= n; ++c)
      CHECK(rl::pass_at_k(n, c, 1) == doctest::Approx(static_cast<double>(c) / static_cast<double>(n)).epsilon(1e-14));
  for (std::int64_t k = 1; k < 11; ++k) CHECK(  // saturates at 1 once k > n - c = 11
      rl::pass_at_k(16, 5, k + 1) > rl::pass_at_k(16, 5, k));
  for (std::int64_t c = 0; c + 1 <= 16 - 4; ++c) CHECK(rl::pass_at_k(16, c + 1, 4) > rl::pass_at_k(16, c, 4));
}

TEST_CASE("pass_at_k is unbiased: its mean over c ~ Binomial(n p) is 1 - (1 - p)^k") {
  // Exact expectation (sum over c): the defining property, which the plug-in estimator
  // 1 - (1 - c/n)^k lacks (checked too, so the comparison can tell them apart).
  const std::int64_t n = 20;
  double plug_in_bias = 0;
  for (double p : {0.05, 0.3, 0.7})
    for (std::int64_t k : {1, 3, 10}) {
      double mean = 0, plug_in = 0;
      for (std::int64_t c = 0; c <= n; ++c) {
        const double prob = static_cast<double>(binomial(n, c)) * std::pow(p, static_cast<double>(c)) *
                            std::pow(1 - p, static_cast<double>(n - c));
        mean += prob * rl::pass_at_k(n, c, k);
        plug_in += prob * (1.0 - std::pow(1.0 - static_cast<double>(c) / static_cast<double>(n), static_cast<double>(k)));
      }
      const double truth = 1.0 - std::pow(1 - p, static_cast<double>(k));
      CHECK(mean == doctest::Approx(truth).epsilon(1e-12));
      plug_in_bias = std::max(plug_in_bias, std::abs(plug_in - truth));
    }
  CHECK(plug_in_bias > 1e-2);
}

TEST_CASE("pass_at_k matches a Monte-Carlo of random k-subsets of the n samples") {
  Philox rng(test::test_seed(), 5);
  const std::int64_t n = 12, c = 3, k = 4, trials = 200000;
  std::vector<int> correct(static_cast<std::size_t>(n), 0);
  for (std::int64_t i = 0; i < c; ++i) correct[static_cast<std::size_t>(i)] = 1;
  std::vector<int> idx(static_cast<std::size_t>(n));
  std::int64_t hits = 0;
  for (std::int64_t t = 0; t < trials; ++t) {
    for (std::int64_t i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = static_cast<int>(i);
    bool any = false;
    for (std::int64_t i = 0; i < k; ++i) {  // partial Fisher-Yates: a uniform k-subset
      const auto j = i + static_cast<std::int64_t>(rng.below(static_cast<std::uint32_t>(n - i)));
      std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(j)]);
      any = any || correct[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)])];
    }
    hits += any;
  }
  const double p = rl::pass_at_k(n, c, k);  // 1 - C(9,4)/C(12,4) = 1 - 126/495
  const double mc = static_cast<double>(hits) / static_cast<double>(trials);
  const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(trials));
  INFO("pass@k = " << p << ", Monte-Carlo = " << mc << ", sigma = " << sigma);
  CHECK(std::abs(mc - p) < 5 * sigma);
}

TEST_CASE("pass_at_k stays finite and accurate where the binomials overflow") {
  // C(10000, 100) is ~1e241 and C(100000, 1000) overflows double; the ratio is fine.
  const double v = rl::pass_at_k(100000, 50, 1000);
  const double reference = 1.0 - std::exp(std::lgamma(100000.0 - 50 + 1) - std::lgamma(100000.0 - 50 - 1000 + 1) -
                                          std::lgamma(100000.0 + 1) + std::lgamma(100000.0 - 1000 + 1));
  CHECK(std::isfinite(v));
  CHECK(v == doctest::Approx(reference).epsilon(1e-9));
  CHECK(rl::pass_at_k(1000000, 1, 1) == doctest::Approx(1e-6).epsilon(1e-12));
}

TEST_CASE("mean_pass_at_k and pass_at_k_of_groups average per problem") {
  const rl::PassCount counts[] = {{8, 0}, {8, 2}, {8, 8}};
  const double want = (0.0 + rl::pass_at_k(8, 2, 3) + 1.0) / 3.0;
  CHECK(rl::mean_pass_at_k(counts, 3) == doctest::Approx(want).epsilon(1e-15));
  const std::vector<float> rewards = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0.5f, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
  CHECK(rl::pass_at_k_of_groups(std::span<const float>(rewards), 8, 3, 1.0) == doctest::Approx(want).epsilon(1e-15));
  CHECK(rl::mean_pass_at_k({}, 1) == 0.0);
}

TEST_CASE("pass_at_k rejects k > n and c > n and empty counts") {
  CHECK_THROWS_AS((void)rl::pass_at_k(4, 1, 5), Error);
  CHECK_THROWS_AS((void)rl::pass_at_k(4, 5, 2), Error);
  CHECK_THROWS_AS((void)rl::pass_at_k(4, -1, 2), Error);
  CHECK_THROWS_AS((void)rl::pass_at_k(4, 1, 0), Error);
  CHECK_THROWS_AS((void)rl::pass_at_k(0, 0, 1), Error);
  const std::vector<float> r(7, 1.0f);
  CHECK_THROWS_AS((void)rl::pass_at_k_of_groups(std::span<const float>(r), 4, 1, 1.0), Error);
}
