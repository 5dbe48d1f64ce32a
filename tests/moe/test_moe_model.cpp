// MoE layers inside the Transformer: the whole model's backward (aux loss and capacity drops
// included) against finite differences, decoding against the full forward, the trainer's
// balancing update after each step, bit-identical resume mid-accumulation, and checkpoints that
// refuse a model with another feed-forward policy.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/moe/moe.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/trainer.hpp"
#include "support/training_fixtures.hpp"
#include "support/decode_check.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

using test::counting_source;

using Attn = attention::MultiHead<attention::Shape{.head_dim = 8}>;

// Every expert chosen (top_k = experts) and drops by token order: routing cannot flip under a
// finite-difference step, so the whole model is smooth — yet capacity drops, normalisation and
// the bias are all on the path. (An aux loss would be constant here: every f_i is 1.)
using SmoothGate = moe::SigmoidTopK<moe::GateConfig{.experts = 4, .top_k = 4, .routed_scale = 1.5f}, moe::Capacity<0.75f>,
                                    moe::BiasBalance<0.01f>>;
using SmoothMoE = moe::MoE<SmoothGate, ffn::SwiGLU, moe::Shared<1>>;
// Two of four experts, with the sequence-wise loss (alpha 1 so that it weighs in the gradient);
// the test scales the router weights up so that no choice is within a finite-difference step
// of flipping.
using AuxGate = moe::SigmoidTopK<moe::GateConfig{.experts = 4, .top_k = 2}, moe::NoDrop, moe::BiasBalance<0.01f>,
                                 moe::SequenceLoss<1.0f>>;
using AuxMoE = moe::MoE<AuxGate, ffn::SwiGLU, moe::Shared<1>>;

using Gate8 = moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::NoDrop, moe::BiasBalance<0.01f>>;
using MoE8 = moe::MoE<Gate8, ffn::SwiGLU, moe::Shared<1>>;

model::Config moe_config() {
  model::Config c;
  c.vocab_size = 16;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.intermediate_size = 24;
  c.moe_intermediate_size = 8;
  c.first_dense_layers = 1;
  c.max_seq_len = 16;
  return c;
}

struct Data {
  std::vector<std::int32_t> tokens, targets;
};
Data token_data(index_t batch, index_t seq, index_t vocab, std::uint64_t seed) {
  Philox rng(seed, 3);
  Data d;
  for (index_t i = 0; i < batch * seq; ++i) {
    d.tokens.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
    d.targets.push_back(rng.below(4) == 0 ? -1 : static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
  }
  return d;
}

train::TrainConfig small_train(std::int64_t steps, int micro) { return test::small_train(steps, micro, 3, 5); }
std::filesystem::path temp_dir() { return test::temp_dir("reason_moe_model_"); }

}  // namespace

TEST_CASE("An MoE Transformer lays out dense first layers, experts, shared experts and the bias buffer") {
  using Net = model::Transformer<Attn, MoE8>;
  const Net net(moe_config());
  const ParamLayout& l = net.layout();
  CHECK(l.find("layers.0.ffn.gate_up.weight").shape == std::vector<index_t>{48, 16});  // dense, intermediate_size 24
  CHECK(l.find("layers.1.ffn.gate.weight").shape == std::vector<index_t>{8, 16});
  const ParamInfo& bias = l.find("layers.1.ffn.gate.e_score_correction_bias");
  CHECK(bias.shape == std::vector<index_t>{8});
  CHECK_FALSE(bias.trainable);
  CHECK(l.find("layers.1.ffn.experts.7.gate_up.weight").shape == std::vector<index_t>{16, 16});  // 2 x 8 wide
  CHECK(l.find("layers.1.ffn.experts.7.down.weight").shape == std::vector<index_t>{16, 8});
  CHECK(l.find("layers.1.ffn.shared_experts.gate_up.weight").shape == std::vector<index_t>{16, 16});  // one shared: 8
  CHECK(Net::routed);
  CHECK(Net::ffn_signature() ==
        "moe(sigmoid_top_k(E=8, k=2), no_drop, bias_balance(0.01); expert=swiglu; shared=1)");
  CHECK(net.model_metadata().at("ffn") == Net::ffn_signature());
  CHECK(net.model_metadata().at("first_k_dense_replace") == "1");
}

TEST_CASE_TEMPLATE("The MoE Transformer's backward equals finite differences, aux loss and capacity drops included (float64)",
                   Ffn, SmoothMoE, AuxMoE) {
  using Net = model::Transformer<Attn, Ffn, norm::RMSNorm, linear::Dense, precision::Fp64>;
  constexpr bool with_aux = Ffn::gate_policy::aux_loss_policy::active;
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  Net net(moe_config());
  const index_t batch = 2, seq = 5, n = batch * seq;
  net.reserve(batch, seq);
  std::vector<double> params(net.num_params()), grads(net.num_params(), 0.0), scratch(net.num_params(), 0.0);
  net.layout().initialize(std::span<double>(params), seed);
  const ParamInfo& bias = net.layout().find("layers.1.ffn.gate.e_score_correction_bias");
  for (std::size_t i = 0; i < bias.numel; ++i) params[bias.offset + i] = 0.01 * static_cast<double>(i);
  const ParamInfo& router = net.layout().find("layers.1.ffn.gate.weight");
  if (with_aux)  // wide score gaps: routing stays put under a step of 1e-5
    for (std::size_t i = 0; i < router.numel; ++i) params[router.offset + i] *= 20;
  const Data d = token_data(batch, seq, 16, seed);
  const auto tokens = make_view(static_cast<const std::int32_t*>(d.tokens.data()), batch, seq);
  const auto targets = make_view(static_cast<const std::int32_t*>(d.targets.data()), batch, seq);

  const double grad_scale = 0.25;
  net.forward(params.data(), grads.data(), tokens, targets, grad_scale);
  net.backward(params.data(), grads.data());
  const auto stats = net.take_router_stats();
  REQUIRE(stats.size() == 1);
  if (with_aux) {
    CHECK(stats[0].aux_loss > 0);
    CHECK(stats[0].dropped_fraction() == 0);
  } else {  // capacity 0.75: each expert keeps ceil(0.75 * 10 * 4 / 4) = 8 of its 10 assignments
    CHECK(stats[0].dropped_fraction() == doctest::Approx(0.2));
  }
  for (std::size_t i = 0; i < bias.numel; ++i) CHECK(grads[bias.offset + i] == 0.0);

  // The objective forward() differentiates: grad_scale * summed loss + (grad_scale * rows) * aux.
  auto objective = [&] {
    const auto r = net.forward(params.data(), scratch.data(), tokens, targets, grad_scale);
    const auto st = net.take_router_stats();
    return grad_scale * r.loss_sum + grad_scale * static_cast<double>(n) * st[0].aux_loss;
  };
  // The scaled router makes the sigmoid's curvature, and so central differences' O(h^2) error,
  // larger (seen up to 2e-6 over seeds); a wrong term shows as O(1) (an aux weight 10% off: 1.1).
  const auto check = test::gradcheck(objective, std::span<double>(params), grads, with_aux ? 1e-5 : 1e-6);
  MESSAGE("MoE Transformer gradcheck (" << Ffn::signature() << "): " << check.describe());
  CHECK(check.ok);

  if (with_aux) {  // the aux loss alone moves the router: a zero objective leaves only it
    std::vector<double> aux_only(net.num_params(), 0.0);
    net.forward_objective(params.data(), aux_only.data(), tokens,
                          [&](index_t, View<double, 2> logits) {
                            for (index_t r = 0; r < logits.size(0); ++r)
                              for (index_t v = 0; v < logits.size(1); ++v) logits(r, v) = 0;
                            return 0.0;
                          },
                          1.0);
    net.backward(params.data(), aux_only.data());
    double norm = 0;
    for (std::size_t i = 0; i < router.numel; ++i) norm += std::abs(aux_only[router.offset + i]);
    CHECK(norm > 0);
  }
}

// The same layout with a capacity: drops only in training forwards.
using Gate8Cap = moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::Capacity<0.5f>, moe::BiasBalance<0.01f>>;
using MoE8Cap = moe::MoE<Gate8Cap, ffn::SwiGLU, moe::Shared<1>>;

TEST_CASE_TEMPLATE("Decoding an MoE Transformer token by token gives the full forward's logits", Ffn, MoE8, MoE8Cap) {
  const double err = test::decode_vs_forward_error<Attn, Ffn>(
      moe_config(), 3, 9, 17, [](const ParamLayout& layout, std::span<float> params) {
        const ParamInfo& bias = layout.find("layers.1.ffn.gate.e_score_correction_bias");  // a bias that ranks
        for (std::size_t i = 0; i < bias.numel; ++i) params[bias.offset + i] = 0.003f * static_cast<float>(i % 3);
      });
  INFO("max |decode - full| / max |full| = " << err);
  CHECK(err <= 1e-5);
}

TEST_CASE("Capacity drops tokens in training forwards only; evaluation and decoding keep every token") {
  using NoDropNet = model::Transformer<Attn, MoE8>;
  using CapNet = model::Transformer<Attn, MoE8Cap>;
  const model::Config c = moe_config();
  NoDropNet free(c);
  CapNet capped(c);
  REQUIRE(free.num_params() == capped.num_params());  // the same layout: the same parameters fit both
  const index_t batch = 2, seq = 8, V = c.vocab_size;
  free.reserve(batch, seq);
  capped.reserve(batch, seq);
  std::vector<float> params(free.num_params()), grads(free.num_params(), 0.0f);
  free.layout().initialize(std::span<float>(params), 23);
  const Data d = token_data(batch, seq, V, 8);
  const auto tokens = make_view(static_cast<const std::int32_t*>(d.tokens.data()), batch, seq);
  const auto targets = make_view(static_cast<const std::int32_t*>(d.targets.data()), batch, seq);
  std::vector<float> a(static_cast<std::size_t>(batch * seq * V)), b(a.size());
  free.logits(params.data(), tokens, make_view(a.data(), batch * seq, V));
  capped.logits(params.data(), tokens, make_view(b.data(), batch * seq, V));
  CHECK(a == b);  // bit for bit: the evaluation forward dropped nothing
  CHECK(free.loss(params.data(), tokens, targets).loss_sum == capped.loss(params.data(), tokens, targets).loss_sum);
  const auto trained = capped.forward(params.data(), grads.data(), tokens, targets, 1.0f);
  capped.backward(params.data(), grads.data());
  const auto st = capped.take_router_stats();
  CHECK(st[0].dropped_fraction() >= 0.5);  // capacity 0.5: at least half the assignments go
  CHECK(trained.loss_sum != free.loss(params.data(), tokens, targets).loss_sum);
}

TEST_CASE("The trainer moves the balancing bias by +/- gamma per expert after each step, and AdamW never touches it") {
  using Net = model::Transformer<Attn, MoE8>;
  Net net(moe_config());
  const auto tc = small_train(4, 2);
  const auto source = counting_source(9, tc, 16);
  train::Trainer<Net, optim::AdamW> trainer(net, optim::AdamW{}, tc);
  const ParamInfo& bias = net.layout().find("layers.1.ffn.gate.e_score_correction_bias");
  std::vector<double> expected(bias.numel, 0.0);
  (void)net.take_router_stats();
  bool moved = false;
  while (!trainer.done()) {
    trainer.run_step(source);
    const auto st = net.take_router_stats();  // both micro-batches of the step
    REQUIRE(st.size() == 1);
    CHECK(st[0].forwards == 2);
    CHECK(st[0].assignments() == doctest::Approx(2.0 * 2 * tc.batch * tc.seq));  // k = 2 per token
    const double mean = st[0].assignments() / 8;
    for (std::size_t i = 0; i < bias.numel; ++i) {
      const double dl = mean - st[0].load[i];
      expected[i] += dl > 0 ? 0.01 : dl < 0 ? -0.01 : 0.0;
      CHECK(trainer.params()[bias.offset + i] == doctest::Approx(expected[i]).epsilon(1e-5));
      moved = moved || trainer.params()[bias.offset + i] != 0.0f;
      CHECK(trainer.optimizer_state()[bias.offset + i] == 0.0f);  // exp_avg: no gradient ever
    }
  }
  CHECK(moved);
}

TEST_CASE("An MoE run interrupted mid-accumulation and resumed is bit-identical to one that never stopped") {
  using Net = model::Transformer<Attn, MoE8>;
  const auto tc = small_train(6, 3);
  const auto source = counting_source(21, tc, 16);
  Net ref_net(moe_config());
  train::Trainer<Net, optim::AdamW> ref(ref_net, optim::AdamW{}, tc);
  while (!ref.done()) ref.run_step(source);

  const auto dir = temp_dir();
  const auto path = dir / "moe.safetensors";
  {
    Net net(moe_config());
    train::Trainer<Net, optim::AdamW> first(net, optim::AdamW{}, tc);
    while (first.step() < 2) first.run_step(source);
    while (first.micro() < 2) REQUIRE_FALSE(first.run_micro(source).has_value());
    train::save_checkpoint(path, first);
  }
  Net net(moe_config());
  train::Trainer<Net, optim::AdamW> resumed(net, optim::AdamW{}, tc);
  train::load_checkpoint(path, resumed);
  while (!resumed.done()) resumed.run_step(source);
  CHECK(std::memcmp(resumed.params().data(), ref.params().data(), ref.params().size_bytes()) == 0);

  // Without the saved load the step's balancing update would differ: the file carries it.
  const auto file = io::SafetensorsFile::open(path);
  CHECK(file.at("router.pending_load").shape == std::vector<std::int64_t>{8});
  std::filesystem::remove_all(dir);
}

TEST_CASE("Checkpoints refuse a model with another feed-forward policy, naming it") {
  using MoENet = model::Transformer<Attn, MoE8>;
  using DenseNet = model::Transformer<Attn, ffn::SwiGLU>;
  using OtherMoE = model::Transformer<
      Attn, moe::MoE<moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 1}, moe::NoDrop, moe::BiasBalance<0.01f>>,
                     ffn::SwiGLU, moe::Shared<1>>>;
  model::Config c = moe_config();
  c.first_dense_layers = 0;
  const MoENet moe_net(c);
  const DenseNet dense(c);  // same config numbers; a dense model ignores moe_intermediate_size
  const OtherMoE other(c);
  CHECK_THROWS_WITH(dense.expect_model_metadata(moe_net.model_metadata(), "ckpt"),
                    doctest::Contains("feed-forward policy is moe(sigmoid_top_k(E=8, k=2)"));
  CHECK_THROWS_WITH(other.expect_model_metadata(moe_net.model_metadata(), "ckpt"), doctest::Contains("k=1"));
  auto old = dense.model_metadata();  // written before MoE existed: no "ffn", no MoE sizes
  old.erase("ffn");
  old.erase("moe_intermediate_size");
  old.erase("first_k_dense_replace");
  model::Config dc = c;
  dc.moe_intermediate_size = 0;
  const DenseNet plain(dc);
  CHECK_NOTHROW(plain.expect_model_metadata(old, "old file"));
}

TEST_CASE("MoE model configurations are checked") {
  using MoENet = model::Transformer<Attn, MoE8>;
  using DenseNet = model::Transformer<Attn, ffn::SwiGLU>;
  model::Config c = moe_config();
  c.moe_intermediate_size = 0;
  CHECK_THROWS_WITH(MoENet{c}, doctest::Contains("moe_intermediate_size = 0"));
  c = moe_config();
  CHECK_THROWS_WITH(DenseNet{c}, doctest::Contains("first_dense_layers = 1 applies to MoE models"));
  c.first_dense_layers = 3;
  CHECK_THROWS_WITH(MoENet{c}, doctest::Contains("first_dense_layers <= num_layers"));
  c.first_dense_layers = 2;  // every layer dense: legal, no router
  MoENet all_dense(c);
  CHECK(all_dense.take_router_stats().empty());
}
