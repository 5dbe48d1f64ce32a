// reason/kernels/quant_int4.cuh — quant::Int4Group<G, Sym> on the GPU: group-wise INT4 weights
// unpacked inside the K loop, float activations, fp32 accumulation.
//
// The contract of quant/int4.hpp (read its header comment): W [N, K] in groups of G = 32, 64 or 128
// consecutive columns of a row, 4-bit codes u with w = s (u - z); byte j of a row holds column 2j
// in its low nibble and 2j + 1 in its high nibble; scales [N, K / G] fp32; zero points [N, K / G]
// one byte each (asymmetric) or z = 8 (symmetric). DevicePacked<Int4Group<G, Sym>> is those three
// arrays uploaded as they are. The product y [M, N] = x [M, K] W^T never forms a dequantized W in
// memory; two kernels, chosen by M:
//
//   decode / small batch (M <= 16): int4_gemv_kernel<MR>. One warp per weight row n (8 rows to a
//     256-thread block), MR rows of x per block (grid.y covers M in steps of MR = 1, 2, 4 or 8).
//     Each lane reads 16 bytes of the row (32 codes, one coalesced 512-byte segment per warp and
//     step); since G >= 32 and the segment starts on a 32-column boundary its codes lie in one
//     group, so the lane loads one scale and one zero point. The codes are unpacked in registers
//     (u - z as a float: the exponent trick 2^23 + u, minus 2^23 + z, exact), dotted with the
//     32 matching x values of each of the MR rows (float4 loads where x allows them; x is small
//     and stays in L1/L2), and the group's partial p is added as acc = fma(s, p, acc) — the host's
//     "scale each group's partial sum" order. A butterfly shuffle sums the 32 lanes. The weight
//     bytes are read once per MR rows of x: for M = 1 the kernel streams W at memory speed.
//   prefill (M > 16): int4_tiled_kernel, a shared-memory GEMM tile of 64 (M) x 128 (N), K in steps
//     of 32 (inside one group, since G is a multiple of 32). Per step the block copies the x tile
//     (transposed, so a thread reads a column of it as a broadcast) and unpacks the 128 x 16 bytes
//     of W into a 32 x 128 float tile s (u - z): exactly the value quant::dequantize_int4 gives
//     (one rounding of s times a small integer), but only this tile, only in shared memory. Each
//     thread then accumulates 4 x 8 outputs with fp32 FMAs (the 8 columns as two float4 of
//     shared memory, 64 apart, so a warp's reads hit distinct banks).
// Numerics: fp32 throughout, sums in a fixed order (deterministic); against a float64 product of
// the dequantized operands the error is the usual |err| <= K 2^-24 sum_k |x_k w_k| of an fp32
// dot product (the test checks that bound, and the host's quant::matmul_int4 within twice it).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/quant_common.cuh"
#include "reason/quant/int4.hpp"

namespace reason::gpu::quant {

using reason::quant::Int4Group;

/// Non-owning group-wise INT4 weights on the device, as the kernels read them.
struct Int4Operand {
  index_t rows = 0, cols = 0;
  int group_shift = 0;                        // log2(G)
  const std::uint8_t* codes = nullptr;        // [rows, cols / 2]
  const float* scales = nullptr;              // [rows, cols / G]
  const std::uint8_t* zero_points = nullptr;  // [rows, cols / G]; null when symmetric (z = 8)
};

template <index_t G, reason::quant::Symmetry Sym>
struct DevicePacked<Int4Group<G, Sym>> {
  using policy = Int4Group<G, Sym>;
  index_t rows = 0, cols = 0;
  DeviceBuffer<std::uint8_t> codes;        // [rows, cols / 2], two codes per byte (quant/int4.hpp)
  DeviceBuffer<float> scales;              // [rows, cols / G]
  DeviceBuffer<std::uint8_t> zero_points;  // [rows, cols / G]; empty when symmetric

  /// Every byte stored (the host Int4Matrix::bytes()).
  [[nodiscard]] std::size_t bytes() const { return codes.bytes() + scales.bytes() + zero_points.bytes(); }
  [[nodiscard]] Int4Operand operand() const {
    return Int4Operand{.rows = rows,
                       .cols = cols,
                       .group_shift = G == 32 ? 5 : (G == 64 ? 6 : 7),
                       .codes = codes.data(),
                       .scales = scales.data(),
                       .zero_points = zero_points.size() == 0 ? nullptr : zero_points.data()};
  }

  /// The host packing, checked against the scheme and uploaded as it is.
  static DevicePacked upload(const reason::quant::Int4Matrix<G>& p) {
    const std::string fn = detail::fn_name<policy>("upload");
    if (p.rows < 0 || p.cols < 0 || p.cols % G != 0) [[unlikely]] {
      fail(fn, ": weight: shape [", p.rows, ", ", p.cols, "]: in features ", p.cols,
           " is not a multiple of the group size ", G);
    }
    const auto n_codes = static_cast<std::size_t>(p.rows * (p.cols / 2)),
               n_groups = static_cast<std::size_t>(p.rows * (p.cols / G));
    const bool sym = Sym == reason::quant::Symmetry::symmetric;
    REASON_CHECK(
        p.codes.size() == n_codes && p.scales.size() == n_groups && p.zero_points.size() == (sym ? 0 : n_groups), fn,
        ": weight [", p.rows, ", ", p.cols, "] has ", p.codes.size(), " code bytes, ", p.scales.size(), " scales and ",
        p.zero_points.size(), " zero points; expected ", n_codes, ", ", n_groups, " and ", sym ? 0 : n_groups,
        sym ? " (symmetric)" : " (asymmetric)");
    DevicePacked d;
    d.rows = p.rows;
    d.cols = p.cols;
    d.codes = detail::to_device(p.codes, "int4 weight codes", nullptr);
    d.scales = detail::to_device(p.scales, "int4 weight scales", nullptr);
    d.zero_points = detail::to_device(p.zero_points, "int4 weight zero points", nullptr);
    return d;
  }
};

namespace detail {

/// u - z for the 4-bit code in bits [shift, shift + 4) of `word`, with zf = 2^23 + z: the float
/// 2^23 + u (its mantissa holds u) minus zf, exact.
__device__ __forceinline__ float nibble_minus(std::uint32_t word, int shift, float zf) {
  return __fsub_rn(__uint_as_float(0x4B000000u | ((word >> shift) & 0xFu)), zf);
}

/// The 32 values u - z of 16 code bytes, in column order.
__device__ __forceinline__ void unpack32(const uint4& q, float zf, float (&w)[32]) {
  const std::uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      w[8 * i + 2 * j] = nibble_minus(words[i], 8 * j, zf);          // low nibble: column 2b
      w[8 * i + 2 * j + 1] = nibble_minus(words[i], 8 * j + 4, zf);  // high nibble: column 2b + 1
    }
}

/// s and 2^23 + z of weight row n, group g.
__device__ __forceinline__ float2 group_scale(const Int4Operand& w, index_t n, index_t g) {
  const index_t i = n * (w.cols >> w.group_shift) + g;
  constexpr float symmetric_z = reason::quant::Int4Matrix<32>::symmetric_zero_point;  // 8 for every group size
  const float z = w.zero_points != nullptr ? static_cast<float>(w.zero_points[i]) : symmetric_z;
  return make_float2(w.scales[i], 8388608.0f + z);
}

/// n0..n0+8 rows of W per 256-thread block, one a warp; MR rows of x per block (see the header).
template <int MR, bool XVEC>
__global__ void __launch_bounds__(256)
    int4_gemv_kernel(Int4Operand w, const float* x, index_t ldx, index_t M, float* y, index_t ldy) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t n = static_cast<index_t>(blockIdx.x) * 8 + static_cast<index_t>(threadIdx.x) / 32;
  const index_t m0 = static_cast<index_t>(blockIdx.y) * MR;
  if (n >= w.rows) return;
  const index_t row_bytes = w.cols / 2;
  const std::uint8_t* codes = w.codes + n * row_bytes;
  float acc[MR] = {};
  for (index_t b = static_cast<index_t>(lane) * 16; b < row_bytes; b += 32 * 16) {
    const uint4 q = *reinterpret_cast<const uint4*>(codes + b);
    const index_t c0 = 2 * b;  // the first of this lane's 32 columns
    const float2 sz = group_scale(w, n, c0 >> w.group_shift);
    float wv[32];
    unpack32(q, sz.y, wv);
#pragma unroll
    for (int r = 0; r < MR; ++r) {
      if (m0 + r >= M) break;
      const float* xr = x + (m0 + r) * ldx + c0;
      float p = 0.0f;
      if constexpr (XVEC) {
#pragma unroll
        for (int v = 0; v < 8; ++v) {
          const float4 xv = *reinterpret_cast<const float4*>(xr + 4 * v);
          p = fmaf(xv.x, wv[4 * v], p);
          p = fmaf(xv.y, wv[4 * v + 1], p);
          p = fmaf(xv.z, wv[4 * v + 2], p);
          p = fmaf(xv.w, wv[4 * v + 3], p);
        }
      } else {
#pragma unroll
        for (int c = 0; c < 32; ++c) p = fmaf(xr[c], wv[c], p);
      }
      acc[r] = fmaf(sz.x, p, acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < MR; ++r) {
    const float s = warp_reduce(acc[r], AddOp{});
    if (lane == 0 && m0 + r < M) y[(m0 + r) * ldy + n] = s;
  }
}

/// The prefill tile (see the header comment).
struct Int4Tile {
  static constexpr int bm = 64, bn = 128, bk = 32, threads = 256, tm = 4, tn = 8;
};

template <bool XVEC>
__global__ void __launch_bounds__(Int4Tile::threads)
    int4_tiled_kernel(Int4Operand w, const float* x, index_t ldx, index_t M, float* y, index_t ldy) {
  using T = Int4Tile;
  __shared__ float xs[T::bk][T::bm + 1];            // xs[k][m]; odd row length: conflict-free transposed stores
  __shared__ __align__(16) float ws[T::bk][T::bn];  // ws[k][n] = s (u - z)
  const index_t m0 = static_cast<index_t>(blockIdx.y) * T::bm, n0 = static_cast<index_t>(blockIdx.x) * T::bn;
  const int t = static_cast<int>(threadIdx.x), ty = t / 16, tx = t % 16;
  const index_t row_bytes = w.cols / 2;
  float acc[T::tm][T::tn] = {};
  // This thread's share of the tile loads: 8 x values (row xr, columns xc..xc+8), 8 code bytes (row wn, half wh).
  const int xr = t / 4, xc = (t % 4) * 8, wn = t / 2, wh = t % 2;
  for (index_t k0 = 0; k0 < w.cols; k0 += T::bk) {
    {
      const index_t m = m0 + xr;
      float v[8];
      if (m < M) {
        const float* src = x + m * ldx + k0 + xc;
        if constexpr (XVEC) {
          const float4 a = *reinterpret_cast<const float4*>(src), b = *reinterpret_cast<const float4*>(src + 4);
          v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) v[i] = src[i];
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) xs[xc + i][xr] = v[i];
    }
    {
      const index_t n = n0 + wn;
      if (n < w.rows) {
        const uint2 q = *reinterpret_cast<const uint2*>(w.codes + n * row_bytes + k0 / 2 + 8 * wh);
        const float2 sz = group_scale(w, n, k0 >> w.group_shift);
        const std::uint32_t words[2] = {q.x, q.y};
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int c = 16 * wh + 8 * i + 2 * j;
            ws[c][wn] = __fmul_rn(sz.x, nibble_minus(words[i], 8 * j, sz.y));
            ws[c + 1][wn] = __fmul_rn(sz.x, nibble_minus(words[i], 8 * j + 4, sz.y));
          }
      } else {
#pragma unroll
        for (int c = 0; c < 16; ++c) ws[16 * wh + c][wn] = 0.0f;
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < T::bk; ++k) {
      float a[T::tm];
#pragma unroll
      for (int i = 0; i < T::tm; ++i) a[i] = xs[k][ty * T::tm + i];
      const float4 b0 = *reinterpret_cast<const float4*>(&ws[k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&ws[k][64 + tx * 4]);
      const float b[T::tn] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < T::tm; ++i)
#pragma unroll
        for (int j = 0; j < T::tn; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < T::tm; ++i) {
    const index_t m = m0 + ty * T::tm + i;
    if (m >= M) break;
#pragma unroll
    for (int j = 0; j < T::tn; ++j) {
      const index_t n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
      if (n < w.rows) y[m * ldy + n] = acc[i][j];
    }
  }
}

/// The largest M the GEMV-shaped kernel takes (in passes of 8 rows); larger M goes to the tile.
inline constexpr index_t int4_gemv_max_rows = 16;

}  // namespace detail

/// y [M, N] = x [M, K] W^T: Int4Group<G, Sym>::matmul on the device (see the header comment).
/// Always our own kernels (cuBLASLt has no INT4 weight-only product).
template <index_t G, reason::quant::Symmetry Sym>
MatmulPath matmul(Workspace& ws, View<const float, 2> x, const DevicePacked<Int4Group<G, Sym>>& w, View<float, 2> y,
                  cudaStream_t stream) {
  (void)ws;  // no scratch, no cuBLASLt: the signature matches the other schemes'
  const std::string fn = detail::fn_name<Int4Group<G, Sym>>("matmul");
  detail::expect_product_views(fn, x, y, w.rows, w.cols);
  const index_t M = x.shape[0], N = w.rows;
  if (M == 0 || N == 0) return MatmulPath::own_kernel;
  const Int4Operand wo = w.operand();
  const index_t ldx = M > 1 ? x.stride[0] : w.cols, ldy = M > 1 ? y.stride[0] : N;
  const bool xvec = detail::rows_vectorizable(x);
  if (M <= detail::int4_gemv_max_rows) {
    const dim3 grid(static_cast<unsigned>(detail::ceil_div(N, 8)), static_cast<unsigned>(detail::ceil_div(M, 8)));
    auto launch = [&]<int MR>() {
      const dim3 g(grid.x, static_cast<unsigned>(detail::ceil_div(M, MR)));
      if (xvec)
        detail::int4_gemv_kernel<MR, true><<<g, 256, 0, stream>>>(wo, x.data, ldx, M, y.data, ldy);
      else
        detail::int4_gemv_kernel<MR, false><<<g, 256, 0, stream>>>(wo, x.data, ldx, M, y.data, ldy);
    };
    if (M == 1)
      launch.template operator()<1>();
    else if (M == 2)
      launch.template operator()<2>();
    else if (M <= 4)
      launch.template operator()<4>();
    else
      launch.template operator()<8>();
  } else {
    using T = detail::Int4Tile;
    const dim3 grid(static_cast<unsigned>(detail::ceil_div(N, T::bn)),
                    static_cast<unsigned>(detail::ceil_div(M, T::bm)));
    REASON_CHECK(grid.y <= 65535u, fn, ": x has ", M, " rows; the tiled kernel takes at most ", 65535 * T::bm);
    if (xvec)
      detail::int4_tiled_kernel<true><<<grid, T::threads, 0, stream>>>(wo, x.data, ldx, M, y.data, ldy);
    else
      detail::int4_tiled_kernel<false><<<grid, T::threads, 0, stream>>>(wo, x.data, ldx, M, y.data, ldy);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
  return MatmulPath::own_kernel;
}

}  // namespace reason::gpu::quant
