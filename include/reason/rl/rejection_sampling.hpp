// reason/rl/rejection_sampling.hpp — rejection sampling: keep what the verifier accepts, fine-tune on it.
//
// DeepSeek-R1 (DeepSeek-AI 2025, §2.3.3): once reasoning-oriented RL has converged, its checkpoint
// collects SFT data for the next round — several responses are sampled per prompt and only the
// correct ones are retained. The same loop is expert iteration (Anthony, Tian, Barber 2017,
// "Thinking Fast and Slow with Deep Learning and Tree Search") and STaR (Zelikman, Wu, Mu,
// Goodman 2022, "Self-Taught Reasoner"): sample from the current policy, filter with a verifier,
// train on the survivors with the ordinary next-token loss, repeat. Three pieces:
//   rejection_sample  G completions of each problem's prompt (question + <think>, as GRPO samples
//                     them) by infer::rollout, scored by a rule reward with reward::score_batch.
//                     A completion is accepted when reward >= accept_threshold. Among the accepted
//                     completions of one problem, in sample order, `dedupe` drops one identical
//                     token for token to an earlier one, and max_kept_per_prompt keeps the first k
//                     distinct ones, so easy problems do not crowd out hard ones.
//   make_token_batch  accepted examples as a train::TokenBatch: prompt + completion, padded with
//                     <pad>; target[t] = tokens[t + 1] exactly where t + 1 is a completion token
//                     (its <eos> included when it stopped there), -1 elsewhere — data::make_sft_batch's
//                     convention, with the whole prompt given rather than predicted.
//   rejection_source  a train::BatchSource that cycles through the accepted set, epoch e in the
//                     order epoch_permutation(seed, n, e), so micro-batch (step, m) is a pure function
//                     of (step, m) and train::Trainer's checkpoint/resume stays exact.
//
// Design rules.
//  * One decode loop, one batch scorer: sampling is infer::rollout with RolloutConfig{G,
//    max_new_tokens, eos = <eos>, seed, max_batch = rollout_batch}, so row r = i G + g (problem i,
//    sample g) draws from Philox(seed, stream r), and the result is a function of (parameters,
//    problems, sampler, reward, config): the same seed gives the same kept set.
//  * What is kept is decided in a fixed order (problem, then sample) with counts that add up:
//    accepted = kept + duplicates + over_cap. Rewards are checked finite (a NaN would be silently
//    rejected by any threshold) and every row's reward is returned for the caller's own statistics.
//  * Bad input is refused before sampling, each error naming the field and its value.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/model/config.hpp"
#include "reason/reward/concept.hpp"
#include "reason/reward/score_batch.hpp"
#include "reason/train/token_batch.hpp"

namespace reason::rl {

/// A model infer::rollout can sample from: Transformer's decode interface.
template <class N>
concept SamplingModel = requires {
  typename N::T;
  typename N::DecodeState;
} && requires(const N& net, const typename N::T* p, typename N::DecodeState& state, View<const std::int32_t, 1> feed,
              View<typename N::T, 2> logits) {
  { net.make_decode_state(index_t{1}, index_t{1}) } -> std::same_as<typename N::DecodeState>;
  net.decode_step(p, feed, index_t{0}, state, logits);
  { net.config() } -> std::convertible_to<const model::Config&>;
  { net.num_params() } -> std::convertible_to<std::size_t>;
};

/// The numbers of one rejection-sampling round.
struct RejectionConfig {
  index_t samples_per_prompt = 8;    // G: completions sampled per problem
  index_t max_new_tokens = 64;       // completion tokens per row at most; 0: only the model's max_seq_len limits
  float accept_threshold = 1.0f;     // a completion is accepted when reward >= this
  index_t max_kept_per_prompt = 0;   // distinct accepted completions kept per problem at most; 0: all
  bool dedupe = true;                // drop an accepted completion identical to an earlier one of its problem
  std::uint64_t seed = 1;            // row r = i G + g samples from Philox(seed, stream r)
  index_t rollout_batch = 0;         // rows per decode state; 0: all rows in one

  void validate() const {
    REASON_CHECK(samples_per_prompt >= 1, "RejectionConfig: samples_per_prompt = ", samples_per_prompt,
                 "; expected >= 1");
    REASON_CHECK(max_new_tokens >= 0, "RejectionConfig: max_new_tokens = ", max_new_tokens,
                 "; expected >= 0 (0: only the model's max_seq_len limits)");
    REASON_CHECK(!std::isnan(accept_threshold), "RejectionConfig: accept_threshold is NaN; no reward would be accepted");
    REASON_CHECK(max_kept_per_prompt >= 0, "RejectionConfig: max_kept_per_prompt = ", max_kept_per_prompt,
                 "; expected >= 0 (0: keep every accepted completion)");
    REASON_CHECK(rollout_batch >= 0, "RejectionConfig: rollout_batch = ", rollout_batch, "; expected >= 0 (0: all rows)");
  }
};

/// One kept completion: an SFT example.
struct AcceptedExample {
  index_t problem = 0;                   // index into the problems sampled
  index_t sample = 0;                    // g in [0, G): its rollout row is problem * G + sample
  std::vector<std::int32_t> prompt;      // data::prompt_tokens(problem): question + <think>
  std::vector<std::int32_t> completion;  // generated tokens (ending in <eos> if stopped_on_eos)
  float reward = 0;
  bool stopped_on_eos = false;           // else it was cut by the length limit

  friend bool operator==(const AcceptedExample&, const AcceptedExample&) = default;
};

/// What a round did; accepted = kept + duplicates + over_cap.
struct RejectionStats {
  index_t prompts = 0;           // problems sampled
  index_t sampled = 0;           // completions generated: prompts x G
  index_t accepted = 0;          // completions with reward >= accept_threshold
  index_t duplicates = 0;        // accepted, identical to an earlier accepted one of the same problem (dedupe)
  index_t over_cap = 0;          // accepted and distinct, beyond max_kept_per_prompt
  index_t kept = 0;              // returned as examples
  index_t prompts_accepted = 0;  // problems with >= 1 accepted completion
  double acceptance_rate = 0;    // accepted / sampled
  double reward_mean = 0;        // over every sampled completion
  double mean_kept_length = 0;   // completion tokens per kept example (0 when none)

  friend bool operator==(const RejectionStats&, const RejectionStats&) = default;
};

struct RejectionResult {
  std::vector<AcceptedExample> examples;     // in (problem, sample) order
  RejectionStats stats;
  std::vector<float> rewards;                // [prompts x G] every row's reward, row i G + g
  std::vector<index_t> accepted_per_prompt;  // [prompts] accepted completions of each problem (before dedupe and cap)
};

/// Samples cfg.samples_per_prompt completions of every problem from `params` with `sampler`,
/// scores them with `reward`, and keeps the accepted ones (see the file comment).
template <class Net, class S, class R>
RejectionResult rejection_sample(const Net& net, std::span<const typename Net::T> params,
                                 std::span<const data::Problem> problems, const S& sampler, const R& reward,
                                 const RejectionConfig& cfg) {
  static_assert(SamplingModel<Net>, "rl::rejection_sample: net must be a model with make_decode_state and decode_step "
                                    "(e.g. model::Transformer<...>)");
  static_assert(infer::Sampler<S>, "rl::rejection_sample: sampler must be a sampler policy (e.g. infer::Temperature)");
  static_assert(reward::Reward<R>, "rl::rejection_sample: reward must be a reward policy (e.g. reward::Accuracy)");
  cfg.validate();
  REASON_CHECK(!problems.empty(), "rl::rejection_sample: the problem list is empty; nothing to sample");
  REASON_CHECK(params.size() == net.num_params(), "rl::rejection_sample: ", params.size(),
               " parameters for a model of ", net.num_params());
  REASON_CHECK(net.config().vocab_size == data::Tokenizer::vocab_size, "rl::rejection_sample: the model's vocabulary has ",
               net.config().vocab_size, " tokens but prompts and completions use data::Tokenizer's ",
               data::Tokenizer::vocab_size);
  const index_t G = cfg.samples_per_prompt, P = static_cast<index_t>(problems.size()), rows = P * G;

  std::vector<std::vector<std::int32_t>> prompts;
  prompts.reserve(problems.size());
  for (const data::Problem& p : problems) prompts.push_back(data::prompt_tokens(p));
  infer::RolloutConfig rc;
  rc.samples_per_prompt = G;
  rc.max_new_tokens = cfg.max_new_tokens;
  rc.eos = data::Tokenizer::eos;
  rc.seed = cfg.seed;
  rc.max_batch = cfg.rollout_batch;
  const infer::Rollouts ro =
      infer::rollout(net, params.data(), std::span<const std::vector<std::int32_t>>(prompts), sampler, rc);

  std::vector<std::string> texts(static_cast<std::size_t>(rows));
  std::vector<data::Problem> samples(static_cast<std::size_t>(rows));
  for (index_t r = 0; r < rows; ++r) {
    const infer::Completion& c = ro.rows[static_cast<std::size_t>(r)];
    texts[static_cast<std::size_t>(r)] = data::Tokenizer::decode(c.tokens);
    samples[static_cast<std::size_t>(r)] = problems[static_cast<std::size_t>(c.prompt)];
  }
  RejectionResult out;
  out.rewards.resize(static_cast<std::size_t>(rows));
  reward::score_batch(reward, std::span<const std::string>(texts), std::span<const data::Problem>(samples),
                      std::span<float>(out.rewards));

  RejectionStats& s = out.stats;
  s.prompts = P;
  s.sampled = rows;
  double reward_sum = 0, kept_tokens = 0;
  for (index_t r = 0; r < rows; ++r) {
    const float x = out.rewards[static_cast<std::size_t>(r)];
    REASON_CHECK(std::isfinite(x), "rl::rejection_sample: reward ", R::name, " scored row ", r, " (problem ", r / G,
                 ", sample ", r % G, ") ", x, "; rewards must be finite");
    reward_sum += static_cast<double>(x);
  }
  out.accepted_per_prompt.assign(static_cast<std::size_t>(P), 0);
  for (index_t i = 0; i < P; ++i) {
    std::set<std::vector<std::int32_t>> seen;  // the accepted completions of problem i so far
    index_t kept_here = 0;
    for (index_t g = 0; g < G; ++g) {
      const auto r = static_cast<std::size_t>(i * G + g);
      const float x = out.rewards[r];
      if (!(x >= cfg.accept_threshold)) continue;
      const infer::Completion& c = ro.rows[r];
      ++s.accepted;
      ++out.accepted_per_prompt[static_cast<std::size_t>(i)];
      if (cfg.dedupe && !seen.insert(c.tokens).second) {
        ++s.duplicates;
        continue;
      }
      if (cfg.max_kept_per_prompt > 0 && kept_here >= cfg.max_kept_per_prompt) {
        ++s.over_cap;
        continue;
      }
      ++kept_here;
      kept_tokens += static_cast<double>(c.tokens.size());
      out.examples.push_back({i, g, prompts[static_cast<std::size_t>(i)], c.tokens, x, c.stopped_on_eos});
    }
    s.prompts_accepted += out.accepted_per_prompt[static_cast<std::size_t>(i)] > 0;
  }
  s.kept = static_cast<index_t>(out.examples.size());
  s.acceptance_rate = static_cast<double>(s.accepted) / static_cast<double>(rows);
  s.reward_mean = reward_sum / static_cast<double>(rows);
  s.mean_kept_length = s.kept > 0 ? kept_tokens / static_cast<double>(s.kept) : 0.0;
  return out;
}

namespace detail {

/// out <- examples[rows[b]] for each b, padded to `seq` with <pad>; targets on completion tokens.
inline void fill_token_batch(std::span<const AcceptedExample> examples, std::span<const std::size_t> rows, index_t seq,
                             train::TokenBatch& out, const char* fn) {
  const auto B = static_cast<index_t>(rows.size());
  out.batch = B;
  out.seq = seq;
  out.tokens.assign(static_cast<std::size_t>(B * seq), data::Tokenizer::pad);  // [B, seq]
  out.targets.assign(out.tokens.size(), -1);                                    // [B, seq]
  for (index_t b = 0; b < B; ++b) {
    const std::size_t k = rows[static_cast<std::size_t>(b)];
    const AcceptedExample& e = examples[k];
    const auto p = static_cast<index_t>(e.prompt.size()), n = static_cast<index_t>(e.completion.size());
    REASON_CHECK(p >= 1, fn, ": example ", k, " (problem ", e.problem, ") has an empty prompt");
    REASON_CHECK(p + n <= seq, fn, ": example ", k, " (problem ", e.problem, ") is ", p + n,
                 " tokens, longer than the sequence length ", seq);
    std::int32_t* row = out.tokens.data() + b * seq;
    std::int32_t* tgt = out.targets.data() + b * seq;
    std::copy(e.prompt.begin(), e.prompt.end(), row);
    std::copy(e.completion.begin(), e.completion.end(), row + p);
    for (index_t t = p - 1; t < p + n - 1; ++t) tgt[t] = row[t + 1];  // position t predicts token t + 1
  }
}

inline index_t example_length(const AcceptedExample& e) {
  return static_cast<index_t>(e.prompt.size() + e.completion.size());
}

}  // namespace detail

/// Every example as one batch [examples, seq_len] (seq_len 0: the longest example's length);
/// an example longer than seq_len is an error naming it.
[[nodiscard]] inline train::TokenBatch make_token_batch(std::span<const AcceptedExample> examples, index_t seq_len = 0) {
  REASON_CHECK(!examples.empty(), "rl::make_token_batch: no examples");
  REASON_CHECK(seq_len >= 0, "rl::make_token_batch: seq_len = ", seq_len, "; expected >= 0 (0: the longest example)");
  std::vector<std::size_t> rows(examples.size());
  index_t longest = 0;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    rows[k] = k;
    longest = std::max(longest, detail::example_length(examples[k]));
  }
  train::TokenBatch b;
  detail::fill_token_batch(examples, rows, seq_len > 0 ? seq_len : longest, b, "rl::make_token_batch");
  return b;
}

/// The order in which epoch `epoch` visits n examples: a Fisher-Yates shuffle drawn from
/// Philox(seed, stream = epoch).
[[nodiscard]] inline std::vector<index_t> epoch_permutation(std::uint64_t seed, index_t n, std::int64_t epoch) {
  REASON_CHECK(n >= 0 && n <= index_t{0xFFFFFFFF}, "rl::epoch_permutation: n = ", n, "; expected 0 <= n < 2^32");
  REASON_CHECK(epoch >= 0, "rl::epoch_permutation: epoch = ", epoch, "; expected >= 0");
  std::vector<index_t> order(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  Philox rng(seed, static_cast<std::uint64_t>(epoch));
  for (index_t i = n - 1; i > 0; --i)
    std::swap(order[static_cast<std::size_t>(i)],
              order[rng.below(static_cast<std::uint32_t>(i + 1))]);
  return order;
}

/// How rejection_source draws its batches; batch and micro_batches must match train::TrainConfig's.
struct RejectionSourceConfig {
  std::uint64_t seed = 1;  // epoch e visits the examples in the order epoch_permutation(seed, n, e)
  index_t batch = 16;      // sequences per micro-batch (train::TrainConfig::batch)
  int micro_batches = 1;   // micro-batches per step (train::TrainConfig::micro_batches)
  index_t max_seq = 0;     // longest example allowed (train::TrainConfig::seq); 0: no limit
};

/// A train::BatchSource over the accepted set (held by the source). Micro-batch m of step s holds
/// the examples at positions k = (s M + m) B + b, b < B, of the endless sequence epoch 0, epoch 1,
/// ...: example epoch_permutation(seed, n, k / n)[k % n]. Each batch is padded to its longest example.
[[nodiscard]] inline train::BatchSource rejection_source(std::vector<AcceptedExample> examples, RejectionSourceConfig c) {
  REASON_CHECK(!examples.empty(), "rl::rejection_source: no accepted examples to train on");
  REASON_CHECK(c.batch >= 1 && c.micro_batches >= 1 && c.max_seq >= 0, "rl::rejection_source: batch = ", c.batch,
               ", micro_batches = ", c.micro_batches, ", max_seq = ", c.max_seq,
               "; expected >= 1, >= 1, >= 0 (0: no limit)");
  REASON_CHECK(examples.size() <= 0xFFFFFFFFu, "rl::rejection_source: ", examples.size(),
               " examples; at most 2^32 - 1 are supported");
  for (std::size_t k = 0; k < examples.size(); ++k) {
    const AcceptedExample& e = examples[k];
    REASON_CHECK(!e.prompt.empty(), "rl::rejection_source: example ", k, " (problem ", e.problem, ") has an empty prompt");
    REASON_CHECK(c.max_seq == 0 || detail::example_length(e) <= c.max_seq, "rl::rejection_source: example ", k,
                 " (problem ", e.problem, ") is ", detail::example_length(e), " tokens, longer than max_seq = ", c.max_seq);
  }
  auto set = std::make_shared<const std::vector<AcceptedExample>>(std::move(examples));
  return [set, c](std::int64_t step, int micro, train::TokenBatch& out) {
    REASON_CHECK(step >= 0 && micro >= 0 && micro < c.micro_batches, "rl::rejection_source: step ", step, " micro ", micro,
                 " is outside the run (micro_batches = ", c.micro_batches, ")");
    const auto n = static_cast<std::int64_t>(set->size());
    const std::int64_t first = (step * c.micro_batches + micro) * c.batch;
    std::vector<std::size_t> rows(static_cast<std::size_t>(c.batch));
    std::vector<index_t> order;
    std::int64_t epoch = -1;
    index_t longest = 0;
    for (index_t b = 0; b < c.batch; ++b) {
      const std::int64_t k = first + b;
      if (k / n != epoch) {
        epoch = k / n;
        order = epoch_permutation(c.seed, n, epoch);
      }
      const auto e = static_cast<std::size_t>(order[static_cast<std::size_t>(k % n)]);
      rows[static_cast<std::size_t>(b)] = e;
      longest = std::max(longest, detail::example_length((*set)[e]));
    }
    detail::fill_token_batch(*set, rows, longest, out, "rl::rejection_source");
  };
}

}  // namespace reason::rl
