// reason/data/held_out.hpp — held-out evaluation sets kept disjoint from training data.
//
// Design rule: an evaluation number means something only if the model never trained on the
// evaluated questions. The held-out set is a set of question *texts*; the training sampler
// redraws whenever it draws one of them, so disjointness holds by construction whatever the
// seeds. Small levels (level 1 has 20,000 questions) could be exhausted by a large held-out set,
// making the sampler spin: make_held_out refuses more than `max_fraction` of a level's problem
// space, and the sampler gives up with a clear error after `max_tries` draws instead of looping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/arithmetic.hpp"

namespace reason::data {

struct HeldOut {
  std::vector<Problem> problems;  // level 1 first, then 2, 3, 4
  std::unordered_set<std::string> questions;

  [[nodiscard]] bool contains(std::string_view question) const { return questions.count(std::string(question)) != 0; }
  [[nodiscard]] std::size_t size() const { return problems.size(); }

  /// A held-out set from given problems (e.g. read back from JSONL); duplicates are an error.
  [[nodiscard]] static HeldOut from_problems(std::vector<Problem> ps) {
    HeldOut h;
    for (const Problem& p : ps)
      REASON_CHECK(h.questions.insert(p.question).second, "HeldOut: duplicate question \"", p.question, "\"");
    h.problems = std::move(ps);
    return h;
  }
};

/// `per_level_count` distinct problems of each level 1..4, drawn from Philox(seed, stream = level).
/// Throws if that is more than `max_fraction` of a level's problem space.
[[nodiscard]] inline HeldOut make_held_out(std::uint64_t seed, int per_level_count, double max_fraction = 0.1) {
  REASON_CHECK(per_level_count >= 0, "make_held_out: per_level_count ", per_level_count, " is negative");
  REASON_CHECK(max_fraction > 0 && max_fraction <= 0.5, "make_held_out: max_fraction ", max_fraction,
               " out of range (0, 0.5]");
  HeldOut h;
  for (int level = min_level; level <= max_level; ++level) {
    const auto cap = static_cast<std::int64_t>(max_fraction * static_cast<double>(problem_space(level)));
    REASON_CHECK(per_level_count <= cap, "make_held_out: ", per_level_count, " held-out problems of level ", level,
                 " exceed ", max_fraction, " of its ", problem_space(level),
                 " questions (at most ", cap, "); training would run short of fresh problems");
    Philox rng(seed, static_cast<std::uint64_t>(level));
    const std::int64_t max_draws = 20 * std::int64_t{per_level_count} + 1000;
    int made = 0;
    for (std::int64_t draw = 0; made < per_level_count; ++draw) {
      REASON_CHECK(draw < max_draws, "make_held_out: only ", made, " distinct level-", level, " problems in ",
                   max_draws, " draws, wanted ", per_level_count);
      Problem p = generate(level, rng);
      if (h.questions.insert(p.question).second) {
        h.problems.push_back(std::move(p));
        ++made;
      }
    }
  }
  return h;
}

/// Draws training problems that are never in the held-out set. Holds a pointer: the HeldOut
/// must outlive the sampler.
class TrainingSampler {
 public:
  explicit TrainingSampler(const HeldOut& held_out, int max_tries = 1000) : held_(&held_out), max_tries_(max_tries) {
    REASON_CHECK(max_tries > 0, "TrainingSampler: max_tries ", max_tries, " must be positive");
  }
  TrainingSampler(HeldOut&&, int = 1000) = delete;  // would dangle: keep the HeldOut alive

  [[nodiscard]] Problem sample(int level, Philox& rng) const {
    for (int t = 0; t < max_tries_; ++t) {
      Problem p = generate(level, rng);
      if (!held_->contains(p.question)) return p;
    }
    fail("TrainingSampler: no level-", level, " problem outside the held-out set (", held_->size(),
         " questions) in ", max_tries_, " draws; the held-out set covers too much of this level");
  }

 private:
  const HeldOut* held_;
  int max_tries_;
};

}  // namespace reason::data
