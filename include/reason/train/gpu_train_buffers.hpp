// reason/train/gpu_train_buffers.hpp — a training loop's flat buffers on a CUDA GPU.
//
// train::HostTrainBuffers' interface (train/train_buffers.hpp) on device memory: fp32
// parameters, gradients, AdamW's two moments and an optional frozen reference copy, all
// cudaMalloc'd, with the loop's operations as device work on one stream:
//   zero_grads      cudaMemsetAsync;
//   clip_grad_norm  gpu::GradNorm (squares summed in double, as the host does) — waits for the stream;
//                   with an unscale factor (loss scaling) the norm comes back first and the factor,
//                   train::clip_factor as on the host, is applied by one more pass;
//   step            gpu::adamw_update in the host optimizer's double arithmetic, so given the same
//                   gradients a step moves the parameters exactly as optim::AdamW::step does;
//   reset_reference a device-to-device copy.
// The host spans (host_params() ...) are mirrors for checkpoints: to_host() downloads every
// buffer, from_host() uploads them; in between they are stale. Only AdamW has a device update.
//
// The definitions are in gpu_train_buffers.cuh; one CUDA translation unit includes it and
// instantiates `template class reason::gpu::TrainBuffers<reason::optim::AdamW>;`. A CUDA model names these buffers as its `train_buffers<Opt>`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "reason/core/param_layout.hpp"
#include "reason/optim/adamw.hpp"

namespace reason::gpu {

template <class Opt>
class TrainBuffers {
  static_assert(std::is_same_v<Opt, optim::AdamW>,
                "gpu::TrainBuffers<Opt>: the CUDA backend's optimizer is optim::AdamW (gpu::adamw_update)");

 public:
  using T = float;

  /// Uploads `initial` (layout.size() values) as the parameters (and the reference, with
  /// `with_reference`); gradients and moments start at zero. Every operation runs on `stream`.
  TrainBuffers(const ParamLayout& layout, std::span<const float> initial, bool with_reference, cudaStream_t stream);
  ~TrainBuffers();
  TrainBuffers(TrainBuffers&&) noexcept;
  TrainBuffers& operator=(TrainBuffers&&) noexcept;
  TrainBuffers(const TrainBuffers&) = delete;
  TrainBuffers& operator=(const TrainBuffers&) = delete;

  /// Device memory.
  [[nodiscard]] float* params();
  [[nodiscard]] const float* params() const;
  [[nodiscard]] float* grads();
  [[nodiscard]] const float* reference() const;

  void zero_grads();
  /// Multiplies the gradients by `unscale` (1/S under loss scaling) and scales them to a global L2
  /// norm of at most max_norm (<= 0: never); the unscaled norm before clipping.
  double clip_grad_norm(double max_norm, double unscale = 1.0);
  void step(const Opt& opt, double lr, std::int64_t t);
  /// reference <- params.
  void reset_reference();

  /// Host mirrors for checkpoints (valid after to_host(); from_host() uploads them).
  [[nodiscard]] std::span<float> host_params() { return host_params_; }
  [[nodiscard]] std::span<const float> host_params() const { return host_params_; }
  [[nodiscard]] std::span<float> host_grads() { return host_grads_; }
  [[nodiscard]] std::span<const float> host_grads() const { return host_grads_; }
  [[nodiscard]] std::span<float> host_reference() { return host_reference_; }
  [[nodiscard]] std::span<const float> host_reference() const { return host_reference_; }
  [[nodiscard]] std::span<float> host_state() { return host_state_; }
  [[nodiscard]] std::span<const float> host_state() const { return host_state_; }
  void to_host() const;
  void from_host();

  struct Device;  // defined in gpu_train_buffers.cuh (public only because nvcc's generated host code names it)

 private:
  std::unique_ptr<Device> dev_;
  cudaStream_t stream_ = nullptr;
  mutable std::vector<float> host_params_, host_grads_, host_reference_, host_state_;
};

}  // namespace reason::gpu
