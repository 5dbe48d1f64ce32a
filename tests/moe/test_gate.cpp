// tests/moe/test_gate.cpp — the gates' choice: top-k with ties to the lower index, group-limited
// routing (a group's score is the sum of its two best biased scores), and the balancing bias, which
// changes which experts are chosen but never their combine weights, is a non-trainable buffer
// (no gradient, untouched by AdamW) and moves only by balance().
#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "moe/moe_test_util.hpp"
#include "reason/kernels/moe_route.hpp"
#include "reason/moe/moe.hpp"
#include "reason/optim/adamw.hpp"

using namespace reason;

namespace {

using V = std::vector<std::int32_t>;

V select(const std::vector<double>& scores, const std::vector<double>& bias, int e, int k, int groups, int top_groups) {
  const index_t n = static_cast<index_t>(scores.size()) / e;
  V out(static_cast<std::size_t>(n * k), -1);
  kernels::moe_select<double>(make_view(scores.data(), n, e),
                              bias.empty() ? View<const double, 1>{} : make_view(bias.data(), index_t{e}), k, groups,
                              top_groups, make_view(out.data(), n, k));
  return out;
}

}  // namespace

TEST_CASE("moe_select: top-k best first, ties to the lower index") {
  const std::vector<double> s = {0.1, 0.7, 0.3, 0.7, 0.2,  //
                                 0.5, 0.5, 0.5, 0.5, 0.5,  //
                                 0.0, 0.1, 0.2, 0.3, 0.4};
  CHECK(select(s, {}, 5, 3, 1, 1) == V{1, 3, 2, 0, 1, 2, 4, 3, 2});
  CHECK(select(s, {}, 5, 1, 1, 1) == V{1, 0, 4});
  // a bias re-ranks: +0.35 on expert 0 puts it first everywhere, at 0.45 < 0.7 in row 0
  CHECK(select(s, {0.35, 0, 0, 0, 0}, 5, 2, 1, 1) == V{1, 3, 0, 1, 4, 0});
}

TEST_CASE("group-limited routing: the best expert of a group that loses on its top-2 sum is not chosen") {
  // 8 experts in 4 groups of 2; the best single expert (0, 0.9) sits in group 0 whose sum is 0.9,
  // below group 1 (0.5 + 0.5) and group 2 (0.48 + 0.47)
  const std::vector<double> s = {0.9, 0.0, 0.5, 0.5, 0.48, 0.47, 0.1, 0.2};
  CHECK(select(s, {}, 8, 2, 1, 1) == V{0, 2});  // no group limit: expert 0 wins
  CHECK(select(s, {}, 8, 2, 4, 2) == V{2, 3});  // groups 1 and 2 kept: 2 and 3 (a tie, lower index first)
  CHECK(select(s, {}, 8, 3, 4, 2) == V{2, 3, 4});
  CHECK(select(s, {}, 8, 2, 4, 3) == V{0, 2});  // three groups kept: group 0 is back
  CHECK(select(s, {}, 8, 2, 4, 1) == V{2, 3});
  // group scores use the biased scores: +0.5 on group 3 makes it the best group (0.6 + 0.7)
  CHECK(select(s, {0, 0, 0, 0, 0, 0, 0.5, 0.5}, 8, 2, 4, 2) == V{7, 6});
  // two groups of 4: the sum of the two best, not of all (group 0: 0.9 + 0.5 = 1.4 > group 1: 0.48 + 0.47 + ...)
  CHECK(select(s, {}, 8, 2, 2, 1) == V{0, 2});
  // a tie between group scores goes to the lower group
  const std::vector<double> t = {0.6, 0.4, 0.5, 0.5, 0.7, 0.1, 0.0, 0.0};
  CHECK(select(t, {}, 8, 2, 4, 1) == V{0, 1});
  CHECK(select(t, {}, 8, 1, 4, 2) == V{0});  // groups 0 and 1 (1.0 each) beat group 2 (0.8) despite its 0.7
}

TEST_CASE("moe_select rejects a top_k the kept groups cannot fill") {
  const std::vector<double> s(8, 0.5);
  CHECK_THROWS_WITH_AS(select(s, {}, 8, 3, 4, 1), doctest::Contains("top_k <= kept groups x experts per group"), Error);
}

TEST_CASE("the balancing bias changes which experts are chosen, never their combine weights") {
  constexpr int E = 8, K = 2;
  constexpr float scale = 2.5f;
  using P = moe::MoE<moe::SigmoidTopK<moe::GateConfig{.experts = E, .top_k = K, .routed_scale = scale}>, ffn::SwiGLU,
                     moe::Shared<1>>;
  const std::uint64_t seed = test::test_seed() + 40;
  const index_t n = 32, C = 8;
  const ffn::Dims d{.width = C, .hidden = 16, .init_std = 0.4, .out_std = 0.4, .expert_hidden = 4};
  test::MoeRig<P, double> rig(d, n, seed);
  const ParamInfo& bias_info = rig.info("moe.gate.e_score_correction_bias");
  CHECK_FALSE(bias_info.trainable);
  CHECK_FALSE(bias_info.decay);
  CHECK(bias_info.numel == static_cast<std::size_t>(E));
  Philox rng(seed, 2);
  std::vector<double> x(static_cast<std::size_t>(n * C));
  test::fill_uniform(std::span<double>(x), rng);

  (void)rig.forward(x);  // bias 0
  std::vector<std::set<int>> before(n);
  std::vector<double> scores_before, weights_before;
  for (index_t t = 0; t < n; ++t) {
    for (int j = 0; j < K; ++j) {
      before[t].insert(rig.saved.gate.experts(t, j));
      weights_before.push_back(rig.saved.gate.weights(t, j));
    }
    for (int e = 0; e < E; ++e) scores_before.push_back(rig.saved.gate.scores(t, e));
  }
  auto bias = rig.tensor("moe.gate.e_score_correction_bias");
  const std::vector<double> b = {0.06, -0.04, 0.0, 0.03, -0.06, 0.05, -0.02, 0.01};
  std::copy(b.begin(), b.end(), bias.begin());
  (void)rig.forward(x);

  int changed = 0, wrong_weight = 0, wrong_choice = 0, moved_weight = 0;
  for (index_t t = 0; t < n; ++t) {
    std::set<int> now;
    double z = 0;
    for (int j = 0; j < K; ++j) {
      now.insert(rig.saved.gate.experts(t, j));
      z += rig.saved.gate.scores(t, rig.saved.gate.experts(t, j));
    }
    changed += now != before[t];
    if (now == before[t])  // the same experts: bit for bit the same weights (s + b may have swapped their order)
      for (int j = 0; j < K; ++j) {
        const double w = rig.saved.gate.weights(t, j);
        moved_weight += w != weights_before[t * K] && w != weights_before[t * K + 1];
      }
    for (int j = 0; j < K; ++j) {  // routed_scale * s_e / sum of the chosen (unbiased) s
      const double s = rig.saved.gate.scores(t, rig.saved.gate.experts(t, j));
      wrong_weight += std::abs(rig.saved.gate.weights(t, j) - scale * s / z) > 1e-15;
    }
    // the chosen are the top-k of s + b: every chosen beats every other on s + b
    for (int e = 0; e < E; ++e)
      if (!now.count(e))
        for (int c : now) wrong_choice += rig.saved.gate.scores(t, c) + b[c] < rig.saved.gate.scores(t, e) + b[e];
  }
  std::vector<double> scores_after;
  for (index_t t = 0; t < n; ++t)
    for (int e = 0; e < E; ++e) scores_after.push_back(rig.saved.gate.scores(t, e));
  MESSAGE("the bias changed the chosen experts of " << changed << " of " << n << " tokens");
  CHECK(changed > 0);
  CHECK(wrong_weight == 0);
  CHECK(wrong_choice == 0);
  CHECK(moved_weight == 0);
  CHECK(changed < n);
  CHECK(scores_after == scores_before);  // the scores themselves carry no bias
  // and the whole layer is the naive one with the bias in the choice only
  const auto y = rig.forward(x);
  const auto ref = test::naive_moe<P>(rig.layout, rig.params, "moe", C, x, n);
  CHECK(test::rel_max_error(y, ref.y) <= 1e-12);

  SUBCASE("the bias gets no gradient, and AdamW leaves it alone") {
    std::vector<double> dy(x.size());
    test::fill_uniform(std::span<double>(dy), rng);
    (void)rig.backward(x, dy);
    for (std::size_t i = 0; i < bias_info.numel; ++i) CHECK(rig.grads[bias_info.offset + i] == 0.0);
    const auto& gw = rig.info("moe.gate.weight");
    CHECK(std::any_of(rig.grads.begin() + static_cast<std::ptrdiff_t>(gw.offset),
                      rig.grads.begin() + static_cast<std::ptrdiff_t>(gw.offset + gw.numel), [](double g) { return g != 0.0; }));
    // even a gradient written there by someone else is not applied
    for (std::size_t i = 0; i < bias_info.numel; ++i) rig.grads[bias_info.offset + i] = 1.0;
    const std::vector<double> before_step = rig.params;
    std::vector<double> state(2 * rig.params.size(), 0.0);
    const optim::AdamW opt;
    opt.step<double>(rig.layout, rig.params, rig.grads, state, 0.01, 1);
    for (std::size_t i = 0; i < bias_info.numel; ++i) CHECK(rig.params[bias_info.offset + i] == b[i]);
    CHECK(rig.params[gw.offset] != before_step[gw.offset]);  // the router weight did move
  }
  SUBCASE("balance() moves it by gamma * sign(mean load - load)") {
    const std::vector<double> load = {10, 0, 5, 5, 9, 1, 6, 4};  // mean 5
    rig.m.balance(rig.params.data(), load);
    const double g = static_cast<double>(0.001f);
    const std::vector<double> step = {-g, g, 0, 0, -g, g, -g, g};
    for (int e = 0; e < E; ++e) CHECK(bias[e] == doctest::Approx(b[e] + step[e]).epsilon(1e-15));
  }
}

TEST_CASE("softmax gates have no bias buffer; balance() is a no-op there") {
  using P = moe::MoE<moe::SoftmaxTopK<moe::GateConfig{.experts = 4, .top_k = 2}>, ffn::SwiGLU>;
  test::MoeRig<P, float> rig(ffn::Dims{.width = 8, .hidden = 16, .expert_hidden = 4}, 4, 5);
  for (const auto& p : rig.layout.params()) CHECK(p.trainable);
  CHECK_THROWS_AS((void)rig.layout.find("moe.gate.e_score_correction_bias"), Error);
  const std::vector<float> before = rig.params;
  rig.m.balance(rig.params.data(), std::vector<double>{8, 0, 0, 0});
  CHECK(rig.params == before);
}
