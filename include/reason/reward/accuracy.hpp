// reason/reward/accuracy.hpp — 1 when the completion's answer equals the sample's, else 0.
//
// DeepSeek-R1's accuracy reward (DeepSeek-AI 2025, §2.2.2): "the model is required to provide the
// final answer in a specified format ..., enabling reliable rule-based verification". Design rule:
// score only an unambiguous answer. The answer is read only from a completion that is the
// template exactly (reward/tags.hpp, data::parse_completion's grammar): several <answer>s, an
// answer without </answer>, text after </answer> or tags inside the answer all score 0 — a looser
// extractor lets a policy hedge (two answers) or hide answers in the trace. The value comparison
// is exact and never overflows (reward/number.hpp): surrounding whitespace and a leading '+'
// are tolerated, leading zeros ignored, "-0" == "0", fractions compare by value ("6/4" == "3/2").
// The expected value is sample.answer; when that is empty, data::solve(sample.question), the
// independent evaluator. A sample with neither is bad data, not a bad completion: reason::Error,
// checked on every call (whatever the completion), so bad data cannot hide behind bad output.
#pragma once

#include <string>
#include <string_view>

#include "reason/core/error.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/reward/number.hpp"
#include "reason/reward/tags.hpp"

namespace reason::reward {

/// Exact-answer reward: 1 or 0.
struct Accuracy {
  static constexpr const char* name = "accuracy";
  static constexpr float min_score = 0.0f, max_score = 1.0f;

  [[nodiscard]] float score(std::string_view completion, const data::Problem& sample) const {
    std::string solved;  // the text of data::solve's value, when the sample has no answer
    const Number want = expected(sample, solved);
    const TagScan s = scan_tags(completion);
    if (!s.well_formed()) return 0.0f;
    const auto got = parse_number(s.answer());
    return got && same_value(*got, want) ? 1.0f : 0.0f;
  }

 private:
  /// The sample's value (viewing sample.answer or `storage`); reason::Error when it has none.
  static Number expected(const data::Problem& sample, std::string& storage) {
    std::string_view answer = sample.answer;
    if (answer.empty()) {
      const auto v = data::solve(sample.question);
      REASON_CHECK(v, "reward::Accuracy: the sample has no answer and its question \"", sample.question,
                   "\" does not solve");
      storage = std::to_string(*v);
      answer = storage;
    }
    const auto n = parse_number(answer);
    REASON_CHECK(n, "reward::Accuracy: the sample's answer \"", answer, "\" (question \"", sample.question,
                 "\") is not an integer or a fraction");
    return *n;
  }
};

}  // namespace reason::reward
