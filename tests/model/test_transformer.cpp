// The composed transformer: its backward against finite differences on the float64
// instantiation, decoding with the KV cache against the full forward, and training sanity.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

template <class P, int D = 4>
using TinyNet = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = D}>, ffn::SwiGLU, norm::RMSNorm,
                                   linear::Dense, P>;

model::Config tiny_config(index_t kv_heads) {
  model::Config c;
  c.vocab_size = 11;
  c.hidden_size = 6;
  c.num_layers = 2;
  c.num_heads = 3;
  c.num_kv_heads = kv_heads;
  c.intermediate_size = 7;
  c.max_seq_len = 8;
  c.init_std = 0.4;  // large enough that every path carries signal in the check
  return c;
}

struct Data {
  std::vector<std::int32_t> tokens, targets;
};

Data make_data(index_t batch, index_t seq, index_t vocab, Philox& rng) {
  Data d;
  for (index_t i = 0; i < batch * seq; ++i) {
    d.tokens.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
    // about a quarter of the positions are ignored, as prompts and padding are
    d.targets.push_back(rng.below(4) == 0 ? -1 : static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
  }
  return d;
}

}  // namespace

TEST_CASE_TEMPLATE("Transformer backward equals finite differences (float64)", Kv, std::integral_constant<int, 1>,
                   std::integral_constant<int, 3>) {
  using Net = TinyNet<precision::Fp64>;
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Net net(tiny_config(Kv::value));
  const index_t batch = 2, seq = 5;
  net.reserve(batch, seq);
  std::vector<double> params(net.num_params()), grads(net.num_params(), 0.0);
  net.layout().initialize(std::span<double>(params), seed);
  Philox rng(seed, 99);
  const Data d = make_data(batch, seq, 11, rng);
  const auto tokens = make_view(d.tokens.data(), batch, seq);
  const auto targets = make_view(d.targets.data(), batch, seq);

  const auto r = net.forward(params.data(), grads.data(), tokens, targets, 1.0);
  net.backward(params.data(), grads.data());
  CHECK(r.count > 0);
  auto loss = [&] { return net.loss(params.data(), tokens, targets).loss_sum; };
  const auto check = test::gradcheck(loss, std::span<double>(params), grads);
  INFO(check.describe());
  CHECK(check.ok);
  CHECK(check.max_rel_error <= 1e-6);
}

TEST_CASE("Transformer gradcheck catches a broken backward") {
  using Net = TinyNet<precision::Fp64>;
  Net net(tiny_config(1));
  net.reserve(1, 4);
  std::vector<double> params(net.num_params()), grads(net.num_params(), 0.0);
  net.layout().initialize(std::span<double>(params), 7);
  Philox rng(7, 1);
  const Data d = make_data(1, 4, 11, rng);
  const auto tokens = make_view(d.tokens.data(), 1, 4);
  const auto targets = make_view(d.targets.data(), 1, 4);
  net.forward(params.data(), grads.data(), tokens, targets, 1.0);
  net.backward(params.data(), grads.data());
  grads[net.layout().find("layers.1.ffn_norm.weight").offset + 2] *= 1.001;  // one wrong coordinate
  auto loss = [&] { return net.loss(params.data(), tokens, targets).loss_sum; };
  CHECK_FALSE(test::gradcheck(loss, std::span<double>(params), grads).ok);
}

TEST_CASE("Decoding with the KV cache gives the full forward's logits") {
  using Net = TinyNet<precision::Fp32, 8>;
  model::Config c = tiny_config(1);
  c.hidden_size = 16;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 12;
  c.init_std = 0.2;
  Net net(c);
  const index_t batch = 3, seq = 10;
  net.reserve(batch, seq);
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), test::test_seed());
  Philox rng(test::test_seed(), 5);
  const Data d = make_data(batch, seq, c.vocab_size, rng);
  std::vector<float> full(static_cast<std::size_t>(batch * seq * c.vocab_size));
  net.logits(params.data(), make_view(d.tokens.data(), batch, seq), make_view(full.data(), batch * seq, c.vocab_size));

  auto state = net.make_decode_state(batch, seq);
  std::vector<std::int32_t> step_tokens(batch);
  std::vector<float> step_logits(static_cast<std::size_t>(batch * c.vocab_size));
  double worst = 0;
  for (index_t t = 0; t < seq; ++t) {
    for (index_t b = 0; b < batch; ++b) step_tokens[b] = d.tokens[b * seq + t];
    net.decode_step(params.data(), make_view(static_cast<const std::int32_t*>(step_tokens.data()), batch), t, state,
                    make_view(step_logits.data(), batch, c.vocab_size));
    for (index_t b = 0; b < batch; ++b)
      for (index_t v = 0; v < c.vocab_size; ++v) {
        const double a = step_logits[b * c.vocab_size + v], e = full[(b * seq + t) * c.vocab_size + v];
        worst = std::max(worst, std::abs(a - e) / std::max(1.0, std::abs(e)));
      }
  }
  CHECK(worst <= 1e-5);
}

TEST_CASE("Transformer rejects bad sizes with named errors") {
  using Net = TinyNet<precision::Fp32>;
  model::Config c = tiny_config(2);  // 3 heads, 2 kv heads
  CHECK_THROWS_WITH_AS(Net{c}, doctest::Contains("num_heads = 3 is not a multiple of num_kv_heads = 2"), Error);
  Net net(tiny_config(1));
  CHECK_THROWS_WITH_AS(net.reserve(2, 9), doctest::Contains("max_seq_len = 8"), Error);
  net.reserve(1, 4);
  std::vector<float> params(net.num_params());
  std::vector<std::int32_t> tokens{1, 2, 3, 11}, targets{2, 3, 4, 5};
  CHECK_THROWS_WITH_AS(net.loss(params.data(), make_view(static_cast<const std::int32_t*>(tokens.data()), 1, 4),
                                make_view(static_cast<const std::int32_t*>(targets.data()), 1, 4)),
                       doctest::Contains("11"), Error);
}

TEST_CASE("forward_objective with the cross-entropy gradient equals the fused loss path") {
  // The generic logits objective, given softmax - onehot, must reproduce forward() exactly in
  // loss and to rounding in every gradient; its backward is checked by finite differences.
  using Net = TinyNet<precision::Fp64>;
  Net net(tiny_config(1));
  const index_t batch = 2, seq = 5, vocab = 11;
  net.reserve(batch, seq);
  std::vector<double> params(net.num_params()), g_ref(net.num_params(), 0.0), g_obj(net.num_params(), 0.0);
  net.layout().initialize(std::span<double>(params), test::test_seed());
  Philox rng(test::test_seed(), 3);
  const Data d = make_data(batch, seq, vocab, rng);
  const auto tokens = make_view(d.tokens.data(), batch, seq);
  const auto targets = make_view(d.targets.data(), batch, seq);
  const double scale = 0.37;
  const auto ref = net.forward(params.data(), g_ref.data(), tokens, targets, scale);
  net.backward(params.data(), g_ref.data());

  auto objective = [&](index_t first, View<double, 2> logits) {
    double loss = 0;
    for (index_t r = 0; r < logits.size(0); ++r) {
      double* row = logits.row(r);
      const std::int32_t t = d.targets[static_cast<std::size_t>(first + r)];
      if (t < 0) {
        std::fill(row, row + vocab, 0.0);
        continue;
      }
      const double mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (index_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
      loss += mx + std::log(sum) - row[t];
      for (index_t v = 0; v < vocab; ++v) row[v] = scale * (std::exp(row[v] - mx) / sum - (v == t ? 1.0 : 0.0));
    }
    return loss;
  };
  const double loss = net.forward_objective(params.data(), g_obj.data(), tokens, objective);
  net.backward(params.data(), g_obj.data());
  CHECK(loss == doctest::Approx(ref.loss_sum).epsilon(1e-12));
  double worst = 0;
  for (std::size_t i = 0; i < g_ref.size(); ++i) worst = std::max(worst, std::abs(g_ref[i] - g_obj[i]));
  CHECK(worst < 1e-12);

  auto eval = [&] { return scale * net.forward_objective(params.data(), nullptr, tokens, objective); };
  const auto check = test::gradcheck(eval, std::span<double>(params), g_obj);
  INFO(check.describe());
  CHECK(check.ok);
}

TEST_CASE("A head on the final hidden states trains through hidden_grad") {
  // L = sum(final_hidden * R): its gradient enters through hidden_grad() alone.
  using Net = TinyNet<precision::Fp64>;
  Net net(tiny_config(3));
  const index_t batch = 2, seq = 4;
  net.reserve(batch, seq);
  std::vector<double> params(net.num_params()), grads(net.num_params(), 0.0);
  net.layout().initialize(std::span<double>(params), test::test_seed() + 1);
  Philox rng(test::test_seed(), 4);
  const Data d = make_data(batch, seq, 11, rng);
  const auto tokens = make_view(d.tokens.data(), batch, seq);
  std::vector<double> R(static_cast<std::size_t>(batch * seq * 6));
  test::fill_uniform(std::span<double>(R), rng);
  auto loss = [&] {
    const auto h = net.forward_hidden(params.data(), tokens, false);
    double l = 0;
    for (index_t r = 0; r < h.size(0); ++r)
      for (index_t c = 0; c < h.size(1); ++c) l += h(r, c) * R[static_cast<std::size_t>(r * 6 + c)];
    return l;
  };
  net.forward_hidden(params.data(), tokens, true);
  auto dh = net.hidden_grad();
  for (index_t r = 0; r < dh.size(0); ++r)
    for (index_t c = 0; c < dh.size(1); ++c) dh(r, c) += R[static_cast<std::size_t>(r * 6 + c)];
  net.backward(params.data(), grads.data());
  const auto check = test::gradcheck(loss, std::span<double>(params), grads);
  INFO(check.describe());
  CHECK(check.ok);
}

TEST_CASE("Empty batches, skipped decode positions and reserve after forward are handled") {
  using Net = TinyNet<precision::Fp32>;
  Net net(tiny_config(1));
  net.reserve(2, 4);
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), 3);
  std::vector<std::int32_t> none;
  CHECK_THROWS_WITH_AS(net.loss(params.data(), make_view(static_cast<const std::int32_t*>(none.data()), 0, 4),
                                make_view(static_cast<const std::int32_t*>(none.data()), 0, 4)),
                       doctest::Contains("expected at least one sequence"), Error);
  std::vector<std::int32_t> tokens{1, 2, 3, 4}, targets{2, 3, 4, 5};
  std::vector<float> grads(net.num_params());
  net.forward(params.data(), grads.data(), make_view(static_cast<const std::int32_t*>(tokens.data()), 1, 4),
              make_view(static_cast<const std::int32_t*>(targets.data()), 1, 4), 1.0f);
  net.reserve(4, 8);  // may move the arena: the pending backward is gone, not read from freed memory
  CHECK_THROWS_WITH_AS(net.backward(params.data(), grads.data()), doctest::Contains("no forward()"), Error);

  auto st = net.make_decode_state(1, 8);
  std::vector<float> logits(11);
  const std::int32_t tok = 1;
  net.decode_step(params.data(), make_view(&tok, 1), 0, st, make_view(logits.data(), 1, 11));
  CHECK_THROWS_WITH_AS(net.decode_step(params.data(), make_view(&tok, 1), 2, st, make_view(logits.data(), 1, 11)),
                       doctest::Contains("skips ahead"), Error);
}
