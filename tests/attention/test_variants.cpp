// tests/attention/test_variants.cpp — the q/k/v attention policies (MultiHead/GQA/MQA, SlidingWindow,
// TopK, Hierarchical) against a naive float64 module, finite differences, each other, and their
// own decode caches.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention/attention_test_util.hpp"
#include "doctest/doctest.h"
#include "reason/attention/hierarchical.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/attention/sliding_window.hpp"
#include "reason/attention/top_k.hpp"
#include "reason/model/concepts.hpp"

using namespace reason;
using test::KeepFn;

namespace {

constexpr attention::Shape kS{.head_dim = 4};
constexpr attention::Shape kBidir{.head_dim = 4, .causal = false};

// One case per policy: the policy and the naive model of it (keep rules and whether it has gates).
struct CaseFull {
  using Policy = attention::MultiHead<kS>;
  static std::vector<KeepFn> keeps() { return {test::keep_causal()}; }
};
struct CaseBidirectional {
  using Policy = attention::MultiHead<kBidir>;
  static std::vector<KeepFn> keeps() { return {test::keep_all()}; }
};
struct CaseWindow {
  using Policy = attention::SlidingWindow<kS, 3>;
  static std::vector<KeepFn> keeps() { return {test::keep_window(3)}; }
};
struct CaseTopK {
  using Policy = attention::TopK<kS, 3>;
  static std::vector<KeepFn> keeps() { return {test::keep_top(3, true)}; }
};
struct CaseTopKBidirectional {
  using Policy = attention::TopK<kBidir, 2>;
  static std::vector<KeepFn> keeps() { return {test::keep_top(2, false)}; }
};
struct CaseHierarchical {  // learned gates
  using Policy = attention::Hierarchical<attention::MultiHead<kS>, attention::SlidingWindow<kS, 2>>;
  static std::vector<KeepFn> keeps() { return {test::keep_causal(), test::keep_window(2)}; }
};
struct CaseHierarchicalTopK {  // fixed plain sum
  using Policy = attention::Hierarchical<attention::TopK<kS, 2>, attention::SlidingWindow<kS, 3>, attention::PlainSum>;
  static std::vector<KeepFn> keeps() { return {test::keep_top(2, true), test::keep_window(3)}; }
};

attention::Dims small_dims(index_t heads = 4, index_t kv_heads = 2) {
  return attention::Dims{.width = 8, .heads = heads, .kv_heads = kv_heads, .max_seq = 16, .rope_theta = 100.0,
                         .init_std = 0.5, .out_std = 0.5};
}

/// Random gates (away from the initial ones) where the policy has them; returns the gates per branch.
template <class T>
std::vector<std::vector<double>> randomize_gates(const ParamLayout& layout, std::vector<T>& params, index_t heads,
                                                 std::size_t branches, Philox& rng) {
  std::vector<std::vector<double>> g(branches, std::vector<double>(static_cast<std::size_t>(heads), 1.0));
  for (const auto& info : layout.params()) {
    if (info.name != "attn.gate") continue;
    for (std::size_t b = 0; b < branches; ++b)
      for (index_t h = 0; h < heads; ++h) {
        const T v = static_cast<T>(0.25 + 1.5 * rng.uniform_double());
        params[info.offset + b * heads + h] = v;
        g[b][h] = static_cast<double>(v);
      }
  }
  return g;
}

}  // namespace

static_assert(model::AttentionPolicy<CaseFull::Policy>);
static_assert(model::AttentionPolicy<CaseWindow::Policy>);
static_assert(model::AttentionPolicy<CaseTopK::Policy>);
static_assert(model::AttentionPolicy<CaseHierarchical::Policy>);
static_assert(model::AttentionPolicy<CaseHierarchicalTopK::Policy>);

#define REASON_ATTENTION_CASES CaseFull, CaseBidirectional, CaseWindow, CaseTopK, CaseTopKBidirectional, CaseHierarchical, CaseHierarchicalTopK

TEST_CASE_TEMPLATE("attention policy forward equals a naive float64 module", Case, REASON_ATTENTION_CASES) {
  const std::uint64_t seed = test::test_seed();
  INFO("seed " << seed << ", policy " << Case::Policy::name);
  const index_t batch = 2, seq = 7;
  for (const auto& hk : {std::pair<index_t, index_t>{4, 4}, {4, 2}, {4, 1}}) {
    const index_t heads = hk.first, kv = hk.second;  // named variables: INFO captures them
    const auto dims = small_dims(heads, kv);
    INFO("heads " << heads << ", kv_heads " << kv);
    test::ModuleRig<typename Case::Policy, double> rig(dims, batch, seq, seed);
    Philox rng(seed, 11);
    const auto gates = randomize_gates(rig.layout, rig.params, heads, Case::keeps().size(), rng);
    std::vector<double> x(static_cast<std::size_t>(batch * seq * dims.width));
    test::fill_uniform(std::span<double>(x), rng);
    const auto y = rig.forward(x, dims.width);
    const auto ref = test::naive_attention(rig.layout, rig.params, "attn",
                                           {batch, seq, dims.width, heads, kv, kS.head_dim, dims.rope_theta}, x,
                                           Case::keeps(), gates);
    double worst = 0;
    for (std::size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::abs(y[i] - ref[i]));
    CHECK(worst <= 1e-12);

    // float against the same reference, at float's precision
    test::ModuleRig<typename Case::Policy, float> rigf(dims, batch, seq, seed);
    for (std::size_t i = 0; i < rig.params.size(); ++i) rigf.params[i] = static_cast<float>(rig.params[i]);
    std::vector<float> xf(x.begin(), x.end());
    std::vector<double> xd(xf.begin(), xf.end());
    std::vector<double> pd(rigf.params.begin(), rigf.params.end());
    const auto reff = test::naive_attention(rigf.layout, pd, "attn",
                                            {batch, seq, dims.width, heads, kv, kS.head_dim, dims.rope_theta}, xd,
                                            Case::keeps(), gates);
    const auto yf = rigf.forward(xf, dims.width);
    double worstf = 0, peak = 0;
    for (std::size_t i = 0; i < yf.size(); ++i) {
      worstf = std::max(worstf, std::abs(static_cast<double>(yf[i]) - reff[i]));
      peak = std::max(peak, std::abs(reff[i]));
    }
    CHECK(worstf <= 2e-6 * peak);
  }
}

TEST_CASE_TEMPLATE("attention policy backward equals finite differences (float64)", Case, REASON_ATTENTION_CASES) {
  INFO("policy " << Case::Policy::name);
  test::check_module_gradients<typename Case::Policy>(small_dims(4, 2), 2, 6, test::test_seed());
  test::check_module_gradients<typename Case::Policy>(small_dims(2, 1), 1, 5, test::test_seed() + 1);
}

namespace {

/// The outputs of two policies with the same parameter layout on the same parameters and input.
template <class A, class B, class T>
std::pair<std::vector<T>, std::vector<T>> same_inputs(const attention::Dims& dims, index_t batch, index_t seq) {
  test::ModuleRig<A, T> a(dims, batch, seq, test::test_seed());
  test::ModuleRig<B, T> b(dims, batch, seq, test::test_seed());
  REQUIRE(a.params.size() == b.params.size());
  b.params = a.params;
  Philox rng(test::test_seed(), 13);
  std::vector<T> x(static_cast<std::size_t>(batch * seq * dims.width));
  test::fill_uniform(std::span<T>(x), rng);
  return {a.forward(x, dims.width), b.forward(x, dims.width)};
}

}  // namespace

TEST_CASE("sliding window with W >= sequence, and top-k with k >= sequence, equal full attention bit for bit") {
  const auto dims = small_dims(4, 2);
  const auto [full, window] = same_inputs<attention::MultiHead<kS>, attention::SlidingWindow<kS, 9>, float>(dims, 3, 9);
  CHECK(full == window);
  const auto [full2, top] = same_inputs<attention::MultiHead<kS>, attention::TopK<kS, 9>, float>(dims, 3, 9);
  CHECK(full2 == top);
  const auto [full3, top_wide] = same_inputs<attention::MultiHead<kBidir>, attention::TopK<kBidir, 64>, float>(dims, 2, 9);
  CHECK(full3 == top_wide);
  // and a window or k shorter than the sequence does change the output
  const auto [full4, narrow] = same_inputs<attention::MultiHead<kS>, attention::SlidingWindow<kS, 8>, float>(dims, 3, 9);
  CHECK(full4 != narrow);
}

TEST_CASE_TEMPLATE("GQA equals MHA whose kv projections repeat each kv head for its group", T, float, double) {
  const index_t batch = 2, seq = 6, heads = 4, C = 8, D = kS.head_dim;
  for (index_t kv : {index_t{2}, index_t{1}}) {
    INFO("kv_heads " << kv);
    test::ModuleRig<attention::MultiHead<kS>, T> gqa(small_dims(heads, kv), batch, seq, test::test_seed());
    test::ModuleRig<attention::MultiHead<kS>, T> mha(small_dims(heads, heads), batch, seq, test::test_seed() + 1);
    const auto& gw = gqa.layout.find("attn.qkv.weight");
    const auto& mw = mha.layout.find("attn.qkv.weight");
    auto grow = [&](index_t r) { return &gqa.params[gw.offset + r * C]; };
    auto mrow = [&](index_t r) { return &mha.params[mw.offset + r * C]; };
    for (index_t h = 0; h < heads; ++h)
      for (index_t i = 0; i < D; ++i) {
        std::copy(grow(h * D + i), grow(h * D + i) + C, mrow(h * D + i));                                    // q
        std::copy(grow((heads + h / (heads / kv)) * D + i), grow((heads + h / (heads / kv)) * D + i) + C,  // k
                  mrow((heads + h) * D + i));
        std::copy(grow((heads + kv + h / (heads / kv)) * D + i), grow((heads + kv + h / (heads / kv)) * D + i) + C,  // v
                  mrow((2 * heads + h) * D + i));
      }
    const auto& go = gqa.layout.find("attn.o.weight");
    const auto& mo = mha.layout.find("attn.o.weight");
    std::copy(gqa.params.begin() + go.offset, gqa.params.begin() + go.offset + go.numel, mha.params.begin() + mo.offset);
    Philox rng(test::test_seed(), 17);
    std::vector<T> x(static_cast<std::size_t>(batch * seq * C));
    test::fill_uniform(std::span<T>(x), rng);
    const auto a = gqa.forward(x, C), b = mha.forward(x, C);
    double worst = 0, peak = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
      peak = std::max(peak, std::abs(static_cast<double>(b[i])));
    }
    CHECK(worst <= (sizeof(T) == 4 ? 1e-6 : 1e-14) * peak);
  }
}

TEST_CASE("Hierarchical: gates (1, 0) give the global branch, (0, 1) the local one, PlainSum their sum") {
  using Global = attention::TopK<kS, 2>;
  using Local = attention::SlidingWindow<kS, 3>;
  using Mix = attention::Hierarchical<Global, Local>;
  const auto dims = small_dims(4, 2);
  const index_t batch = 2, seq = 7, C = dims.width;
  test::ModuleRig<Mix, double> mix(dims, batch, seq, test::test_seed());
  test::ModuleRig<Global, double> global(dims, batch, seq, test::test_seed());
  test::ModuleRig<Local, double> local(dims, batch, seq, test::test_seed());
  test::ModuleRig<attention::Hierarchical<Global, Local, attention::PlainSum>, double> sum(dims, batch, seq,
                                                                                           test::test_seed());
  for (auto* rig : {&global.params, &local.params, &sum.params}) {
    REQUIRE(rig->size() + 2 * dims.heads == mix.params.size());  // the gates are the only extra parameters
  }
  // the mix's layout is qkv, gate, o; the plain policies' is qkv, o
  const auto& gate = mix.layout.find("attn.gate");
  const auto& o = mix.layout.find("attn.o.weight");
  std::vector<double> plain(mix.params.begin(), mix.params.begin() + gate.offset);
  plain.insert(plain.end(), mix.params.begin() + o.offset, mix.params.end());
  global.params = local.params = sum.params = plain;
  Philox rng(test::test_seed(), 19);
  std::vector<double> x(static_cast<std::size_t>(batch * seq * C));
  test::fill_uniform(std::span<double>(x), rng);
  auto set_gates = [&](double g, double l) {
    for (index_t h = 0; h < dims.heads; ++h) {
      mix.params[gate.offset + h] = g;
      mix.params[gate.offset + dims.heads + h] = l;
    }
  };
  const auto yg = global.forward(x, C), yl = local.forward(x, C), ys = sum.forward(x, C);
  set_gates(1, 0);
  CHECK(mix.forward(x, C) == yg);
  set_gates(0, 1);
  CHECK(mix.forward(x, C) == yl);
  set_gates(1, 1);
  const auto ym = mix.forward(x, C);
  CHECK(ym == ys);
  double worst = 0;
  for (std::size_t i = 0; i < ys.size(); ++i) worst = std::max(worst, std::abs(ys[i] - (yg[i] + yl[i])));
  CHECK(worst <= 1e-13);
}

namespace {

model::Config decode_config(index_t heads, index_t kv_heads) {
  model::Config c;
  c.vocab_size = 23;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.intermediate_size = 24;
  c.max_seq_len = 12;
  c.init_std = 0.2;
  return c;
}
constexpr attention::Shape kS8{.head_dim = 8};

}  // namespace

TEST_CASE_TEMPLATE("decoding token by token with each policy's cache gives the full forward's logits", A,
                   attention::MultiHead<kS8>, attention::SlidingWindow<kS8, 3>, attention::TopK<kS8, 3>,
                   attention::Hierarchical<attention::MultiHead<kS8>, attention::SlidingWindow<kS8, 4>>,
                   attention::Hierarchical<attention::TopK<kS8, 2>, attention::SlidingWindow<kS8, 3>, attention::PlainSum>) {
  INFO("policy " << A::name << ", seed " << test::test_seed());
  for (const auto& hk : {std::pair<index_t, index_t>{4, 4}, {4, 2}, {4, 1}}) {
    const index_t heads = hk.first, kv = hk.second;  // named variables: INFO captures them
    INFO("heads " << heads << ", kv_heads " << kv);
    // 11 positions: well past every window above
    const double err = test::decode_vs_forward_error<A>(decode_config(heads, kv), 3, 11, test::test_seed());
    CHECK(err <= 1e-5);
  }
}

TEST_CASE("the sliding-window cache is a ring of W slots: flat in the sequence length; it refuses to rewind") {
  using Window = model::Transformer<attention::SlidingWindow<kS8, 3>, ffn::SwiGLU>;
  using Full = model::Transformer<attention::MultiHead<kS8>, ffn::SwiGLU>;
  auto c = decode_config(4, 2);
  c.max_seq_len = 64;
  Window w(c);
  Full f(c);
  const std::size_t per_slot = 2 * 2 * 8 * sizeof(float);  // k and v, kv_heads 2, D 8
  CHECK(w.make_decode_state(1, 64).cache_bytes() == 2 * 3 * per_slot);  // 2 layers x 3 slots
  CHECK(w.make_decode_state(1, 8).cache_bytes() == 2 * 3 * per_slot);
  CHECK(w.make_decode_state(1, 2).cache_bytes() == 2 * 2 * per_slot);  // shorter than the window: no more than needed
  CHECK(f.make_decode_state(1, 64).cache_bytes() == 2 * 64 * per_slot);

  std::vector<float> params(w.num_params());
  w.layout().initialize(std::span<float>(params), 3);
  auto st = w.make_decode_state(1, 16);
  std::vector<float> logits(static_cast<std::size_t>(c.vocab_size));
  const std::int32_t tok = 5;
  for (index_t p = 0; p < 6; ++p) w.decode_step(params.data(), make_view(&tok, 1), p, st, make_view(logits.data(), 1, c.vocab_size));
  CHECK_THROWS_WITH_AS(w.decode_step(params.data(), make_view(&tok, 1), 3, st, make_view(logits.data(), 1, c.vocab_size)),
                       doctest::Contains("rewinds past what the cache keeps"), reason::Error);
  CHECK_NOTHROW(w.decode_step(params.data(), make_view(&tok, 1), 5, st, make_view(logits.data(), 1, c.vocab_size)));
  // a full cache rewinds freely
  std::vector<float> fparams(f.num_params());
  f.layout().initialize(std::span<float>(fparams), 3);
  auto fst = f.make_decode_state(1, 16);
  for (index_t p = 0; p < 6; ++p) f.decode_step(fparams.data(), make_view(&tok, 1), p, fst, make_view(logits.data(), 1, c.vocab_size));
  CHECK_NOTHROW(f.decode_step(fparams.data(), make_view(&tok, 1), 2, fst, make_view(logits.data(), 1, c.vocab_size)));
}

TEST_CASE("attention policies and kernels reject bad run-time sizes, naming the tensor and its shape") {
  ParamLayout layout;
  using M = attention::SlidingWindow<kS, 3>::Module<float, linear::Dense>;
  CHECK_THROWS_WITH_AS(M(layout, "layers.0.attn", small_dims(6, 4)),
                       doctest::Contains("layers.0.attn: heads = 6 is not a positive multiple of kv_heads = 4"),
                       reason::Error);
  test::ModuleRig<attention::SlidingWindow<kS, 3>, float> rig(small_dims(4, 2), 2, 5, 1);
  std::vector<float> x(2 * 5 * 8), y(x.size());
  CHECK_THROWS_WITH_AS(rig.m.forward(rig.params.data(), 3, make_view(static_cast<const float*>(x.data()), 10, 8),
                                     rig.positions(), rig.saved, make_view(y.data(), 10, 8)),
                       doctest::Contains("x has 10 rows, which do not split into 3 sequences"), reason::Error);

  // kernels: a band of the wrong width, k of 0, a ring too small for the position
  std::vector<float> buf(4096);
  const auto q = make_view(static_cast<const float*>(buf.data()), 1, 5, 2, 4);
  const auto kv = make_view(static_cast<const float*>(buf.data()), 1, 5, 1, 4);
  std::vector<float> probs(1 * 2 * 5 * 4), out(1 * 5 * 2 * 4);
  CHECK_THROWS_WITH_AS(kernels::attention_window_forward<float>(q, kv, kv, 3, make_view(probs.data(), 1, 2, 5, 4),
                                                                make_view(out.data(), 1, 5, 2, 4)),
                       doctest::Contains("attention_window_forward: probs: shape [1, 2, 5, 4], expected [1, 2, 5, 3]"),
                       reason::Error);
  CHECK_THROWS_WITH_AS(kernels::attention_window_forward<float>(q, kv, kv, 0, View<float, 4>{}, make_view(out.data(), 1, 5, 2, 4)),
                       doctest::Contains("window 0 must be at least 1"), reason::Error);
  CHECK_THROWS_WITH_AS(kernels::attention_topk_forward<float>(q, kv, kv, true, 0, View<float, 4>{}, make_view(out.data(), 1, 5, 2, 4)),
                       doctest::Contains("top_k 0 must be at least 1"), reason::Error);
  const auto ring = make_view(static_cast<const float*>(buf.data()), 1, 2, 1, 4);
  CHECK_THROWS_WITH_AS(kernels::attention_window_decode<float>(make_view(static_cast<const float*>(buf.data()), 1, 2, 4), ring,
                                                               ring, 3, 4, make_view(out.data(), 1, 2, 4)),
                       doctest::Contains("a ring of 2 slots cannot hold position 4 of a window of 3"), reason::Error);
}

TEST_CASE("top-k breaks ties toward the earlier key and gives dropped keys probability 0 and no gradient") {
  // every key the same: all scores tie, so row t keeps keys 0..k-1 with probability 1/k each
  const index_t T = 6, D = 4, K = 2;
  std::vector<double> q(T * D), k(T * D, 0.5), v(T * D), probs(T * T), out(T * D);
  Philox rng(test::test_seed(), 23);
  test::fill_uniform(std::span<double>(q), rng);
  test::fill_uniform(std::span<double>(v), rng);
  const auto q4 = make_view(static_cast<const double*>(q.data()), 1, T, 1, D);
  const auto k4 = make_view(static_cast<const double*>(k.data()), 1, T, 1, D);
  const auto v4 = make_view(static_cast<const double*>(v.data()), 1, T, 1, D);
  kernels::attention_topk_forward<double>(q4, k4, v4, true, K, make_view(probs.data(), 1, 1, T, T),
                                          make_view(out.data(), 1, T, 1, D));
  for (index_t t = 0; t < T; ++t)
    for (index_t u = 0; u < T; ++u) {
      const double expect = u > t ? 0.0 : t < K ? 1.0 / static_cast<double>(t + 1) : u < K ? 1.0 / K : 0.0;
      CHECK(probs[t * T + u] == doctest::Approx(expect).epsilon(1e-15));
    }
  // the backward through those probabilities: keys 2.. are never kept, so their dk, dv are 0
  std::vector<double> dout(T * D), dq(T * D), dk(T * D), dv(T * D);
  test::fill_uniform(std::span<double>(dout), rng);
  kernels::attention_backward<double>(q4, k4, v4, make_view(static_cast<const double*>(probs.data()), 1, 1, T, T),
                                      make_view(static_cast<const double*>(dout.data()), 1, T, 1, D),
                                      make_view(dq.data(), 1, T, 1, D), make_view(dk.data(), 1, T, 1, D),
                                      make_view(dv.data(), 1, T, 1, D));
  for (index_t u = K; u < T; ++u)
    for (index_t i = 0; i < D; ++i) {
      CHECK(dk[u * D + i] == 0.0);
      CHECK(dv[u * D + i] == 0.0);
    }
}

TEST_CASE_TEMPLATE("window and top-k decode steps equal the training rows bit for bit, past the window", T, float, double) {
  const index_t B = 2, Tn = 11, H = 4, Hkv = 2, D = 8, W = 3, K = 4;
  Philox rng(test::test_seed(), 29);
  std::vector<T> q(B * Tn * H * D), k(B * Tn * Hkv * D), v(k.size());
  test::fill_uniform(std::span<T>(q), rng);
  test::fill_uniform(std::span<T>(k), rng);
  test::fill_uniform(std::span<T>(v), rng);
  const auto q4 = make_view(static_cast<const T*>(q.data()), B, Tn, H, D);
  const auto k4 = make_view(static_cast<const T*>(k.data()), B, Tn, Hkv, D);
  const auto v4 = make_view(static_cast<const T*>(v.data()), B, Tn, Hkv, D);
  std::vector<T> out_w(q.size()), out_k(q.size()), probs(B * H * Tn * W);
  kernels::attention_window_forward<T>(q4, k4, v4, W, make_view(probs.data(), B, H, Tn, W), make_view(out_w.data(), B, Tn, H, D));
  kernels::attention_topk_forward<T>(q4, k4, v4, true, K, View<T, 4>{}, make_view(out_k.data(), B, Tn, H, D));
  std::vector<T> ring_k(B * W * Hkv * D), ring_v(ring_k.size()), step(B * H * D);
  for (index_t t = 0; t < Tn; ++t) {
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < Hkv * D; ++i) {
        ring_k[(b * W + t % W) * Hkv * D + i] = k[(b * Tn + t) * Hkv * D + i];
        ring_v[(b * W + t % W) * Hkv * D + i] = v[(b * Tn + t) * Hkv * D + i];
      }
    const View<const T, 3> qt(q.data() + t * H * D, {B, H, D}, {Tn * H * D, D, 1});
    kernels::attention_window_decode<T>(qt, make_view(static_cast<const T*>(ring_k.data()), B, W, Hkv, D),
                                        make_view(static_cast<const T*>(ring_v.data()), B, W, Hkv, D), W, t,
                                        make_view(step.data(), B, H, D));
    for (index_t b = 0; b < B; ++b)
      CHECK(std::equal(step.begin() + b * H * D, step.begin() + (b + 1) * H * D, out_w.begin() + (b * Tn + t) * H * D));
    const View<const T, 4> kc(k.data(), {B, Tn, Hkv, D}), vc(v.data(), {B, Tn, Hkv, D});
    kernels::attention_topk_decode<T>(qt, kc, vc, t + 1, K, make_view(step.data(), B, H, D));
    for (index_t b = 0; b < B; ++b)
      CHECK(std::equal(step.begin() + b * H * D, step.begin() + (b + 1) * H * D, out_k.begin() + (b * Tn + t) * H * D));
  }
  // the band rows are probabilities over the window: they sum to 1
  for (index_t r = 0; r < B * H * Tn; ++r) {
    double s = 0;
    for (index_t j = 0; j < W; ++j) s += static_cast<double>(probs[r * W + j]);
    CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
  }
}

TEST_CASE("a checkpoint records the attention policy: weights of one variant do not load into another") {
  const auto c = decode_config(4, 2);
  model::Transformer<attention::SlidingWindow<kS8, 3>, ffn::SwiGLU> window(c);
  model::Transformer<attention::SlidingWindow<kS8, 4>, ffn::SwiGLU> window4(c);
  model::Transformer<attention::MultiHead<kS8>, ffn::SwiGLU> full(c);
  // the same parameter layout, so only the record tells them apart
  REQUIRE(window.num_params() == full.num_params());
  const auto meta = window.model_metadata();
  CHECK(meta.at("attention") == "sliding_window(W=3)");
  CHECK_NOTHROW(window.expect_model_metadata(meta, "checkpoint 'w.safetensors'"));
  CHECK_THROWS_WITH_AS(full.expect_model_metadata(meta, "checkpoint 'w.safetensors'"),
                       "checkpoint 'w.safetensors': attention is sliding_window(W=3), but this model is built with multi_head",
                       reason::Error);
  CHECK_THROWS_WITH_AS(window4.expect_model_metadata(meta, "checkpoint 'w.safetensors'"),
                       doctest::Contains("but this model is built with sliding_window(W=4)"), reason::Error);
  // files from before the record were all multi_head
  auto old = full.model_metadata();
  old.erase("attention");
  CHECK_NOTHROW(full.expect_model_metadata(old, "old"));
  CHECK_THROWS_WITH_AS(window.expect_model_metadata(old, "old"), doctest::Contains("attention is multi_head"), reason::Error);
  using Mix = attention::Hierarchical<attention::TopK<kS8, 2>, attention::SlidingWindow<kS8, 3>, attention::PlainSum>;
  CHECK(model::Transformer<Mix, ffn::SwiGLU>::attention_signature() == "hierarchical(top_k(k=2), sliding_window(W=3), plain_sum)");
}
