// tests/moe/test_dispatch.cpp — capacity and dispatch: the slots formula ceil(f N k / E), which
// assignments moe_dispatch drops (token order, score order, none) on hand-made routings and the
// permutation / offsets / slots / load it builds; at the module level, that a dropped assignment
// adds nothing and the router statistics count it; and the run-time checks.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "moe/moe_test_util.hpp"
#include "reason/core/error.hpp"
#include "reason/kernels/moe_dispatch.hpp"
#include "reason/moe/moe.hpp"

using namespace reason;

namespace {

/// The outputs of one moe_dispatch call on a hand-made routing.
struct Dispatch {
  kernels::DispatchCounts counts;
  std::vector<std::int32_t> perm, offsets, slot, load;
};

Dispatch dispatch(const std::vector<std::int32_t>& experts, index_t k, index_t e, index_t capacity,
                  kernels::DropOrder order = kernels::DropOrder::token, std::vector<double> weights = {}) {
  const index_t n = static_cast<index_t>(experts.size()) / k;
  if (weights.empty()) weights.assign(experts.size(), 1.0);
  Dispatch d;
  d.perm.assign(static_cast<std::size_t>(n * k), -7);
  d.offsets.assign(static_cast<std::size_t>(e + 1), -7);
  d.slot.assign(experts.size(), -7);
  d.load.assign(static_cast<std::size_t>(e), -7);
  d.counts = kernels::moe_dispatch<double>(make_view(experts.data(), n, k), make_view(static_cast<const double*>(weights.data()), n, k),
                                           e, capacity, order, make_view(d.perm.data(), n * k),
                                           make_view(d.offsets.data(), e + 1), make_view(d.slot.data(), n, k),
                                           make_view(d.load.data(), e));
  d.perm.resize(static_cast<std::size_t>(d.counts.kept));
  return d;
}

using V = std::vector<std::int32_t>;

// 6 tokens, top-2 of 3 experts. Expert 0 is chosen by every token, 1 by tokens 0 2 3 5, 2 by 1 4.
const V kExperts = {0, 1,  //
                    0, 2,  //
                    1, 0,  //
                    0, 1,  //
                    2, 0,  //
                    0, 1};

}  // namespace

TEST_CASE("capacity slots are ceil(f N k / E), and a float factor never rounds a whole number up") {
  CHECK(moe::NoDrop::slots(100, 2, 8) == -1);
  CHECK(moe::Capacity<1.0f>::slots(6, 2, 3) == 4);
  CHECK(moe::Capacity<0.5f>::slots(6, 2, 3) == 2);
  CHECK(moe::Capacity<1.25f>::slots(7, 2, 4) == 5);   // 4.375
  CHECK(moe::Capacity<0.5f>::slots(3, 1, 2) == 1);    // 0.75
  CHECK(moe::Capacity<1.1f>::slots(10, 1, 1) == 11);  // 1.1f * 10 = 11.0000002 in float: still 11
  CHECK(moe::Capacity<1.1f>::slots(20, 2, 4) == 11);
  CHECK(moe::Capacity<1.1f>::slots(21, 2, 4) == 12);  // 11.55
  CHECK(moe::Capacity<1.1f>::slots(1000, 1, 1) == 1100);
  CHECK(moe::Capacity<0.3f>::slots(10, 1, 1) == 3);  // 0.3f is 0.300000012
  CHECK(moe::Capacity<2.0f>::slots(5, 1, 3) == 4);   // 3.33
  // against the exact integer formula over a grid (the factor as the decimal it was written as)
  int wrong = 0;
  for (index_t n = 1; n <= 4096; n = n < 64 ? n + 1 : n * 3 / 2 + 1)
    for (int k : {1, 2, 6, 8})
      for (int e : {1, 3, 8, 64, 256}) {
        wrong += moe::Capacity<1.0f>::slots(n, k, e) != test::naive_capacity(1.0f, n, k, e);
        wrong += moe::Capacity<1.1f>::slots(n, k, e) != test::naive_capacity(1.1f, n, k, e);
        wrong += moe::Capacity<1.25f>::slots(n, k, e) != test::naive_capacity(1.25f, n, k, e);
        wrong += moe::Capacity<0.3f>::slots(n, k, e) != test::naive_capacity(0.3f, n, k, e);
      }
  CHECK(wrong == 0);
  // the module's largest number of kept rows: all of them, whatever the capacity (a forward that
  // does not drop — a model's evaluation or decoding — keeps them all)
  using Half = moe::MoE<moe::SoftmaxTopK<moe::GateConfig{.experts = 3, .top_k = 2}, moe::Capacity<0.5f>>, ffn::SwiGLU>;
  using Lots = moe::MoE<moe::SoftmaxTopK<moe::GateConfig{.experts = 3, .top_k = 2}, moe::Capacity<2.0f>>, ffn::SwiGLU>;
  using All = moe::MoE<moe::SoftmaxTopK<moe::GateConfig{.experts = 3, .top_k = 2}>, ffn::SwiGLU>;
  CHECK(Half::max_kept(6) == 12);
  CHECK(Lots::max_kept(6) == 12);
  CHECK(All::max_kept(6) == 12);
}

TEST_CASE("moe_dispatch without a limit keeps every assignment, sorted by expert then token") {
  const auto d = dispatch(kExperts, 2, 3, moe::NoDrop::slots(6, 2, 3));
  CHECK(d.counts.kept == 12);
  CHECK(d.counts.dropped == 0);
  CHECK(d.load == V{6, 4, 2});
  CHECK(d.offsets == V{0, 6, 10, 12});
  CHECK(d.perm == V{0, 1, 2, 3, 4, 5, 0, 2, 3, 5, 1, 4});
  CHECK(d.slot == V{0, 6, 1, 10, 7, 2, 3, 8, 11, 4, 5, 9});
  for (std::size_t i = 0; i < kExperts.size(); ++i) {  // slot and perm are inverse
    INFO("assignment " << i);
    CHECK(d.perm[static_cast<std::size_t>(d.slot[i])] == static_cast<std::int32_t>(i / 2));
    CHECK(d.slot[i] >= d.offsets[static_cast<std::size_t>(kExperts[i])]);
    CHECK(d.slot[i] < d.offsets[static_cast<std::size_t>(kExperts[i]) + 1]);
  }
}

TEST_CASE("moe_dispatch with capacity keeps each expert's first assignments in token order") {
  SUBCASE("Capacity<1.0f>: 4 slots, expert 0 drops tokens 4 and 5") {
    const auto d = dispatch(kExperts, 2, 3, moe::Capacity<1.0f>::slots(6, 2, 3));
    CHECK(d.counts.kept == 10);
    CHECK(d.counts.dropped == 2);
    CHECK(d.load == V{6, 4, 2});  // before capacity
    CHECK(d.offsets == V{0, 4, 8, 10});
    CHECK(d.perm == V{0, 1, 2, 3, 0, 2, 3, 5, 1, 4});
    CHECK(d.slot == V{0, 4, 1, 8, 5, 2, 3, 6, 9, -1, -1, 7});
  }
  SUBCASE("Capacity<0.5f>: 2 slots each") {
    const auto d = dispatch(kExperts, 2, 3, moe::Capacity<0.5f>::slots(6, 2, 3));
    CHECK(d.counts.kept == 6);
    CHECK(d.counts.dropped == 6);
    CHECK(d.load == V{6, 4, 2});
    CHECK(d.offsets == V{0, 2, 4, 6});
    CHECK(d.perm == V{0, 1, 0, 2, 1, 4});
    CHECK(d.slot == V{0, 2, 1, 4, 3, -1, -1, -1, 5, -1, -1, -1});
  }
  SUBCASE("Capacity<1.1f>: 20 tokens, top-1 of 2, 11 slots (not 12): one of 12 to expert 0 is dropped") {
    V ex(20, 1);
    for (int t = 0; t < 12; ++t) ex[static_cast<std::size_t>(t * 5 / 3)] = 0;  // 12 tokens spread over the batch
    REQUIRE(std::count(ex.begin(), ex.end(), 0) == 12);
    const index_t cap = moe::Capacity<1.1f>::slots(20, 1, 2);
    CHECK(cap == 11);
    const auto d = dispatch(ex, 1, 2, cap);
    CHECK(d.counts.dropped == 1);
    CHECK(d.load == V{12, 8});
    CHECK(d.offsets == V{0, 11, 19});
    const auto last0 = std::find(ex.rbegin(), ex.rend(), 0).base() - ex.begin() - 1;
    for (std::size_t t = 0; t < ex.size(); ++t) CHECK((d.slot[t] < 0) == (static_cast<std::ptrdiff_t>(t) == last0));
  }
}

TEST_CASE("moe_dispatch by score keeps the highest weights, ties to the earlier token, rows still in token order") {
  // top-1 of 2 experts; expert 0 gets tokens 0 1 2 3 5, expert 1 token 4
  const V ex = {0, 0, 0, 0, 1, 0};
  const std::vector<double> w = {0.3, 0.9, 0.5, 0.9, 0.1, 0.5};
  SUBCASE("one slot: token 1 beats token 3 (equal weights, earlier token)") {
    const auto d = dispatch(ex, 1, 2, 1, kernels::DropOrder::score, w);
    CHECK(d.counts.dropped == 4);
    CHECK(d.slot == V{-1, 0, -1, -1, 1, -1});
    CHECK(d.perm == V{1, 4});
  }
  SUBCASE("three slots: 0.9, 0.9, then token 2 over token 5 (both 0.5)") {
    const auto d = dispatch(ex, 1, 2, 3, kernels::DropOrder::score, w);
    CHECK(d.counts.dropped == 2);
    CHECK(d.slot == V{-1, 0, 1, 2, 3, -1});
    CHECK(d.perm == V{1, 2, 3, 4});
    CHECK(d.offsets == V{0, 3, 4});
  }
  SUBCASE("token order keeps the first three instead") {
    const auto d = dispatch(ex, 1, 2, 3, kernels::DropOrder::token, w);
    CHECK(d.slot == V{0, 1, 2, -1, 3, -1});
  }
  SUBCASE("top-2: ties between a token's own assignments go to the earlier one (j order)") {
    const V ex2 = {0, 1,  //
                   1, 0,  //
                   0, 1};
    const std::vector<double> w2 = {0.5, 0.5,  //
                                    0.6, 0.4,  //
                                    0.5, 0.5};
    const auto d = dispatch(ex2, 2, 2, 2, kernels::DropOrder::score, w2);
    // expert 0: (t0 .5), (t1 .4), (t2 .5) -> t0, t2;   expert 1: (t0 .5), (t1 .6), (t2 .5) -> t1, t0
    CHECK(d.slot == V{0, 2, 3, -1, 1, -1});
    CHECK(d.perm == V{0, 2, 0, 1});
  }
  SUBCASE("no drop keeps all, whatever the order") {
    const auto d = dispatch(ex, 1, 2, -1, kernels::DropOrder::score, w);
    CHECK(d.counts.dropped == 0);
    CHECK(d.slot == V{0, 1, 2, 3, 5, 4});
  }
}

TEST_CASE("moe module: a dropped assignment adds nothing, and the router statistics count it") {
  constexpr moe::GateConfig G{.experts = 4, .top_k = 2};
  using Drop = moe::MoE<moe::SoftmaxTopK<G, moe::Capacity<0.5f>>, ffn::SwiGLU, moe::Shared<1>>;
  using Keep = moe::MoE<moe::SoftmaxTopK<G>, ffn::SwiGLU, moe::Shared<1>>;  // the same parameters
  const std::uint64_t seed = test::test_seed() + 30;
  const index_t n = 16, C = 8;
  const ffn::Dims d{.width = C, .hidden = 16, .init_std = 0.5, .out_std = 0.4, .expert_hidden = 4};
  test::MoeRig<Drop, double> drop(d, n, seed);
  test::MoeRig<Keep, double> keep(d, n, seed);
  REQUIRE(drop.params == keep.params);
  Philox rng(seed, 1);
  std::vector<double> x(static_cast<std::size_t>(n * C));
  test::fill_uniform(std::span<double>(x), rng);
  const auto yd = drop.forward(x);
  const auto yk = keep.forward(x);

  // capacity ceil(0.5 * 16 * 2 / 4) = 4 of the 8 assignments per expert on average
  int dropped = 0, all_dropped_tokens = 0;
  std::vector<double> shared_only(static_cast<std::size_t>(C)), expect(static_cast<std::size_t>(C));
  double worst_drop = 0, worst_keep = 0;
  for (index_t t = 0; t < n; ++t) {
    std::fill(shared_only.begin(), shared_only.end(), 0.0);
    test::naive_swiglu_add(drop.layout, drop.params, "moe.shared_experts", C, &x[t * C], 1.0, shared_only.data());
    expect = shared_only;
    std::vector<double> all = shared_only;
    int kept_here = 0;
    for (int j = 0; j < 2; ++j) {
      REQUIRE(drop.saved.gate.experts(t, j) == keep.saved.gate.experts(t, j));
      const std::string e = "moe.experts." + std::to_string(drop.saved.gate.experts(t, j));
      const double w = drop.saved.gate.weights(t, j);
      test::naive_swiglu_add(drop.layout, drop.params, e, C, &x[t * C], w, all.data());
      if (drop.saved.slot(t, j) >= 0) {
        test::naive_swiglu_add(drop.layout, drop.params, e, C, &x[t * C], w, expect.data());
        ++kept_here;
      } else {
        ++dropped;
      }
    }
    all_dropped_tokens += kept_here == 0;
    for (index_t c = 0; c < C; ++c) {
      worst_drop = std::max(worst_drop, std::abs(yd[t * C + c] - expect[c]));
      worst_keep = std::max(worst_keep, std::abs(yk[t * C + c] - all[c]));
      if (kept_here == 0) CHECK(yd[t * C + c] == doctest::Approx(shared_only[c]).epsilon(1e-14));  // residual + shared only
    }
  }
  MESSAGE("capacity 0.5: " << dropped << " of " << 2 * n << " assignments dropped, " << all_dropped_tokens
                           << " tokens lost both experts");
  CHECK(dropped > 0);
  CHECK(all_dropped_tokens > 0);
  CHECK(worst_drop <= 1e-14);
  CHECK(worst_keep <= 1e-14);

  const moe::RouterStats sd = drop.m.stats(drop.saved), sk = keep.m.stats(keep.saved);
  CHECK(sd.load == sk.load);  // the gate chose the same
  CHECK(sk.kept == sk.load);
  CHECK(sk.dropped_fraction() == 0.0);
  CHECK(sd.assignments() == 2.0 * n);
  CHECK(sd.dropped_fraction() == doctest::Approx(dropped / (2.0 * n)));
  const index_t cap = moe::Capacity<0.5f>::slots(n, 2, 4);
  CHECK(cap == 4);
  for (int e = 0; e < 4; ++e) CHECK(sd.kept[e] == std::min<double>(sd.load[e], static_cast<double>(cap)));
  CHECK(sd.max_over_mean() == doctest::Approx(*std::max_element(sd.load.begin(), sd.load.end()) / (2.0 * n / 4)));
  CHECK(sd.forwards == 1);
}

TEST_CASE("moe: bad run-time input throws with a message that says what was wrong") {
  using P = moe::MoE<moe::SoftmaxTopK<moe::GateConfig{.experts = 4, .top_k = 2}>, ffn::SwiGLU, moe::Shared<1>>;
  const ffn::Dims d{.width = 8, .hidden = 16, .expert_hidden = 4};
  SUBCASE("forward with more rows than carved") {
    test::MoeRig<P, float> rig(d, 4, 1);
    std::vector<float> x(5 * 8, 0.1f);
    CHECK_THROWS_WITH_AS(rig.forward(x), doctest::Contains("x has 5 rows, the activations were carved for 4"), Error);
  }
  SUBCASE("expert_hidden = 0") {
    ParamLayout layout;
    using M = P::Module<float, linear::Dense>;
    const ffn::Dims bad{.width = 8, .hidden = 16, .expert_hidden = 0};
    CHECK_THROWS_WITH_AS(M(layout, "layers.1.ffn", bad), doctest::Contains("expert_hidden = 0"), Error);
    CHECK_THROWS_WITH_AS(M(layout, "layers.1.ffn", bad), doctest::Contains("layers.1.ffn"), Error);
  }
  SUBCASE("an expert id out of range") {
    CHECK_THROWS_WITH_AS(dispatch({0, 1, 4, 2}, 2, 4, -1), doctest::Contains("token 1 is routed to expert 4 of 4"), Error);
    CHECK_THROWS_WITH_AS(dispatch({0, -1}, 1, 4, -1), doctest::Contains("token 1 is routed to expert -1 of 4"), Error);
  }
  SUBCASE("balance with a load of the wrong length") {
    test::MoeRig<P, float> rig(d, 4, 1);
    const std::vector<double> load(3, 1.0);
    CHECK_THROWS_WITH_AS(rig.m.balance(rig.params.data(), load), doctest::Contains("load has 3 entries, expected 4"), Error);
  }
}
