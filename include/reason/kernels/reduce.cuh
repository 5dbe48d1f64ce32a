// reason/kernels/reduce.cuh — the global gradient L2 norm and the clip, on the GPU.
//
// train::clip_grad_norm (train/clip.hpp, over kernels/reduce.hpp) on device memory:
//   norm = sqrt(sum_i g_i^2);   if (max_norm > 0 && norm > max_norm) g *= T(max_norm / (norm + 1e-6));
// and the norm (before clipping) comes back to the host. Gradients are fp32, bf16 (__nv_bfloat16) or
// fp16 (__half).
//
// Design choices:
// * Precision: every square is taken in double (exact: a float's 24-bit significand squared fits
//   in 53 bits) and summed in double, as the host does. The terms are all >= 0, so there is no
//   cancellation: each sum is within (terms per path) * 2^-53 relative of the exact one, far below
//   1e-9 for any buffer that fits on a GPU; the device and host sums differ only by that (their
//   orders differ), and the norm (a square root) by half as much.
// * Order: two passes with CUB's BlockReduce (cub::BlockReduce<double, ...>, a fixed tree). Pass 1
//   cuts the buffer into fixed chunks of norm_chunk elements, one block each (the grid depends on
//   the size only, never on the GPU's SM count); each thread adds its elements in a fixed order,
//   float4 / 4 x bf16 / 4 x fp16 loads where the buffer is aligned to 4 elements. Pass 2, one
//   block, adds the chunk partials in a fixed order and takes the square root. So the norm is
//   bit-identical from run to run and across GPUs for the same size and alignment — data-parallel
//   ranks clip alike.
// * The clip decision and factor are taken on the device by pass 2 from the device's own norm,
//   with the host's expression in double and the factor rounded to float as the host rounds it to
//   T; the scale kernel reads them from device memory, so clipping needs no host round trip before
//   it. One 8-byte copy (and a stream synchronisation) brings the norm back at the end.
// * Non-finite gradients behave as on the host: a NaN makes the norm NaN, and NaN > max_norm is
//   false, so nothing is scaled; an inf (and no NaN) makes the norm inf, the factor
//   max_norm / (inf + 1e-6) = 0, and the gradients are multiplied by 0 (finite ones become +-0,
//   infinite ones NaN) — exactly the host's arithmetic (the NaN bits may differ: CUDA's canonical
//   NaN is 0x7FFFFFFF, x86's 0xFFC00000).
// A GradNorm keeps the partials and the result in device memory; use one per stream.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

inline constexpr int norm_threads = 256;                    // pass 1 threads per block
inline constexpr int norm_final_threads = 1024;             // pass 2: one block
inline constexpr std::size_t norm_chunk = norm_threads * 4 * 16;  // elements per pass-1 partial (16 float4 a thread)

namespace detail {

template <class T>
__device__ __forceinline__ double square_of(T x) {
  const double d = static_cast<double>(to_f32(x));  // exact: every storage type widens exactly
  return __dmul_rn(d, d);
}

/// Pass 1: partial[c] = sum of squares over chunk c, in a fixed order. vec: x is 4-element aligned.
template <class T>
__global__ void __launch_bounds__(norm_threads)
    sum_squares_partial_kernel(const T* __restrict__ x, std::uint64_t n, double* __restrict__ partial, bool vec) {
  const std::uint64_t c = blockIdx.x;
  const std::uint64_t lo = c * norm_chunk;
  const std::uint64_t hi = lo + norm_chunk < n ? lo + norm_chunk : n;
  const auto tid = static_cast<std::uint64_t>(threadIdx.x);
  double acc = 0;
  if (vec) {
    const std::uint64_t b = lo + (hi - lo) / 4 * 4;  // lo is a multiple of 4 (norm_chunk is)
    for (std::uint64_t i = lo + 4 * tid; i < b; i += 4 * norm_threads) {
      if constexpr (std::is_same_v<T, float>) {
        const float4 q = *reinterpret_cast<const float4*>(x + i);
        acc = __dadd_rn(acc, square_of(q.x));
        acc = __dadd_rn(acc, square_of(q.y));
        acc = __dadd_rn(acc, square_of(q.z));
        acc = __dadd_rn(acc, square_of(q.w));
      } else {  // four 16-bit values in one 8-byte load
        const Pack<T, 4> q = *reinterpret_cast<const Pack<T, 4>*>(x + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) acc = __dadd_rn(acc, square_of(q.v[k]));
      }
    }
    if (tid < hi - b) acc = __dadd_rn(acc, square_of(x[b + tid]));
  } else {
    for (std::uint64_t i = lo + tid; i < hi; i += norm_threads) acc = __dadd_rn(acc, square_of(x[i]));
  }
  using Reduce = cub::BlockReduce<double, norm_threads>;
  __shared__ typename Reduce::TempStorage temp;
  const double sum = Reduce(temp).Sum(acc);
  if (threadIdx.x == 0) partial[c] = sum;
}

/// Pass 2: result[0] = sqrt(sum of partials); result[1] = the clip factor (as float, widened);
/// result[2] = 1 when the host's rule clips (max_norm > 0 && norm > max_norm), else 0.
/// (A template only so that the header can be included by several translation units of one program.)
template <int = 0>
__global__ void __launch_bounds__(norm_final_threads)
    norm_finalize_kernel(const double* __restrict__ partial, std::uint64_t count, double max_norm,
                         double* __restrict__ result) {
  double acc = 0;
  for (std::uint64_t i = threadIdx.x; i < count; i += norm_final_threads) acc = __dadd_rn(acc, partial[i]);
  using Reduce = cub::BlockReduce<double, norm_final_threads>;
  __shared__ typename Reduce::TempStorage temp;
  const double sum = Reduce(temp).Sum(acc);
  if (threadIdx.x == 0) {
    const double norm = __dsqrt_rn(sum);
    const bool clip = max_norm > 0 && norm > max_norm;
    result[0] = norm;
    result[1] = clip ? static_cast<double>(static_cast<float>(max_norm / (norm + 1e-6))) : 1.0;
    result[2] = clip ? 1.0 : 0.0;
  }
}

/// x[i] *= factor when result[2] says so (the factor a float, as the host's T(...) for T = float;
/// bf16 / fp16 values are scaled in float and rounded back to nearest even).
template <class T>
__global__ void clip_scale_kernel(T* __restrict__ x, std::uint64_t n, const double* __restrict__ result) {
  if (result[2] == 0.0) return;
  const float f = static_cast<float>(result[1]);
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t i = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    x[i] = from_f32<T>(__fmul_rn(to_f32(x[i]), f));
  }
}

}  // namespace detail

class GradNorm {
 public:
  GradNorm() = default;  // allocates on first use

  /// Enqueues the sum of squares, the norm and the clip decision of `x` (device memory) on
  /// `stream`; they land in device_result() (norm, factor, clips). max_norm <= 0: never clips.
  template <class T>
  void norm_async(std::span<const T> x, double max_norm, cudaStream_t stream) {
    static_assert(detail::is_storage_v<T>, "gpu::GradNorm: gradients are float, __nv_bfloat16 or __half");
    const std::size_t n = x.size();
    REASON_CHECK(n == 0 || x.data() != nullptr, "gpu::GradNorm: grads is a null pointer with ", n, " elements");
    const auto addr = reinterpret_cast<std::uintptr_t>(x.data());
    REASON_CHECK(addr % sizeof(T) == 0, "gpu::GradNorm: grads (", static_cast<const void*>(x.data()),
                 ") is not aligned to its element size");
    const std::size_t chunks = (n + norm_chunk - 1) / norm_chunk;
    REASON_CHECK(chunks < (std::size_t{1} << 31), "gpu::GradNorm: ", n, " elements is more than one pass handles");
    if (result_.size() == 0) result_ = DeviceBuffer<double>(3, "GradNorm result");
    if (partial_.size() < std::max<std::size_t>(chunks, 1))
      partial_ = DeviceBuffer<double>(std::max<std::size_t>(chunks, 1), "GradNorm partials");
    if (chunks > 0) {
      const bool vec = addr % (4 * sizeof(T)) == 0;
      detail::sum_squares_partial_kernel<T>
          <<<static_cast<unsigned>(chunks), norm_threads, 0, stream>>>(x.data(), n, partial_.data(), vec);
      REASON_CUDA_CHECK(cudaGetLastError());
    }
    detail::norm_finalize_kernel<><<<1, norm_final_threads, 0, stream>>>(partial_.data(), chunks, max_norm,
                                                                         result_.data());
    REASON_CUDA_CHECK(cudaGetLastError());
  }

  /// The global L2 norm of `x` (device memory); waits for `stream`.
  template <class T>
  double norm(std::span<const T> x, cudaStream_t stream) {
    norm_async<T>(x, 0.0, stream);
    return fetch_norm(stream);
  }

  /// train::clip_grad_norm on the device: scales `grads` in place so their global L2 norm is at
  /// most `max_norm` (<= 0: no clipping); returns the norm before clipping. Waits for `stream`.
  template <class T>
  double clip_grad_norm(std::span<T> grads, double max_norm, cudaStream_t stream) {
    norm_async<T>(std::span<const T>(grads.data(), grads.size()), max_norm, stream);
    const std::size_t n = grads.size();
    if (max_norm > 0 && n > 0) {
      const auto blocks = static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, std::size_t{1} << 16));
      detail::clip_scale_kernel<T><<<blocks, 256, 0, stream>>>(grads.data(), n, result_.data());
      REASON_CUDA_CHECK(cudaGetLastError());
    }
    return fetch_norm(stream);
  }

  /// Device memory: [0] the last norm, [1] its clip factor, [2] 1 if it clipped, else 0 (null
  /// before the first call).
  [[nodiscard]] const double* device_result() const { return result_.data(); }

 private:
  double fetch_norm(cudaStream_t stream) {
    double norm = 0;
    REASON_CUDA_CHECK(cudaMemcpyAsync(&norm, result_.data(), sizeof norm, cudaMemcpyDeviceToHost, stream));
    REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
    return norm;
  }

  DeviceBuffer<double> partial_;
  DeviceBuffer<double> result_;
};

}  // namespace reason::gpu
