// reason/kernels/quant_int8.cuh — quant::Int8<S> on the GPU: int8 x int8 -> int32 on tensor cores.
//
// The contract of quant/int8.hpp on device memory (read its header comment: layout and formulas):
//   y[m, n] = float( double(s_x[m]) double(s_w[n]) double(total) ),
//   total   = A[m, n] - z_w[n] R_x[m] - z_x[m] R_w[n] + K z_x[m] z_w[n]   (int64),
//   A       = sum_k q_x[m, k] q_w[n, k]                                  (int32).
// Every step is exact but the last multiplication and the rounding to float, which the device does
// in the host's order with IEEE double (__dmul_rn, __double2float_rn): given the same codes, the
// int32 accumulators and the float outputs are the host's bit for bit.
//
// Pieces (each a call on a stream; tests check each against the host):
//   DevicePacked<Int8<S>>     DeviceInt8Matrix: the host Int8Matrix's arrays (codes [N, K] int8,
//                             scales [N] or [1], zero points like the scales or none, row sums [N]),
//                             uploaded as they are.
//   quantize_activations<S>   x [M, K] float -> Int8Operand in the workspace's scratch, bit for bit
//                             quantize_int8 (per-token or per-tensor grids, symmetric or affine):
//                             one 256-thread block per row takes the row's range (a fixed-order
//                             min / max tree; min and max are exact, so any order gives the host's),
//                             makes the grid, writes the codes and their int32 row sum. Per-tensor
//                             grids take the row ranges first, then one block reduces them.
//   int8_accumulate           acc [M, N] int32 = x_q w_q^T. cuBLASLt IMMA (CUDA_R_8I inputs,
//                             CUBLAS_COMPUTE_32I, CUDA_R_32I output) where its regular-order rules
//                             hold: "TN" (our W [N, K] row-major is its transposed A; our x its B),
//                             m = N and k = K multiples of 4, leading dimensions multiples of 4,
//                             pointers 4-byte aligned (16 for the faster kernels; the plan cache key
//                             holds the alignment). Elsewhere (or when the heuristic has no
//                             algorithm) a 64 x 64 tiled kernel of ours with int32 IMAD: the sums
//                             are exact integers, so both paths give the same bits.
//   int8_epilogue             acc -> y with the corrections and scales above, one thread an element.
//   matmul                    all three; the int32 accumulators are written into y's own storage
//                             (4-byte elements, same strides) and converted in place, so no [M, N]
//                             scratch is needed.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "reason/core/cublaslt_check.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/quant_common.cuh"
#include "reason/quant/int8.hpp"

namespace reason::gpu::quant {

using reason::quant::Int8;
using reason::quant::Int8Scheme;

/// A non-owning int8 matrix on the device, as the kernels read it (weights or activations).
struct Int8Operand {
  index_t rows = 0, cols = 0;
  const std::int8_t* codes = nullptr;  // [rows, ld]
  index_t ld = 0;
  const float* scales = nullptr;              // [rows] (scale_per_row) or [1]
  const std::int32_t* zero_points = nullptr;  // like scales (zero_per_row); null when symmetric
  const std::int32_t* row_sums = nullptr;     // [rows]
  bool scale_per_row = true, zero_per_row = true;

  [[nodiscard]] __device__ float scale(index_t r) const { return scales[scale_per_row ? r : 0]; }
  [[nodiscard]] __device__ std::int32_t zero_point(index_t r) const {
    return zero_points == nullptr ? 0 : zero_points[zero_per_row ? r : 0];
  }
  [[nodiscard]] bool symmetric() const { return zero_points == nullptr; }
};

/// The device copy of a host quant::Int8Matrix: the same arrays in the same layout.
struct DeviceInt8Matrix {
  index_t rows = 0, cols = 0;
  DeviceBuffer<std::int8_t> codes;         // [rows, cols], row-major
  DeviceBuffer<float> scales;              // [rows] or [1]
  DeviceBuffer<std::int32_t> zero_points;  // like scales; empty when symmetric
  DeviceBuffer<std::int32_t> row_sums;     // [rows]

  /// Every byte stored (the host Int8Matrix::bytes()).
  [[nodiscard]] std::size_t bytes() const {
    return codes.bytes() + scales.bytes() + zero_points.bytes() + row_sums.bytes();
  }
  [[nodiscard]] Int8Operand operand() const {
    return Int8Operand{.rows = rows,
                       .cols = cols,
                       .codes = codes.data(),
                       .ld = cols,
                       .scales = scales.data(),
                       .zero_points = zero_points.size() == 0 ? nullptr : zero_points.data(),
                       .row_sums = row_sums.data(),
                       .scale_per_row = scales.size() != 1,
                       .zero_per_row = zero_points.size() != 1};
  }
};

template <Int8Scheme S>
struct DevicePacked<Int8<S>> : DeviceInt8Matrix {
  using policy = Int8<S>;
  /// The host packing, checked against the scheme and uploaded as it is.
  static DevicePacked upload(const reason::quant::Int8Matrix& p) {
    const std::string fn = detail::fn_name<policy>("upload");
    const auto rows = static_cast<std::size_t>(p.rows);
    const std::size_t grids = S.weights == reason::quant::WeightScale::per_channel ? rows : 1;
    REASON_CHECK(p.rows >= 0 && p.cols >= 0 && p.codes.size() == rows * static_cast<std::size_t>(p.cols), fn,
                 ": weight [", p.rows, ", ", p.cols, "] has ", p.codes.size(), " codes, expected ", p.rows * p.cols);
    REASON_CHECK(p.scales.size() == grids && p.row_sums.size() == rows, fn, ": weight [", p.rows, ", ", p.cols,
                 "] has ", p.scales.size(), " scales and ", p.row_sums.size(), " row sums, expected ", grids, " and ",
                 rows, " for this scheme");
    const bool sym = S.symmetry == reason::quant::Symmetry::symmetric;
    REASON_CHECK(p.zero_points.size() == (sym ? 0 : grids), fn, ": weight has ", p.zero_points.size(),
                 " zero points, expected ", sym ? 0 : grids, sym ? " (symmetric)" : " (asymmetric)");
    DevicePacked d;
    d.rows = p.rows;
    d.cols = p.cols;
    d.codes = detail::to_device(p.codes, "int8 weight codes", nullptr);
    d.scales = detail::to_device(p.scales, "int8 weight scales", nullptr);
    d.zero_points = detail::to_device(p.zero_points, "int8 weight zero points", nullptr);
    d.row_sums = detail::to_device(p.row_sums, "int8 weight row sums", nullptr);
    return d;
  }
};

namespace detail {

inline constexpr int kInt8RowThreads = 256;  // threads quantizing one activation row

/// Range {lo, hi} of x[r, :] widened to contain 0 (the grids widen it anyway: the same scale and
/// zero point as the host's range), non-finite elements reported. Every thread gets the result.
template <int VEC>
__device__ __forceinline__ float2 row_range(const float* xr, index_t r, index_t cols, unsigned long long* flag,
                                            float* smem) {
  float lo = 0.0f, hi = 0.0f;
  for (index_t c = static_cast<index_t>(threadIdx.x) * VEC; c < cols; c += kInt8RowThreads * VEC) {
    float v[VEC];
    if constexpr (VEC == 4) {
      const float4 q = *reinterpret_cast<const float4*>(xr + c);
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
      v[0] = xr[c];
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (!isfinite(v[i])) [[unlikely]] {
        report_non_finite(flag, r, c + i, v[i]);
        continue;
      }
      lo = fminf(lo, v[i]);
      hi = fmaxf(hi, v[i]);
    }
  }
  lo = block_reduce<kInt8RowThreads>(lo, MinOp{}, smem);
  hi = block_reduce<kInt8RowThreads>(hi, MaxOp{}, smem);
  return make_float2(lo, hi);
}

/// ranges[r] = row_range(x[r, :]) (for per-tensor grids).
template <int VEC>
__global__ void __launch_bounds__(kInt8RowThreads)
    int8_row_range_kernel(const float* x, index_t ldx, index_t rows, index_t cols, float2* ranges,
                          unsigned long long* flag) {
  __shared__ float smem[kInt8RowThreads / 32];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float2 range = row_range<VEC>(x + r * ldx, r, cols, flag, smem);
    if (threadIdx.x == 0) ranges[r] = range;
  }
}

/// out = the union of ranges[0, rows) with 0 (quantize_int8's one grid for all rows). One block.
/// (Kernels in this header are templates, so that several translation units of a program may include it.)
template <int Threads>
__global__ void __launch_bounds__(Threads) int8_union_range_kernel(const float2* ranges, index_t rows, float2* out) {
  __shared__ float smem[Threads / 32];
  float lo = 0.0f, hi = 0.0f;
  for (index_t r = threadIdx.x; r < rows; r += Threads) {
    lo = fminf(lo, ranges[r].x);
    hi = fmaxf(hi, ranges[r].y);
  }
  lo = block_reduce<Threads>(lo, MinOp{}, smem);
  hi = block_reduce<Threads>(hi, MaxOp{}, smem);
  if (threadIdx.x == 0) *out = make_float2(lo, hi);
}

/// One block per row: the grid (the row's own, or `global_range`'s), then codes and the row sum.
template <bool Symmetric, bool PerRow, int VEC>
__global__ void __launch_bounds__(kInt8RowThreads)
    int8_quantize_kernel(const float* x, index_t ldx, index_t rows, index_t cols, const float2* global_range,
                         std::int8_t* codes, float* scales, std::int32_t* zero_points, std::int32_t* row_sums,
                         unsigned long long* flag) {
  __shared__ float smem[kInt8RowThreads / 32];
  __shared__ std::int32_t ismem[kInt8RowThreads / 32];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * ldx;
    const float2 range = PerRow ? row_range<VEC>(xr, r, cols, flag, smem) : *global_range;
    // quant::detail::grid_of: symmetric over max(-lo, hi) (std::max), or affine over [lo, hi].
    const DeviceGrid g = Symmetric ? symmetric_grid(-range.x < range.y ? range.y : -range.x, 127)
                                   : affine_grid(range.x, range.y, -128, 127);
    if (threadIdx.x == 0 && (PerRow || r == 0)) {
      scales[PerRow ? r : 0] = g.scale;
      if constexpr (!Symmetric) zero_points[PerRow ? r : 0] = g.zero_point;
    }
    std::int8_t* qr = codes + r * cols;
    std::int32_t sum = 0;
    for (index_t c = static_cast<index_t>(threadIdx.x) * VEC; c < cols; c += kInt8RowThreads * VEC) {
      if constexpr (VEC == 4) {
        const float4 v = *reinterpret_cast<const float4*>(xr + c);
        const std::int32_t q0 = grid_code(g, v.x), q1 = grid_code(g, v.y), q2 = grid_code(g, v.z),
                           q3 = grid_code(g, v.w);
        *reinterpret_cast<char4*>(qr + c) = make_char4(static_cast<signed char>(q0), static_cast<signed char>(q1),
                                                       static_cast<signed char>(q2), static_cast<signed char>(q3));
        sum += q0 + q1 + q2 + q3;
      } else {
        const std::int32_t q = grid_code(g, xr[c]);
        qr[c] = static_cast<std::int8_t>(q);
        sum += q;
      }
    }
    sum = block_reduce<kInt8RowThreads>(sum, AddOp{}, ismem);  // exact: any order
    if (threadIdx.x == 0) row_sums[r] = sum;
  }
}

// ---- the product ------------------------------------------------------------------------------

/// The fallback tile: a 64 x 64 block of acc, 256 threads of 4 x 4 outputs, K in steps of 32.
struct Int8GemmTile {
  static constexpr int bm = 64, bn = 64, bk = 32, threads = 256, tm = 4, tn = 4;
};

/// acc[m, n] = sum_k x[m, k] w[n, k] in int32 (exact), any shape and leading dimensions.
template <class T>
__global__ void __launch_bounds__(T::threads)
    int8_gemm_kernel(Int8Operand x, Int8Operand w, std::int32_t* acc, index_t ldc) {
  static_assert(T::bm == T::bn, "int8_gemm_kernel: one loop loads both tiles, so they have as many rows");
  __shared__ std::int32_t xs[T::bk][T::bm + 1];  // xs[k][m]
  __shared__ std::int32_t ws[T::bk][T::bn + 1];  // ws[k][n]
  const index_t m0 = static_cast<index_t>(blockIdx.y) * T::bm, n0 = static_cast<index_t>(blockIdx.x) * T::bn;
  const int t = static_cast<int>(threadIdx.x), ty = t / 16, tx = t % 16;
  std::int32_t a[T::tm][T::tn] = {};
  for (index_t k0 = 0; k0 < x.cols; k0 += T::bk) {
    for (int e = t; e < T::bm * T::bk; e += T::threads) {
      const int r = e / T::bk, c = e % T::bk;
      const index_t m = m0 + r, n = n0 + r, k = k0 + c;
      xs[c][r] = (m < x.rows && k < x.cols) ? std::int32_t(x.codes[m * x.ld + k]) : 0;
      ws[c][r] = (n < w.rows && k < w.cols) ? std::int32_t(w.codes[n * w.ld + k]) : 0;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < T::bk; ++k) {
      std::int32_t xa[T::tm], wb[T::tn];
#pragma unroll
      for (int i = 0; i < T::tm; ++i) xa[i] = xs[k][ty * T::tm + i];
#pragma unroll
      for (int j = 0; j < T::tn; ++j) wb[j] = ws[k][tx * T::tn + j];
#pragma unroll
      for (int i = 0; i < T::tm; ++i)
#pragma unroll
        for (int j = 0; j < T::tn; ++j) a[i][j] += xa[i] * wb[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < T::tm; ++i)
#pragma unroll
    for (int j = 0; j < T::tn; ++j) {
      const index_t m = m0 + ty * T::tm + i, n = n0 + tx * T::tn + j;
      if (m < x.rows && n < w.rows) acc[m * ldc + n] = a[i][j];
    }
}

/// y[m, n] from acc[m, n] (which may be y's own storage: each thread reads its element, then writes
/// it). Corrections: either operand has zero points (the host's `corrections`).
template <bool Corrections>
__global__ void __launch_bounds__(256)
    int8_epilogue_kernel(Int8Operand x, Int8Operand w, const std::int32_t* acc, index_t ldc, float* y, index_t ldy) {
  const index_t n = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= w.rows) return;
  const float sw = w.scale(n);
  const std::int64_t zw = w.zero_point(n), rw = Corrections ? w.row_sums[n] : 0, k_len = x.cols;
  for (index_t m = blockIdx.y; m < x.rows; m += gridDim.y) {
    std::int64_t total = acc[m * ldc + n];
    if constexpr (Corrections) {
      const std::int64_t zx = x.zero_point(m);
      total += -zw * std::int64_t(x.row_sums[m]) - zx * rw + k_len * zx * zw;
    }
    y[m * ldy + n] = __double2float_rn(__dmul_rn(__dmul_rn(double(x.scale(m)), double(sw)), double(total)));
  }
}

/// The cuBLASLt IMMA product into acc; false (nothing run) where its rules or its heuristic say no.
inline bool int8_accumulate_cublaslt(Workspace& ws, const Int8Operand& x, const Int8Operand& w, std::int32_t* acc,
                                     index_t ldc, cudaStream_t stream) {
  const index_t M = x.rows, N = w.rows, K = x.cols;
  const bool regular_order = ws.options().use_cublaslt && N % 4 == 0 && K % 4 == 0 && x.ld % 4 == 0 && w.ld % 4 == 0 &&
                             ldc % 4 == 0 && aligned(x.codes, 4) && aligned(w.codes, 4) && aligned(acc, 4) && M > 0 &&
                             K > 0;
  if (!regular_order) return false;
  const int alignment = aligned(x.codes, 16) && aligned(w.codes, 16) && aligned(acc, 16) ? 16 : 4;
  const PlanKey key{1, M, N, K, x.ld, w.ld, ldc, alignment};
  LtPlan& plan = ws.plan(key, [&](LtPlan& p) {
    REASON_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
    set_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);  // cuBLASLt's A is W [N, K] row-major
    set_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);  // its B is x [M, K] row-major
    // Column-major shapes (rows, cols, ld): W is [K, N], x is [K, M], acc is [N, M].
    REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8I, static_cast<std::uint64_t>(K),
                                                     static_cast<std::uint64_t>(N), w.ld));
    REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8I, static_cast<std::uint64_t>(K),
                                                     static_cast<std::uint64_t>(M), x.ld));
    REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32I, static_cast<std::uint64_t>(N),
                                                     static_cast<std::uint64_t>(M), ldc));
    (void)ws.pick_algorithm(p);
  });
  if (!plan.supported) return false;
  const std::int32_t alpha = 1, beta = 0;
  REASON_CUBLASLT_CHECK(cublasLtMatmul(ws.handle(), plan.op, &alpha, w.codes, plan.a, x.codes, plan.b, &beta, acc,
                                       plan.d, acc, plan.d, &plan.algo, ws.lt_workspace(), ws.lt_workspace_bytes(),
                                       stream));
  return true;
}

}  // namespace detail

/// The int32 accumulators acc [M, N] = x_q [M, K] w_q [N, K]^T on the codes (no zero points or
/// scales): quant::int8_accumulate on the device. cuBLASLt where it applies, else our kernel.
inline MatmulPath int8_accumulate(Workspace& ws, const Int8Operand& x, const Int8Operand& w, View<std::int32_t, 2> acc,
                                  cudaStream_t stream) {
  constexpr std::string_view fn = "gpu::quant::int8_accumulate";
  REASON_CHECK(x.cols == w.cols, fn, ": x is [", x.rows, ", ", x.cols, "] but w is [", w.rows, ", ", w.cols,
               "]: inner dimensions differ");
  REASON_CHECK(x.cols <= reason::quant::int8_max_inner_dim, fn, ": inner dimension ", x.cols, " exceeds ",
               reason::quant::int8_max_inner_dim, ", beyond which an int32 accumulator can overflow");
  detail::expect_device_matrix(View<const std::int32_t, 2>(acc), fn, "acc", x.rows, w.rows);
  if (x.rows == 0 || w.rows == 0) return MatmulPath::own_kernel;
  const index_t ldc = acc.shape[0] > 1 ? acc.stride[0] : acc.shape[1];
  if (detail::int8_accumulate_cublaslt(ws, x, w, acc.data, ldc, stream)) return MatmulPath::cublaslt;
  using T = detail::Int8GemmTile;
  const dim3 grid(static_cast<unsigned>(detail::ceil_div(w.rows, T::bn)),
                  static_cast<unsigned>(detail::ceil_div(x.rows, T::bm)));
  REASON_CHECK(grid.y <= 65535u, fn, ": ", x.rows, " rows exceed the fallback kernel's grid (", 65535 * T::bm, ")");
  detail::int8_gemm_kernel<T><<<grid, T::threads, 0, stream>>>(x, w, acc.data, ldc);
  REASON_CUDA_CHECK(cudaGetLastError());
  return MatmulPath::own_kernel;
}

/// y [M, N] = s_x s_w (acc - corrections) (see the header comment); acc may be y's own storage.
inline void int8_epilogue(const Int8Operand& x, const Int8Operand& w, View<const std::int32_t, 2> acc, View<float, 2> y,
                          cudaStream_t stream) {
  constexpr std::string_view fn = "gpu::quant::int8_epilogue";
  detail::expect_device_matrix(acc, fn, "acc", x.rows, w.rows);
  detail::expect_device_matrix(y, fn, "y", x.rows, w.rows);
  if (x.rows == 0 || w.rows == 0) return;
  const index_t ldc = acc.shape[0] > 1 ? acc.stride[0] : acc.shape[1], ldy = y.shape[0] > 1 ? y.stride[0] : y.shape[1];
  const dim3 grid(static_cast<unsigned>(detail::ceil_div(w.rows, 256)),
                  static_cast<unsigned>(std::min<index_t>(x.rows, 65535)));
  if (!x.symmetric() || !w.symmetric())
    detail::int8_epilogue_kernel<true><<<grid, 256, 0, stream>>>(x, w, acc.data, ldc, y.data, ldy);
  else
    detail::int8_epilogue_kernel<false><<<grid, 256, 0, stream>>>(x, w, acc.data, ldc, y.data, ldy);
  REASON_CUDA_CHECK(cudaGetLastError());
}

/// x [M, K] float -> int8 codes with the scheme's activation grids, bit for bit Int8<S>::quantize_activations.
/// The result lives in `ws`'s scratch until the workspace quantizes again.
template <Int8Scheme S>
Int8Operand quantize_activations(Workspace& ws, View<const float, 2> x, cudaStream_t stream) {
  using Q = Int8<S>;
  const std::string fn = detail::fn_name<Q>("quantize_activations");
  detail::expect_device_matrix(x, fn, "x", -1, -1);
  const index_t M = x.shape[0], K = x.shape[1];
  constexpr bool per_row = S.activations == reason::quant::ActivationScale::per_token;
  constexpr bool sym = S.symmetry == reason::quant::Symmetry::symmetric;
  const std::size_t grids = per_row ? static_cast<std::size_t>(M) : 1;
  Int8Operand q;
  q.rows = M;
  q.cols = K;
  q.ld = K;
  auto* codes = ws.scratch<std::int8_t>(0, static_cast<std::size_t>(M * K));
  auto* scales = ws.scratch<float>(1, grids);
  auto* zeros = sym ? nullptr : ws.scratch<std::int32_t>(2, grids);
  auto* sums = ws.scratch<std::int32_t>(3, static_cast<std::size_t>(M));
  auto* ranges = ws.scratch<float2>(4, per_row ? 1 : static_cast<std::size_t>(M) + 1);
  q.codes = codes;
  q.scales = scales;
  q.zero_points = zeros;
  q.row_sums = sums;
  q.scale_per_row = q.zero_per_row = per_row;
  if (M == 0) return q;
  const index_t ldx = M > 1 ? x.stride[0] : K;
  const bool vec = K % 4 == 0 && detail::rows_vectorizable(x);
  const auto blocks = static_cast<unsigned>(std::min<index_t>(M, 1 << 20));
  unsigned long long* flag = ws.non_finite_flag();
  auto launch = [&]<int VEC>() {
    constexpr int T = detail::kInt8RowThreads;
    if constexpr (!per_row) {
      detail::int8_row_range_kernel<VEC><<<blocks, T, 0, stream>>>(x.data, ldx, M, K, ranges, flag);
      REASON_CUDA_CHECK(cudaGetLastError());
      detail::int8_union_range_kernel<T><<<1, T, 0, stream>>>(ranges, M, ranges + M);
      REASON_CUDA_CHECK(cudaGetLastError());
    }
    detail::int8_quantize_kernel<sym, per_row, VEC>
        <<<blocks, T, 0, stream>>>(x.data, ldx, M, K, ranges + (per_row ? 0 : M), codes, scales, zeros, sums, flag);
    REASON_CUDA_CHECK(cudaGetLastError());
  };
  if (vec)
    launch.template operator()<4>();
  else
    launch.template operator()<1>();
  ws.after_quantize(fn, "x", stream);
  return q;
}

/// y [M, N] = x [M, K] W^T: Int8<S>::matmul on the device (x quantized on the fly, int32
/// accumulation on tensor cores where cuBLASLt takes the shape, the host's epilogue bit for bit).
template <Int8Scheme S>
MatmulPath matmul(Workspace& ws, View<const float, 2> x, const DevicePacked<Int8<S>>& w, View<float, 2> y,
                  cudaStream_t stream) {
  const std::string fn = detail::fn_name<Int8<S>>("matmul");
  detail::expect_product_views(fn, x, y, w.rows, w.cols);
  REASON_CHECK(w.cols <= reason::quant::int8_max_inner_dim, fn, ": inner dimension ", w.cols, " exceeds ",
               reason::quant::int8_max_inner_dim, ", beyond which an int32 accumulator can overflow");
  const Int8Operand xq = quantize_activations<S>(ws, x, stream);
  // The accumulators go into y's storage (int32 and float are both 4 bytes), then become y in place.
  const View<std::int32_t, 2> acc(reinterpret_cast<std::int32_t*>(y.data), y.shape, y.stride);
  const MatmulPath path = int8_accumulate(ws, xq, w.operand(), acc, stream);
  int8_epilogue(xq, w.operand(), View<const std::int32_t, 2>(acc), y, stream);
  return path;
}

}  // namespace reason::gpu::quant
