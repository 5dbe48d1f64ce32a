// reason/train/gpu_train_buffers.cuh — the definitions of gpu::TrainBuffers (train/gpu_train_buffers.hpp).
//
// Include in the one CUDA translation unit that instantiates them (the examples' cuda_models.cu, tests/cuda/model_instances.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/kernels/adamw.cuh"
#include "reason/kernels/reduce.cuh"
#include "reason/train/clip.hpp"
#include "reason/train/gpu_train_buffers.hpp"

namespace reason::gpu {

template <class Opt>
struct TrainBuffers<Opt>::Device {
  DeviceBuffer<float> params, grads, exp_avg, exp_avg_sq, reference;
  GradNorm norm;
  std::vector<AdamWSegment> segments;
};

template <class Opt>
TrainBuffers<Opt>::TrainBuffers(const ParamLayout& layout, std::span<const float> initial, bool with_reference,
                                cudaStream_t stream)
    : dev_(std::make_unique<Device>()), stream_(stream) {
  const std::size_t n = layout.size();
  REASON_CHECK(initial.size() == n, "gpu::TrainBuffers: ", initial.size(), " initial parameters for a layout of ", n);
  dev_->params = DeviceBuffer<float>(n, "gpu::TrainBuffers parameters");
  dev_->grads = DeviceBuffer<float>(n, "gpu::TrainBuffers gradients");
  dev_->exp_avg = DeviceBuffer<float>(n, "gpu::TrainBuffers exp_avg");
  dev_->exp_avg_sq = DeviceBuffer<float>(n, "gpu::TrainBuffers exp_avg_sq");
  if (with_reference) dev_->reference = DeviceBuffer<float>(n, "gpu::TrainBuffers reference");
  dev_->segments = adamw_segments(layout);
  host_params_.assign(initial.begin(), initial.end());
  host_grads_.assign(n, 0.0f);
  host_state_.assign(2 * n, 0.0f);
  if (with_reference) host_reference_ = host_params_;
  from_host();
}

template <class Opt>
TrainBuffers<Opt>::~TrainBuffers() = default;
template <class Opt>
TrainBuffers<Opt>::TrainBuffers(TrainBuffers&&) noexcept = default;
template <class Opt>
TrainBuffers<Opt>& TrainBuffers<Opt>::operator=(TrainBuffers&&) noexcept = default;

template <class Opt>
float* TrainBuffers<Opt>::params() {
  return dev_->params.data();
}
template <class Opt>
const float* TrainBuffers<Opt>::params() const {
  return dev_->params.data();
}
template <class Opt>
float* TrainBuffers<Opt>::grads() {
  return dev_->grads.data();
}
template <class Opt>
const float* TrainBuffers<Opt>::reference() const {
  return dev_->reference.data();
}

template <class Opt>
void TrainBuffers<Opt>::zero_grads() {
  REASON_CUDA_CHECK(cudaMemsetAsync(dev_->grads.data(), 0, dev_->grads.size() * sizeof(float), stream_));
}

namespace detail {
__global__ void scale_grads_kernel(float* __restrict__ g, std::uint64_t n, float factor) {
  for (std::uint64_t i = blockIdx.x * std::uint64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::uint64_t{gridDim.x} * blockDim.x)
    g[i] *= factor;
}
}  // namespace detail

template <class Opt>
double TrainBuffers<Opt>::clip_grad_norm(double max_norm, double unscale) {
  const std::span<float> g(dev_->grads.data(), dev_->grads.size());
  // Without loss scaling the clip decision stays on the device (no round trip before the scale).
  if (unscale == 1.0) return dev_->norm.template clip_grad_norm<float>(g, max_norm, stream_);
  const double norm = dev_->norm.template norm<float>(std::span<const float>(g), stream_) * unscale;
  const double factor = train::clip_factor(norm, max_norm, unscale);
  if (factor != 1.0 && !g.empty()) {
    const auto blocks = static_cast<unsigned>(std::min<std::size_t>((g.size() + 255) / 256, std::size_t{1} << 16));
    detail::scale_grads_kernel<<<blocks, 256, 0, stream_>>>(g.data(), g.size(), static_cast<float>(factor));
    REASON_CUDA_CHECK(cudaGetLastError());
  }
  return norm;
}

template <class Opt>
void TrainBuffers<Opt>::step(const Opt& opt, double lr, std::int64_t t) {
  Device& d = *dev_;
  adamw_update<float, double>(d.segments, d.params.size(), d.params.data(), d.grads.data(), d.exp_avg.data(),
                              d.exp_avg_sq.data(), opt.config, lr, t, stream_);
}

template <class Opt>
void TrainBuffers<Opt>::reset_reference() {
  REASON_CHECK(dev_->reference.size() == dev_->params.size(), "gpu::TrainBuffers::reset_reference: made without a reference");
  REASON_CUDA_CHECK(cudaMemcpyAsync(dev_->reference.data(), dev_->params.data(), dev_->params.size() * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream_));
}

template <class Opt>
void TrainBuffers<Opt>::to_host() const {
  const Device& d = *dev_;
  const std::size_t n = d.params.size();
  d.params.copy_to(std::span<float>(host_params_), stream_);
  d.grads.copy_to(std::span<float>(host_grads_), stream_);
  d.exp_avg.copy_to(std::span<float>(host_state_).first(n), stream_);
  d.exp_avg_sq.copy_to(std::span<float>(host_state_).subspan(n), stream_);
  if (d.reference.size() > 0) d.reference.copy_to(std::span<float>(host_reference_), stream_);
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <class Opt>
void TrainBuffers<Opt>::from_host() {
  Device& d = *dev_;
  const std::size_t n = d.params.size();
  d.params.copy_from(std::span<const float>(host_params_), stream_);
  d.grads.copy_from(std::span<const float>(host_grads_), stream_);
  d.exp_avg.copy_from(std::span<const float>(host_state_).first(n), stream_);
  d.exp_avg_sq.copy_from(std::span<const float>(host_state_).subspan(n), stream_);
  if (d.reference.size() > 0) d.reference.copy_from(std::span<const float>(host_reference_), stream_);
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace reason::gpu
