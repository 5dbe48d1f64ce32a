#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "reason/data/arithmetic.hpp"

using namespace reason;
using data::Problem;

namespace {

/// Checks each step "a op b=c" of a level 3/4 trace (op in + - * /).
bool steps_hold(const std::string& trace) {
  std::size_t start = 0;
  while (start <= trace.size()) {
    const auto end = std::min(trace.find(',', start), trace.size());
    const std::string item = trace.substr(start, end - start);
    const auto eq = item.find('=');
    if (eq == std::string::npos) return false;
    const std::string lhs = item.substr(0, eq);
    const long long rhs = std::stoll(item.substr(eq + 1));
    const auto op = lhs.find_first_of("+-*/", 1);  // skip a leading minus
    if (op == std::string::npos) return false;
    const long long a = std::stoll(lhs.substr(0, op)), b = std::stoll(lhs.substr(op + 1));
    const long long v = lhs[op] == '+' ? a + b : lhs[op] == '-' ? a - b : lhs[op] == '*' ? a * b : a / b;
    if (lhs[op] == '/' && a % b != 0) return false;
    if (v != rhs) return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

TEST_CASE("arithmetic: the documented examples") {
  CHECK(data::detail::binary_problem(1, 47, '+', 85).trace == "7+5=12:2,4+8+1=13:132");
  CHECK(data::detail::binary_problem(1, 85, '-', 47).trace == "15-7=8,8-4-1=38");
  CHECK(data::detail::binary_problem(1, 12, '-', 47).trace == "-(47-12),7-2=5,4-1=35,-35");
  CHECK(data::detail::binary_problem(1, 12, '-', 47).answer == "-35");
  CHECK(data::detail::binary_problem(2, 105, '-', 98).trace == "15-8=7,10-9-1=07,1-0-1=007,7");
  CHECK(data::detail::binary_problem(2, 347, '*', 6).trace == "7*6=42:2,4*6+4=28:82,3*6+2=20:2082");
  CHECK(data::detail::binary_problem(2, 47, '+', 5).trace == "7+5=12:2,4+0+1=5:52");
  CHECK(data::detail::binary_problem(1, 0, '-', 0).trace == "0-0=0");
  const Problem e = data::detail::expression_problem({12, 7, 3, 5}, {'+', '*', '-'});
  CHECK(e.question == "12+7*3-5=?");
  CHECK(e.trace == "7*3=21,12+21=33,33-5=28");
  CHECK(e.answer == "28");
  CHECK(data::detail::expression_problem({2, 3, 4, 5}, {'*', '+', '*'}).trace == "2*3=6,4*5=20,6+20=26");
  CHECK(data::detail::expression_problem({5, 7, 3}, {'-', '*'}).trace == "7*3=21,5-21=-16");
}

TEST_CASE("arithmetic: the solver parses every question form and refuses the rest") {
  CHECK(data::solve("47+85=?") == 132);
  CHECK(data::solve("12-47=?") == -35);
  CHECK(data::solve("12+7*3-5=?") == 28);
  CHECK(data::solve("2*0*5+1=?") == 1);
  CHECK(data::solve("0*7=?") == 0);
  CHECK(data::solve("3*x+5=20, x=?") == 5);
  CHECK(data::solve("3*x-5=-20, x=?") == -5);
  CHECK(data::solve("3*x+5=21, x=?") == std::nullopt);  // no integer solution
  for (const char* bad : {"", "=?", "1+=?", "1+2", "1+2=?x", "+1=?", "1++2=?", "0*x+1=1, x=?", "3*x+5=20",
                          "3*y+5=20, x=?", "99999999999999999*99999999=?", "1/2=?", "-1+2=?"})
    CHECK_MESSAGE(data::solve(bad) == std::nullopt, bad);
}

TEST_CASE("arithmetic: 10^4 problems per level, answers verified by the independent solver") {
  const std::size_t max_trace[] = {0, 32, 48, 48, 24};  // levels 1-2 stay under ~48 bytes
  for (int level = 1; level <= 4; ++level) {
    Philox rng(1234, std::uint64_t(level));
    std::set<std::string> distinct;
    std::size_t longest = 0;
    for (int i = 0; i < 10000; ++i) {
      const Problem p = data::generate(level, rng);
      CAPTURE(p.question);
      CAPTURE(p.trace);
      REQUIRE(p.difficulty == level);
      const auto s = data::solve(p.question);
      REQUIRE(s.has_value());
      CHECK(std::to_string(*s) == p.answer);
      CHECK(data::trace_result(p.trace) == p.answer);  // the answer is a copy of the trace's end
      if (level >= 3) CHECK(steps_hold(p.trace));
      if (level == 4) CHECK(p.question.ends_with(", x=?"));
      else CHECK(p.question.ends_with("=?"));
      longest = std::max(longest, p.trace.size());
      distinct.insert(p.question);
    }
    MESSAGE("level ", level, ": longest trace ", longest, " bytes, ", distinct.size(), " distinct questions");
    CHECK(longest <= max_trace[level]);
    CHECK(distinct.size() > (level == 1 || level == 4 ? 7000u : 9000u));  // levels 1, 4: ~20k questions
  }
  Philox r(1);
  CHECK_THROWS_WITH_AS((void)data::generate(5, r),
                       "arithmetic::generate: difficulty level 5 out of range [1, 4]", Error);
}

TEST_CASE("arithmetic: column traces are exact for every level-1 problem") {
  for (int a = 0; a < 100; ++a)
    for (int b = 0; b < 100; ++b)
      for (char op : {'+', '-'}) {
        const Problem p = data::detail::binary_problem(1, a, op, b);
        REQUIRE(data::solve(p.question) == (op == '+' ? a + b : a - b));
        REQUIRE(data::trace_result(p.trace) == p.answer);
      }
}

TEST_CASE("arithmetic: generation is deterministic in the Philox stream") {
  for (int level = 1; level <= 4; ++level) {
    Philox a(99, 5), b(99, 5), c(100, 5);
    int differ = 0;
    for (int i = 0; i < 200; ++i) {
      const Problem pa = data::generate(level, a), pb = data::generate(level, b), pc = data::generate(level, c);
      CHECK(pa == pb);
      differ += pa.question != pc.question;
    }
    CHECK(a.offset() == b.offset());
    CHECK(differ > 150);
  }
}
