// reason/kernels/quant_fp8.cuh — quant::Fp8Block<F> on the GPU: DeepSeek-V3's fine-grained FP8
// (1 x 128 activation tiles, 128 x 128 weight blocks, fp32 scales, promotion every 128 of K).
//
// The contract of quant/fp8_block.hpp (read its header comment). Pieces:
//   DevicePacked<Fp8Block<F>>   the host Fp8BlockMatrix: codes [N, K] one byte each, scales
//                               [ceil(N / 128), ceil(K / 128)] fp32 row-major — uploaded as they are.
//                               Where ceil(K / 128) is not a multiple of 4 it also keeps the scales
//                               in cuBLASLt's 2-D block layout (below) in `lt_scales`.
//   quantize_activations<F>     x [M, K] float -> codes [M, K] and tile scales, one warp per 1 x 128
//                               tile: amax (exact in any order), s = max(float(double(amax) /
//                               fp8_max), FLT_MIN) or 1 for a zero tile, codes fp8(x / s) by
//                               __nv_cvt_float_to_fp8(., __NV_SATFINITE, .) — bit for bit the host's
//                               reason::fp8_e4m3 / fp8_e5m2 (core/fp8.hpp copies CUDA's conversion).
//                               The scales are stored token-major, s(m, c) at [c * M + m]: the
//                               layout cuBLASLt's VEC128_32F mode wants for its B operand.
//   matmul                      two paths:
//     cuBLASLt (E4M3, compute capability 9.x, cuBLAS >= 12.9): scale modes
//       CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F for W and VEC128_32F for x, fp32 output,
//       CUBLAS_COMPUTE_32F. cuBLAS's rules (its docs: "128-element 1D and 128x128 2D Block Scaling
//       For FP8 Data Types", "Scaling factors layouts", cublasLtMatmul): fp8 needs the "TN"
//       form — our W [N, K] row-major is its transposed A (m = N), our x its B (n = M); the
//       combination A = BLK128x128, B = VEC128 is one of the three it supports; its m and n
//       (our N and M) multiples of 4; dimensions and leading dimensions 16-byte multiples (K % 16,
//       and 4-byte y rows with ldy % 4); scale pointers 16-byte aligned; VEC128 scales are M-major
//       (n-major for B: our [c * M + m]); BLK128x128 scales are K-major with a column stride that is
//       a multiple of 4: s(p, b) at [p * L4 + b], L4 = ceil(K / 128) rounded up to 4 (the host's
//       row-major [p * L + b] when L % 4 == 0, else lt_scales). cuBLAS has no E5M2 x E5M2 fp8
//       kernel, so E5M2 always takes our kernel. Within a 128-chunk the tensor cores accumulate
//       with their own (reduced) precision; the block scales are applied per chunk in fp32 — the
//       DeepSeek-V3 scheme — so the result matches the host within that accumulation error only.
//     own kernel (everything else: E5M2, M not a multiple of 4 as in decode, other GPUs, shapes
//       outside the rules, or no algorithm from the heuristic): bit for bit the host's
//       matmul_fp8_blocks. Per 128-chunk, an output's dot product is summed like the host's
//       fp8_chunk_dot: 8 lanes (8 threads of a lane group), lane l adding the products k = l,
//       l + 8, ... in double (the product of two fp8 values is exact in float and in double, so
//       __fma_rn(a, b, lane) rounds exactly as the host's lane += double(a * b)), a chunk's last
//       len % 8 products added by lane 0, then
//       ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) by shuffles; then acc = fma(float(chunk),
//       s_x s_w, acc) in fp32, chunk by chunk. Each lane group computes TM x TN outputs, all of a
//       chunk's lane sums at once, and the 8-lane reduction is a reduce-scatter (each step halves the
//       values a lane holds), so a lane ends owning TM TN / 8 outputs. The tiles are decoded to
//       double once per block and 64 columns of K at a time into shared memory. fp64 throughput is
//       what this kernel is bound by (fine on H100 / H200, slow on GPUs with 1/64-rate fp64).
#pragma once

#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "reason/core/cublaslt_check.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/fp8.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/quant_common.cuh"
#include "reason/quant/fp8_block.hpp"

namespace reason::gpu::quant {

using reason::quant::Fp8Block;

/// Non-owning fp8 codes with block scales on the device: scale(r, k) = scales[(r / block_rows) *
/// scale_row_stride + (k / 128) * scale_col_stride].
struct Fp8Operand {
  index_t rows = 0, cols = 0;
  const std::uint8_t* codes = nullptr;  // [rows, ld]
  index_t ld = 0;
  const float* scales = nullptr;
  index_t block_rows = 128, scale_row_stride = 0, scale_col_stride = 0;

  [[nodiscard]] __device__ float scale(index_t r, index_t k) const {
    return scales[(r / block_rows) * scale_row_stride + (k / 128) * scale_col_stride];
  }
};

namespace detail {
template <class F>
inline constexpr __nv_fp8_interpretation_t fp8_kind = std::is_same_v<F, fp8_e4m3> ? __NV_E4M3 : __NV_E5M2;
template <class F>
inline constexpr cudaDataType_t fp8_data_type = std::is_same_v<F, fp8_e4m3> ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
inline constexpr index_t fp8_block = 128;  // the tile / block edge along K (and the weights' rows)
}  // namespace detail

template <class F>
struct DevicePacked<Fp8Block<F>> {
  using policy = Fp8Block<F>;
  index_t rows = 0, cols = 0;
  DeviceBuffer<std::uint8_t> codes;  // [rows, cols], the host's fp8 bits
  DeviceBuffer<float> scales;        // [ceil(rows / 128), ceil(cols / 128)], row-major (the host's)
  DeviceBuffer<float> lt_scales;     // [ceil(rows / 128), L4]: cuBLASLt's layout, only when L % 4 != 0

  [[nodiscard]] index_t row_blocks() const { return detail::ceil_div(rows, detail::fp8_block); }
  [[nodiscard]] index_t col_blocks() const { return detail::ceil_div(cols, detail::fp8_block); }
  /// Every byte the host packing holds (codes and scales; lt_scales is a copy of the scales).
  [[nodiscard]] std::size_t bytes() const { return codes.bytes() + scales.bytes(); }
  /// The scales in cuBLASLt's BLK128x128_32F layout (column stride L4).
  [[nodiscard]] const float* cublaslt_scales() const { return lt_scales.size() > 0 ? lt_scales.data() : scales.data(); }
  [[nodiscard]] Fp8Operand operand() const {
    return Fp8Operand{.rows = rows,
                      .cols = cols,
                      .codes = codes.data(),
                      .ld = cols,
                      .scales = scales.data(),
                      .block_rows = detail::fp8_block,
                      .scale_row_stride = col_blocks(),
                      .scale_col_stride = 1};
  }

  /// The host packing (128 x 128 weight blocks), checked and uploaded as it is.
  static DevicePacked upload(const reason::quant::Fp8BlockMatrix<F>& p) {
    const std::string fn = detail::fn_name<policy>("upload");
    REASON_CHECK(p.block_rows == detail::fp8_block, fn, ": weight [", p.rows, ", ", p.cols, "] has block_rows ",
                 p.block_rows, ", expected ", detail::fp8_block, " (128 x 128 weight blocks)");
    DevicePacked d;
    d.rows = p.rows;
    d.cols = p.cols;
    const index_t rb = d.row_blocks(), cb = d.col_blocks();
    REASON_CHECK(p.rows >= 0 && p.cols >= 0 && p.codes.size() == static_cast<std::size_t>(p.rows * p.cols) &&
                     p.scales.size() == static_cast<std::size_t>(rb * cb),
                 fn, ": weight [", p.rows, ", ", p.cols, "] has ", p.codes.size(), " codes and ", p.scales.size(),
                 " scales, expected ", p.rows * p.cols, " and ", rb * cb, " ([", rb, ", ", cb, "] blocks)");
    static_assert(sizeof(F) == 1 && std::is_trivially_copyable_v<F>);
    d.codes = detail::to_device(
        std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(p.codes.data()), p.codes.size()),
        "fp8 weight codes", nullptr);
    d.scales = detail::to_device(std::span<const float>(p.scales), "fp8 weight scales", nullptr);
    const index_t l4 = detail::round_up(cb, 4);
    if (l4 != cb && rb > 0) {
      std::vector<float> padded(static_cast<std::size_t>(rb * l4), 1.0f);
      for (index_t r = 0; r < rb; ++r)
        for (index_t c = 0; c < cb; ++c)
          padded[static_cast<std::size_t>(r * l4 + c)] = p.scales[static_cast<std::size_t>(r * cb + c)];
      d.lt_scales = detail::to_device(std::span<const float>(padded), "fp8 weight scales (cuBLASLt layout)", nullptr);
    }
    return d;
  }
};

namespace detail {

// ---- activation quantization ------------------------------------------------------------------

inline constexpr int kFp8QuantThreads = 256;  // 8 warps, one 1 x 128 tile each

/// One warp per 1 x 128 tile of x: scale and codes (see the header comment).
template <class F, bool VEC>
__global__ void __launch_bounds__(kFp8QuantThreads)
    fp8_quantize_kernel(const float* x, index_t ldx, index_t M, index_t K, std::uint8_t* codes, float* scales,
                        unsigned long long* flag) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t cb = ceil_div(K, fp8_block), tiles = M * cb;
  const index_t warps = static_cast<index_t>(gridDim.x) * (kFp8QuantThreads / 32);
  for (index_t tile = static_cast<index_t>(blockIdx.x) * (kFp8QuantThreads / 32) + threadIdx.x / 32; tile < tiles;
       tile += warps) {
    const index_t m = tile / cb, c = tile % cb, k = c * fp8_block + 4 * lane;
    const float* xr = x + m * ldx;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (VEC) {
      if (k < K) {
        const float4 q = *reinterpret_cast<const float4*>(xr + k);
        v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (k + i < K) v[i] = xr[k + i];
    }
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (!isfinite(v[i])) [[unlikely]] {
        report_non_finite(flag, m, k + i, v[i]);
        continue;
      }
      amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = warp_reduce(amax, MaxOp{});
    constexpr double fp8_max = static_cast<double>(reason::quant::Fp8Limits<F>::max_finite);
    const float s = amax > 0.0f ? fmaxf(__double2float_rn(__ddiv_rn(double(amax), fp8_max)), FLT_MIN) : 1.0f;
    if (lane == 0) scales[c * M + m] = s;
    std::uint8_t q[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) q[i] = __nv_cvt_float_to_fp8(__fdiv_rn(v[i], s), __NV_SATFINITE, fp8_kind<F>);
    std::uint8_t* qr = codes + m * K;
    if constexpr (VEC) {
      if (k < K) *reinterpret_cast<uchar4*>(qr + k) = make_uchar4(q[0], q[1], q[2], q[3]);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (k + i < K) qr[k + i] = q[i];
    }
  }
}

// ---- our product (bit for bit the host's) -----------------------------------------------------

/// A block of 256 threads = 32 lane groups of 8; group (gm, gn) computes TM x TN outputs; the block
/// covers BM = TM GM rows of x and BN = TN GN rows of W.
template <int TM_, int TN_, int GM_, int GN_>
struct Fp8Tile {
  static constexpr int tm = TM_, tn = TN_, gm = GM_, gn = GN_;
  static constexpr int bm = tm * gm, bn = tn * gn, values = tm * tn, threads = 8 * gm * gn;
  static constexpr int kc = 64;  // columns of K in shared memory at a time (half a chunk)
  static_assert(gm * gn == 32 && (values == 1 || values % 8 == 0),
                "Fp8Tile: 32 groups; 1 or a multiple of 8 outputs a group");
};
using Fp8TileWide = Fp8Tile<4, 8, 8, 4>;  // 32 x 32 outputs a block, 32 a group (4 per thread)
using Fp8TileRow = Fp8Tile<1, 1, 1, 32>;  // one x row against 32 weight rows: decode-sized M

/// The sum over the 8 lanes of a group of each of V values, as ((l0 + l1) + (l2 + l3)) + ((l4 + l5)
/// + (l6 + l7)): while a lane holds at least 2 values it keeps half of them and adds its partner's
/// (a reduce-scatter), then the steps left are a butterfly. IEEE addition is commutative, so both
/// partners' sums are the host's bits.
template <int N, int Step, int V>
__device__ __forceinline__ void lane_group_sum(double (&v)[V], int l) {
  if constexpr (Step < 3) {
    constexpr int o = 1 << Step;
    if constexpr (N >= 2) {
      constexpr int half = N / 2;
      const bool upper = ((l >> Step) & 1) != 0;
#pragma unroll
      for (int i = 0; i < half; ++i) {
        const double send = upper ? v[i] : v[i + half], keep = upper ? v[i + half] : v[i];
        v[i] = __dadd_rn(keep, __shfl_xor_sync(0xffffffffu, send, o));
      }
      lane_group_sum<half, Step + 1>(v, l);
    } else {
      v[0] = __dadd_rn(v[0], __shfl_xor_sync(0xffffffffu, v[0], o));
      lane_group_sum<1, Step + 1>(v, l);
    }
  }
}

/// After lane_group_sum<V>: the index of the first value lane l holds (it holds values
/// [first, first + max(V / 8, 1))), and whether it is the one lane to write them.
template <int V>
__device__ __forceinline__ int lane_first_value(int l, bool& writer) {
  int first = 0, n = V;
  writer = true;
#pragma unroll
  for (int s = 0; s < 3; ++s) {
    const bool upper = ((l >> s) & 1) != 0;
    if (n >= 2) {
      n /= 2;
      if (upper) first += n;
    } else if (upper) {
      writer = false;  // a butterfly step: the lower partner writes
    }
  }
  return first;
}

template <class F>
__device__ __forceinline__ double fp8_to_double(std::uint8_t b) {
  return static_cast<double>(__half2float(__half(__nv_cvt_fp8_to_halfraw(b, fp8_kind<F>))));
}

template <class F, class T>
__global__ void __launch_bounds__(T::threads, 2) fp8_gemm_kernel(Fp8Operand x, Fp8Operand w, float* y, index_t ldy) {
  constexpr int V = T::values, owned = V >= 8 ? V / 8 : 1;
  __shared__ double xs[T::bm][T::kc + 1];  // odd row length: the lane groups of a warp read distinct banks
  __shared__ double ws[T::bn][T::kc + 1];
  const int t = static_cast<int>(threadIdx.x), g = t / 8, l = t % 8, gm = g / T::gn, gn = g % T::gn;
  const index_t m0 = static_cast<index_t>(blockIdx.y) * T::bm, n0 = static_cast<index_t>(blockIdx.x) * T::bn;
  const index_t K = x.cols;
  bool writer = true;
  const int first = lane_first_value<V>(l, writer);
  float acc[owned] = {};
  for (index_t k0 = 0; k0 < K; k0 += fp8_block) {
    const int len = static_cast<int>(K - k0 < fp8_block ? K - k0 : fp8_block);
    const int main_end = len / 8 * 8;  // lanes take [0, main_end) in turn, lane 0 the rest (fp8_chunk_dot)
    double part[V] = {};
    for (int kb = 0; kb < len; kb += T::kc) {
      __syncthreads();  // the previous half-chunk's readers are done
      for (int e = t; e < (T::bm + T::bn) * T::kc; e += T::threads) {
        const int r = e / T::kc, c = e % T::kc;
        const bool is_x = r < T::bm;
        const index_t row = is_x ? m0 + r : n0 + (r - T::bm), rows = is_x ? x.rows : w.rows, ld = is_x ? x.ld : w.ld;
        const std::uint8_t* codes = is_x ? x.codes : w.codes;
        const double v = (row < rows && kb + c < len) ? fp8_to_double<F>(codes[row * ld + k0 + kb + c]) : 0.0;
        if (is_x)
          xs[r][c] = v;
        else
          ws[r - T::bm][c] = v;
      }
      __syncthreads();
      const int j_end = (main_end - kb) / 8 < T::kc / 8 ? (main_end - kb) / 8 : T::kc / 8;
      for (int j = 0; j < j_end; ++j) {
        const int c = l + 8 * j;
        double a[T::tm], b[T::tn];
#pragma unroll
        for (int i = 0; i < T::tm; ++i) a[i] = xs[gm * T::tm + i][c];
#pragma unroll
        for (int i = 0; i < T::tn; ++i) b[i] = ws[gn * T::tn + i][c];
#pragma unroll
        for (int i = 0; i < T::tm; ++i)
#pragma unroll
          for (int jn = 0; jn < T::tn; ++jn) part[i * T::tn + jn] = __fma_rn(a[i], b[jn], part[i * T::tn + jn]);
      }
      if (l == 0 && main_end < len && main_end >= kb && main_end < kb + T::kc) {
        for (int c = main_end - kb; c < len - kb; ++c)
#pragma unroll
          for (int i = 0; i < T::tm; ++i)
#pragma unroll
            for (int jn = 0; jn < T::tn; ++jn)
              part[i * T::tn + jn] = __fma_rn(xs[gm * T::tm + i][c], ws[gn * T::tn + jn][c], part[i * T::tn + jn]);
      }
    }
    lane_group_sum<V, 0>(part, l);
#pragma unroll
    for (int i = 0; i < owned; ++i) {
      const int idx = first + i;
      const index_t m = m0 + gm * T::tm + idx / T::tn, n = n0 + gn * T::tn + idx % T::tn;
      if (m < x.rows && n < w.rows)
        acc[i] = fmaf(__double2float_rn(part[i]), __fmul_rn(x.scale(m, k0), w.scale(n, k0)), acc[i]);  // the promotion
    }
  }
  if (!writer) return;
#pragma unroll
  for (int i = 0; i < owned; ++i) {
    const int idx = first + i;
    const index_t m = m0 + gm * T::tm + idx / T::tn, n = n0 + gn * T::tn + idx % T::tn;
    if (m < x.rows && n < w.rows) y[m * ldy + n] = acc[i];
  }
}

/// M up to which the one-row tile is used (each block one row of x against 32 weight rows).
inline constexpr index_t fp8_row_tile_max_rows = 8;

template <class F>
void fp8_gemm(const Fp8Operand& x, const Fp8Operand& w, float* y, index_t ldy, std::string_view fn,
              cudaStream_t stream) {
  auto launch = [&]<class T>() {
    const dim3 grid(static_cast<unsigned>(ceil_div(w.rows, T::bn)), static_cast<unsigned>(ceil_div(x.rows, T::bm)));
    REASON_CHECK(grid.y <= 65535u, fn, ": x has ", x.rows, " rows; the fp8 kernel takes at most ", 65535 * T::bm);
    fp8_gemm_kernel<F, T><<<grid, T::threads, 0, stream>>>(x, w, y, ldy);
    REASON_CUDA_CHECK(cudaGetLastError());
  };
  if (x.rows <= fp8_row_tile_max_rows)
    launch.template operator()<Fp8TileRow>();
  else
    launch.template operator()<Fp8TileWide>();
}

/// The cuBLASLt block-scaled product; false (nothing run) where its rules or its heuristic say no.
template <class F>
bool fp8_gemm_cublaslt(Workspace& ws, const Fp8Operand& x, const DevicePacked<Fp8Block<F>>& w, float* y, index_t ldy,
                       cudaStream_t stream) {
  const index_t M = x.rows, N = w.rows, K = x.cols;
  if constexpr (!std::is_same_v<F, fp8_e4m3>) {
    return false;  // cuBLAS lists no E5M2 x E5M2 fp8 kernel
  } else {
    const bool rules = ws.options().use_cublaslt && ws.fp8_block_scaling() && M > 0 && M % 4 == 0 && N % 4 == 0 &&
                       K > 0 && K % 16 == 0 && ldy % 4 == 0 && aligned(y, 16) && aligned(x.codes, 16) &&
                       aligned(x.scales, 16) && aligned(w.codes.data(), 16) && aligned(w.cublaslt_scales(), 16);
    if (!rules) return false;
    const void* a_scale = w.cublaslt_scales();
    const void* b_scale = x.scales;
    const PlanKey key{2, M, N, K, ldy, 0, 0, 16};
    LtPlan& plan = ws.plan(key, [&](LtPlan& p) {
      REASON_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      set_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);  // cuBLASLt's A is W [N, K] row-major
      set_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);  // its B is x [M, K] row-major
      set_attribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, std::int32_t{CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F});
      set_attribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, std::int32_t{CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F});
      set_attribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a_scale);
      set_attribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b_scale);
      REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.a, fp8_data_type<F>, static_cast<std::uint64_t>(K),
                                                       static_cast<std::uint64_t>(N), K));
      REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.b, fp8_data_type<F>, static_cast<std::uint64_t>(K),
                                                       static_cast<std::uint64_t>(M), x.ld));
      REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32F, static_cast<std::uint64_t>(N),
                                                       static_cast<std::uint64_t>(M), ldy));
      (void)ws.pick_algorithm(p);
    });
    if (!plan.supported) return false;
    // The same shape serves many weights: the scale pointers are set on every call.
    set_attribute(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a_scale);
    set_attribute(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b_scale);
    const float alpha = 1.0f, beta = 0.0f;
    REASON_CUBLASLT_CHECK(cublasLtMatmul(ws.handle(), plan.op, &alpha, w.codes.data(), plan.a, x.codes, plan.b, &beta,
                                         y, plan.d, y, plan.d, &plan.algo, ws.lt_workspace(), ws.lt_workspace_bytes(),
                                         stream));
    return true;
  }
}

}  // namespace detail

/// x [M, K] float -> fp8 codes [M, K] and 1 x 128 tile scales, bit for bit Fp8Block<F>::quantize_activations
/// (the scales token-major: scale(m, k) = scales[(k / 128) * M + m]). Lives in `ws`'s scratch until
/// the workspace quantizes again.
template <class F>
Fp8Operand quantize_activations(Workspace& ws, View<const float, 2> x, cudaStream_t stream) {
  const std::string fn = detail::fn_name<Fp8Block<F>>("quantize_activations");
  detail::expect_device_matrix(x, fn, "x", -1, -1);
  const index_t M = x.shape[0], K = x.shape[1], cb = detail::ceil_div(K, detail::fp8_block);
  Fp8Operand q;
  q.rows = M;
  q.cols = K;
  q.ld = K;
  auto* codes = ws.scratch<std::uint8_t>(0, static_cast<std::size_t>(M * K));
  auto* scales = ws.scratch<float>(1, static_cast<std::size_t>(M * cb));
  q.codes = codes;
  q.scales = scales;
  q.block_rows = 1;
  q.scale_row_stride = 1;
  q.scale_col_stride = M;
  if (M == 0 || K == 0) return q;
  const index_t ldx = M > 1 ? x.stride[0] : K;
  const bool vec = K % 4 == 0 && detail::rows_vectorizable(x);
  const unsigned blocks = detail::blocks_for(M * cb, detail::kFp8QuantThreads / 32);
  if (vec)
    detail::fp8_quantize_kernel<F, true>
        <<<blocks, detail::kFp8QuantThreads, 0, stream>>>(x.data, ldx, M, K, codes, scales, ws.non_finite_flag());
  else
    detail::fp8_quantize_kernel<F, false>
        <<<blocks, detail::kFp8QuantThreads, 0, stream>>>(x.data, ldx, M, K, codes, scales, ws.non_finite_flag());
  REASON_CUDA_CHECK(cudaGetLastError());
  ws.after_quantize(fn, "x", stream);
  return q;
}

/// y [M, N] = x q-> fp8 tiles, times W's fp8 blocks: Fp8Block<F>::matmul on the device (see the
/// header comment for the two paths).
template <class F>
MatmulPath matmul(Workspace& ws, View<const float, 2> x, const DevicePacked<Fp8Block<F>>& w, View<float, 2> y,
                  cudaStream_t stream) {
  const std::string fn = detail::fn_name<Fp8Block<F>>("matmul");
  detail::expect_product_views(fn, x, y, w.rows, w.cols);
  const Fp8Operand xq = quantize_activations<F>(ws, x, stream);
  const index_t M = x.shape[0], N = w.rows;
  if (M == 0 || N == 0) return MatmulPath::own_kernel;
  const index_t ldy = M > 1 ? y.stride[0] : N;
  if (detail::fp8_gemm_cublaslt<F>(ws, xq, w, y.data, ldy, stream)) return MatmulPath::cublaslt;
  detail::fp8_gemm<F>(xq, w.operand(), y.data, ldy, fn, stream);
  return MatmulPath::own_kernel;
}

/// Our kernel alone on already quantized operands (what matmul falls back to; exposed for tests and
/// benchmarks): y [M, N] bit for bit quant::matmul_fp8_blocks.
template <class F>
void fp8_matmul_own(const Fp8Operand& x, const DevicePacked<Fp8Block<F>>& w, View<float, 2> y, cudaStream_t stream) {
  const std::string fn = detail::fn_name<Fp8Block<F>>("fp8_matmul_own");
  REASON_CHECK(x.cols == w.cols, fn, ": x is [", x.rows, ", ", x.cols, "] but w is [", w.rows, ", ", w.cols,
               "]: inner dimensions differ");
  detail::expect_device_matrix(y, fn, "y", x.rows, w.rows);
  if (x.rows == 0 || w.rows == 0) return;
  detail::fp8_gemm<F>(x, w.operand(), y.data, x.rows > 1 ? y.stride[0] : w.rows, fn, stream);
}

}  // namespace reason::gpu::quant
