// Samplers: exact support of top-k and top-p (ties, the p boundary, -inf), the tempered
// distribution against softmax(logits / T) by chi-square, argmax at temperature 0, one Philox
// draw per token, both log-probabilities, and errors on NaN / +inf / all -inf rows.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "reason/infer/sampler.hpp"
#include "reason/kernels/cross_entropy.hpp"
#include "support/gradcheck.hpp"

using namespace reason;
using infer::SampleScratch;
using infer::TokenDraw;

namespace {

std::vector<float> random_logits(index_t V, Philox& rng, double lo = -2.0, double hi = 2.0) {
  std::vector<float> x(static_cast<std::size_t>(V));
  test::fill_uniform(std::span<float>(x), rng, lo, hi);
  return x;
}

/// Tokens in order of probability, ties by id: the reference order, written independently.
std::vector<std::int32_t> ranked(const std::vector<float>& x) {
  std::vector<std::int32_t> ids(x.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](std::int32_t a, std::int32_t b) { return x[a] > x[b]; });
  return ids;
}

/// softmax(x / T) in long double (a float64-or-better reference).
std::vector<double> tempered_probs(const std::vector<float>& x, double T) {
  long double mx = -INFINITY, z = 0;
  for (float v : x) mx = std::max<long double>(mx, v);
  std::vector<double> p(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) z += std::exp((static_cast<long double>(x[i]) - mx) / T);
  for (std::size_t i = 0; i < x.size(); ++i)
    p[i] = static_cast<double>(std::exp((static_cast<long double>(x[i]) - mx) / T) / z);
  return p;
}

/// Draws `n` tokens with `sampler` from one stream; returns the counts per token.
template <class S>
std::vector<index_t> draw_counts(const S& sampler, const std::vector<float>& x, index_t n, Philox rng) {
  std::vector<index_t> counts(x.size(), 0);
  SampleScratch ws;
  for (index_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(sampler.sample(std::span<const float>(x), rng, ws).token)];
  return counts;
}

std::set<std::int32_t> drawn(const std::vector<index_t>& counts) {
  std::set<std::int32_t> s;
  for (std::size_t i = 0; i < counts.size(); ++i)
    if (counts[i] > 0) s.insert(static_cast<std::int32_t>(i));
  return s;
}

/// Pearson's chi-square of counts against probabilities (cells with p = 0 must be empty).
double chi_square(const std::vector<index_t>& counts, const std::vector<double>& p, index_t n) {
  double chi = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double e = static_cast<double>(n) * p[i];
    if (e == 0) {
      if (counts[i] > 0) return INFINITY;
      continue;
    }
    chi += (static_cast<double>(counts[i]) - e) * (static_cast<double>(counts[i]) - e) / e;
  }
  return chi;
}

/// The reference nucleus: the smallest prefix of `ranked` with mass >= p (in long double).
std::set<std::int32_t> nucleus(const std::vector<float>& x, double p, double T) {
  const auto probs = tempered_probs(x, T);
  std::set<std::int32_t> s;
  long double mass = 0;
  for (std::int32_t id : ranked(x)) {
    if (mass >= p) break;
    s.insert(id);
    mass += probs[static_cast<std::size_t>(id)];
  }
  return s;
}

}  // namespace

TEST_CASE("TopK draws exactly the k most likely tokens, and every one of them") {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Philox rng(seed, 1);
  constexpr int K = 4;
  for (int trial = 0; trial < 5; ++trial) {
    const auto x = random_logits(12, rng);
    const auto order = ranked(x);
    const std::set<std::int32_t> support(order.begin(), order.begin() + K);
    const infer::TopK<K> sampler{.temperature = 1.5f};
    const auto counts = draw_counts(sampler, x, 20000, Philox(seed, 100 + static_cast<std::uint64_t>(trial)));
    CHECK(drawn(counts) == support);
    // and with the renormalised top-k distribution (chi-square, df = 3; 40 is p ~ 1e-8)
    auto p = tempered_probs(x, 1.5);
    double kept = 0;
    for (std::size_t i = 0; i < p.size(); ++i) kept += support.count(static_cast<std::int32_t>(i)) ? p[i] : 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = support.count(static_cast<std::int32_t>(i)) ? p[i] / kept : 0.0;
    CHECK(chi_square(counts, p, 20000) < 40);
  }
}

TEST_CASE("TopK ties at the boundary keep the lowest ids, and -inf tokens are never kept") {
  const std::vector<float> x{1.0f, 3.0f, 2.0f, 2.0f, 2.0f, 0.0f};  // k = 3: {1} and the first two 2s
  CHECK(drawn(draw_counts(infer::TopK<3>{}, x, 4000, Philox(test::test_seed(), 2))) == std::set<std::int32_t>{1, 2, 3});
  const float ninf = -INFINITY;
  const std::vector<float> y{ninf, 0.5f, ninf, ninf, -0.5f, ninf};  // k = 4 > 2 finite tokens
  CHECK(drawn(draw_counts(infer::TopK<4>{}, y, 4000, Philox(test::test_seed(), 3))) == std::set<std::int32_t>{1, 4});
  CHECK(drawn(draw_counts(infer::TopK<1>{.temperature = 5.0f}, x, 500, Philox(test::test_seed(), 4))) ==
        std::set<std::int32_t>{1});
}

TEST_CASE("TopP draws exactly the nucleus, and every token of it") {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Philox rng(seed, 5);
  for (int trial = 0; trial < 8; ++trial) {
    const auto x = random_logits(10, rng);
    const float p = 0.3f + 0.65f * rng.uniform();
    const float T = trial % 2 ? 0.7f : 1.3f;
    CAPTURE(p);
    CAPTURE(T);
    const auto support = nucleus(x, p, T);
    const auto counts = draw_counts(infer::TopP{.p = p, .temperature = T}, x, 30000,
                                    Philox(seed, 200 + static_cast<std::uint64_t>(trial)));
    CHECK(drawn(counts) == support);
  }
}

TEST_CASE("TopP boundary: a prefix reaching p exactly stops there, ties go to the lowest ids") {
  // Four equal logits: every prefix mass is an exact multiple of 1/4.
  const std::vector<float> x{0.0f, 0.0f, 0.0f, 0.0f};
  auto support = [&](float p) { return drawn(draw_counts(infer::TopP{.p = p}, x, 4000, Philox(test::test_seed(), 6))); };
  CHECK(support(0.25f) == std::set<std::int32_t>{0});
  CHECK(support(0.5f) == std::set<std::int32_t>{0, 1});
  CHECK(support(std::nextafter(0.5f, 1.0f)) == std::set<std::int32_t>{0, 1, 2});
  CHECK(support(std::nextafter(0.5f, 0.0f)) == std::set<std::int32_t>{0, 1});
  CHECK(support(0.75f) == std::set<std::int32_t>{0, 1, 2});
  CHECK(support(1.0f) == std::set<std::int32_t>{0, 1, 2, 3});
  // probabilities 1/2, 1/4, 1/4 (logits ln 4, ln 2, ln 2 rounded to float) and a -inf token
  const std::vector<float> y{-INFINITY, std::log(2.0f), std::log(4.0f), std::log(2.0f)};
  auto support_y = [&](float p) { return drawn(draw_counts(infer::TopP{.p = p}, y, 4000, Philox(test::test_seed(), 7))); };
  CHECK(support_y(0.4f) == std::set<std::int32_t>{2});
  CHECK(support_y(0.6f) == std::set<std::int32_t>{1, 2});
  CHECK(support_y(1.0f) == std::set<std::int32_t>{1, 2, 3});
}

TEST_CASE("Temperature samples softmax(logits / T) (chi-square)") {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Philox rng(seed, 9);
  const index_t n = 100000;
  for (float T : {0.5f, 1.0f, 2.0f}) {
    CAPTURE(T);
    const auto x = random_logits(8, rng);
    const auto counts = draw_counts(infer::Temperature{T}, x, n, Philox(seed, 300 + static_cast<std::uint64_t>(T * 10)));
    const double chi = chi_square(counts, tempered_probs(x, T), n);
    CAPTURE(chi);
    CHECK(chi < 40);  // df = 7: P(chi2 > 40) ~ 1e-6
    // the statistic can tell temperatures apart: against softmax(x / (2T)) it is far off
    CHECK(chi_square(counts, tempered_probs(x, 2 * T), n) > 200);
  }
}

TEST_CASE("TopP and TopK sample the renormalised tempered distribution (chi-square)") {
  const std::uint64_t seed = test::test_seed();
  Philox rng(seed, 10);
  const auto x = random_logits(8, rng, -1.0, 1.0);
  const float T = 0.8f, p = 0.7f;
  const auto support = nucleus(x, p, T);
  auto probs = tempered_probs(x, T);
  double kept = 0;
  for (std::int32_t i : support) kept += probs[static_cast<std::size_t>(i)];
  for (std::size_t i = 0; i < probs.size(); ++i) probs[i] = support.count(static_cast<std::int32_t>(i)) ? probs[i] / kept : 0;
  const index_t n = 100000;
  const auto counts = draw_counts(infer::TopP{.p = p, .temperature = T}, x, n, Philox(seed, 11));
  CHECK(chi_square(counts, probs, n) < 40);
}

TEST_CASE("Both log-probabilities: the sampled distribution's and log_softmax of the raw logits, bit for bit") {
  const std::uint64_t seed = test::test_seed();
  Philox rng(seed, 12);
  SampleScratch ws;
  for (int trial = 0; trial < 20; ++trial) {
    auto x = random_logits(17, rng, -4.0, 4.0);
    if (trial % 3 == 0) x[static_cast<std::size_t>(trial % 17)] = -INFINITY;
    std::vector<float> ls(x.size());
    kernels::log_softmax<float>(std::span<const float>(x), std::span<float>(ls));
    const auto xd = std::vector<double>(x.begin(), x.end());
    std::vector<double> lsd(x.size());
    kernels::log_softmax<double>(std::span<const double>(xd), std::span<double>(lsd));
    const float T = 0.6f;
    Philox g(seed, 400 + static_cast<std::uint64_t>(trial));
    const TokenDraw t = infer::Temperature{T}.sample(std::span<const float>(x), g, ws);
    const TokenDraw k = infer::TopK<5>{.temperature = T}.sample(std::span<const float>(x), g, ws);
    const TokenDraw p = infer::TopP{.p = 0.8f, .temperature = T}.sample(std::span<const float>(x), g, ws);
    const TokenDraw d = infer::Temperature{T}.sample(std::span<const double>(xd), g, ws);
    for (const TokenDraw& r : {t, k, p}) {
      CHECK(r.logp_model == static_cast<double>(ls[static_cast<std::size_t>(r.token)]));  // exactly
      CHECK(std::isfinite(r.logp_model));
    }
    CHECK(d.logp_model == lsd[static_cast<std::size_t>(d.token)]);
    // under the tempered full softmax
    CHECK(t.logp_sampled == doctest::Approx(std::log(tempered_probs(x, T)[static_cast<std::size_t>(t.token)])).epsilon(1e-9));
    // under the renormalised top-5
    const auto probs = tempered_probs(x, T);
    const auto order = ranked(x);
    double kept = 0;
    for (int i = 0; i < 5; ++i) kept += probs[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])];
    CHECK(k.logp_sampled == doctest::Approx(std::log(probs[static_cast<std::size_t>(k.token)] / kept)).epsilon(1e-9));
    CHECK(p.logp_sampled <= 0.0);
    CHECK(p.logp_sampled >= std::log(probs[static_cast<std::size_t>(p.token)]) - 1e-12);  // renormalised: no smaller
  }
}

TEST_CASE("Temperature 0 is argmax with ties to the lowest id, for every policy, and equals Greedy") {
  const std::uint64_t seed = test::test_seed();
  Philox rng(seed, 13);
  SampleScratch ws;
  for (int trial = 0; trial < 20; ++trial) {
    auto x = random_logits(9, rng);
    const auto top = static_cast<std::size_t>(std::max_element(x.begin(), x.end()) - x.begin());
    if (trial % 2) x[(top + 3) % 9] = x[top];  // a tie with a higher or lower id
    const auto expect = static_cast<std::int32_t>(std::max_element(x.begin(), x.end()) - x.begin());  // first max
    Philox g(seed, 500 + static_cast<std::uint64_t>(trial));
    const auto row = std::span<const float>(x);
    for (const TokenDraw& d :
         {infer::Greedy{}.sample(row, g, ws), infer::Temperature{0.0f}.sample(row, g, ws),
          infer::TopK<3>{.temperature = 0.0f}.sample(row, g, ws), infer::TopP{.p = 0.5f, .temperature = 0.0f}.sample(row, g, ws),
          infer::TopK<1>{.temperature = 3.0f}.sample(row, g, ws)}) {
      CHECK(d.token == expect);
      CHECK(d.logp_sampled == 0.0);
    }
  }
}

TEST_CASE("Every policy draws exactly one 32-bit value per token, so a stream position reproduces a token") {
  const std::uint64_t seed = test::test_seed();
  Philox rng(seed, 14);
  const auto x = random_logits(20, rng);
  const auto row = std::span<const float>(x);
  SampleScratch ws;
  auto check_policy = [&](const auto& sampler) {
    Philox g(seed, 77);
    std::vector<std::int32_t> seq;
    for (int j = 0; j < 50; ++j) {
      const std::uint64_t before = g.offset();
      seq.push_back(sampler.sample(row, g, ws).token);
      CHECK(g.offset() == before + 1);
    }
    for (int j = 0; j < 50; j += 7) {  // token j from a stream started at offset j
      Philox at(seed, 77, static_cast<std::uint64_t>(j));
      CHECK(sampler.sample(row, at, ws).token == seq[static_cast<std::size_t>(j)]);
    }
    Philox other(seed + 1, 77);
    std::vector<std::int32_t> seq2;
    for (int j = 0; j < 50; ++j) seq2.push_back(sampler.sample(row, other, ws).token);
    return seq != seq2;
  };
  CHECK(check_policy(infer::Temperature{1.0f}));
  CHECK(check_policy(infer::TopK<6>{}));
  CHECK(check_policy(infer::TopP{.p = 0.9f}));
  CHECK_FALSE(check_policy(infer::Greedy{}));  // argmax ignores the stream
}

TEST_CASE("-inf logits are never drawn, even at high temperature") {
  std::vector<float> x(16, -INFINITY);
  x[3] = -50.0f;
  x[11] = 40.0f;
  x[12] = 39.0f;
  const auto counts = draw_counts(infer::Temperature{100.0f}, x, 5000, Philox(test::test_seed(), 15));
  CHECK(drawn(counts) == std::set<std::int32_t>{3, 11, 12});
}

TEST_CASE("NaN, +inf and all -inf logits are errors naming the row, as are bad settings") {
  std::vector<float> x{0.1f, 0.2f, std::nanf(""), 0.3f};
  SampleScratch ws;
  Philox g(1, 2);
  const auto row = std::span<const float>(x);
  CHECK_THROWS_WITH_AS(infer::Temperature{}.sample(row, g, ws, 7), doctest::Contains("row 7 has a NaN logit at token 2"), Error);
  CHECK_THROWS_WITH_AS(infer::Greedy{}.sample(row, g, ws, 3), doctest::Contains("row 3 has a NaN"), Error);
  CHECK_THROWS_WITH_AS(infer::TopP{}.sample(row, g, ws, 4), doctest::Contains("row 4"), Error);
  x[2] = INFINITY;
  CHECK_THROWS_WITH_AS(infer::TopK<2>{}.sample(row, g, ws, 5), doctest::Contains("row 5 has a +inf logit"), Error);
  std::fill(x.begin(), x.end(), -INFINITY);
  CHECK_THROWS_WITH_AS(infer::Temperature{}.sample(row, g, ws, 6), doctest::Contains("of row 6 is -inf"), Error);
  x[1] = 0.0f;
  CHECK_THROWS_WITH_AS(infer::Temperature{-1.0f}.sample(row, g, ws), doctest::Contains("temperature = -1"), Error);
  CHECK_THROWS_WITH_AS((infer::TopP{.p = 0.0f}.sample(row, g, ws)), doctest::Contains("p = 0"), Error);
  CHECK_THROWS_WITH_AS((infer::TopP{.p = 1.5f}.sample(row, g, ws)), doctest::Contains("p = 1.5"), Error);
  CHECK(infer::TopP{.p = 1.0f}.sample(row, g, ws).token == 1);
}
