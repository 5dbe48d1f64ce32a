// reason/rl/evaluate.hpp — the evaluation stage of the R1 pipeline: greedy accuracy, pass@k,
// format rate and response length of a policy on held-out problems.
//
// DeepSeek-R1 (DeepSeek-AI 2025, §3) reports pass@1 estimated from k sampled responses and
// cons@64; here, per problem, one greedy completion gives the greedy accuracy, and n sampled
// completions (temperature, e.g. 1) give pass@k for every requested k < n with the unbiased
// estimator of Chen et al. 2021 (rl/pass_at_k.hpp). Correctness and format are the training
// rewards themselves (reward::Accuracy, reward::Format), so what evaluation counts as right is
// exactly what RL rewarded. The standard error of the greedy accuracy over N problems is
// sqrt(a (1 - a) / N): the yardstick for "did RL help" (a difference of several SEs).
//
// Design rule: evaluation is generation through infer::rollout — the same decode path, kernels
// and KV cache as the RL rollouts — and a pure function of (model, problems, seed).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/reward/accuracy.hpp"
#include "reason/reward/format.hpp"
#include "reason/rl/pass_at_k.hpp"

namespace reason::rl {

struct EvalConfig {
  index_t max_new_tokens = 64;         // completion tokens at most
  index_t samples = 8;                 // n sampled completions per problem for pass@k; 0: greedy only
  std::vector<std::int64_t> ks{1, 4};  // pass@k reported for each k <= samples
  float temperature = 1.0f;            // of the sampled completions
  std::uint64_t seed = 1;              // sampled row r draws from Philox(seed, stream r)
  index_t batch = 256;                 // rows per decode state (bounds the KV-cache memory)

  void validate() const {
    REASON_CHECK(max_new_tokens >= 1 && samples >= 0 && batch >= 1, "EvalConfig: max_new_tokens = ", max_new_tokens,
                 ", samples = ", samples, ", batch = ", batch, "; expected >= 1, >= 0, >= 1");
    REASON_CHECK(temperature > 0 && std::isfinite(temperature), "EvalConfig: temperature = ", temperature,
                 "; expected > 0 (greedy is always evaluated)");
    for (std::int64_t k : ks)
      REASON_CHECK(samples == 0 || (k >= 1 && k <= samples), "EvalConfig: pass@", k, " needs 1 <= k <= samples = ",
                   samples);
  }
};

/// One problem's outcome.
struct EvalRow {
  std::string completion;  // the greedy completion's text
  bool correct = false;    // greedy answer is right
  bool formatted = false;  // greedy completion is exactly the template
  index_t tokens = 0;      // greedy completion length (tokens, <eos> included)
  index_t sampled_correct = 0;  // of the n sampled completions
};

/// Greedy accuracy and counts of one difficulty level.
struct LevelEval {
  index_t problems = 0, correct = 0, formatted = 0;
  double tokens = 0;  // summed greedy completion lengths
  [[nodiscard]] double accuracy() const { return problems ? static_cast<double>(correct) / static_cast<double>(problems) : 0; }
};

struct EvalReport {
  index_t problems = 0;
  double accuracy = 0;       // greedy
  double accuracy_se = 0;    // sqrt(a (1 - a) / N)
  double format_rate = 0;    // greedy completions that are exactly the template
  double mean_tokens = 0;    // greedy completion length
  double eos_rate = 0;       // greedy completions that stopped on <eos> (else ran out of room)
  index_t samples = 0;       // n per problem (0: none drawn)
  double sampled_accuracy = 0;  // mean correctness of the sampled completions (= pass@1 estimate)
  double sampled_tokens = 0;    // mean sampled completion length
  std::vector<std::pair<std::int64_t, double>> pass_at_k;  // (k, pass@k)
  std::map<int, LevelEval> levels;                         // by difficulty
  std::vector<EvalRow> rows;                               // one per problem, in order
  double seconds = 0;
};

/// Evaluates `params` of `net` on `problems` (prompts from data::prompt_tokens).
template <class Net, class Accuracy = reward::Accuracy, class Format = reward::Format>
EvalReport evaluate(const Net& net, const typename Net::T* params, std::span<const data::Problem> problems,
                    const EvalConfig& cfg) {
  cfg.validate();
  REASON_CHECK(!problems.empty(), "evaluate: no problems");
  REASON_CHECK(net.config().vocab_size == data::Tokenizer::vocab_size, "evaluate: the model's vocabulary has ",
               net.config().vocab_size, " tokens but prompts use data::Tokenizer's ", data::Tokenizer::vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  const Accuracy accuracy{};
  const Format format{};
  std::vector<std::vector<std::int32_t>> prompts;
  prompts.reserve(problems.size());
  for (const data::Problem& p : problems) prompts.push_back(data::prompt_tokens(p));
  const std::span<const std::vector<std::int32_t>> all(prompts);

  EvalReport rep;
  rep.problems = static_cast<index_t>(problems.size());
  rep.rows.resize(problems.size());
  infer::RolloutConfig rc;
  rc.max_new_tokens = cfg.max_new_tokens;
  rc.eos = data::Tokenizer::eos;
  rc.max_batch = cfg.batch;

  // Greedy: one completion per problem.
  rc.samples_per_prompt = 1;
  const infer::Rollouts greedy = infer::rollout(net, params, all, infer::Greedy{}, rc);
  double eos = 0;
  for (std::size_t i = 0; i < problems.size(); ++i) {
    const infer::Completion& c = greedy.rows[i];
    EvalRow& row = rep.rows[i];
    row.completion = data::Tokenizer::decode(c.tokens);
    row.correct = accuracy.score(row.completion, problems[i]) >= 1.0f;
    row.formatted = format.score(row.completion, problems[i]) >= 1.0f;
    row.tokens = static_cast<index_t>(c.tokens.size());
    eos += c.stopped_on_eos;
    LevelEval& lv = rep.levels[problems[i].difficulty];
    ++lv.problems;
    lv.correct += row.correct;
    lv.formatted += row.formatted;
    lv.tokens += static_cast<double>(row.tokens);
    rep.accuracy += row.correct;
    rep.format_rate += row.formatted;
    rep.mean_tokens += static_cast<double>(row.tokens);
  }
  const auto N = static_cast<double>(problems.size());
  rep.accuracy /= N;
  rep.format_rate /= N;
  rep.mean_tokens /= N;
  rep.eos_rate = eos / N;
  rep.accuracy_se = std::sqrt(rep.accuracy * (1 - rep.accuracy) / N);

  // Sampled: n completions per problem, for pass@k.
  if (cfg.samples > 0) {
    rc.samples_per_prompt = cfg.samples;
    rc.seed = cfg.seed;
    const infer::Rollouts sampled = infer::rollout(net, params, all, infer::Temperature{cfg.temperature}, rc);
    std::vector<PassCount> counts(problems.size());
    double correct = 0, tokens = 0;
    for (const infer::Completion& c : sampled.rows) {
      const auto i = static_cast<std::size_t>(c.prompt);
      const bool ok = accuracy.score(data::Tokenizer::decode(c.tokens), problems[i]) >= 1.0f;
      ++counts[i].n;
      counts[i].c += ok;
      rep.rows[i].sampled_correct += ok;
      correct += ok;
      tokens += static_cast<double>(c.tokens.size());
    }
    rep.samples = cfg.samples;
    rep.sampled_accuracy = correct / static_cast<double>(sampled.size());
    rep.sampled_tokens = tokens / static_cast<double>(sampled.size());
    for (std::int64_t k : cfg.ks) rep.pass_at_k.emplace_back(k, mean_pass_at_k(std::span<const PassCount>(counts), k));
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

/// The standard error of the difference of two accuracies measured on the same problems
/// (paired: only problems that one model solves and the other does not contribute).
[[nodiscard]] inline double paired_difference_se(std::span<const EvalRow> a, std::span<const EvalRow> b) {
  REASON_CHECK(a.size() == b.size() && !a.empty(), "paired_difference_se: ", a.size(), " and ", b.size(),
               " rows; expected the same non-zero count");
  const auto n = static_cast<double>(a.size());
  double mean = 0, sq = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(b[i].correct) - static_cast<double>(a[i].correct);
    mean += d;
    sq += d * d;
  }
  mean /= n;
  const double var = std::max(0.0, sq / n - mean * mean);
  return std::sqrt(var / n);
}

}  // namespace reason::rl
