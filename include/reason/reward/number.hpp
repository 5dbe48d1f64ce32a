// reason/reward/number.hpp — exact comparison of integer and fraction answers of any length.
//
// A verifiable reward is only as good as its checker (DeepSeek-R1, §2.2.2: "rule-based
// verification of correctness"). Design rule: compare *values*, exactly, whatever the length.
// An answer is  [ws] [+|-] digits [/ digits] [ws]  (ASCII whitespace; a zero denominator, a
// decimal point, inner spaces or anything else is not a number). Integers compare as digit
// strings after normalisation (sign '+' and leading zeros dropped, "-0" == "0"), so a
// 300-digit answer is compared exactly and nothing overflows. Fractions compare by cross
// multiplication, a/b == c/d iff a*d == c*b, which equals comparing the reduced forms
// ("6/4" == "3/2", "4/2" == "2"; a decimal such as "1.5" is not a number here). The products are schoolbook
// multiplications in base 10^9 after a digit-count test, so the cost is
// O(len(completion answer) * len(sample answer)) — linear in what a model can make long.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace reason::reward {

/// A parsed answer: sign, numerator and denominator digits without leading zeros (views into the
/// parsed text). Zero has an empty numerator and is never negative; an integer has denominator "1".
struct Number {
  bool negative = false;
  std::string_view numerator, denominator;
  [[nodiscard]] bool is_integer() const { return denominator == "1"; }
  [[nodiscard]] bool is_zero() const { return numerator.empty(); }
};

namespace detail {

constexpr bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

/// The digit run at the start of `s` (possibly empty), advancing `s` past it.
inline std::string_view take_digits(std::string_view& s) {
  std::size_t k = 0;
  while (k < s.size() && is_digit(s[k])) ++k;
  const std::string_view d = s.substr(0, k);
  s.remove_prefix(k);
  return d;
}

inline std::string_view strip_zeros(std::string_view d) {
  const std::size_t k = d.find_first_not_of('0');
  return k == std::string_view::npos ? std::string_view{} : d.substr(k);
}

/// Little-endian base-10^9 limbs of a digit string without leading zeros.
inline std::vector<std::uint32_t> limbs(std::string_view d) {
  std::vector<std::uint32_t> out;
  out.reserve(d.size() / 9 + 1);
  for (std::size_t end = d.size(); end > 0;) {
    const std::size_t begin = end >= 9 ? end - 9 : 0;
    std::uint32_t v = 0;
    for (std::size_t k = begin; k < end; ++k) v = v * 10 + static_cast<std::uint32_t>(d[k] - '0');
    out.push_back(v);
    end = begin;
  }
  return out;
}

/// The product of two digit strings (no leading zeros, not zero) as base-10^9 limbs, trimmed.
inline std::vector<std::uint32_t> multiply(std::string_view a, std::string_view b) {
  const auto x = limbs(a), y = limbs(b);
  std::vector<std::uint64_t> acc(x.size() + y.size() + 1, 0);
  constexpr std::uint64_t base = 1'000'000'000;
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint64_t carry = 0;
    for (std::size_t j = 0; j < y.size(); ++j) {
      const std::uint64_t t = acc[i + j] + std::uint64_t{x[i]} * y[j] + carry;  // < 2^63
      acc[i + j] = t % base;
      carry = t / base;
    }
    for (std::size_t k = i + y.size(); carry; ++k) {
      const std::uint64_t t = acc[k] + carry;
      acc[k] = t % base;
      carry = t / base;
    }
  }
  std::vector<std::uint32_t> out(acc.begin(), acc.end());
  while (!out.empty() && out.back() == 0) out.pop_back();
  return out;
}

}  // namespace detail

/// The number `text` spells, or std::nullopt (never throws; O(text.size())).
[[nodiscard]] inline std::optional<Number> parse_number(std::string_view text) {
  while (!text.empty() && detail::is_ascii_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && detail::is_ascii_space(text.back())) text.remove_suffix(1);
  Number n;
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
    n.negative = text.front() == '-';
    text.remove_prefix(1);
  }
  const std::string_view num = detail::take_digits(text);
  if (num.empty()) return std::nullopt;
  n.numerator = detail::strip_zeros(num);
  n.denominator = "1";
  if (!text.empty() && text.front() == '/') {
    text.remove_prefix(1);
    const std::string_view den = detail::take_digits(text);
    if (den.empty()) return std::nullopt;
    n.denominator = detail::strip_zeros(den);
    if (n.denominator.empty()) return std::nullopt;  // division by zero
  }
  if (!text.empty()) return std::nullopt;
  if (n.is_zero()) n.negative = false, n.denominator = "1";
  return n;
}

/// True when a and b are the same rational number.
[[nodiscard]] inline bool same_value(const Number& a, const Number& b) {
  if (a.is_zero() || b.is_zero()) return a.is_zero() && b.is_zero();
  if (a.negative != b.negative) return false;
  if (a.is_integer() && b.is_integer()) return a.numerator == b.numerator;
  // a.num * b.den has len(a.num) + len(b.den) - {0, 1} digits; unequal lengths settle it early.
  const std::size_t la = a.numerator.size() + b.denominator.size(), lb = b.numerator.size() + a.denominator.size();
  if (la > lb + 1 || lb > la + 1) return false;
  return detail::multiply(a.numerator, b.denominator) == detail::multiply(b.numerator, a.denominator);
}

}  // namespace reason::reward
