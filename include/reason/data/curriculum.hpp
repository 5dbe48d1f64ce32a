// reason/data/curriculum.hpp — which difficulty level to train on at which step.
//
// Curriculum learning (Bengio, Louradour, Collobert, Weston, ICML 2009): easy examples first,
// then harder ones mixed in, so a small model learns the column steps before it must chain
// them. Design rule: a curriculum is data — stages, each with an end point as a fraction of the
// run and a mixture weight per level — and `level_for(step, rng)` is a pure function of the step
// and the Philox draw, so a resumed run sees the same schedule. Stage i covers steps
// [floor(f_{i-1} S), floor(f_i S)) of a run of S steps; the last stage ends at S and also takes
// any step past the end.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"

namespace reason::data {

struct CurriculumStage {
  std::string name;
  double end_fraction = 1.0;                 // stage ends at this fraction of the run
  std::array<double, 4> level_weights{};      // weight of levels 1..4 (need not sum to 1)
};

class Curriculum {
 public:
  Curriculum(std::int64_t total_steps, std::vector<CurriculumStage> stages)
      : total_(total_steps), stages_(std::move(stages)) {
    REASON_CHECK(total_ > 0, "Curriculum: total_steps ", total_, " must be positive");
    REASON_CHECK(!stages_.empty(), "Curriculum: no stages");
    double prev = 0;
    for (std::size_t i = 0; i < stages_.size(); ++i) {
      const CurriculumStage& s = stages_[i];
      REASON_CHECK(s.end_fraction > prev && s.end_fraction <= 1.0, "Curriculum: stage ", i, " '", s.name,
                   "' ends at fraction ", s.end_fraction, ", expected in (", prev, ", 1]");
      double sum = 0;
      for (int l = 0; l < 4; ++l) {
        REASON_CHECK(s.level_weights[l] >= 0 && std::isfinite(s.level_weights[l]), "Curriculum: stage '", s.name,
                     "' has weight ", s.level_weights[l], " for level ", l + 1, ", expected finite and >= 0");
        sum += s.level_weights[l];
      }
      REASON_CHECK(sum > 0, "Curriculum: stage '", s.name, "' has all level weights zero");
      prev = s.end_fraction;
    }
    REASON_CHECK(prev == 1.0, "Curriculum: the last stage ends at fraction ", prev, ", expected 1");
  }

  /// Three stages: single operations (levels 1-2) until `first`, multi-step (levels 1-3, mostly 3)
  /// until `second`, then all levels mixed.
  [[nodiscard]] static Curriculum standard(std::int64_t total_steps, double first = 0.3, double second = 0.6) {
    return Curriculum(total_steps, {{"single", first, {0.5, 0.5, 0.0, 0.0}},
                                    {"multi-step", second, {0.15, 0.25, 0.6, 0.0}},
                                    {"mixed", 1.0, {0.25, 0.25, 0.25, 0.25}}});
  }

  [[nodiscard]] std::int64_t total_steps() const { return total_; }
  [[nodiscard]] const std::vector<CurriculumStage>& stages() const { return stages_; }

  /// First step of stage i (stage 0 begins at 0).
  [[nodiscard]] std::int64_t stage_begin(std::size_t i) const { return i == 0 ? 0 : stage_end(i - 1); }
  /// One past the last step of stage i.
  [[nodiscard]] std::int64_t stage_end(std::size_t i) const {
    REASON_CHECK(i < stages_.size(), "Curriculum: stage ", i, " of ", stages_.size());
    if (i + 1 == stages_.size()) return total_;
    return static_cast<std::int64_t>(std::floor(stages_[i].end_fraction * static_cast<double>(total_)));
  }

  /// Index of the stage that holds `step` (steps at or past the end belong to the last stage).
  [[nodiscard]] std::size_t stage_index(std::int64_t step) const {
    REASON_CHECK(step >= 0, "Curriculum: step ", step, " is negative");
    for (std::size_t i = 0; i + 1 < stages_.size(); ++i)
      if (step < stage_end(i)) return i;
    return stages_.size() - 1;
  }
  [[nodiscard]] const CurriculumStage& stage(std::int64_t step) const { return stages_[stage_index(step)]; }

  /// A level 1..4 drawn from the stage's mixture (one uniform_double draw from rng).
  [[nodiscard]] int level_for(std::int64_t step, Philox& rng) const {
    const auto& w = stage(step).level_weights;
    const double sum = w[0] + w[1] + w[2] + w[3];
    double u = rng.uniform_double() * sum;
    int last = 1;
    for (int l = 0; l < 4; ++l) {
      if (w[l] <= 0) continue;
      last = l + 1;
      if (u < w[l]) return l + 1;
      u -= w[l];
    }
    return last;  // rounding left u at the top: the last level with weight
  }

 private:
  std::int64_t total_;
  std::vector<CurriculumStage> stages_;
};

}  // namespace reason::data
