// reason/kernels/residual.cuh — the residual stream's element-wise add on the GPU.
//
// The contract of kernels/residual.hpp's accumulate on device views, with a cudaStream_t last:
// y [N, C] += x [N, C], rows possibly strided, the innermost dimension unit-stride. Storage T is
// float, __nv_bfloat16 or __half; the sum is formed in fp32 and rounded once to T (__fadd_rn: in fp32 it
// is the host's result bit for bit). One thread per 16 bytes where every row allows it, else per
// element; grid y walks rows (grid-stride past 65535). (The forward's adds are fused into the
// next norm, gpu::add_rmsnorm_forward; this one serves the backward's d(residual) and decoding.)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <limits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

namespace detail {

inline constexpr int kAddBlock = 256;

template <class T, int VEC>
__global__ void __launch_bounds__(kAddBlock)
    accumulate_kernel(T* y, index_t sy, const T* x, index_t sx, index_t n, int c) {
  const int j = (static_cast<int>(blockIdx.x) * kAddBlock + static_cast<int>(threadIdx.x)) * VEC;
  if (j >= c) return;
  for (index_t r = blockIdx.y; r < n; r += gridDim.y) {
    float a[VEC], b[VEC];
    load_f32<VEC>(y + r * sy + j, a);
    load_f32<VEC>(x + r * sx + j, b);
#pragma unroll
    for (int k = 0; k < VEC; ++k) a[k] = __fadd_rn(a[k], b[k]);
    store_f32<VEC>(y + r * sy + j, a);
  }
}

}  // namespace detail

/// y [N, C] += x [N, C] (device views; x must not overlap y unless it is y itself).
template <class T>
void accumulate(View<T, 2> y, View<const T, 2> x, cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::accumulate: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::accumulate";
  const index_t n = y.shape[0], c = y.shape[1];
  expect_view(y, fn, "y", {n, c});
  expect_view(x, fn, "x", {n, c});
  REASON_CHECK(c <= std::numeric_limits<int>::max() - 8 * detail::kAddBlock, fn, ": width ", c, " is too large");
  REASON_CHECK(c <= 1 || (y.stride[1] == 1 && x.stride[1] == 1), fn, ": the innermost dimension must be unit-stride");
  if (n == 0 || c == 0) return;
  constexpr int V = detail::vec16<T>;
  const int ci = static_cast<int>(c);
  auto grid = [&](int vec) {
    const index_t vectors = (c + vec - 1) / vec;
    return dim3(static_cast<unsigned>((vectors + detail::kAddBlock - 1) / detail::kAddBlock), detail::grid_rows(n));
  };
  if (detail::vec_ok(y, V) && detail::vec_ok(x, V))
    detail::accumulate_kernel<T, V><<<grid(V), detail::kAddBlock, 0, stream>>>(y.data, y.stride[0], x.data, x.stride[0], n, ci);
  else
    detail::accumulate_kernel<T, 1><<<grid(1), detail::kAddBlock, 0, stream>>>(y.data, y.stride[0], x.data, x.stride[0], n, ci);
  REASON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace reason::gpu
