#include <doctest/doctest.h>

#include <array>
#include <string>

#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"

using namespace reason;

TEST_CASE("held-out set: distinct, deterministic, and disjoint from training samples") {
  const data::HeldOut h = data::make_held_out(42, 500);
  REQUIRE(h.size() == 2000);
  CHECK(h.questions.size() == 2000);
  for (int level = 1; level <= 4; ++level) CHECK(h.problems[std::size_t(500 * (level - 1))].difficulty == level);
  CHECK(data::make_held_out(42, 500).problems == h.problems);
  CHECK(data::make_held_out(43, 500).problems != h.problems);

  const data::TrainingSampler sampler(h);
  std::array<int, 5> would_collide{};
  for (int level = 1; level <= 4; ++level) {
    Philox rng(42, std::uint64_t(level));  // the held-out set's own stream: collides at once
    Philox plain(42, std::uint64_t(level));
    for (int i = 0; i < 20000; ++i) {
      const data::Problem p = sampler.sample(level, rng);
      REQUIRE_FALSE(h.contains(p.question));
      REQUIRE(p.difficulty == level);
      would_collide[level] += h.contains(data::generate(level, plain).question);
    }
  }
  CHECK(would_collide[1] > 100);  // the check is exercised: plain generation does hit held-out questions
  CHECK(would_collide[4] > 100);
}

TEST_CASE("held-out set: size caps and a sampler that cannot find fresh problems fails clearly") {
  CHECK_THROWS_WITH_AS((void)data::make_held_out(1, 2001),
                       "make_held_out: 2001 held-out problems of level 1 exceed 0.1 of its 20000 questions (at most "
                       "2000); training would run short of fresh problems",
                       Error);
  CHECK_NOTHROW((void)data::make_held_out(1, 2000));
  CHECK_THROWS_AS((void)data::make_held_out(1, -1), Error);
  // A set holding all of level 1 (built by hand) leaves the sampler nothing: it must stop.
  std::vector<data::Problem> all;
  for (int a = 0; a < 100; ++a)
    for (int b = 0; b < 100; ++b)
      for (char op : {'+', '-'}) all.push_back(data::detail::binary_problem(1, a, op, b));
  const data::HeldOut everything = data::HeldOut::from_problems(std::move(all));
  const data::TrainingSampler sampler(everything, 50);
  Philox rng(3);
  CHECK_THROWS_WITH_AS((void)sampler.sample(1, rng),
                       "TrainingSampler: no level-1 problem outside the held-out set (20000 questions) in 50 draws; the "
                       "held-out set covers too much of this level",
                       Error);
  CHECK_NOTHROW((void)sampler.sample(2, rng));
  CHECK_THROWS_WITH_AS((void)data::HeldOut::from_problems({data::generate(1, rng), data::detail::binary_problem(1, 1, '+', 1),
                                                           data::detail::binary_problem(1, 1, '+', 1)}),
                       "HeldOut: duplicate question \"1+1=?\"", Error);
}

TEST_CASE("curriculum: stage boundaries and level mixtures") {
  const auto c = data::Curriculum::standard(1000);
  REQUIRE(c.stages().size() == 3);
  CHECK(c.stage_begin(0) == 0);
  CHECK(c.stage_end(0) == 300);
  CHECK(c.stage_begin(1) == 300);
  CHECK(c.stage_end(1) == 600);
  CHECK(c.stage_end(2) == 1000);
  CHECK(c.stage_index(0) == 0);
  CHECK(c.stage_index(299) == 0);
  CHECK(c.stage_index(300) == 1);
  CHECK(c.stage_index(599) == 1);
  CHECK(c.stage_index(600) == 2);
  CHECK(c.stage_index(999) == 2);
  CHECK(c.stage_index(5000) == 2);
  CHECK(c.stage(10).name == "single");
  CHECK_THROWS_WITH_AS((void)c.stage_index(-1), "Curriculum: step -1 is negative", Error);

  Philox rng(11);
  for (std::int64_t step : {0, 450, 800}) {
    std::array<int, 5> counts{};
    for (int i = 0; i < 20000; ++i) counts[std::size_t(c.level_for(step, rng))]++;
    CHECK(counts[0] == 0);
    const auto& w = c.stage(step).level_weights;
    for (int l = 1; l <= 4; ++l) CHECK(std::abs(counts[std::size_t(l)] / 20000.0 - w[std::size_t(l - 1)]) < 0.02);
  }
  std::array<int, 5> early{};
  for (int i = 0; i < 1000; ++i) early[std::size_t(c.level_for(100, rng))]++;
  CHECK(early[3] + early[4] == 0);  // single operations only in the first stage

  const auto custom = data::Curriculum::standard(10, 0.5, 0.75);
  CHECK(custom.stage_end(0) == 5);
  CHECK(custom.stage_end(1) == 7);
  Philox a(5), b(5);
  for (int s = 0; s < 10; ++s) CHECK(custom.level_for(s, a) == custom.level_for(s, b));

  CHECK_THROWS_WITH_AS(data::Curriculum(100, {{"a", 0.6, {1, 0, 0, 0}}, {"b", 0.5, {1, 0, 0, 0}}}),
                       "Curriculum: stage 1 'b' ends at fraction 0.5, expected in (0.6, 1]", Error);
  CHECK_THROWS_WITH_AS(data::Curriculum(100, {{"a", 0.6, {1, 0, 0, 0}}}),
                       "Curriculum: the last stage ends at fraction 0.6, expected 1", Error);
  CHECK_THROWS_WITH_AS(data::Curriculum(100, {{"z", 1.0, {0, 0, 0, 0}}}), "Curriculum: stage 'z' has all level weights zero",
                       Error);
  CHECK_THROWS_WITH_AS(data::Curriculum(0, {{"z", 1.0, {1, 0, 0, 0}}}), "Curriculum: total_steps 0 must be positive", Error);
}
