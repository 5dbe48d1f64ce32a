// reason/train/gpu_trainer.cuh — the definitions of gpu::Trainer (train/gpu_trainer.hpp).
//
// Include in the one CUDA translation unit that instantiates the trainer, after the model's
// definitions (model/gpu_transformer.cuh).
#pragma once

#include <vector>

#include "reason/train/gpu_train_buffers.cuh"
#include "reason/train/gpu_trainer.hpp"

namespace reason::gpu {

namespace detail {
/// The host's initialisation of `layout` (layout().initialize with `seed`), to upload.
inline std::vector<float> initialized_params(const ParamLayout& layout, std::uint64_t seed) {
  std::vector<float> p(layout.size());
  layout.initialize(std::span<float>(p), seed);
  return p;
}
}  // namespace detail

template <class Net>
Trainer<Net>::Trainer(Net& net, Opt optimizer, train::TrainConfig config)
    : net_(net),
      opt_(optimizer),
      cfg_((config.validate(), config)),
      buffers_(net.layout(), detail::initialized_params(net.layout(), config.seed), false, net.stream()) {
  net_.reserve(cfg_.batch, cfg_.seq);
}

template <class Net>
std::optional<train::StepStats> Trainer<Net>::run_micro(const train::BatchSource& source) {
  const train::TokenBatch& b = pos_.batch(source, cfg_, "gpu::Trainer");
  if (pos_.micro() == 0) buffers_.zero_grads();
  const auto r = net_.forward(buffers_.params(), buffers_.grads(), b.tokens_view(), b.targets_view(),
                              static_cast<float>(pos_.grad_scale()));
  net_.backward(buffers_.params(), buffers_.grads());
  if (!pos_.add(r.loss_sum, r.count, cfg_)) return std::nullopt;

  const double norm = buffers_.clip_grad_norm(cfg_.max_grad_norm);
  const train::StepStats st = pos_.stats(norm, cfg_, "gpu::Trainer");
  buffers_.step(opt_, st.lr, st.step + 1);
  pos_.next_step();
  return st;
}

}  // namespace reason::gpu
