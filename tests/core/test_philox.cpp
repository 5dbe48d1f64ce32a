// Tests of reason/core/philox.hpp: Random123's known answers, reproducibility from
// (seed, stream, offset), and loose statistical checks of below(), uniform() and normal().
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "reason/core/philox.hpp"

using namespace reason;

namespace {
// Chi-square statistic of `draws` values of below(n) against the uniform distribution.
double chi_square_below(Philox& rng, std::uint32_t n, int draws) {
  std::vector<int> count(n, 0);
  for (int i = 0; i < draws; ++i) {
    const std::uint32_t v = rng.below(n);
    REQUIRE(v < n);
    ++count[v];
  }
  const double expected = double(draws) / n;
  double chi2 = 0;
  for (int c : count) chi2 += (c - expected) * (c - expected) / expected;
  return chi2;
}
}  // namespace

// Random123's kat_vectors for philox4x32_10 (Salmon et al., SC'11).
TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  using C = Philox4x32::Counter;
  using K = Philox4x32::Key;
  CHECK(Philox4x32::block(C{0, 0, 0, 0}, K{0, 0}) == C{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(Philox4x32::block(C{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, K{0xffffffff, 0xffffffff}) ==
        C{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(Philox4x32::block(C{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, K{0xa4093822, 0x299f31d0}) ==
        C{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
  static_assert(Philox4x32::block(C{0, 0, 0, 0}, K{0, 0})[0] == 0x6627e8d5u);  // usable at compile time
}

TEST_CASE("Philox: value i of a stream is word i mod 4 of block i div 4 in the cuRAND counter layout") {
  const std::uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
  const Philox rng(seed, stream);
  for (std::uint64_t i : {0ull, 1ull, 3ull, 4ull, 7ull, (1ull << 34) + 2, ~0ull}) {
    const std::uint64_t blk = i / 4;
    const auto out = Philox4x32::block(
        {std::uint32_t(blk), std::uint32_t(blk >> 32), std::uint32_t(stream), std::uint32_t(stream >> 32)},
        {std::uint32_t(seed), std::uint32_t(seed >> 32)});
    CHECK(rng.at(i) == out[i % 4]);
  }
}

TEST_CASE("Philox: skipping equals drawing and (seed, stream, offset) resumes a stream") {
  Philox a(42, 7);
  std::vector<std::uint32_t> drawn(1000);
  for (auto& v : drawn) v = a.next_u32();
  CHECK(a.offset() == 1000);
  for (std::uint64_t skip : {0ull, 1ull, 3ull, 5ull, 64ull, 999ull}) {
    Philox b(42, 7);
    b.skip(skip);
    CHECK(b.offset() == skip);
    CHECK(b.next_u32() == drawn[skip]);
    Philox c(b.seed(), b.stream(), b.offset());  // a checkpoint is three integers
    for (std::uint64_t i = skip + 1; i < std::min<std::uint64_t>(skip + 20, 1000); ++i) {
      const std::uint32_t v = c.next_u32();
      CHECK(v == drawn[i]);
      CHECK(b.next_u32() == v);
    }
  }
  Philox d(42, 7, 10);
  const std::uint64_t lo = drawn[10], hi = drawn[11];
  CHECK(d.next_u64() == (lo | (hi << 32)));
  CHECK(d.offset() == 12);
  // A far offset needs no drawing: the state is (seed, stream, offset).
  Philox far(42, 7, (1ull << 40) + 1);
  CHECK(far.next_u32() == Philox(42, 7).at((1ull << 40) + 1));
}

TEST_CASE("Philox: different seeds and streams give different values") {
  auto first = [](Philox p) {
    std::vector<std::uint32_t> v(64);
    for (auto& x : v) x = p.next_u32();
    return v;
  };
  const auto base = first(Philox(1, 0));
  CHECK(first(Philox(1, 0)) == base);
  CHECK(first(Philox(2, 0)) != base);
  CHECK(first(Philox(1, 1)) != base);
  CHECK(first(Philox(1ull << 32, 0)) != base);  // the seed's high word matters
  CHECK(first(Philox(1, 1ull << 32)) != base);  // and the stream's
  int same = 0;
  const auto other = first(Philox(1, 1));
  for (std::size_t i = 0; i < base.size(); ++i) same += base[i] == other[i];
  CHECK(same <= 1);
}

TEST_CASE("Philox: below(n) stays in range and is roughly uniform") {
  Philox rng(2024, 3);
  for (int i = 0; i < 100; ++i) CHECK(rng.below(1) == 0);
  CHECK(rng.below(0xFFFFFFFFu) < 0xFFFFFFFFu);
  // Chi-square with n-1 degrees of freedom: mean n-1, sd sqrt(2(n-1)); allow 6 sd.
  for (std::uint32_t n : {2u, 3u, 7u, 10u, 64u, 1000u, 12345u}) {
    const int draws = int(std::max<std::uint32_t>(200000u, 40u * n));
    const double chi2 = chi_square_below(rng, n, draws);
    const double dof = n - 1.0;
    INFO("n = ", n, ", chi2 = ", chi2);
    CHECK(chi2 < dof + 6.0 * std::sqrt(2.0 * dof) + 10.0);
  }
  // A large n that is not a power of two: the top and bottom halves are equally likely.
  const std::uint32_t n = 3000000001u;
  int low = 0;
  for (int i = 0; i < 100000; ++i) {
    const std::uint32_t v = rng.below(n);
    REQUIRE(v < n);
    low += v < n / 2;
  }
  CHECK(std::abs(low - 50000) < 1000);  // sd 158
}

TEST_CASE("Philox: uniform() lies in 0 to 1 excluding 1, normal() has mean 0 and variance 1") {
  Philox rng(99, 1);
  double sum = 0, sum2 = 0;
  float lo = 1, hi = 0;
  const int n = 400000;
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    sum2 += double(u) * u;
  }
  CHECK(std::abs(sum / n - 0.5) < 0.005);          // sd of the mean 0.00046
  CHECK(std::abs(sum2 / n - 1.0 / 3.0) < 0.005);
  CHECK(lo < 1e-4f);
  CHECK(hi > 1 - 1e-4f);
  for (int i = 0; i < 1000; ++i) {
    const double u = rng.uniform_double();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
  }
  // The extremes: uniform() of the largest draw is the largest float below 1.
  CHECK(float(0xFFFFFFFFu >> 8) * 0x1.0p-24f < 1.0f);

  double m = 0, m2 = 0, m4 = 0;
  for (int i = 0; i < n; ++i) {
    const double z = rng.normal();
    REQUIRE(std::isfinite(z));
    m += z;
    m2 += z * z;
    m4 += z * z * z * z;
  }
  m /= n;
  m2 /= n;
  m4 /= n;
  CHECK(std::abs(m) < 0.01);            // sd 0.0016
  CHECK(std::abs(m2 - 1.0) < 0.02);     // sd 0.0022
  CHECK(std::abs(m4 - 3.0) < 0.15);     // a normal's fourth moment, sd ~0.016
  const std::uint64_t before = rng.offset();
  (void)rng.normal();
  CHECK(rng.offset() == before + 2);  // always exactly two draws
}
