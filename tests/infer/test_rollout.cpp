// The rollout engine on a tiny random transformer: reproducibility from the seed, independence of
// the sub-batch size, greedy equals generate_greedy, the recorded log-probs equal the training
// forward's log_softmax on prompt + completion, stopping on eos and on the length limits, and
// errors on bad prompts and NaN logits.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <span>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/kernels/cross_entropy.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;
using Prompts = std::vector<std::vector<std::int32_t>>;

model::Config tiny_config() {
  model::Config c;
  c.vocab_size = 13;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.intermediate_size = 24;
  c.max_seq_len = 24;
  c.init_std = 0.3;
  return c;
}

struct Fixture {
  Net net{tiny_config()};
  std::vector<float> params;
  Prompts prompts;

  explicit Fixture(std::uint64_t seed, index_t n_prompts = 3) : params(net.num_params()) {
    net.layout().initialize(std::span<float>(params), seed);
    Philox rng(seed, 21);
    for (index_t i = 0; i < n_prompts; ++i) {
      std::vector<std::int32_t> p(1 + rng.below(5));  // lengths 1..5: lockstep with teacher forcing
      for (auto& t : p) t = static_cast<std::int32_t>(rng.below(13));
      prompts.push_back(p);
    }
  }
  template <class S>
  infer::Rollouts run(const S& sampler, const infer::RolloutConfig& cfg) const {
    return infer::rollout(net, params.data(), std::span<const std::vector<std::int32_t>>(prompts), sampler, cfg);
  }
};

bool same_tokens(const infer::Rollouts& a, const infer::Rollouts& b) {
  if (a.size() != b.size()) return false;
  for (index_t r = 0; r < a.size(); ++r)
    if (a.rows[static_cast<std::size_t>(r)].tokens != b.rows[static_cast<std::size_t>(r)].tokens) return false;
  return true;
}

/// max |logp_rollout - logp_train| over every generated token, where logp_train is log_softmax of
/// Transformer::logits on the padded batch of prompt + completion (causal: padding changes nothing).
double max_logp_gap(Net& net, const std::vector<float>& params, const Prompts& prompts, const infer::Rollouts& ro) {
  const index_t B = ro.size(), V = net.config().vocab_size;
  index_t L = 1;
  std::vector<std::vector<std::int32_t>> seqs;
  for (const auto& c : ro.rows) {
    seqs.push_back(infer::full_sequence(std::span<const std::vector<std::int32_t>>(prompts), c));
    L = std::max<index_t>(L, static_cast<index_t>(seqs.back().size()));
  }
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(B * L), 0);
  for (index_t b = 0; b < B; ++b) std::copy(seqs[b].begin(), seqs[b].end(), tokens.begin() + b * L);
  net.reserve(B, L);
  std::vector<float> logits(static_cast<std::size_t>(B * L * V)), ls(static_cast<std::size_t>(V));
  net.logits(params.data(), make_view(static_cast<const std::int32_t*>(tokens.data()), B, L), make_view(logits.data(), B * L, V));
  double worst = 0;
  for (index_t b = 0; b < B; ++b) {
    const auto& c = ro.rows[static_cast<std::size_t>(b)];
    const auto plen = static_cast<index_t>(prompts[static_cast<std::size_t>(c.prompt)].size());
    for (std::size_t j = 0; j < c.tokens.size(); ++j) {
      const index_t row = b * L + plen - 1 + static_cast<index_t>(j);  // predicts token plen + j
      kernels::log_softmax<float>(std::span<const float>(logits.data() + row * V, static_cast<std::size_t>(V)),
                                  std::span<float>(ls));
      worst = std::max(worst, std::abs(c.logps[j] - static_cast<double>(ls[static_cast<std::size_t>(c.tokens[j])])));
    }
  }
  return worst;
}

}  // namespace

TEST_CASE("Rollout rows are prompt-major with their indices, and full_sequence is prompt + completion") {
  Fixture f(test::test_seed());
  const auto ro = f.run(infer::Temperature{1.0f}, {.samples_per_prompt = 4, .max_new_tokens = 5, .seed = 1});
  REQUIRE(ro.size() == 12);
  for (index_t i = 0; i < 3; ++i)
    for (index_t g = 0; g < 4; ++g) {
      const auto& c = ro.at(i, g);
      CHECK(&c == &ro.rows[static_cast<std::size_t>(i * 4 + g)]);
      CHECK(c.prompt == i);
      CHECK(c.sample == g);
      CHECK(c.tokens.size() == 5);
      CHECK(c.logps.size() == 5);
      CHECK(c.sampler_logps.size() == 5);
      auto expect = f.prompts[static_cast<std::size_t>(i)];
      expect.insert(expect.end(), c.tokens.begin(), c.tokens.end());
      CHECK(infer::full_sequence(std::span<const std::vector<std::int32_t>>(f.prompts), c) == expect);
    }
  CHECK_THROWS_WITH_AS((void)ro.at(3, 0), doctest::Contains("out of range"), Error);
}

TEST_CASE("A seed reproduces a rollout, another seed changes it, and samples of one prompt differ") {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Fixture f(seed);
  const infer::RolloutConfig cfg{.samples_per_prompt = 4, .max_new_tokens = 10, .seed = seed};
  const auto a = f.run(infer::TopP{.p = 0.95f}, cfg);
  const auto b = f.run(infer::TopP{.p = 0.95f}, cfg);
  CHECK(same_tokens(a, b));
  for (index_t r = 0; r < a.size(); ++r) CHECK(a.rows[r].logps == b.rows[r].logps);
  auto other = cfg;
  other.seed = seed + 1;
  CHECK_FALSE(same_tokens(a, f.run(infer::TopP{.p = 0.95f}, other)));
  bool differ = false;
  for (index_t i = 0; i < 3; ++i) differ = differ || a.at(i, 0).tokens != a.at(i, 1).tokens;
  CHECK(differ);
}

TEST_CASE("Sub-batches of max_batch rows give the same rollout as one batch") {
  const std::uint64_t seed = test::test_seed();
  Fixture f(seed, 4);
  infer::RolloutConfig cfg{.samples_per_prompt = 3, .max_new_tokens = 8, .seed = seed};
  const auto whole = f.run(infer::Temperature{1.2f}, cfg);
  for (index_t max_batch : {1, 5}) {  // 12 rows: twelve of one, and 5 + 5 + 2
    cfg.max_batch = max_batch;
    const auto chunked = f.run(infer::Temperature{1.2f}, cfg);
    CHECK(same_tokens(whole, chunked));
    double gap = 0;
    for (index_t r = 0; r < whole.size(); ++r)
      for (std::size_t j = 0; j < whole.rows[r].logps.size() && j < chunked.rows[r].logps.size(); ++j)
        gap = std::max(gap, std::abs(whole.rows[r].logps[j] - chunked.rows[r].logps[j]));
    MESSAGE("max_batch = ", max_batch, ": max |log p - log p(one batch)| = ", gap);
    CHECK(gap <= 1e-5);  // the GEMMs may block a batch of 1 or 5 rows differently from 12: ~1 ulp
  }
}

TEST_CASE("A greedy rollout equals generate_greedy, with and without eos") {
  const std::uint64_t seed = test::test_seed();
  Fixture f(seed, 5);
  const auto prompts = std::span<const std::vector<std::int32_t>>(f.prompts);
  const index_t max_len = 14;
  const auto free_run = infer::generate_greedy(f.net, f.params.data(), prompts, max_len, -1);
  const std::int32_t eos = free_run[0][2];  // prompt 0 stops on its third token at the latest
  for (std::int32_t stop : {std::int32_t{-1}, eos}) {
    CAPTURE(stop);
    const auto greedy = infer::generate_greedy(f.net, f.params.data(), prompts, max_len, stop);
    const infer::RolloutConfig cfg{.samples_per_prompt = 2, .max_len = max_len, .eos = stop, .seed = seed};
    const auto a = f.run(infer::Greedy{}, cfg);
    const auto b = f.run(infer::Temperature{0.0f}, cfg);
    const auto c = f.run(infer::TopP{.p = 0.5f, .temperature = 0.0f}, cfg);
    for (index_t i = 0; i < 5; ++i)
      for (index_t g = 0; g < 2; ++g) {
        CHECK(a.at(i, g).tokens == greedy[static_cast<std::size_t>(i)]);
        CHECK(b.at(i, g).tokens == greedy[static_cast<std::size_t>(i)]);
        CHECK(c.at(i, g).tokens == greedy[static_cast<std::size_t>(i)]);
      }
    if (stop >= 0) CHECK(a.at(0, 0).stopped_on_eos);
  }
}

TEST_CASE("Recorded log-probs equal log_softmax of the training forward on prompt + completion") {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Fixture f(seed, 4);
  double worst = 0;
  const infer::RolloutConfig cfg{.samples_per_prompt = 4, .max_new_tokens = 12, .eos = 0, .seed = seed};
  const auto t = f.run(infer::Temperature{1.0f}, cfg);
  const auto k = f.run(infer::TopK<4>{.temperature = 0.7f}, cfg);
  const auto p = f.run(infer::TopP{.p = 0.8f, .temperature = 1.3f}, cfg);
  for (const auto* ro : {&t, &k, &p}) worst = std::max(worst, max_logp_gap(f.net, f.params, f.prompts, *ro));
  MESSAGE("max |log p_rollout - log p_train| over 3 x 16 rows (fp32): ", worst);
  CHECK(worst <= 1e-5);
  // at temperature 1 with no truncation, the sampled distribution is the model's
  double gap = 0;
  for (const auto& c : t.rows)
    for (std::size_t j = 0; j < c.tokens.size(); ++j) gap = std::max(gap, std::abs(c.logps[j] - c.sampler_logps[j]));
  CHECK(gap <= 1e-5);
  // and the check has teeth: the log-probs one position off are far from the recorded ones
  auto shifted = t;
  for (auto& c : shifted.rows) std::rotate(c.logps.begin(), c.logps.begin() + 1, c.logps.end());
  CHECK(max_logp_gap(f.net, f.params, f.prompts, shifted) > 1e-2);
}

TEST_CASE("Rows stop on eos (kept last) or at max_new_tokens or max_len, whichever comes first") {
  const std::uint64_t seed = test::test_seed();
  Fixture f(seed);
  f.prompts = {{1}, {2, 3, 4, 5, 6}, {7, 8}, {9, 10, 11, 12}};  // room under max_len: 9, 5, 8, 6
  infer::RolloutConfig cfg{.samples_per_prompt = 3, .max_new_tokens = 7, .max_len = 10, .seed = seed};
  const auto free_run = f.run(infer::Temperature{1.0f}, cfg);  // no eos: every row stops on a limit
  bool by_new = false, by_len = false;
  for (const auto& c : free_run.rows) {
    const auto plen = static_cast<index_t>(f.prompts[static_cast<std::size_t>(c.prompt)].size());
    const index_t expect = std::min<index_t>(7, 10 - plen);
    CHECK(static_cast<index_t>(c.tokens.size()) == expect);
    CHECK_FALSE(c.stopped_on_eos);
    (expect == 7 ? by_new : by_len) = true;
  }
  CHECK(by_new);
  CHECK(by_len);

  cfg.eos = free_run.rows[0].tokens[2];  // row 0 draws the same tokens again, so it stops by its third
  const auto ro = f.run(infer::Temperature{1.0f}, cfg);
  CHECK(ro.rows[0].stopped_on_eos);
  CHECK(ro.rows[0].tokens.size() <= 3);
  index_t eos_rows = 0;
  for (const auto& c : ro.rows) {
    const auto plen = static_cast<index_t>(f.prompts[static_cast<std::size_t>(c.prompt)].size());
    const auto first = std::find(c.tokens.begin(), c.tokens.end(), cfg.eos);
    if (c.stopped_on_eos) {
      ++eos_rows;
      CHECK(first + 1 == c.tokens.end());  // eos is the last token and the only one
    } else {
      CHECK(first == c.tokens.end());
      CHECK(static_cast<index_t>(c.tokens.size()) == std::min<index_t>(7, 10 - plen));
    }
    // a row's tokens before it stopped are those of the free run: same stream, same logits
    CHECK(std::equal(c.tokens.begin(), c.tokens.end(), free_run.rows[static_cast<std::size_t>(&c - ro.rows.data())].tokens.begin()));
  }
  CHECK(eos_rows >= 1);
}

TEST_CASE("Rollout errors: empty or too long prompts, bad tokens and settings, NaN logits naming the row") {
  Fixture f(test::test_seed());
  const infer::Temperature s{1.0f};
  auto run = [&](const Prompts& prompts, const infer::RolloutConfig& cfg) {
    return infer::rollout(f.net, f.params.data(), std::span<const std::vector<std::int32_t>>(prompts), s, cfg);
  };
  CHECK_THROWS_WITH_AS(run({{1, 2}, {}}, {}), doctest::Contains("prompt 1 is empty"), Error);
  CHECK_THROWS_WITH_AS(run({{1, 2, 3}}, {.max_len = 3}), doctest::Contains("prompt 0 has 3 tokens"), Error);
  CHECK_THROWS_WITH_AS(run({{1, 13}}, {}), doctest::Contains("prompt 0 token 1 = 13"), Error);
  CHECK_THROWS_WITH_AS(run({{1}}, {.max_len = 25}), doctest::Contains("max_seq_len = 24"), Error);
  CHECK_THROWS_WITH_AS(run({{1}}, {.samples_per_prompt = 0}), doctest::Contains("samples_per_prompt = 0"), Error);
  CHECK_THROWS_WITH_AS(run({{1}}, {.eos = 13}), doctest::Contains("eos = 13"), Error);
  CHECK(run({}, {}).size() == 0);
  std::fill(f.params.end() - 13 * 16, f.params.end(), std::nanf(""));  // the LM head: every logit NaN
  CHECK_THROWS_WITH_AS(run({{1, 2}}, {.samples_per_prompt = 2}), doctest::Contains("has a NaN logit"), Error);
  CHECK_THROWS_WITH_AS(run({{1, 2}}, {.samples_per_prompt = 1}), doctest::Contains("row 0"), Error);
}

TEST_CASE("Rollout throughput on the tiny model (reported)") {
  Fixture f(test::test_seed(), 8);
  const infer::RolloutConfig cfg{.samples_per_prompt = 8, .max_new_tokens = 16, .seed = 3};
  const auto t0 = std::chrono::steady_clock::now();
  const auto ro = f.run(infer::TopP{.p = 0.9f}, cfg);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  index_t tokens = 0;
  for (const auto& c : ro.rows) tokens += static_cast<index_t>(c.tokens.size());
  MESSAGE("64 rows, ", tokens, " tokens sampled in ", s * 1e3, " ms (", static_cast<double>(tokens) / s, " tokens/s)");
  CHECK(tokens == 64 * 16);
}
