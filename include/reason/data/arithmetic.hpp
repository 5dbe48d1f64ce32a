// reason/data/arithmetic.hpp — verifiable arithmetic problems with worked, imitable traces.
//
// The R1 recipe (DeepSeek-AI, "DeepSeek-R1", 2025, §2.2) needs tasks whose answers a rule can
// check; this is the smallest such family, sized for a byte-level model of a few hundred thousand
// parameters trained for minutes. Design rule: every trace step is *locally computable* from the
// question and earlier steps, and the answer is a copy of the trace's last number — so a tiny
// transformer can learn the trace by imitation (cf. Nye et al. 2021, "Show your work: scratchpads";
// Lee et al. 2023, "Teaching arithmetic to small transformers": digit-wise, carry-explicit traces).
// Levels and trace formats (columns right to left; the text after ':' or the fused result after
// '=' is the running result, one digit longer each step, so the final one *is* the answer):
//   1  a±b, operands 0..99 (a difference may be negative: "-(b-a)" first, "-r" last)
//        47+85=?   7+5=12:2,4+8+1=13:132          85-47=?  15-7=8,8-4-1=38
//        12-47=?   -(47-12),7-2=5,4-1=35,-35       (a column that borrows is written "1x-y[-1]")
//   2  a±b up to 4 digits (a difference is >= 0), a*d with a up to 3 digits, d one digit
//        347*6=?   7*6=42:2,4*6+4=28:82,3*6+2=20:2082      (a leading-zero result gets ",r" last)
//   3  3-4 operands with +,-,* and precedence, one binary operation per step, '*' first
//        12+7*3-5=?   7*3=21,12+21=33,33-5=28
//   4  a*x+b=c / a*x-b=c with an integer solution
//        3*x+5=20, x=?   20-5=15,15/3=5
// `generate` is deterministic in its Philox stream. `solve` is an independent parser/evaluator
// of question text (used by tests and rule rewards); it never trusts the generator.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"

namespace reason::data {

/// One problem: question text, answer (plain decimal integer), worked trace, level 1..4.
struct Problem {
  std::string question, answer, trace;
  int difficulty = 0;
  friend bool operator==(const Problem&, const Problem&) = default;
};

inline constexpr int min_level = 1, max_level = 4;

/// A lower bound on the number of distinct questions `generate(level)` can produce (exact for
/// levels 1 and 4), used to cap held-out sets.
[[nodiscard]] constexpr std::int64_t problem_space(int level) {
  switch (level) {
    case 1: return 2 * 100 * 100;         // a+b and a-b, a, b in 0..99
    case 2: return 998 * 8 + 9000 * 9000;  // a*d; and at least the 4-digit + 4-digit sums
    case 3: return 100'000'000;            // far more: 4 operands up to 60 and 3 operators
    case 4: return 8 * 30 * 50 * 2;        // a in 2..9, x in -9..20, b in 1..50, sign
    default: return 0;
  }
}

namespace detail {

inline std::string str(long long v) { return std::to_string(v); }

/// Appends the pieces to `out` (only appends: GCC 12 warns falsely on prepending operator+).
template <class... Pieces>
void put(std::string& out, const Pieces&... pieces) {
  (out += ... += pieces);
}

/// Column addition of a, b >= 0: "da+db[+1]=s:r" per column, r the running result.
inline std::string add_trace(long long a, long long b) {
  const std::string sa = str(a), sb = str(b);
  const std::size_t n = std::max(sa.size(), sb.size());
  std::string trace, r;
  int carry = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const int da = i < sa.size() ? sa[sa.size() - 1 - i] - '0' : 0;
    const int db = i < sb.size() ? sb[sb.size() - 1 - i] - '0' : 0;
    const int s = da + db + carry;
    if (i) trace += ',';
    put(trace, str(da), "+", str(db), carry ? "+1" : "", "=", str(s));
    r.insert(0, i + 1 == n ? str(s) : str(s % 10));
    put(trace, ":", r);
    carry = s / 10;
  }
  return trace;
}

/// Column subtraction x - y with x >= y >= 0: "X-dy[-1]=r" per column; X is "1"+dx when the
/// column borrows; r (the running result) is fused after '='. Leading zeros get a last ",r".
inline std::string sub_columns(long long x, long long y) {
  const std::string sx = str(x), sy = str(y);
  std::string trace, r;
  int borrow = 0;
  for (std::size_t i = 0; i < sx.size(); ++i) {
    const int dx = sx[sx.size() - 1 - i] - '0';
    const int dy = i < sy.size() ? sy[sy.size() - 1 - i] - '0' : 0;
    const bool borrows = dx - dy - borrow < 0;
    const int d = dx + (borrows ? 10 : 0) - dy - borrow;
    if (i) trace += ',';
    put(trace, borrows ? "1" : "", str(dx), "-", str(dy), borrow ? "-1" : "", "=");
    r.insert(0, str(d));
    trace += r;
    borrow = borrows ? 1 : 0;
  }
  if (r.size() > 1 && r[0] == '0') put(trace, ",", str(x - y));
  return trace;
}

/// a - b for a, b >= 0; a negative difference is "-(b-a)," then the columns of b-a, then ",-r".
inline std::string sub_trace(long long a, long long b) {
  if (a >= b) return sub_columns(a, b);
  std::string t;
  put(t, "-(", str(b), "-", str(a), "),", sub_columns(b, a), ",-", str(b - a));
  return t;
}

/// a * d, d one digit: "da*d[+c]=p:r" per column.
inline std::string mul_trace(long long a, int d) {
  const std::string sa = str(a);
  std::string trace, r;
  int carry = 0;
  for (std::size_t i = 0; i < sa.size(); ++i) {
    const int da = sa[sa.size() - 1 - i] - '0';
    const int p = da * d + carry;
    if (i) trace += ',';
    put(trace, str(da), "*", str(d));
    if (carry) put(trace, "+", str(carry));
    put(trace, "=", str(p));
    r.insert(0, i + 1 == sa.size() ? str(p) : str(p % 10));
    put(trace, ":", r);
    carry = p / 10;
  }
  return trace;
}

/// Uniform integer in [lo, hi].
inline long long uniform(Philox& rng, long long lo, long long hi) {
  return lo + static_cast<long long>(rng.below(static_cast<std::uint32_t>(hi - lo + 1)));
}
/// Uniform integer with exactly `digits` decimal digits (0 allowed for one digit).
inline long long with_digits(Philox& rng, int digits) {
  if (digits == 1) return uniform(rng, 0, 9);
  long long lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  return uniform(rng, lo, lo * 10 - 1);
}

inline Problem binary_problem(int level, long long a, char op, long long b) {
  Problem p;
  p.difficulty = level;
  put(p.question, str(a), std::string(1, op), str(b), "=?");
  if (op == '+') p.answer = str(a + b), p.trace = add_trace(a, b);
  else if (op == '-') p.answer = str(a - b), p.trace = sub_trace(a, b);
  else p.answer = str(a * b), p.trace = mul_trace(a, static_cast<int>(b));
  return p;
}

/// Level 3: evaluate `nums`/`ops` with '*' first, then left to right, one step each.
inline Problem expression_problem(std::vector<long long> nums, std::vector<char> ops) {
  Problem p;
  p.difficulty = 3;
  for (std::size_t i = 0; i < nums.size(); ++i) {
    if (i) p.question += ops[i - 1];
    p.question += str(nums[i]);
  }
  p.question += "=?";
  auto step = [&](std::size_t i) {
    const long long a = nums[i], b = nums[i + 1];
    const long long v = ops[i] == '*' ? a * b : ops[i] == '+' ? a + b : a - b;
    if (!p.trace.empty()) p.trace += ',';
    put(p.trace, str(a), std::string(1, ops[i]), str(b), "=", str(v));
    nums[i] = v;
    nums.erase(nums.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(i));
  };
  for (std::size_t i = 0; i < ops.size();)
    if (ops[i] == '*') step(i);
    else ++i;
  while (!ops.empty()) step(0);
  p.answer = str(nums[0]);
  return p;
}

}  // namespace detail

/// A problem of difficulty `level` (1..4), drawn from `rng` (the same stream gives the same problem).
[[nodiscard]] inline Problem generate(int level, Philox& rng) {
  using detail::uniform;
  switch (level) {
    case 1: {
      const long long a = uniform(rng, 0, 99), b = uniform(rng, 0, 99);
      return detail::binary_problem(1, a, rng.below(2) ? '-' : '+', b);
    }
    case 2: {
      const std::uint32_t kind = rng.below(3);
      if (kind == 2) {
        const long long a = uniform(rng, 2, 999), d = uniform(rng, 2, 9);
        return detail::binary_problem(2, a, '*', d);
      }
      long long a = detail::with_digits(rng, 3 + static_cast<int>(rng.below(2)));
      long long b = detail::with_digits(rng, 1 + static_cast<int>(rng.below(4)));
      if (kind == 0) {
        if (rng.below(2)) std::swap(a, b);
        return detail::binary_problem(2, a, '+', b);
      }
      if (a < b) std::swap(a, b);
      return detail::binary_problem(2, a, '-', b);
    }
    case 3: {
      const int n = 3 + static_cast<int>(rng.below(2));
      std::vector<char> ops(static_cast<std::size_t>(n - 1));
      int stars = 0;
      for (char& op : ops) {
        op = "+-*"[rng.below(3)];
        if (op == '*' && ++stars > 2) op = '+';  // at most two '*': products stay below 2000
      }
      std::vector<long long> nums(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < nums.size(); ++i) {
        const bool factor = (i > 0 && ops[i - 1] == '*') || (i < ops.size() && ops[i] == '*');
        nums[i] = factor ? uniform(rng, 2, 12) : uniform(rng, 1, 60);
      }
      return detail::expression_problem(std::move(nums), std::move(ops));
    }
    case 4: {
      const long long a = uniform(rng, 2, 9), x = uniform(rng, -9, 20), b = uniform(rng, 1, 50);
      const bool plus = rng.below(2) == 0;
      const long long c = plus ? a * x + b : a * x - b, t = plus ? c - b : c + b;
      Problem p;
      p.difficulty = 4;
      using detail::str;
      detail::put(p.question, str(a), "*x", plus ? "+" : "-", str(b), "=", str(c), ", x=?");
      detail::put(p.trace, str(c), plus ? "-" : "+", str(b), "=", str(t), ",", str(t), "/", str(a), "=", str(x));
      p.answer = detail::str(x);
      return p;
    }
    default: fail("arithmetic::generate: difficulty level ", level, " out of range [", min_level, ", ", max_level, "]");
  }
}

/// The last number of a trace (after its last ',', '=' or ':') — by construction the answer.
[[nodiscard]] inline std::string_view trace_result(std::string_view trace) {
  const auto cut = trace.find_last_of(",=:");
  return cut == std::string_view::npos ? trace : trace.substr(cut + 1);
}

namespace detail {

/// A cursor over question text; every failure is std::nullopt, never an exception.
struct Scanner {
  std::string_view s;
  std::size_t i = 0;
  bool eat(std::string_view t) {
    if (!s.substr(i).starts_with(t)) return false;
    i += t.size();
    return true;
  }
  std::optional<long long> number(bool allow_sign) {
    const bool neg = allow_sign && eat("-");
    const std::size_t b = i;
    long long v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (i - b >= 15) return std::nullopt;  // keeps every operation below far from overflow
      v = v * 10 + (s[i++] - '0');
    }
    if (i == b) return std::nullopt;
    return neg ? -v : v;
  }
};

}  // namespace detail

/// The answer to a question in any of the generator's forms ("47+85=?", "12+7*3-5=?",
/// "3*x+5=20, x=?"), computed from the text alone; std::nullopt if it does not parse, an
/// equation has no integer solution, or a value would overflow.
[[nodiscard]] inline std::optional<long long> solve(std::string_view question) {
  detail::Scanner sc{question};
  if (question.find('x') != std::string_view::npos) {  // a*x+b=c, x=?   or   a*x-b=c, x=?
    const auto a = sc.number(false);
    if (!a || *a == 0 || !sc.eat("*x")) return std::nullopt;
    const bool plus = sc.eat("+");
    if (!plus && !sc.eat("-")) return std::nullopt;
    const auto b = sc.number(false);
    if (!b || !sc.eat("=")) return std::nullopt;
    const auto c = sc.number(true);
    if (!c || !sc.eat(", x=?") || sc.i != question.size()) return std::nullopt;
    const long long t = plus ? *c - *b : *c + *b;
    if (t % *a != 0) return std::nullopt;
    return t / *a;
  }
  // Sum of products, left to right: total += sign * (running product of the current term).
  long long total = 0, term = 0;
  int sign = 1;
  bool fresh = true;
  for (std::size_t k = 0;; ++k) {
    if (k > 64) return std::nullopt;
    const auto v = sc.number(false);
    if (!v) return std::nullopt;
    if (fresh) term = *v, fresh = false;
    else if (__builtin_mul_overflow(term, *v, &term)) return std::nullopt;
    if (sc.eat("*")) continue;
    if (__builtin_add_overflow(total, sign * term, &total)) return std::nullopt;
    fresh = true;
    if (sc.eat("+")) sign = 1;
    else if (sc.eat("-")) sign = -1;
    else break;
  }
  if (!sc.eat("=?") || sc.i != question.size()) return std::nullopt;
  return total;
}

}  // namespace reason::data
