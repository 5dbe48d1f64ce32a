// The expected score of every reward on a table of good and hostile completions, written out.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/reward/accuracy.hpp"
#include "reason/reward/efficiency.hpp"
#include "reason/reward/format.hpp"
#include "reason/reward/overlong.hpp"

using namespace reason;
using namespace std::string_literals;

namespace {

// 0 up to 24 tokens, (24 - len) / 8 for 25..32 tokens, -1 beyond 32.
using Long = reward::Overlong<reward::OverlongConfig{.max_length = 32, .cache = 8}>;

struct Row {
  const char* what;
  std::string completion;
  std::string answer;  // the sample's answer
  float accuracy, format, partial, efficiency, overlong;
  long long tokens;  // tokens as Overlong counts them (trailing <pad>s excluded)
};

const std::string trace = "7*3=21,12+21=33,33-5=28";  // 23 bytes, 3 steps
const std::string digits300 = [] {
  std::string d;
  for (int i = 0; i < 300; ++i) d += char('0' + (i * 7 + 3) % 10);
  return d;  // starts with '3'
}();
std::string twice(const std::string& d) {  // 2 * d as a digit string
  std::string out(d.size(), '0');
  int carry = 0;
  for (std::size_t i = d.size(); i-- > 0;) {
    const int v = 2 * (d[i] - '0') + carry;
    out[i] = char('0' + v % 10);
    carry = v / 10;
  }
  return carry ? "1" + out : out;
}
std::string last_digit_changed(std::string d) {
  d.back() = d.back() == '9' ? '8' : char(d.back() + 1);
  return d;
}
const std::string mb(std::size_t(1) << 20, 'x');

std::vector<Row> table() {
  const std::string A = "</think><answer>", Z = "</answer>";
  return {
      // what, completion, sample answer: accuracy, format, partial format, efficiency, overlong, tokens
      {"the template, <eos>", trace + A + "28" + Z + "<eos>", "28", 1, 1, 1, 0.25f, -0.625f, 29},
      {"leading <think> is optional", "<think>" + trace + A + "28" + Z + "<eos>", "28", 1, 1, 1, 0.25f, -0.75f, 30},
      {"no <eos>", trace + A + "28" + Z, "28", 1, 1, 1, 0.25f, -0.5f, 28},
      {"<eos> and <pad>s", trace + A + "28" + Z + "<eos><pad><pad><pad>", "28", 1, 1, 1, 0.25f, -0.625f, 29},
      {"one-step trace", "x" + A + "28" + Z + "<eos>", "28", 1, 1, 1, 0.5f, 0, 7},
      {"empty trace", A + "28" + Z + "<eos>", "28", 1, 1, 1, 1.0f, 0, 6},
      {"<answer> +42 </answer>", "a,b" + A + " +42 " + Z, "42", 1, 1, 1, 1 / 3.0f, 0, 11},
      {"<answer>042</answer>", "a" + A + "042" + Z, "42", 1, 1, 1, 0.5f, 0, 7},
      {"leading zeros, tab and newline", "a" + A + "\t0042 \n" + Z, "42", 1, 1, 1, 0.5f, 0, 11},
      {"wrong answer", "a" + A + "27" + Z, "28", 0, 1, 1, 0.5f, 0, 6},
      {"wrong sign", "a" + A + "-28" + Z, "28", 0, 1, 1, 0.5f, 0, 7},
      {"negative answer", "a" + A + "-35" + Z, "-35", 1, 1, 1, 0.5f, 0, 7},
      {"a decimal is not an answer", "a" + A + "28.0" + Z, "28", 0, 1, 1, 0.5f, 0, 8},
      {"inner space", "a" + A + "2 8" + Z, "28", 0, 1, 1, 0.5f, 0, 7},
      {"two signs", "a" + A + "++28" + Z, "28", 0, 1, 1, 0.5f, 0, 8},
      {"empty answer", "a" + A + Z, "28", 0, 1, 1, 0.5f, 0, 4},
      {"an integer as a fraction", "a" + A + "56/2" + Z, "28", 1, 1, 1, 0.5f, 0, 8},
      {"<answer>3/2</answer> vs 6/4", "a" + A + "3/2" + Z, "6/4", 1, 1, 1, 0.5f, 0, 7},
      {"-3/2 vs 6/4", "a" + A + "-3/2" + Z, "6/4", 0, 1, 1, 0.5f, 0, 8},
      {"3/4 vs 6/4", "a" + A + "3/4" + Z, "6/4", 0, 1, 1, 0.5f, 0, 7},
      {"a zero denominator", "a" + A + "1/0" + Z, "6/4", 0, 1, 1, 0.5f, 0, 7},
      {"a fraction vs an integer", "a" + A + "4/2" + Z, "2", 1, 1, 1, 0.5f, 0, 7},
      {"-0 vs 0", "a" + A + "-0" + Z, "0", 1, 1, 1, 0.5f, 0, 6},
      {"-0/5 vs -0", "a" + A + "-0/5" + Z, "-0", 1, 1, 1, 0.5f, 0, 8},
      {"empty", "", "28", 0, 0, 0, 0, 0, 0},
      {"a bare number", "28", "28", 0, 0, 0, 0, 0, 2},
      {"nested <think><think>", "<think><think>a" + A + "28" + Z, "28", 0, 0, 0.75f, 0, 0, 8},
      {"repeated <answer>", "a" + A + "28" + Z + "<answer>28" + Z, "28", 0, 0, 0.25f, 0, 0, 10},
      {"missing </answer>", "a" + A + "28", "28", 0, 0, 0.5f, 0, 0, 5},
      {"missing </think>", "a<answer>28" + Z, "28", 0, 0, 0.25f, 0, 0, 5},
      {"text after </answer>", "a" + A + "28" + Z + "junk", "28", 0, 0, 0.75f, 0, 0, 10},
      {"text after <eos>", "a" + A + "28" + Z + "<eos>x", "28", 0, 0, 0.75f, 0, 0, 8},
      {"a second <eos>", "a" + A + "28" + Z + "<eos><eos>", "28", 0, 0, 0.75f, 0, 0, 8},
      {"<pad> then <eos>", "a" + A + "28" + Z + "<pad><eos>", "28", 0, 0, 0.75f, 0, 0, 8},
      {"tags in the wrong order", "<answer>28" + Z + "<think>a</think>", "28", 0, 0, 0.5f, 0, 0, 7},
      {"reversed answer tags", "a</think></answer>28<answer>", "28", 0, 0, 0.25f, 0, 0, 6},
      {"space between </think> and <answer>", "a</think> <answer>28" + Z, "28", 0, 0, 0.5f, 0, 0, 7},
      {"two </think>", "a</think>b" + A + "28" + Z, "28", 0, 0, 0.25f, 0, 0, 8},
      {"<answer> nested in the answer", "a" + A + "2<answer>8" + Z, "28", 0, 0, 0.25f, 0, 0, 7},
      {"<eos> inside the answer", "a" + A + "28<eos>" + Z, "28", 0, 0, 0.75f, 0, 0, 7},
      {"<pad> inside the trace (as parse_completion)", "a<pad>" + A + "28" + Z, "28", 1, 1, 1, 0.5f, 0, 7},
      {"a NUL byte inside the answer", "a" + A + "2\0"s + "8" + Z, "28", 0, 1, 1, 0.5f, 0, 7},
      {"a NUL byte after the answer", "a" + A + "28\0"s + Z, "28", 0, 1, 1, 0.5f, 0, 7},
      {"NUL bytes in the trace", "a\0\0b"s + A + "28" + Z, "28", 1, 1, 1, 0.5f, 0, 9},
      {"invalid UTF-8 in the trace", "\xff\xfe\xc3" + A + "28" + Z, "28", 1, 1, 1, 0.5f, 0, 8},
      {"full-width digits", "a" + A + "\xef\xbc\x92\xef\xbc\x98" + Z, "28", 0, 1, 1, 0.5f, 0, 10},
      {"24 tokens: no punishment", std::string(19, 'x') + A + "28" + Z, "28", 1, 1, 1, 0.5f, 0, 24},
      {"25 tokens: the ramp starts", std::string(20, 'x') + A + "28" + Z, "28", 1, 1, 1, 0.5f, -0.125f, 25},
      {"32 tokens: the ramp ends", std::string(27, 'x') + A + "28" + Z, "28", 1, 1, 1, 0.5f, -1, 32},
      {"33 tokens: beyond the limit", std::string(28, 'x') + A + "28" + Z, "28", 1, 1, 1, 0.5f, -1, 33},
      {"a 1 MB trace", mb + A + "28" + Z + "<eos>", "28", 1, 1, 1, 0.5f, -1, (1 << 20) + 6},
      {"1 MB of <answer>", [] { std::string s; while (s.size() < (1u << 20)) s += "<answer>"; return s; }(), "28",
       0, 0, 0, 0, -1, (1 << 20) / 8},
      {"1 MB of '<'", std::string(1u << 20, '<'), "28", 0, 0, 0, 0, -1, 1 << 20},
      {"1 MB of zeros before the answer", "a" + A + std::string(1u << 20, '0') + "28" + Z, "28", 1, 1, 1, 0.5f, -1,
       (1 << 20) + 6},
      {"a 1 MB fraction equal to 28", "a" + A + "28" + std::string(1u << 19, '0') + "/1" + std::string(1u << 19, '0') + Z,
       "28", 1, 1, 1, 0.5f, -1, (1 << 20) + 8},
      {"a 300-digit answer, equal", "a" + A + digits300 + Z, digits300, 1, 1, 1, 0.5f, -1, 304},
      {"a 300-digit answer, '+00' and spaces", "a" + A + " +00" + digits300 + " " + Z, digits300, 1, 1, 1, 0.5f, -1, 309},
      {"a 300-digit answer, last digit differs", "a" + A + last_digit_changed(digits300) + Z, digits300, 0, 1, 1, 0.5f,
       -1, 304},
      {"a 300-digit answer, sign differs", "a" + A + "-" + digits300 + Z, digits300, 0, 1, 1, 0.5f, -1, 305},
      {"a 300-digit answer, one digit short", "a" + A + digits300.substr(1) + Z, digits300, 0, 1, 1, 0.5f, -1, 303},
      {"a 300-digit fraction 2d/2", "a" + A + twice(digits300) + "/2" + Z, digits300, 1, 1, 1, 0.5f, -1,
       static_cast<long long>(twice(digits300).size()) + 6},
      {"a 300-digit fraction 2d/3", "a" + A + twice(digits300) + "/3" + Z, digits300, 0, 1, 1, 0.5f, -1,
       static_cast<long long>(twice(digits300).size()) + 6},
  };
}

}  // namespace

TEST_CASE("reward table: the score of every reward on good and hostile completions") {
  const auto rows = table();
  REQUIRE(rows.size() >= 30);
  const reward::Accuracy accuracy;
  const reward::Format format;
  const reward::PartialFormat partial;
  const reward::Efficiency efficiency;
  const Long overlong;
  for (const Row& r : rows) {
    CAPTURE(r.what);
    const data::Problem sample{"12+7*3-5=?", r.answer, trace, 3};
    CHECK(accuracy.score(r.completion, sample) == r.accuracy);
    CHECK(format.score(r.completion, sample) == r.format);
    CHECK(partial.score(r.completion, sample) == r.partial);
    CHECK(efficiency.score(r.completion, sample) == doctest::Approx(r.efficiency).epsilon(1e-6));
    CHECK(overlong.score(r.completion, sample) == doctest::Approx(r.overlong).epsilon(1e-6));
    CHECK(Long::length(r.completion) == r.tokens);
    // The format reward is data::parse_completion's grammar, exactly.
    CHECK((format.score(r.completion, sample) == 1.0f) == data::parse_completion(r.completion).has_value());
  }
}

TEST_CASE("Accuracy falls back to solving the question when the sample has no answer") {
  const reward::Accuracy accuracy;
  const data::Problem no_answer{"12+7*3-5=?", "", "", 3};
  CHECK(accuracy.score("x</think><answer>28</answer>", no_answer) == 1.0f);
  CHECK(accuracy.score("x</think><answer>27</answer>", no_answer) == 0.0f);
  const data::Problem equation{"3*x+5=20, x=?", "", "", 4};
  CHECK(accuracy.score("x</think><answer>5</answer>", equation) == 1.0f);
  // A sample that cannot be checked is bad data: an error naming it, not a silent 0.
  CHECK_THROWS_WITH_AS((void)accuracy.score("x</think><answer>5</answer>", data::Problem{"what?", "", "", 1}),
                       "reward::Accuracy: the sample has no answer and its question \"what?\" does not solve", Error);
  CHECK_THROWS_WITH_AS((void)accuracy.score("x</think><answer>5</answer>", data::Problem{"2+3=?", "five", "", 1}),
                       "reward::Accuracy: the sample's answer \"five\" (question \"2+3=?\") is not an integer or a fraction",
                       Error);
  // The sample is checked whatever the completion: bad data cannot hide behind bad output.
  CHECK_THROWS_AS((void)accuracy.score("no template", data::Problem{"what?", "", "", 1}), Error);
  CHECK_THROWS_AS((void)accuracy.score("", data::Problem{"1+1=?", "2.0", "", 1}), Error);
}

TEST_CASE("Efficiency counts the comma-separated steps of generated traces") {
  Philox rng(7, 0);
  for (int level = data::min_level; level <= data::max_level; ++level)
    for (int i = 0; i < 50; ++i) {
      const data::Problem p = data::generate(level, rng);
      const auto e = data::sft_example(p);
      const std::vector<std::int32_t> completion(e.tokens.begin() + std::ptrdiff_t(e.prompt_length), e.tokens.end());
      const std::string text = data::Tokenizer::decode(completion);
      CAPTURE(text);
      std::size_t commas = 0;
      for (char c : p.trace) commas += c == ',';
      CHECK(reward::trace_steps(p.trace) == commas + 1);
      CHECK(reward::Efficiency{}.score(text, p) == doctest::Approx(1.0 / double(commas + 2)).epsilon(1e-6));
      CHECK(reward::Accuracy{}.score(text, p) == 1.0f);
      CHECK(reward::Format{}.score(text, p) == 1.0f);
      CHECK(Long::length(text) == std::int64_t(completion.size()));
    }
  CHECK(reward::trace_steps("") == 0);
  CHECK(reward::trace_steps("a") == 1);
  CHECK(reward::trace_steps(",") == 2);
}
