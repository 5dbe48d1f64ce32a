// reason/kernels/convert.cuh — fp32 to bf16 over a flat buffer on the GPU (the compute copy of
// the master weights under precision::Bf16).
//
// out[i] = bf16(in[i]), round to nearest even (__float2bfloat16_rn, the host reason::bf16(float)'s
// rounding: tests/cuda/dtype_philox.cu checks the two agree bit for bit). 16-byte loads where both
// pointers allow it; a grid-stride loop, so any n works with a bounded grid.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"

namespace reason::gpu {

namespace detail {

template <bool VEC>
__global__ void __launch_bounds__(256) to_bf16_kernel(const float* in, __nv_bfloat16* out, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (VEC) {
    for (; 4 * i + 3 < n; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(in)[i];
      __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
      reinterpret_cast<__nv_bfloat162*>(out)[2 * i] = lo;
      reinterpret_cast<__nv_bfloat162*>(out)[2 * i + 1] = hi;
    }
    // the last n % 4 elements: one thread each
    const std::size_t tail = n / 4 * 4, t = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tail + t < n) out[tail + t] = __float2bfloat16_rn(in[tail + t]);
  } else {
    for (; i < n; i += stride) out[i] = __float2bfloat16_rn(in[i]);
  }
}

}  // namespace detail

/// out[i] = bf16(in[i]) for i < n (device memory, asynchronous on `stream`).
inline void to_bf16(const float* in, __nv_bfloat16* out, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  REASON_CHECK(in != nullptr && out != nullptr, "gpu::to_bf16: a null pointer for ", n, " elements");
  const bool vec = reinterpret_cast<std::uintptr_t>(in) % 16 == 0 && reinterpret_cast<std::uintptr_t>(out) % 8 == 0;
  const std::size_t work = vec ? (n + 3) / 4 : n;
  const auto blocks = static_cast<unsigned>(std::min<std::size_t>((work + 255) / 256, std::size_t{1} << 16));
  if (vec)
    detail::to_bf16_kernel<true><<<blocks, 256, 0, stream>>>(in, out, n);
  else
    detail::to_bf16_kernel<false><<<blocks, 256, 0, stream>>>(in, out, n);
  REASON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace reason::gpu
