// reason/kernels/convert.cuh — fp32 to bf16 or fp16 over a flat buffer on the GPU (the compute
// copy of the master weights under precision::Bf16 / precision::Fp16, and the fp16 / bf16 copy of
// a host objective's fp32 gradient).
//
// out[i] = T(in[i]), round to nearest even: __float2bfloat16_rn / __float2half_rn (and their pair
// forms), the host reason::bf16(float) / reason::fp16(float)'s rounding — tests/cuda/dtype_philox.cu
// checks gpu::to_bf16 and gpu::to_fp16 against them bit for bit. fp16 overflows to Inf (|x| >=
// 65520), never to 65504: a scaled gradient too large for fp16 must stay visible. 16-byte loads
// where both pointers allow it; a grid-stride loop, so any n works with a bounded grid.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

namespace detail {

template <class T, bool VEC>
__global__ void __launch_bounds__(256) narrow_kernel(const float* in, T* out, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (VEC) {
    for (; 4 * i + 3 < n; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(in)[i];
      reinterpret_cast<uint2*>(out)[i] = make_uint2(pack2_rn<T>(v.x, v.y), pack2_rn<T>(v.z, v.w));
    }
    // the last n % 4 elements: one thread each
    const std::size_t tail = n / 4 * 4, t = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tail + t < n) out[tail + t] = from_f32<T>(in[tail + t]);
  } else {
    for (; i < n; i += stride) out[i] = from_f32<T>(in[i]);
  }
}

template <class T>
void narrow(const char* fn, const float* in, T* out, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  REASON_CHECK(in != nullptr && out != nullptr, fn, ": a null pointer for ", n, " elements");
  const bool vec = reinterpret_cast<std::uintptr_t>(in) % 16 == 0 && reinterpret_cast<std::uintptr_t>(out) % 8 == 0;
  const std::size_t work = vec ? (n + 3) / 4 : n;
  const auto blocks = static_cast<unsigned>(std::min<std::size_t>((work + 255) / 256, std::size_t{1} << 16));
  if (vec)
    narrow_kernel<T, true><<<blocks, 256, 0, stream>>>(in, out, n);
  else
    narrow_kernel<T, false><<<blocks, 256, 0, stream>>>(in, out, n);
  REASON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail

/// out[i] = bf16(in[i]) for i < n (device memory, asynchronous on `stream`).
inline void to_bf16(const float* in, __nv_bfloat16* out, std::size_t n, cudaStream_t stream) {
  detail::narrow("gpu::to_bf16", in, out, n, stream);
}

/// out[i] = fp16(in[i]) for i < n (device memory, asynchronous on `stream`); overflow gives +-Inf.
inline void to_fp16(const float* in, __half* out, std::size_t n, cudaStream_t stream) {
  detail::narrow("gpu::to_fp16", in, out, n, stream);
}

/// The overload for either 16-bit storage type (the model's compute copies).
inline void to_storage(const float* in, __nv_bfloat16* out, std::size_t n, cudaStream_t stream) {
  to_bf16(in, out, n, stream);
}
inline void to_storage(const float* in, __half* out, std::size_t n, cudaStream_t stream) {
  to_fp16(in, out, n, stream);
}

}  // namespace reason::gpu
