// reason/kernels/attention.cuh — scaled dot-product attention on the GPU in the FlashAttention-2
// style: forward (saving the row log-sum-exp), a deterministic backward, and one decoding step
// against a KV cache.
//
// Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning" (2023),
// after Dao et al., "FlashAttention" (2022); Milakov & Gimelshein, "Online normalizer calculation
// for softmax" (2018). The contract is kernels/attention.hpp's with Dv == Dk == D and the default
// scale, on device views, storage T = float, __nv_bfloat16 or __half, all arithmetic in fp32:
//   forward   out_t = sum_u p_tu v_u,  p_tu = exp(s_tu - lse_t),  s_tu = q_t . k_u / sqrt(D),
//             lse_t = log sum_u exp(s_tu) (natural log, fp32, saved [B, H, T] for the backward;
//             the View may be empty at inference); u runs over every key, or u <= t when causal.
//             Query head h reads kv head h / (H / Hkv) (GQA; Hkv == H is MHA, Hkv == 1 MQA).
//   backward  P recomputed from q, k and lse; delta_t = dout_t . out_t (a [B, H, T] fp32 scratch
//             in the FlashAttentionWorkspace);
//             dv_u = sum_t p_tu dout_t,  dp_tu = dout_t . v_u,  ds_tu = p_tu (dp_tu - delta_t),
//             dk_u = scale sum_t ds_tu q_t,  dq_t = scale sum_u ds_tu k_u;
//             dq, dk, dv overwritten (dk, dv summed over the kv head's group of query heads).
//   decode    one new query row per (b, h) against cache positions [0, len) of k_cache, v_cache
//             [B, S, Hkv, D]; out [B, H, D].
// q, k, v (and dq, dk, dv) may be strided column blocks of one fused [B, T, H + 2 Hkv, D] buffer:
// every stride is free except the innermost, which must be 1. Inputs and outputs must not alias.
// Head dims 32, 64 and 128 (compile-time); anything else, H % Hkv != 0, a wrong shape or a strided
// innermost dimension throws reason::Error naming the function, the tensor and its shape.
//
// Kernels. The tensor-core path for 16-bit storage (mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 or
// .f32.f16.f16.f32, sm_80+: the same fragment layouts, so one set of kernels templated on the element
// type E = __nv_bfloat16 | __half, which picks the instruction and the rounding of P and dS):
//   fa_forward_mma_kernel   one 128-thread block (4 warps) per (query tile, head, batch); a warp
//                     owns 16 * MT query rows of the tile. Q is copied to shared memory once;
//                     K and V tiles of BC keys stream through two shared-memory buffers each
//                     (cp.async, the next tile in flight while this one is used). Per key tile:
//                     S = Q K^T on the tensor cores (ldmatrix from shared memory), the online
//                     softmax in fp32 — running row max m and per-thread partial row sums l, the
//                     exponent in log2 units (score * log2(e)/sqrt(D) - m, one FFMA, then ex2) —
//                     and O += P V with P rounded to E straight from the S accumulators (the C
//                     fragment of two adjacent n8 tiles is the A fragment of one k16 step). O is
//                     rescaled only when a row max of the warp grew (otherwise every factor is
//                     exactly 1). Causal tiles above the diagonal are never loaded; only tiles
//                     crossing the diagonal or the end of the sequence are masked. 128 query rows
//                     a block (MT = 2: each K / V fragment read from shared memory feeds two m16
//                     tiles, as FA2); keys per tile BC = 128, 64, 32 for D = 32, 64, 128, the
//                     largest that keep O (D/2 fp32 registers a thread) and S (BC/2) in 255
//                     registers without spilling. Grid (query tiles, H, B), longest causal rows first.
//   fa_backward_dkdv_mma_kernel  one block per (key tile of 64, kv head, batch); a warp owns 16 keys
//                     and keeps dK, dV in fp32 registers while it walks the group's query heads in
//                     order and, within each, the query tiles of 64 (from the diagonal on when
//                     causal) — Q, dO, lse and delta double-buffered. It works on the transposed products
//                     (S^T = K Q^T, dP^T = V dO^T), so P^T and dS^T come out of the accumulators
//                     already in the A layout of dV += P^T dO and dK += dS^T Q.
//   fa_backward_dq_mma_kernel  one block per (query tile of 64, head, batch), walking key tiles of 64
//                     in order: S = Q K^T, dP = dO V^T, dS, dQ += dS K (K read transposed by
//                     ldmatrix). Both backward kernels stage their results through shared memory
//                     for 16-byte stores, as the forward does.
//   S and dP are thus computed twice (once per kernel) instead of adding dQ with floating-point
//   atomics, as FA2 does: the price of determinism.
// The SIMT path (fp32 storage; bf16 / fp16 whose pointers or strides are not 16-byte aligned, which
// falls back here rather than failing; devices below sm_80) has the same three kernels with 32 x 32
// tiles in fp32 shared memory and a thread per (row, quarter of the columns), everything in fp32
// (P and dS are not rounded): correct and deterministic, not fast.
//   fa_delta_kernel     delta_t = dout_t . out_t, a warp per row (out as stored, in T).
//   fa_decode_kernel    one 256-thread block per (head, batch): the 8 warps take contiguous
//                     eighths of the cache (flash-decoding inside the block), each an online
//                     softmax over its keys four at a time (a key a warp step, the lanes splitting
//                     D), then the warps' (m, l, o) are merged in warp order.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16", .bf16 and .f16 alike):
//   lane = 4 g + t,
//   A 16x16 row-major, 4 regs of 2 elements: a0 (row g, cols 2t, 2t+1), a1 (row g+8, cols 2t..),
//     a2 (row g, cols 2t+8..), a3 (row g+8, cols 2t+8..);
//   B 16x8 ("col": element (k, n)), 2 regs: b0 (k 2t, 2t+1; n g), b1 (k 2t+8, 2t+9; n g);
//   C/D 16x8 fp32, 4 regs: c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8, cols 2t, 2t+1).
//   ldmatrix.x4 loads four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i and
//   register i of lane 4g + t holds (row g, cols 2t, 2t+1) of matrix i — with .trans, (rows 2t,
//   2t+1, col g). Hence, with row-major tiles in shared memory:
//     A from rows r0.. (Q, K, V, dO):  lane's address row r0 + lane % 16, col k0 + 8 (lane / 16)
//       -> matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
//       = a0, a1, a2, a3.
//     B = X^T for X [n][k] row-major (K in Q K^T, V in dO V^T, Q and dO in the transposed
//       products): row n0 + lane % 8 + 8 (lane / 16), col k0 + 8 ((lane / 8) % 2)
//       -> b0, b1 of n-tile n0 and b0, b1 of n-tile n0 + 8.
//     B = X for X [k][n] row-major (V in P V, dO in P^T dO, Q in dS^T Q, K in dS K), .trans:
//       row k0 + lane % 8 + 8 ((lane / 8) % 2), col n0 + 8 (lane / 16)
//       -> b0, b1 of n-tile n0 and b0, b1 of n-tile n0 + 8.
//     A from accumulators: k16 step j of P (or dS) is {pack(c0, c1), pack(c2, c3)} of n-tile 2j
//       then the same of n-tile 2j + 1 (pack: the lower column in the low half).
//   Shared-memory rows are D + 8 elements long: the 16-byte padding puts the 8 row addresses of
//   each ldmatrix phase in 8 different bank groups (no conflicts) for D = 32, 64 and 128.
//
// Determinism. No atomics anywhere; every sum has a fixed order that depends only on the sizes
// (mma results do not depend on scheduling; quad and warp reductions are xor butterflies, which
// leave the same bits in every lane), so a call repeated on the same inputs gives the same bits.
// Numerics: scores, softmax statistics, accumulators and lse in fp32; 16-bit storage rounds P and
// dS to the storage type for the tensor cores (as FA2), out / dq / dk / dv once at the end. In fp16,
// P (<= 1) is rounded absolutely below 2^-14 (subnormals; below 2^-25 it is 0); dS carries the loss
// scale in training, and |dS| >= 65520 becomes Inf (pack2_rn), never clamped: the trainer's loss
// scaling sees it in the gradients and backs off. Exponentials are ex2.approx.ftz.f32 (2 ulp; what
// exp2f compiles to, minus its subnormal handling: a probability below 2^-126 counts as 0).
// tests/cuda/attention.cu derives the error bounds.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/attention.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

/// Device scratch of flash_attention_backward: delta = rowsum(dout * out), [B, H, T] fp32. Grows on
/// demand (a cudaMalloc only when a call needs more than any before); one per stream.
class FlashAttentionWorkspace {
 public:
  FlashAttentionWorkspace() = default;

  /// At least n floats of delta scratch.
  float* delta_for(index_t n) {
    if (delta_.size() < static_cast<std::size_t>(n))
      delta_ = DeviceBuffer<float>(static_cast<std::size_t>(n), "flash attention delta");
    return delta_.data();
  }
  [[nodiscard]] std::size_t delta_capacity() const { return delta_.size(); }

 private:
  DeviceBuffer<float> delta_;
};

namespace detail {

inline constexpr float kFaLog2e = 1.4426950408889634f;
inline constexpr float kFaLn2 = 0.6931471805599453f;

/// Everything a kernel reads: pointers, strides in elements ([B, T, heads, D] views: 0 batch,
/// 1 position, 2 head; lse [B, H, T]: l0 batch, l1 head, position unit-stride), sizes.
struct FaArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* o = nullptr;  // forward output, read by the backward's delta
  const void* dout = nullptr;
  void* out = nullptr;  // forward output / decode output
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  float* lse = nullptr;           // written by the forward (may be null)
  const float* lse_in = nullptr;  // read by the backward
  float* delta = nullptr;         // [B, H, T] contiguous (workspace)
  index_t q0 = 0, q1 = 0, q2 = 0, k0 = 0, k1 = 0, k2 = 0, v0 = 0, v1 = 0, v2 = 0;
  index_t o0 = 0, o1 = 0, o2 = 0, do0 = 0, do1 = 0, do2 = 0;
  index_t dq0 = 0, dq1 = 0, dq2 = 0, dk0 = 0, dk1 = 0, dk2 = 0, dv0 = 0, dv1 = 0, dv2 = 0;
  index_t l0 = 0, l1 = 0;
  int T = 0;      // sequence length (decode: len)
  int H = 0;      // query heads
  int group = 1;  // query heads per kv head
  int causal = 0;
  float scale = 0;       // 1 / sqrt(D)
  float scale_log2 = 0;  // log2(e) / sqrt(D)
};

// ---------------------------------------------------------------------------------------------
// PTX wrappers (sm_80+ for cp.async, ldmatrix and the bf16 / fp16 mma)

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !full.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(full ? 16 : 0)
               : "memory");
}
/// 4 bytes global -> shared, asynchronously; zero-filled when !full.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool full) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(full ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/// Four 8x8 b16 matrices from a shared-memory address; lane i gives the address of row i % 8 of
/// matrix i / 8 (see the header).
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
/// The same, each matrix transposed.
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// c += A (16x16 E, row) * B (16x8 E, col), fp32 accumulators; E is __nv_bfloat16 or __half (the
/// two instructions share every fragment layout, so only the type suffix differs).
template <class E>
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  static_assert(is_half_storage_v<E>, "mma_m16n8k16: the tensor-core element type is __nv_bfloat16 or __half");
  if constexpr (std::is_same_v<E, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/// 2^x by the multi-function unit (ex2.approx.ftz.f32: within 2 ulp of 2^x; results below 2^-126,
/// i.e. probabilities below 1e-38, flush to 0). exp2f without --use_fast_math is the same
/// instruction wrapped in subnormal handling that costs registers and issue slots here.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// The A fragment (element type E) of k16 step j from the fp32 accumulators of n-tiles 2j and 2j + 1;
/// each pair rounded to nearest even (pack2_rn: in fp16 |x| >= 65520 becomes Inf).
template <class E>
__device__ __forceinline__ void acc_to_a(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack2_rn<E>(c0[0], c0[1]);
  a[1] = pack2_rn<E>(c0[2], c0[3]);
  a[2] = pack2_rn<E>(c1[0], c1[1]);
  a[3] = pack2_rn<E>(c1[2], c1[3]);
}

/// A lane's ldmatrix row address (shared-memory bytes) for the three uses in the header, at tile
/// row 0, column 0 of a tile with row stride LD elements; the step (r0, k0) adds the compile-time
/// constant 2 (r0 LD + k0) bytes, so the loops below index with immediates.
///   lds_a:  A operand;  lds_bt: B = X^T (non-transposed);  lds_b: B = X (transposed).
template <int LD, class E>
__device__ __forceinline__ unsigned lds_a(const E* tile, int lane) {
  return smem_addr(tile + (lane % 16) * LD + (lane / 16) * 8);
}
template <int LD, class E>
__device__ __forceinline__ unsigned lds_bt(const E* tile, int lane) {
  return smem_addr(tile + (lane % 8 + (lane / 16) * 8) * LD + ((lane / 8) % 2) * 8);
}
template <int LD, class E>
__device__ __forceinline__ unsigned lds_b(const E* tile, int lane) {
  return smem_addr(tile + (lane % 8 + ((lane / 8) % 2) * 8) * LD + (lane / 16) * 8);
}
/// Byte offset of element (r, c) in a tile of row stride LD (2-byte elements).
template <int LD>
__device__ __forceinline__ constexpr unsigned at(int r, int c) {
  return static_cast<unsigned>(2 * (r * LD + c));
}

/// Rows [0, ROWS) x [0, D) of a 16-bit tile (row r at src + r * ld, unit inner stride, 16-byte
/// aligned) into shared memory with row stride D + 8, by NT threads, 16 bytes each per step.
/// Rows >= valid are zero-filled and not read (their source address is clamped to row 0).
template <int ROWS, int D, int NT, class E>
__device__ __forceinline__ void tile_to_smem(E* dst, const E* src, index_t ld, int valid, int tid) {
  constexpr int kChunks = D / 8, kLd = D + 8;
  static_assert(ROWS % (NT / kChunks) == 0, "tile_to_smem: the tile must be a whole number of steps");
  constexpr int kStep = NT / kChunks;  // rows per step
  static_assert(NT % kChunks == 0, "tile_to_smem: a step covers whole rows");
  const int r0 = tid / kChunks, c = (tid % kChunks) * 8;
  const E* p = src + static_cast<index_t>(r0) * ld + c;
  const index_t step = kStep * ld;
#pragma unroll
  for (int i = 0; i < ROWS / kStep; ++i) {
    const int r = r0 + i * kStep;
    const bool ok = r < valid;
    cp_async16(dst + r * kLd + c, ok ? p : src, ok);
    p += step;
  }
}

/// Copies a warp's ROWS x D fp32 accumulator rows, staged as T in shared memory (row stride ld),
/// to global rows row0.. (stride gld) with 16-byte stores; rows >= T are skipped.
template <int ROWS, int D, class E>
__device__ __forceinline__ void smem_rows_to_global(const E* s, int ld, E* g, index_t gld, int row0, int T,
                                                    int lane) {
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int i = lane; i < ROWS * kChunks; i += 32) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    if (row0 + r < T)
      *reinterpret_cast<uint4*>(g + static_cast<index_t>(row0 + r) * gld + c) =
          *reinterpret_cast<const uint4*>(s + r * ld + c);
  }
}

/// Writes a warp's 16 x D accumulator block (n-tiles of 8 columns, C layout) times `mul` as E
/// into shared memory rows r0.. (stride ld).
template <int D, class E>
__device__ __forceinline__ void acc_to_smem(E* s, int ld, int r0, const float (&acc)[D / 8][4], float mul0,
                                            float mul1, int lane) {
  const int r = r0 + lane / 4, c = 2 * (lane % 4);
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    *reinterpret_cast<unsigned*>(s + r * ld + dt * 8 + c) = pack2_rn<E>(acc[dt][0] * mul0, acc[dt][1] * mul0);
    *reinterpret_cast<unsigned*>(s + (r + 8) * ld + dt * 8 + c) = pack2_rn<E>(acc[dt][2] * mul1, acc[dt][3] * mul1);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward, tensor cores (E: __nv_bfloat16 or __half)

inline constexpr int kMmaElemBytes = 2;  // bf16 and fp16 alike: the tiles' layout is the same for both

template <int D, int MT, int BC>
struct FwdTile {
  static constexpr int kThreads = 128, kRows = 4 * 16 * MT, kLd = D + 8;
  static constexpr int kQ = kRows * kLd, kKV = BC * kLd;  // elements
  static constexpr int kSmem = (kQ + 4 * kKV) * kMmaElemBytes;
};

/// The forward's tile shape for head dim D: (m16 tiles per warp, keys per tile).
/// 128 query rows a block throughout (each K / V fragment read from shared memory feeds two m16
/// tiles); the key tile shrinks as D grows so that O (D/2 registers a thread) and S (BC/2) fit in
/// 255 registers without spilling.
template <int D>
struct FwdShape {
  static constexpr int MT = 2, BC = D == 32 ? 128 : (D == 64 ? 64 : 32);
};

template <class E, int D, int MT, int BC>
__global__ void __launch_bounds__(128, 2) fa_forward_mma_kernel(const FaArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  using C = FwdTile<D, MT, BC>;
  constexpr int kLd = C::kLd, kWarpRows = 16 * MT;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  E* sQ = reinterpret_cast<E*>(fa_smem);
  E* sK = sQ + C::kQ;       // two buffers of BC rows
  E* sV = sK + 2 * C::kKV;  // two buffers of BC rows
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int T = a.T;
  // Causal: the longest rows first (the grid is launched in blockIdx.x order).
  const int mb =
      a.causal ? static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x);
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z), g = h / a.group;
  const int m0 = mb * C::kRows, wrow = warp * kWarpRows;
  const auto* qg = static_cast<const E*>(a.q) + b * a.q0 + static_cast<index_t>(m0) * a.q1 + h * a.q2;
  const auto* kg = static_cast<const E*>(a.k) + b * a.k0 + g * a.k2;
  const auto* vg = static_cast<const E*>(a.v) + b * a.v0 + g * a.v2;
  const int kend = a.causal ? min(T, m0 + C::kRows) : T;  // keys [0, kend) are visible to some row
  const int nblocks = (kend + BC - 1) / BC;

  tile_to_smem<C::kRows, D, 128>(sQ, qg, a.q1, T - m0, tid);
  tile_to_smem<BC, D, 128>(sK, kg, a.k1, T, tid);
  tile_to_smem<BC, D, 128>(sV, vg, a.v1, T, tid);
  cp_async_commit();

  float o[MT][D / 8][4];
  float mrow[MT][2], lrow[MT][2];  // running max (raw score units) and this thread's partial row sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.0f;
    mrow[mt][0] = mrow[mt][1] = -INFINITY;
    lrow[mt][0] = lrow[mt][1] = 0.0f;
  }
  const float sl2 = a.scale_log2;
  const unsigned q_addr = lds_a<kLd>(sQ + wrow * kLd, lane), k_addr = lds_bt<kLd>(sK, lane),
                 v_addr = lds_b<kLd>(sV, lane);

  for (int j = 0; j < nblocks; ++j) {
    cp_async_wait_all();
    __syncthreads();  // tile j visible to all; every warp is done with tile j - 1's buffers
    if (j + 1 < nblocks) {
      const int n1 = (j + 1) * BC, nb = (j + 1) % 2;
      tile_to_smem<BC, D, 128>(sK + nb * C::kKV, kg + static_cast<index_t>(n1) * a.k1, a.k1, T - n1, tid);
      tile_to_smem<BC, D, 128>(sV + nb * C::kKV, vg + static_cast<index_t>(n1) * a.v1, a.v1, T - n1, tid);
    }
    cp_async_commit();
    const unsigned buf = (j % 2) * C::kKV * 2;  // bytes

    // S = Q K^T: per warp [16 MT, BC], n-tiles of 8 keys.
    float s[MT][BC / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      unsigned qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) ldsm_x4(qa[mt], q_addr + at<kLd>(mt * 16, ks * 16));
#pragma unroll
      for (int np = 0; np < BC / 16; ++np) {
        unsigned kb[4];
        ldsm_x4(kb, k_addr + buf + at<kLd>(np * 16, ks * 16));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_m16n8k16<E>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_m16n8k16<E>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }
    // Mask keys past the end and, when causal, above the diagonal (only tiles that reach them).
    const int n0 = j * BC;
    if (n0 + BC > T || (a.causal && n0 + BC - 1 > m0 + wrow)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = m0 + wrow + mt * 16 + lane / 4 + 8 * (e / 2);
            const int col = n0 + nt * 8 + 2 * (lane % 4) + e % 2;
            if (col >= T || (a.causal && col > row)) s[mt][nt][e] = -INFINITY;
          }
    }
    // Online softmax: rows g (e = 0, 1) and g + 8 (e = 2, 3) of each m-tile; a row's 4 threads
    // are the lanes of a quad.
    float corr[MT][2];
    bool grew = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float mx = mrow[mt][hr];
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hr], s[mt][nt][2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float ms = mx == -INFINITY ? 0.0f : mx * sl2;  // never -inf - -inf
        const bool changed = mx != mrow[mt][hr];
        corr[mt][hr] = changed ? fast_exp2(mrow[mt][hr] * sl2 - ms) : 1.0f;  // 0 on the first tile (old max -inf)
        grew |= changed;
        mrow[mt][hr] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
          for (int e = 2 * hr; e < 2 * hr + 2; ++e) {
            const float p = fast_exp2(fmaf(s[mt][nt][e], sl2, -ms));
            s[mt][nt][e] = p;
            sum += p;
          }
        lrow[mt][hr] = lrow[mt][hr] * corr[mt][hr] + sum;
      }
    // Rescale O only when some row of the warp has a new max: otherwise every factor is
    // 2^(m*c - m*c) = 2^0 = 1 and the products would not change a bit.
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[mt][dt][e] *= corr[mt][e / 2];
    }
    // O += P V: k16 steps over the tile's keys, n-tiles over D. P goes to E first (half the
    // registers of the fp32 scores).
    unsigned pa[MT][BC / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < BC / 16; ++kk) acc_to_a<E>(pa[mt][kk], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned vb[4];
        ldsm_x4_t(vb, v_addr + buf + at<kLd>(kk * 16, dp * 16));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_m16n8k16<E>(o[mt][2 * dp], pa[mt][kk], vb[0], vb[1]);
          mma_m16n8k16<E>(o[mt][2 * dp + 1], pa[mt][kk], vb[2], vb[3]);
        }
      }
    }
  }
  cp_async_wait_all();  // the last (empty) group

  // out = O / l, lse = (m log2(e)/sqrt(D) + log2 l) ln 2. The warp's own Q rows stage the output.
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float l = lrow[mt][hr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[hr] = l > 0.0f ? 1.0f / l : 0.0f;
      const int row = m0 + wrow + mt * 16 + lane / 4 + 8 * hr;
      if (a.lse != nullptr && lane % 4 == 0 && row < T)
        a.lse[b * a.l0 + h * a.l1 + row] = (mrow[mt][hr] * sl2 + log2f(l)) * kFaLn2;
    }
    acc_to_smem<D>(sQ, kLd, wrow + mt * 16, o[mt], inv[0], inv[1], lane);
  }
  __syncwarp();
  auto* og = static_cast<E*>(a.out) + b * a.o0 + h * a.o2;
  smem_rows_to_global<kWarpRows, D>(sQ + wrow * kLd, kLd, og, a.o1, m0 + wrow, T, lane);
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward, tensor cores

/// dK/dV kernel: 64 keys a block (16 a warp), query tiles of BR rows.
template <int D, int BR>
struct DkdvTile {
  static constexpr int kKeys = 64, kLd = D + 8;
  static constexpr int kKV = kKeys * kLd, kQ = BR * kLd;  // elements
  static constexpr int kSmem =
      (2 * kKV + 4 * kQ) * kMmaElemBytes + 4 * BR * static_cast<int>(sizeof(float));
};
template <int D>
struct DkdvShape {
  static constexpr int BR = 64;
};

template <class E, int D, int BR>
__global__ void __launch_bounds__(128, 2) fa_backward_dkdv_mma_kernel(const FaArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  using C = DkdvTile<D, BR>;
  constexpr int kLd = C::kLd;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  E* sK = reinterpret_cast<E*>(fa_smem);
  E* sV = sK + C::kKV;
  E* sQ = sV + C::kKV;                              // two buffers of BR rows
  E* sO = sQ + 2 * C::kQ;                           // dO, two buffers
  float* sL = reinterpret_cast<float*>(sO + 2 * C::kQ);  // lse, two buffers of BR
  float* sD = sL + 2 * BR;                               // delta, two buffers of BR
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int T = a.T, group = a.group;
  const int n0 = static_cast<int>(blockIdx.x) * C::kKeys, kvh = static_cast<int>(blockIdx.y),
            b = static_cast<int>(blockIdx.z);
  const int m_first = a.causal ? n0 / BR : 0;  // query tiles before it see none of these keys
  const int per_head = (T + BR - 1) / BR - m_first;
  const int iters = group * per_head;

  tile_to_smem<C::kKeys, D, 128>(
      sK, static_cast<const E*>(a.k) + b * a.k0 + static_cast<index_t>(n0) * a.k1 + kvh * a.k2, a.k1, T - n0, tid);
  tile_to_smem<C::kKeys, D, 128>(
      sV, static_cast<const E*>(a.v) + b * a.v0 + static_cast<index_t>(n0) * a.v1 + kvh * a.v2, a.v1, T - n0, tid);
  // Query tile `it` (head kvh * group + it / per_head, tile m_first + it % per_head) into buffer `buf`.
  const auto load_tile = [&](int it, int buf) {
    const int h = kvh * group + it / per_head, m0 = (m_first + it % per_head) * BR;
    tile_to_smem<BR, D, 128>(sQ + buf * C::kQ,
                             static_cast<const E*>(a.q) + b * a.q0 + static_cast<index_t>(m0) * a.q1 + h * a.q2,
                             a.q1, T - m0, tid);
    tile_to_smem<BR, D, 128>(
        sO + buf * C::kQ, static_cast<const E*>(a.dout) + b * a.do0 + static_cast<index_t>(m0) * a.do1 + h * a.do2,
        a.do1, T - m0, tid);
    if (tid < BR) {
      const bool ok = m0 + tid < T;
      const index_t row = ok ? m0 + tid : m0;
      cp_async4(sL + buf * BR + tid, a.lse_in + b * a.l0 + h * a.l1 + row, ok);
      cp_async4(sD + buf * BR + tid, a.delta + (static_cast<index_t>(b) * a.H + h) * T + row, ok);
    }
  };
  load_tile(0, 0);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.0f;
  const float sl2 = a.scale_log2;
  const int wkey = warp * 16;                              // the warp's first key in the tile
  const int key0 = n0 + wkey + lane / 4, key1 = key0 + 8;  // the thread's two keys (rows g, g + 8)
  const unsigned k_addr = lds_a<kLd>(sK + wkey * kLd, lane), v_addr = lds_a<kLd>(sV + wkey * kLd, lane);
  const unsigned qt_addr = lds_bt<kLd>(sQ, lane), q_addr = lds_b<kLd>(sQ, lane);
  const unsigned ot_addr = lds_bt<kLd>(sO, lane), o_addr = lds_b<kLd>(sO, lane);

  for (int it = 0; it < iters; ++it) {
    cp_async_wait_all();
    __syncthreads();
    if (it + 1 < iters) load_tile(it + 1, (it + 1) % 2);
    cp_async_commit();
    const int buf = it % 2, m0 = (m_first + it % per_head) * BR;
    const unsigned boff = buf * C::kQ * 2;  // bytes
    const float* ls = sL + buf * BR;
    const float* ds_ = sD + buf * BR;

    // S^T = K Q^T: [16 keys, BR queries] per warp.
    float st[BR / 8][4];
#pragma unroll
    for (int nt = 0; nt < BR / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      unsigned ka[4];
      ldsm_x4(ka, k_addr + at<kLd>(0, ks * 16));
#pragma unroll
      for (int np = 0; np < BR / 16; ++np) {
        unsigned qb[4];
        ldsm_x4(qb, qt_addr + boff + at<kLd>(np * 16, ks * 16));
        mma_m16n8k16<E>(st[2 * np], ka, qb[0], qb[1]);
        mma_m16n8k16<E>(st[2 * np + 1], ka, qb[2], qb[3]);
      }
    }
    // P^T = exp(S^T / sqrt(D) - lse) (in log2 units), zero where masked.
    const bool mask = m0 + BR > T || n0 + C::kKeys > T || (a.causal && n0 + wkey + 15 > m0);
#pragma unroll
    for (int nt = 0; nt < BR / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qc = nt * 8 + 2 * (lane % 4) + e % 2;
        float p = fast_exp2(fmaf(st[nt][e], sl2, -ls[qc] * kFaLog2e));
        if (mask) {
          const int qrow = m0 + qc, key = e < 2 ? key0 : key1;
          if (qrow >= T || key >= T || (a.causal && key > qrow)) p = 0.0f;
        }
        st[nt][e] = p;
      }
      // dV += P^T dO.
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk) {
      unsigned pa[4];
      acc_to_a<E>(pa, st[2 * kk], st[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned ob[4];
        ldsm_x4_t(ob, o_addr + boff + at<kLd>(kk * 16, dp * 16));
        mma_m16n8k16<E>(dv[2 * dp], pa, ob[0], ob[1]);
        mma_m16n8k16<E>(dv[2 * dp + 1], pa, ob[2], ob[3]);
      }
    }
    // dP^T = V dO^T, then dS^T = P^T (dP^T - delta) in place.
    float dpt[BR / 8][4];
#pragma unroll
    for (int nt = 0; nt < BR / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      unsigned va[4];
      ldsm_x4(va, v_addr + at<kLd>(0, ks * 16));
#pragma unroll
      for (int np = 0; np < BR / 16; ++np) {
        unsigned ob[4];
        ldsm_x4(ob, ot_addr + boff + at<kLd>(np * 16, ks * 16));
        mma_m16n8k16<E>(dpt[2 * np], va, ob[0], ob[1]);
        mma_m16n8k16<E>(dpt[2 * np + 1], va, ob[2], ob[3]);
      }
    }
#pragma unroll
    for (int nt = 0; nt < BR / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[nt][e] = st[nt][e] * (dpt[nt][e] - ds_[nt * 8 + 2 * (lane % 4) + e % 2]);
        // dK += dS^T Q (scaled at the end).
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk) {
      unsigned sa[4];
      acc_to_a<E>(sa, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned qb[4];
        ldsm_x4_t(qb, q_addr + boff + at<kLd>(kk * 16, dp * 16));
        mma_m16n8k16<E>(dk[2 * dp], sa, qb[0], qb[1]);
        mma_m16n8k16<E>(dk[2 * dp + 1], sa, qb[2], qb[3]);
      }
    }
  }
  cp_async_wait_all();

  // The warp's own K and V rows stage dk and dv.
  __syncwarp();
  acc_to_smem<D>(sK, kLd, wkey, dk, a.scale, a.scale, lane);
  acc_to_smem<D>(sV, kLd, wkey, dv, 1.0f, 1.0f, lane);
  __syncwarp();
  smem_rows_to_global<16, D>(sK + wkey * kLd, kLd, static_cast<E*>(a.dk) + b * a.dk0 + kvh * a.dk2, a.dk1,
                             n0 + wkey, T, lane);
  smem_rows_to_global<16, D>(sV + wkey * kLd, kLd, static_cast<E*>(a.dv) + b * a.dv0 + kvh * a.dv2, a.dv1,
                             n0 + wkey, T, lane);
#endif
}

/// dQ kernel: 64 query rows a block (16 a warp), key tiles of BC keys.
template <int D, int BC>
struct DqTile {
  static constexpr int kRows = 64, kLd = D + 8;
  static constexpr int kQ = kRows * kLd, kKV = BC * kLd;
  static constexpr int kSmem = (2 * kQ + 4 * kKV) * kMmaElemBytes;
};
template <int D>
struct DqShape {
  static constexpr int BC = 64;
};

template <class E, int D, int BC>
__global__ void __launch_bounds__(128, 2) fa_backward_dq_mma_kernel(const FaArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  using C = DqTile<D, BC>;
  constexpr int kLd = C::kLd;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  E* sQ = reinterpret_cast<E*>(fa_smem);
  E* sO = sQ + C::kQ;
  E* sK = sO + C::kQ;       // two buffers of BC rows
  E* sV = sK + 2 * C::kKV;  // two buffers of BC rows
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int T = a.T;
  const int mb =
      a.causal ? static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x);
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z), g = h / a.group;
  const int m0 = mb * C::kRows, wrow = warp * 16;
  const auto* kg = static_cast<const E*>(a.k) + b * a.k0 + g * a.k2;
  const auto* vg = static_cast<const E*>(a.v) + b * a.v0 + g * a.v2;
  const int kend = a.causal ? min(T, m0 + C::kRows) : T;
  const int nblocks = (kend + BC - 1) / BC;

  tile_to_smem<C::kRows, D, 128>(
      sQ, static_cast<const E*>(a.q) + b * a.q0 + static_cast<index_t>(m0) * a.q1 + h * a.q2, a.q1, T - m0, tid);
  tile_to_smem<C::kRows, D, 128>(
      sO, static_cast<const E*>(a.dout) + b * a.do0 + static_cast<index_t>(m0) * a.do1 + h * a.do2, a.do1, T - m0,
      tid);
  tile_to_smem<BC, D, 128>(sK, kg, a.k1, T, tid);
  tile_to_smem<BC, D, 128>(sV, vg, a.v1, T, tid);
  cp_async_commit();

  // The thread's rows g and g + 8 of the warp: lse in log2 units and delta (0 past the end).
  const int row0 = m0 + wrow + lane / 4, row1 = row0 + 8;
  const index_t lrow = b * a.l0 + h * a.l1;
  const index_t drow = (static_cast<index_t>(b) * a.H + h) * T;
  const float lse0 = row0 < T ? a.lse_in[lrow + row0] * kFaLog2e : 0.0f;
  const float lse1 = row1 < T ? a.lse_in[lrow + row1] * kFaLog2e : 0.0f;
  const float del0 = row0 < T ? a.delta[drow + row0] : 0.0f;
  const float del1 = row1 < T ? a.delta[drow + row1] : 0.0f;

  float dq[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq[dt][e] = 0.0f;
  const float sl2 = a.scale_log2;
  const unsigned q_addr = lds_a<kLd>(sQ + wrow * kLd, lane), o_addr = lds_a<kLd>(sO + wrow * kLd, lane);
  const unsigned kt_addr = lds_bt<kLd>(sK, lane), k_addr = lds_b<kLd>(sK, lane), vt_addr = lds_bt<kLd>(sV, lane);

  for (int j = 0; j < nblocks; ++j) {
    cp_async_wait_all();
    __syncthreads();
    if (j + 1 < nblocks) {
      const int n1 = (j + 1) * BC, nb = (j + 1) % 2;
      tile_to_smem<BC, D, 128>(sK + nb * C::kKV, kg + static_cast<index_t>(n1) * a.k1, a.k1, T - n1, tid);
      tile_to_smem<BC, D, 128>(sV + nb * C::kKV, vg + static_cast<index_t>(n1) * a.v1, a.v1, T - n1, tid);
    }
    cp_async_commit();
    const unsigned buf = (j % 2) * C::kKV * 2;  // bytes
    const int n0 = j * BC;

    // S = Q K^T and dP = dO V^T: [16 rows, BC keys] per warp.
    float s[BC / 8][4], dp[BC / 8][4];
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      unsigned qa[4];
      ldsm_x4(qa, q_addr + at<kLd>(0, ks * 16));
#pragma unroll
      for (int np = 0; np < BC / 16; ++np) {
        unsigned kb[4];
        ldsm_x4(kb, kt_addr + buf + at<kLd>(np * 16, ks * 16));
        mma_m16n8k16<E>(s[2 * np], qa, kb[0], kb[1]);
        mma_m16n8k16<E>(s[2 * np + 1], qa, kb[2], kb[3]);
      }
    }
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      unsigned oa[4];
      ldsm_x4(oa, o_addr + at<kLd>(0, ks * 16));
#pragma unroll
      for (int np = 0; np < BC / 16; ++np) {
        unsigned vb[4];
        ldsm_x4(vb, vt_addr + buf + at<kLd>(np * 16, ks * 16));
        mma_m16n8k16<E>(dp[2 * np], oa, vb[0], vb[1]);
        mma_m16n8k16<E>(dp[2 * np + 1], oa, vb[2], vb[3]);
      }
    }
    // dS = P (dP - delta), P = exp2(S log2(e)/sqrt(D) - lse log2(e)), zero where masked.
    const bool mask = n0 + BC > T || (a.causal && n0 + BC - 1 > m0 + wrow);
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool lower = e < 2;
        float p = fast_exp2(fmaf(s[nt][e], sl2, -(lower ? lse0 : lse1)));
        if (mask) {
          const int col = n0 + nt * 8 + 2 * (lane % 4) + e % 2, row = lower ? row0 : row1;
          if (col >= T || (a.causal && col > row)) p = 0.0f;
        }
        dp[nt][e] = p * (dp[nt][e] - (lower ? del0 : del1));
      }
      // dQ += dS K.
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      unsigned sa[4];
      acc_to_a<E>(sa, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        unsigned kb[4];
        ldsm_x4_t(kb, k_addr + buf + at<kLd>(kk * 16, dd * 16));
        mma_m16n8k16<E>(dq[2 * dd], sa, kb[0], kb[1]);
        mma_m16n8k16<E>(dq[2 * dd + 1], sa, kb[2], kb[3]);
      }
    }
  }
  cp_async_wait_all();

  __syncwarp();
  acc_to_smem<D>(sQ, kLd, wrow, dq, a.scale, a.scale, lane);
  __syncwarp();
  smem_rows_to_global<16, D>(sQ + wrow * kLd, kLd, static_cast<E*>(a.dq) + b * a.dq0 + h * a.dq2, a.dq1, m0 + wrow,
                             T, lane);
#endif
}

// ---------------------------------------------------------------------------------------------
// SIMT path (fp32 storage, unaligned bf16 / fp16, pre-sm_80): 32 x 32 tiles in fp32 shared memory,
// a thread per (row, column quarter): columns c4 + 4 i, so a quad's loads of a shared row are one
// broadcast and the 8 rows of a warp fall in different banks (rows padded to D + 1 floats).

inline constexpr int kSimtTile = 32;

/// Rows [0, 32) x [0, D) of a T tile (row r at src + r * ld) into fp32 shared memory (stride D + 1
/// or D), zero past `valid` rows.
template <class T, int D, int LD>
__device__ __forceinline__ void tile_to_f32(float* dst, const T* src, index_t ld, int valid, int tid) {
  for (int i = tid; i < kSimtTile * D; i += 128) {
    const int r = i / D, d = i % D;
    dst[r * LD + d] = r < valid ? to_f32(src[static_cast<index_t>(r) * ld + d]) : 0.0f;
  }
}

template <int D>
struct SimtSmem {
  static constexpr int kLd = D + 1, kP = kSimtTile + 1;
  static constexpr int kTile = kSimtTile * kLd, kPTile = kSimtTile * kP;
  static constexpr int kForward = (3 * kTile + kPTile) * static_cast<int>(sizeof(float));
  static constexpr int kDkdv = (4 * kTile + 2 * kPTile + 2 * kSimtTile) * static_cast<int>(sizeof(float));
  static constexpr int kDq = (4 * kTile + kPTile) * static_cast<int>(sizeof(float));
};

template <class ST, int D>
__global__ void __launch_bounds__(128, 4) fa_forward_simt_kernel(const FaArgs a) {
  constexpr int R = kSimtTile, L = D + 1, P = R + 1, E = D / 4;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  float* sQ = reinterpret_cast<float*>(fa_smem);
  float* sK = sQ + R * L;
  float* sV = sK + R * L;
  float* sP = sV + R * L;
  const int tid = static_cast<int>(threadIdx.x), r = tid / 4, c4 = tid % 4;
  const int T = a.T;
  const int mb =
      a.causal ? static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x);
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z), g = h / a.group;
  const int m0 = mb * R, row = m0 + r;
  const auto* kg = static_cast<const ST*>(a.k) + b * a.k0 + g * a.k2;
  const auto* vg = static_cast<const ST*>(a.v) + b * a.v0 + g * a.v2;
  tile_to_f32<ST, D, L>(sQ, static_cast<const ST*>(a.q) + b * a.q0 + static_cast<index_t>(m0) * a.q1 + h * a.q2, a.q1,
                        T - m0, tid);
  const int kend = a.causal ? min(T, m0 + R) : T;
  const int nblocks = (kend + R - 1) / R;
  const float sl2 = a.scale_log2;
  float o[E];
#pragma unroll
  for (int e = 0; e < E; ++e) o[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j < nblocks; ++j) {
    const int n0 = j * R;
    __syncthreads();  // the previous tile's K, V and P are no longer read
    tile_to_f32<ST, D, L>(sK, kg + static_cast<index_t>(n0) * a.k1, a.k1, T - n0, tid);
    tile_to_f32<ST, D, L>(sV, vg + static_cast<index_t>(n0) * a.v1, a.v1, T - n0, tid);
    __syncthreads();
    float s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = 0.0f;
    for (int d = 0; d < D; ++d) {
      const float qd = sQ[r * L + d];
#pragma unroll
      for (int i = 0; i < 8; ++i) s[i] = fmaf(qd, sK[(c4 + 4 * i) * L + d], s[i]);
    }
    float mx = m;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int key = n0 + c4 + 4 * i;
      if (key >= T || (a.causal && key > row)) s[i] = -INFINITY;
      mx = fmaxf(mx, s[i]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float ms = mx == -INFINITY ? 0.0f : mx * sl2;
    const float corr = fast_exp2(m * sl2 - ms);
    m = mx;
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float p = fast_exp2(fmaf(s[i], sl2, -ms));
      sP[r * P + c4 + 4 * i] = p;
      sum += p;
    }
    l = l * corr + sum;
#pragma unroll
    for (int e = 0; e < E; ++e) o[e] *= corr;
    __syncwarp();  // a row's P is written and read by its own quad
    for (int c = 0; c < R; ++c) {
      const float p = sP[r * P + c];
#pragma unroll
      for (int e = 0; e < E; ++e) o[e] = fmaf(p, sV[c * L + c4 + 4 * e], o[e]);
    }
  }
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  if (row >= T) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  if (a.lse != nullptr && c4 == 0) a.lse[b * a.l0 + h * a.l1 + row] = (m * sl2 + log2f(l)) * kFaLn2;
  ST* og = static_cast<ST*>(a.out) + b * a.o0 + static_cast<index_t>(row) * a.o1 + h * a.o2;
#pragma unroll
  for (int e = 0; e < E; ++e) og[c4 + 4 * e] = from_f32<ST>(o[e] * inv);
}

template <class ST, int D>
__global__ void __launch_bounds__(128, 4) fa_backward_dkdv_simt_kernel(const FaArgs a) {
  constexpr int R = kSimtTile, L = D + 1, P = R + 1, E = D / 4;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  float* sK = reinterpret_cast<float*>(fa_smem);
  float* sV = sK + R * L;
  float* sQ = sV + R * L;
  float* sO = sQ + R * L;  // dO
  float* sP = sO + R * L;
  float* sS = sP + R * P;  // dS
  float* sL = sS + R * P;  // lse in log2 units
  float* sD = sL + R;      // delta
  const int tid = static_cast<int>(threadIdx.x), c = tid / 4, r4 = tid % 4;
  const int T = a.T, group = a.group;
  const int n0 = static_cast<int>(blockIdx.x) * R, kvh = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int key = n0 + c;
  tile_to_f32<ST, D, L>(sK, static_cast<const ST*>(a.k) + b * a.k0 + static_cast<index_t>(n0) * a.k1 + kvh * a.k2, a.k1,
                        T - n0, tid);
  tile_to_f32<ST, D, L>(sV, static_cast<const ST*>(a.v) + b * a.v0 + static_cast<index_t>(n0) * a.v1 + kvh * a.v2, a.v1,
                        T - n0, tid);
  const int m_first = a.causal ? n0 / R : 0, mblocks = (T + R - 1) / R;
  const float sl2 = a.scale_log2;
  float dk[E], dv[E];
#pragma unroll
  for (int e = 0; e < E; ++e) dk[e] = dv[e] = 0.0f;
  for (int hi = 0; hi < group; ++hi) {
    const int h = kvh * group + hi;
    for (int mb = m_first; mb < mblocks; ++mb) {
      const int m0 = mb * R;
      __syncthreads();
      tile_to_f32<ST, D, L>(sQ, static_cast<const ST*>(a.q) + b * a.q0 + static_cast<index_t>(m0) * a.q1 + h * a.q2,
                            a.q1, T - m0, tid);
      tile_to_f32<ST, D, L>(sO,
                            static_cast<const ST*>(a.dout) + b * a.do0 + static_cast<index_t>(m0) * a.do1 + h * a.do2,
                            a.do1, T - m0, tid);
      if (tid < R) {
        const bool ok = m0 + tid < T;
        sL[tid] = ok ? a.lse_in[b * a.l0 + h * a.l1 + m0 + tid] * kFaLog2e : 0.0f;
        sD[tid] = ok ? a.delta[(static_cast<index_t>(b) * a.H + h) * T + m0 + tid] : 0.0f;
      }
      __syncthreads();
      float st[8], dpt[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) st[i] = dpt[i] = 0.0f;
      for (int d = 0; d < D; ++d) {
        const float kd = sK[c * L + d], vd = sV[c * L + d];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          st[i] = fmaf(kd, sQ[(r4 + 4 * i) * L + d], st[i]);
          dpt[i] = fmaf(vd, sO[(r4 + 4 * i) * L + d], dpt[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int qc = r4 + 4 * i, qrow = m0 + qc;
        float p = fast_exp2(fmaf(st[i], sl2, -sL[qc]));
        if (qrow >= T || key >= T || (a.causal && key > qrow)) p = 0.0f;
        sP[c * P + qc] = p;
        sS[c * P + qc] = p * (dpt[i] - sD[qc]);
      }
      __syncwarp();
      for (int rr = 0; rr < R; ++rr) {
        const float p = sP[c * P + rr], ds = sS[c * P + rr];
#pragma unroll
        for (int e = 0; e < E; ++e) {
          dv[e] = fmaf(p, sO[rr * L + r4 + 4 * e], dv[e]);
          dk[e] = fmaf(ds, sQ[rr * L + r4 + 4 * e], dk[e]);
        }
      }
    }
  }
  if (key >= T) return;
  ST* dkg = static_cast<ST*>(a.dk) + b * a.dk0 + static_cast<index_t>(key) * a.dk1 + kvh * a.dk2;
  ST* dvg = static_cast<ST*>(a.dv) + b * a.dv0 + static_cast<index_t>(key) * a.dv1 + kvh * a.dv2;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    dkg[r4 + 4 * e] = from_f32<ST>(dk[e] * a.scale);
    dvg[r4 + 4 * e] = from_f32<ST>(dv[e]);
  }
}

template <class ST, int D>
__global__ void __launch_bounds__(128, 4) fa_backward_dq_simt_kernel(const FaArgs a) {
  constexpr int R = kSimtTile, L = D + 1, P = R + 1, E = D / 4;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  float* sQ = reinterpret_cast<float*>(fa_smem);
  float* sO = sQ + R * L;
  float* sK = sO + R * L;
  float* sV = sK + R * L;
  float* sS = sV + R * L;
  const int tid = static_cast<int>(threadIdx.x), r = tid / 4, c4 = tid % 4;
  const int T = a.T;
  const int mb =
      a.causal ? static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x);
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z), g = h / a.group;
  const int m0 = mb * R, row = m0 + r;
  const auto* kg = static_cast<const ST*>(a.k) + b * a.k0 + g * a.k2;
  const auto* vg = static_cast<const ST*>(a.v) + b * a.v0 + g * a.v2;
  tile_to_f32<ST, D, L>(sQ, static_cast<const ST*>(a.q) + b * a.q0 + static_cast<index_t>(m0) * a.q1 + h * a.q2, a.q1,
                        T - m0, tid);
  tile_to_f32<ST, D, L>(sO, static_cast<const ST*>(a.dout) + b * a.do0 + static_cast<index_t>(m0) * a.do1 + h * a.do2,
                        a.do1, T - m0, tid);
  const float lse2 = row < T ? a.lse_in[b * a.l0 + h * a.l1 + row] * kFaLog2e : 0.0f;
  const float del = row < T ? a.delta[(static_cast<index_t>(b) * a.H + h) * T + row] : 0.0f;
  const int kend = a.causal ? min(T, m0 + R) : T;
  const int nblocks = (kend + R - 1) / R;
  const float sl2 = a.scale_log2;
  float dq[E];
#pragma unroll
  for (int e = 0; e < E; ++e) dq[e] = 0.0f;
  for (int j = 0; j < nblocks; ++j) {
    const int n0 = j * R;
    __syncthreads();
    tile_to_f32<ST, D, L>(sK, kg + static_cast<index_t>(n0) * a.k1, a.k1, T - n0, tid);
    tile_to_f32<ST, D, L>(sV, vg + static_cast<index_t>(n0) * a.v1, a.v1, T - n0, tid);
    __syncthreads();
    float s[8], dp[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = dp[i] = 0.0f;
    for (int d = 0; d < D; ++d) {
      const float qd = sQ[r * L + d], od = sO[r * L + d];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        s[i] = fmaf(qd, sK[(c4 + 4 * i) * L + d], s[i]);
        dp[i] = fmaf(od, sV[(c4 + 4 * i) * L + d], dp[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int kc = c4 + 4 * i, key = n0 + kc;
      float p = fast_exp2(fmaf(s[i], sl2, -lse2));
      if (key >= T || (a.causal && key > row)) p = 0.0f;
      sS[r * P + kc] = p * (dp[i] - del);
    }
    __syncwarp();
    for (int cc = 0; cc < R; ++cc) {
      const float ds = sS[r * P + cc];
#pragma unroll
      for (int e = 0; e < E; ++e) dq[e] = fmaf(ds, sK[cc * L + c4 + 4 * e], dq[e]);
    }
  }
  if (row >= T) return;
  ST* dqg = static_cast<ST*>(a.dq) + b * a.dq0 + static_cast<index_t>(row) * a.dq1 + h * a.dq2;
#pragma unroll
  for (int e = 0; e < E; ++e) dqg[c4 + 4 * e] = from_f32<ST>(dq[e] * a.scale);
}

/// delta[b, h, t] = sum_d dout[b, t, h, d] out[b, t, h, d] in fp32: a warp per row (b, t, h).
template <class T>
__global__ void __launch_bounds__(256) fa_delta_kernel(const FaArgs a, int D, index_t rows) {
  const index_t w = static_cast<index_t>(blockIdx.x) * 8 + threadIdx.x / 32;
  if (w >= rows) return;  // whole warps
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t h = w % a.H, t = (w / a.H) % a.T, b = w / (static_cast<index_t>(a.H) * a.T);
  const T* o = static_cast<const T*>(a.o) + b * a.o0 + t * a.o1 + h * a.o2;
  const T* d = static_cast<const T*>(a.dout) + b * a.do0 + t * a.do1 + h * a.do2;
  float s = 0.0f;
  for (int i = lane; i < D; i += 32) s = fmaf(to_f32(d[i]), to_f32(o[i]), s);
  s = warp_sum(s);
  if (lane == 0) a.delta[(b * a.H + h) * a.T + t] = s;
}

// ---------------------------------------------------------------------------------------------
// Decode

inline constexpr int kDecodeWarps = 8;

/// Loads E consecutive elements as fp32: one aligned vector access when VEC, else E scalars.
template <int E, bool VEC, class T>
__device__ __forceinline__ void load_row(const T* p, float (&out)[E]) {
  if constexpr (VEC && E > 1) {
    load_f32<E>(p, out);
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) out[e] = to_f32(p[e]);
  }
}

template <class T, int D, bool VEC>
__global__ void __launch_bounds__(kDecodeWarps * 32) fa_decode_kernel(const FaArgs a) {
  constexpr int E = D / 32, W = kDecodeWarps;
  __shared__ float sM[W], sL[W];
  __shared__ float sOut[W][D];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int h = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.y), g = h / a.group;
  const int len = a.T;
  float q[E];
  load_row<E, VEC>(static_cast<const T*>(a.q) + b * a.q0 + h * a.q1 + lane * E, q);
  const float sl2 = a.scale_log2;
#pragma unroll
  for (int e = 0; e < E; ++e) q[e] *= sl2;  // scores straight in log2 units
  const int chunk = (len + W - 1) / W, u0 = min(len, warp * chunk), u1 = min(len, u0 + chunk);
  const T* kg = static_cast<const T*>(a.k) + b * a.k0 + g * a.k2 + lane * E;
  const T* vg = static_cast<const T*>(a.v) + b * a.v0 + g * a.v2 + lane * E;
  float m = -INFINITY, l = 0.0f, o[E];
#pragma unroll
  for (int e = 0; e < E; ++e) o[e] = 0.0f;
  int u = u0;
  for (; u + 4 <= u1; u += 4) {  // four keys a step: eight rows in flight
    float kr[4][E], vr[4][E], s[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      load_row<E, VEC>(kg + static_cast<index_t>(u + i) * a.k1, kr[i]);
      load_row<E, VEC>(vg + static_cast<index_t>(u + i) * a.v1, vr[i]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float t = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) t = fmaf(q[e], kr[i][e], t);
      s[i] = warp_sum(t);
    }
    const float mx = fmaxf(fmaxf(m, fmaxf(s[0], s[1])), fmaxf(s[2], s[3]));
    const float corr = fast_exp2(m - mx);
    float p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = fast_exp2(s[i] - mx);
    l = l * corr + ((p[0] + p[1]) + (p[2] + p[3]));
#pragma unroll
    for (int e = 0; e < E; ++e)
      o[e] = fmaf(p[3], vr[3][e], fmaf(p[2], vr[2][e], fmaf(p[1], vr[1][e], fmaf(p[0], vr[0][e], o[e] * corr))));
    m = mx;
  }
  for (; u < u1; ++u) {
    float kr[E], vr[E];
    load_row<E, VEC>(kg + static_cast<index_t>(u) * a.k1, kr);
    load_row<E, VEC>(vg + static_cast<index_t>(u) * a.v1, vr);
    float t = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) t = fmaf(q[e], kr[e], t);
    const float s = warp_sum(t);
    const float mx = fmaxf(m, s);
    const float corr = fast_exp2(m - mx), p = fast_exp2(s - mx);
    l = l * corr + p;
#pragma unroll
    for (int e = 0; e < E; ++e) o[e] = fmaf(p, vr[e], o[e] * corr);
    m = mx;
  }
  if (lane == 0) {
    sM[warp] = m;
    sL[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) sOut[warp][lane * E + e] = o[e];
  __syncthreads();
  if (tid >= D) return;
  float mall = -INFINITY;
#pragma unroll
  for (int w = 0; w < W; ++w) mall = fmaxf(mall, sM[w]);
  float lall = 0.0f, acc = 0.0f;
#pragma unroll
  for (int w = 0; w < W; ++w) {
    const float f = fast_exp2(sM[w] - mall);  // 0 for a warp that had no keys (m = -inf)
    lall = fmaf(sL[w], f, lall);
    acc = fmaf(sOut[w][tid], f, acc);
  }
  static_cast<T*>(a.out)[b * a.o0 + h * a.o1 + tid] = from_f32<T>(acc / lall);
}

// ---------------------------------------------------------------------------------------------
// Host side

/// Raises a kernel's dynamic shared-memory limit when it needs more than the default 48 KB.
template <class K>
void fa_set_smem(K kernel, int bytes) {
  if (bytes > 48 * 1024)
    REASON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

/// Whether the current device runs the tensor-core kernels (sm_80 or newer).
inline bool fa_device_has_mma() {
  int dev = 0, major = 0;
  REASON_CUDA_CHECK(cudaGetDevice(&dev));
  REASON_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 8;
}

inline void fa_check_head_dim(const char* fn, const char* name, index_t D, const std::string& shape) {
  REASON_CHECK(D == 32 || D == 64 || D == 128, fn, ": ", name, " has head dimension ", D, " (shape ", shape,
               "); supported head dimensions are 32, 64 and 128");
}

inline void fa_check_sizes(const char* fn, index_t B, index_t T, index_t H) {
  REASON_CHECK(T <= INT_MAX / 2, fn, ": sequence length ", T, " exceeds ", INT_MAX / 2);
  REASON_CHECK(B <= 65535 && H <= 65535, fn, ": batch ", B, " and heads ", H,
               " must each be at most 65535 (grid limits)");
}

template <class T, int Rank>
void fa_strides3(const View<T, Rank>& v, index_t& s0, index_t& s1, index_t& s2) {
  s0 = v.stride[0];
  s1 = v.stride[1];
  s2 = Rank > 3 ? v.stride[2] : 0;
}

template <class T>
FaArgs fa_args(const View<const T, 4>& q, const View<const T, 4>& k, const View<const T, 4>& v, bool causal, int D) {
  FaArgs a;
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  fa_strides3(q, a.q0, a.q1, a.q2);
  fa_strides3(k, a.k0, a.k1, a.k2);
  fa_strides3(v, a.v0, a.v1, a.v2);
  a.T = static_cast<int>(q.shape[1]);
  a.H = static_cast<int>(q.shape[2]);
  a.group = static_cast<int>(q.shape[2] / k.shape[2]);
  a.causal = causal ? 1 : 0;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  a.scale = static_cast<float>(scale);
  a.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  return a;
}

template <class T, int D>
void fa_launch_forward(const FaArgs& a, int B, bool mma, cudaStream_t stream) {
  if constexpr (is_half_storage_v<T>) {
    if (mma) {
      constexpr int MT = FwdShape<D>::MT, BC = FwdShape<D>::BC;
      using C = FwdTile<D, MT, BC>;
      const auto kernel = fa_forward_mma_kernel<T, D, MT, BC>;
      fa_set_smem(kernel, C::kSmem);
      const dim3 grid(static_cast<unsigned>((a.T + C::kRows - 1) / C::kRows), static_cast<unsigned>(a.H),
                      static_cast<unsigned>(B));
      kernel<<<grid, C::kThreads, C::kSmem, stream>>>(a);
      REASON_CUDA_CHECK(cudaGetLastError());
      return;
    }
  }
  const auto kernel = fa_forward_simt_kernel<T, D>;
  constexpr int smem = SimtSmem<D>::kForward;
  fa_set_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>((a.T + kSimtTile - 1) / kSimtTile), static_cast<unsigned>(a.H),
                  static_cast<unsigned>(B));
  kernel<<<grid, 128, smem, stream>>>(a);
  REASON_CUDA_CHECK(cudaGetLastError());
}

template <class T, int D>
void fa_launch_backward(const FaArgs& a, int B, int Hkv, bool mma, cudaStream_t stream) {
  if constexpr (is_half_storage_v<T>) {
    if (mma) {
      constexpr int BR = DkdvShape<D>::BR, BC = DqShape<D>::BC;
      using K1 = DkdvTile<D, BR>;
      using K2 = DqTile<D, BC>;
      const auto dkdv = fa_backward_dkdv_mma_kernel<T, D, BR>;
      const auto dq = fa_backward_dq_mma_kernel<T, D, BC>;
      fa_set_smem(dkdv, K1::kSmem);
      fa_set_smem(dq, K2::kSmem);
      const dim3 g1(static_cast<unsigned>((a.T + K1::kKeys - 1) / K1::kKeys), static_cast<unsigned>(Hkv),
                    static_cast<unsigned>(B));
      dkdv<<<g1, 128, K1::kSmem, stream>>>(a);
      REASON_CUDA_CHECK(cudaGetLastError());
      const dim3 g2(static_cast<unsigned>((a.T + K2::kRows - 1) / K2::kRows), static_cast<unsigned>(a.H),
                    static_cast<unsigned>(B));
      dq<<<g2, 128, K2::kSmem, stream>>>(a);
      REASON_CUDA_CHECK(cudaGetLastError());
      return;
    }
  }
  const auto dkdv = fa_backward_dkdv_simt_kernel<T, D>;
  const auto dq = fa_backward_dq_simt_kernel<T, D>;
  fa_set_smem(dkdv, SimtSmem<D>::kDkdv);
  fa_set_smem(dq, SimtSmem<D>::kDq);
  const unsigned tiles = static_cast<unsigned>((a.T + kSimtTile - 1) / kSimtTile);
  dkdv<<<dim3(tiles, static_cast<unsigned>(Hkv), static_cast<unsigned>(B)), 128, SimtSmem<D>::kDkdv, stream>>>(a);
  REASON_CUDA_CHECK(cudaGetLastError());
  dq<<<dim3(tiles, static_cast<unsigned>(a.H), static_cast<unsigned>(B)), 128, SimtSmem<D>::kDq, stream>>>(a);
  REASON_CUDA_CHECK(cudaGetLastError());
}

template <class T, int D>
void fa_launch_decode(const FaArgs& a, int B, bool vec, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(B));
  if (vec)
    fa_decode_kernel<T, D, true><<<grid, kDecodeWarps * 32, 0, stream>>>(a);
  else
    fa_decode_kernel<T, D, false><<<grid, kDecodeWarps * 32, 0, stream>>>(a);
  REASON_CUDA_CHECK(cudaGetLastError());
}

/// Whether every view allows 16-byte (8 x bf16 / fp16) cp.async: aligned base, strides multiples of 8.
template <class... V>
bool fa_aligned16(const V&... v) {
  return (vec_ok(v, 8) && ...);
}

}  // namespace detail

/// Forward. out = softmax(q k^T / sqrt(D)) v per (batch, head), causal or not; lse [B, H, T] fp32
/// (natural log of each row's sum of exp(scores)) written when non-empty. Device views.
template <class T>
void flash_attention_forward(View<const std::type_identity_t<T>, 4> q,  // q: [B, T, H, D]
                             View<const std::type_identity_t<T>, 4> k,  // k: [B, T, Hkv, D], H % Hkv == 0
                             View<const std::type_identity_t<T>, 4> v,  // v: [B, T, Hkv, D]
                             bool causal,                               // key u visible to row t iff u <= t
                             View<T, 4> out,                            // out: [B, T, H, D]
                             View<float, 3> lse,                        // lse: [B, H, T] fp32, or empty
                             cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::flash_attention_forward: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::flash_attention_forward";
  const auto sz = kernels::detail::check_attention<T>(fn, q, k, v, out, "out", true);
  detail::fa_check_head_dim(fn, "q", sz.Dk, shape_string(q.shape));
  if (lse.data != nullptr) expect_view(lse, fn, "lse", {sz.B, sz.H, sz.T});
  detail::fa_check_sizes(fn, sz.B, sz.T, sz.H);
  if (sz.B == 0 || sz.T == 0 || sz.H == 0) return;
  detail::FaArgs a = detail::fa_args<T>(q, k, v, causal, static_cast<int>(sz.Dk));
  a.out = out.data;
  detail::fa_strides3(out, a.o0, a.o1, a.o2);
  a.lse = lse.data;
  a.l0 = lse.stride[0];
  a.l1 = lse.stride[1];
  const bool mma =
      detail::is_half_storage_v<T> && detail::fa_aligned16(q, k, v, out) && detail::fa_device_has_mma();
  const int B = static_cast<int>(sz.B);
  switch (sz.Dk) {
    case 32:
      detail::fa_launch_forward<T, 32>(a, B, mma, stream);
      break;
    case 64:
      detail::fa_launch_forward<T, 64>(a, B, mma, stream);
      break;
    default:
      detail::fa_launch_forward<T, 128>(a, B, mma, stream);
      break;
  }
}

/// Backward. Overwrites dq [B, T, H, D], dk and dv [B, T, Hkv, D] from the forward's inputs, its
/// out and lse, and dout [B, T, H, D]. Deterministic (no atomics): the same inputs give the same bits.
template <class T>
void flash_attention_backward(FlashAttentionWorkspace& ws,                  // ws: scratch, one per stream
                              View<const std::type_identity_t<T>, 4> q,     // q: [B, T, H, D]
                              View<const std::type_identity_t<T>, 4> k,     // k: [B, T, Hkv, D]
                              View<const std::type_identity_t<T>, 4> v,     // v: [B, T, Hkv, D]
                              View<const std::type_identity_t<T>, 4> out,   // out: [B, T, H, D], the forward's
                              View<const float, 3> lse,                     // lse: [B, H, T], the forward's
                              View<const std::type_identity_t<T>, 4> dout,  // dout: [B, T, H, D]
                              bool causal,                                  // as in the forward
                              View<T, 4> dq,                                // dq: [B, T, H, D], overwritten
                              View<T, 4> dk,                                // dk: [B, T, Hkv, D], overwritten
                              View<T, 4> dv,                                // dv: [B, T, Hkv, D], overwritten
                              cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::flash_attention_backward: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::flash_attention_backward";
  const auto sz = kernels::detail::check_attention<T>(fn, q, k, v, out, "out", true);
  const index_t B = sz.B, Tn = sz.T, H = sz.H, Hkv = sz.Hkv, D = sz.Dk;
  detail::fa_check_head_dim(fn, "q", D, shape_string(q.shape));
  expect_view(lse, fn, "lse", {B, H, Tn});
  expect_view(dout, fn, "dout", {B, Tn, H, D});
  expect_view(dq, fn, "dq", {B, Tn, H, D});
  expect_view(dk, fn, "dk", {B, Tn, Hkv, D});
  expect_view(dv, fn, "dv", {B, Tn, Hkv, D});
  detail::fa_check_sizes(fn, B, Tn, H);
  if (B == 0 || Tn == 0 || H == 0) return;
  detail::FaArgs a = detail::fa_args<T>(q, k, v, causal, static_cast<int>(D));
  a.o = out.data;
  detail::fa_strides3(out, a.o0, a.o1, a.o2);
  a.dout = dout.data;
  detail::fa_strides3(dout, a.do0, a.do1, a.do2);
  a.dq = dq.data;
  detail::fa_strides3(dq, a.dq0, a.dq1, a.dq2);
  a.dk = dk.data;
  detail::fa_strides3(dk, a.dk0, a.dk1, a.dk2);
  a.dv = dv.data;
  detail::fa_strides3(dv, a.dv0, a.dv1, a.dv2);
  a.lse_in = lse.data;
  a.l0 = lse.stride[0];
  a.l1 = lse.stride[1];
  a.delta = ws.delta_for(B * H * Tn);

  const index_t rows = B * Tn * H;
  detail::fa_delta_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(a, static_cast<int>(D), rows);
  REASON_CUDA_CHECK(cudaGetLastError());
  const bool mma = detail::is_half_storage_v<T> && detail::fa_aligned16(q, k, v, dout, dq, dk, dv) &&
                   detail::fa_device_has_mma();
  const int Bi = static_cast<int>(B), Hkvi = static_cast<int>(Hkv);
  switch (D) {
    case 32:
      detail::fa_launch_backward<T, 32>(a, Bi, Hkvi, mma, stream);
      break;
    case 64:
      detail::fa_launch_backward<T, 64>(a, Bi, Hkvi, mma, stream);
      break;
    default:
      detail::fa_launch_backward<T, 128>(a, Bi, Hkvi, mma, stream);
      break;
  }
}

/// One decoding step: each query row q[b, h] attends to cache positions [0, len). Device views.
template <class T>
void attention_decode(View<const std::type_identity_t<T>, 3> q,        // q: [B, H, D]
                      View<const std::type_identity_t<T>, 4> k_cache,  // k_cache: [B, S, Hkv, D]
                      View<const std::type_identity_t<T>, 4> v_cache,  // v_cache: [B, S, Hkv, D]
                      index_t len,                                     // 1 <= len <= S
                      View<T, 3> out,                                  // out: [B, H, D]
                      cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::attention_decode: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::attention_decode";
  const auto sz = kernels::detail::check_decode<T>(fn, q, k_cache, v_cache, out, "k_cache", "v_cache", true);
  detail::fa_check_head_dim(fn, "q", sz.Dk, shape_string(q.shape));
  REASON_CHECK(len >= 1 && len <= sz.S, fn, ": len ", len, " is out of range [1, ", sz.S,
               "] of the cache (k_cache shape ", shape_string(k_cache.shape), ")");
  REASON_CHECK(len <= INT_MAX / 2, fn, ": len ", len, " exceeds ", INT_MAX / 2);
  REASON_CHECK(sz.B <= 65535, fn, ": batch ", sz.B, " exceeds 65535 (grid limit)");
  if (sz.B == 0 || sz.H == 0) return;
  detail::FaArgs a;
  a.q = q.data;
  a.q0 = q.stride[0];
  a.q1 = q.stride[1];
  a.k = k_cache.data;
  detail::fa_strides3(k_cache, a.k0, a.k1, a.k2);
  a.v = v_cache.data;
  detail::fa_strides3(v_cache, a.v0, a.v1, a.v2);
  a.out = out.data;
  a.o0 = out.stride[0];
  a.o1 = out.stride[1];
  a.T = static_cast<int>(len);
  a.H = static_cast<int>(sz.H);
  a.group = static_cast<int>(sz.group);
  const double scale = 1.0 / std::sqrt(static_cast<double>(sz.Dk));
  a.scale = static_cast<float>(scale);
  a.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  const int E = static_cast<int>(sz.Dk / 32);
  const bool vec = detail::vec_ok(q, E) && detail::vec_ok(k_cache, E) && detail::vec_ok(v_cache, E);
  const int B = static_cast<int>(sz.B);
  switch (sz.Dk) {
    case 32:
      detail::fa_launch_decode<T, 32>(a, B, vec, stream);
      break;
    case 64:
      detail::fa_launch_decode<T, 64>(a, B, vec, stream);
      break;
    default:
      detail::fa_launch_decode<T, 128>(a, B, vec, stream);
      break;
  }
}

}  // namespace reason::gpu
