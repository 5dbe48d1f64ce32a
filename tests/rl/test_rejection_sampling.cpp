// Rejection sampling on a tiny random byte-level model: the kept set is exactly the rows an
// independent scoring of the same rollout accepts, after dedupe and the per-problem cap (checked
// against a reference selection); the seed determines the result; the SFT batch has targets on
// completion tokens only, aligned to predict the next token; the batch source is a pure function
// of (step, micro) that visits every example once per epoch and resumes a train::Trainer exactly;
// fine-tuning on the accepted set raises their log-probability and the next round's acceptance
// rate (one round of expert iteration / STaR); bad input is refused naming what was wrong.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/rl/rejection_sampling.hpp"
#include "reason/train/trainer.hpp"
#include "tiny_policy.hpp"

using namespace reason;

namespace {

using Net = test::TinyNet;

/// The number of bytes of the completion before its first <eos> that occur in sample.answer (a
/// set of target bytes: the 26 capitals, which no special token's text contains). A uniform
/// policy writing 4 tokens scores >= 1 with probability 1 - (236/262)^4 = 0.34.
struct CountTargets {
  static constexpr const char* name = "count_targets";
  [[nodiscard]] float score(std::string_view completion, const data::Problem& sample) const {
    const std::string_view body = completion.substr(0, completion.find("<eos>"));
    float n = 0;
    for (char ch : body) n += sample.answer.find(ch) != std::string::npos ? 1.0f : 0.0f;
    return n;
  }
};

/// A broken reward: NaN for everything.
struct NanReward {
  static constexpr const char* name = "nan_reward";
  [[nodiscard]] float score(std::string_view, const data::Problem&) const { return std::numeric_limits<float>::quiet_NaN(); }
};

static_assert(reward::Reward<CountTargets> && reward::Reward<NanReward>);
static_assert(rl::SamplingModel<Net> && !rl::SamplingModel<optim::AdamW>);

/// n questions "q<i>" whose answer is the target set.
std::vector<data::Problem> problems(index_t n) {
  std::vector<data::Problem> out;
  for (index_t i = 0; i < n; ++i) {
    data::Problem p;
    p.question = "q";
    p.question += std::to_string(i);  // appended: GCC 12 warns falsely on "q" + s
    p.answer = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    out.push_back(p);
  }
  return out;
}

struct Model {
  Net net{test::tiny_policy_config()};
  std::vector<float> params;
  Model() : params(net.num_params()) { net.layout().initialize(std::span<float>(params), 3); }
};

rl::RejectionConfig base_config() {
  rl::RejectionConfig c;
  c.samples_per_prompt = 8;
  c.max_new_tokens = 4;
  c.accept_threshold = 1.0f;
  c.max_kept_per_prompt = 0;
  c.dedupe = false;
  c.seed = 5;
  return c;
}

/// The selection written out again, from a rollout and scores computed here: accepted rows in
/// (problem, sample) order, a duplicate being identical to any earlier accepted row of its problem.
struct Selection {
  std::vector<index_t> kept_rows;
  index_t accepted = 0, duplicates = 0, over_cap = 0, prompts_accepted = 0;
};

Selection reference_selection(const infer::Rollouts& ro, const std::vector<float>& score, index_t P,
                              const rl::RejectionConfig& cfg) {
  const index_t G = cfg.samples_per_prompt;
  Selection s;
  for (index_t i = 0; i < P; ++i) {
    std::vector<index_t> accepted, distinct;
    for (index_t g = 0; g < G; ++g)
      if (score[static_cast<std::size_t>(i * G + g)] >= cfg.accept_threshold) accepted.push_back(i * G + g);
    for (std::size_t a = 0; a < accepted.size(); ++a) {
      bool dup = false;
      for (std::size_t b = 0; b < a && cfg.dedupe; ++b)
        dup = dup || ro.rows[static_cast<std::size_t>(accepted[a])].tokens == ro.rows[static_cast<std::size_t>(accepted[b])].tokens;
      if (!dup) distinct.push_back(accepted[a]);
    }
    const std::size_t keep = cfg.max_kept_per_prompt > 0 ? std::min(distinct.size(), static_cast<std::size_t>(cfg.max_kept_per_prompt))
                                                         : distinct.size();
    s.kept_rows.insert(s.kept_rows.end(), distinct.begin(), distinct.begin() + static_cast<std::ptrdiff_t>(keep));
    s.accepted += static_cast<index_t>(accepted.size());
    s.duplicates += static_cast<index_t>(accepted.size() - distinct.size());
    s.over_cap += static_cast<index_t>(distinct.size() - keep);
    s.prompts_accepted += !accepted.empty();
  }
  return s;
}

/// Runs rejection_sample and checks it against an independent rollout + scoring + selection;
/// returns the reference selection so the caller can check the case was exercised.
template <class S>
Selection check_against_reference(const Model& m, const std::vector<data::Problem>& probs, const S& sampler,
                                  const rl::RejectionConfig& cfg) {
  const CountTargets reward;
  const rl::RejectionResult res = rl::rejection_sample(m.net, std::span<const float>(m.params),
                                                       std::span<const data::Problem>(probs), sampler, reward, cfg);
  std::vector<std::vector<std::int32_t>> prompts;
  for (const auto& p : probs) prompts.push_back(data::prompt_tokens(p));
  infer::RolloutConfig rc;
  rc.samples_per_prompt = cfg.samples_per_prompt;
  rc.max_new_tokens = cfg.max_new_tokens;
  rc.eos = data::Tokenizer::eos;
  rc.seed = cfg.seed;
  const infer::Rollouts ro = infer::rollout(m.net, m.params.data(), std::span<const std::vector<std::int32_t>>(prompts), sampler, rc);
  std::vector<float> score;
  double score_sum = 0;
  for (const infer::Completion& c : ro.rows) {
    score.push_back(reward.score(data::Tokenizer::decode(c.tokens), probs[static_cast<std::size_t>(c.prompt)]));
    score_sum += score.back();
  }
  const auto P = static_cast<index_t>(probs.size());
  const Selection want = reference_selection(ro, score, P, cfg);

  CHECK(res.rewards == score);
  REQUIRE(res.examples.size() == want.kept_rows.size());
  double length = 0;
  std::vector<index_t> kept_per_prompt(static_cast<std::size_t>(P), 0);
  for (std::size_t k = 0; k < res.examples.size(); ++k) {
    const rl::AcceptedExample& e = res.examples[k];
    const infer::Completion& c = ro.rows[static_cast<std::size_t>(want.kept_rows[k])];
    CHECK(e.problem == c.prompt);
    CHECK(e.sample == c.sample);
    CHECK(e.prompt == prompts[static_cast<std::size_t>(c.prompt)]);
    CHECK(e.completion == c.tokens);
    CHECK(e.reward == score[static_cast<std::size_t>(want.kept_rows[k])]);
    CHECK(e.reward >= cfg.accept_threshold);
    CHECK(e.stopped_on_eos == c.stopped_on_eos);
    length += static_cast<double>(e.completion.size());
    ++kept_per_prompt[static_cast<std::size_t>(e.problem)];
    // dedupe: no kept completion equals an earlier kept one of its problem
    for (std::size_t j = 0; j < k && cfg.dedupe; ++j)
      if (res.examples[j].problem == e.problem) CHECK(res.examples[j].completion != e.completion);
  }
  for (index_t n : kept_per_prompt)
    if (cfg.max_kept_per_prompt > 0) CHECK(n <= cfg.max_kept_per_prompt);

  const rl::RejectionStats& s = res.stats;
  const index_t rows = P * cfg.samples_per_prompt;
  CHECK(s.prompts == P);
  CHECK(s.sampled == rows);
  CHECK(s.accepted == want.accepted);
  CHECK(s.duplicates == want.duplicates);
  CHECK(s.over_cap == want.over_cap);
  CHECK(s.kept == static_cast<index_t>(want.kept_rows.size()));
  CHECK(s.accepted == s.kept + s.duplicates + s.over_cap);
  CHECK(s.prompts_accepted == want.prompts_accepted);
  CHECK(s.acceptance_rate == doctest::Approx(static_cast<double>(want.accepted) / static_cast<double>(rows)));
  CHECK(s.reward_mean == doctest::Approx(score_sum / static_cast<double>(rows)));
  CHECK(s.mean_kept_length == doctest::Approx(s.kept ? length / static_cast<double>(s.kept) : 0.0));
  REQUIRE(res.accepted_per_prompt.size() == static_cast<std::size_t>(P));
  for (index_t i = 0; i < P; ++i) {
    index_t n = 0;
    for (index_t g = 0; g < cfg.samples_per_prompt; ++g)
      n += score[static_cast<std::size_t>(i * cfg.samples_per_prompt + g)] >= cfg.accept_threshold;
    CHECK(res.accepted_per_prompt[static_cast<std::size_t>(i)] == n);
  }
  return want;
}

/// Mean log-probability per completion token of `examples` under `params` (a separate model
/// instance, so the trainer's activation arena is left alone).
double mean_logp(std::span<const float> params, std::span<const rl::AcceptedExample> examples) {
  const train::TokenBatch b = rl::make_token_batch(examples);
  Net net(test::tiny_policy_config());
  net.reserve(b.batch, b.seq);
  return -net.loss(params.data(), b.tokens_view(), b.targets_view()).mean();
}

train::TrainConfig sft_config(std::int64_t steps) {
  train::TrainConfig c;
  c.total_steps = steps;
  c.micro_batches = 1;
  c.batch = 8;
  c.seq = test::tiny_policy_config().max_seq_len;
  c.max_grad_norm = 1.0;
  c.schedule = {.peak_lr = 1e-2, .min_lr = 1e-2, .warmup_steps = 0, .total_steps = 1000};
  c.seed = 3;  // the same initialisation as Model
  return c;
}

using Trainer = train::Trainer<Net, optim::AdamW>;

}  // namespace

TEST_CASE("rejection_sample keeps exactly the accepted rows, after dedupe and the per-problem cap") {
  Model m;
  const auto probs = problems(12);
  rl::RejectionConfig cfg = base_config();

  // Reward >= 1: completions with at least one target byte. Every accepted row is kept.
  const Selection a = check_against_reference(m, probs, infer::Temperature{1.0f}, cfg);
  MESSAGE("threshold 1: ", a.accepted, " of 96 accepted, on ", a.prompts_accepted, " of 12 problems");
  CHECK(a.accepted > 10);
  CHECK(a.accepted < 60);
  CHECK(a.prompts_accepted > 3);
  // Reward >= 2 accepts a strict subset.
  cfg.accept_threshold = 2.0f;
  const Selection b = check_against_reference(m, probs, infer::Temperature{1.0f}, cfg);
  CHECK(b.accepted < a.accepted);
  // A cap of one per problem.
  cfg.accept_threshold = 1.0f;
  cfg.max_kept_per_prompt = 1;
  const Selection c = check_against_reference(m, probs, infer::Temperature{1.0f}, cfg);
  CHECK(c.over_cap > 0);
  CHECK(static_cast<index_t>(c.kept_rows.size()) == c.prompts_accepted);

  // Two tokens from the top 2 of a random model: four possible completions per problem, so
  // G = 8 samples repeat. Threshold 0 accepts everything; dedupe and the cap decide.
  cfg.max_new_tokens = 2;
  cfg.accept_threshold = 0.0f;
  cfg.max_kept_per_prompt = 0;
  cfg.dedupe = true;
  const Selection d = check_against_reference(m, probs, infer::TopK<2>{1.0f}, cfg);
  MESSAGE("top-2, dedupe: ", d.duplicates, " of 96 rows dropped as duplicates");
  CHECK(d.accepted == 96);
  CHECK(d.duplicates > 12);
  CHECK(d.over_cap == 0);
  cfg.max_kept_per_prompt = 2;
  const Selection e = check_against_reference(m, probs, infer::TopK<2>{1.0f}, cfg);
  CHECK(e.duplicates == d.duplicates);  // a duplicate of a completion beyond the cap is still a duplicate
  CHECK(e.over_cap > 0);
  CHECK(static_cast<index_t>(e.kept_rows.size()) <= 2 * 12);
  cfg.dedupe = false;
  cfg.max_kept_per_prompt = 3;
  const Selection f = check_against_reference(m, probs, infer::TopK<2>{1.0f}, cfg);
  CHECK(f.duplicates == 0);
  CHECK(f.kept_rows.size() == 3 * 12);
  CHECK(f.over_cap == 96 - 36);
}

TEST_CASE("rejection_sample: the same seed gives the same result and another seed another") {
  Model m;
  const auto probs = problems(8);
  rl::RejectionConfig cfg = base_config();
  cfg.dedupe = true;
  cfg.max_kept_per_prompt = 3;
  auto run = [&](const rl::RejectionConfig& c) {
    return rl::rejection_sample(m.net, std::span<const float>(m.params), std::span<const data::Problem>(probs),
                                infer::Temperature{1.0f}, CountTargets{}, c);
  };
  const rl::RejectionResult x = run(cfg), y = run(cfg);
  CHECK(x.examples == y.examples);
  CHECK(x.stats == y.stats);
  CHECK(x.rewards == y.rewards);
  CHECK(x.accepted_per_prompt == y.accepted_per_prompt);
  CHECK(!x.examples.empty());
  cfg.seed = 6;
  const rl::RejectionResult z = run(cfg);
  CHECK(z.examples != x.examples);
  CHECK(z.rewards != x.rewards);
  // Sub-batched rollouts sample the same rows (each row has its own Philox stream).
  cfg.seed = 5;
  cfg.rollout_batch = 24;
  const rl::RejectionResult w = run(cfg);
  CHECK(w.examples == x.examples);
  CHECK(w.stats == x.stats);
}

TEST_CASE("The SFT batch of accepted examples has aligned targets on completion tokens only") {
  Model m;
  const auto probs = problems(12);
  const rl::RejectionResult res = rl::rejection_sample(m.net, std::span<const float>(m.params), std::span<const data::Problem>(probs),
                                                       infer::Temperature{1.0f}, CountTargets{}, base_config());
  REQUIRE(res.examples.size() >= 4);
  // The tiny random model rarely samples <eos>: add an example that stopped on it.
  std::vector<rl::AcceptedExample> examples = res.examples;
  examples.push_back({.problem = 0, .sample = 0, .prompt = data::prompt_tokens(probs[0]),
                      .completion = {'A', 'B', data::Tokenizer::eos}, .reward = 2.0f, .stopped_on_eos = true});
  const train::TokenBatch b = rl::make_token_batch(examples);
  CHECK(b.batch == static_cast<index_t>(examples.size()));
  index_t longest = 0, completion_tokens = 0;
  for (const auto& e : examples) {
    longest = std::max(longest, static_cast<index_t>(e.prompt.size() + e.completion.size()));
    completion_tokens += static_cast<index_t>(e.completion.size());
  }
  CHECK(b.seq == longest);
  CHECK(b.target_count() == completion_tokens);
  bool saw_eos = false;
  for (index_t r = 0; r < b.batch; ++r) {
    const rl::AcceptedExample& e = examples[static_cast<std::size_t>(r)];
    const auto P = static_cast<index_t>(e.prompt.size()), n = static_cast<index_t>(e.completion.size());
    for (index_t t = 0; t < b.seq; ++t) {
      const std::int32_t tok = b.tokens[static_cast<std::size_t>(r * b.seq + t)];
      const std::int32_t tgt = b.targets[static_cast<std::size_t>(r * b.seq + t)];
      const std::int32_t want_tok = t < P ? e.prompt[static_cast<std::size_t>(t)]
                                    : t < P + n ? e.completion[static_cast<std::size_t>(t - P)]
                                                : data::Tokenizer::pad;
      CHECK(tok == want_tok);
      if (t >= P - 1 && t < P + n - 1) {  // predicts completion token t + 1 - P
        CHECK(tgt == e.completion[static_cast<std::size_t>(t + 1 - P)]);
        CHECK(tgt == b.tokens[static_cast<std::size_t>(r * b.seq + t + 1)]);
      } else {
        CHECK(tgt == -1);  // prompt, last token, padding
      }
    }
    if (e.stopped_on_eos) {
      saw_eos = true;
      CHECK(b.targets[static_cast<std::size_t>(r * b.seq + P + n - 2)] == data::Tokenizer::eos);
    }
  }
  CHECK(saw_eos);
  MESSAGE(examples.size(), " examples, ", completion_tokens, " target tokens");
  // A fixed length pads further; a length below the longest example is refused.
  const train::TokenBatch wide = rl::make_token_batch(examples, 20);
  CHECK(wide.seq == 20);
  CHECK(wide.target_count() == completion_tokens);
  CHECK_THROWS_WITH_AS((void)rl::make_token_batch(examples, longest - 1), doctest::Contains("longer than the sequence length"),
                       Error);
  CHECK_THROWS_WITH_AS((void)rl::make_token_batch(std::span<const rl::AcceptedExample>()), doctest::Contains("no examples"), Error);
}

TEST_CASE("rejection_source cycles through the accepted set as a pure function of (step, micro)") {
  Model m;
  const auto probs = problems(12);
  const rl::RejectionResult res = rl::rejection_sample(m.net, std::span<const float>(m.params), std::span<const data::Problem>(probs),
                                                       infer::Temperature{1.0f}, CountTargets{}, base_config());
  const auto n = static_cast<index_t>(res.examples.size());
  REQUIRE(n >= 8);

  // Each epoch is a permutation; epochs differ.
  const std::vector<index_t> e0 = rl::epoch_permutation(9, n, 0), e1 = rl::epoch_permutation(9, n, 1);
  std::vector<index_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (index_t i = 0; i < n; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
  CHECK(e0 != e1);
  CHECK(e0 == rl::epoch_permutation(9, n, 0));

  // Position k of the stream (step s, micro m, row b: k = (2 s + m) 3 + b) is example perm_{k / n}[k % n].
  const rl::RejectionSourceConfig sc{.seed = 9, .batch = 3, .micro_batches = 2, .max_seq = 24};
  const train::BatchSource source = rl::rejection_source(res.examples, sc);
  for (std::int64_t step = 0; step < 2 * n / 6 + 2; ++step)
    for (int micro = 0; micro < 2; ++micro) {
      train::TokenBatch b, again;
      source(step, micro, b);
      source(step, micro, again);
      CHECK(b.tokens == again.tokens);
      CHECK(b.targets == again.targets);
      REQUIRE(b.batch == 3);
      for (index_t r = 0; r < 3; ++r) {
        const std::int64_t k = (step * 2 + micro) * 3 + r;
        const auto e = static_cast<std::size_t>(rl::epoch_permutation(9, n, k / n)[static_cast<std::size_t>(k % n)]);
        const train::TokenBatch one = rl::make_token_batch(std::span<const rl::AcceptedExample>(&res.examples[e], 1), b.seq);
        CHECK(std::equal(one.tokens.begin(), one.tokens.end(), b.tokens.begin() + r * b.seq));
        CHECK(std::equal(one.targets.begin(), one.targets.end(), b.targets.begin() + r * b.seq));
      }
    }

  // A train::Trainer stopped after 4 steps and resumed from its buffers ends bit-identical.
  const train::BatchSource src = rl::rejection_source(res.examples, {.seed = 9, .batch = 8, .micro_batches = 1, .max_seq = 24});
  Net n1(test::tiny_policy_config()), n2(test::tiny_policy_config()), n3(test::tiny_policy_config());
  Trainer whole(n1, optim::AdamW{}, sft_config(10));
  while (!whole.done()) whole.run_step(src);
  Trainer first(n2, optim::AdamW{}, sft_config(10));
  for (int i = 0; i < 4; ++i) first.run_step(src);
  Trainer resumed(n3, optim::AdamW{}, sft_config(10));
  std::copy(first.params().begin(), first.params().end(), resumed.params().begin());
  std::copy(first.optimizer_state().begin(), first.optimizer_state().end(), resumed.optimizer_state().begin());
  resumed.set_position(first.step(), first.micro(), first.partial_loss_sum(), first.partial_loss_count());
  while (!resumed.done()) resumed.run_step(src);
  CHECK(std::equal(whole.params().begin(), whole.params().end(), resumed.params().begin(), resumed.params().end()));

  train::TokenBatch out;
  CHECK_THROWS_WITH_AS(source(0, 2, out), doctest::Contains("micro 2"), Error);
}

TEST_CASE("Fine-tuning on the accepted set raises its log-probability and the next round's acceptance rate") {
  const auto probs = problems(16);
  Net net(test::tiny_policy_config());
  Trainer t(net, optim::AdamW{.config = {.weight_decay = 0.0}}, sft_config(30));
  const std::vector<float> init(t.params().begin(), t.params().end());
  rl::RejectionConfig cfg = base_config();
  cfg.dedupe = true;
  auto round = [&](std::span<const float> params, std::uint64_t seed) {
    rl::RejectionConfig c = cfg;
    c.seed = seed;
    return rl::rejection_sample(net, params, std::span<const data::Problem>(probs), infer::Temperature{1.0f}, CountTargets{}, c);
  };
  const rl::RejectionResult r1 = round(init, 5);
  REQUIRE(r1.stats.kept >= 8);

  const double before = mean_logp(init, r1.examples);
  const train::BatchSource src = rl::rejection_source(r1.examples, {.seed = 1, .batch = 8, .micro_batches = 1, .max_seq = 24});
  double first_loss = 0, last_loss = 0;
  while (!t.done()) {
    const train::StepStats s = t.run_step(src);
    if (s.step == 0) first_loss = s.loss;
    last_loss = s.loss;
  }
  const double after = mean_logp(t.params(), r1.examples);
  // The next round, with a seed neither model has seen, from the initial and the fine-tuned model.
  const rl::RejectionResult base = round(init, 77), r2 = round(t.params(), 77);
  MESSAGE("kept ", r1.stats.kept, " of ", r1.stats.sampled, "; mean log-prob of the kept completions ", before, " -> ", after,
          "; SFT loss ", first_loss, " -> ", last_loss, "; acceptance rate (seed 77) ", base.stats.acceptance_rate,
          " (initial model) -> ", r2.stats.acceptance_rate, " (fine-tuned)");
  CHECK(after > before + 1.0);
  CHECK(last_loss < first_loss);
  CHECK(r2.stats.acceptance_rate > base.stats.acceptance_rate + 0.15);
}

TEST_CASE("rejection_sample and rejection_source refuse bad input, naming it") {
  Model m;
  const auto probs = problems(2);
  const std::span<const data::Problem> ps(probs);
  auto run = [&](const rl::RejectionConfig& c, std::span<const data::Problem> p) {
    return rl::rejection_sample(m.net, std::span<const float>(m.params), p, infer::Temperature{1.0f}, CountTargets{}, c);
  };
  rl::RejectionConfig c = base_config();
  c.samples_per_prompt = 0;
  CHECK_THROWS_WITH_AS(run(c, ps), doctest::Contains("samples_per_prompt = 0"), Error);
  c = base_config();
  c.accept_threshold = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(run(c, ps), doctest::Contains("accept_threshold is NaN"), Error);
  c = base_config();
  c.max_new_tokens = -1;
  CHECK_THROWS_WITH_AS(run(c, ps), doctest::Contains("max_new_tokens = -1"), Error);
  c = base_config();
  c.max_kept_per_prompt = -2;
  CHECK_THROWS_WITH_AS(run(c, ps), doctest::Contains("max_kept_per_prompt = -2"), Error);
  c = base_config();
  c.rollout_batch = -1;
  CHECK_THROWS_WITH_AS(run(c, ps), doctest::Contains("rollout_batch = -1"), Error);
  CHECK_THROWS_WITH_AS(run(base_config(), {}), doctest::Contains("problem list is empty"), Error);
  const std::vector<float> short_params(10);
  CHECK_THROWS_WITH_AS(rl::rejection_sample(m.net, std::span<const float>(short_params), ps, infer::Temperature{1.0f},
                                            CountTargets{}, base_config()),
                       doctest::Contains("10 parameters"), Error);
  model::Config big = test::tiny_policy_config();
  big.vocab_size = 300;
  Net other(big);
  const std::vector<float> other_params(other.num_params());
  CHECK_THROWS_WITH_AS(rl::rejection_sample(other, std::span<const float>(other_params), ps, infer::Temperature{1.0f},
                                            CountTargets{}, base_config()),
                       doctest::Contains("vocabulary has 300"), Error);
  // A reward that is not finite is the reward's bug, not a rejection.
  CHECK_THROWS_WITH_AS(rl::rejection_sample(m.net, std::span<const float>(m.params), ps, infer::Temperature{1.0f}, NanReward{},
                                            base_config()),
                       doctest::Contains("nan_reward scored row 0"), Error);
  // A problem whose prompt leaves no room under the model's context.
  std::vector<data::Problem> long_q = problems(1);
  long_q[0].question = std::string(30, '7');
  CHECK_THROWS_AS(run(base_config(), long_q), Error);

  // The source: nothing to train on, a zero batch, an example longer than max_seq.
  rl::AcceptedExample e{.problem = 4, .sample = 0, .prompt = {'q', data::Tokenizer::think}, .completion = {'A', 'B', data::Tokenizer::eos}};
  CHECK_THROWS_WITH_AS((void)rl::rejection_source({}, {}), doctest::Contains("no accepted examples"), Error);
  CHECK_THROWS_WITH_AS((void)rl::rejection_source({e}, {.batch = 0}), doctest::Contains("batch = 0"), Error);
  CHECK_THROWS_WITH_AS((void)rl::rejection_source({e}, {.max_seq = 4}), doctest::Contains("(problem 4) is 5 tokens"), Error);
  rl::AcceptedExample empty_prompt = e;
  empty_prompt.prompt.clear();
  CHECK_THROWS_WITH_AS((void)rl::rejection_source({empty_prompt}, {}), doctest::Contains("empty prompt"), Error);
  // One example, batch 3: the source repeats it, one epoch per row.
  train::TokenBatch b;
  rl::rejection_source({e}, {.batch = 3})(0, 0, b);
  CHECK(b.batch == 3);
  CHECK(b.seq == 5);
  CHECK(b.target_count() == 9);
}
