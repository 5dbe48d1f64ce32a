// reason/train/gpu_trainer.hpp — the supervised training loop for a model on a CUDA GPU.
//
// It is train::Trainer itself: the trainer keeps its parameters, gradients and AdamW moments in
// the model's train_buffers<Opt> (gpu::TrainBuffers, train/gpu_train_buffers.hpp), so the same
// loop — micro-batches that add up, the loss scaled by 1 / the step's target tokens, global-norm
// clipping (gpu::GradNorm), the schedule's learning rate, gpu::adamw_update in the host's double
// arithmetic — runs on the device. Initialisation is the host's, uploaded once, so a GPU run starts
// from the very parameters a CPU run with the same seed starts from. train::save_checkpoint /
// load_checkpoint fill the host mirrors through to_host() / from_host(), so checkpoints move
// between backends. model_params() is the device pointer the model reads.
//
// The device buffers' definitions are in gpu_train_buffers.cuh, which one CUDA translation unit
// includes and instantiates (`template class reason::gpu::TrainBuffers<reason::optim::AdamW>;`).
#pragma once

#include "reason/optim/adamw.hpp"
#include "reason/train/gpu_train_buffers.hpp"
#include "reason/train/trainer.hpp"

namespace reason::gpu {

/// train::Trainer with AdamW (the CUDA backend's optimizer) for a CUDA model.
template <class Net>
using Trainer = train::Trainer<Net, optim::AdamW>;

}  // namespace reason::gpu
