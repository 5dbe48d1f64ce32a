// tests/moe/test_moe_module.cpp — the MoE feed-forward module against a naive float64 layer
// (forward, routing, statistics, aux loss), finite differences (parameters and input, aux loss
// and capacity drops included), and its two dense limits: one expert with top-1 is the dense
// SwiGLU FFN, and top_k = experts without renormalisation is the soft mixture of all experts.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "moe/moe_test_util.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/concepts.hpp"
#include "reason/moe/moe.hpp"

using namespace reason;

namespace {

using moe::GateConfig;

// One case per configuration: the policy, the rows per sequence (a sequence-wise loss's unit; 0: one).
struct CaseSoftmax {  // Switch / Mixtral: softmax top-2, renormalised, no shared expert
  using Policy = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = 4, .top_k = 2}>, ffn::SwiGLU>;
  static constexpr index_t seq = 0;
};
struct CaseSoftmaxUnnormalized {
  using Policy = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = 6, .top_k = 2, .normalize = false}>, ffn::SwiGLU,
                          moe::Shared<1>>;
  static constexpr index_t seq = 0;
};
struct CaseSigmoidScaled {  // DeepSeek-V3: sigmoid, bias-balanced, routed_scale, two shared experts
  using Policy = moe::MoE<moe::SigmoidTopK<GateConfig{.experts = 8, .top_k = 3, .routed_scale = 2.5f}>, ffn::SwiGLU,
                          moe::Shared<2>>;
  static constexpr index_t seq = 0;
};
struct CaseSigmoidGroupsCapacity {  // group-limited, unnormalised, scaled, capacity 1.0
  using Policy = moe::MoE<moe::SigmoidTopK<GateConfig{.experts = 8, .top_k = 2, .groups = 4, .top_groups = 2,
                                                      .normalize = false, .routed_scale = 1.5f},
                                           moe::Capacity<1.0f>>,
                          ffn::SwiGLU, moe::Shared<1>>;
  static constexpr index_t seq = 0;
};
struct CaseSoftmaxGroupsHalfCapacity {  // one group of two kept; capacity 0.5 drops a lot
  using Policy = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = 8, .top_k = 2, .groups = 2, .top_groups = 1},
                                           moe::Capacity<0.5f>>,
                          ffn::SwiGLU>;
  static constexpr index_t seq = 0;
};
struct CaseScoreOrderDrops {  // batch prioritized routing: the highest weights keep their slots
  using Policy = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = 4, .top_k = 2}, moe::Capacity<0.75f, moe::DropOrder::score>>,
                          ffn::SwiGLU, moe::Shared<1>>;
  static constexpr index_t seq = 0;
};
struct CaseSwitchLoss {
  using Policy = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = 4, .top_k = 2}, moe::Capacity<1.0f>, moe::SwitchLoss<0.05f>>,
                          ffn::SwiGLU, moe::Shared<1>>;
  static constexpr index_t seq = 0;
};
struct CaseSequenceLoss {  // sigmoid: P from the scores normalised over all experts; per sequence of 4 rows
  using Policy = moe::MoE<moe::SigmoidTopK<GateConfig{.experts = 6, .top_k = 2, .routed_scale = 2.0f}, moe::NoDrop,
                                           moe::BiasBalance<>, moe::SequenceLoss<0.1f>>,
                          ffn::SwiGLU>;
  static constexpr index_t seq = 4;
};

#define REASON_MOE_CASES                                                                                      \
  CaseSoftmax, CaseSoftmaxUnnormalized, CaseSigmoidScaled, CaseSigmoidGroupsCapacity, CaseSoftmaxGroupsHalfCapacity, \
      CaseScoreOrderDrops, CaseSwitchLoss, CaseSequenceLoss

static_assert(model::RoutedFfnPolicy<CaseSoftmax::Policy>);
static_assert(model::RoutedFfnPolicy<CaseSigmoidScaled::Policy>);

constexpr index_t kWidth = 8, kExpertHidden = 4, kRows = 12;

ffn::Dims dims() {
  return ffn::Dims{.width = kWidth, .hidden = 16, .init_std = 0.4, .out_std = 0.4, .expert_hidden = kExpertHidden};
}

/// A random balancing bias (where the gate has one), so that it matters for the choice.
template <class P, class T>
void randomize_bias(test::MoeRig<P, T>& rig, Philox& rng) {
  if constexpr (P::gate_policy::balance_policy::has_bias)
    test::randomize_tensor(std::span<T>(rig.params), rig.info("moe.gate.e_score_correction_bias"), rng, -0.15, 0.15);
}

/// The library's routing, weights, slots and statistics against the naive routing.
template <class P>
void check_routing(const test::MoeRig<P, double>& rig, const test::NaiveRouting& ref, index_t n) {
  constexpr int K = P::top_k, E = P::experts;
  int wrong_choice = 0, wrong_slot = 0;
  double weight_err = 0;
  for (index_t t = 0; t < n; ++t)
    for (int j = 0; j < K; ++j) {
      wrong_choice += rig.saved.gate.experts(t, j) != ref.experts[t][j];
      wrong_slot += (rig.saved.slot(t, j) >= 0) != static_cast<bool>(ref.kept[t][j]);
      weight_err = std::max(weight_err, std::abs(rig.saved.gate.weights(t, j) - ref.weights[t][j]));
    }
  CHECK(wrong_choice == 0);
  CHECK(wrong_slot == 0);
  CHECK(weight_err <= 1e-14);
  const moe::RouterStats st = rig.m.stats(rig.saved);
  REQUIRE(st.load.size() == static_cast<std::size_t>(E));
  for (int e = 0; e < E; ++e) {
    CHECK(st.load[e] == ref.load[e]);
    CHECK(st.kept[e] == ref.kept_count[e]);
  }
  CHECK(st.dropped_fraction() == doctest::Approx(static_cast<double>(ref.dropped()) / static_cast<double>(n * K)));
  CHECK(st.aux_loss == doctest::Approx(ref.aux).epsilon(1e-12));
}

}  // namespace

TEST_CASE_TEMPLATE("moe module forward equals a naive float64 layer", Case, REASON_MOE_CASES) {
  using P = typename Case::Policy;
  const std::uint64_t seed = test::test_seed();
  INFO("seed " << seed << ", " << P::signature());
  test::MoeRig<P, double> rig(dims(), kRows, seed, Case::seq);
  Philox rng(seed, 21);
  randomize_bias(rig, rng);
  std::vector<double> x(static_cast<std::size_t>(kRows * kWidth));
  test::fill_uniform(std::span<double>(x), rng);

  const auto y = rig.forward(x);
  const auto ref = test::naive_moe<P>(rig.layout, rig.params, "moe", kWidth, x, kRows, Case::seq);
  const double err = test::rel_max_error(y, ref.y);
  MESSAGE(P::signature() << ": float64 forward rel error " << err << ", dropped " << ref.routing.dropped() << " of "
                         << kRows * P::top_k << " (capacity " << ref.routing.capacity << "), aux " << ref.routing.aux);
  CHECK(err <= 1e-12);
  check_routing(rig, ref.routing, kRows);
  if constexpr (P::capacity_policy::drops) CHECK(ref.routing.dropped() > 0);  // the case exercises drops
  if constexpr (P::gate_policy::aux_loss_policy::active) CHECK(ref.routing.aux > 0);

  // fewer rows than carved: capacity follows this forward's rows
  if (Case::seq == 0 || 8 % Case::seq == 0) {
    const std::vector<double> x8(x.begin(), x.begin() + 8 * kWidth);
    const auto y8 = rig.forward(x8);
    const auto ref8 = test::naive_moe<P>(rig.layout, rig.params, "moe", kWidth, x8, 8, Case::seq);
    CHECK(test::rel_max_error(y8, ref8.y) <= 1e-12);
    check_routing(rig, ref8.routing, 8);
    // and its backward equals that of a module carved for exactly those rows
    test::MoeRig<P, double> exact(dims(), 8, seed, Case::seq);
    exact.params = rig.params;
    std::vector<double> dy8(x8.size());
    test::fill_uniform(std::span<double>(dy8), rng);
    const auto dx8 = rig.backward(x8, dy8);
    CHECK(exact.forward(x8) == y8);
    const auto dx8_exact = exact.backward(x8, dy8);
    CHECK(dx8 == dx8_exact);
    CHECK(rig.grads == exact.grads);
  }

  // float, against the naive layer on the same (rounded) inputs
  test::MoeRig<P, float> rigf(dims(), kRows, seed, Case::seq);
  for (std::size_t i = 0; i < rig.params.size(); ++i) rigf.params[i] = static_cast<float>(rig.params[i]);
  const std::vector<float> xf(x.begin(), x.end());
  const std::vector<double> xd(xf.begin(), xf.end()), pd(rigf.params.begin(), rigf.params.end());
  const auto reff = test::naive_moe<P>(rigf.layout, pd, "moe", kWidth, xd, kRows, Case::seq);
  const auto yf = rigf.forward(xf);
  int same = 0;
  for (index_t t = 0; t < kRows; ++t)
    for (int j = 0; j < P::top_k; ++j) same += rigf.saved.gate.experts(t, j) == reff.routing.experts[t][j];
  REQUIRE(same == kRows * P::top_k);
  const double errf = test::rel_max_error(yf, reff.y);
  MESSAGE("  float forward rel error " << errf);
  CHECK(errf <= 1e-5);
}

TEST_CASE_TEMPLATE("moe module backward equals finite differences (float64, aux loss weighted 0.7)", Case, REASON_MOE_CASES) {
  using P = typename Case::Policy;
  const std::uint64_t seed = test::test_seed() + 7;
  INFO("seed " << seed << ", " << P::signature());
  test::MoeRig<P, double> rig(dims(), kRows, seed, Case::seq);
  Philox rng(seed, 22);
  randomize_bias(rig, rng);
  std::vector<double> x(static_cast<std::size_t>(kRows * kWidth)), R(x.size());
  test::fill_uniform(std::span<double>(x), rng);
  test::fill_uniform(std::span<double>(R), rng);
  constexpr double aux_weight = 0.7;

  (void)rig.forward(x);
  const auto routing = rig.routing(kRows);
  using Module = typename P::template Module<double, linear::Dense>;
  Module::set_aux_weight(rig.saved, aux_weight);
  const auto dx = rig.backward(x, R);

  int flips = 0;
  auto loss = [&] {
    const auto y = rig.forward(x);
    flips += rig.routing(kRows) != routing;  // FD needs the same routing (and drops) on both sides
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * R[i];
    return s + aux_weight * rig.saved.aux(0);
  };
  constexpr double h = 1e-5, tol = 1e-6;  // h = 1e-6 leaves ~1e-10 |L| of round-off: 2e-6 on the smallest entries
  double worst = 0;
  for (const ParamInfo& info : rig.layout.params()) {
    std::span<double> p(rig.params.data() + info.offset, info.numel);
    std::span<const double> g(rig.grads.data() + info.offset, info.numel);
    if (!info.trainable) {  // the balancing bias: chooses only, so no gradient
      CHECK(std::all_of(g.begin(), g.end(), [](double v) { return v == 0.0; }));
      continue;
    }
    const auto r = test::gradcheck(loss, p, g, tol, h);
    INFO(info.name << ": " << r.describe());
    CHECK(r.ok);
    worst = std::max(worst, r.max_rel_error);
  }
  const auto gx = test::gradcheck(loss, std::span<double>(x), dx, tol, h);
  INFO("input: " << gx.describe());
  CHECK(gx.ok);
  CHECK(flips == 0);
  MESSAGE(P::signature() << ": gradcheck worst rel error parameters " << worst << ", input " << gx.max_rel_error);
}

TEST_CASE("one expert with top-1 is the dense SwiGLU FFN (forward and backward); the router gets no gradient") {
  using P = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = 1, .top_k = 1}>, ffn::SwiGLU>;
  const std::uint64_t seed = test::test_seed() + 3;
  const index_t n = 10;
  test::MoeRig<P, double> rig(dims(), n, seed);
  ParamLayout dl;
  const ffn::Dims dd{.width = kWidth, .hidden = kExpertHidden, .init_std = 0.4, .out_std = 0.4};
  const ffn::SwiGLU::Module<double, linear::Dense> dense(dl, "ffn", dd);
  std::vector<double> dp(dl.size()), dg(dl.size(), 0.0);
  for (const char* w : {".gate_up.weight", ".down.weight"}) {
    const auto& src = rig.info(std::string("moe.experts.0") + w);
    const auto& dst = dl.find(std::string("ffn") + w);
    REQUIRE(src.numel == dst.numel);
    std::copy_n(rig.params.begin() + static_cast<std::ptrdiff_t>(src.offset), src.numel,
                dp.begin() + static_cast<std::ptrdiff_t>(dst.offset));
  }
  Arena arena(Arena::measure([&](Arena& a) {
    (void)dense.carve(a, n);
    (void)dense.carve_scratch(a, n);
  }));
  const auto ds = dense.carve(arena, n);
  const auto dsc = dense.carve_scratch(arena, n);
  Philox rng(seed, 9);
  std::vector<double> x(static_cast<std::size_t>(n * kWidth)), R(x.size()), yd(x.size()), dxd(x.size());
  test::fill_uniform(std::span<double>(x), rng);
  test::fill_uniform(std::span<double>(R), rng);
  const auto xv = make_view(static_cast<const double*>(x.data()), n, kWidth);
  dense.forward(dp.data(), xv, ds, make_view(yd.data(), n, kWidth));
  dense.backward(dp.data(), dg.data(), xv, ds, dsc, make_view(static_cast<const double*>(R.data()), n, kWidth),
                 make_view(dxd.data(), n, kWidth));

  const auto y = rig.forward(x);
  const auto dx = rig.backward(x, R);
  const std::vector<double> yref(yd.begin(), yd.end()), dxref(dxd.begin(), dxd.end());
  CHECK(test::rel_max_error(y, yref) <= 1e-15);
  CHECK(test::rel_max_error(dx, dxref) <= 1e-14);
  for (const char* w : {".gate_up.weight", ".down.weight"}) {
    const auto& src = rig.info(std::string("moe.experts.0") + w);
    const auto& dst = dl.find(std::string("ffn") + w);
    const std::vector<double> a(rig.grads.begin() + static_cast<std::ptrdiff_t>(src.offset),
                                rig.grads.begin() + static_cast<std::ptrdiff_t>(src.offset + src.numel));
    const std::vector<double> b(dg.begin() + static_cast<std::ptrdiff_t>(dst.offset),
                                dg.begin() + static_cast<std::ptrdiff_t>(dst.offset + dst.numel));
    INFO(w);
    CHECK(test::rel_max_error(a, b) <= 1e-14);
  }
  const auto& gw = rig.info("moe.gate.weight");
  for (std::size_t i = 0; i < gw.numel; ++i) CHECK(rig.grads[gw.offset + i] == 0.0);
}

TEST_CASE("top_k = experts, softmax, unnormalised is the soft mixture sum_e softmax_e FFN_e(x)") {
  constexpr int E = 5;
  using P = moe::MoE<moe::SoftmaxTopK<GateConfig{.experts = E, .top_k = E, .normalize = false}>, ffn::SwiGLU>;
  const std::uint64_t seed = test::test_seed() + 4;
  const index_t n = 9;
  test::MoeRig<P, double> rig(dims(), n, seed);
  Philox rng(seed, 10);
  std::vector<double> x(static_cast<std::size_t>(n * kWidth));
  test::fill_uniform(std::span<double>(x), rng);
  const auto y = rig.forward(x);

  std::vector<double> ref(x.size(), 0.0);
  const double* w = rig.params.data() + rig.info("moe.gate.weight").offset;
  for (index_t t = 0; t < n; ++t) {
    double logit[E], z = 0;
    for (int e = 0; e < E; ++e) {
      logit[e] = 0;
      for (index_t c = 0; c < kWidth; ++c) logit[e] += w[e * kWidth + c] * x[t * kWidth + c];
      z += std::exp(logit[e]);
    }
    for (int e = 0; e < E; ++e)
      test::naive_swiglu_add(rig.layout, rig.params, "moe.experts." + std::to_string(e), kWidth, &x[t * kWidth],
                             std::exp(logit[e]) / z, &ref[t * kWidth]);
  }
  const double err = test::rel_max_error(y, ref);
  MESSAGE("soft mixture rel error " << err);
  CHECK(err <= 1e-12);
}
