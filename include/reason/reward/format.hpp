// reason/reward/format.hpp — 1 when the completion is the template exactly.
//
// DeepSeek-R1's format reward (DeepSeek-AI 2025, §2.2.2) "enforces the model to put its thinking
// process between '<think>' and '</think>' tags". Design rule: one grammar for every rule reward
// (reward/tags.hpp, identical to data::parse_completion):
//     [<think>] trace </think><answer> answer </answer> [<eos>] [<pad>]*
// with no template tag nested or repeated inside; the leading <think> is optional because the
// prompt ends with it. The score is 1 for that and 0 for anything else.
// `reward::Format` is that all-or-nothing reward (a type, so it composes as written:
// reward::Weighted<reward::Weights{0.7f, 0.3f}, reward::Accuracy, reward::Format>). With
// reward::BasicFormat<reward::FormatConfig{.partial_credit = true}> (a compile-time switch; a
// name cannot be both a type and a template, so the configurable one is BasicFormat, as
// std::string is std::basic_string<char>) a near miss earns part of it,
// 0.25 for each of (a shaped reward in the style of the count-the-tags rewards of open R1
// reproductions; it gives a policy that never emits the template a gradient toward it):
//   1. </think> occurs exactly once;
//   2. <answer> occurs exactly once, directly after that </think>;
//   3. </answer> occurs exactly once, after that <answer>;
//   4. the whole completion is the template (which implies 1-3),
// so a score of 1 still means exactly the template, and text with no tags scores 0.
#pragma once

#include <string_view>

#include "reason/data/arithmetic.hpp"
#include "reason/reward/tags.hpp"

namespace reason::reward {

struct FormatConfig {
  bool partial_credit = false;  // 0.25 per correctly placed tag instead of all-or-nothing
};

/// Template-format reward: 1 or 0, or a multiple of 0.25 with partial credit.
template <FormatConfig C>
struct BasicFormat {
  static constexpr const char* name = C.partial_credit ? "format_partial" : "format";
  static constexpr float min_score = 0.0f, max_score = 1.0f;

  [[nodiscard]] float score(std::string_view completion, const data::Problem& /*sample*/) const {
    const TagScan s = scan_tags(completion);
    if constexpr (!C.partial_credit) {
      return s.well_formed() ? 1.0f : 0.0f;
    } else {
      const bool end_think = s.n(Tag::end_think) == 1;
      const bool answer = end_think && s.n(Tag::answer) == 1 &&
                          s.at(Tag::answer) == s.at(Tag::end_think) + TagScan::length(Tag::end_think);
      const bool end_answer =
          s.n(Tag::end_answer) == 1 && s.n(Tag::answer) == 1 && s.at(Tag::end_answer) > s.at(Tag::answer);
      const int credits = int(end_think) + int(answer) + int(end_answer) + int(s.well_formed());
      return 0.25f * static_cast<float>(credits);
    }
  }
};

/// The all-or-nothing format reward of DeepSeek-R1.
using Format = BasicFormat<FormatConfig{}>;
/// Format with 0.25 per correctly placed tag.
using PartialFormat = BasicFormat<FormatConfig{.partial_credit = true}>;

}  // namespace reason::reward
