// Dynamic loss scaling (train/loss_scale.hpp): the scaler's schedule; on an fp32 model, whose
// gradients neither overflow nor underflow, a scaled run is bit-identical to an unscaled one
// (power-of-two scales are exact); an injected overflow skips the step — parameters, optimizer
// state and AdamW's step count untouched — and halves the scale, and the run then continues as if
// the skipped step's batch had never been drawn; the scaler's state survives a checkpoint.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/precision/precision.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/loss_scale.hpp"
#include "reason/train/trainer.hpp"
#include "support/training_fixtures.hpp"

using namespace reason;

namespace {

using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;
using Mode = train::LossScaleConfig::Mode;

model::Config small_config() { return test::small_model_config(); }

/// The model with an overflow injected into one gradient by the backward of chosen steps' last
/// micro-batch: what an fp16 activation gradient above 65504 does to the fp32 gradients.
struct OverflowingNet : Net {
  using Net::Net;
  std::vector<int> overflow_calls;  // which backward() calls (0-based) write +Inf
  int calls = 0;
  void backward(const T* params, T* grads) {
    Net::backward(params, grads);
    for (int c : overflow_calls)
      if (c == calls) grads[layout().find("lm_head.weight").offset + 3] = std::numeric_limits<float>::infinity();
    ++calls;
  }
};

/// A constant learning rate, so that which step index an update runs under does not matter.
train::TrainConfig constant_lr_train(std::int64_t steps, int micro, Mode mode, double initial_scale = 1024) {
  train::TrainConfig tc = test::small_train(steps, micro, 0, 7);
  tc.schedule = {.peak_lr = 3e-3, .min_lr = 3e-3, .warmup_steps = 0, .total_steps = steps};
  tc.loss_scale.mode = mode;
  tc.loss_scale.initial_scale = initial_scale;
  tc.loss_scale.growth_interval = 3;
  return tc;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

}  // namespace

TEST_CASE("The scaler backs off on overflow, grows after growth_interval good steps and stays in [min, max]") {
  train::LossScaleConfig c;
  c.initial_scale = 8;
  c.growth_interval = 2;
  c.min_scale = 2;
  c.max_scale = 32;
  train::DynamicLossScaler s(c, true);
  // A stand-in for the buffers: its gradient norm is whatever the test says.
  struct Buffers {
    double raw = 1;
    double last_unscale = 0;
    double clip_grad_norm(double, double unscale) {
      last_unscale = unscale;
      return raw * unscale;
    }
  } b;
  const auto good = [&] { b.raw = 1; return s.unscale_and_clip(b, 0.0); };
  const auto bad = [&] { b.raw = std::numeric_limits<double>::infinity(); return s.unscale_and_clip(b, 0.0); };

  CHECK(s.scale() == 8);
  CHECK(good() == doctest::Approx(1.0 / 8));  // the norm comes back unscaled
  CHECK(b.last_unscale == 1.0 / 8);
  CHECK(s.scale() == 8);
  CHECK(good().has_value());  // second good step: grows
  CHECK(s.scale() == 16);
  CHECK(s.good_steps() == 0);
  CHECK(!bad().has_value());
  CHECK(s.scale() == 8);
  CHECK(s.skipped_steps() == 1);
  CHECK(!bad().has_value());
  CHECK(!bad().has_value());  // 8 -> 4 -> 2, and not below min_scale
  CHECK(s.scale() == 2);
  CHECK(s.skipped_steps() == 3);
  for (int i = 0; i < 20; ++i) (void)good();
  CHECK(s.scale() == 32);  // capped at max_scale

  train::DynamicLossScaler off(c, false);
  b.raw = std::numeric_limits<double>::infinity();
  const auto r = off.unscale_and_clip(b, 0.0);  // off: the non-finite norm goes back to the caller
  REQUIRE(r.has_value());
  CHECK(std::isinf(*r));
  CHECK(off.scale() == 1);
  CHECK(off.skipped_steps() == 0);
}

TEST_CASE("LossScaleConfig refuses scales that are not powers of two and impossible states") {
  train::LossScaleConfig c;
  c.initial_scale = 1000;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("powers of two"), Error);
  c.initial_scale = 1024;
  c.growth_factor = 0.5;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("growth_factor > 1"), Error);
  c = {};
  train::DynamicLossScaler s(c, true);
  CHECK_THROWS_WITH_AS(s.set_state(3.0, 0, 0, "test"), doctest::Contains("impossible"), Error);
  CHECK_THROWS_WITH_AS(s.set_state(1024.0, c.growth_interval, 0, "test"), doctest::Contains("impossible"), Error);
  train::DynamicLossScaler off(c, false);
  CHECK_THROWS_WITH_AS(off.set_state(2.0, 0, 0, "test"), doctest::Contains("without loss scaling"), Error);
  // The default follows the precision policy: fp16 asks for scaling, fp32 and bf16 do not.
  CHECK(train::loss_scaling_enabled<precision::Fp16>(c));
  CHECK(!train::loss_scaling_enabled<precision::Fp32>(c));
  CHECK(!train::loss_scaling_enabled<precision::Bf16>(c));
  CHECK(!train::loss_scaling_enabled<void>(c));
  c.mode = Mode::dynamic;
  CHECK(train::loss_scaling_enabled<precision::Fp32>(c));
  c.mode = Mode::off;
  CHECK(!train::loss_scaling_enabled<precision::Fp16>(c));
}

TEST_CASE("On an fp32 model a loss-scaled run is bit-identical to an unscaled one") {
  for (int micro : {1, 3}) {
    CAPTURE(micro);
    Net a_net(small_config()), b_net(small_config());
    auto tc = constant_lr_train(6, micro, Mode::off);
    tc.schedule = {.peak_lr = 3e-3, .min_lr = 3e-4, .warmup_steps = 2, .total_steps = 6};
    train::Trainer<Net, optim::AdamW> plain(a_net, optim::AdamW{}, tc);
    tc.loss_scale.mode = Mode::dynamic;
    tc.loss_scale.initial_scale = 65536;
    train::Trainer<Net, optim::AdamW> scaled(b_net, optim::AdamW{}, tc);
    const auto source = test::counting_source(3, tc, 16);
    bool grew = false;
    while (!plain.done()) {
      const train::StepStats p = plain.run_step(source), s = scaled.run_step(source);
      CHECK(p.loss_scale == 1);
      CHECK(!s.skipped);
      grew |= s.loss_scale > 65536;
      CHECK(p.loss == s.loss);
      CHECK(p.grad_norm == doctest::Approx(s.grad_norm).epsilon(1e-12));  // sqrt of the scaled sum, times 1/S
      REQUIRE(same_bits(plain.params(), scaled.params()));
      REQUIRE(same_bits(plain.optimizer_state(), scaled.optimizer_state()));
    }
    CHECK(grew);  // growth_interval 3 over 6 steps: the scale doubled on the way, still exact
    CHECK(scaled.loss_scaler().skipped_steps() == 0);
  }
}

TEST_CASE("An injected overflow skips the step, leaves everything unchanged and halves the scale") {
  for (int micro : {1, 2}) {
    CAPTURE(micro);
    // The overflowing run: step 1's gradients hold an Inf.
    OverflowingNet net(small_config());
    net.overflow_calls = {2 * micro - 1};  // the last micro-batch of step 1
    const auto tc = constant_lr_train(4, micro, Mode::dynamic);
    train::Trainer<OverflowingNet, optim::AdamW> t(net, optim::AdamW{}, tc);
    const auto source = test::counting_source(5, tc, 16);

    const train::StepStats s0 = t.run_step(source);
    CHECK(!s0.skipped);
    CHECK(s0.loss_scale == 1024);
    const std::vector<float> params(t.params().begin(), t.params().end());
    const std::vector<float> state(t.optimizer_state().begin(), t.optimizer_state().end());
    const train::StepStats s1 = t.run_step(source);
    CHECK(s1.skipped);
    CHECK(s1.step == 1);
    CHECK(s1.loss_scale == 1024);
    CHECK(std::isnan(s1.grad_norm));
    CHECK(std::isfinite(s1.loss));
    CHECK(same_bits(params, t.params()));
    CHECK(same_bits(state, t.optimizer_state()));
    CHECK(t.loss_scaler().scale() == 512);
    CHECK(t.loss_scaler().skipped_steps() == 1);
    CHECK(t.step() == 2);  // the run moves on to the next step's data
    const train::StepStats s2 = t.run_step(source);
    CHECK(!s2.skipped);
    CHECK(s2.loss_scale == 512);

    // The reference: the same run without the overflowing step's batch. Its second update must
    // equal the overflowing run's (same data, same lr, AdamW's t = 2 in both, exact unscaling).
    Net ref_net(small_config());
    train::Trainer<Net, optim::AdamW> ref(ref_net, optim::AdamW{}, tc);
    const train::BatchSource without_step_1 = [&](std::int64_t step, int m, train::TokenBatch& b) {
      source(step >= 1 ? step + 1 : step, m, b);
    };
    (void)ref.run_step(without_step_1);
    (void)ref.run_step(without_step_1);
    CHECK(same_bits(ref.params(), t.params()));
    CHECK(same_bits(ref.optimizer_state(), t.optimizer_state()));
  }
}

TEST_CASE("Without loss scaling an overflow is still an error that leaves the parameters unchanged") {
  OverflowingNet net(small_config());
  net.overflow_calls = {0};
  const auto tc = constant_lr_train(2, 1, Mode::by_precision);  // fp32: no scaling
  train::Trainer<OverflowingNet, optim::AdamW> t(net, optim::AdamW{}, tc);
  CHECK(!t.loss_scaler().enabled());
  const std::vector<float> before(t.params().begin(), t.params().end());
  CHECK_THROWS_WITH_AS(t.run_step(test::counting_source(1, tc, 16)), doctest::Contains("the gradient norm is inf"), Error);
  CHECK(same_bits(before, t.params()));
}

TEST_CASE("The scaler's state is part of a checkpoint; a resumed run continues bit for bit") {
  const auto dir = test::temp_dir("reason_loss_scale_");
  const auto tc = constant_lr_train(6, 2, Mode::dynamic);
  const auto source = test::counting_source(9, tc, 16);
  const auto overflowing = [] {
    auto n = std::make_unique<OverflowingNet>(small_config());
    n->overflow_calls = {1, 5};  // steps 0 and 2 overflow
    return n;
  };
  auto full_net = overflowing();
  train::Trainer<OverflowingNet, optim::AdamW> full(*full_net, optim::AdamW{}, tc);
  while (!full.done()) (void)full.run_step(source);
  CHECK(full.loss_scaler().skipped_steps() == 2);
  CHECK(full.loss_scaler().scale() == 512);  // 1024 -> 256 by the two skips, then 3 good steps: 512

  // Stop after step 2 and micro-batch 0 of step 3 (mid-accumulation), resume in a fresh trainer.
  auto first_net = overflowing();
  train::Trainer<OverflowingNet, optim::AdamW> first(*first_net, optim::AdamW{}, tc);
  for (int i = 0; i < 3; ++i) (void)first.run_step(source);
  (void)first.run_micro(source);
  const auto path = dir / "scaled.safetensors";
  train::save_checkpoint(path, first);

  OverflowingNet second_net(small_config());  // later steps do not overflow: the calls are counted afresh
  train::Trainer<OverflowingNet, optim::AdamW> second(second_net, optim::AdamW{}, tc);
  train::load_checkpoint(path, second);
  CHECK(second.loss_scaler().scale() == first.loss_scaler().scale());
  CHECK(second.loss_scaler().good_steps() == first.loss_scaler().good_steps());
  CHECK(second.loss_scaler().skipped_steps() == 2);
  while (!second.done()) (void)second.run_step(source);
  CHECK(same_bits(full.params(), second.params()));
  CHECK(same_bits(full.optimizer_state(), second.optimizer_state()));
  CHECK(second.loss_scaler().scale() == full.loss_scaler().scale());

  // A run without loss scaling refuses the file, and the other way round.
  Net plain_net(small_config());
  auto plain_tc = tc;
  plain_tc.loss_scale.mode = Mode::off;
  train::Trainer<Net, optim::AdamW> plain(plain_net, optim::AdamW{}, plain_tc);
  CHECK_THROWS_WITH_AS(train::load_checkpoint(path, plain),
                       doctest::Contains("written with dynamic loss scaling, but this run is without it"), Error);
  const auto plain_path = dir / "plain.safetensors";
  train::save_checkpoint(plain_path, plain);
  CHECK_THROWS_WITH_AS(train::load_checkpoint(plain_path, second),
                       doctest::Contains("written without dynamic loss scaling, but this run is with it"), Error);
  std::filesystem::remove_all(dir);
}
