// Exact answer comparison: normalisation, fractions, and numbers far beyond 64 bits.
#include <doctest/doctest.h>

#include <cstdint>
#include <numeric>
#include <string>

#include "reason/core/philox.hpp"
#include "reason/reward/number.hpp"

using namespace reason;

namespace {
bool same(std::string_view a, std::string_view b) {
  const auto x = reward::parse_number(a), y = reward::parse_number(b);
  REQUIRE(x);
  REQUIRE(y);
  return reward::same_value(*x, *y);
}
}  // namespace

TEST_CASE("parse_number: what is a number and what is not") {
  for (const char* ok : {"0", "-0", "+7", " 42 ", "\t\n42\r\f\v", "007", "3/2", "-6/4", "+0/9", "0010/0002"})
    CHECK_MESSAGE(reward::parse_number(ok).has_value(), ok);
  for (const char* bad : {"", " ", "+", "-", "--1", "+-1", "1.5", "1e3", "1 2", "0x10", "1/", "/2", "1/0", "1/00",
                          "1/-2", "1/+2", "3/2/1", "1,000", "١٢", "- 1", "1 /2"})
    CHECK_MESSAGE(!reward::parse_number(bad).has_value(), bad);
  const auto n = reward::parse_number("  -000120/0300 ");
  REQUIRE(n);
  CHECK(n->negative);
  CHECK(n->numerator == "120");
  CHECK(n->denominator == "300");
  const auto z = reward::parse_number("-000/7");
  REQUIRE(z);
  CHECK_FALSE(z->negative);
  CHECK(z->is_zero());
  CHECK(z->is_integer());
}

TEST_CASE("same_value: by value and exactly") {
  CHECK(same("42", "+042"));
  CHECK(same("-0", "0"));
  CHECK(same("0/5", "-0"));
  CHECK(same("6/4", "3/2"));
  CHECK(same("-6/4", "-3/2"));
  CHECK(same("4/2", "2"));
  CHECK(same("2", "4/2"));
  CHECK_FALSE(same("6/4", "-3/2"));
  CHECK_FALSE(same("3/2", "2/3"));
  CHECK_FALSE(same("1", "-1"));
  CHECK_FALSE(same("10", "1"));
  CHECK_FALSE(same("5/2", "2"));
  CHECK_FALSE(same("0", "1/1000000000000000000000000000000"));
}

TEST_CASE("same_value agrees with 64-bit reduction on random fractions") {
  Philox rng(11, 0);
  int equal = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::int64_t a = rng.below(2000), b = 1 + rng.below(60);
    // Half the pairs are equal by construction (c/d = a*m / b*m), half independent.
    const std::int64_t m = 1 + rng.below(20);
    const bool scaled = rng.below(2) == 0;
    const std::int64_t c = scaled ? a * m : rng.below(2000), d = scaled ? b * m : 1 + rng.below(60);
    const bool expect = a * d == c * b;  // small enough to be exact
    equal += expect;
    CAPTURE(a);
    CAPTURE(b);
    CAPTURE(c);
    CAPTURE(d);
    const std::string x = std::to_string(a) + "/" + std::to_string(b), y = std::to_string(c) + "/" + std::to_string(d);
    CHECK(same(x, y) == expect);
    // Scaling numerator and denominator by a 40-digit power of ten keeps the value.
    const std::string zeros(40, '0');
    CHECK(same(std::to_string(a) + zeros + "/" + std::to_string(b) + zeros, y) == expect);
  }
  CHECK(equal > 5000);  // the equal case was exercised
}

TEST_CASE("same_value: hundreds of digits across limb boundaries") {
  // (10^k - 1) / 9 = 111...1 (k ones), for k around multiples of 9 (the limb size).
  for (std::size_t k : {8u, 9u, 10u, 17u, 18u, 19u, 297u, 300u, 301u}) {
    CAPTURE(k);
    const std::string nines(k, '9'), ones(k, '1');
    CHECK(same(nines + "/9", ones));
    CHECK(same(nines + "/" + ones, "9"));
    CHECK_FALSE(same(nines + "/9", ones + "1"));
    std::string off_by_one = ones;
    off_by_one.back() = '2';
    CHECK_FALSE(same(nines + "/9", off_by_one));
    CHECK(same("+000" + ones, ones));
    CHECK_FALSE(same("-" + ones, ones));
  }
}
