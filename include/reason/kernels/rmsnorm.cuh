// reason/kernels/rmsnorm.cuh — RMSNorm forward / backward on the GPU, and the fused residual add.
//
// The contract of kernels/rmsnorm.hpp (same argument order, shapes and formulas) on device views,
// with a cudaStream_t last:
//   rstd[n] = 1 / sqrt(mean_c x[n, c]^2 + eps),   y[n, c] = x[n, c] * rstd[n] * weight[c];
//   dx[n, c] = rstd * dy * weight - (rstd^3 / C) (sum_c' dy * weight * x) x[n, c]   (overwritten),
//   dweight[c] += sum_n dy[n, c] * x[n, c] * rstd[n]                                  (accumulated).
// add_rmsnorm_forward fuses the residual stream's update with the next norm:
//   residual += branch (rounded to T, as a separate add would store it), y = rmsnorm(residual).
// Storage T is float, __nv_bfloat16 or __half; all arithmetic is fp32 and rstd is saved in fp32 (a
// View<float, 1>; empty at inference). dweight may be T or float (fp32 gradient buffers).
//
// Design:
//   * A row is reduced by one warp when C <= 1024 (8 rows to a 256-thread block) and by one
//     256-thread block when C > 1024 (any C works; C = 8192 is 32 elements a thread). Partial sums
//     are per thread in fp32, then a butterfly shuffle and, for a block, a fixed-order sum of the
//     8 warp sums: the order depends only on C and on whether the rows allow 16-byte access, so
//     a call is bitwise reproducible.
//   * 16-byte loads / stores (float4, or 8 bf16 / fp16) when every row pointer is 16-byte aligned and C
//     is a multiple of the vector; scalar otherwise. Each thread touches the same elements in both
//     passes, so y may alias x and dx may alias dy, as on the host.
//   * The per-row scalars follow the host: rstd = float(1 / sqrt(double(ss) / C + eps)) and
//     k = float(double(dot) rstd^3 / C) in double; the element-wise products use __fmul_rn /
//     __fsub_rn in the host's order, so given the same row sums a float result is the host's bit
//     for bit. Only the row sums differ: fp32 tree (device) against double (host).
//   * dweight is a column reduction over N rows: one 32x16 block per 32 columns, warp y walks rows
//     y, y + 16, ..., then the 16 partials are summed in order. No atomics: deterministic. It runs
//     before the dx kernel on the stream, so dx may alias dy.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

/// Threads that reduce one row of width c (the test derives its error bound from it).
inline int rmsnorm_threads_per_row(index_t c) { return c <= 1024 ? 32 : 256; }

namespace detail {

inline constexpr int kNormBlock = 256;

/// The norm weight's elements [j, j + VEC) as fp32: one vector load where the weight is contiguous
/// and aligned (VEC > 1), else a strided scalar read.
template <int VEC, class T>
__device__ __forceinline__ void load_weight(const T* w, index_t sw, int j, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_f32(w[j * sw]);
  } else {
    load_f32<VEC>(w + j, out);
  }
}

// Sum of v over the WPR warps that share a row. Every thread of the block must call it.
template <int WPR>
__device__ __forceinline__ float row_sum(float v, float* red) {
  v = warp_sum(v);
  if constexpr (WPR == 1) {
    return v;
  } else {
    const int warp = static_cast<int>(threadIdx.x) / 32;
    if (threadIdx.x % 32 == 0) red[warp] = v;
    __syncthreads();
    const int first = warp / WPR * WPR;
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < WPR; ++w) s += red[first + w];
    return s;
  }
}

// RESIDUAL: xw (== x) += branch first, and the row is normalised as stored.
template <class T, int VEC, int WPR, bool RESIDUAL>
__global__ void __launch_bounds__(kNormBlock)
    rmsnorm_forward_kernel(const T* x, T* xw, index_t sx, const T* branch, index_t sb, const T* w, index_t sw,
                           float eps, T* y, index_t sy, float* rstd, index_t srstd, index_t n, int c) {
  constexpr int kRows = (kNormBlock / 32) / WPR, kThreads = 32 * WPR;
  __shared__ float red[kNormBlock / 32];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int t = (warp % WPR) * 32 + static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * kRows + warp / WPR;
  const bool active = row < n;
  float ss = 0.0f;
  if (active) {
    const T* xr = x + row * sx;
    for (int j = t * VEC; j < c; j += kThreads * VEC) {
      float v[VEC];
      load_f32<VEC>(xr + j, v);
      if constexpr (RESIDUAL) {
        float b[VEC];
        load_f32<VEC>(branch + row * sb + j, b);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] = to_f32(from_f32<T>(__fadd_rn(v[k], b[k])));
        store_f32<VEC>(xw + row * sx + j, v);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) ss = fmaf(v[k], v[k], ss);
    }
  }
  ss = row_sum<WPR>(ss, red);
  if (!active) return;  // after the block's last barrier
  const double mean = static_cast<double>(ss) / static_cast<double>(c > 1 ? c : 1);
  const float s = static_cast<float>(1.0 / sqrt(mean + static_cast<double>(eps)));
  if (rstd != nullptr && t == 0) rstd[row * srstd] = s;
  const T* xr = x + row * sx;  // in the residual case: this thread's own stores, read back
  T* yr = y + row * sy;
  for (int j = t * VEC; j < c; j += kThreads * VEC) {
    float v[VEC], wv[VEC], o[VEC];
    load_f32<VEC>(xr + j, v);
    load_weight<VEC>(w, sw, j, wv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = __fmul_rn(__fmul_rn(v[k], s), wv[k]);
    store_f32<VEC>(yr + j, o);
  }
}

template <class T, int VEC, int WPR>
__global__ void __launch_bounds__(kNormBlock)
    rmsnorm_backward_dx_kernel(const T* x, index_t sx, const T* w, index_t sw, const float* rstd, index_t srstd,
                               const T* dy, index_t sdy, T* dx, index_t sdx, index_t n, int c) {
  constexpr int kRows = (kNormBlock / 32) / WPR, kThreads = 32 * WPR;
  __shared__ float red[kNormBlock / 32];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int t = (warp % WPR) * 32 + static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * kRows + warp / WPR;
  const bool active = row < n;
  const T* xr = x + (active ? row : 0) * sx;
  const T* gr = dy + (active ? row : 0) * sdy;
  float dot = 0.0f;  // sum_c dy * weight * x
  if (active) {
    for (int j = t * VEC; j < c; j += kThreads * VEC) {
      float v[VEC], g[VEC], wv[VEC];
      load_f32<VEC>(xr + j, v);
      load_f32<VEC>(gr + j, g);
      load_weight<VEC>(w, sw, j, wv);
#pragma unroll
      for (int k = 0; k < VEC; ++k) dot = fmaf(g[k] * wv[k], v[k], dot);
    }
  }
  dot = row_sum<WPR>(dot, red);
  if (!active) return;
  const float s = rstd[row * srstd];
  const double sd = s;
  const float kk = static_cast<float>(static_cast<double>(dot) * sd * sd * sd / static_cast<double>(c > 1 ? c : 1));
  T* dr = dx + row * sdx;
  for (int j = t * VEC; j < c; j += kThreads * VEC) {
    float v[VEC], g[VEC], wv[VEC], o[VEC];
    load_f32<VEC>(xr + j, v);
    load_f32<VEC>(gr + j, g);
    load_weight<VEC>(w, sw, j, wv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = __fsub_rn(__fmul_rn(__fmul_rn(s, g[k]), wv[k]), __fmul_rn(kk, v[k]));
    store_f32<VEC>(dr + j, o);
  }
}

inline constexpr int kDwCols = 32, kDwRows = 16;

template <class T, class G>
__global__ void __launch_bounds__(kDwCols * kDwRows)
    rmsnorm_backward_dw_kernel(const T* x, index_t sx, const float* rstd, index_t srstd, const T* dy, index_t sdy,
                               G* dw, index_t sdw, index_t n, int c) {
  __shared__ float part[kDwRows][kDwCols + 1];
  const int j = static_cast<int>(blockIdx.x) * kDwCols + static_cast<int>(threadIdx.x);
  float acc = 0.0f;
  if (j < c) {
    for (index_t r = threadIdx.y; r < n; r += kDwRows)
      acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(to_f32(dy[r * sdy + j]), to_f32(x[r * sx + j])), rstd[r * srstd]));
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < c) {
    float total = 0.0f;
#pragma unroll
    for (int r = 0; r < kDwRows; ++r) total = __fadd_rn(total, part[r][threadIdx.x]);
    dw[j * sdw] = from_f32<G>(__fadd_rn(to_f32(dw[j * sdw]), total));
  }
}

template <class T, int VEC, bool RESIDUAL>
void launch_rmsnorm_forward(const T* x, T* xw, index_t sx, const T* branch, index_t sb, const T* w, index_t sw,
                            float eps, T* y, index_t sy, float* rstd, index_t srstd, index_t n, int c,
                            cudaStream_t stream) {
  if (c <= 1024) {
    const auto blocks = static_cast<unsigned>((n + 7) / 8);
    rmsnorm_forward_kernel<T, VEC, 1, RESIDUAL>
        <<<blocks, kNormBlock, 0, stream>>>(x, xw, sx, branch, sb, w, sw, eps, y, sy, rstd, srstd, n, c);
  } else {
    rmsnorm_forward_kernel<T, VEC, 8, RESIDUAL><<<static_cast<unsigned>(n), kNormBlock, 0, stream>>>(
        x, xw, sx, branch, sb, w, sw, eps, y, sy, rstd, srstd, n, c);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

template <class T, int VEC>
void launch_rmsnorm_backward_dx(const T* x, index_t sx, const T* w, index_t sw, const float* rstd, index_t srstd,
                                const T* dy, index_t sdy, T* dx, index_t sdx, index_t n, int c, cudaStream_t stream) {
  if (c <= 1024) {
    const auto blocks = static_cast<unsigned>((n + 7) / 8);
    rmsnorm_backward_dx_kernel<T, VEC, 1>
        <<<blocks, kNormBlock, 0, stream>>>(x, sx, w, sw, rstd, srstd, dy, sdy, dx, sdx, n, c);
  } else {
    rmsnorm_backward_dx_kernel<T, VEC, 8>
        <<<static_cast<unsigned>(n), kNormBlock, 0, stream>>>(x, sx, w, sw, rstd, srstd, dy, sdy, dx, sdx, n, c);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

inline void check_rows(const char* fn, index_t n, index_t c) {
  REASON_CHECK(c <= std::numeric_limits<int>::max(), fn, ": width C = ", c, " exceeds ",
               std::numeric_limits<int>::max());
  REASON_CHECK(n <= std::numeric_limits<int>::max(), fn, ": N = ", n, " rows exceed ",
               std::numeric_limits<int>::max(), " (one block per row)");
}

template <class T>
void rmsnorm_forward_impl(const char* fn, View<const T, 2> x, T* xw, View<const T, 2> branch,
                          View<const T, 1> weight, float eps, View<T, 2> y, View<float, 1> rstd,
                          cudaStream_t stream) {
  static_assert(is_storage_v<T>, "gpu::rmsnorm: T is float, __nv_bfloat16 or __half");
  const index_t n = x.shape[0], c = x.shape[1];
  expect_view(x, fn, xw != nullptr ? "residual" : "x", {n, c});
  if (xw != nullptr) expect_view(branch, fn, "branch", {n, c});
  expect_view(weight, fn, "weight", {c});
  expect_view(y, fn, "y", {n, c});
  if (rstd.data != nullptr) expect_view(rstd, fn, "rstd", {n});
  REASON_CHECK(eps >= 0.0f, fn, ": eps = ", eps, ", expected eps >= 0");
  check_rows(fn, n, c);
  if (n == 0) return;
  constexpr int V = vec16<T>;
  const bool vec = vec_ok(x, V) && vec_ok(y, V) && (xw == nullptr || vec_ok(branch, V)) && vec_ok(weight, V);
  const T* b = xw != nullptr ? branch.data : nullptr;
  const index_t sb = xw != nullptr ? branch.stride[0] : 0;
  const int ci = static_cast<int>(c);
  if (xw != nullptr) {
    if (vec)
      launch_rmsnorm_forward<T, V, true>(x.data, xw, x.stride[0], b, sb, weight.data, weight.stride[0], eps, y.data,
                                         y.stride[0], rstd.data, rstd.stride[0], n, ci, stream);
    else
      launch_rmsnorm_forward<T, 1, true>(x.data, xw, x.stride[0], b, sb, weight.data, weight.stride[0], eps, y.data,
                                         y.stride[0], rstd.data, rstd.stride[0], n, ci, stream);
  } else {
    if (vec)
      launch_rmsnorm_forward<T, V, false>(x.data, nullptr, x.stride[0], nullptr, 0, weight.data, weight.stride[0], eps,
                                          y.data, y.stride[0], rstd.data, rstd.stride[0], n, ci, stream);
    else
      launch_rmsnorm_forward<T, 1, false>(x.data, nullptr, x.stride[0], nullptr, 0, weight.data, weight.stride[0], eps,
                                          y.data, y.stride[0], rstd.data, rstd.stride[0], n, ci, stream);
  }
}

}  // namespace detail

/// y = x * rstd * weight; rstd[n] (fp32) written when rstd is non-empty. Device views; y may alias x.
template <class T>
void rmsnorm_forward(View<const T, 2> x,       // x: [N, C]
                     View<const T, 1> weight,  // weight: [C]
                     float eps,                // eps >= 0
                     View<T, 2> y,             // y: [N, C]
                     View<float, 1> rstd,      // rstd: [N] fp32, saved for backward; empty at inference
                     cudaStream_t stream) {
  detail::rmsnorm_forward_impl<T>("gpu::rmsnorm_forward", x, nullptr, View<const T, 2>{}, weight, eps, y, rstd,
                                  stream);
}

/// residual += branch (stored in T), then y = rmsnorm(residual) of the stored values.
template <class T>
void add_rmsnorm_forward(View<T, 2> residual,       // residual: [N, C], updated in place
                         View<const T, 2> branch,   // branch: [N, C], the sub-layer's output
                         View<const T, 1> weight,   // weight: [C]
                         float eps,                 // eps >= 0
                         View<T, 2> y,              // y: [N, C]
                         View<float, 1> rstd,       // rstd: [N] fp32, or empty
                         cudaStream_t stream) {
  detail::rmsnorm_forward_impl<T>("gpu::add_rmsnorm_forward", View<const T, 2>(residual), residual.data, branch,
                                  weight, eps, y, rstd, stream);
}

/// dx overwritten (may alias dy); dweight (T or float) += sum_n dy * x * rstd, deterministically.
template <class T, class G>
void rmsnorm_backward(View<const T, 2> x,         // x: [N, C], the forward input
                      View<const T, 1> weight,    // weight: [C]
                      View<const float, 1> rstd,  // rstd: [N], from rmsnorm_forward
                      View<const T, 2> dy,        // dy: [N, C]
                      View<T, 2> dx,              // dx: [N, C], overwritten
                      View<G, 1> dweight,         // dweight: [C], accumulated
                      cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::rmsnorm_backward: T is float, __nv_bfloat16 or __half");
  static_assert(std::is_same_v<G, T> || std::is_same_v<G, float>, "gpu::rmsnorm_backward: dweight is T or float");
  constexpr const char* fn = "gpu::rmsnorm_backward";
  const index_t n = x.shape[0], c = x.shape[1];
  expect_view(x, fn, "x", {n, c});
  expect_view(weight, fn, "weight", {c});
  expect_view(rstd, fn, "rstd", {n});
  expect_view(dy, fn, "dy", {n, c});
  expect_view(dx, fn, "dx", {n, c});
  expect_view(dweight, fn, "dweight", {c});
  detail::check_rows(fn, n, c);
  if (n == 0 || c == 0) return;
  const int ci = static_cast<int>(c);
  // dweight first: dx may alias dy, dweight still needs dy.
  const dim3 dw_block(detail::kDwCols, detail::kDwRows);
  const auto dw_blocks = static_cast<unsigned>((c + detail::kDwCols - 1) / detail::kDwCols);
  detail::rmsnorm_backward_dw_kernel<T, G><<<dw_blocks, dw_block, 0, stream>>>(
      x.data, x.stride[0], rstd.data, rstd.stride[0], dy.data, dy.stride[0], dweight.data, dweight.stride[0], n, ci);
  REASON_CUDA_CHECK(cudaGetLastError());
  constexpr int V = detail::vec16<T>;
  const bool vec = detail::vec_ok(x, V) && detail::vec_ok(dy, V) && detail::vec_ok(dx, V) && detail::vec_ok(weight, V);
  if (vec)
    detail::launch_rmsnorm_backward_dx<T, V>(x.data, x.stride[0], weight.data, weight.stride[0], rstd.data,
                                             rstd.stride[0], dy.data, dy.stride[0], dx.data, dx.stride[0], n, ci,
                                             stream);
  else
    detail::launch_rmsnorm_backward_dx<T, 1>(x.data, x.stride[0], weight.data, weight.stride[0], rstd.data,
                                             rstd.stride[0], dy.data, dy.stride[0], dx.data, dx.stride[0], n, ci,
                                             stream);
}

}  // namespace reason::gpu
