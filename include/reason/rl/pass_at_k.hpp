// reason/rl/pass_at_k.hpp — the unbiased pass@k estimator.
//
// pass@k is the probability that at least one of k samples of a problem is correct. Drawing
// exactly k samples per problem estimates it with high variance; Chen et al. 2021, "Evaluating
// Large Language Models Trained on Code" (Codex, §2.1, eq. 1 and Figure 3) draw n >= k samples,
// count the c correct ones, and use the unbiased estimator
//   pass@k = E_problems [ 1 - C(n - c, k) / C(n, k) ]
// (the chance that a random k-subset of the n samples contains no correct one, complemented).
// The binomials overflow long before n reaches the hundreds, so — as the paper's numpy code
// does — the ratio is formed as a product of factors in (0, 1]:
//   C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i),      and 1 when n - c < k
// which never overflows, never loses the result to cancellation between huge numbers, and costs
// c multiplications. DeepSeek-R1 (DeepSeek-AI 2025, §3) reports pass@1 estimated from n samples
// per question at temperature 0.6; with k = 1 the estimator is c / n exactly.
//
// Design rule: a pure function of counts, in double, strict about its domain — k > n (the
// estimator is undefined: a k-subset of n samples does not exist), c > n, k < 1 or a negative
// count is an Error naming the values, never a silently clamped number.
#pragma once

#include <cstdint>
#include <span>

#include "reason/core/error.hpp"

namespace reason::rl {

/// Unbiased pass@k of one problem with n samples of which c are correct (1 <= k <= n, 0 <= c <= n).
[[nodiscard]] inline double pass_at_k(std::int64_t n, std::int64_t c, std::int64_t k) {
  REASON_CHECK(n >= 1, "pass_at_k: n = ", n, " samples; expected >= 1");
  REASON_CHECK(k >= 1 && k <= n, "pass_at_k: k = ", k, " with n = ", n, " samples; expected 1 <= k <= n");
  REASON_CHECK(c >= 0 && c <= n, "pass_at_k: c = ", c, " correct of n = ", n, " samples; expected 0 <= c <= n");
  if (n - c < k) return 1.0;  // every k-subset holds a correct sample
  double none = 1.0;          // C(n - c, k) / C(n, k)
  for (std::int64_t i = n - c + 1; i <= n; ++i) none *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - none;
}

/// One problem's sample counts.
struct PassCount {
  std::int64_t n = 0;  // samples drawn
  std::int64_t c = 0;  // of which correct
};

/// pass@k averaged over problems (each with its own n >= k); 0 for no problems.
[[nodiscard]] inline double mean_pass_at_k(std::span<const PassCount> problems, std::int64_t k) {
  double sum = 0;
  for (const PassCount& p : problems) sum += pass_at_k(p.n, p.c, k);
  return problems.empty() ? 0.0 : sum / static_cast<double>(problems.size());
}

/// pass@k over groups of G scores (group i = scores[i G, (i + 1) G)), a sample counting as
/// correct when its score is >= threshold: the estimate from a GRPO rollout's rewards.
template <class T>
[[nodiscard]] double pass_at_k_of_groups(std::span<const T> scores, std::int64_t group_size, std::int64_t k,
                                         double threshold) {
  REASON_CHECK(group_size >= 1 && scores.size() % static_cast<std::size_t>(group_size) == 0, "pass_at_k_of_groups: ",
               scores.size(), " scores do not split into groups of ", group_size);
  const auto g = static_cast<std::size_t>(group_size);
  double sum = 0;
  for (std::size_t g0 = 0; g0 < scores.size(); g0 += g) {
    std::int64_t c = 0;
    for (std::size_t i = 0; i < g; ++i) c += static_cast<double>(scores[g0 + i]) >= threshold;
    sum += pass_at_k(group_size, c, k);
  }
  return scores.empty() ? 0.0 : sum / static_cast<double>(scores.size() / g);
}

}  // namespace reason::rl
