// reason/train/gpu_trainer.cuh — the definitions of gpu::Trainer (train/gpu_trainer.hpp).
//
// Include in the one CUDA translation unit that instantiates the trainer, after the model's
// definitions (model/gpu_transformer.cuh).
#pragma once

#include <cuda_runtime_api.h>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/kernels/adamw.cuh"
#include "reason/kernels/reduce.cuh"
#include "reason/train/gpu_trainer.hpp"

namespace reason::gpu {

template <class Net>
struct Trainer<Net>::Device {
  DeviceBuffer<float> params, grads, exp_avg, exp_avg_sq;
  GradNorm norm;
  std::vector<AdamWSegment> segments;
};

template <class Net>
Trainer<Net>::Trainer(Net& net, Opt optimizer, train::TrainConfig config) : net_(net), opt_(optimizer), cfg_(config) {
  cfg_.validate();
  const std::size_t n = net_.num_params();
  dev_ = std::make_unique<Device>();
  dev_->params = DeviceBuffer<float>(n, "gpu::Trainer parameters");
  dev_->grads = DeviceBuffer<float>(n, "gpu::Trainer gradients");
  dev_->exp_avg = DeviceBuffer<float>(n, "gpu::Trainer exp_avg");
  dev_->exp_avg_sq = DeviceBuffer<float>(n, "gpu::Trainer exp_avg_sq");
  dev_->segments = adamw_segments(net_.layout());
  host_params_.resize(n);
  host_grads_.assign(n, 0.0f);
  host_state_.assign(2 * n, 0.0f);
  net_.layout().initialize(std::span<float>(host_params_), cfg_.seed);
  from_host();
  net_.reserve(cfg_.batch, cfg_.seq);
}

template <class Net>
Trainer<Net>::~Trainer() = default;

template <class Net>
const float* Trainer<Net>::device_params() const {
  return dev_->params.data();
}
template <class Net>
float* Trainer<Net>::device_params() {
  return dev_->params.data();
}
template <class Net>
float* Trainer<Net>::device_grads() {
  return dev_->grads.data();
}

template <class Net>
void Trainer<Net>::to_host() const {
  const std::size_t n = host_params_.size();
  const cudaStream_t s = net_.stream();
  REASON_CUDA_CHECK(cudaMemcpyAsync(host_params_.data(), dev_->params.data(), n * sizeof(float), cudaMemcpyDeviceToHost, s));
  REASON_CUDA_CHECK(cudaMemcpyAsync(host_grads_.data(), dev_->grads.data(), n * sizeof(float), cudaMemcpyDeviceToHost, s));
  REASON_CUDA_CHECK(
      cudaMemcpyAsync(host_state_.data(), dev_->exp_avg.data(), n * sizeof(float), cudaMemcpyDeviceToHost, s));
  REASON_CUDA_CHECK(
      cudaMemcpyAsync(host_state_.data() + n, dev_->exp_avg_sq.data(), n * sizeof(float), cudaMemcpyDeviceToHost, s));
  REASON_CUDA_CHECK(cudaStreamSynchronize(s));
}

template <class Net>
void Trainer<Net>::from_host() {
  const std::size_t n = host_params_.size();
  const cudaStream_t s = net_.stream();
  REASON_CUDA_CHECK(cudaMemcpyAsync(dev_->params.data(), host_params_.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
  REASON_CUDA_CHECK(cudaMemcpyAsync(dev_->grads.data(), host_grads_.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
  REASON_CUDA_CHECK(
      cudaMemcpyAsync(dev_->exp_avg.data(), host_state_.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
  REASON_CUDA_CHECK(
      cudaMemcpyAsync(dev_->exp_avg_sq.data(), host_state_.data() + n, n * sizeof(float), cudaMemcpyHostToDevice, s));
  REASON_CUDA_CHECK(cudaStreamSynchronize(s));
}

template <class Net>
std::optional<train::StepStats> Trainer<Net>::run_micro(const train::BatchSource& source) {
  const train::TokenBatch& b = pos_.batch(source, cfg_, "gpu::Trainer");
  const std::size_t n = host_params_.size();
  const cudaStream_t s = net_.stream();
  if (pos_.micro() == 0) REASON_CUDA_CHECK(cudaMemsetAsync(dev_->grads.data(), 0, n * sizeof(float), s));
  const auto r = net_.forward(dev_->params.data(), dev_->grads.data(), b.tokens_view(), b.targets_view(),
                              static_cast<float>(pos_.grad_scale()));
  net_.backward(dev_->params.data(), dev_->grads.data());
  if (!pos_.add(r.loss_sum, r.count, cfg_)) return std::nullopt;

  const double norm =
      dev_->norm.template clip_grad_norm<float>(std::span<float>(dev_->grads.data(), n), cfg_.max_grad_norm, s);
  const train::StepStats st = pos_.stats(norm, cfg_, "gpu::Trainer");
  adamw_update<float, double>(dev_->segments, n, dev_->params.data(), dev_->grads.data(), dev_->exp_avg.data(),
                              dev_->exp_avg_sq.data(), opt_.config, st.lr, st.step + 1, s);
  pos_.next_step();
  return st;
}

}  // namespace reason::gpu
