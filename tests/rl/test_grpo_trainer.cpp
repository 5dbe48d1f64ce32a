// The GRPO loop on a tiny random byte-level model: GRPO raises a reward the model half-earns
// at random and the sign-flipped control lowers it; the KL to a reference equal to the initial
// policy starts at 0 and stays >= 0; the first pass of every step has ratio 1; a seed
// determines the run; micro-batches accumulate to the full-batch gradient; dynamic sampling
// drops all-equal groups (a constant reward leaves the parameters untouched); a composed
// reward::Weighted reports its components.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/reward/accuracy.hpp"
#include "reason/reward/format.hpp"
#include "reason/reward/weighted.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/grpo_trainer.hpp"
#include "support/gradcheck.hpp"
#include "tiny_policy.hpp"

using namespace reason;

namespace {

using Net = test::TinyNet;
using test::ContainsTarget;
using test::target_prompts;

/// The same score for everything: every group is uniform.
struct Constant {
  static constexpr const char* name = "constant";
  [[nodiscard]] float score(std::string_view, const data::Problem&) const { return 0.5f; }
};

static_assert(reward::Reward<ContainsTarget> && reward::Reward<Constant>);
// The slot checks accept the real policies and refuse the wrong ones.
static_assert(rl::GrpoPolicyModel<Net> && !rl::GrpoPolicyModel<optim::AdamW>);
static_assert(rl::GrpoLoss<rl::Grpo<rl::GrpoConfig{}>, float> && !rl::GrpoLoss<optim::AdamW, float>);

rl::GrpoTrainerConfig base_config() {
  rl::GrpoTrainerConfig c;
  c.prompts_per_step = 8;
  c.group_size = 8;
  c.max_new_tokens = 4;
  c.beta = 0.0;
  c.schedule = {.peak_lr = 1e-2, .min_lr = 1e-2, .warmup_steps = 0, .total_steps = 1000};
  c.mu = 1;
  c.max_grad_norm = 1.0;
  c.seed = 11;
  return c;
}

template <class Reward = ContainsTarget, class Loss = rl::Grpo<rl::GrpoConfig{}>>
using Trainer = rl::GrpoTrainer<Net, optim::AdamW, Loss, infer::Temperature, Reward>;

struct Run {
  Net net{test::tiny_policy_config()};
  std::vector<float> init;
  Run() : init(net.num_params()) { net.layout().initialize(std::span<float>(init), 3); }
};

template <class Reward = ContainsTarget>
std::vector<rl::GrpoStepStats> run(Run& r, const rl::GrpoTrainerConfig& cfg, int steps, std::vector<float>* final_params = nullptr) {
  Trainer<Reward> t(r.net, std::span<const float>(r.init), optim::AdamW{.config = {.weight_decay = 0.0}}, infer::Temperature{1.0f},
                    Reward{}, cfg);
  auto source = [&](std::int64_t s) { return target_prompts(s, cfg.prompts_per_step); };
  std::vector<rl::GrpoStepStats> out;
  for (int i = 0; i < steps; ++i) out.push_back(t.run_step(source));
  if (final_params) final_params->assign(t.params().begin(), t.params().end());
  return out;
}

double mean_reward(const std::vector<rl::GrpoStepStats>& s, std::size_t first, std::size_t count) {
  double m = 0;
  for (std::size_t i = first; i < first + count; ++i) m += s[i].reward_mean;
  return m / static_cast<double>(count);
}

}  // namespace

TEST_CASE("GRPO raises a reward the random model half-earns and the sign-flipped control lowers it") {
  Run r;
  const int steps = 30;
  rl::GrpoTrainerConfig cfg = base_config();
  const auto up = run(r, cfg, steps);
  cfg.advantage_sign = -1;
  const auto down = run(r, cfg, steps);

  const double start = mean_reward(up, 0, 3), end_up = mean_reward(up, steps - 3, 3), end_down = mean_reward(down, steps - 3, 3);
  MESSAGE("mean reward: first 3 steps ", start, ", last 3 steps ", end_up, " (GRPO) and ", end_down,
          " (advantage sign flipped); ", up.back().seconds.total * 1e3, " ms/step");
  std::string curve;
  for (std::size_t i = 0; i < up.size(); i += 3) curve += std::to_string(up[i].reward_mean).substr(0, 4) + "/" + std::to_string(down[i].reward_mean).substr(0, 4) + " ";
  MESSAGE("reward every 3rd step (GRPO/flipped): ", curve);
  CHECK(start > 0.2);
  CHECK(start < 0.8);
  CHECK(down[0].reward_mean == up[0].reward_mean);  // the same first rollouts (same seed and parameters)
  CHECK(end_up > start + 0.25);
  CHECK(end_down < start - 0.15);
  for (const auto& s : up) {
    CHECK(s.rows == 64);
    CHECK(s.trained_rows == 64);  // dynamic sampling is off: every group trains
    CHECK(s.updated);
    CHECK(s.completion_length > 0);
    CHECK(s.completion_length <= 4);
    CHECK(s.components.size() == 1);
    CHECK(s.components[0].mean == doctest::Approx(s.reward_mean));
    CHECK(!s.accuracy.has_value());
    CHECK(s.lr == doctest::Approx(1e-2));
    CHECK(std::isfinite(s.grad_norm));
  }
}

TEST_CASE("With the reference equal to the initial policy the KL starts at 0 and stays non-negative") {
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.beta = 0.1;
  cfg.mu = 2;
  const auto stats = run(r, cfg, 8);
  REQUIRE(stats[0].passes.size() == 2);
  CHECK(stats[0].passes[0].kl == 0.0);  // same parameters, same kernels: log pi = log pi_ref exactly
  double later = 0;
  for (const auto& s : stats)
    for (const auto& p : s.passes) {
      CHECK(p.kl >= 0.0);
      later = std::max(later, p.kl);
    }
  MESSAGE("largest KL over 8 steps: ", later);
  CHECK(stats[0].passes[1].kl > 0.0);  // one update later the policies differ
  CHECK(later > 1e-6);
}

TEST_CASE("The first optimisation pass of every step has ratio 1 and later passes do not") {
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.mu = 1;
  double worst = 0, gap = 0;
  for (const auto& s : run(r, cfg, 6)) {
    REQUIRE(s.passes.size() == 1);
    worst = std::max(worst, std::abs(s.passes[0].mean_ratio - 1.0));
    CHECK(s.passes[0].mean_ratio == 1.0);  // logp_old comes from the same parameters and kernels: bit-identical
    CHECK(s.passes[0].clip_fraction == 0.0);
    // the sampler's log-probs (decode path, KV cache) and the training forward's agree to rounding
    CHECK(s.rollout_logp_gap < 2e-5);
    gap = std::max(gap, s.rollout_logp_gap);
  }
  MESSAGE("largest |mean ratio - 1| on the first pass over 6 steps: ", worst,
          "; largest |log p_rollout - log p_train|: ", gap);
  cfg.mu = 3;
  cfg.micro_batch = 24;  // 64 rows in micro-batches of 24, 24 and 16
  for (const auto& s : run(r, cfg, 3)) {
    REQUIRE(s.passes.size() == 3);
    CHECK(std::abs(s.passes[0].mean_ratio - 1.0) < 1e-6);
    CHECK(std::abs(s.passes[2].mean_ratio - 1.0) > 1e-6);  // after two updates pi_theta != pi_old
  }
}

TEST_CASE("Micro-batches accumulate to the gradient of the whole batch") {
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.beta = 0.05;
  cfg.max_grad_norm = 0;  // compare the raw norms
  std::vector<float> whole, parts;
  const auto a = run(r, cfg, 1, &whole);
  cfg.micro_batch = 10;
  const auto b = run(r, cfg, 1, &parts);
  CHECK(b[0].grad_norm == doctest::Approx(a[0].grad_norm).epsilon(1e-4));
  CHECK(b[0].loss == doctest::Approx(a[0].loss).epsilon(1e-4));
  double diff = 0, moved = 0;
  for (std::size_t i = 0; i < whole.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(whole[i] - parts[i])));
    moved = std::max(moved, static_cast<double>(std::abs(whole[i] - r.init[i])));
  }
  CHECK(moved > 1e-3);
  CHECK(diff < 1e-2 * moved);
}

TEST_CASE("The same seed gives the same run and another seed another") {
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.beta = 0.05;
  cfg.mu = 2;
  std::vector<float> p1, p2, p3;
  const auto a = run(r, cfg, 5, &p1);
  const auto b = run(r, cfg, 5, &p2);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].reward_mean == b[i].reward_mean);
    CHECK(a[i].reward_std == b[i].reward_std);
    CHECK(a[i].completion_length == b[i].completion_length);
    CHECK(a[i].loss == b[i].loss);
    CHECK(a[i].kl == b[i].kl);
    CHECK(a[i].mean_ratio == b[i].mean_ratio);
    CHECK(a[i].entropy == b[i].entropy);
    CHECK(a[i].grad_norm == b[i].grad_norm);
  }
  CHECK(p1 == p2);
  cfg.seed = 12;
  const auto c = run(r, cfg, 5, &p3);
  CHECK(p1 != p3);
  bool differs = false;
  for (std::size_t i = 0; i < a.size(); ++i) differs = differs || a[i].completion_length != c[i].completion_length || a[i].loss != c[i].loss;
  CHECK(differs);
}

TEST_CASE("Dynamic sampling drops all-equal groups and a constant reward updates nothing") {
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.dynamic_sampling = true;
  cfg.beta = 0.1;  // the KL term alone would move the parameters if any row were kept
  std::vector<float> after;
  const auto constant = run<Constant>(r, cfg, 2, &after);
  for (const auto& s : constant) {
    CHECK(s.zero_variance_fraction == 1.0);
    CHECK(s.trained_rows == 0);
    CHECK(!s.updated);
    CHECK(s.passes.empty());
  }
  CHECK(after == r.init);

  // With the target reward some groups are uniform (all 0 or all 1): exactly those are dropped.
  cfg.prompts_per_step = 16;
  cfg.group_size = 4;
  const auto stats = run(r, cfg, 6);
  double dropped = 0;
  for (const auto& s : stats) {
    CHECK(s.trained_rows == static_cast<index_t>(std::lround(s.rows * (1.0 - s.zero_variance_fraction))));
    CHECK(s.updated == (s.trained_rows > 0));
    dropped += s.zero_variance_fraction;
  }
  MESSAGE("mean fraction of uniform groups (G = 4): ", dropped / 6.0);
  CHECK(dropped > 0);
  cfg.dynamic_sampling = false;
  for (const auto& s : run(r, cfg, 2)) CHECK(s.trained_rows == s.rows);
}

TEST_CASE("The composed R1 reward reports its accuracy and format components") {
  using R1Reward = reward::Weighted<reward::Weights{0.8f, 0.2f}, reward::Accuracy, reward::Format>;
  using R1Trainer = rl::GrpoTrainer<Net, optim::AdamW, rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f,
                                                                              .aggregation = rl::Aggregation::token_mean}>,
                                    infer::Temperature, R1Reward>;
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.prompts_per_step = 2;
  cfg.group_size = 4;
  cfg.beta = 0.04;
  R1Trainer t(r.net, std::span<const float>(r.init), optim::AdamW{}, infer::Temperature{1.0f}, R1Reward{}, cfg);
  auto source = [](std::int64_t s) {
    Philox rng(5, static_cast<std::uint64_t>(s));
    return std::vector<data::Problem>{data::generate(1, rng), data::generate(1, rng)};
  };
  const rl::GrpoStepStats s = t.run_step(source);
  REQUIRE(s.components.size() == 2);
  CHECK(std::string(s.components[0].name) == "accuracy");
  CHECK(std::string(s.components[1].name) == "format");
  REQUIRE(s.accuracy.has_value());
  CHECK(*s.accuracy == s.components[0].mean);
  CHECK(s.rows == 8);
  CHECK(t.step() == 1);
  CHECK(t.updates() == 1);
  // A source giving the wrong number of problems is an error naming the step.
  CHECK_THROWS_AS(t.run_step([](std::int64_t) { return std::vector<data::Problem>(1); }), Error);
}

TEST_CASE("GrpoTrainerConfig rejects mu < 1 and a bad advantage sign") {
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.mu = 0;
  CHECK_THROWS_AS(Trainer<>(r.net, std::span<const float>(r.init), optim::AdamW{}, infer::Temperature{}, ContainsTarget{}, cfg),
                  Error);
  cfg = base_config();
  cfg.advantage_sign = 0;
  CHECK_THROWS_AS(Trainer<>(r.net, std::span<const float>(r.init), optim::AdamW{}, infer::Temperature{}, ContainsTarget{}, cfg),
                  Error);
}

TEST_CASE("GRPO with dynamic loss scaling on an fp32 model is bit-identical to GRPO without it") {
  // The objective's gradient is multiplied by S (train::ScaledObjective) and the parameter
  // gradients divided by S before clipping; with power-of-two S both are exact.
  Run r;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.beta = 0.04;
  cfg.mu = 2;
  cfg.micro_batch = 24;  // three micro-batches per pass
  std::vector<float> plain_params, scaled_params;
  const auto plain = run(r, cfg, 3, &plain_params);
  cfg.loss_scale.mode = train::LossScaleConfig::Mode::dynamic;
  cfg.loss_scale.growth_interval = 4;  // the scale doubles once within the 6 passes
  const auto scaled = run(r, cfg, 3, &scaled_params);
  for (std::size_t i = 0; i < plain.size(); ++i)
    for (std::size_t p = 0; p < plain[i].passes.size(); ++p) {
      CHECK(plain[i].passes[p].loss == scaled[i].passes[p].loss);
      CHECK(plain[i].passes[p].loss_scale == 1);
      CHECK(!scaled[i].passes[p].skipped);
    }
  CHECK(scaled[0].passes[0].loss_scale == 65536);
  CHECK(scaled[2].passes[1].loss_scale == 131072);
  CHECK(std::memcmp(plain_params.data(), scaled_params.data(), plain_params.size() * sizeof(float)) == 0);
}

TEST_CASE("ScaledObjective multiplies the objective's gradient, not its loss") {
  std::vector<float> logits = {1, -2, 3, 0.5f, 4, -1};
  const auto objective = [](index_t, View<float, 2> g) {
    for (index_t r = 0; r < g.size(0); ++r)
      for (index_t c = 0; c < g.size(1); ++c) g.row(r)[c] = 0.25f * static_cast<float>(r + c);
    return 1.5;
  };
  auto inner = objective;
  train::ScaledObjective<decltype(inner)> scaled{inner, 8.0};
  CHECK(scaled(0, make_view(logits.data(), 2, 3)) == 1.5);
  CHECK(logits == std::vector<float>{0, 2, 4, 2, 4, 6});
}
