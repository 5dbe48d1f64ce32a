// The CUDA translation unit of the examples: the GPU model and the training buffers that
// `sft --device cuda` and `r1 --device cuda` run (their main.cpp use them through the host
// headers), for the dense multi_head build.
#include "reason/model/gpu_transformer.cuh"
#include "reason/train/gpu_train_buffers.cuh"

template class reason::gpu::DenseTransformer<32, reason::precision::Fp32>;
template class reason::gpu::DenseTransformer<32, reason::precision::Bf16>;
template class reason::gpu::DenseTransformer<32, reason::precision::Fp16>;
template class reason::gpu::TrainBuffers<reason::optim::AdamW>;
