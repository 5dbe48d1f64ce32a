// reason/rl/advantages.hpp — advantages from rewards: group-relative (GRPO, Dr. GRPO, RLOO),
// batch-normalised (REINFORCE++), DAPO's dynamic-sampling filter, and GAE for PPO.
//
// Design rule: an advantage says how much better a sample did than a baseline, and the choice
// of baseline and scale *is* the algorithm, so it is a compile-time switch (GroupScale,
// BatchBaseline); the only run-time numbers are coefficients (eps, gamma, lambda). Rewards of
// one prompt's G completions sit next to each other: group g is rewards[g G, (g + 1) G).
// Statistics are summed in double in a fixed order, so the result does not depend on threads.
//
// Outcome supervision, one scalar reward r_i per completion, G completions per prompt:
//   GRPO      A_i = (r_i - mean(r)) / (std(r) + eps)        Shao et al. 2024, DeepSeekMath §4.1.2
//             (std is the population std over the group; a group of equal rewards gives A = 0)
//   Dr. GRPO  A_i =  r_i - mean(r)                          Liu et al. 2025, "Understanding R1-Zero-
//             Like Training" §3.1: dividing by std up-weights too easy / too hard prompts
//   RLOO      A_i =  r_i - 1/(G-1) sum_{j != i} r_j         Ahmadian et al. 2024, "Back to Basics" (= G/(G-1) Dr. GRPO)
//   REINFORCE++  A_i = (r_i - b_i - mean_batch) / (std_batch + eps), b_i = 0 or the group mean
//             Hu 2025, "REINFORCE++" §3 (global advantage normalisation over the whole batch)
//   DAPO dynamic sampling: a group whose rewards are all equal has A = 0 for every member and
//             only dilutes the batch; uniform_groups() names them to drop (Yu et al. 2025, DAPO §3.2).
//
// Per-token rewards and values, PPO (Schulman et al. 2016, GAE, eq. 16 and §6.1):
//   delta_t = r_t + gamma V_{t+1} - V_t,   A_t = sum_l (gamma lambda)^l delta_{t+l},   R_t = A_t + V_t
// over the masked (completion) positions of each row in order; the value after the last masked
// position is 0 (the episode ends there).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"

namespace reason::rl {

/// How GRPO scales a group's centred rewards.
enum class GroupScale {
  std,   // GRPO: divide by the group's std + eps
  none,  // Dr. GRPO: leave unnormalised
};

/// REINFORCE++'s baseline before the batch normalisation.
enum class BatchBaseline {
  none,        // REINFORCE++: normalise the rewards over the batch
  group_mean,  // REINFORCE++-baseline: subtract the group mean first
};

namespace detail {

inline void check_groups(const char* fn, std::size_t n, std::size_t out, index_t group_size) {
  REASON_CHECK(group_size >= 1 && n % static_cast<std::size_t>(group_size) == 0, fn, ": ", n,
               " rewards do not split into groups of ", group_size);
  REASON_CHECK(out == n, fn, ": out has ", out, " entries, expected ", n, " (one per reward)");
}

template <class T>
double mean_of(std::span<const T> v) {
  double s = 0;
  for (T x : v) s += static_cast<double>(x);
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

/// Population standard deviation around `mean`.
template <class T>
double std_of(std::span<const T> v, double mean) {
  double s = 0;
  for (T x : v) s += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean);
  return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
}

}  // namespace detail

/// GRPO (Scale = std) or Dr. GRPO (Scale = none) advantages of rewards [n G] in groups of G.
template <GroupScale Scale = GroupScale::std, class T>
void grpo_advantages(std::span<const T> rewards, index_t group_size, std::span<std::type_identity_t<T>> out,
                     double eps = 1e-6) {
  detail::check_groups("grpo_advantages", rewards.size(), out.size(), group_size);
  REASON_CHECK(eps >= 0, "grpo_advantages: eps = ", eps, ", expected >= 0");
  const auto g = static_cast<std::size_t>(group_size);
  for (std::size_t g0 = 0; g0 < rewards.size(); g0 += g) {
    const auto group = rewards.subspan(g0, g);
    const double mean = detail::mean_of(group);
    double scale = 1;
    if constexpr (Scale == GroupScale::std) {
      const double sd = detail::std_of(group, mean);
      scale = sd + eps > 0 ? 1.0 / (sd + eps) : 0.0;  // equal rewards: centred values are 0 anyway
    }
    for (std::size_t i = 0; i < g; ++i) out[g0 + i] = static_cast<T>((static_cast<double>(group[i]) - mean) * scale);
  }
}

/// RLOO advantages: each reward minus the mean of the other G - 1 in its group (G >= 2).
template <class T>
void rloo_advantages(std::span<const T> rewards, index_t group_size, std::span<std::type_identity_t<T>> out) {
  detail::check_groups("rloo_advantages", rewards.size(), out.size(), group_size);
  REASON_CHECK(group_size >= 2, "rloo_advantages: group_size = ", group_size, "; leave-one-out needs >= 2 samples");
  const auto g = static_cast<std::size_t>(group_size);
  for (std::size_t g0 = 0; g0 < rewards.size(); g0 += g) {
    double sum = 0;
    for (std::size_t i = 0; i < g; ++i) sum += static_cast<double>(rewards[g0 + i]);
    for (std::size_t i = 0; i < g; ++i) {
      const double r = static_cast<double>(rewards[g0 + i]);
      out[g0 + i] = static_cast<T>(r - (sum - r) / static_cast<double>(g - 1));
    }
  }
}

/// REINFORCE++ advantages: (optionally group-centred) rewards normalised over the whole batch.
template <BatchBaseline Baseline = BatchBaseline::none, class T>
void reinforce_pp_advantages(std::span<const T> rewards, index_t group_size, std::span<std::type_identity_t<T>> out,
                             double eps = 1e-6) {
  detail::check_groups("reinforce_pp_advantages", rewards.size(), out.size(), group_size);
  REASON_CHECK(eps >= 0, "reinforce_pp_advantages: eps = ", eps, ", expected >= 0");
  std::vector<double> a(rewards.begin(), rewards.end());
  if constexpr (Baseline == BatchBaseline::group_mean) {
    const auto g = static_cast<std::size_t>(group_size);
    for (std::size_t g0 = 0; g0 < a.size(); g0 += g) {
      const double mean = detail::mean_of(std::span<const double>(a).subspan(g0, g));
      for (std::size_t i = 0; i < g; ++i) a[g0 + i] -= mean;
    }
  }
  const double mean = detail::mean_of(std::span<const double>(a));
  const double sd = detail::std_of(std::span<const double>(a), mean);
  const double scale = sd + eps > 0 ? 1.0 / (sd + eps) : 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = static_cast<T>((a[i] - mean) * scale);
}

/// DAPO dynamic sampling: indices of the groups whose rewards are all equal (within `tol`) —
/// every advantage in them is zero, so they carry no gradient and are dropped and resampled.
template <class T>
std::vector<index_t> uniform_groups(std::span<const T> rewards, index_t group_size, double tol = 0) {
  detail::check_groups("uniform_groups", rewards.size(), rewards.size(), group_size);
  std::vector<index_t> out;
  const auto g = static_cast<std::size_t>(group_size);
  for (std::size_t g0 = 0; g0 < rewards.size(); g0 += g) {
    double lo = static_cast<double>(rewards[g0]), hi = lo;
    for (std::size_t i = 1; i < g; ++i) {
      lo = std::min(lo, static_cast<double>(rewards[g0 + i]));
      hi = std::max(hi, static_cast<double>(rewards[g0 + i]));
    }
    if (hi - lo <= tol) out.push_back(static_cast<index_t>(g0 / g));
  }
  return out;
}

/// Generalised advantage estimation over rows of per-token rewards and values [B, T]:
/// at the positions where mask != 0, taken in order within each row, advantages = GAE(gamma,
/// lambda) and returns = advantages + values; elsewhere both are 0.
template <class T>
void gae(View<const std::type_identity_t<T>, 2> rewards, View<const std::type_identity_t<T>, 2> values,
         View<const std::uint8_t, 2> mask, double gamma, double lambda, View<T, 2> advantages, View<T, 2> returns) {
  const index_t B = rewards.size(0), L = rewards.size(1);
  expect_shape(values, "gae: values", {B, L});
  expect_shape(mask, "gae: mask", {B, L});
  expect_shape(advantages, "gae: advantages", {B, L});
  expect_shape(returns, "gae: returns", {B, L});
  REASON_CHECK(gamma >= 0 && gamma <= 1 && lambda >= 0 && lambda <= 1, "gae: gamma = ", gamma, ", lambda = ", lambda,
               "; both must lie in [0, 1]");
  for (index_t b = 0; b < B; ++b) {
    double next_value = 0, next_adv = 0;  // past the last masked position the episode has ended
    for (index_t t = L - 1; t >= 0; --t) {
      if (!mask(b, t)) {
        advantages(b, t) = T(0);
        returns(b, t) = T(0);
        continue;
      }
      const double v = static_cast<double>(values(b, t));
      const double delta = static_cast<double>(rewards(b, t)) + gamma * next_value - v;
      next_adv = delta + gamma * lambda * next_adv;
      next_value = v;
      advantages(b, t) = static_cast<T>(next_adv);
      returns(b, t) = static_cast<T>(next_adv + v);
    }
  }
}

}  // namespace reason::rl
