// reason/reward/score_batch.hpp — the batch form of every reward, written once.
//
// GRPO (Shao et al. 2024, "DeepSeekMath", §4.1) scores a group of G completions per question;
// a rollout batch is many groups. Design rule: each reward writes only its single-item
// `score(completion, sample)`; this one generic function maps it over a batch, so no reward
// re-implements the loop or its size checks. Spans of different lengths are an error that names
// the spans and their sizes — a silent truncation would mis-assign rewards to completions.
#pragma once

#include <span>
#include <string>

#include "reason/core/error.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/reward/concept.hpp"

namespace reason::reward {

/// out[i] = r.score(completions[i], samples[i]) for every i; throws reason::Error when the three
/// spans differ in length (before writing anything).
template <Reward R>
void score_batch(const R& r, std::span<const std::string> completions, std::span<const data::Problem> samples,
                 std::span<float> out) {
  REASON_CHECK(completions.size() == samples.size(), "reward::score_batch (", R::name, "): completions has ",
               completions.size(), " items but samples has ", samples.size());
  REASON_CHECK(out.size() == completions.size(), "reward::score_batch (", R::name, "): out has ", out.size(),
               " slots but completions has ", completions.size(), " items");
  for (std::size_t i = 0; i < completions.size(); ++i) out[i] = r.score(completions[i], samples[i]);
}

}  // namespace reason::reward
