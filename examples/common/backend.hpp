// examples/common/backend.hpp — what lets one example code path run on the host or on a GPU.
//
// The examples are written once against the model interface; `--device cuda` instantiates them
// with gpu::DenseTransformer (the dense multi_head model on a GPU) instead of model::Transformer.
// The trainers need nothing: train::Trainer and rl::GrpoTrainer keep their buffers where the model
// says (train_buffers_t). What differs by backend, picked here by the model type:
//   ModelParams<Net>  parameters where the model reads them: the caller's host vector itself, or a
//                     device copy for a CUDA model (for evaluating or sampling a saved model).
// The CUDA side exists where the build links reason::cuda (REASON_WITH_CUDA).
#pragma once

#include <span>

#if REASON_WITH_CUDA
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/model/gpu_transformer.hpp"
#endif

namespace examples {

/// A host model reads the caller's vector, which must outlive this.
template <class Net, bool = requires { Net::on_device; }>
class ModelParams {
 public:
  ModelParams(const Net&, std::span<const float> host) : host_(host) {}
  [[nodiscard]] const float* get() const { return host_.data(); }

 private:
  std::span<const float> host_;
};

#if REASON_WITH_CUDA
/// A CUDA model reads a device copy, uploaded on the model's stream (so its next call sees it).
template <class Net>
class ModelParams<Net, true> {
 public:
  ModelParams(const Net& net, std::span<const float> host) : device_(host.size(), "model parameters") {
    device_.copy_from(host, net.stream());
  }
  [[nodiscard]] const float* get() const { return device_.data(); }

 private:
  reason::gpu::DeviceBuffer<float> device_;
};
#endif

}  // namespace examples
