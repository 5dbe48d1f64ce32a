// DPO over chosen/rejected sequences and distillation from a teacher's logits, as objectives of
// Transformer::forward_objective on a tiny float64 model: gradients of every parameter against
// central differences, and the properties that pin the losses down.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "reason/rl/distill.hpp"
#include "reason/rl/dpo.hpp"
#include "rl/rl_test_util.hpp"

using namespace reason;
using test::RlNet;
using test::ToyRollout;

TEST_CASE("DPO's gradient through the model equals finite differences") {
  // two pairs: rows 0, 1 chosen, rows 2, 3 rejected (the same prompts, other completions)
  const index_t B = 4, L = 7;
  const index_t prompt[B] = {3, 2, 3, 2}, end[B] = {7, 6, 6, 7};
  Philox rng(test::test_seed(), 31);
  ToyRollout roll(B, L, prompt, end, rng);
  for (index_t b = 0; b < 2; ++b)  // the rejected completion answers the same prompt
    for (index_t t = 0; t < prompt[b]; ++t)
      roll.tokens[static_cast<std::size_t>((b + 2) * L + t)] = roll.tokens[static_cast<std::size_t>(b * L + t)];
  RlNet net(test::rl_config());
  net.reserve(B, L);
  std::vector<double> params(net.num_params()), ref_params(net.num_params());
  net.layout().initialize(std::span<double>(params), test::test_seed() + 7);
  net.layout().initialize(std::span<double>(ref_params), test::test_seed() + 8);  // a different reference model

  std::vector<double> ref_tok = test::token_logps(net, ref_params, roll), ref_seq(B);
  rl::sequence_logps<double>(make_view(static_cast<const double*>(ref_tok.data()), B, L), roll.mask_view(),
                             std::span<double>(ref_seq));
  rl::Dpo::Batch<double> dpo(roll.tokens_view(), roll.mask_view(), ref_seq, {.beta = 0.5});
  std::vector<double> grads(params.size(), 0.0);
  const double loss = dpo.forward(net, params.data(), grads.data());
  net.backward(params.data(), grads.data());

  // the loss is the mean over pairs of -log sigmoid(beta (log-ratio chosen - log-ratio rejected))
  const std::vector<double> pol_tok = test::token_logps(net, params, roll);
  std::vector<double> pol_seq(B);
  rl::sequence_logps<double>(make_view(static_cast<const double*>(pol_tok.data()), B, L), roll.mask_view(),
                             std::span<double>(pol_seq));
  double expected = 0;
  for (int i = 0; i < 2; ++i) {
    const double z = 0.5 * ((pol_seq[i] - ref_seq[i]) - (pol_seq[i + 2] - ref_seq[i + 2]));
    expected += 0.5 * std::log1p(std::exp(-z));
  }
  CHECK(loss == doctest::Approx(expected).epsilon(1e-13));
  CHECK(dpo.loss() == doctest::Approx(expected).epsilon(1e-13));
  for (int i = 0; i < B; ++i) CHECK(dpo.policy_logps()[i] == pol_seq[i]);  // both passes see the same numbers
  CHECK(test::max_abs(grads) > 1e-4);

  auto eval = [&] {
    auto m = dpo.measure();
    net.forward_objective(params.data(), nullptr, roll.tokens_view(), m);
    return dpo.loss();
  };
  const auto check = test::gradcheck(eval, std::span<double>(params), grads, 1e-6, test::kFdStep);
  INFO(check.describe());
  CHECK(check.max_rel_error <= 1e-6);

  // a small step down the gradient raises the chosen log-ratio margin and lowers the loss
  const double margin0 = dpo.stats().mean_margin;
  std::vector<double> stepped(params);
  for (std::size_t i = 0; i < stepped.size(); ++i) stepped[i] -= 0.05 * grads[i];
  auto m = dpo.measure();
  net.forward_objective(stepped.data(), nullptr, roll.tokens_view(), m);
  CHECK(dpo.loss() < loss);
  std::vector<double> g2(params.size(), 0.0);
  dpo.forward(net, stepped.data(), g2.data());
  CHECK(dpo.stats().mean_margin > margin0);

  rl::Dpo::Batch<double> fresh(roll.tokens_view(), roll.mask_view(), ref_seq, {.beta = 0.5});
  CHECK_THROWS_WITH_AS(net.forward_objective(params.data(), nullptr, roll.tokens_view(), fresh),
                       doctest::Contains("measure()"), Error);
}

namespace {

struct DistillSetup {
  static constexpr index_t B = 2, L = 6, V = 11;
  RlNet net{test::rl_config()};
  std::vector<double> params, teacher_params;
  std::vector<std::int32_t> tokens, targets;
  std::vector<double> teacher;  // [B L, V]

  DistillSetup() : params(net.num_params()), teacher_params(net.num_params()) {
    net.reserve(B, L);
    net.layout().initialize(std::span<double>(params), test::test_seed() + 11);
    net.layout().initialize(std::span<double>(teacher_params), test::test_seed() + 12);
    Philox rng(test::test_seed(), 41);
    for (index_t i = 0; i < B * L; ++i) {
      tokens.push_back(static_cast<std::int32_t>(rng.below(V)));
      targets.push_back(rng.below(4) == 0 ? -1 : static_cast<std::int32_t>(rng.below(V)));
    }
    teacher.resize(static_cast<std::size_t>(B * L * V));
    net.logits(teacher_params.data(), tokens_view(), make_view(teacher.data(), B * L, V));
  }
  [[nodiscard]] View<const std::int32_t, 2> tokens_view() const { return make_view(tokens.data(), B, L); }
  [[nodiscard]] View<const std::int32_t, 2> targets_view() const { return make_view(targets.data(), B, L); }
  [[nodiscard]] View<const std::int32_t, 1> targets_flat() const { return make_view(targets.data(), B * L); }
  [[nodiscard]] View<const double, 2> teacher_view() const { return make_view(teacher.data(), B * L, V); }
};

using Forward = rl::Distill<rl::DistillConfig{.divergence = rl::Divergence::forward_kl}>;
using Reverse = rl::Distill<rl::DistillConfig{.divergence = rl::Divergence::reverse_kl}>;

}  // namespace

TEST_CASE_TEMPLATE("Distillation's gradient through the model equals finite differences", D, Forward, Reverse) {
  DistillSetup s;
  typename D::template Batch<double> obj(s.teacher_view(), s.targets_flat(), {.alpha = 0.7, .temperature = 2.0});
  std::vector<double> grads(s.params.size(), 0.0);
  const double loss = s.net.forward_objective(s.params.data(), grads.data(), s.tokens_view(), obj);
  s.net.backward(s.params.data(), grads.data());
  const rl::DistillStats st = obj.stats();
  CHECK(st.mean_kl > 0);
  CHECK(loss == doctest::Approx(0.7 * 4.0 * st.mean_kl + 0.3 * st.mean_ce).epsilon(1e-12));
  CHECK(test::max_abs(grads) > 1e-4);
  auto eval = [&] { return s.net.forward_objective(s.params.data(), nullptr, s.tokens_view(), obj); };
  const auto check = test::gradcheck(eval, std::span<double>(s.params), grads, 1e-6, test::kFdStep);
  INFO(check.describe());
  CHECK(check.max_rel_error <= 1e-6);
}

TEST_CASE("Distillation's KL against a hand computation, for one row in each direction") {
  const std::vector<double> teacher = {1.0, -0.5, 2.0, 0.0}, student = {0.3, 0.2, -1.0, 0.8};
  const std::vector<std::int32_t> target = {2};
  const double tau = 1.5;
  auto soft = [&](const std::vector<double>& x) {
    std::vector<double> p(4);
    double s = 0;
    for (int v = 0; v < 4; ++v) s += p[v] = std::exp(x[v] / tau);
    for (double& y : p) y /= s;
    return p;
  };
  const auto p = soft(teacher), q = soft(student);
  double fwd = 0, rev = 0;
  for (int v = 0; v < 4; ++v) {
    fwd += p[v] * std::log(p[v] / q[v]);
    rev += q[v] * std::log(q[v] / p[v]);
  }
  std::vector<double> row(student);
  Forward::Batch<double> f(make_view(teacher.data(), 1, 4), make_view(target.data(), 1), {.alpha = 1.0, .temperature = tau});
  CHECK(f(0, make_view(row.data(), 1, 4)) == doctest::Approx(tau * tau * fwd).epsilon(1e-13));
  row = student;
  Reverse::Batch<double> r(make_view(teacher.data(), 1, 4), make_view(target.data(), 1), {.alpha = 1.0, .temperature = tau});
  CHECK(r(0, make_view(row.data(), 1, 4)) == doctest::Approx(tau * tau * rev).epsilon(1e-13));
  CHECK(r.stats().mean_kl == doctest::Approx(rev).epsilon(1e-13));
  CHECK(std::abs(fwd - rev) > 1e-3);  // the two directions differ, so the check tells them apart
}

TEST_CASE("Distillation with alpha = 0 is the cross-entropy, and its KL is zero when student == teacher") {
  DistillSetup s;
  // alpha = 0: the loss and every gradient equal the model's own mean cross-entropy
  const auto ce = s.net.loss(s.params.data(), s.tokens_view(), s.targets_view());
  Forward::Batch<double> hard(s.teacher_view(), s.targets_flat(), {.alpha = 0.0, .temperature = 3.0});
  std::vector<double> g_obj(s.params.size(), 0.0), g_ref(s.params.size(), 0.0);
  const double loss = s.net.forward_objective(s.params.data(), g_obj.data(), s.tokens_view(), hard);
  s.net.backward(s.params.data(), g_obj.data());
  CHECK(loss == doctest::Approx(ce.mean()).epsilon(1e-13));
  s.net.forward(s.params.data(), g_ref.data(), s.tokens_view(), s.targets_view(), 1.0 / static_cast<double>(ce.count));
  s.net.backward(s.params.data(), g_ref.data());
  double worst = 0;
  for (std::size_t i = 0; i < g_ref.size(); ++i) worst = std::max(worst, std::abs(g_ref[i] - g_obj[i]));
  CHECK(worst < 1e-12);
  CHECK(test::max_abs(g_ref) > 1e-3);

  // the student as its own teacher: KL exactly 0 and, with alpha = 1, no gradient at all
  std::vector<double> self(s.teacher.size());
  s.net.logits(s.params.data(), s.tokens_view(), make_view(self.data(), DistillSetup::B * DistillSetup::L, DistillSetup::V));
  const auto self_view = make_view(static_cast<const double*>(self.data()), DistillSetup::B * DistillSetup::L, DistillSetup::V);
  for (double alpha : {1.0, 0.4}) {
    Forward::Batch<double> same(self_view, s.targets_flat(), {.alpha = alpha, .temperature = 2.0});
    Reverse::Batch<double> same_rev(self_view, s.targets_flat(), {.alpha = alpha, .temperature = 2.0});
    std::vector<double> g(s.params.size(), 0.0);
    const double l = s.net.forward_objective(s.params.data(), g.data(), s.tokens_view(), same);
    s.net.backward(s.params.data(), g.data());
    s.net.forward_objective(s.params.data(), nullptr, s.tokens_view(), same_rev);
    CHECK(same.stats().mean_kl == 0.0);
    CHECK(same_rev.stats().mean_kl == 0.0);
    CHECK(l == doctest::Approx((1 - alpha) * ce.mean()).epsilon(1e-13));
    if (alpha == 1.0) CHECK(test::max_abs(g) == 0.0);
  }
}
