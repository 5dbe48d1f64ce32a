// Advantages: group statistics of GRPO, Dr. GRPO, RLOO and REINFORCE++, DAPO's uniform groups,
// and GAE against hand-computed values.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "reason/core/philox.hpp"
#include "reason/rl/advantages.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

std::vector<double> random_rewards(std::size_t n, std::uint64_t stream) {
  Philox rng(test::test_seed(), stream);
  std::vector<double> r(n);
  test::fill_uniform(std::span<double>(r), rng, -1.0, 2.0);
  return r;
}

double mean(std::span<const double> v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double pop_std(std::span<const double> v) {
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

}  // namespace

TEST_CASE("GRPO advantages have zero mean and unit std in every group") {
  const index_t G = 5;
  const std::vector<double> r = random_rewards(4 * G, 1);
  std::vector<double> a(r.size());
  rl::grpo_advantages<rl::GroupScale::std>(std::span<const double>(r), G, std::span<double>(a), 0.0);
  for (std::size_t g = 0; g < 4; ++g) {
    const auto grp = std::span<const double>(a).subspan(g * G, G);
    CHECK(std::abs(mean(grp)) < 1e-14);
    CHECK(pop_std(grp) == doctest::Approx(1.0).epsilon(1e-13));
    // order within the group is kept: the best reward gets the largest advantage
    for (std::size_t i = 0; i < static_cast<std::size_t>(G); ++i)
      for (std::size_t j = 0; j < static_cast<std::size_t>(G); ++j)
        if (r[g * G + i] > r[g * G + j]) CHECK(a[g * G + i] > a[g * G + j]);
  }
  // with eps the scale is std / (std + eps), and a group of equal rewards gives exactly 0
  std::vector<double> r2 = {1, 1, 1, 0, 1, 2};
  std::vector<double> a2(6);
  rl::grpo_advantages(std::span<const double>(r2), 3, std::span<double>(a2), 0.1);
  CHECK(a2[0] == 0.0);
  CHECK(a2[1] == 0.0);
  CHECK(a2[2] == 0.0);
  const double sd = std::sqrt(2.0 / 3.0);
  CHECK(a2[3] == doctest::Approx(-1.0 / (sd + 0.1)).epsilon(1e-14));
  CHECK(a2[5] == doctest::Approx(1.0 / (sd + 0.1)).epsilon(1e-14));
  // eps = 0 on an equal group: 0, not NaN
  rl::grpo_advantages(std::span<const double>(r2), 3, std::span<double>(a2), 0.0);
  CHECK(a2[0] == 0.0);
}

TEST_CASE("Dr. GRPO advantages are the centred rewards, without the std division") {
  const index_t G = 4;
  const std::vector<double> r = random_rewards(3 * G, 2);
  std::vector<double> a(r.size()), a_std(r.size());
  rl::grpo_advantages<rl::GroupScale::none>(std::span<const double>(r), G, std::span<double>(a));
  rl::grpo_advantages<rl::GroupScale::std>(std::span<const double>(r), G, std::span<double>(a_std), 0.0);
  for (std::size_t g = 0; g < 3; ++g) {
    const auto grp = std::span<const double>(r).subspan(g * G, G);
    const double m = mean(grp), sd = pop_std(grp);
    CHECK(std::abs(mean(std::span<const double>(a).subspan(g * G, G))) < 1e-14);
    for (std::size_t i = 0; i < static_cast<std::size_t>(G); ++i) {
      CHECK(a[g * G + i] == doctest::Approx(r[g * G + i] - m).epsilon(1e-14));
      CHECK(a_std[g * G + i] == doctest::Approx(a[g * G + i] / sd).epsilon(1e-12));
    }
  }
}

TEST_CASE("RLOO advantages subtract the mean of the other samples") {
  const std::vector<double> r = {1, 0, 0, 1, 3, 3, 0, 2};
  std::vector<double> a(r.size());
  rl::rloo_advantages(std::span<const double>(r), 4, std::span<double>(a));
  CHECK(a[0] == doctest::Approx(1.0 - 1.0 / 3.0));
  CHECK(a[1] == doctest::Approx(0.0 - 2.0 / 3.0));
  CHECK(a[3] == doctest::Approx(1.0 - 1.0 / 3.0));
  CHECK(a[6] == doctest::Approx(0.0 - 8.0 / 3.0));
  CHECK(a[7] == doctest::Approx(2.0 - 2.0));
  // zero mean per group, and G / (G - 1) times Dr. GRPO's
  const std::vector<double> rr = random_rewards(12, 3);
  std::vector<double> loo(12), dr(12);
  rl::rloo_advantages(std::span<const double>(rr), 6, std::span<double>(loo));
  rl::grpo_advantages<rl::GroupScale::none>(std::span<const double>(rr), 6, std::span<double>(dr));
  for (std::size_t g = 0; g < 2; ++g) CHECK(std::abs(mean(std::span<const double>(loo).subspan(g * 6, 6))) < 1e-14);
  for (std::size_t i = 0; i < 12; ++i) CHECK(loo[i] == doctest::Approx(dr[i] * 6.0 / 5.0).epsilon(1e-13));
  CHECK_THROWS_WITH_AS(rl::rloo_advantages(std::span<const double>(rr), 1, std::span<double>(loo)),
                       doctest::Contains("leave-one-out"), Error);
}

TEST_CASE("REINFORCE++ advantages are normalised over the whole batch") {
  const index_t G = 4;
  std::vector<double> r = random_rewards(5 * G, 4);
  for (std::size_t i = 0; i < 4; ++i) r[i] += 3.0;  // one easy prompt: group means differ
  std::vector<double> a(r.size()), ab(r.size());
  rl::reinforce_pp_advantages<rl::BatchBaseline::none>(std::span<const double>(r), G, std::span<double>(a), 0.0);
  CHECK(std::abs(mean(a)) < 1e-14);
  CHECK(pop_std(a) == doctest::Approx(1.0).epsilon(1e-13));
  // not per group: the easy prompt's group has a positive mean
  CHECK(mean(std::span<const double>(a).subspan(0, 4)) > 0.5);
  rl::reinforce_pp_advantages<rl::BatchBaseline::group_mean>(std::span<const double>(r), G, std::span<double>(ab), 0.0);
  CHECK(std::abs(mean(ab)) < 1e-14);
  CHECK(pop_std(ab) == doctest::Approx(1.0).epsilon(1e-13));
  for (std::size_t g = 0; g < 5; ++g) CHECK(std::abs(mean(std::span<const double>(ab).subspan(g * G, G))) < 1e-13);
}

TEST_CASE("DAPO dynamic sampling names the groups whose rewards are all equal") {
  const std::vector<float> r = {1, 1, 1, 0, 1, 0, 0, 0, 0, 0.5f, 0.5f, 0.5f};
  const auto drop = rl::uniform_groups(std::span<const float>(r), 3);
  REQUIRE(drop.size() == 3);
  CHECK(drop[0] == 0);
  CHECK(drop[1] == 2);
  CHECK(drop[2] == 3);
  const std::vector<float> near = {1.0f, 1.0f + 1e-6f};
  CHECK(rl::uniform_groups(std::span<const float>(near), 2).empty());
  CHECK(rl::uniform_groups(std::span<const float>(near), 2, 1e-5).size() == 1);
  CHECK_THROWS_AS(rl::uniform_groups(std::span<const float>(r), 5), Error);
}

TEST_CASE("GAE equals a hand-computed example, over masked positions only") {
  // Row 0: completion at t = 1, 2, 3; row 1: positions 0 and 2 with a gap at 1 (taken as consecutive).
  const index_t B = 2, L = 5;
  const std::vector<double> rewards = {9, 0, 0, 1, 9,   //
                                       0.5, 9, -1, 9, 9};
  const std::vector<double> values = {9, 0.5, 0.6, 0.7, 9,  //
                                      0.2, 9, 0.3, 9, 9};
  const std::vector<std::uint8_t> mask = {0, 1, 1, 1, 0,  //
                                          1, 0, 1, 0, 0};
  std::vector<double> adv(10, -7.0), ret(10, -7.0);
  const double gamma = 0.9, lambda = 0.8;
  rl::gae<double>(make_view(rewards.data(), B, L), make_view(values.data(), B, L), make_view(mask.data(), B, L), gamma,
                  lambda, make_view(adv.data(), B, L), make_view(ret.data(), B, L));
  // row 0, by hand: delta_3 = 1 - 0.7 = 0.3; delta_2 = 0.9 * 0.7 - 0.6 = 0.03; delta_1 = 0.9 * 0.6 - 0.5 = 0.04
  CHECK(adv[3] == doctest::Approx(0.3).epsilon(1e-14));
  CHECK(adv[2] == doctest::Approx(0.03 + 0.72 * 0.3).epsilon(1e-14));            // 0.246
  CHECK(adv[1] == doctest::Approx(0.04 + 0.72 * 0.246).epsilon(1e-14));          // 0.21712
  CHECK(ret[3] == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(ret[2] == doctest::Approx(0.846).epsilon(1e-14));
  CHECK(ret[1] == doctest::Approx(0.71712).epsilon(1e-14));
  CHECK(adv[0] == 0.0);
  CHECK(ret[4] == 0.0);
  // row 1: delta_2 = -1 - 0.3 = -1.3; delta_0 = 0.5 + 0.9 * 0.3 - 0.2 = 0.57; A_0 = 0.57 + 0.72 * (-1.3)
  CHECK(adv[7] == doctest::Approx(-1.3).epsilon(1e-14));
  CHECK(adv[5] == doctest::Approx(0.57 - 0.936).epsilon(1e-13));
  CHECK(ret[5] == doctest::Approx(0.57 - 0.936 + 0.2).epsilon(1e-13));
  CHECK(adv[6] == 0.0);

  // gamma = lambda = 1: the advantage is the Monte Carlo return minus the value
  rl::gae<double>(make_view(rewards.data(), B, L), make_view(values.data(), B, L), make_view(mask.data(), B, L), 1.0,
                  1.0, make_view(adv.data(), B, L), make_view(ret.data(), B, L));
  CHECK(ret[1] == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(adv[1] == doctest::Approx(1.0 - 0.5).epsilon(1e-14));
  CHECK(ret[5] == doctest::Approx(-0.5).epsilon(1e-14));
  // lambda = 0: one-step TD errors
  rl::gae<double>(make_view(rewards.data(), B, L), make_view(values.data(), B, L), make_view(mask.data(), B, L), 0.9,
                  0.0, make_view(adv.data(), B, L), make_view(ret.data(), B, L));
  CHECK(adv[1] == doctest::Approx(0.04).epsilon(1e-13));
  CHECK(adv[2] == doctest::Approx(0.03).epsilon(1e-13));
  CHECK_THROWS_AS(rl::gae<double>(make_view(rewards.data(), B, L), make_view(values.data(), B, L),
                                  make_view(mask.data(), B, L), 1.5, 0.9, make_view(adv.data(), B, L),
                                  make_view(ret.data(), B, L)),
                  Error);
}
