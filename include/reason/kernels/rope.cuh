// reason/kernels/rope.cuh — rotary position embedding on the GPU, forward and backward, in place.
//
// The contract of kernels/rope.hpp on device views, with a cudaStream_t last: x[n, h, :] rotates
// plane i = the pair (i, i + D/2) by pos[n] * theta^(-2i/D) (GPT-NeoX / Llama rotate_half); the
// backward is the inverse rotation applied in place to the gradient. x may have any strides (q and
// k are column blocks of the fused qkv buffer: [N, H, D] with strides {(H + 2 Hkv) D, D, 1}); pos
// may have any stride (0 for every row at one position, as in decoding).
//
// DeviceRopeTable holds the cos / sin of a host kernels::RopeTable<float> — angles computed once
// in double and rounded to float — so host and device rotate a position by the same numbers, in
// fp32 for every storage type T (float, __nv_bfloat16 or __half). The rotation is written with __fmul_rn /
// __fsub_rn / __fadd_rn in the host's order (a c - b s, a s + b c): no FMA contraction, so in fp32
// it is the host's result bit for bit, and in bf16 / fp16 the rounding of the host's fp32 result.
//
// Design: one thread per (row, head, plane), consecutive threads on consecutive planes (coalesced
// when the innermost stride is 1); grid x: H * D/2 planes, y: rows (grid-stride past 65535).
// Positions live on the device, so they cannot be checked before the launch without a copy: a
// row whose position is outside [0, max_positions) is left untouched (as the host leaves x when
// it throws), and gpu::check_positions (which synchronises) names the first such row.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>
#include <span>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/device_util.cuh"
#include "reason/kernels/rope.hpp"

namespace reason::gpu {

/// The cos / sin table [max_positions, head_dim / 2] in fp32 on the device.
class DeviceRopeTable {
 public:
  /// A device copy of `host` (synchronous).
  explicit DeviceRopeTable(const kernels::RopeTable<float>& host)
      : max_positions_(host.max_positions()),
        head_dim_(host.head_dim()),
        cos_(static_cast<std::size_t>(host.max_positions()) * static_cast<std::size_t>(host.head_dim() / 2),
             "RopeTable cos"),
        sin_(cos_.size(), "RopeTable sin") {
    if (cos_.size() == 0) return;
    cos_.copy_from(std::span<const float>(host.cos_row(0), cos_.size()));
    sin_.copy_from(std::span<const float>(host.sin_row(0), sin_.size()));
  }
  DeviceRopeTable(index_t max_positions, int head_dim, double theta = 10000.0)
      : DeviceRopeTable(kernels::RopeTable<float>(max_positions, head_dim, theta)) {}

  [[nodiscard]] index_t max_positions() const { return max_positions_; }
  [[nodiscard]] int head_dim() const { return head_dim_; }
  [[nodiscard]] const float* cos_data() const { return cos_.data(); }
  [[nodiscard]] const float* sin_data() const { return sin_.data(); }

 private:
  index_t max_positions_;
  int head_dim_;
  DeviceBuffer<float> cos_, sin_;  // [max_positions, head_dim / 2]
};

namespace detail {

inline constexpr int kRopeBlock = 256;

template <class T>
__global__ void __launch_bounds__(kRopeBlock)
    rope_kernel(T* x, index_t s0, index_t s1, index_t s2, index_t n, int heads, int half, const std::int32_t* pos,
                index_t spos, const float* cos_table, const float* sin_table, index_t max_positions, float sign) {
  const int q = static_cast<int>(blockIdx.x) * kRopeBlock + static_cast<int>(threadIdx.x);
  if (q >= heads * half) return;
  const int h = q / half, i = q - h * half;
  for (index_t r = blockIdx.y; r < n; r += gridDim.y) {
    const std::int32_t p = pos[r * spos];
    if (p < 0 || p >= max_positions) continue;  // left untouched; check_positions names it
    T* e = x + r * s0 + h * s1;
    const float a = to_f32(e[i * s2]), b = to_f32(e[(i + half) * s2]);
    const index_t t = static_cast<index_t>(p) * half + i;
    const float c = cos_table[t], si = sign * sin_table[t];
    e[i * s2] = from_f32<T>(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, si)));
    e[(i + half) * s2] = from_f32<T>(__fadd_rn(__fmul_rn(a, si), __fmul_rn(b, c)));
  }
}

template <class T>
void rope_apply(const char* fn, const DeviceRopeTable& table, View<const std::int32_t, 1> pos, View<T, 3> x,
                const char* xname, float sign, cudaStream_t stream) {
  static_assert(is_storage_v<T>, "gpu::rope: T is float, __nv_bfloat16 or __half");
  if (x.shape[0] != pos.shape[0] || x.shape[2] != table.head_dim()) [[unlikely]] {
    fail(fn, ": ", xname, ": shape ", shape_string(x.shape), ", expected ",
         shape_string({pos.shape[0], x.shape[1], table.head_dim()}), " (N from pos, D from the table)");
  }
  REASON_CHECK(pos.data != nullptr || pos.shape[0] == 0, fn, ": pos is empty (data is null)");
  REASON_CHECK(x.data != nullptr || x.numel() == 0, fn, ": ", xname, " is empty (data is null)");
  const index_t n = x.shape[0], heads = x.shape[1];
  const int half = table.head_dim() / 2;
  REASON_CHECK(heads * half <= std::numeric_limits<int>::max() - kRopeBlock, fn, ": ", heads, " heads of width ",
               table.head_dim(), " are too many for one launch");
  if (x.numel() == 0) return;
  const int planes = static_cast<int>(heads) * half;
  const dim3 grid(static_cast<unsigned>((planes + kRopeBlock - 1) / kRopeBlock), grid_rows(n));
  rope_kernel<T><<<grid, kRopeBlock, 0, stream>>>(x.data, x.stride[0], x.stride[1], x.stride[2], n,
                                                  static_cast<int>(heads), half, pos.data, pos.stride[0],
                                                  table.cos_data(), table.sin_data(), table.max_positions(), sign);
  REASON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail

/// Rotates x in place: x[n, h, :] by the angles of position pos[n] (device views, any strides).
///   pos [N] in [0, table.max_positions()); x [N, H, D], D == table.head_dim().
template <class T>
void rope_forward(const DeviceRopeTable& table, View<const std::int32_t, 1> pos, View<T, 3> x, cudaStream_t stream) {
  detail::rope_apply<T>("gpu::rope_forward", table, pos, x, "x", 1.0f, stream);
}

/// The backward of rope_forward, in place: dx <- R(pos)^T dx, the inverse rotation.
template <class T>
void rope_backward(const DeviceRopeTable& table, View<const std::int32_t, 1> pos, View<T, 3> dx,
                   cudaStream_t stream) {
  detail::rope_apply<T>("gpu::rope_backward", table, pos, dx, "dx", -1.0f, stream);
}

/// Throws, naming the first row, when a position on the device is outside [0, table.max_positions()).
/// Synchronises the stream (it copies the answer back): for debugging and tests, not the hot path.
inline void check_positions(const DeviceRopeTable& table, View<const std::int32_t, 1> pos, cudaStream_t stream,
                            const char* who = "gpu::rope") {
  const auto bad = detail::first_out_of_range(pos, 0, table.max_positions(), stream);
  if (bad.index >= 0) [[unlikely]] {
    fail(who, ": pos[", bad.index, "] = ", bad.value, " is out of range [0, ", table.max_positions(),
         ") of the RopeTable");
  }
}

}  // namespace reason::gpu
