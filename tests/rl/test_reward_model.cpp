// The learned reward model: the Bradley-Terry gradient of every parameter against central
// differences (float64), the window rule and the tail tokenizer, hostile completions, batched
// against single scores, composition with the rule rewards, the errors on bad input, and a
// small float32 model learning to prefer correct arithmetic answers.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "reason/reward/format.hpp"
#include "reason/reward/score_batch.hpp"
#include "reason/reward/weighted.hpp"
#include "reason/rl/reward_model.hpp"
#include "rl/rl_test_util.hpp"

using namespace reason;
using test::RlNet;
using Tok = data::Tokenizer;

namespace {

using Net32 = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 16}>, ffn::SwiGLU>;
using Rm64 = rl::RewardModel<RlNet>;
using Rm32 = rl::RewardModel<Net32>;

/// rl_config() with the tokenizer's vocabulary (max_seq_len 8, so windows are easy to reach).
model::Config rm64_config() {
  model::Config c = test::rl_config();
  c.vocab_size = Tok::vocab_size;
  return c;
}

model::Config rm32_config(index_t width, index_t layers, index_t max_seq) {
  model::Config c;
  c.hidden_size = width;
  c.num_layers = layers;
  c.num_heads = width / 16;
  c.num_kv_heads = c.num_heads;
  c.intermediate_size = 2 * width;
  c.max_seq_len = max_seq;
  c.init_std = 0.1;
  return c;
}

std::vector<std::int32_t> random_ids(Philox& rng, std::size_t n) {
  std::vector<std::int32_t> v(n);
  for (auto& t : v) t = static_cast<std::int32_t>(rng.below(Tok::vocab_size));
  return v;
}

/// A level-1 comparison: chosen = the worked trace with the right answer, rejected = the same
/// trace with another level-1 problem's (different) answer.
struct ArithmeticComparison {
  data::Problem problem;
  std::string chosen, rejected;
  [[nodiscard]] rl::PreferencePair pair() const { return rl::preference_pair(problem, chosen, rejected); }
};

ArithmeticComparison arithmetic_comparison(Philox& rng) {
  ArithmeticComparison c{data::generate(1, rng), "", ""};
  std::string wrong;
  do wrong = data::generate(1, rng).answer;
  while (wrong == c.problem.answer);
  c.chosen = c.problem.trace + "</think><answer>" + c.problem.answer + "</answer>";
  c.rejected = c.problem.trace + "</think><answer>" + wrong + "</answer>";
  return c;
}

const data::Problem sample{"47+85=?", "132", "7+5=12:2,4+8+1=13:132", 1};

}  // namespace

TEST_CASE("RewardModel: the Bradley-Terry gradient of every parameter equals finite differences") {
  const std::uint64_t seed = test::test_seed();
  INFO("seed " << seed);
  Rm64 rm(rm64_config(), {.seed = seed + 5, .head_init_std = 0.5});
  Philox rng(seed, 61);
  // three pairs of different lengths; the last one is longer than max_seq_len = 8 (a window)
  std::vector<rl::PreferencePair> pairs = {{random_ids(rng, 3), random_ids(rng, 4), random_ids(rng, 2)},
                                           {random_ids(rng, 2), random_ids(rng, 1), random_ids(rng, 5)},
                                           {random_ids(rng, 4), random_ids(rng, 9), random_ids(rng, 0)}};
  std::vector<double> grads(rm.num_params(), 0.0);
  const rl::PairStats st = rm.accumulate_gradients(pairs, grads);

  // the loss is the mean of -log sigmoid(r_c - r_r), r read at each row's last token
  std::vector<std::vector<std::int32_t>> rows;
  for (const auto& p : pairs) rows.push_back(rm.window(p.prompt, p.chosen));
  for (const auto& p : pairs) rows.push_back(rm.window(p.prompt, p.rejected));
  CHECK(rows[2].size() == 8);
  std::vector<double> r(rows.size());
  rm.rewards(rows, r);
  double expected = 0, acc = 0;
  for (int i = 0; i < 3; ++i) {
    expected += std::log1p(std::exp(-(r[i] - r[i + 3]))) / 3;
    acc += r[i] > r[i + 3] ? 1.0 / 3 : 0.0;
  }
  CHECK(st.loss == doctest::Approx(expected).epsilon(1e-13));
  CHECK(st.accuracy == doctest::Approx(acc));
  CHECK(st.pairs == 3);
  CHECK(rm.evaluate(pairs).loss == st.loss);

  // every tensor carries gradient but the unused lm_head (exactly zero) and the bias, which
  // Bradley-Terry cannot see (d_c + d_r = 0 for each pair)
  for (const ParamInfo& p : rm.layout().params()) {
    CAPTURE(p.name);
    const double m = test::max_abs(std::span<const double>(grads).subspan(p.offset, p.numel));
    if (p.name == "lm_head.weight") CHECK(m == 0.0);
    else if (p.name == "reward_head.bias") CHECK(m < 1e-15);
    else CHECK(m > 1e-6);
  }

  auto eval = [&] { return rm.evaluate(pairs).loss; };
  const auto check = test::gradcheck(eval, rm.params(), grads, 1e-6, test::kFdStep);
  INFO(check.describe());
  CHECK(check.max_rel_error <= 1e-6);

  // gradients accumulate, and a normaliser of 2P pairs halves the loss and every gradient
  std::vector<double> g2(grads);
  const rl::PairStats half = rm.accumulate_gradients(pairs, g2, 6);
  CHECK(half.loss == doctest::Approx(st.loss / 2).epsilon(1e-13));
  double worst = 0;
  for (std::size_t i = 0; i < grads.size(); ++i) worst = std::max(worst, std::abs(g2[i] - 1.5 * grads[i]));
  CHECK(worst < 1e-13);
}

TEST_CASE("RewardModel: the layout is the backbone's, then the head, under their own names") {
  Rm64 rm(rm64_config());
  const RlNet net(rm64_config());
  const auto& ps = rm.layout().params();
  REQUIRE(ps.size() == net.layout().params().size() + 2);
  for (std::size_t i = 0; i < net.layout().params().size(); ++i) {
    CHECK(ps[i].name == net.layout().params()[i].name);
    CHECK(ps[i].offset == net.layout().params()[i].offset);
  }
  CHECK(ps[ps.size() - 2].name == "reward_head.weight");
  CHECK(ps[ps.size() - 2].shape == std::vector<index_t>{6});
  CHECK(ps.back().name == "reward_head.bias");
  CHECK(ps.back().shape == std::vector<index_t>{1});
  CHECK(rm.num_params() == net.num_params() + 7);
  CHECK(rm.backbone_params().size() == net.num_params());
  // the backbone starts as Net's own initialisation from the same seed
  std::vector<double> own(net.num_params());
  net.layout().initialize(std::span<double>(own), 1);
  CHECK(std::equal(own.begin(), own.end(), rm.backbone_params().begin()));
}

TEST_CASE("RewardModel: the window keeps the start of the prompt and the end of the completion") {
  const Rm64 rm(rm64_config());  // M = 8
  auto seq = [](int first, int n) {
    std::vector<std::int32_t> v;
    for (int i = 0; i < n; ++i) v.push_back(first + i);
    return v;
  };
  using V = std::vector<std::int32_t>;
  CHECK(rm.window(seq(0, 3), seq(100, 4)) == V{0, 1, 2, 100, 101, 102, 103});                  // fits
  CHECK(rm.window(seq(0, 3), seq(100, 10)) == V{0, 1, 2, 105, 106, 107, 108, 109});              // c = M - P = 5
  CHECK(rm.window(seq(0, 6), seq(100, 10)) == V{0, 1, 2, 3, 106, 107, 108, 109});                // c = M / 2 = 4
  CHECK(rm.window(seq(0, 12), seq(100, 2)) == V{0, 1, 2, 3, 4, 5, 100, 101});                    // c = K = 2
  CHECK(rm.window(seq(0, 12), {}) == seq(0, 8));                                                  // prompt only
  CHECK(rm.window({}, seq(100, 20)) == seq(112, 8));

  // score() tokenizes only the end of a long completion, with the same result
  const std::string long_text = std::string(5000, 'x') + "</think><answer>132</answer><eos>";
  CHECK(rm.tokens(long_text, sample) == rm.window(data::prompt_tokens(sample), Tok::encode(long_text)));
}

TEST_CASE("tail_tokens equals the end of the full encoding, whatever special strings it cuts") {
  Philox rng(test::test_seed(), 62);
  const std::vector<std::string> pieces = {"<", ">", "/", "a", "<think>", "</think>", "<answer>", "</answer>",
                                           "<eos>", "<pad>", "answer>", "</", "\xff", std::string(1, '\0')};
  for (int trial = 0; trial < 400; ++trial) {
    std::string text;
    const std::uint32_t n = rng.below(60);
    for (std::uint32_t i = 0; i < n; ++i) text += pieces[rng.below(static_cast<std::uint32_t>(pieces.size()))];
    const std::vector<std::int32_t> full = Tok::encode(text);
    for (std::size_t k : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{40}}) {
      CAPTURE(text);
      CAPTURE(k);
      const std::size_t keep = std::min(k, full.size());
      const std::vector<std::int32_t> expect(full.end() - static_cast<std::ptrdiff_t>(keep), full.end());
      CHECK(rl::detail::tail_tokens(text, k) == expect);
    }
  }
}

TEST_CASE("RewardModel: hostile completions get finite scores and never throw") {
  const Rm32 rm(rm32_config(32, 1, 64));
  std::string random_bytes(1 << 20, '\0');
  Philox rng(test::test_seed(), 63);
  for (char& c : random_bytes) c = static_cast<char>(rng.below(256));
  std::string specials;
  while (specials.size() < (1u << 20)) specials += "<answer></think><eos><pad><";
  const std::vector<std::string> hostile = {"",
                                            std::string("\0\0\0", 3),
                                            "\xff\xfe\x80\xc0",
                                            "<answer>",
                                            "</answer></answer><think>",
                                            std::string(1 << 20, 'x'),
                                            random_bytes,
                                            specials,
                                            std::string(1 << 20, '\0') + "</think><answer>132</answer>"};
  const data::Problem empty{};
  const data::Problem long_question{std::string(500, '9'), "1", "", 1};
  const auto t0 = std::chrono::steady_clock::now();
  for (const data::Problem* s : {&sample, &empty, &long_question}) {
    for (const std::string& h : hostile) {
      CAPTURE(h.size());
      float v = std::numeric_limits<float>::quiet_NaN();
      CHECK_NOTHROW(v = rm.score(h, *s));
      CHECK(std::isfinite(v));
      CHECK(rm.tokens(h, *s).size() <= 64);
      CHECK(!rm.tokens(h, *s).empty());
    }
  }
  // a megabyte costs a window, not a megabyte of tokens: all 27 scores in well under a second
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 2.0);

  // the same text scores the same; an empty completion reads the prompt's last token
  CHECK(rm.score("1</think><answer>2</answer>", sample) == rm.score("1</think><answer>2</answer>", sample));
  std::vector<double> r(1);
  rm.rewards(std::vector<std::vector<std::int32_t>>{data::prompt_tokens(sample)}, r);
  CHECK(rm.score("", sample) == static_cast<float>(r[0]));
}

TEST_CASE("RewardModel: diverged parameters give 0, a value beyond float's range is clamped") {
  Rm64 rm(rm64_config());
  const float before = rm.score("12", sample);
  CHECK(std::isfinite(before));
  rm.params().back() = 1e300;  // reward_head.bias
  CHECK(rm.score("12", sample) == std::numeric_limits<float>::max());
  rm.params().back() = std::numeric_limits<double>::quiet_NaN();
  CHECK(rm.score("12", sample) == 0.0f);
}

TEST_CASE_TEMPLATE("RewardModel: batched scores equal single scores", Rm, Rm64, Rm32) {
  const bool f64 = std::is_same_v<Rm, Rm64>;
  const model::Config cfg = f64 ? rm64_config() : rm32_config(32, 2, 40);
  Rm rm(cfg, {.seed = 9, .head_init_std = 0.5, .score_rows = 3});
  const std::vector<std::string> completions = {"",
                                                "7+5=12:2,4+8+1=13:132</think><answer>132</answer>",
                                                "1",
                                                std::string(100, '5') + "</answer>",
                                                "x</think><answer>131</answer><eos>",
                                                std::string("\0\xff", 2),
                                                "12"};
  const std::vector<data::Problem> samples = {sample, sample, {"3-5=?", "-2", "-(5-3),5-3=2,-2", 1}, sample,
                                              sample, {}, sample};
  std::vector<float> batched(completions.size(), -7.0f);
  rm.score_batch(completions, samples, batched);
  const double tol = f64 ? 1e-12 : 1e-5;
  for (std::size_t i = 0; i < completions.size(); ++i) {
    CAPTURE(i);
    const float single = rm.score(completions[i], samples[i]);
    CHECK(std::abs(batched[i] - single) <= tol * std::max(1.0f, std::abs(single)));
  }
  // the scores differ from each other (each row is read at its own last position)
  CHECK(batched[0] != batched[1]);
  CHECK(batched[1] != batched[4]);
  // center() shifts the bias so that these completions score 0 on average
  const double mean = rm.center(completions, samples);
  std::vector<float> centred(completions.size());
  rm.score_batch(completions, samples, centred);
  double centred_mean = 0;
  for (std::size_t i = 0; i < completions.size(); ++i) {
    CHECK(centred[i] == doctest::Approx(batched[i] - mean).epsilon(1e-5));
    centred_mean += centred[i] / static_cast<double>(completions.size());
  }
  CHECK(std::abs(centred_mean) < 1e-5);
  batched = centred;
  // and the generic reward::score_batch agrees with the member one
  std::vector<float> generic(completions.size());
  reward::score_batch(rm, completions, samples, generic);
  for (std::size_t i = 0; i < completions.size(); ++i)
    CHECK(std::abs(batched[i] - generic[i]) <= tol * std::max(1.0f, std::abs(generic[i])));
}

TEST_CASE("RewardModel satisfies reward::Reward and composes with the rule rewards") {
  static_assert(reward::Reward<Rm32> && reward::Reward<Rm64>);
  static_assert(!reward::BoundedReward<Rm32>);  // a learned reward states no range
  CHECK(std::string(Rm32::name) == "reward_model");

  using Mixed = reward::Weighted<reward::Weights{0.5f, 0.5f}, reward::Format, Rm32>;
  static_assert(reward::Reward<Mixed>);
  static_assert(Mixed::min_score == -std::numeric_limits<float>::infinity());
  const model::Config cfg = rm32_config(32, 1, 64);
  const Rm32 alone(cfg, {.seed = 4});
  const Mixed mixed{{reward::Format{}, Rm32(cfg, {.seed = 4})}};  // the same model, held by value
  for (const std::string c : {"7+5=12:2,4+8+1=13:132</think><answer>132</answer>", "no template", ""}) {
    CAPTURE(c);
    const float expect = 0.5f * reward::Format{}.score(c, sample) + 0.5f * alone.score(c, sample);
    CHECK(mixed.score(c, sample) == doctest::Approx(expect).epsilon(1e-6));
  }
  std::vector<std::string> cs = {"a</think><answer>1</answer>", "b"};
  std::vector<data::Problem> ss = {sample, sample};
  std::vector<float> out(2);
  reward::score_batch(mixed, cs, ss, out);
  CHECK(out[0] == doctest::Approx(0.5f + 0.5f * alone.score(cs[0], sample)).epsilon(1e-6));
  CHECK(out[1] == doctest::Approx(0.5f * alone.score(cs[1], sample)).epsilon(1e-6));
}

TEST_CASE("RewardModel: bad input is an error that names the tensor and its shape") {
  CHECK_THROWS_WITH_AS(Rm64(test::rl_config()), doctest::Contains("vocabulary has 11 tokens"), Error);
  CHECK_THROWS_WITH_AS(Rm64(rm64_config(), {.score_rows = 0}), doctest::Contains("score_rows = 0"), Error);
  Rm64 rm(rm64_config());
  std::vector<double> grads(rm.num_params(), 0.0);
  CHECK_THROWS_WITH_AS(rm.accumulate_gradients({}, grads),
                       doctest::Contains("pairs: shape [0], expected at least one preference pair"), Error);
  CHECK_THROWS_WITH_AS((void)rm.evaluate({}), doctest::Contains("RewardModel::evaluate: pairs: shape [0]"), Error);
  std::vector<rl::PreferencePair> pairs = {{{1, 2}, {3}, {4}}, {{1}, {2, 3, 999}, {4}}};
  CHECK_THROWS_WITH_AS(rm.accumulate_gradients(pairs, grads),
                       doctest::Contains("pairs[1].chosen[2] = 999 is outside the vocabulary [0, 262)"), Error);
  pairs[1] = {{}, {}, {5}};
  CHECK_THROWS_WITH_AS((void)rm.evaluate(pairs), doctest::Contains("pairs[1]: prompt: shape [0]"), Error);
  pairs[1] = {{1}, {-1}, {5}};
  CHECK_THROWS_WITH_AS((void)rm.evaluate(pairs), doctest::Contains("pairs[1].chosen[0] = -1"), Error);
  pairs.pop_back();
  std::vector<double> short_grads(5);
  const std::string want = "grads: shape [5], expected [" + std::to_string(rm.num_params()) + "]";
  CHECK_THROWS_WITH_AS(rm.accumulate_gradients(pairs, short_grads), doctest::Contains(want.c_str()), Error);
  CHECK(test::max_abs(grads) == 0.0);  // nothing was accumulated by the failed calls

  std::vector<double> r(1);
  CHECK_THROWS_WITH_AS(rm.rewards(std::vector<std::vector<std::int32_t>>{std::vector<std::int32_t>(9, 1)}, r),
                       doctest::Contains("rows[0]: shape [9], expected 1 to max_seq_len = 8 tokens"), Error);
  CHECK_THROWS_WITH_AS(rm.rewards(std::vector<std::vector<std::int32_t>>{{}}, r),
                       doctest::Contains("rows[0]: shape [0]"), Error);
  CHECK_THROWS_WITH_AS(rm.rewards(std::vector<std::vector<std::int32_t>>{{1}, {2}}, r),
                       doctest::Contains("out has 1 slots for 2 rows"), Error);
  const std::vector<std::string> cs = {"a", "b"};
  const std::vector<data::Problem> ss(1);
  std::vector<float> out(2);
  CHECK_THROWS_WITH_AS(rm.score_batch(cs, ss, out), doctest::Contains("completions has 2 items but samples has 1"), Error);
}

TEST_CASE("RewardModel learns to prefer the correct answer on level-1 arithmetic") {
  // 2 x 64 float32 model, 64 AdamW steps of 32 pairs (about 5 s on one core in Release):
  // held-out pair accuracy goes from chance to > 0.8 (0.91 to 0.97 over twelve seeds).
  Rm32 rm(rm32_config(64, 2, 48), {.seed = test::test_seed()});
  rl::RewardModelTrainer<Net32> trainer(
      rm, optim::AdamW{{.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.0}}, 1.0);
  Philox train_rng(test::test_seed(), 64), held_rng(test::test_seed(), 65);
  std::vector<ArithmeticComparison> held_text;
  std::vector<rl::PreferencePair> held;
  for (int i = 0; i < 256; ++i) {
    held_text.push_back(arithmetic_comparison(held_rng));
    held.push_back(held_text.back().pair());
  }
  const rl::PairStats before = rm.evaluate(held);
  CHECK(before.loss == doctest::Approx(std::log(2.0)).epsilon(0.05));
  rl::RewardStepStats last;
  for (int step = 0; step < 64; ++step) {
    std::vector<rl::PreferencePair> batch;
    for (int i = 0; i < 32; ++i) batch.push_back(arithmetic_comparison(train_rng).pair());
    last = trainer.step(batch, 3e-3);
  }
  CHECK(trainer.updates() == 64);
  CHECK(last.update == 64);
  CHECK(std::isfinite(last.grad_norm));
  const rl::PairStats after = rm.evaluate(held);
  INFO("held-out: loss " << before.loss << " -> " << after.loss << ", accuracy " << before.accuracy << " -> "
                         << after.accuracy << " (seed " << test::test_seed() << ")");
  CHECK(after.accuracy > 0.8);
  CHECK(after.loss < 0.4);
  CHECK(after.mean_margin > 1.0);
  // score(), the text path, agrees with the pairs it was trained on
  double agree = 0;
  for (const ArithmeticComparison& c : held_text)
    agree += (rm.score(c.chosen, c.problem) > rm.score(c.rejected, c.problem)) ? 1.0 / 256 : 0.0;
  CHECK(agree == doctest::Approx(after.accuracy).epsilon(0.02));
}
