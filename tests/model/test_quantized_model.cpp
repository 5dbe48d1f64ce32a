// The transformer with quantized linear layers (linear/quantized.hpp) against the float model:
//   * a float checkpoint's parameters load unchanged (same layout) and are quantized on load;
//   * weight-only INT4: the logits equal those of the float model whose linear weights were
//     replaced by dq(q(W)), to float summation order (the products differ only in order);
//   * INT8 (activations quantized too) and FP8: the logits stay close to the float model's;
//   * fake quantization: forward bit-equal to the float model on dq(q(W)); gradients are that
//     model's (the straight-through estimator: dW = dy^T x at the quantized weights);
//   * a parameter buffer written over is quantized again; a quantized layer has no backward.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/linear/quantized.hpp"
#include "reason/model/transformer.hpp"
#include "reason/quant/bf16_weights.hpp"
#include "reason/quant/fake_quant.hpp"
#include "reason/quant/fp8_block.hpp"
#include "reason/quant/int4.hpp"
#include "reason/quant/int8.hpp"

using namespace reason;

namespace {

using Attn = attention::MultiHead<attention::Shape{.head_dim = 16}>;
template <class Linear>
using NetWith = model::Transformer<Attn, ffn::SwiGLU, norm::RMSNorm, Linear>;
using FloatNet = NetWith<linear::Dense>;

model::Config config() {
  return {.vocab_size = 53, .hidden_size = 128, .num_layers = 2, .num_heads = 8, .num_kv_heads = 4,
          .intermediate_size = 256, .max_seq_len = 16};
}

struct Inputs {
  index_t b = 2, t = 11;
  std::vector<std::int32_t> tokens, targets;
  Inputs() {
    Philox rng(3, 0);
    for (index_t i = 0; i < b * t; ++i) tokens.push_back(static_cast<std::int32_t>(rng.next_u32() % 53));
    for (index_t i = 0; i < b * t; ++i) targets.push_back(static_cast<std::int32_t>(rng.next_u32() % 53));
  }
  [[nodiscard]] View<const std::int32_t, 2> tok() const { return make_view(tokens.data(), b, t); }
  [[nodiscard]] View<const std::int32_t, 2> tgt() const { return make_view(targets.data(), b, t); }
};

/// The float model's initialisation times `gain` (2: weights away from zero, so quantization shows).
std::vector<float> float_params(const FloatNet& net, std::uint64_t seed, float gain = 2.0f) {
  std::vector<float> p(net.num_params());
  net.layout().initialize(std::span<float>(p), seed);
  for (float& x : p) x *= gain;
  return p;
}

template <class Net>
std::vector<float> logits_of(Net& net, const std::vector<float>& p, const Inputs& in) {
  std::vector<float> out(static_cast<std::size_t>(in.b * in.t * net.config().vocab_size));
  net.reserve(in.b, in.t);
  net.logits(p.data(), in.tok(), make_view(out.data(), in.b * in.t, net.config().vocab_size));
  return out;
}

/// `p` with every linear-layer weight (2-D, under layers.) replaced by Q's dq(q(W)).
template <class Q>
std::vector<float> with_dequantized_linears(const FloatNet& net, std::vector<float> p) {
  for (const ParamInfo& t : net.layout().params()) {
    if (t.shape.size() != 2 || t.name.rfind("layers.", 0) != 0) continue;
    const index_t rows = t.shape[0], cols = t.shape[1];
    std::vector<float> wq(t.numel);
    quant::fake_quant_weights<Q>(make_view(static_cast<const float*>(p.data() + t.offset), rows, cols),
                                 make_view(wq.data(), rows, cols), t.name);
    std::copy(wq.begin(), wq.end(), p.begin() + static_cast<std::ptrdiff_t>(t.offset));
  }
  return p;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace

TEST_CASE("quantized linear layers declare linear::Dense's parameters, so float checkpoints load") {
  const FloatNet f(config());
  const NetWith<linear::Quantized<quant::Int4Group<128>>> q(config());
  REQUIRE(q.layout().params().size() == f.layout().params().size());
  for (std::size_t i = 0; i < f.layout().params().size(); ++i) {
    CHECK(q.layout().params()[i].name == f.layout().params()[i].name);
    CHECK(q.layout().params()[i].offset == f.layout().params()[i].offset);
  }
}

/// A weight-only scheme's model against the float model on dq(q(W)): equal to summation order.
template <class Q>
void expect_weight_only_exact(std::uint64_t seed) {
  FloatNet f(config());
  NetWith<linear::Quantized<Q>> q(config());
  const Inputs in;
  const std::vector<float> p = float_params(f, seed);
  const std::vector<float> ref = logits_of(f, with_dequantized_linears<Q>(f, p), in);
  const std::vector<float> got = logits_of(q, p, in);
  const double scale = max_abs(ref), err = max_diff(got, ref);
  MESSAGE(Q::name << ": max |logit - logit(dq(q(W)))| = " << err << " (logit scale " << scale << ")");
  CHECK(err <= 1e-4 * scale);
  // and quantization did something: the float model's logits differ by far more
  CHECK(max_diff(logits_of(f, p, in), ref) > 10 * err);
}

TEST_CASE("weight-only INT4 and bf16: the logits are the float model's on dq(q(W)), to summation order") {
  expect_weight_only_exact<quant::Int4Group<64>>(11);
  expect_weight_only_exact<quant::Int4Group<128, quant::Symmetry::symmetric>>(14);
  expect_weight_only_exact<quant::Bf16Weights>(15);
}

TEST_CASE("a quantized model marks the weights it stores quantized") {
  const NetWith<linear::Quantized<quant::Int4Group<128>>> q(config());
  int marked = 0;
  for (const ParamInfo& t : q.layout().params()) {
    const bool linear_weight = t.name.rfind("layers.", 0) == 0 && t.shape.size() == 2;
    CHECK_MESSAGE(t.storage == (linear_weight ? "int4_g128_asym" : ""), t.name);
    marked += !t.storage.empty();
  }
  CHECK(marked == 4 * config().num_layers);  // qkv, o, gate_up, down
}

TEST_CASE("INT8 and FP8 models stay close to the float model") {
  FloatNet f(config());
  const Inputs in;
  const std::vector<float> p = float_params(f, 12, 1.0f);  // (errors grow with the gain through the layers)
  const std::vector<float> ref = logits_of(f, p, in);
  const double scale = max_abs(ref);
  NetWith<linear::Quantized<quant::Int8Symmetric>> i8(config());
  NetWith<linear::Quantized<quant::Int8Asymmetric>> a8(config());
  NetWith<linear::Quantized<quant::Fp8Block<fp8_e4m3>>> e4(config());
  const double e_i8 = max_diff(logits_of(i8, p, in), ref), e_a8 = max_diff(logits_of(a8, p, in), ref),
               e_e4 = max_diff(logits_of(e4, p, in), ref);
  MESSAGE("max |logit - float logit| / scale: int8 sym " << e_i8 / scale << ", int8 asym " << e_a8 / scale
                                                         << ", fp8 e4m3 " << e_e4 / scale);
  CHECK(e_i8 > 0);
  CHECK(e_i8 <= 0.03 * scale);  // observed ~0.01: 8-bit grids, 1/254 of a row's range per step
  CHECK(e_a8 <= 0.03 * scale);
  CHECK(e_e4 <= 0.10 * scale);  // observed ~0.04: e4m3 keeps 3 mantissa bits (2^-4 relative)
}

TEST_CASE("fake quantization: forward and gradients are the float model's at dq(q(W))") {
  using Q = quant::Int8Symmetric;
  FloatNet f(config());
  NetWith<linear::FakeQuantized<Q>> fq(config());
  const Inputs in;
  const std::vector<float> p = float_params(f, 13), pq = with_dequantized_linears<Q>(f, p);
  f.reserve(in.b, in.t);
  fq.reserve(in.b, in.t);
  std::vector<float> g_ref(p.size(), 0.0f), g(p.size(), 0.0f);
  const auto r_ref = f.forward(pq.data(), g_ref.data(), in.tok(), in.tgt(), 1.0f);
  f.backward(pq.data(), g_ref.data());
  const auto r = fq.forward(p.data(), g.data(), in.tok(), in.tgt(), 1.0f);
  fq.backward(p.data(), g.data());
  CHECK(r.loss_sum == r_ref.loss_sum);  // the same kernels on the same weights
  CHECK(max_diff(g, g_ref) == 0.0);
}

TEST_CASE("a parameter buffer written over is quantized again") {
  using Q = quant::Int4Group<128, quant::Symmetry::symmetric>;
  FloatNet f(config());
  NetWith<linear::Quantized<Q>> q(config());
  const Inputs in;
  std::vector<float> buf = float_params(f, 21);
  (void)logits_of(q, buf, in);                       // quantized from the first contents
  const std::vector<float> second = float_params(f, 22);
  std::copy(second.begin(), second.end(), buf.begin());  // same address, a new checkpoint
  NetWith<linear::Quantized<Q>> fresh(config());
  CHECK(max_diff(logits_of(q, buf, in), logits_of(fresh, second, in)) == 0.0);
}

TEST_CASE("a quantized layer has no backward and says what to use instead") {
  NetWith<linear::Quantized<quant::Int8Symmetric>> q(config());
  const FloatNet f(config());
  const Inputs in;
  const std::vector<float> p = float_params(f, 5);
  std::vector<float> g(p.size(), 0.0f);
  q.reserve(in.b, in.t);
  (void)q.forward(p.data(), g.data(), in.tok(), in.tgt(), 1.0f);
  CHECK_THROWS_WITH_AS(q.backward(p.data(), g.data()), doctest::Contains("linear::FakeQuantized<int8_sym_channel_token>"),
                       Error);
}
