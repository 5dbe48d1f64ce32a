// reason/reward/efficiency.hpp — shorter worked traces score higher.
//
// R1-style training lengthens responses (DeepSeek-AI 2025, Fig. 3); length-aware rewards trade
// that back for efficiency (Kimi k1.5, Team et al. 2025, §2.3.3 "length penalty"; Arora & Zanette
// 2025, "Training language models to reason efficiently"). Design rule: count *steps*, not bytes.
// In data/arithmetic.hpp's trace format each step is one comma-separated item
// ("7*3=21,12+21=33,33-5=28" is 3 steps), so steps = 1 + number of ',' in a non-empty trace and
// 0 in an empty one, and the score is 1 / (1 + steps): (0, 1] for a completion in the template,
// 0 for one that is not (reward/tags.hpp). It is blind to correctness on purpose — compose it
// with Accuracy (reward::Weighted), or a policy learns to answer at once, and wrongly.
#pragma once

#include <algorithm>
#include <string_view>

#include "reason/data/arithmetic.hpp"
#include "reason/reward/tags.hpp"

namespace reason::reward {

/// Number of steps of a trace in data/arithmetic.hpp's format: comma-separated items.
[[nodiscard]] inline std::size_t trace_steps(std::string_view trace) {
  return trace.empty() ? 0 : 1 + static_cast<std::size_t>(std::count(trace.begin(), trace.end(), ','));
}

/// 1 / (1 + steps in the trace); 0 when the format is wrong.
struct Efficiency {
  static constexpr const char* name = "efficiency";
  static constexpr float min_score = 0.0f, max_score = 1.0f;

  [[nodiscard]] float score(std::string_view completion, const data::Problem& /*sample*/) const {
    const TagScan s = scan_tags(completion);
    if (!s.well_formed()) return 0.0f;
    return static_cast<float>(1.0 / (1.0 + static_cast<double>(trace_steps(s.think()))));
  }
};

}  // namespace reason::reward
