// reason/rl/grpo_checkpoint.hpp — the whole state of a GRPO run in one safetensors file.
//
// Design rule (that of train/checkpoint.hpp): resuming must be bit-identical to never stopping.
// A GRPO step reads the policy, the frozen reference, the optimizer state and the position —
// step s takes its prompts from source(s) and its rollout key from rollout_seed(seed, s), AdamW's
// bias correction takes the update count — and rebuilds everything else (gradients, the rollout
// batch, logp_old and logp_ref) inside the step, so a checkpoint holds exactly these:
//   tensors   "<param>"                the policy, under its layout names: the file is also a
//                                      plain weights file (train::load_params, any safetensors
//                                      reader), so a later stage can start from it
//             "reference.<param>"      the frozen reference pi_ref
//             "optim.<slot>.<param>"   each optimizer state slot (AdamW: exp_avg, exp_avg_sq)
//   metadata  "format" = grpo_checkpoint_format; the model config under Hugging Face names;
//             "grpo.*" every GrpoTrainerConfig field (its schedule as "grpo.schedule.*");
//             "loss.*" the loss policy's GrpoConfig; "optimizer", "optimizer.<setting>";
//             "grpo.step", "grpo.updates"; under loss scaling its config and state
//             ("loss_scale.*", as train/checkpoint.hpp writes them); whatever the caller adds. Doubles are written in
//             shortest round-trip form, so equal strings mean equal numbers.
// The model-config, optimizer and tensor helpers are train/checkpoint.hpp's, so the two formats
// store these the same way. A file is written whole or not at all (temp file + rename). Loading
// checks everything — format, model config, trainer config, loss, optimizer, position, and every
// tensor's name, dtype and shape — before it copies anything, so a refused file leaves the
// trainer untouched; the error names the field or tensor and both values. The sampler and the
// reward are not recorded: they are types without a settings interface (a Temperature's value
// stays the caller's to keep equal).
// Under a distributed parallelism policy (parallel::DataParallel, parallel::Zero) every rank calls
// save_checkpoint (ZeRO gathers its optimizer state shards: a collective) and rank 0 writes; the
// others must not read the file before a barrier. Every rank calls load_checkpoint on the same
// file. The number of ranks is not part of the run: rows sample from their global streams and the
// normaliser is global (rl/grpo_trainer.hpp), so a checkpoint resumes on any number of ranks that
// divides prompts_per_step. A tensor-parallel trainer's shares (parameters, reference, optimizer
// state) are gathered into the unsplit layout, so its file is a single process's and any split or
// none resumes it; each rank scatters its share on load.
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "reason/core/dtype.hpp"
#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/rl/advantages.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/grpo_trainer.hpp"
#include "reason/rl/policy_loss.hpp"
#include "reason/train/checkpoint.hpp"

namespace reason::rl {

inline constexpr const char* grpo_checkpoint_format = "reason.grpo_checkpoint/1";

namespace detail {

inline const char* group_scale_name(GroupScale s) { return s == GroupScale::std ? "std" : "none"; }

inline const char* aggregation_name(Aggregation a) {
  switch (a) {
    case Aggregation::sequence_mean: return "sequence_mean";
    case Aggregation::token_mean: return "token_mean";
    case Aggregation::fixed_length: return "fixed_length";
  }
  return "unknown";
}

inline std::string exact_float(float v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest round trip of the float itself
  return std::string(buf, end);
}

/// Every GrpoTrainerConfig field (what must match for a resume to continue the same run). The
/// structured bindings name each field once: a field added to the struct fails to compile here.
inline io::SafetensorsMetadata grpo_config_metadata(const GrpoTrainerConfig& c) {
  using train::detail::exact;
  const auto& [prompts_per_step, group_size, max_new_tokens, beta, schedule, mu, max_grad_norm, dynamic_sampling, seed,
               advantage_sign, advantage_scale, micro_batch, rollout_batch, loss_scale] = c;
  (void)loss_scale;  // written with the scaler's state, when scaling is on (train::detail::put_loss_scale)
  const auto& [peak_lr, min_lr, warmup_steps, total_steps] = schedule;
  return {{"grpo.prompts_per_step", std::to_string(prompts_per_step)},
          {"grpo.group_size", std::to_string(group_size)},
          {"grpo.max_new_tokens", std::to_string(max_new_tokens)},
          {"grpo.beta", exact(beta)},
          {"grpo.schedule.peak_lr", exact(peak_lr)},
          {"grpo.schedule.min_lr", exact(min_lr)},
          {"grpo.schedule.warmup_steps", std::to_string(warmup_steps)},
          {"grpo.schedule.total_steps", std::to_string(total_steps)},
          {"grpo.mu", std::to_string(mu)},
          {"grpo.max_grad_norm", exact(max_grad_norm)},
          {"grpo.dynamic_sampling", dynamic_sampling ? "true" : "false"},
          {"grpo.seed", std::to_string(seed)},
          {"grpo.advantage_sign", std::to_string(advantage_sign)},
          {"grpo.advantage_scale", group_scale_name(advantage_scale)},
          {"grpo.micro_batch", std::to_string(micro_batch)},
          {"grpo.rollout_batch", std::to_string(rollout_batch)}};
}

/// The loss policy's compile-time GrpoConfig (clip range, aggregation).
inline io::SafetensorsMetadata loss_metadata(const GrpoConfig& c) {
  const auto& [eps_low, eps_high, aggregation] = c;
  return {{"loss.eps_low", exact_float(eps_low)},
          {"loss.eps_high", exact_float(eps_high)},
          {"loss.aggregation", aggregation_name(aggregation)}};
}

}  // namespace detail

/// Writes the GRPO trainer's complete state, plus `extra` metadata (keys must not collide with the
/// trainer's own), atomically.
template <class Net, class Opt, class Loss, class Sampler, class Reward, class Par>
void save_checkpoint(const std::filesystem::path& path,
                     const GrpoTrainer<Net, Opt, Loss, Sampler, Reward, Par>& trainer,
                     const io::SafetensorsMetadata& extra = {}) {
  using T = typename GrpoTrainer<Net, Opt, Loss, Sampler, Reward, Par>::T;
  namespace td = train::detail;
  trainer.to_host();  // a CUDA model's buffers to their host mirrors; ZeRO gathers its state (every rank)
  // A split model (tensor parallel): every rank's share gathered into the unsplit layout, so the
  // file is the one a single process writes.
  constexpr bool split = td::split_model<GrpoTrainer<Net, Opt, Loss, Sampler, Reward, Par>>;
  std::vector<T> full_params, full_reference, full_state;
  if constexpr (split) {
    full_params = td::gather_slots(trainer.buffers(), trainer.params(), 1);
    full_reference = td::gather_slots(trainer.buffers(), trainer.reference_params(), 1);
    full_state = td::gather_slots(trainer.buffers(), trainer.optimizer_state(), Opt::state_slots);
  }
  if (!trainer.checkpoint_writer()) return;  // rank 0 writes
  const Net& net = trainer.net();
  const ParamLayout& layout = td::checkpoint_layout<split>(net);
  const auto whole = [&](std::span<const T> local, const std::vector<T>& full) {
    return split ? std::span<const T>(full) : local;
  };
  io::SafetensorsMetadata meta;
  for (const auto& [k, v] : net.model_metadata()) meta[k] = v;
  for (const auto& [k, v] : detail::grpo_config_metadata(trainer.config())) meta[k] = v;
  for (const auto& [k, v] : detail::loss_metadata(Loss::config)) meta[k] = v;
  meta["format"] = grpo_checkpoint_format;
  train::detail::put_optimizer(meta, trainer.optimizer());
  meta["grpo.step"] = std::to_string(trainer.step());
  meta["grpo.updates"] = std::to_string(trainer.updates());
  train::detail::put_loss_scale(meta, trainer.config().loss_scale, trainer.loss_scaler());
  train::detail::put_extra(meta, extra);

  std::vector<io::SafetensorsEntry> entries;
  const std::size_t n = layout.size();
  const std::span<const T> state = whole(trainer.optimizer_state(), full_state);
  td::add_entries<T>(entries, "", layout, whole(trainer.params(), full_params));
  td::add_entries<T>(entries, "reference.", layout, whole(trainer.reference_params(), full_reference));
  for (int s = 0; s < Opt::state_slots; ++s)
    td::add_entries<T>(entries, std::string("optim.") + Opt::slot_names[s] + ".", layout, state.subspan(s * n, n));
  io::write_safetensors(path, entries, meta);
}

/// Restores a GRPO trainer from `path`. The model config, GrpoTrainerConfig, loss config and
/// optimizer must match the trainer's; the first field that differs is named with both values.
/// Nothing is copied until every check has passed. Returns the file's metadata so the caller can
/// check and restore its own `extra` entries.
template <class Net, class Opt, class Loss, class Sampler, class Reward, class Par>
io::SafetensorsMetadata load_checkpoint(const std::filesystem::path& path,
                                        GrpoTrainer<Net, Opt, Loss, Sampler, Reward, Par>& trainer) {
  using T = typename GrpoTrainer<Net, Opt, Loss, Sampler, Reward, Par>::T;
  namespace td = train::detail;
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  const std::string fname = path.string();
  const io::SafetensorsMetadata& meta = file.metadata();
  const std::string& format = td::meta_get(meta, "format", fname);
  REASON_CHECK(format == grpo_checkpoint_format, "checkpoint '", fname, "': format '", format, "', expected '",
               grpo_checkpoint_format, "'");

  const Net& net = trainer.net();
  td::expect_model_config(meta, net, fname);
  td::expect_fields(meta, detail::grpo_config_metadata(trainer.config()), "GRPO config", fname);
  td::expect_fields(meta, detail::loss_metadata(Loss::config), "loss config", fname);
  td::expect_optimizer(meta, trainer.optimizer(), fname);

  const auto step = td::meta_number<std::int64_t>(meta, "grpo.step", fname);
  const auto updates = td::meta_number<std::int64_t>(meta, "grpo.updates", fname);
  // Each step makes mu updates, or none when every group was dropped.
  REASON_CHECK(step >= 0 && updates >= 0 && updates <= step * trainer.config().mu, "checkpoint '", fname,
               "': position step ", step, ", updates ", updates, " is impossible (at most mu = ", trainer.config().mu,
               " updates per step)");
  const td::LossScaleState scale = td::read_loss_scale(meta, trainer.config().loss_scale, trainer.loss_scaler(), fname);

  // A split model reads the unsplit tensors and takes its share (each rank reads the file itself).
  constexpr bool split = td::split_model<GrpoTrainer<Net, Opt, Loss, Sampler, Reward, Par>>;
  const ParamLayout& layout = td::checkpoint_layout<split>(net);
  const std::size_t n = layout.size();
  std::vector<T> full_params, full_reference, full_state;
  if constexpr (split) {
    full_params.resize(n);
    full_reference.resize(n);
    full_state.resize(n * static_cast<std::size_t>(Opt::state_slots));
  }
  const auto whole = [&](std::span<T> local, std::vector<T>& full) { return split ? std::span<T>(full) : local; };
  const std::span<T> state = whole(trainer.optimizer_state(), full_state);
  std::vector<td::TensorRead<T>> reads;
  td::add_reads<T>(reads, "", layout, whole(trainer.params(), full_params));
  td::add_reads<T>(reads, "reference.", layout, whole(trainer.reference_params(), full_reference));
  for (int s = 0; s < Opt::state_slots; ++s)
    td::add_reads<T>(reads, std::string("optim.") + Opt::slot_names[s] + ".", layout, state.subspan(s * n, n));
  td::read_checked(file, reads);
  if constexpr (split) {
    const auto& plan = trainer.buffers().shard_plan();
    td::scatter_slots(plan, std::span<const T>(full_params), trainer.params(), 1);
    td::scatter_slots(plan, std::span<const T>(full_reference), trainer.reference_params(), 1);
    td::scatter_slots(plan, std::span<const T>(full_state), trainer.optimizer_state(), Opt::state_slots);
  }
  trainer.from_host();  // and back to a CUDA model's device buffers
  trainer.set_position(step, updates);
  trainer.set_loss_scale_state(scale.scale, scale.good_steps, scale.skipped_steps);
  return meta;
}

}  // namespace reason::rl
