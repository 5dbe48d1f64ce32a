// reason/reward/concept.hpp — what a reward policy provides.
//
// DeepSeek-R1 (DeepSeek-AI 2025, §2.2.2) trains with rule-based rewards only — an accuracy rule
// and a format rule — because a learned reward model invites reward hacking at scale. In reason a
// reward is a policy type, like an attention or optimizer policy, and rewards compose at compile
// time (reward::Weighted). Design rule: a reward is a *pure function of one completion and its
// sample*; it never throws, crashes or hangs on anything a model can emit (a policy under RL
// searches for exactly the inputs a rule forgot), scans in linear time, and returns a finite score
// in its documented range. A learned reward model (rl/) satisfies the same concept.
//
// The completion is the text the model generated *after* the prompt, which ends with <think>
// (data::prompt_tokens), so it normally reads  trace</think><answer>N</answer><eos>. A leading
// <think> is optional, as in data::parse_completion.
//
// A reward R provides
//   static constexpr const char* name;                                         // for logs
//   float score(std::string_view completion, const data::Problem& sample) const;
// and, for the rewards in this folder, its range as  static constexpr float min_score, max_score
// (BoundedReward). The batch form is written once for every reward: reward::score_batch.
#pragma once

#include <concepts>
#include <string_view>

#include "reason/data/arithmetic.hpp"

namespace reason::reward {

template <class R>
concept Reward = requires(const R r, std::string_view completion, const data::Problem& sample) {
  { R::name } -> std::convertible_to<const char*>;
  { r.score(completion, sample) } -> std::same_as<float>;
};

/// A reward that states its range: every score lies in [min_score, max_score].
template <class R>
concept BoundedReward = Reward<R> && requires {
  { R::min_score } -> std::convertible_to<float>;
  { R::max_score } -> std::convertible_to<float>;
  requires R::min_score <= R::max_score;
};

}  // namespace reason::reward
