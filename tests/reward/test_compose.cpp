// The Reward concept, Weighted's compile-time weights, the batch form and the Overlong ramp.
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <vector>

#include "reason/reward/all.hpp"

using namespace reason;

namespace {

/// A stateful reward: its score is a member, so Weighted must hold components by value.
struct Constant {
  static constexpr const char* name = "constant";
  float value = 0;
  [[nodiscard]] float score(std::string_view, const data::Problem&) const { return value; }
};
struct NoName {
  [[nodiscard]] float score(std::string_view, const data::Problem&) const { return 0; }
};
struct WrongSignature {
  static constexpr const char* name = "wrong";
  [[nodiscard]] double score(std::string_view) const { return 0; }
};

using Long = reward::Overlong<reward::OverlongConfig{.max_length = 100, .cache = 20}>;

const data::Problem sample{"12+7*3-5=?", "28", "7*3=21,12+21=33,33-5=28", 3};

}  // namespace

TEST_CASE("Reward concept: the rewards satisfy it and other types do not") {
  static_assert(reward::Reward<reward::Accuracy> && reward::Reward<reward::Format> &&
                reward::Reward<reward::PartialFormat> && reward::Reward<reward::Efficiency> && reward::Reward<Long>);
  static_assert(reward::BoundedReward<reward::Accuracy> && reward::BoundedReward<Long>);
  static_assert(reward::Reward<Constant> && !reward::BoundedReward<Constant>);
  CHECK_FALSE(reward::Reward<int>);
  CHECK_FALSE(reward::Reward<NoName>);
  CHECK_FALSE(reward::Reward<WrongSignature>);
  CHECK(std::string(reward::Accuracy::name) == "accuracy");
  CHECK(std::string(reward::PartialFormat::name) == "format_partial");
}

TEST_CASE("Weights: written as a braced list and counted") {
  constexpr reward::Weights w{0.7f, 0.3f};
  static_assert(w.count == 2);
  CHECK(w[0] == 0.7f);
  CHECK(w[1] == 0.3f);
  CHECK(w[2] == 0.0f);
  constexpr reward::Weights mixed{1, 0.5, 2.0f};
  CHECK(mixed.count == 3);
  CHECK(mixed[1] == 0.5f);
  CHECK(reward::Weights{}.count == 0);
}

TEST_CASE("Weighted equals the hand-computed weighted sum") {
  using R = reward::Weighted<reward::Weights{0.7f, 0.3f}, reward::Accuracy, reward::Format>;
  static_assert(reward::BoundedReward<R>);
  const R r;
  // accuracy, format
  CHECK(r.score("x</think><answer>28</answer><eos>", sample) == doctest::Approx(1.0).epsilon(1e-6));  // 1, 1
  CHECK(r.score("x</think><answer>27</answer><eos>", sample) == doctest::Approx(0.3).epsilon(1e-6));  // 0, 1
  CHECK(r.score("x</think><answer>28</answer>junk", sample) == 0.0f);                                // 0, 0
  CHECK(R::min_score == 0.0f);
  CHECK(R::max_score == doctest::Approx(1.0).epsilon(1e-6));

  using S = reward::Weighted<reward::Weights{1.0f, 0.5f, 2.0f, -0.25f}, reward::Accuracy, reward::PartialFormat, Long,
                             reward::Efficiency>;
  const S s;
  // "x</think><answer>28</answer>junk": accuracy 0, partial 0.75, 10 tokens: overlong 0, efficiency 0
  CHECK(s.score("x</think><answer>28</answer>junk", sample) == doctest::Approx(0.5 * 0.75).epsilon(1e-6));
  // 90 x's + 5 tokens = 95 tokens: overlong (80 - 95) / 20 = -0.75; accuracy 1, format 1, efficiency 1/2
  const std::string long_one = std::string(90, 'x') + "</think><answer>28</answer>";
  CHECK(s.score(long_one, sample) == doctest::Approx(1.0 + 0.5 + 2.0 * -0.75 - 0.25 * 0.5).epsilon(1e-6));
  CHECK(S::min_score == doctest::Approx(2.0 * -1.0 - 0.25 * 1.0));
  CHECK(S::max_score == doctest::Approx(1.0 + 0.5));

  // Components are held by value: a stateful reward keeps its state.
  using C = reward::Weighted<reward::Weights{2.0f, -1.0f}, Constant, Constant>;
  const C c{{Constant{0.25f}, Constant{3.0f}}};
  CHECK(c.score("", sample) == doctest::Approx(2.0 * 0.25 - 3.0));
  static_assert(C::min_score == -std::numeric_limits<float>::infinity());  // Constant states no range
}

TEST_CASE("score_batch scores each completion against its own sample") {
  const std::vector<std::string> completions = {"x</think><answer>28</answer>", "x</think><answer>5</answer>",
                                                "</answer>", "x</think><answer>5</answer>"};
  const std::vector<data::Problem> samples = {sample, {"2+3=?", "5", "", 1}, sample, sample};
  std::array<float, 4> out{-7, -7, -7, -7};
  reward::score_batch(reward::Accuracy{}, completions, samples, out);
  CHECK(out == std::array<float, 4>{1, 1, 0, 0});
  using R = reward::Weighted<reward::Weights{0.5f, 0.5f}, reward::Accuracy, reward::Format>;
  reward::score_batch(R{}, completions, samples, out);
  CHECK(out == std::array<float, 4>{1, 1, 0, 0.5f});
}

TEST_CASE("score_batch refuses spans of different sizes and names them") {
  const std::vector<std::string> completions = {"a", "b", "c"};
  const std::vector<data::Problem> samples(2);
  std::vector<float> out(3, -7.0f);
  CHECK_THROWS_WITH_AS(reward::score_batch(reward::Format{}, completions, samples, out),
                       "reward::score_batch (format): completions has 3 items but samples has 2", Error);
  const std::vector<data::Problem> three(3);
  std::vector<float> short_out(2, -7.0f);
  CHECK_THROWS_WITH_AS(reward::score_batch(reward::Accuracy{}, completions, three, short_out),
                       "reward::score_batch (accuracy): out has 2 slots but completions has 3 items", Error);
  CHECK(out == std::vector<float>(3, -7.0f));  // nothing written before the check
  CHECK(short_out == std::vector<float>(2, -7.0f));
}

TEST_CASE("Overlong follows DAPO's eq. 13 at every length around the ramp") {
  // L = 100, C = 20: 0 up to 80, (80 - len) / 20 on 81..100, -1 beyond.
  for (std::int64_t len = 0; len <= 130; ++len) {
    CAPTURE(len);
    const double expect = len <= 80 ? 0.0 : len <= 100 ? (80.0 - double(len)) / 20.0 : -1.0;
    CHECK(Long::punishment(len) == doctest::Approx(expect).epsilon(1e-7));
    CHECK(Long{}.score(std::string(std::size_t(len), 'y'), sample) == Long::punishment(len));
  }
  CHECK(Long::punishment(81) == doctest::Approx(-0.05));
  CHECK(Long::punishment(100) == -1.0f);
  // Special tags are one token each; trailing <pad>s are not counted, inner ones are.
  CHECK(Long::length("<think></think><answer></answer><eos>") == 5);
  CHECK(Long::length("ab<pad><pad>") == 2);
  CHECK(Long::length("a<pad>b<pad>") == 3);
  CHECK(Long::length("<pad") == 4);
  // C == L: the ramp starts at 0.
  using Full = reward::Overlong<reward::OverlongConfig{.max_length = 4, .cache = 4}>;
  CHECK(Full::punishment(0) == 0.0f);
  CHECK(Full::punishment(1) == -0.25f);
  CHECK(Full::punishment(5) == -1.0f);
}
