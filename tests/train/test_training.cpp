// Training: the loss falls, a single batch is memorised, gradient accumulation equals a larger
// batch, and a run interrupted anywhere and resumed from its checkpoint is bit-identical.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/optim/sgd.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/trainer.hpp"
#include "support/training_fixtures.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

using test::counting_source;

using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;

model::Config small_config() { return test::small_model_config(); }

train::TrainConfig small_train(std::int64_t steps, int micro) { return test::small_train(steps, micro, 5, 11); }
std::filesystem::path temp_dir() { return test::temp_dir("reason_train_"); }

}  // namespace

TEST_CASE("Training halves the loss within a fixed number of steps") {
  Net net(small_config());
  const auto tc = small_train(60, 1);
  train::Trainer<Net, optim::AdamW> trainer(net, optim::AdamW{}, tc);
  const auto source = counting_source(3, tc, 16);
  const double first = trainer.run_step(source).loss;
  double last = first;
  while (!trainer.done()) last = trainer.run_step(source).loss;
  CAPTURE(first);
  CAPTURE(last);
  CHECK(first > 2.0);  // about log(16) = 2.77 at initialisation
  CHECK(last < 0.5 * first);
}

TEST_CASE("A single batch is overfit to near zero loss") {
  Net net(small_config());
  auto tc = small_train(200, 1);
  tc.schedule = {.peak_lr = 1e-2, .min_lr = 1e-3, .warmup_steps = 5, .total_steps = 200};
  train::Trainer<Net, optim::AdamW> trainer(net, optim::AdamW{.config = {.weight_decay = 0.0}}, tc);
  train::BatchSource same = [&](std::int64_t, int, train::TokenBatch& b) {
    b.resize(tc.batch, tc.seq);
    Philox rng(9, 0);  // the same random tokens and targets every step: pure memorisation
    for (auto& t : b.tokens) t = static_cast<std::int32_t>(rng.below(16));
    for (auto& t : b.targets) t = static_cast<std::int32_t>(rng.below(16));
  };
  double loss = 0;
  while (!trainer.done()) loss = trainer.run_step(same).loss;
  CAPTURE(loss);
  CHECK(loss < 0.05);
}

TEST_CASE("SGD with momentum also trains") {
  Net net(small_config());
  auto tc = small_train(80, 1);
  tc.schedule = {.peak_lr = 0.3, .min_lr = 0.03, .warmup_steps = 5, .total_steps = 80};
  train::Trainer<Net, optim::SgdMomentum> trainer(net, optim::SgdMomentum{}, tc);
  const auto source = counting_source(3, tc, 16);
  const double first = trainer.run_step(source).loss;
  double last = first;
  while (!trainer.done()) last = trainer.run_step(source).loss;
  CHECK(last < 0.7 * first);
}

TEST_CASE("Accumulating micro-batches equals one larger batch") {
  // Two micro-batches of 4 against one batch of 8 holding the same sequences: same loss, and
  // the same parameters up to float summation order.
  auto tc2 = small_train(3, 2);
  auto tc1 = small_train(3, 1);
  tc1.batch = 8;
  const auto src2 = counting_source(3, tc2, 16);
  train::BatchSource src1 = [&](std::int64_t step, int, train::TokenBatch& b) {
    train::TokenBatch a, c;
    src2(step, 0, a);
    src2(step, 1, c);
    b.resize(8, tc1.seq);
    std::copy(a.tokens.begin(), a.tokens.end(), b.tokens.begin());
    std::copy(c.tokens.begin(), c.tokens.end(), b.tokens.begin() + a.tokens.size());
    std::copy(a.targets.begin(), a.targets.end(), b.targets.begin());
    std::copy(c.targets.begin(), c.targets.end(), b.targets.begin() + a.targets.size());
  };
  Net n1(small_config()), n2(small_config());
  train::Trainer<Net, optim::AdamW> t1(n1, optim::AdamW{}, tc1), t2(n2, optim::AdamW{}, tc2);
  for (int s = 0; s < 3; ++s) {
    const auto a = t1.run_step(src1), b = t2.run_step(src2);
    CHECK(a.loss == doctest::Approx(b.loss).epsilon(1e-5));
    CHECK(a.tokens == b.tokens);
  }
  double worst = 0;
  for (std::size_t i = 0; i < t1.params().size(); ++i)
    worst = std::max(worst, double(std::abs(t1.params()[i] - t2.params()[i])));
  CHECK(worst < 1e-4);
}

TEST_CASE("Resuming from a checkpoint is bit-identical to an uninterrupted run") {
  const auto tc = small_train(12, 3);  // warmup is 5 steps: stops fall in warmup and after
  const auto source = counting_source(21, tc, 16);
  Net ref_net(small_config());
  train::Trainer<Net, optim::AdamW> ref(ref_net, optim::AdamW{}, tc);
  std::vector<double> ref_losses;
  while (!ref.done()) ref_losses.push_back(ref.run_step(source).loss);

  const auto dir = temp_dir();
  // (step, micro) where the run is interrupted: mid-warmup at a step boundary, mid-warmup
  // mid-accumulation, after warmup mid-accumulation.
  for (auto [stop_step, stop_micro] : {std::pair{2, 0}, std::pair{3, 2}, std::pair{8, 1}}) {
    CAPTURE(stop_step);
    CAPTURE(stop_micro);
    const auto path = dir / "ckpt.safetensors";
    std::vector<double> losses;
    {
      Net net(small_config());
      train::Trainer<Net, optim::AdamW> first(net, optim::AdamW{}, tc);
      while (first.step() < stop_step) losses.push_back(first.run_step(source).loss);
      while (first.micro() < stop_micro) REQUIRE_FALSE(first.run_micro(source).has_value());
      train::save_checkpoint(path, first, {{"data.seed", "21"}});
    }
    Net net(small_config());
    auto tc_other_seed = tc;
    tc_other_seed.seed = 11;  // same run config; parameters come from the file
    train::Trainer<Net, optim::AdamW> resumed(net, optim::AdamW{}, tc_other_seed);
    const auto meta = train::load_checkpoint(path, resumed);
    CHECK(meta.at("data.seed") == "21");
    CHECK(resumed.step() == stop_step);
    CHECK(resumed.micro() == stop_micro);
    while (!resumed.done()) losses.push_back(resumed.run_step(source).loss);
    REQUIRE(losses.size() == ref_losses.size());
    for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == ref_losses[i]);  // bitwise
    CHECK(std::memcmp(resumed.params().data(), ref.params().data(), ref.params().size_bytes()) == 0);
    CHECK(std::memcmp(resumed.optimizer_state().data(), ref.optimizer_state().data(),
                      ref.optimizer_state().size_bytes()) == 0);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("A checkpoint with another config is refused naming the field") {
  const auto dir = temp_dir();
  const auto path = dir / "ckpt.safetensors";
  const auto tc = small_train(4, 1);
  {
    Net net(small_config());
    train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, tc);
    t.run_step(counting_source(1, tc, 16));
    train::save_checkpoint(path, t);
  }
  {
    auto c = small_config();
    c.num_layers = 3;
    Net net(c);
    train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, tc);
    CHECK_THROWS_WITH_AS(train::load_checkpoint(path, t),
                         doctest::Contains("config field 'num_hidden_layers' is 2, expected 3"), Error);
  }
  {
    Net net(small_config());
    auto other = tc;
    other.micro_batches = 2;
    train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, other);
    CHECK_THROWS_WITH_AS(train::load_checkpoint(path, t),
                         doctest::Contains("training config field 'train.micro_batches' is 1, expected 2"), Error);
  }
  {
    Net net(small_config());
    train::Trainer<Net, optim::SgdMomentum> t(net, optim::SgdMomentum{}, tc);
    CHECK_THROWS_WITH_AS(train::load_checkpoint(path, t), doctest::Contains("optimizer 'adamw', expected 'sgd_momentum'"),
                         Error);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("A checkpoint with other optimizer settings is refused, and a bad file leaves the trainer as it was") {
  const auto dir = temp_dir();
  const auto path = dir / "ckpt.safetensors";
  const auto tc = small_train(4, 1);
  {
    Net net(small_config());
    train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, tc);
    t.run_step(counting_source(1, tc, 16));
    train::save_checkpoint(path, t);
  }
  Net net(small_config());
  train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{.config = {.weight_decay = 0.2}}, tc);
  CHECK_THROWS_WITH_AS(train::load_checkpoint(path, t),
                       doctest::Contains("optimizer setting 'weight_decay' is 0.1, expected 0.2"), Error);

  // Drop the last tensor of the file: loading fails and nothing was overwritten.
  const auto file = io::SafetensorsFile::open(path);
  std::vector<io::SafetensorsEntry> entries;
  for (const auto& info : file.tensors())
    if (&info != &file.tensors().back()) entries.push_back({info.name, info.dtype, info.shape, file.bytes(info)});
  io::write_safetensors(dir / "short.safetensors", entries, file.metadata());
  train::Trainer<Net, optim::AdamW> fresh(net, optim::AdamW{}, tc);
  const std::vector<float> before(fresh.params().begin(), fresh.params().end());
  CHECK_THROWS_AS(train::load_checkpoint(dir / "short.safetensors", fresh), Error);
  CHECK(std::memcmp(before.data(), fresh.params().data(), fresh.params().size_bytes()) == 0);
  CHECK(fresh.step() == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("A non-finite gradient stops the step with an error and leaves the parameters unchanged") {
  Net net(small_config());
  const auto tc = small_train(4, 1);
  train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, tc);
  t.params()[net.layout().find("lm_head.weight").offset] = std::numeric_limits<float>::infinity();
  const std::vector<float> before(t.params().begin(), t.params().end());
  CHECK_THROWS_WITH_AS(t.run_step(counting_source(1, tc, 16)), doctest::Contains("the parameters were left unchanged"),
                       Error);
  CHECK(std::memcmp(before.data(), t.params().data(), t.params().size_bytes()) == 0);
}
