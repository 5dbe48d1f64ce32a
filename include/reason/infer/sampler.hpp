// reason/infer/sampler.hpp — token samplers as policies: Greedy, Temperature, TopK<k>, TopP.
//
// A sampler turns one row of next-token logits into a token. Four policies:
//   Greedy          argmax (ties to the lowest token id);
//   Temperature     softmax(logits / T) over the whole vocabulary (Ackley, Hinton, Sejnowski 1985);
//   TopK<k>         the k most likely tokens, renormalised (Fan, Lewis, Dauphin 2018);
//   TopP            nucleus sampling: the smallest set of most likely tokens whose mass is >= p
//                   (Holtzman, Buys, Du, Forbes, Choi, "The Curious Case of Neural Text
//                   Degeneration", ICLR 2020).
// k is a compile-time number (the support size a kernel would specialise on, like head_dim);
// temperature and p are run-time members, since schedules and evaluation change them per run.
// Temperature is applied before the top-k / top-p cut (as Hugging Face and vLLM do), and
// temperature 0 means argmax in every policy.
//
// Design rules.
//  * Reproducible: each token costs exactly `draws_per_token` (= 1) 32-bit value of a
//    reason::Philox stream, whatever the policy, the logits or the temperature (Greedy draws and
//    discards it). So token t of a stream is a function of (seed, stream, t) alone, and a rollout
//    engine can give each (prompt, sample) its own Philox(seed, stream). The value u in (0, 1)
//    picks the token by inverting the cumulative distribution of the kept support in a fixed
//    order (most likely first, ties by token id), in double; probabilities are resolved to 2^-32.
//  * Exact support: the kept set is decided on the tempered logits in a total order (logit
//    descending, then token id ascending), so ties at the top-k or top-p boundary keep the lowest
//    ids. Top-p compares the prefix mass (summed in that order, in double) with p * (total mass),
//    so a prefix that reaches p exactly stops there; p = 1 keeps every token. It sorts only as far
//    as the nucleus reaches (partial sorts of the top 64, 256, ... tokens), not the whole vocabulary.
//  * Two log-probabilities per token: under the distribution it was sampled from (tempered and
//    truncated; 0 for argmax) and under the model's untempered full distribution,
//    log_softmax(logits). The second is what RL training recomputes from the same weights
//    (rl/token_logp.hpp), so it is formed exactly like kernels::log_softmax (max in T, sum of
//    exp in double, result rounded to T): on equal logits the two agree to the last bit.
//  * Stable and strict: softmax subtracts the row max; -inf logits have probability 0 and are
//    never drawn; a NaN or +inf logit, or a row that is all -inf, is an Error naming the row.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"

namespace reason::infer {

/// One sampled token and its log-probabilities.
struct TokenDraw {
  std::int32_t token = -1;
  double logp_sampled = 0;  // under the tempered, truncated distribution it was drawn from
  double logp_model = 0;    // under log_softmax(logits): the untempered full distribution
};

/// Reusable buffers for the policies that sort (one per thread).
struct SampleScratch {
  std::vector<std::int32_t> order;  // [V] token ids of the candidate support
  std::vector<double> weight;       // [V] unnormalised tempered probabilities, in `order`
};

namespace detail {

/// Row statistics shared by every policy: max, argmax (lowest id), finite count; validates.
template <class T>
struct RowStats {
  T max = -INFINITY;
  std::int32_t argmax = -1;
  index_t finite = 0;
};

template <class T>
RowStats<T> row_stats(std::span<const T> logits, index_t row) {
  REASON_CHECK(!logits.empty(), "sampler: row ", row, " has no logits (vocabulary size 0)");
  RowStats<T> s;
  for (std::size_t v = 0; v < logits.size(); ++v) {
    const T x = logits[v];
    if (std::isnan(x) || x == T(INFINITY)) [[unlikely]] {
      fail("sampler: row ", row, " has a ", std::isnan(x) ? "NaN" : "+inf", " logit at token ", v,
           " (vocabulary size ", logits.size(), ")");
    }
    if (x > T(-INFINITY)) ++s.finite;
    if (x > s.max) {
      s.max = x;
      s.argmax = static_cast<std::int32_t>(v);
    }
  }
  REASON_CHECK(s.finite > 0, "sampler: every one of the ", logits.size(), " logits of row ", row,
               " is -inf: there is no distribution to sample from");
  return s;
}

/// log_softmax(logits)[token], computed exactly as kernels::log_softmax computes it.
template <class T>
double model_logp(std::span<const T> logits, T max, std::int32_t token) {
  double sum = 0;
  for (T x : logits) sum += std::exp(x - max);
  const double lse = static_cast<double>(max) + std::log(sum);
  return static_cast<double>(static_cast<T>(static_cast<double>(logits[static_cast<std::size_t>(token)]) - lse));
}

/// u in (0, 1) from one 32-bit draw: the midpoints of 2^32 equal cells, never 0 or 1.
inline double unit_open(std::uint32_t bits) { return (static_cast<double>(bits) + 0.5) * 0x1.0p-32; }

inline void check_temperature(float temperature, const char* policy) {
  REASON_CHECK(temperature >= 0.0f && std::isfinite(temperature), policy, ": temperature = ", temperature,
               "; expected a finite value >= 0 (0 means argmax)");
}

/// Total order of the support: higher logit first, ties by lower token id.
template <class T>
auto more_likely(std::span<const T> logits) {
  return [logits](std::int32_t a, std::int32_t b) {
    const T la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
}

/// Draws from ws.order[0, n) with weights ws.weight[0, n) (summed in that order to `total`)
/// by inverting the cumulative distribution at u * total.
inline TokenDraw invert_cdf(const SampleScratch& ws, std::size_t n, double total, double u) {
  const double target = u * total;
  double cum = 0;
  std::size_t pick = n;
  for (std::size_t i = 0; i < n; ++i) {
    if (ws.weight[i] <= 0) continue;
    cum += ws.weight[i];
    pick = i;
    if (cum > target) break;  // else rounding left target at the very top: the last positive one
  }
  TokenDraw d;
  d.token = ws.order[pick];
  d.logp_sampled = std::log(ws.weight[pick]) - std::log(total);
  return d;
}

/// The shared body: validate, draw one value, then argmax (temperature 0) or `sample_support`.
template <class T, class Support>
TokenDraw draw(std::span<const T> logits, Philox& rng, index_t row, float temperature, Support&& sample_support) {
  const RowStats<T> s = row_stats(logits, row);
  const double u = unit_open(rng.next_u32());  // exactly one draw per token, always
  TokenDraw d;
  if (temperature == 0.0f) {
    d.token = s.argmax;
    d.logp_sampled = 0;  // a point mass
  } else {
    d = sample_support(s, u);
  }
  d.logp_model = model_logp(logits, s.max, d.token);
  return d;
}

/// Tempered weights exp((x - max) / T) of ws.order[0, n), written to ws.weight; returns their sum.
template <class T>
double temper(std::span<const T> logits, T max, float temperature, SampleScratch& ws, std::size_t n) {
  ws.weight.resize(std::max(ws.weight.size(), n));
  const double inv_t = 1.0 / static_cast<double>(temperature), mx = static_cast<double>(max);
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double w = std::exp((static_cast<double>(logits[static_cast<std::size_t>(ws.order[i])]) - mx) * inv_t);
    ws.weight[i] = w;
    total += w;
  }
  return total;
}

/// Fills ws.order with the tokens of finite logit; returns how many.
template <class T>
std::size_t finite_tokens(std::span<const T> logits, SampleScratch& ws) {
  ws.order.clear();
  for (std::size_t v = 0; v < logits.size(); ++v)
    if (logits[v] > T(-INFINITY)) ws.order.push_back(static_cast<std::int32_t>(v));
  return ws.order.size();
}

}  // namespace detail

/// Argmax, ties to the lowest token id; consumes one draw like every policy.
struct Greedy {
  static constexpr int draws_per_token = 1;

  template <class T>
  TokenDraw sample(std::span<const T> logits, Philox& rng, SampleScratch& /*ws*/, index_t row = 0) const {
    return detail::draw(logits, rng, row, 0.0f, [](const auto&, double) { return TokenDraw{}; });
  }
};

/// softmax(logits / temperature) over the whole vocabulary; temperature 0 is argmax.
struct Temperature {
  static constexpr int draws_per_token = 1;
  float temperature = 1.0f;

  template <class T>
  TokenDraw sample(std::span<const T> logits, Philox& rng, SampleScratch& ws, index_t row = 0) const {
    detail::check_temperature(temperature, "infer::Temperature");
    return detail::draw(logits, rng, row, temperature, [&](const detail::RowStats<T>& s, double u) {
      const std::size_t n = detail::finite_tokens(logits, ws);  // token-id order: no sort needed
      const double total = detail::temper(logits, s.max, temperature, ws, n);
      return detail::invert_cdf(ws, n, total, u);
    });
  }
};

/// The K most likely tokens (ties at the boundary keep the lowest ids), renormalised, at
/// `temperature`. Fewer than K tokens of finite logit: all of them.
template <int K>
struct TopK {
  static_assert(K >= 1, "infer::TopK<K>: K must be >= 1 (TopK<1> is argmax)");
  static constexpr int k = K;
  static constexpr int draws_per_token = 1;
  float temperature = 1.0f;

  template <class T>
  TokenDraw sample(std::span<const T> logits, Philox& rng, SampleScratch& ws, index_t row = 0) const {
    detail::check_temperature(temperature, "infer::TopK");
    return detail::draw(logits, rng, row, temperature, [&](const detail::RowStats<T>& s, double u) {
      const std::size_t finite = detail::finite_tokens(logits, ws);
      const std::size_t n = std::min(finite, static_cast<std::size_t>(K));
      std::partial_sort(ws.order.begin(), ws.order.begin() + static_cast<std::ptrdiff_t>(n), ws.order.end(),
                        detail::more_likely(logits));
      const double total = detail::temper(logits, s.max, temperature, ws, n);
      return detail::invert_cdf(ws, n, total, u);
    });
  }
};

/// Nucleus sampling: the smallest prefix of the tokens in order of probability (ties by id)
/// whose tempered mass is >= p, renormalised. 0 < p <= 1.
struct TopP {
  static constexpr int draws_per_token = 1;
  float p = 0.9f;
  float temperature = 1.0f;

  template <class T>
  TokenDraw sample(std::span<const T> logits, Philox& rng, SampleScratch& ws, index_t row = 0) const {
    detail::check_temperature(temperature, "infer::TopP");
    REASON_CHECK(p > 0.0f && p <= 1.0f, "infer::TopP: p = ", p, "; expected 0 < p <= 1");
    return detail::draw(logits, rng, row, temperature, [&](const detail::RowStats<T>& s, double u) {
      const std::size_t finite = detail::finite_tokens(logits, ws);
      const double total = detail::temper(logits, s.max, temperature, ws, finite);  // in token-id order
      const double target = static_cast<double>(p) * total;
      // Sort only as far as the nucleus reaches: the top m by partial sort, m growing 4x until
      // the prefix mass reaches p (a peaked distribution's nucleus is a few tokens of 10^5).
      for (std::size_t m = std::min<std::size_t>(finite, 64);; m = std::min(finite, 4 * m)) {
        std::partial_sort(ws.order.begin(), ws.order.begin() + static_cast<std::ptrdiff_t>(m), ws.order.end(),
                          detail::more_likely(logits));
        (void)detail::temper(logits, s.max, temperature, ws, m);  // weights of the sorted prefix
        double mass = 0;
        std::size_t n = 0;
        while (n < m && mass < target) mass += ws.weight[n++];  // smallest prefix with mass >= p * total
        if (mass >= target || m == finite) return detail::invert_cdf(ws, n, mass, u);
      }
    });
  }
};

/// A sampler: `sample(logits row, Philox&, SampleScratch&, row index)` -> TokenDraw for float
/// and double logits, drawing exactly `draws_per_token` 32-bit values per call.
template <class S>
concept Sampler = requires(const S& s, std::span<const float> lf, std::span<const double> ld, Philox& rng,
                           SampleScratch& ws, index_t row) {
  { S::draws_per_token } -> std::convertible_to<int>;
  { s.sample(lf, rng, ws, row) } -> std::same_as<TokenDraw>;
  { s.sample(ld, rng, ws, row) } -> std::same_as<TokenDraw>;
};

static_assert(Sampler<Greedy> && Sampler<Temperature> && Sampler<TopK<1>> && Sampler<TopP>);

}  // namespace reason::infer
