// rl::evaluate on a tiny random model with a test "accuracy" that a random policy half-earns:
// every count equals a recount from independent greedy decoding and sampling, pass@k equals the
// estimator applied to those counts, the standard errors follow their formulas, a seed fixes
// the sampled half, and bad configurations are refused. Also data::sft_source's flawed share.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"
#include "reason/data/misconception.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/sft_source.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/rl/evaluate.hpp"
#include "reason/rl/pass_at_k.hpp"
#include "tiny_policy.hpp"

using namespace reason;

namespace {

using Net = test::TinyNet;
using test::ContainsTarget;

/// "Formatted" when the completion is at most two tokens long as text of <= 12 bytes.
struct ShortText {
  static constexpr const char* name = "short_text";
  [[nodiscard]] float score(std::string_view completion, const data::Problem&) const {
    return completion.size() <= 12 ? 1.0f : 0.0f;
  }
};

/// n questions of levels 1 and 2 alternately.
std::vector<data::Problem> problems(index_t n) {
  std::vector<data::Problem> out = test::target_prompts(0, n, "abcdefghijklmnopqrstuvwxyz0123456789", 3, 1000);
  for (std::size_t i = 0; i < out.size(); ++i) out[i].difficulty = 1 + static_cast<int>(i % 2);
  return out;
}

}  // namespace

TEST_CASE("evaluate: greedy and sampled counts equal an independent recount; pass@k and SEs follow their formulas") {
  Net net(test::tiny_policy_config(16, 0.5));  // peaked: greedy outputs differ between questions
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), 5);
  const std::vector<data::Problem> ps = problems(40);
  rl::EvalConfig cfg;
  cfg.max_new_tokens = 6;
  cfg.samples = 6;
  cfg.ks = {1, 2, 5};
  cfg.seed = 9;
  cfg.batch = 7;  // several decode states
  const rl::EvalReport r = rl::evaluate<Net, ContainsTarget, ShortText>(net, params.data(), ps, cfg);

  // Greedy, recounted with infer::generate_greedy.
  std::vector<std::vector<std::int32_t>> prompts;
  for (const auto& p : ps) prompts.push_back(data::prompt_tokens(p));
  std::vector<std::vector<std::int32_t>> greedy;  // one prompt at a time: max_len is per call
  for (const auto& prompt : prompts)
    greedy.push_back(infer::generate_greedy(net, params.data(), std::span(&prompt, 1),
                                            static_cast<index_t>(prompt.size()) + 6, data::Tokenizer::eos)[0]);
  index_t correct = 0, formatted = 0, level1 = 0;
  double tokens = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const std::string text = data::Tokenizer::decode(greedy[i]);
    const bool ok = ContainsTarget{}.score(text, ps[i]) == 1.0f;
    CHECK(r.rows[i].completion == text);
    CHECK(r.rows[i].correct == ok);
    correct += ok;
    formatted += ShortText{}.score(text, ps[i]) == 1.0f;
    tokens += static_cast<double>(greedy[i].size());
    level1 += ps[i].difficulty == 1 && ok;
  }
  REQUIRE(correct > 5);
  REQUIRE(correct < 35);  // the test reward is half-earned: the counts mean something
  CHECK(r.problems == 40);
  CHECK(r.accuracy == doctest::Approx(static_cast<double>(correct) / 40));
  CHECK(r.accuracy_se == doctest::Approx(std::sqrt(r.accuracy * (1 - r.accuracy) / 40)));
  CHECK(r.format_rate == doctest::Approx(static_cast<double>(formatted) / 40));
  CHECK(r.mean_tokens == doctest::Approx(tokens / 40));
  CHECK(r.levels.at(1).problems == 20);
  CHECK(r.levels.at(1).correct == level1);

  // Sampled, recounted from a rollout with the same seed.
  infer::RolloutConfig rc;
  rc.samples_per_prompt = 6;
  rc.max_new_tokens = 6;
  rc.eos = data::Tokenizer::eos;
  rc.seed = 9;
  const infer::Rollouts sampled = infer::rollout(net, params.data(), std::span<const std::vector<std::int32_t>>(prompts),
                                                 infer::Temperature{1.0f}, rc);
  std::vector<rl::PassCount> counts(ps.size());
  double all = 0;
  for (const infer::Completion& c : sampled.rows) {
    const bool ok = ContainsTarget{}.score(data::Tokenizer::decode(c.tokens), ps[static_cast<std::size_t>(c.prompt)]) == 1.0f;
    counts[static_cast<std::size_t>(c.prompt)].n += 1;
    counts[static_cast<std::size_t>(c.prompt)].c += ok;
    all += ok;
  }
  for (std::size_t i = 0; i < ps.size(); ++i) CHECK(r.rows[i].sampled_correct == counts[i].c);
  CHECK(r.sampled_accuracy == doctest::Approx(all / 240));
  REQUIRE(r.pass_at_k.size() == 3);
  for (const auto& [k, v] : r.pass_at_k) CHECK(v == doctest::Approx(rl::mean_pass_at_k(std::span<const rl::PassCount>(counts), k)));
  CHECK(r.pass_at_k[0].second == doctest::Approx(r.sampled_accuracy));  // pass@1 is the mean correctness
  CHECK(r.pass_at_k[0].second <= r.pass_at_k[1].second);
  CHECK(r.pass_at_k[1].second <= r.pass_at_k[2].second);

  // The same seed gives the same report; another seed other samples but the same greedy half.
  const rl::EvalReport again = rl::evaluate<Net, ContainsTarget, ShortText>(net, params.data(), ps, cfg);
  CHECK(again.sampled_accuracy == r.sampled_accuracy);
  cfg.seed = 10;
  const rl::EvalReport other = rl::evaluate<Net, ContainsTarget, ShortText>(net, params.data(), ps, cfg);
  CHECK(other.accuracy == r.accuracy);
  bool differs = false;
  for (std::size_t i = 0; i < ps.size(); ++i) differs |= other.rows[i].sampled_correct != r.rows[i].sampled_correct;
  CHECK(differs);

  // The paired SE: sqrt(var(d) / n) of the per-problem differences.
  std::vector<rl::EvalRow> a(4), b(4);
  a[0].correct = true;                      // d = -1
  b[1].correct = true;                      // d = +1
  b[2].correct = a[2].correct = true;       // d = 0
  const double mean = 0, var = 2.0 / 4 - mean * mean;
  CHECK(rl::paired_difference_se(a, b) == doctest::Approx(std::sqrt(var / 4)));
}

TEST_CASE("evaluate: samples = 0 is greedy only; bad configurations and inputs are refused") {
  Net net(test::tiny_policy_config(16, 0.5));  // peaked: greedy outputs differ between questions
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), 5);
  const std::vector<data::Problem> ps = problems(4);
  rl::EvalConfig cfg;
  cfg.max_new_tokens = 4;
  cfg.samples = 0;
  const rl::EvalReport r = rl::evaluate<Net, ContainsTarget, ShortText>(net, params.data(), ps, cfg);
  CHECK(r.samples == 0);
  CHECK(r.pass_at_k.empty());

  auto run = [&](std::span<const data::Problem> problems_, const rl::EvalConfig& c) {
    return rl::evaluate<Net, ContainsTarget, ShortText>(net, params.data(), problems_, c);
  };
  auto refused = [&](const rl::EvalConfig& c, const char* what) {
    CHECK_THROWS_WITH_AS(run(ps, c), doctest::Contains(what), Error);
  };
  rl::EvalConfig c = cfg;
  c.samples = 4;
  c.ks = {5};
  refused(c, "pass@5 needs 1 <= k <= samples = 4");
  c = cfg;
  c.temperature = 0;
  refused(c, "temperature");
  c = cfg;
  c.max_new_tokens = 0;
  refused(c, "max_new_tokens");
  CHECK_THROWS_WITH_AS(run(std::span<const data::Problem>(), cfg), doctest::Contains("no problems"), Error);
  std::vector<rl::EvalRow> three(3), two(2);
  CHECK_THROWS_AS((void)rl::paired_difference_se(three, two), Error);
}

TEST_CASE("sft_source: flawed_fraction writes that share of order-sensitive level-3 examples left to right") {
  const data::HeldOut held = data::make_held_out(1, 4);
  const data::TrainingSampler sampler(held);
  const data::Curriculum curriculum(100, {{"level 3", 1.0, {0.0, 0.0, 1.0, 0.0}}});
  // Share of the order-sensitive rows whose answer is the left-to-right one.
  const auto flawed_share = [&](double fraction) {
    const train::BatchSource src =
        data::sft_source(sampler, curriculum, {.seed = 2, .batch = 50, .max_seq = 96, .flawed_fraction = fraction});
    index_t sensitive = 0, flawed = 0;
    for (std::int64_t step = 0; step < 20; ++step) {
      train::TokenBatch b, again;
      src(step, 0, b);
      src(step, 0, again);
      CHECK(b.tokens == again.tokens);  // a pure function of (step, micro)
      CHECK(b.targets == again.targets);
      for (index_t r = 0; r < b.batch; ++r) {
        const std::vector<std::int32_t> row(b.tokens.begin() + r * b.seq, b.tokens.begin() + (r + 1) * b.seq);
        const std::string text = data::Tokenizer::decode(row);
        const std::string question = text.substr(0, text.find("<think>"));
        const auto parsed = data::parse_completion(text.substr(question.size()));
        REQUIRE(parsed.has_value());
        const auto truth = data::solve(question);
        REQUIRE(truth.has_value());
        const data::Problem right{question, std::to_string(*truth), "", 3};
        const std::optional<data::Problem> wrong = data::left_to_right(right);
        if (!wrong) {
          CHECK(parsed->answer == right.answer);  // nothing to get wrong: always the right solution
          continue;
        }
        ++sensitive;
        if (parsed->answer == wrong->answer) {
          ++flawed;
          CHECK(parsed->think == wrong->trace);
        } else {
          CHECK(parsed->answer == right.answer);
        }
      }
    }
    REQUIRE(sensitive > 300);
    return static_cast<double>(flawed) / static_cast<double>(sensitive);
  };
  CHECK(flawed_share(0.0) == 0.0);
  CHECK(flawed_share(1.0) == 1.0);
  const double share = flawed_share(0.5);
  CHECK(share > 0.42);  // > 300 rows: SE < 0.029
  CHECK(share < 0.58);
  CHECK_THROWS_AS(data::sft_source(sampler, curriculum, {.batch = 4, .max_seq = 96, .flawed_fraction = 1.5}), Error);
  CHECK_THROWS_AS(data::sft_source(sampler, curriculum, {.batch = 0, .max_seq = 96}), Error);
}
