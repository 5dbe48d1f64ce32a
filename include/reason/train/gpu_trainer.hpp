// reason/train/gpu_trainer.hpp — the supervised training loop with its buffers on a CUDA GPU.
//
// train::Trainer's contract (train/trainer.hpp: micro-batches that add up, the loss scaled by
// 1 / the step's target tokens, global-norm clipping, the schedule's learning rate, then the
// optimizer; the position in the run as a handful of integers) for a model whose parameters live
// on the device (gpu::DenseTransformer). The parameters, gradients and the two AdamW moments are
// gpu::TrainBuffers (train/gpu_train_buffers.hpp): clipping is gpu::GradNorm (one pass over the
// gradients, squares summed in double) and the update gpu::adamw_update with the host's double
// arithmetic, so given the same gradients a GPU step moves the parameters exactly as the host
// optimizer would.
// Initialisation is the host's: layout().initialize on the host, then one upload, so a GPU run
// starts from the very parameters a CPU run with the same seed starts from.
//
// Checkpoints: train::save_checkpoint / load_checkpoint work unchanged. They read and fill the
// host mirrors params() / grads() / optimizer_state(), which this class copies from the device
// before a save (to_host) and back after a load (from_host); between those the mirrors are stale.
// The model reads device_params().
//
// As with gpu::DenseTransformer, the definitions that launch device work are in gpu_trainer.cuh,
// which one CUDA translation unit includes and instantiates (`template class
// reason::gpu::Trainer<reason::gpu::DenseTransformer<32, reason::precision::Bf16>>;`).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/train/gpu_train_buffers.hpp"
#include "reason/train/token_batch.hpp"
#include "reason/train/trainer.hpp"

namespace reason::gpu {

template <class Net>
class Trainer {
  static_assert(Net::on_device, "gpu::Trainer<Net>: Net is a CUDA model (gpu::DenseTransformer); "
                                "host models train with train::Trainer");

 public:
  using T = float;
  using Opt = optim::AdamW;

  Trainer(Net& net, Opt optimizer, train::TrainConfig config);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  [[nodiscard]] const train::TrainConfig& config() const { return cfg_; }
  [[nodiscard]] Net& net() const { return net_; }
  [[nodiscard]] const Opt& optimizer() const { return opt_; }

  /// Device memory: what the model reads and writes.
  [[nodiscard]] const float* device_params() const { return buffers_.params(); }
  [[nodiscard]] float* device_params() { return buffers_.params(); }
  [[nodiscard]] float* device_grads() { return buffers_.grads(); }

  /// Host mirrors for checkpoints (valid after to_host(); from_host() uploads them).
  [[nodiscard]] std::span<T> params() { return buffers_.host_params(); }
  [[nodiscard]] std::span<const T> params() const { return buffers_.host_params(); }
  [[nodiscard]] std::span<T> grads() { return buffers_.host_grads(); }
  [[nodiscard]] std::span<const T> grads() const { return buffers_.host_grads(); }
  [[nodiscard]] std::span<T> optimizer_state() { return buffers_.host_state(); }
  [[nodiscard]] std::span<const T> optimizer_state() const { return buffers_.host_state(); }
  void to_host() const { buffers_.to_host(); }
  void from_host() { buffers_.from_host(); }

  [[nodiscard]] std::int64_t step() const { return pos_.step(); }
  [[nodiscard]] int micro() const { return pos_.micro(); }
  [[nodiscard]] bool done() const { return pos_.step() >= cfg_.total_steps; }
  [[nodiscard]] double partial_loss_sum() const { return pos_.loss_sum(); }
  [[nodiscard]] index_t partial_loss_count() const { return pos_.loss_count(); }
  void set_position(std::int64_t step, int micro, double loss_sum, index_t loss_count) {
    pos_.set(step, micro, loss_sum, loss_count, cfg_, "gpu::Trainer");
  }

  /// The next micro-batch; at the end of a step clips, updates and returns the step's statistics.
  std::optional<train::StepStats> run_micro(const train::BatchSource& source);
  train::StepStats run_step(const train::BatchSource& source) {
    for (;;)
      if (auto s = run_micro(source)) return *s;
  }

 private:
  Net& net_;
  Opt opt_;
  train::TrainConfig cfg_;
  TrainBuffers<Opt> buffers_;
  train::RunPosition pos_;
};

}  // namespace reason::gpu
