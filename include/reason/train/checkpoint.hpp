// reason/train/checkpoint.hpp — the whole state of a training run in one safetensors file.
//
// Design rule: resuming must be bit-identical to never stopping, so a checkpoint holds every
// bit the next step depends on and nothing is recomputed approximately:
//   tensors   "<param>"                 the parameters, under their layout names (a weights file
//                                       any safetensors reader can open)
//             "optim.<slot>.<param>"    each optimizer state slot (AdamW: exp_avg, exp_avg_sq)
//             "grad.<param>"            the accumulated gradients, only when saved mid-accumulation
//   metadata  the model config under Hugging Face names, the training config, the optimizer,
//             the position (step, micro-batch, the step's partial loss sum and count, doubles
//             written in shortest round-trip form) and whatever the caller adds (data seed, ...).
// Data and randomness are counter-based — batches are a pure function of (seed, step, micro),
// parameter init of (seed, tensor) — so the position *is* the data-sampler and RNG state.
// A file is written whole or not at all (temp file + rename); a checkpoint whose config
// differs from the run's is refused with the field that differs.
#pragma once

#include <charconv>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "reason/core/dtype.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/train/trainer.hpp"

namespace reason::train {

inline constexpr const char* checkpoint_format = "reason.checkpoint/1";

namespace detail {
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
}  // namespace detail

/// Writes the trainer's complete state, plus `extra` metadata (keys must not collide), atomically.
template <class Net, class Opt>
void save_checkpoint(const std::filesystem::path& path, const Trainer<Net, Opt>& trainer,
                     const io::SafetensorsMetadata& extra = {}) {
  using T = typename Trainer<Net, Opt>::T;
  Net& net = trainer.net();
  const ParamLayout& layout = net.layout();
  io::SafetensorsMetadata meta;
  for (const auto& [k, v] : net.config().to_metadata(Net::head_dim)) meta[k] = v;
  for (const auto& [k, v] : detail::train_metadata(trainer.config())) meta[k] = v;
  meta["format"] = checkpoint_format;
  meta["optimizer"] = Opt::name;
  for (const auto& [k, v] : trainer.optimizer().settings()) meta["optimizer." + k] = detail::exact(v);
  meta["train.step"] = std::to_string(trainer.step());
  meta["train.micro"] = std::to_string(trainer.micro());
  meta["train.loss_sum"] = detail::exact(trainer.partial_loss_sum());
  meta["train.loss_count"] = std::to_string(trainer.partial_loss_count());
  for (const auto& [k, v] : extra) {
    REASON_CHECK(!meta.contains(k), "save_checkpoint: extra metadata key '", k, "' collides with the trainer's own");
    meta[k] = v;
  }

  std::vector<io::SafetensorsEntry> entries;
  auto add = [&](std::string name, std::span<const T> flat, const ParamInfo& p) {
    entries.push_back(io::safetensors_entry<T>(std::move(name), flat.subspan(p.offset, p.numel), p.shape));
  };
  const std::size_t n = layout.size();
  for (const ParamInfo& p : layout.params()) add(p.name, trainer.params(), p);
  for (int s = 0; s < Opt::state_slots; ++s)
    for (const ParamInfo& p : layout.params())
      add(std::string("optim.") + Opt::slot_names[s] + "." + p.name, trainer.optimizer_state().subspan(s * n, n), p);
  if (trainer.micro() > 0)
    for (const ParamInfo& p : layout.params()) add("grad." + p.name, trainer.grads(), p);
  io::write_safetensors(path, entries, meta);
}

/// Restores a trainer from `path`. The model config, training config and optimizer must match
/// the trainer's; the first field that differs is named. Returns the file's metadata so the
/// caller can check and restore its own `extra` entries.
template <class Net, class Opt>
io::SafetensorsMetadata load_checkpoint(const std::filesystem::path& path, Trainer<Net, Opt>& trainer) {
  using T = typename Trainer<Net, Opt>::T;
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  const std::string fname = path.string();
  const io::SafetensorsMetadata& meta = file.metadata();
  const std::string& format = detail::meta_get(meta, "format", fname);
  REASON_CHECK(format == checkpoint_format, "checkpoint '", fname, "': format '", format, "', expected '",
               checkpoint_format, "'");

  Net& net = trainer.net();
  std::map<std::string, std::string> model_meta(meta.begin(), meta.end());
  const model::Config saved = model::Config::from_metadata(model_meta, Net::head_dim);
  net.config().expect_same(saved, ("checkpoint '" + fname + "'").c_str());
  for (const auto& [k, v] : detail::train_metadata(trainer.config())) {
    const std::string& got = detail::meta_get(meta, k, fname);
    REASON_CHECK(got == v, "checkpoint '", fname, "': training config field '", k, "' is ", got, ", expected ", v);
  }
  const std::string& opt = detail::meta_get(meta, "optimizer", fname);
  REASON_CHECK(opt == Opt::name, "checkpoint '", fname, "': optimizer '", opt, "', expected '", Opt::name, "'");
  for (const auto& [k, v] : trainer.optimizer().settings()) {
    const std::string& got = detail::meta_get(meta, "optimizer." + k, fname);
    REASON_CHECK(got == detail::exact(v), "checkpoint '", fname, "': optimizer setting '", k, "' is ", got,
                 ", expected ", detail::exact(v));
  }

  const auto step = detail::meta_number<std::int64_t>(meta, "train.step", fname);
  const auto micro = detail::meta_number<int>(meta, "train.micro", fname);
  const auto loss_sum = detail::meta_number<double>(meta, "train.loss_sum", fname);
  const auto loss_count = detail::meta_number<index_t>(meta, "train.loss_count", fname);

  REASON_CHECK(step >= 0 && step <= trainer.config().total_steps && micro >= 0 &&
                   micro < trainer.config().micro_batches && loss_count >= 0,
               "checkpoint '", fname, "': position step ", step, ", micro-batch ", micro, ", loss count ", loss_count,
               " is outside this run (", trainer.config().total_steps, " steps of ", trainer.config().micro_batches,
               " micro-batches)");
  const ParamLayout& layout = net.layout();
  const std::size_t n = layout.size();
  // Check every tensor first, copy after: a bad file leaves the trainer as it was.
  std::vector<std::pair<std::string, std::size_t>> reads;  // tensor name, offset into [params | state | grads]
  for (const ParamInfo& p : layout.params()) reads.emplace_back(p.name, p.offset);
  for (int s = 0; s < Opt::state_slots; ++s)
    for (const ParamInfo& p : layout.params())
      reads.emplace_back(std::string("optim.") + Opt::slot_names[s] + "." + p.name, n + s * n + p.offset);
  if (micro > 0)
    for (const ParamInfo& p : layout.params()) reads.emplace_back("grad." + p.name, n + Opt::state_slots * n + p.offset);
  for (std::size_t i = 0; i < reads.size(); ++i) {
    const ParamInfo& p = layout.params()[i % layout.params().size()];
    file.expect(reads[i].first, dtype_of<T>, std::span<const std::int64_t>(p.shape));
  }
  for (std::size_t i = 0; i < reads.size(); ++i) {
    const ParamInfo& p = layout.params()[i % layout.params().size()];
    const std::size_t at = reads[i].second;
    std::span<T> dest = at < n                              ? trainer.params().subspan(at, p.numel)
                        : at < n + Opt::state_slots * n ? trainer.optimizer_state().subspan(at - n, p.numel)
                                                            : trainer.grads().subspan(at - n - Opt::state_slots * n, p.numel);
    file.read_into<T>(reads[i].first, dest);
  }
  if (micro == 0) std::fill(trainer.grads().begin(), trainer.grads().end(), T(0));
  trainer.set_position(step, micro, loss_sum, loss_count);
  return meta;
}

}  // namespace reason::train
