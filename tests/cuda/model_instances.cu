// The one CUDA translation unit of test_cuda_model: the definitions of the CUDA model and its training buffers,
// instantiated for the configurations tests/cuda/model.cpp uses (which is plain C++, so that it can
// also build the host model: nvcc cannot compile the host policies' class-type template arguments).
#include "reason/model/gpu_transformer.cuh"
#include "reason/train/gpu_train_buffers.cuh"

template class reason::gpu::DenseTransformer<32, reason::precision::Fp32>;
template class reason::gpu::DenseTransformer<32, reason::precision::Bf16>;
template class reason::gpu::DenseTransformer<32, reason::precision::Fp16>;
template class reason::gpu::TrainBuffers<reason::optim::AdamW>;
