// reason/train/checkpoint.hpp — the whole state of a training run in one safetensors file.
//
// Design rule: resuming must be bit-identical to never stopping, so a checkpoint holds every
// bit the next step depends on and nothing is recomputed approximately:
//   tensors   "<param>"                 the parameters, under their layout names (a weights file
//                                       any safetensors reader can open)
//             "optim.<slot>.<param>"    each optimizer state slot (AdamW: exp_avg, exp_avg_sq)
//             "grad.<param>"            the accumulated gradients, only when saved mid-accumulation
//             "router.pending_load"     an MoE model's expert load of the step so far (float64,
//                                       [MoE layers x experts]), likewise only mid-accumulation
//   metadata  the model config under Hugging Face names, the training config (with the global batch
//             of a run whose ranks each train on a share of it: Trainer::data_ranks), the optimizer,
//             the position (step, micro-batch, the step's partial loss sum and count, doubles
//             written in shortest round-trip form), under loss scaling its config and state
//             ("loss_scale.*": S, the run of good steps, the skipped steps) and whatever the
//             caller adds (data seed, ...).
// Data and randomness are counter-based — batches are a pure function of (seed, step, micro),
// parameter init of (seed, tensor) — so the position *is* the data-sampler and RNG state.
// A file is written whole or not at all (temp file + rename); a checkpoint whose config
// differs from the run's is refused with the field that differs, and every tensor is checked
// (name, dtype, shape) before any is copied, so a refused file leaves the trainer as it was.
//
// Under a parallelism policy every rank calls save_checkpoint (shards are gathered: ZeRO's state, a
// split model's tensors into the unsplit layout) and rank 0 writes, so the file is the one a single
// process writes; it resumes on any number of ranks that splits the same global batch, or on one.
// A data-split run (data or expert parallel) is saved between steps: mid-step each rank holds only
// its own tokens' gradients.
//
// load_params reads only the parameters, from any file laid out this way — this one, a GRPO
// checkpoint (rl/grpo_checkpoint.hpp, which shares the layout and the helpers below) or a plain
// weights file carrying the model config — so any stage (SFT, RL, evaluation, inference) can start
// from any earlier stage's checkpoint.
#pragma once

#include <charconv>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "reason/core/dtype.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/train/trainer.hpp"

namespace reason::train {

inline constexpr const char* checkpoint_format = "reason.checkpoint/1";

namespace detail {
inline constexpr const char* pending_load_name = "router.pending_load";

inline std::string exact(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}
inline const std::string& meta_get(const io::SafetensorsMetadata& m, const std::string& key, const std::string& file) {
  auto it = m.find(key);
  REASON_CHECK(it != m.end(), "checkpoint '", file, "': metadata has no '", key, "'");
  return it->second;
}
template <class N>
N meta_number(const io::SafetensorsMetadata& m, const std::string& key, const std::string& file) {
  const std::string& s = meta_get(m, key, file);
  N v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  REASON_CHECK(ec == std::errc{} && p == s.data() + s.size(), "checkpoint '", file, "': metadata '", key, "' = '", s,
               "' is not a number");
  return v;
}

/// The model config under Hugging Face names: read from the file and compared field by field.
template <class Net>
void expect_model_config(const io::SafetensorsMetadata& meta, const Net& net, const std::string& file) {
  net.expect_model_metadata(std::map<std::string, std::string>(meta.begin(), meta.end()), "checkpoint '" + file + "'");
}

/// The optimizer's name and settings ("optimizer", "optimizer.<setting>"), and their check.
template <class Opt>
void put_optimizer(io::SafetensorsMetadata& meta, const Opt& opt) {
  meta["optimizer"] = Opt::name;
  for (const auto& [k, v] : opt.settings()) meta["optimizer." + k] = exact(v);
}
template <class Opt>
void expect_optimizer(const io::SafetensorsMetadata& meta, const Opt& opt, const std::string& file) {
  const std::string& name = meta_get(meta, "optimizer", file);
  REASON_CHECK(name == Opt::name, "checkpoint '", file, "': optimizer '", name, "', expected '", Opt::name, "'");
  for (const auto& [k, v] : opt.settings()) {
    const std::string& got = meta_get(meta, "optimizer." + k, file);
    REASON_CHECK(got == exact(v), "checkpoint '", file, "': optimizer setting '", k, "' is ", got, ", expected ",
                 exact(v));
  }
}

/// Every `expected` key must be in `meta` with the same value; `what` names the group in the error.
inline void expect_fields(const io::SafetensorsMetadata& meta, const io::SafetensorsMetadata& expected,
                          const char* what, const std::string& file) {
  for (const auto& [k, v] : expected) {
    const std::string& got = meta_get(meta, k, file);
    REASON_CHECK(got == v, "checkpoint '", file, "': ", what, " field '", k, "' is ", got, ", expected ", v);
  }
}

/// Adds the caller's metadata; a key the trainer already wrote is an error.
inline void put_extra(io::SafetensorsMetadata& meta, const io::SafetensorsMetadata& extra) {
  for (const auto& [k, v] : extra) {
    REASON_CHECK(!meta.contains(k), "save_checkpoint: extra metadata key '", k, "' collides with the trainer's own");
    meta[k] = v;
  }
}

/// One tensor per parameter of `layout`, named prefix + parameter name, viewing `flat` (laid out by `layout`).
template <class T>
void add_entries(std::vector<io::SafetensorsEntry>& entries, const std::string& prefix, const ParamLayout& layout,
                 std::span<const T> flat) {
  for (const ParamInfo& p : layout.params())
    entries.push_back(io::safetensors_entry<T>(prefix + p.name, flat.subspan(p.offset, p.numel), p.shape));
}

/// A tensor a loader restores: its name in the file, its parameter (shape), and where it goes.
template <class T>
struct TensorRead {
  std::string name;
  const ParamInfo* param = nullptr;
  std::span<T> dest;
};
template <class T>
void add_reads(std::vector<TensorRead<T>>& reads, const std::string& prefix, const ParamLayout& layout,
               std::span<T> flat) {
  for (const ParamInfo& p : layout.params()) reads.push_back({prefix + p.name, &p, flat.subspan(p.offset, p.numel)});
}
/// Checks every tensor's presence, dtype and shape first, copies after: a bad file changes nothing.
template <class T>
void read_checked(const io::SafetensorsFile& file, const std::vector<TensorRead<T>>& reads) {
  for (const TensorRead<T>& r : reads) file.expect(r.name, dtype_of<T>, std::span<const std::int64_t>(r.param->shape));
  for (const TensorRead<T>& r : reads) file.read_into<T>(r.name, r.dest);
}

/// Whether a trainer holds one rank's share of a split model (parallel/model_parallel.hpp).
template <class Tr>
concept split_model = SplitModelBuffers<std::remove_cvref_t<decltype(std::declval<const Tr&>().buffers())>>;
/// The training config a checkpoint records and expects: the trainer's, with the global batch of a
/// run whose ranks each train on a share of it (Trainer::data_ranks), so that the file resumes on
/// any number of ranks that splits the same global batch — one process included.
template <class Tr>
TrainConfig recorded_config(const Tr& trainer) {
  TrainConfig c = trainer.config();
  if constexpr (requires { trainer.data_ranks(); }) c.batch *= trainer.data_ranks();
  return c;
}
/// Ranks that each hold their own part of a step's gradients mid-step (1 without such a policy).
template <class Tr>
int data_ranks(const Tr& trainer) {
  if constexpr (requires { trainer.data_ranks(); })
    return trainer.data_ranks();
  else
    return 1;
}

/// The layout a checkpoint's tensors follow: the unsplit model's.
template <bool Split, class Net>
const ParamLayout& checkpoint_layout(const Net& net) {
  if constexpr (Split)
    return net.full_layout();
  else
    return net.layout();
}
/// `slots` buffers laid out like a split model's parameters, back to back in `local` (the parameters:
/// 1; an optimizer's state: its slots), gathered into the unsplit layout (a collective every rank calls).
template <class Buffers, class T>
std::vector<T> gather_slots(const Buffers& buf, std::span<const T> local, int slots) {
  const std::size_t nl = local.size() / static_cast<std::size_t>(slots);
  std::vector<T> full;
  for (int s = 0; s < slots; ++s) {
    const std::vector<T> one = buf.gather_full(local.subspan(s * nl, nl));
    full.insert(full.end(), one.begin(), one.end());
  }
  return full;
}
/// The reverse: this rank's share of `slots` unsplit buffers (a checkpoint read whole by every rank).
template <class Plan, class T>
void scatter_slots(const Plan& plan, std::span<const T> full, std::span<T> local, int slots) {
  const std::size_t n = full.size() / static_cast<std::size_t>(slots), nl = local.size() / static_cast<std::size_t>(slots);
  for (int s = 0; s < slots; ++s) plan.scatter(full.subspan(s * n, n), local.subspan(s * nl, nl));
}

/// The training config as metadata (what must match for a resume to continue the same run).
inline io::SafetensorsMetadata train_metadata(const TrainConfig& c) {
  return {{"train.total_steps", std::to_string(c.total_steps)},
          {"train.micro_batches", std::to_string(c.micro_batches)},
          {"train.batch", std::to_string(c.batch)},
          {"train.seq", std::to_string(c.seq)},
          {"train.max_grad_norm", exact(c.max_grad_norm)},
          {"train.seed", std::to_string(c.seed)},
          {"schedule.peak_lr", exact(c.schedule.peak_lr)},
          {"schedule.min_lr", exact(c.schedule.min_lr)},
          {"schedule.warmup_steps", std::to_string(c.schedule.warmup_steps)},
          {"schedule.total_steps", std::to_string(c.schedule.total_steps)}};
}
/// A dynamic loss scaler's config (must match on resume) and its state (restored).
inline io::SafetensorsMetadata loss_scale_config_metadata(const LossScaleConfig& c) {
  return {{"loss_scale.initial_scale", exact(c.initial_scale)},
          {"loss_scale.growth_factor", exact(c.growth_factor)},
          {"loss_scale.backoff_factor", exact(c.backoff_factor)},
          {"loss_scale.growth_interval", std::to_string(c.growth_interval)},
          {"loss_scale.min_scale", exact(c.min_scale)},
          {"loss_scale.max_scale", exact(c.max_scale)}};
}
inline void put_loss_scale(io::SafetensorsMetadata& meta, const LossScaleConfig& c, const DynamicLossScaler& s) {
  if (!s.enabled()) return;
  for (const auto& [k, v] : loss_scale_config_metadata(c)) meta[k] = v;
  meta["loss_scale.scale"] = exact(s.scale());
  meta["loss_scale.good_steps"] = std::to_string(s.good_steps());
  meta["loss_scale.skipped_steps"] = std::to_string(s.skipped_steps());
}
/// The scaler state in `meta`, checked against the run's scaler `current` (whether it scales, its
/// config, what states are possible) without changing it: a refused file leaves the trainer as it was.
struct LossScaleState {
  double scale = 1;
  std::int64_t good_steps = 0, skipped_steps = 0;
};
inline LossScaleState read_loss_scale(const io::SafetensorsMetadata& meta, const LossScaleConfig& c,
                                      const DynamicLossScaler& current, const std::string& file) {
  const bool in_file = meta.contains("loss_scale.scale");
  REASON_CHECK(in_file == current.enabled(), "checkpoint '", file, "': written ", in_file ? "with" : "without",
               " dynamic loss scaling, but this run is ", current.enabled() ? "with" : "without", " it");
  if (!in_file) return {};
  expect_fields(meta, loss_scale_config_metadata(c), "loss scale config", file);
  const LossScaleState st{meta_number<double>(meta, "loss_scale.scale", file),
                          meta_number<std::int64_t>(meta, "loss_scale.good_steps", file),
                          meta_number<std::int64_t>(meta, "loss_scale.skipped_steps", file)};
  DynamicLossScaler probe = current;
  probe.set_state(st.scale, st.good_steps, st.skipped_steps, "checkpoint '" + file + "'");
  return st;
}
}  // namespace detail

/// A supervised trainer whose whole state a checkpoint holds: train::Trainer, whose buffers may live
/// on a GPU; it copies them to its host mirrors (to_host) before a save and back (from_host) after a
/// load (no-ops on the host).
template <class Tr>
concept CheckpointTrainer = requires(Tr& t, const Tr& ct) {
  typename Tr::T;
  ct.net().layout();
  ct.optimizer();
  ct.config();
  ct.params();
  ct.grads();
  ct.optimizer_state();
  ct.partial_loss_sum();
  t.set_position(std::int64_t{0}, 0, 0.0, index_t{0});
  { ct.loss_scaler() } -> std::convertible_to<const DynamicLossScaler&>;
  t.set_loss_scale_state(1.0, std::int64_t{0}, std::int64_t{0});
};

/// Writes the trainer's complete state, plus `extra` metadata (keys must not collide), atomically.
/// With a distributed parallelism policy (parallel::DataParallel, parallel::Zero, and the split-model
/// ones, whose shares are gathered into the unsplit layout) every rank calls it and rank 0 writes;
/// the others must not read the file before a barrier.
template <CheckpointTrainer Tr>
void save_checkpoint(const std::filesystem::path& path, const Tr& trainer, const io::SafetensorsMetadata& extra = {}) {
  using T = typename Tr::T;
  using Net = std::remove_cvref_t<decltype(trainer.net())>;
  using Opt = std::remove_cvref_t<decltype(trainer.optimizer())>;
  // Mid-step, each rank of a data-split run holds the gradients of its own tokens only.
  REASON_CHECK(detail::data_ranks(trainer) == 1 || trainer.micro() == 0, "save_checkpoint: ", detail::data_ranks(trainer),
               " ranks each hold part of the step's gradients; a checkpoint is taken between steps (the run stands at "
               "micro-batch ", trainer.micro(), " of step ", trainer.step(), ")");
  if constexpr (requires { trainer.to_host(); }) trainer.to_host();
  // A split model (tensor, expert, pipeline parallel): every rank's share gathered into the unsplit
  // layout, so the file is the one a single process writes (parallel/model_parallel.hpp).
  constexpr bool split = detail::split_model<Tr>;
  std::vector<T> full_params, full_state;
  if constexpr (split) {
    REASON_CHECK(trainer.micro() == 0, "save_checkpoint: a split model's checkpoint is taken between steps; the run stands at "
                 "micro-batch ", trainer.micro(), " of step ", trainer.step());
    full_params = detail::gather_slots(trainer.buffers(), std::span<const T>(trainer.params()), 1);
    full_state = detail::gather_slots(trainer.buffers(), std::span<const T>(trainer.optimizer_state()), Opt::state_slots);
  }
  // Under a distributed policy every rank calls this (to_host may gather shards) and one writes.
  if constexpr (requires { trainer.checkpoint_writer(); })
    if (!trainer.checkpoint_writer()) return;
  Net& net = trainer.net();
  const ParamLayout& layout = detail::checkpoint_layout<split>(net);
  const std::span<const T> params = split ? std::span<const T>(full_params) : std::span<const T>(trainer.params());
  const std::span<const T> state =
      split ? std::span<const T>(full_state) : std::span<const T>(trainer.optimizer_state());
  io::SafetensorsMetadata meta;
  for (const auto& [k, v] : net.model_metadata()) meta[k] = v;
  for (const auto& [k, v] : detail::train_metadata(detail::recorded_config(trainer))) meta[k] = v;
  meta["format"] = checkpoint_format;
  detail::put_optimizer(meta, trainer.optimizer());
  meta["train.step"] = std::to_string(trainer.step());
  meta["train.micro"] = std::to_string(trainer.micro());
  meta["train.loss_sum"] = detail::exact(trainer.partial_loss_sum());
  meta["train.loss_count"] = std::to_string(trainer.partial_loss_count());
  detail::put_loss_scale(meta, trainer.config().loss_scale, trainer.loss_scaler());
  detail::put_extra(meta, extra);

  std::vector<io::SafetensorsEntry> entries;
  const std::size_t n = layout.size();
  detail::add_entries<T>(entries, "", layout, params);
  for (int s = 0; s < Opt::state_slots; ++s)
    detail::add_entries<T>(entries, std::string("optim.") + Opt::slot_names[s] + ".", layout, state.subspan(s * n, n));
  if (trainer.micro() > 0) detail::add_entries<T>(entries, "grad.", layout, trainer.grads());
  if constexpr (Net::routed)  // the step's expert load so far: the balancing update after it needs all of it
    if (trainer.micro() > 0)
      entries.push_back(io::safetensors_entry<double>(detail::pending_load_name, net.pending_expert_load(),
                                                      {static_cast<std::int64_t>(net.pending_expert_load().size())}));
  io::write_safetensors(path, entries, meta);
}

/// Restores a trainer from `path`. The model config, training config and optimizer must match
/// the trainer's; the first field that differs is named. Returns the file's metadata so the
/// caller can check and restore its own `extra` entries.
template <CheckpointTrainer Tr>
io::SafetensorsMetadata load_checkpoint(const std::filesystem::path& path, Tr& trainer) {
  using T = typename Tr::T;
  using Net = std::remove_cvref_t<decltype(trainer.net())>;
  using Opt = std::remove_cvref_t<decltype(trainer.optimizer())>;
  constexpr bool split = detail::split_model<Tr>;
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  const std::string fname = path.string();
  const io::SafetensorsMetadata& meta = file.metadata();
  const std::string& format = detail::meta_get(meta, "format", fname);
  REASON_CHECK(format == checkpoint_format, "checkpoint '", fname, "': format '", format, "', expected '",
               checkpoint_format, "'");

  Net& net = trainer.net();
  detail::expect_model_config(meta, net, fname);
  detail::expect_fields(meta, detail::train_metadata(detail::recorded_config(trainer)), "training config", fname);
  detail::expect_optimizer(meta, trainer.optimizer(), fname);

  const auto step = detail::meta_number<std::int64_t>(meta, "train.step", fname);
  const auto micro = detail::meta_number<int>(meta, "train.micro", fname);
  const auto loss_sum = detail::meta_number<double>(meta, "train.loss_sum", fname);
  const auto loss_count = detail::meta_number<index_t>(meta, "train.loss_count", fname);
  const detail::LossScaleState scale =
      detail::read_loss_scale(meta, trainer.config().loss_scale, trainer.loss_scaler(), fname);

  REASON_CHECK(step >= 0 && step <= trainer.config().total_steps && micro >= 0 &&
                   micro < trainer.config().micro_batches && loss_count >= 0,
               "checkpoint '", fname, "': position step ", step, ", micro-batch ", micro, ", loss count ", loss_count,
               " is outside this run (", trainer.config().total_steps, " steps of ", trainer.config().micro_batches,
               " micro-batches)");
  // A split model reads the unsplit tensors and takes its share (each rank reads the file itself).
  if constexpr (split)
    REASON_CHECK(micro == 0, "checkpoint '", fname, "': saved at micro-batch ", micro, "; a split model resumes between steps");
  REASON_CHECK(micro == 0 || detail::data_ranks(trainer) == 1, "checkpoint '", fname, "': saved at micro-batch ", micro,
               " of a step; its partial gradients are the whole batch's, which ", detail::data_ranks(trainer),
               " ranks cannot share out (resume it on one process)");
  const ParamLayout& layout = detail::checkpoint_layout<split>(net);
  const std::size_t n = layout.size();
  std::vector<T> full_params, full_state;
  if constexpr (split) {
    full_params.resize(n);
    full_state.resize(n * static_cast<std::size_t>(Opt::state_slots));
  }
  const std::span<T> params = split ? std::span<T>(full_params) : std::span<T>(trainer.params());
  const std::span<T> state = split ? std::span<T>(full_state) : std::span<T>(trainer.optimizer_state());
  std::vector<detail::TensorRead<T>> reads;
  detail::add_reads<T>(reads, "", layout, params);
  for (int s = 0; s < Opt::state_slots; ++s)
    detail::add_reads<T>(reads, std::string("optim.") + Opt::slot_names[s] + ".", layout, state.subspan(s * n, n));
  if (micro > 0) detail::add_reads<T>(reads, "grad.", layout, trainer.grads());
  std::vector<double> pending;
  if constexpr (Net::routed) {
    pending.assign(net.pending_expert_load().size(), 0.0);
    if (micro > 0)
      file.expect(detail::pending_load_name, dtype_of<double>, {static_cast<std::int64_t>(pending.size())});
  }
  detail::read_checked(file, reads);
  if constexpr (split) {
    const auto& plan = trainer.buffers().shard_plan();
    detail::scatter_slots(plan, std::span<const T>(full_params), trainer.params(), 1);
    detail::scatter_slots(plan, std::span<const T>(full_state), trainer.optimizer_state(), Opt::state_slots);
  }
  if constexpr (Net::routed) {
    if (micro > 0) file.read_into<double>(detail::pending_load_name, std::span<double>(pending));
    net.set_pending_expert_load(pending);
  }
  if (micro == 0) std::fill(trainer.grads().begin(), trainer.grads().end(), T(0));
  trainer.set_position(step, micro, loss_sum, loss_count);
  trainer.set_loss_scale_state(scale.scale, scale.good_steps, scale.skipped_steps);
  if constexpr (requires { trainer.from_host(); }) trainer.from_host();
  return meta;
}

/// Reads only the parameters from `path` into `params` (laid out by `net.layout()`): from an SFT
/// checkpoint (save_checkpoint above), a GRPO checkpoint (rl::save_checkpoint) or any weights file
/// with the model config in its metadata and each parameter under its layout name; other tensors
/// (optimizer state, the GRPO reference) are ignored. The file's model config must equal the
/// net's (the first field that differs is named) and every parameter tensor is checked before any
/// is copied. Returns the file's metadata (its "format", position, the caller's extras).
template <class Net>
io::SafetensorsMetadata load_params(const std::filesystem::path& path, const Net& net,
                                    std::span<typename Net::T> params) {
  using T = typename Net::T;
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  const std::string fname = path.string();
  const ParamLayout& layout = net.layout();
  REASON_CHECK(params.size() == layout.size(), "load_params: destination has ", params.size(),
               " elements, the model has ", layout.size(), " parameters");
  detail::expect_model_config(file.metadata(), net, fname);
  std::vector<detail::TensorRead<T>> reads;
  detail::add_reads<T>(reads, "", layout, params);
  detail::read_checked(file, reads);
  return file.metadata();
}

}  // namespace reason::train
