// GRPO and PPO as objectives of Transformer::forward_objective on a tiny float64 model: every
// parameter's gradient against central differences, the aggregation normalisers, the pass
// statistics, clipped batches giving exactly zero gradient, and the value head through hidden_grad.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "reason/rl/grpo.hpp"
#include "reason/rl/ppo.hpp"
#include "rl/rl_test_util.hpp"

using namespace reason;
using test::RlNet;
using test::ToyRollout;

namespace {

constexpr index_t kB = 3, kL = 7;
constexpr index_t kPrompt[kB] = {2, 3, 1}, kEnd[kB] = {7, 5, 6};

struct Setup {
  RlNet net{test::rl_config()};
  std::vector<double> params;
  Philox rng{test::test_seed(), 71};
  ToyRollout roll{kB, kL, kPrompt, kEnd, rng};
  std::vector<double> logp;  // the current policy's log-probs [B, L]

  explicit Setup(std::uint64_t seed_offset = 0) : params(net.num_params()) {
    net.reserve(kB, kL);
    net.layout().initialize(std::span<double>(params), test::test_seed() + seed_offset);
    logp = test::token_logps(net, params, roll);
  }
  [[nodiscard]] View<const double, 2> view(const std::vector<double>& v) const { return make_view(v.data(), kB, kL); }
};

/// logp_old = logp - delta with ratios exp(delta) chosen away from every clip boundary.
std::vector<double> shifted(const Setup& s, std::span<const double> deltas) {
  std::vector<double> out(s.logp);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] -= deltas[i % deltas.size()];
  return out;
}

template <class Objective>
void gradcheck_objective(Setup& s, Objective& objective) {
  std::vector<double> grads(s.params.size(), 0.0);
  s.net.forward_objective(s.params.data(), grads.data(), s.roll.tokens_view(), objective);
  s.net.backward(s.params.data(), grads.data());
  CHECK(test::max_abs(grads) > 1e-4);  // the check below has something to check
  auto eval = [&] { return s.net.forward_objective(s.params.data(), nullptr, s.roll.tokens_view(), objective); };
  const auto check = test::gradcheck(eval, std::span<double>(s.params), grads, 1e-6, test::kFdStep);
  INFO(check.describe());
  CHECK(check.max_rel_error <= 1e-6);
}

template <rl::Aggregation A>
using GrpoWith = rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f, .aggregation = A}>;

using SeqMean = std::integral_constant<rl::Aggregation, rl::Aggregation::sequence_mean>;
using TokMean = std::integral_constant<rl::Aggregation, rl::Aggregation::token_mean>;
using FixedLen = std::integral_constant<rl::Aggregation, rl::Aggregation::fixed_length>;

}  // namespace

TEST_CASE_TEMPLATE("The GRPO objective's gradient equals finite differences through the model", Agg, SeqMean, TokMean,
                   FixedLen) {
  using G = GrpoWith<Agg::value>;
  Setup s;
  // ratios 0.905, 1.105, 1.49 (clipped when A > 0), 0.61 (clipped when A < 0), 1.05
  const double deltas[] = {-0.1, 0.1, 0.4, -0.5, 0.05};
  const std::vector<double> old = shifted(s, deltas);
  std::vector<double> ref(s.logp);
  for (std::size_t i = 0; i < ref.size(); ++i) ref[i] += 0.3 * std::sin(1.7 * static_cast<double>(i));
  const std::vector<double> adv = {0.9, -1.2, 0.4};
  const rl::RolloutBatch<double> batch{s.roll.tokens_view(), s.roll.mask_view(), s.view(old), s.view(ref), adv};
  typename G::template Batch<double> obj(batch, {.beta = 0.1, .normaliser = {.max_length = 6}});
  gradcheck_objective(s, obj);
  const rl::PolicyStats st = obj.stats();
  CHECK(st.tokens == s.roll.completion_tokens(0) + s.roll.completion_tokens(1) + s.roll.completion_tokens(2));
  CHECK(st.clip_fraction > 0);
  CHECK(st.clip_fraction < 1);
  CHECK(st.mean_kl > 0);
}

TEST_CASE("The aggregation modes give the documented normalisers") {
  // With logp_old = logp (ratio exactly 1) and beta = 0 every token's loss is -A_b, so the
  // batch loss is -sum_b w_b n_b A_b with w_b the mode's normaliser.
  Setup s;
  const std::vector<double> adv = {0.9, -1.2, 0.4};
  const rl::RolloutBatch<double> batch{s.roll.tokens_view(), s.roll.mask_view(), s.view(s.logp), {}, adv};
  double n[kB], total = 0;
  for (index_t b = 0; b < kB; ++b) total += n[b] = static_cast<double>(s.roll.completion_tokens(b));
  auto run = [&](auto& obj) { return s.net.forward_objective(s.params.data(), nullptr, s.roll.tokens_view(), obj); };

  typename GrpoWith<rl::Aggregation::sequence_mean>::template Batch<double> seq(batch, {.beta = 0});
  CHECK(run(seq) == doctest::Approx(-(0.9 - 1.2 + 0.4) / 3.0).epsilon(1e-14));
  typename GrpoWith<rl::Aggregation::token_mean>::template Batch<double> tok(batch, {.beta = 0});
  CHECK(run(tok) == doctest::Approx(-(0.9 * n[0] - 1.2 * n[1] + 0.4 * n[2]) / total).epsilon(1e-14));
  typename GrpoWith<rl::Aggregation::fixed_length>::template Batch<double> fix(batch, {.beta = 0, .normaliser = {.max_length = 10}});
  CHECK(run(fix) == doctest::Approx(-(0.9 * n[0] - 1.2 * n[1] + 0.4 * n[2]) / (10.0 * 3)).epsilon(1e-14));
  for (index_t b = 0; b < kB; ++b) {
    CHECK(seq.weights()[b] == 1.0 / (n[b] * 3));
    CHECK(tok.weights()[b] == 1.0 / total);
    CHECK(fix.weights()[b] == 1.0 / 30.0);
  }
  // micro-batches: the step's counts replace the batch's
  typename GrpoWith<rl::Aggregation::token_mean>::template Batch<double> step(batch, {.beta = 0, .normaliser = {.tokens = 40}});
  CHECK(step.weights()[0] == 1.0 / 40);
  CHECK_THROWS_WITH_AS(
      (typename GrpoWith<rl::Aggregation::fixed_length>::template Batch<double>(batch, {.beta = 0})),
      doctest::Contains("max_length"), Error);

  // statistics of a pass at ratio 1: no clipping, KL 0 with logp_ref = logp, and the entropy
  // of the policy at the completion positions (recomputed from the full logits)
  const rl::RolloutBatch<double> with_ref{s.roll.tokens_view(), s.roll.mask_view(), s.view(s.logp), s.view(s.logp), adv};
  typename GrpoWith<rl::Aggregation::token_mean>::template Batch<double> kl0(with_ref, {.beta = 0.5});
  CHECK(run(kl0) == doctest::Approx(-(0.9 * n[0] - 1.2 * n[1] + 0.4 * n[2]) / total).epsilon(1e-14));
  const rl::PolicyStats st = kl0.stats();
  CHECK(st.mean_ratio == 1.0);
  CHECK(st.clip_fraction == 0.0);
  CHECK(st.mean_kl == 0.0);
  std::vector<double> logits(static_cast<std::size_t>(kB * kL * 11));
  s.net.logits(s.params.data(), s.roll.tokens_view(), make_view(logits.data(), kB * kL, 11));
  double entropy = 0;
  for (index_t r = 0; r < kB * kL; ++r) {
    if (!s.roll.mask[static_cast<std::size_t>(r)]) continue;
    const double* x = logits.data() + r * 11;
    double mx = -INFINITY, sum = 0, ex = 0;
    for (int v = 0; v < 11; ++v) mx = std::max(mx, x[v]);
    for (int v = 0; v < 11; ++v) sum += std::exp(x[v] - mx);
    for (int v = 0; v < 11; ++v) {
      const double lp = x[v] - mx - std::log(sum);
      ex -= std::exp(lp) * lp;
    }
    entropy += ex;
    // and the recorded log-prob of the sampled token is the log-softmax of these logits
    const std::int32_t next = s.roll.tokens[static_cast<std::size_t>(r + 1)];
    CHECK(s.logp[static_cast<std::size_t>(r)] == doctest::Approx(x[next] - mx - std::log(sum)).epsilon(1e-13));
  }
  CHECK(st.mean_entropy == doctest::Approx(entropy / total).epsilon(1e-12));
  CHECK(st.mean_entropy > 0);
  CHECK(st.mean_entropy < std::log(11.0));
}

TEST_CASE("A batch whose every token is clipped has exactly zero gradient without KL") {
  Setup s;
  // A > 0 everywhere with ratio 1.5 > 1 + eps_high: the surrogate is constant in every parameter
  const double deltas[] = {std::log(1.5)};
  const std::vector<double> old = shifted(s, deltas);
  const std::vector<double> adv = {0.5, 1.0, 2.0};
  const rl::RolloutBatch<double> batch{s.roll.tokens_view(), s.roll.mask_view(), s.view(old), s.view(s.logp), adv};
  using G = GrpoWith<rl::Aggregation::token_mean>;
  std::vector<double> grads(s.params.size(), 0.0);
  G::Batch<double> clipped(batch, {.beta = 0});
  s.net.forward_objective(s.params.data(), grads.data(), s.roll.tokens_view(), clipped);
  s.net.backward(s.params.data(), grads.data());
  CHECK(clipped.stats().clip_fraction == 1.0);
  CHECK(clipped.stats().mean_ratio == doctest::Approx(1.5).epsilon(1e-12));
  CHECK(test::max_abs(grads) == 0.0);
  // the KL term still pulls (logp_ref != logp)
  std::vector<double> ref(s.logp);
  for (double& x : ref) x -= 0.2;
  const rl::RolloutBatch<double> with_kl{s.roll.tokens_view(), s.roll.mask_view(), s.view(old), s.view(ref), adv};
  G::Batch<double> kl(with_kl, {.beta = 0.1});
  std::fill(grads.begin(), grads.end(), 0.0);
  s.net.forward_objective(s.params.data(), grads.data(), s.roll.tokens_view(), kl);
  s.net.backward(s.params.data(), grads.data());
  CHECK(test::max_abs(grads) > 1e-6);
}

TEST_CASE("PPO's surrogate and value head train one trunk through hidden_grad, against finite differences") {
  using P = rl::Ppo<rl::PpoConfig{.eps_low = 0.2f, .eps_high = 0.2f, .value_clip = 0.2f}>;
  Setup s(3);
  const index_t N = kB * kL, C = 6;
  rl::ValueHead<double> head(C, 0.5);
  std::vector<double> hp(head.num_params());
  head.layout().initialize(std::span<double>(hp), test::test_seed() + 5);
  hp.back() = 0.1;  // a non-zero bias

  const double deltas[] = {-0.1, 0.1, 0.4, -0.5, 0.05, 0.15};
  const std::vector<double> old = shifted(s, deltas);
  std::vector<double> adv(static_cast<std::size_t>(N)), ret(static_cast<std::size_t>(N)), v_old(static_cast<std::size_t>(N));
  Philox rng(test::test_seed(), 12);
  test::fill_uniform(std::span<double>(adv), rng, -1.0, 1.0);
  test::fill_uniform(std::span<double>(ret), rng, -1.0, 1.0);
  // V_old: the current values moved by offsets inside and outside the value clip
  std::vector<double> values(static_cast<std::size_t>(N)), dvalues(static_cast<std::size_t>(N));
  s.net.forward_hidden(s.params.data(), s.roll.tokens_view(), false);
  head.forward(hp.data(), s.net.final_hidden(), make_view(values.data(), N));
  const double voff[] = {0.05, -0.1, 0.5, -0.45, 0.12};
  for (index_t i = 0; i < N; ++i) v_old[static_cast<std::size_t>(i)] = values[static_cast<std::size_t>(i)] - voff[i % 5];

  const rl::RolloutBatch<double> batch{s.roll.tokens_view(), s.roll.mask_view(), s.view(old), {}, {}};
  P::Batch<double> policy(batch, s.view(adv));
  const double vf_coef = 0.5;
  auto loss = [&](const double* params, double* grads, const double* head_params, double* head_grads) {
    double l = s.net.forward_objective(params, grads, s.roll.tokens_view(), policy);
    const auto h = s.net.final_hidden();
    head.forward(head_params, h, make_view(values.data(), N));
    l += P::value_loss<double>(s.view(values), s.view(v_old), s.view(ret), s.roll.mask_view(), vf_coef,
                               make_view(dvalues.data(), kB, kL));
    if (grads) {
      head.backward(head_params, head_grads, h, make_view(static_cast<const double*>(dvalues.data()), N),
                    s.net.hidden_grad());
      s.net.backward(params, grads);
    }
    return l;
  };
  std::vector<double> grads(s.params.size(), 0.0), hgrads(hp.size(), 0.0);
  loss(s.params.data(), grads.data(), hp.data(), hgrads.data());
  CHECK(policy.stats().clip_fraction > 0);
  CHECK(test::max_abs(hgrads) > 1e-4);
  auto eval = [&] { return loss(s.params.data(), nullptr, hp.data(), nullptr); };
  const auto trunk = test::gradcheck(eval, std::span<double>(s.params), grads, 1e-6, test::kFdStep);
  INFO("trunk: " << trunk.describe());
  CHECK(trunk.max_rel_error <= 1e-6);
  const auto head_check = test::gradcheck(eval, std::span<double>(hp), hgrads, 1e-6, test::kFdStep);
  INFO("head: " << head_check.describe());
  CHECK(head_check.max_rel_error <= 1e-6);

  // the value head alone, from forward_hidden(train = true)
  std::vector<double> g2(s.params.size(), 0.0), hg2(hp.size(), 0.0);
  s.net.forward_hidden(s.params.data(), s.roll.tokens_view(), true);
  head.forward(hp.data(), s.net.final_hidden(), make_view(values.data(), N));
  P::value_loss<double>(s.view(values), s.view(v_old), s.view(ret), s.roll.mask_view(), vf_coef,
                        make_view(dvalues.data(), kB, kL));
  head.backward(hp.data(), hg2.data(), s.net.final_hidden(), make_view(static_cast<const double*>(dvalues.data()), N),
                s.net.hidden_grad());
  s.net.backward(s.params.data(), g2.data());
  auto value_only = [&] {
    s.net.forward_hidden(s.params.data(), s.roll.tokens_view(), false);
    head.forward(hp.data(), s.net.final_hidden(), make_view(values.data(), N));
    return P::value_loss<double>(s.view(values), s.view(v_old), s.view(ret), s.roll.mask_view(), vf_coef,
                                 make_view(dvalues.data(), kB, kL));
  };
  const auto vcheck = test::gradcheck(value_only, std::span<double>(s.params), g2, 1e-6, test::kFdStep);
  INFO("value only: " << vcheck.describe());
  CHECK(vcheck.max_rel_error <= 1e-6);
  CHECK(test::max_abs(g2) > 1e-6);
}
