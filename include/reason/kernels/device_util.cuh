// reason/kernels/device_util.cuh — the small pieces the element-wise CUDA kernels share.
//
//   storage types     float, __nv_bfloat16 or __half; arithmetic always in fp32 (to_f32 / from_f32,
//                     the latter rounding to nearest even exactly like the host reason::bf16(float) /
//                     reason::fp16(float): __float2bfloat16_rn / __float2half_rn, and for fp16 a
//                     magnitude >= 65520 becomes Inf, never the largest finite value — an overflow
//                     stays visible, which fp16 loss scaling relies on).
//   pack2_rn<T>       two floats as one 32-bit word of a 16-bit storage type (the same rounding).
//   Pack<T, N>        N elements in one aligned load or store (16 bytes: float4-sized or 8 bf16 / fp16).
//   vec_ok            whether a view may be read VEC elements at a time: base pointer aligned to
//                     VEC elements, every leading stride a multiple of VEC, the row width too.
//   warp_sum          butterfly shuffle sum: a fixed order, so the same inputs give the same bits.
//   first_out_of_range  the first index of a device int32 vector outside [lo, hi) (or -1) — the
//                     host-side check behind gpu::check_tokens / gpu::check_positions; it copies
//                     one number back, so it synchronises the stream (a debugging aid, not a hot path).
// Host code here throws reason::Error; device code never does.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"

namespace reason::gpu::detail {

/// The 16-bit storage types (fp32 arithmetic on them; fragments of two in one 32-bit register).
template <class T>
inline constexpr bool is_half_storage_v = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
template <class T>
inline constexpr bool is_storage_v = std::is_same_v<T, float> || is_half_storage_v<T>;

template <class T>
__device__ __forceinline__ float to_f32(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(x);
  } else {
    return __half2float(x);
  }
}

template <class T>
__device__ __forceinline__ T from_f32(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    return __float2half_rn(x);  // nearest even; |x| >= 65520 -> Inf (as the host reason::fp16)
  }
}

/// {lo, hi} rounded to T (nearest even, as from_f32) in one 32-bit word, lo in the low half.
template <class T>
__device__ __forceinline__ unsigned pack2_rn(float lo, float hi) {
  static_assert(is_half_storage_v<T>, "pack2_rn: T is __nv_bfloat16 or __half");
  unsigned r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    std::memcpy(&r, &v, sizeof r);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    std::memcpy(&r, &v, sizeof r);
  }
  return r;
}

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// out[i] = float(p[i]) for i < N; p aligned to N elements.
template <int N, class T>
__device__ __forceinline__ void load_f32(const T* p, float (&out)[N]) {
  const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_f32(pk.v[i]);
}

/// p[i] = T(in[i]) for i < N; p aligned to N elements.
template <int N, class T>
__device__ __forceinline__ void store_f32(T* p, const float (&in)[N]) {
  Pack<T, N> pk;
#pragma unroll
  for (int i = 0; i < N; ++i) pk.v[i] = from_f32<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

/// Elements in one 16-byte access.
template <class T>
inline constexpr int vec16 = static_cast<int>(16 / sizeof(T));

/// Whether `v` can be accessed `vec` elements at a time (see the header comment).
template <class T, int Rank>
bool vec_ok(const View<T, Rank>& v, int vec) {
  if (v.data == nullptr) return true;  // an absent optional argument does not decide
  if (reinterpret_cast<std::uintptr_t>(v.data) % (sizeof(T) * static_cast<std::size_t>(vec)) != 0) return false;
  if (v.shape[Rank - 1] % vec != 0) return false;
  if (v.shape[Rank - 1] > 1 && v.stride[Rank - 1] != 1) return false;
  for (int d = 0; d < Rank - 1; ++d)
    if (v.shape[d] > 1 && v.stride[d] % vec != 0) return false;
  return true;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Grid rows (y) for a grid-stride loop over `n` rows: CUDA allows at most 65535.
inline unsigned grid_rows(index_t n) { return static_cast<unsigned>(n < 65535 ? (n < 1 ? 1 : n) : 65535); }

// A template, so that the header can be included by several translation units of one program.
template <class I>
__global__ void first_out_of_range_kernel(const I* v, index_t stride, index_t n, std::int64_t lo,
                                          std::int64_t hi, unsigned long long* first) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::int64_t x = v[i * stride];
  if (x < lo || x >= hi) atomicMin(first, static_cast<unsigned long long>(i));
}

/// The first index i with v(i) outside [lo, hi), and that value; index -1 when all are inside.
struct OutOfRange {
  index_t index = -1;
  std::int32_t value = 0;
};
inline OutOfRange first_out_of_range(View<const std::int32_t, 1> v, std::int64_t lo, std::int64_t hi,
                                     cudaStream_t stream) {
  OutOfRange r;
  const index_t n = v.shape[0];
  if (n == 0) return r;
  DeviceBuffer<unsigned long long> first(1, "first_out_of_range");
  const unsigned long long none = ~0ull;
  REASON_CUDA_CHECK(cudaMemsetAsync(first.data(), 0xFF, sizeof none, stream));  // every bit set: `none`
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  first_out_of_range_kernel<std::int32_t><<<blocks, 256, 0, stream>>>(v.data, v.stride[0], n, lo, hi, first.data());
  REASON_CUDA_CHECK(cudaGetLastError());
  unsigned long long idx = none;
  REASON_CUDA_CHECK(cudaMemcpyAsync(&idx, first.data(), sizeof idx, cudaMemcpyDeviceToHost, stream));
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (idx == none) return r;
  r.index = static_cast<index_t>(idx);
  REASON_CUDA_CHECK(cudaMemcpyAsync(&r.value, v.data + r.index * v.stride[0], sizeof r.value, cudaMemcpyDeviceToHost,
                                    stream));
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
  return r;
}

}  // namespace reason::gpu::detail
