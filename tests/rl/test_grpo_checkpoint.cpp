// GRPO checkpoints: a run stopped, saved, loaded into a fresh trainer and continued is bit-identical
// to one never stopped (policy, reference, optimizer state, step statistics); a file from another
// run (trainer config, model, loss, optimizer, format) or a damaged file is refused naming what
// differs and leaves the trainer untouched; train::load_params reads the policy from an SFT and
// from a GRPO checkpoint alike.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/temp_dir.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/grpo_checkpoint.hpp"
#include "reason/rl/grpo_trainer.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/trainer.hpp"
#include "tiny_policy.hpp"

using namespace reason;

namespace {

using Net = test::TinyNet;
using test::ContainsTarget;
using test::target_prompts;

rl::GrpoTrainerConfig base_config() {
  rl::GrpoTrainerConfig c;
  c.prompts_per_step = 6;
  c.group_size = 4;
  c.max_new_tokens = 4;
  c.beta = 0.05;  // the reference enters the loss
  c.schedule = {.peak_lr = 1e-2, .min_lr = 1e-3, .warmup_steps = 1, .total_steps = 4};
  c.mu = 2;
  c.max_grad_norm = 1.0;
  c.seed = 11;
  c.micro_batch = 10;  // 24 rows in micro-batches of 10, 10 and 4
  return c;
}

template <class Loss = rl::Grpo<rl::GrpoConfig{}>>
using Trainer = rl::GrpoTrainer<Net, optim::AdamW, Loss, infer::Temperature, ContainsTarget>;

constexpr optim::AdamW adamw{.config = {.weight_decay = 0.01}};

rl::GrpoStepStats step(Trainer<>& t) {
  const index_t n = t.config().prompts_per_step;
  return t.run_step([n](std::int64_t s) { return target_prompts(s, n); });
}

/// Runs steps [t.step(), until); the reference is reset to the policy after step 0 so that it
/// differs from both the initial and the current parameters.
void run_until(Trainer<>& t, std::int64_t until, std::vector<rl::GrpoStepStats>& out) {
  while (t.step() < until) {
    out.push_back(step(t));
    if (t.step() == 1) t.reset_reference();
  }
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

/// Everything the trainer restores, to check that a refused load changed nothing.
struct Snapshot {
  std::vector<float> params, reference, state;
  std::int64_t step = 0, updates = 0;
  explicit Snapshot(const Trainer<>& t)
      : params(t.params().begin(), t.params().end()),
        reference(t.reference_params().begin(), t.reference_params().end()),
        state(t.optimizer_state().begin(), t.optimizer_state().end()),
        step(t.step()),
        updates(t.updates()) {}
  [[nodiscard]] bool matches(const Trainer<>& t) const {
    return same_bits(params, t.params()) && same_bits(reference, t.reference_params()) &&
           same_bits(state, t.optimizer_state()) && step == t.step() && updates == t.updates();
  }
};

/// A GRPO checkpoint after `steps` steps of the base run.
void write_grpo_checkpoint(const std::filesystem::path& path, int steps) {
  Net net(test::tiny_policy_config());
  const auto init = test::initial_params(net, 3);
  Trainer<> t(net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, base_config());
  std::vector<rl::GrpoStepStats> stats;
  run_until(t, steps, stats);
  rl::save_checkpoint(path, t);
}

/// Rewrites `src` as `dst` with `edit` applied to its tensor list and metadata.
template <class Edit>
void rewrite(const std::filesystem::path& src, const std::filesystem::path& dst, Edit edit) {
  const auto file = io::SafetensorsFile::open(src);
  std::vector<io::SafetensorsEntry> entries;
  for (const auto& info : file.tensors()) entries.push_back({info.name, info.dtype, info.shape, file.bytes(info)});
  io::SafetensorsMetadata meta = file.metadata();
  edit(entries, meta);
  io::write_safetensors(dst, entries, meta);
}

}  // namespace

TEST_CASE("4 GRPO steps equal 2 steps, save, load into a fresh trainer, 2 steps — bit for bit") {
  test::TempDir dir;
  const auto path = dir / "grpo.safetensors";
  const rl::GrpoTrainerConfig cfg = base_config();

  Net ref_net(test::tiny_policy_config());
  const auto init = test::initial_params(ref_net, 3);
  Trainer<> ref(ref_net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, cfg);
  std::vector<rl::GrpoStepStats> ref_stats;
  run_until(ref, 4, ref_stats);

  std::vector<rl::GrpoStepStats> stats;
  std::int64_t saved_updates = 0;
  {
    Net net(test::tiny_policy_config());
    Trainer<> first(net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, cfg);
    run_until(first, 2, stats);
    saved_updates = first.updates();
    rl::save_checkpoint(path, first, {{"data.seed", "7"}});
    CHECK_THROWS_WITH_AS(rl::save_checkpoint(dir / "x.safetensors", first, {{"grpo.beta", "0"}}),
                         doctest::Contains("extra metadata key 'grpo.beta' collides"), Error);
  }
  CHECK(dir.entry_count() == 1);  // no temporaries left behind, nothing written on the refused save
  CHECK(saved_updates == 4);      // 2 steps x mu = 2

  // The file is also a plain weights file: the policy under its layout names.
  {
    const auto file = io::SafetensorsFile::open(path);
    CHECK(file.metadata().at("format") == rl::grpo_checkpoint_format);
    CHECK(file.metadata().at("grpo.beta") == "0.05");
    CHECK(file.metadata().at("grpo.micro_batch") == "10");
    CHECK(file.metadata().at("loss.eps_high") == "0.2");
    CHECK(file.metadata().at("loss.aggregation") == "sequence_mean");
    CHECK(file.metadata().at("optimizer.weight_decay") == "0.01");
    CHECK(file.metadata().at("num_hidden_layers") == "2");
    CHECK(file.contains("embed.weight"));
    CHECK(file.contains("reference.embed.weight"));
    CHECK(file.contains("optim.exp_avg_sq.lm_head.weight"));
    CHECK(file.size() == 4 * ref_net.layout().params().size());
  }

  // A fresh net and trainer, started from other parameters: everything must come from the file.
  Net net(test::tiny_policy_config());
  const auto other = test::initial_params(net, 99);
  Trainer<> resumed(net, std::span<const float>(other), adamw, infer::Temperature{1.0f}, ContainsTarget{}, cfg);
  const auto meta = rl::load_checkpoint(path, resumed);
  CHECK(meta.at("data.seed") == "7");
  CHECK(resumed.step() == 2);
  CHECK(resumed.updates() == saved_updates);
  run_until(resumed, 4, stats);

  REQUIRE(stats.size() == ref_stats.size());
  for (std::size_t i = 0; i < stats.size(); ++i) {
    CAPTURE(i);
    const rl::GrpoStepStats &a = stats[i], &b = ref_stats[i];
    CHECK(a.step == b.step);
    CHECK(a.trained_rows == b.trained_rows);
    CHECK(a.updated == b.updated);
    CHECK(a.reward_mean == b.reward_mean);  // bitwise: == on doubles
    CHECK(a.reward_std == b.reward_std);
    CHECK(a.completion_length == b.completion_length);
    CHECK(a.eos_fraction == b.eos_fraction);
    CHECK(a.lr == b.lr);
    CHECK(a.loss == b.loss);
    CHECK(a.mean_ratio == b.mean_ratio);
    CHECK(a.clip_fraction == b.clip_fraction);
    CHECK(a.kl == b.kl);
    CHECK(a.entropy == b.entropy);
    CHECK(a.grad_norm == b.grad_norm);
    REQUIRE(a.passes.size() == b.passes.size());
    for (std::size_t p = 0; p < a.passes.size(); ++p) {
      CHECK(a.passes[p].loss == b.passes[p].loss);
      CHECK(a.passes[p].kl == b.passes[p].kl);
      CHECK(a.passes[p].grad_norm == b.passes[p].grad_norm);
    }
  }
  CHECK(ref_stats[3].kl > 0);  // the reference matters in the steps compared
  CHECK(same_bits(resumed.params(), ref.params()));
  CHECK(same_bits(resumed.reference_params(), ref.reference_params()));
  CHECK(same_bits(resumed.optimizer_state(), ref.optimizer_state()));
  CHECK(resumed.updates() == ref.updates());
  CHECK(!same_bits(ref.params(), ref.reference_params()));
  CHECK(!same_bits(ref.reference_params(), std::span<const float>(init)));
}

TEST_CASE("A GRPO checkpoint from another run is refused naming the field, and the trainer is untouched") {
  test::TempDir dir;
  const auto path = dir / "grpo.safetensors";
  write_grpo_checkpoint(path, 1);

  auto refused = [&](rl::GrpoTrainerConfig cfg, optim::AdamW opt, const char* message) {
    INFO(message);
    Net net(test::tiny_policy_config());
    const auto init = test::initial_params(net, 5);
    Trainer<> t(net, std::span<const float>(init), opt, infer::Temperature{1.0f}, ContainsTarget{}, cfg);
    const Snapshot before(t);
    CHECK_THROWS_WITH_AS(rl::load_checkpoint(path, t), doctest::Contains(message), Error);
    CHECK(before.matches(t));
  };
  auto cfg = base_config();
  cfg.beta = 0.1;
  refused(cfg, adamw, "GRPO config field 'grpo.beta' is 0.05, expected 0.1");
  cfg = base_config();
  cfg.group_size = 8;
  refused(cfg, adamw, "GRPO config field 'grpo.group_size' is 4, expected 8");
  cfg = base_config();
  cfg.advantage_scale = rl::GroupScale::none;
  refused(cfg, adamw, "GRPO config field 'grpo.advantage_scale' is std, expected none");
  cfg = base_config();
  cfg.schedule.peak_lr = 2e-2;
  refused(cfg, adamw, "GRPO config field 'grpo.schedule.peak_lr' is 0.01, expected 0.02");
  refused(base_config(), optim::AdamW{.config = {.weight_decay = 0.1}},
          "optimizer setting 'weight_decay' is 0.01, expected 0.1");

  {  // another model
    auto mc = test::tiny_policy_config();
    mc.num_layers = 3;
    Net net(mc);
    const auto init = test::initial_params(net, 5);
    Trainer<> t(net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, base_config());
    const Snapshot before(t);
    CHECK_THROWS_WITH_AS(rl::load_checkpoint(path, t), doctest::Contains("config field 'num_hidden_layers' is 2, expected 3"),
                         Error);
    CHECK(before.matches(t));
  }
  {  // another loss policy (DAPO's clip-higher)
    using Dapo = rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f}>;
    Net net(test::tiny_policy_config());
    const auto init = test::initial_params(net, 5);
    Trainer<Dapo> t(net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, base_config());
    CHECK_THROWS_WITH_AS(rl::load_checkpoint(path, t), doctest::Contains("loss config field 'loss.eps_high' is 0.2, expected 0.28"),
                         Error);
    CHECK(same_bits(t.params(), std::span<const float>(init)));
  }
  {  // an SFT checkpoint is not a GRPO run
    Net net(test::tiny_policy_config());
    train::TrainConfig tc;
    tc.batch = 2;
    tc.seq = 8;
    train::Trainer<Net, optim::AdamW> sft(net, optim::AdamW{}, tc);
    train::save_checkpoint(dir / "sft.safetensors", sft);
    const auto init = test::initial_params(net, 5);
    Trainer<> t(net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, base_config());
    CHECK_THROWS_WITH_AS(rl::load_checkpoint(dir / "sft.safetensors", t),
                         doctest::Contains("format 'reason.checkpoint/1', expected 'reason.grpo_checkpoint/1'"), Error);
    CHECK_THROWS_WITH_AS(train::load_checkpoint(path, sft),
                         doctest::Contains("format 'reason.grpo_checkpoint/1', expected 'reason.checkpoint/1'"), Error);
  }
}

TEST_CASE("A truncated or damaged GRPO checkpoint is refused and the trainer is untouched") {
  test::TempDir dir;
  const auto path = dir / "grpo.safetensors";
  write_grpo_checkpoint(path, 2);
  const std::string bytes = test::slurp(path);

  Net net(test::tiny_policy_config());
  const auto init = test::initial_params(net, 5);
  Trainer<> t(net, std::span<const float>(init), adamw, infer::Temperature{1.0f}, ContainsTarget{}, base_config());
  std::vector<rl::GrpoStepStats> stats;
  run_until(t, 1, stats);  // a trainer with state of its own
  const Snapshot before(t);
  auto refused = [&](const std::filesystem::path& p, const char* message) {
    INFO(message);
    CHECK_THROWS_WITH_AS(rl::load_checkpoint(p, t), doctest::Contains(message), Error);
    CHECK(before.matches(t));
  };

  test::spit(dir / "truncated.safetensors", bytes.substr(0, bytes.size() - 100));
  refused(dir / "truncated.safetensors", "out of range of the");
  test::spit(dir / "header_only.safetensors", bytes.substr(0, 6));
  refused(dir / "header_only.safetensors", "shorter than the 8-byte header length");
  std::string garbled = bytes;
  garbled[9] = '#';  // inside the JSON header
  test::spit(dir / "garbled.safetensors", garbled);
  refused(dir / "garbled.safetensors", "header is not valid JSON");

  // Well-formed files whose content is wrong: the last tensor read is missing, a reference
  // tensor has another shape, the position is not a number or impossible. Parameters come first
  // in the reads, so an untouched trainer shows that nothing was copied before the check.
  rewrite(path, dir / "missing.safetensors", [](auto& entries, auto&) {
    std::erase_if(entries, [](const io::SafetensorsEntry& e) { return e.name == "optim.exp_avg_sq.lm_head.weight"; });
  });
  refused(dir / "missing.safetensors", "no tensor 'optim.exp_avg_sq.lm_head.weight'");
  rewrite(path, dir / "reshaped.safetensors", [](auto& entries, auto&) {
    for (auto& e : entries)
      if (e.name == "reference.norm.weight") e.shape = {1, 32};
  });
  refused(dir / "reshaped.safetensors", "tensor 'reference.norm.weight': got F32 [1, 32], expected F32 [32]");
  rewrite(path, dir / "step_nan.safetensors", [](auto&, auto& meta) { meta["grpo.step"] = "two"; });
  refused(dir / "step_nan.safetensors", "metadata 'grpo.step' = 'two' is not a number");
  rewrite(path, dir / "too_many_updates.safetensors", [](auto&, auto& meta) { meta["grpo.updates"] = "5"; });
  refused(dir / "too_many_updates.safetensors", "position step 2, updates 5 is impossible");
  rewrite(path, dir / "no_seed.safetensors", [](auto&, auto& meta) { meta.erase("grpo.seed"); });
  refused(dir / "no_seed.safetensors", "metadata has no 'grpo.seed'");
  rewrite(path, dir / "f64.safetensors", [](auto& entries, auto&) {
    for (auto& e : entries)
      if (e.name == "embed.weight") e.dtype = DType::f64, e.shape[1] /= 2;
  });
  refused(dir / "f64.safetensors", "tensor 'embed.weight': got F64 [262, 16], expected F32 [262, 32]");

  // The intact file still loads into the same trainer.
  rl::load_checkpoint(path, t);
  CHECK(t.step() == 2);
}

TEST_CASE("train::load_params reads the policy from an SFT checkpoint and from a GRPO checkpoint") {
  test::TempDir dir;
  Net net(test::tiny_policy_config());

  // SFT stage: the trainer's parameters (initialised from its seed) are saved.
  train::TrainConfig tc;
  tc.batch = 2;
  tc.seq = 8;
  tc.seed = 17;
  train::Trainer<Net, optim::AdamW> sft(net, optim::AdamW{}, tc);
  train::save_checkpoint(dir / "sft.safetensors", sft, {{"stage", "sft"}});

  // GRPO stage started from the SFT checkpoint, as the R1 pipeline does.
  std::vector<float> start(net.num_params(), 0.0f);
  const auto sft_meta = train::load_params(dir / "sft.safetensors", net, std::span<float>(start));
  CHECK(sft_meta.at("stage") == "sft");
  CHECK(sft_meta.at("format") == train::checkpoint_format);
  CHECK(same_bits(start, sft.params()));
  Trainer<> grpo(net, std::span<const float>(start), adamw, infer::Temperature{1.0f}, ContainsTarget{}, base_config());
  std::vector<rl::GrpoStepStats> stats;
  run_until(grpo, 2, stats);
  rl::save_checkpoint(dir / "grpo.safetensors", grpo);

  std::vector<float> policy(net.num_params(), 0.0f);
  const auto grpo_meta = train::load_params(dir / "grpo.safetensors", net, std::span<float>(policy));
  CHECK(grpo_meta.at("format") == rl::grpo_checkpoint_format);
  CHECK(grpo_meta.at("grpo.step") == "2");
  CHECK(same_bits(policy, grpo.params()));  // the policy, not the reference
  CHECK(!same_bits(policy, start));

  // Another model is refused naming the field; a wrong-sized destination too; nothing is written.
  auto mc = test::tiny_policy_config();
  mc.hidden_size = 40;
  mc.num_heads = 5;
  mc.num_kv_heads = 5;
  Net wide(mc);
  std::vector<float> dest(wide.num_params(), 0.5f);
  CHECK_THROWS_WITH_AS(train::load_params(dir / "grpo.safetensors", wide, std::span<float>(dest)),
                       doctest::Contains("config field 'hidden_size' is 32, expected 40"), Error);
  CHECK(std::ranges::all_of(dest, [](float v) { return v == 0.5f; }));
  std::vector<float> small(10);
  CHECK_THROWS_WITH_AS(train::load_params(dir / "sft.safetensors", net, std::span<float>(small)),
                       doctest::Contains("destination has 10 elements"), Error);
}
