// The CUDA translation unit of the sft example: the GPU model and trainer that `sft --device cuda`
// runs (main.cpp uses them through their host headers), for the dense multi_head build.
#include "reason/model/gpu_transformer.cuh"
#include "reason/train/gpu_trainer.cuh"

template class reason::gpu::DenseTransformer<32, reason::precision::Fp32>;
template class reason::gpu::DenseTransformer<32, reason::precision::Bf16>;
template class reason::gpu::Trainer<reason::gpu::DenseTransformer<32, reason::precision::Fp32>>;
template class reason::gpu::Trainer<reason::gpu::DenseTransformer<32, reason::precision::Bf16>>;
