// data::left_to_right: the flawed (precedence-ignoring) solution of level-3 questions, only where
// the order of evaluation changes the answer; every step of the flawed trace is right arithmetic.
#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <string>

#include "reason/core/philox.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/misconception.hpp"
#include "reason/data/sft_batch.hpp"

using namespace reason;

TEST_CASE("left_to_right: the worked example, order-insensitive questions and other levels") {
  const data::Problem p{"12+7*3-5=?", "28", "7*3=21,12+21=33,33-5=28", 3};
  const std::optional<data::Problem> f = data::left_to_right(p);
  REQUIRE(f.has_value());
  CHECK(f->question == p.question);
  CHECK(f->trace == "12+7=19,19*3=57,57-5=52");
  CHECK(f->answer == "52");
  CHECK(f->difficulty == 3);
  CHECK_FALSE(data::left_to_right({"12+7-5=?", "14", "12+7=19,19-5=14", 3}).has_value());  // same answer
  CHECK_FALSE(data::left_to_right({"2*3+4=?", "10", "2*3=6,6+4=10", 3}).has_value());      // '*' first
  CHECK_FALSE(data::left_to_right({"47+85=?", "132", "", 1}).has_value());                 // not level 3
  for (const char* q : {"", "=?", "1+=?", "+1=?", "1+x=?", "1+2", "99999999999*2+1=?"})
    CHECK_FALSE(data::left_to_right({q, "0", "", 3}).has_value());
}

TEST_CASE("left_to_right on generated level-3 problems: answers differ, each step is right, the format holds") {
  Philox rng(5, 0);
  int flawed = 0;
  for (int i = 0; i < 2000; ++i) {
    const data::Problem p = data::generate(3, rng);
    const std::optional<data::Problem> f = data::left_to_right(p);
    if (!f) continue;
    ++flawed;
    CHECK(f->answer != p.answer);
    // Each step "a op b = r" is correct arithmetic, and the last result is the answer.
    std::string last;
    std::size_t start = 0;
    while (start < f->trace.size()) {
      const std::size_t end = std::min(f->trace.find(',', start), f->trace.size());
      const std::string step = f->trace.substr(start, end - start);
      const std::size_t eq = step.find('=');
      REQUIRE(eq != std::string::npos);
      // "a op b": a may be negative (a running result), b never is
      const std::size_t op = step.find_first_of("+-*", 1);
      REQUIRE(op < eq);
      const long long a = std::stoll(step.substr(0, op)), b = std::stoll(step.substr(op + 1, eq - op - 1));
      const long long value = step[op] == '*' ? a * b : step[op] == '+' ? a + b : a - b;
      CHECK(std::to_string(value) == step.substr(eq + 1));
      last = step.substr(eq + 1);
      start = end + 1;
    }
    CHECK(last == f->answer);
    CHECK(data::parse_completion(f->trace + "</think><answer>" + f->answer + "</answer>").has_value());
  }
  CHECK(flawed > 600);  // about half the level-3 problems are order-sensitive
  CHECK(flawed < 1600);
}
