// reason/reward/weighted.hpp — a weighted sum of rewards with compile-time weights.
//
// DeepSeek-R1 (DeepSeek-AI 2025, §2.2.2, §2.3.2) adds its rule rewards (accuracy + format, later
// + language consistency); GRPO (Shao et al. 2024) only needs one scalar per completion.
// Design rule: weights are numbers, rewards are types —
//     reward::Weighted<reward::Weights{0.7f, 0.3f}, reward::Accuracy, reward::Format>
// scores 0.7 * accuracy + 0.3 * format, summed in float left to right. `Weights` is a structural
// type (public members only) usable as a non-type template parameter; its constructor counts the
// weights so `Weights{0.7f, 0.3f}` works as written. Wrong combinations fail at one readable
// static_assert: a weight count that differs from the reward count, a component that is not a
// reward policy (the message names its position; the compiler's "required from" line names the
// type), a weight that is not finite. Components are held by value, so a stateful reward (a
// learned reward model) composes too. The range is the weighted sum of the components' ranges
// when every component states one (BoundedReward), else [-inf, inf].
#pragma once

#include <array>
#include <cstddef>
#include <limits>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "reason/data/arithmetic.hpp"
#include "reason/reward/concept.hpp"

namespace reason::reward {

/// Up to eight compile-time weights: `reward::Weights{0.7f, 0.3f}`.
struct Weights {
  static constexpr int capacity = 8;
  std::array<float, capacity> values{};
  int count = 0;

  constexpr Weights() = default;
  template <class... F>
    requires(std::is_arithmetic_v<F> && ...)
  constexpr Weights(F... w) : values{static_cast<float>(w)...}, count(static_cast<int>(sizeof...(F))) {
    static_assert(sizeof...(F) <= capacity, "reward::Weights holds at most 8 weights");
  }
  [[nodiscard]] constexpr float operator[](std::size_t i) const { return values[i]; }
};

namespace detail {

/// Instantiated per component, so a failure names the position here and the type in the
/// compiler's instantiation note.
template <std::size_t Position, class R>
struct WeightedComponent {
  static constexpr bool ok = Reward<R>;
#define REASON_REWARD_COMPONENT_CHECK(k)                                                                 \
  static_assert(ok || Position != k, "reward::Weighted: component " #k                                   \
                                     " (counting from 1) is not a reward policy: it needs `static "      \
                                     "constexpr const char* name` and `float score(std::string_view, " \
                                     "const data::Problem&) const`")
  REASON_REWARD_COMPONENT_CHECK(1);
  REASON_REWARD_COMPONENT_CHECK(2);
  REASON_REWARD_COMPONENT_CHECK(3);
  REASON_REWARD_COMPONENT_CHECK(4);
  REASON_REWARD_COMPONENT_CHECK(5);
  REASON_REWARD_COMPONENT_CHECK(6);
  REASON_REWARD_COMPONENT_CHECK(7);
  REASON_REWARD_COMPONENT_CHECK(8);
  static_assert(ok || Position <= 8, "reward::Weighted: a component is not a reward policy");
#undef REASON_REWARD_COMPONENT_CHECK
};

/// Instantiated with both counts, so the compiler's note shows them.
template <int WeightCount, std::size_t RewardCount>
struct WeightedCounts {
  static constexpr bool ok = WeightCount >= 0 && static_cast<std::size_t>(WeightCount) == RewardCount;
  static_assert(ok, "reward::Weighted<Weights{w...}, R...>: the number of weights differs from the number of "
                    "reward policies (give one weight per reward)");
};

template <Weights W>
constexpr bool finite_weights() {
  for (int i = 0; i < W.count; ++i)
    if (!(W.values[static_cast<std::size_t>(i)] == W.values[static_cast<std::size_t>(i)]) ||
        W.values[static_cast<std::size_t>(i)] > std::numeric_limits<float>::max() ||
        W.values[static_cast<std::size_t>(i)] < -std::numeric_limits<float>::max())
      return false;
  return true;
}

template <class... Rs, std::size_t... I>
constexpr bool check_components(std::index_sequence<I...>) {
  return (WeightedComponent<I + 1, Rs>::ok && ...);
}

/// The largest (Upper) or smallest weighted sum of the components' ranges.
template <bool Upper, Weights W, class... Rs, std::size_t... I>
constexpr float weighted_bound(std::index_sequence<I...>) {
  float total = 0.0f;
  ((total += (W[I] >= 0.0f) == Upper ? W[I] * Rs::max_score : W[I] * Rs::min_score), ...);
  return total;
}

}  // namespace detail

/// sum_i W[i] * Rs_i::score(completion, sample).
template <Weights W, class... Rs>
struct Weighted {
  static_assert(sizeof...(Rs) >= 1, "reward::Weighted: give at least one reward policy");
  static constexpr bool counts_ok = detail::WeightedCounts<W.count, sizeof...(Rs)>::ok;
  static constexpr bool components_ok = detail::check_components<Rs...>(std::index_sequence_for<Rs...>{});
  static_assert(detail::finite_weights<W>(), "reward::Weighted: every weight must be finite");

  static constexpr const char* name = "weighted";
  static constexpr Weights weights = W;
  std::tuple<Rs...> rewards;

  /// Range: the weighted sum of the components' ranges (when each states one).
  static constexpr bool bounded = counts_ok && components_ok && (BoundedReward<Rs> && ...);
  static constexpr float min_score = [] {
    if constexpr (bounded) return detail::weighted_bound<false, W, Rs...>(std::index_sequence_for<Rs...>{});
    else return -std::numeric_limits<float>::infinity();
  }();
  static constexpr float max_score = [] {
    if constexpr (bounded) return detail::weighted_bound<true, W, Rs...>(std::index_sequence_for<Rs...>{});
    else return std::numeric_limits<float>::infinity();
  }();

  [[nodiscard]] float score(std::string_view completion, const data::Problem& sample) const {
    if constexpr (counts_ok && components_ok) {
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        float total = 0.0f;
        ((total += W[I] * std::get<I>(rewards).score(completion, sample)), ...);
        return total;
      }(std::index_sequence_for<Rs...>{});
    } else {
      return 0.0f;  // unreachable: a static_assert above has failed
    }
  }
};

}  // namespace reason::reward
