// reason/data/misconception.hpp — worked solutions with a systematic error, for cold-start data
// written by a fallible teacher.
//
// Supervised fine-tuning imitates its data, mistakes included; reinforcement learning against an
// answer checker is what removes them (DeepSeek-R1 §2.3: RL after the cold start). RL with
// verifiable rewards mostly *selects* among behaviours the model can already produce — it raises
// pass@1 towards pass@k rather than teaching new skills (Yue et al. 2025, "Does Reinforcement
// Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?") — so a
// cold start that holds a right and a wrong way to solve the same question is exactly the
// situation in which a small RL budget shows.
//
// The misconception here is the classic one of evaluating an expression left to right,
// ignoring operator precedence: for the level-3 question 12+7*3-5=? the flawed trace reads
// 12+7=19,19*3=57,57-5=52 and answers 52. Every step is still locally computable (the flawed
// trace is as easy to imitate as the right one), and only questions where the order matters
// have a flawed version, so the two ways differ exactly where the checker can tell them apart.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reason/data/arithmetic.hpp"

namespace reason::data {

/// The left-to-right solution of a level-3 question, when it gives another answer than the
/// right one; std::nullopt for other levels, unparsable questions, or questions whose order of
/// evaluation does not change the answer.
[[nodiscard]] inline std::optional<Problem> left_to_right(const Problem& p) {
  if (p.difficulty != 3) return std::nullopt;
  std::vector<long long> nums;
  std::vector<char> ops;
  long long v = 0;
  bool digits = false;
  for (char c : std::string_view(p.question)) {
    if (c >= '0' && c <= '9') {
      if (v > 1'000'000'000) return std::nullopt;
      v = v * 10 + (c - '0');
      digits = true;
    } else if (c == '+' || c == '-' || c == '*' || c == '=') {
      if (!digits) return std::nullopt;
      nums.push_back(v);
      v = 0;
      digits = false;
      if (c == '=') break;
      ops.push_back(c);
    } else {
      return std::nullopt;
    }
  }
  if (nums.size() < 2 || nums.size() != ops.size() + 1) return std::nullopt;
  Problem out = p;
  out.trace.clear();
  long long acc = nums[0];
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const long long b = nums[i + 1];
    const long long r = ops[i] == '*' ? acc * b : ops[i] == '+' ? acc + b : acc - b;
    if (i) out.trace += ',';
    detail::put(out.trace, detail::str(acc), std::string(1, ops[i]), detail::str(b), "=", detail::str(r));
    acc = r;
  }
  out.answer = detail::str(acc);
  if (out.answer == p.answer) return std::nullopt;
  return out;
}

}  // namespace reason::data
