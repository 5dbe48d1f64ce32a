// reason/kernels/swiglu.cuh — the SwiGLU gate h = silu(g) * u and its backward on the GPU.
//
// The contract of kernels/swiglu.hpp on device views, with a cudaStream_t last. With
// s = sigmoid(g) = 1 / (1 + exp(-g)):
//   h = g * s * u;   dg = dh * u * s * (1 + g * (1 - s)),   du = dh * g * s   (both overwritten).
// Storage T is float, __nv_bfloat16 or __half, arithmetic fp32. Rows may be strided (g and u are the two
// column halves of the FFN's fused gate_up buffer); the innermost stride must be 1.
//
// Design: element-wise, one thread per 16-byte vector (4 floats / 8 bf16 or fp16) when every row
// pointer is aligned and F is a multiple of the vector, else one element a thread. The grid is
// x: column vectors, y: rows (grid-stride past 65535). Every thread reads all of its inputs before
// it writes, so dg or du may alias dh (or g / u) element for element, as on the host. The
// products are __fmul_rn / __fadd_rn in the host's order, so the only difference from the host in
// fp32 is expf (CUDA's is within 2 ulp) against the host's std::exp. exp(-g) overflows to +inf
// for g < -88, giving s = 0 without NaN, as on the host.
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

inline constexpr int kEltBlock = 256;

__device__ __forceinline__ float sigmoid_f32(float g) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g))); }

template <class T, int VEC>
__global__ void __launch_bounds__(kEltBlock)
    swiglu_forward_kernel(const T* g, index_t sg, const T* u, index_t su, T* h, index_t sh, index_t n, int f) {
  const int j = (static_cast<int>(blockIdx.x) * kEltBlock + static_cast<int>(threadIdx.x)) * VEC;
  if (j >= f) return;
  for (index_t r = blockIdx.y; r < n; r += gridDim.y) {
    float gv[VEC], uv[VEC], o[VEC];
    load_f32<VEC>(g + r * sg + j, gv);
    load_f32<VEC>(u + r * su + j, uv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = __fmul_rn(__fmul_rn(gv[k], sigmoid_f32(gv[k])), uv[k]);
    store_f32<VEC>(h + r * sh + j, o);
  }
}

template <class T, int VEC>
__global__ void __launch_bounds__(kEltBlock)
    swiglu_backward_kernel(const T* g, index_t sg, const T* u, index_t su, const T* dh, index_t sdh, T* dg,
                           index_t sdg, T* du, index_t sdu, index_t n, int f) {
  const int j = (static_cast<int>(blockIdx.x) * kEltBlock + static_cast<int>(threadIdx.x)) * VEC;
  if (j >= f) return;
  for (index_t r = blockIdx.y; r < n; r += gridDim.y) {
    float gv[VEC], uv[VEC], dv[VEC], og[VEC], ou[VEC];
    load_f32<VEC>(g + r * sg + j, gv);
    load_f32<VEC>(u + r * su + j, uv);
    load_f32<VEC>(dh + r * sdh + j, dv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float s = sigmoid_f32(gv[k]);
      const float slope = __fadd_rn(1.0f, __fmul_rn(gv[k], __fsub_rn(1.0f, s)));
      og[k] = __fmul_rn(__fmul_rn(__fmul_rn(dv[k], uv[k]), s), slope);
      ou[k] = __fmul_rn(__fmul_rn(dv[k], gv[k]), s);
    }
    store_f32<VEC>(dg + r * sdg + j, og);
    store_f32<VEC>(du + r * sdu + j, ou);
  }
}

inline dim3 elementwise_grid(index_t n, index_t f, int vec) {
  const index_t vectors = (f + vec - 1) / vec;
  return dim3(static_cast<unsigned>((vectors + kEltBlock - 1) / kEltBlock), grid_rows(n));
}

inline void check_width(const char* fn, index_t f) {
  REASON_CHECK(f <= std::numeric_limits<int>::max() - 8 * kEltBlock, fn, ": width F = ", f, " is too large");
}

}  // namespace detail

/// h = silu(g) * u.
template <class T>
void swiglu_forward(View<const T, 2> g,  // g: [N, F], gate pre-activation
                    View<const T, 2> u,  // u: [N, F], up projection
                    View<T, 2> h,        // h: [N, F]
                    cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::swiglu_forward: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::swiglu_forward";
  const index_t n = g.shape[0], f = g.shape[1];
  expect_view(g, fn, "g", {n, f});
  expect_view(u, fn, "u", {n, f});
  expect_view(h, fn, "h", {n, f});
  detail::check_width(fn, f);
  if (n == 0 || f == 0) return;
  constexpr int V = detail::vec16<T>;
  const int fi = static_cast<int>(f);
  if (detail::vec_ok(g, V) && detail::vec_ok(u, V) && detail::vec_ok(h, V)) {
    detail::swiglu_forward_kernel<T, V><<<detail::elementwise_grid(n, f, V), detail::kEltBlock, 0, stream>>>(
        g.data, g.stride[0], u.data, u.stride[0], h.data, h.stride[0], n, fi);
  } else {
    detail::swiglu_forward_kernel<T, 1><<<detail::elementwise_grid(n, f, 1), detail::kEltBlock, 0, stream>>>(
        g.data, g.stride[0], u.data, u.stride[0], h.data, h.stride[0], n, fi);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

/// dg = dh * u * silu'(g), du = dh * silu(g); both overwritten.
template <class T>
void swiglu_backward(View<const T, 2> g,   // g: [N, F]
                     View<const T, 2> u,   // u: [N, F]
                     View<const T, 2> dh,  // dh: [N, F]
                     View<T, 2> dg,        // dg: [N, F], overwritten
                     View<T, 2> du,        // du: [N, F], overwritten
                     cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::swiglu_backward: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::swiglu_backward";
  const index_t n = g.shape[0], f = g.shape[1];
  expect_view(g, fn, "g", {n, f});
  expect_view(u, fn, "u", {n, f});
  expect_view(dh, fn, "dh", {n, f});
  expect_view(dg, fn, "dg", {n, f});
  expect_view(du, fn, "du", {n, f});
  detail::check_width(fn, f);
  if (n == 0 || f == 0) return;
  constexpr int V = detail::vec16<T>;
  const int fi = static_cast<int>(f);
  if (detail::vec_ok(g, V) && detail::vec_ok(u, V) && detail::vec_ok(dh, V) && detail::vec_ok(dg, V) &&
      detail::vec_ok(du, V)) {
    detail::swiglu_backward_kernel<T, V><<<detail::elementwise_grid(n, f, V), detail::kEltBlock, 0, stream>>>(
        g.data, g.stride[0], u.data, u.stride[0], dh.data, dh.stride[0], dg.data, dg.stride[0], du.data, du.stride[0],
        n, fi);
  } else {
    detail::swiglu_backward_kernel<T, 1><<<detail::elementwise_grid(n, f, 1), detail::kEltBlock, 0, stream>>>(
        g.data, g.stride[0], u.data, u.stride[0], dh.data, dh.stride[0], dg.data, dg.stride[0], du.data, du.stride[0],
        n, fi);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace reason::gpu
