// reason/kernels/sampler.cuh — token sampling on the GPU: the host samplers' contract over a batch.
//
//   gpu::SampleWorkspace ws;   // device scratch, grown on demand; one per stream
//   gpu::sample_rows(ws, policy, logits [B, V], rng [B], tokens [B], logp_sampled [B], logp_model [B], stream);
// draws one token per row of device logits (float, __nv_bfloat16 or __half; 16-bit logits are widened
// exactly to float and then treated as the host treats float logits) under one of the host policies
// of infer/sampler.hpp — infer::Greedy, Temperature, TopK<k>, TopP — passed as the object itself (its
// public temperature, p and k are read; this header does not include infer/: a policy is recognised
// by those members).
// Row r consumes exactly one 32-bit value of rng[r] (reason::Philox states in device memory, advanced
// in place), u = (bits + 0.5) 2^-32 as on the host, so a device rollout continues the host's streams
// value for value. logp_sampled and logp_model are optional (an empty View skips them).
//
// Per policy (T = temperature, mx = the row max, w(x) = exp((double(x) - mx) * (1.0 / double(T))), the
// host's expression; one block of 512 threads per row):
//   Greedy, or T = 0   argmax, ties to the lowest id; logp_sampled = 0.
//   Temperature        the CDF in token-id order. Pass 2 forms w in tiles of 4096 tokens (thread t owns
//                      8 consecutive ones); an inclusive scan per tile (per-thread sequential sums, a
//                      Kogge-Stone warp scan, warp offsets added in order) gives each tile's sum and the
//                      tile prefixes P_j. Pass 3 recomputes, exactly as pass 2 did, the first tile whose
//                      prefix exceeds u * total and picks its first token with w > 0 and P_j + c > u *
//                      total — the host's rule on the device's association of the same sums.
//   TopK<k <= 1024>    block-level selection on a 64-bit rank key (order-preserving float bits << 32 |
//                      ~id, -0 read as +0: larger key = higher logit, then lower id, the host's total
//                      order): a radix descent over 11/11/10/11/11/10-bit digits with shared-memory
//                      histograms (integer counts: exact, order-free) until at most 2048 tokens lie at
//                      or above the bucket holding the k-th key (for ordinary logits the first digit,
//                      counted during pass 1; ties need more), then those tokens are gathered, bitonic-
//                      sorted in shared memory, and one thread runs the host's code on the top k: the
//                      total summed in sorted order, the CDF inverted in sorted order — the host's sums
//                      in the host's order.
//   TopP               the same machinery for the top m tokens — m the most that the first digit
//                      admits, up to 2048 (the result does not depend on m); the top 2048 by the
//                      descent when even the top bucket holds more — then the host's nucleus loop
//                      (prefix mass in sorted order against p * total, total = the sum of w over the
//                      row in the device's association) in one thread. Rows whose nucleus is wider
//                      than m tokens — and every row of a TopK<k > 1024> — are listed in the status
//                      and finished by the full path: (order key, id) pairs of each listed row sorted by
//                      CUB's segmented radix sort (descending; stable, so ties keep id order), then
//                      tile scans over the sorted row as for Temperature (cut at k, or at the first
//                      prefix >= p * total; then u * mass located).
// logp_model = float(double(x_t) - (double(mx) + log(sum))), sum = the expf(x - mx) summed in double:
// kernels::log_softmax's formula. The expf is glibc's algorithm (ARM optimized-routines: 2^(j/32)
// table, degree-3 polynomial, all in double), rounded operation by operation as glibc's FMA build
// rounds it (x86-64 glibc picks that build on any FMA-capable CPU): the same arithmetic run on the host
// matched glibc 2.36's expf on every float in [-104, 0] (the SSE2 build differs from it at one input,
// -0x1.f8cbb2p+5), and tests/cuda/sampler.cu checks the device function on every 61st float there.
// CUDA's expf (2 ulp) would move logp_model's last bit in a few rows per hundred.
//
// Where results can differ from the host (all at rounding level; tests/cuda/sampler.cu measures them):
//   * double sums are associated differently (the host adds sequentially in token or sorted order):
//     Temperature's total and CDF, TopP's total (hence p * total), the full path's sums and the expf
//     sum each differ by at most about n 2^-53 relative for n terms (typically sqrt(n) 2^-53);
//     TopK's and block-level TopP's support sums are the host's, in the host's order;
//   * exp and log in double are CUDA's (<= 1 ulp; glibc's < 0.52 ulp): each w may differ in its last bit.
// Hence: the token is the host's unless u * total falls within ~n 2^-52 (relative; ~3e-11 at worst for
// V = 150k, ~1e-14 typically) of a boundary of the CDF, or, for TopP, p * total within
// that of a nucleus boundary; logp_sampled agrees to ~1e-15 plus that relative sum error; logp_model
// is bit for bit unless x_t - lse lies within ~1e-13 of a float rounding boundary (then 1 ulp).
// Validation as on the host: a NaN or +inf logit, or a row that is all -inf, is a reason::Error naming
// the row (and the first such token), found on the device into a status word that is copied back after
// the launch (the stream synchronised, as gpu::softmax_cross_entropy does); the lowest bad row is named.
// Invalid rows draw nothing (their rng entry stays); on an error the valid rows' entries have advanced
// by one and the outputs are unspecified. Every call synchronises its stream once (again after the full
// path when a row needed it). Deterministic: the same inputs give the same bits, run to run (integer
// atomics only; gathered candidates are sorted before use).
//
// Speed: one wave of blocks for B up to a few hundred on an H100. Greedy reads the row once (twice with
// logp_model); Temperature twice plus one tile; TopK and TopP twice, plus one pass per extra digit and
// one to gather when the first digit leaves more than 2048 candidates (heavily tied rows). The full
// path adds a segmented radix sort of 8 bytes per token; its
// buffers (16 bytes per token, at most 2^24 tokens per chunk of rows) are allocated only when some row
// needs them. Build without --use_fast_math (the double exp and log must be CUDA's accurate ones).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

inline constexpr int sample_threads = 512;                          // one block per row
inline constexpr int sample_items = 8;                              // consecutive tokens per thread per tile
inline constexpr int sample_tile = sample_threads * sample_items;   // 4096 tokens
inline constexpr int sample_candidates = 2048;                      // block-level support, sorted in shared memory
inline constexpr int sample_block_top_k = 1024;                     // TopK<k> with k above this uses the full sort
inline constexpr index_t sample_sort_chunk = index_t{1} << 24;      // tokens sorted per chunk of the full path

/// What the row kernel reports back: the first invalid row and the rows left for the full sort.
struct SampleStatus {
  unsigned long long bad;  // min over rows of (row << 33 | token << 1 | +inf); token 2^31-1: all -inf; ~0: none
  unsigned int sorted_rows;
  unsigned int unused;
};

/// Per row, for the full path: what the row kernel found.
struct SampleRowState {
  double u;      // the row's draw in (0, 1)
  double total;  // sum of w over the row (token order): top-p's p * total
  double lse;    // double(mx) + log(sum expf(x - mx)), when logp_model is wanted
  float max;
  int finite;
};

namespace detail {

enum class SampleKind : int { argmax, full, top_k, top_p };

template <class P>
concept sample_has_k = requires { { P::k } -> std::convertible_to<int>; };
template <class P>
concept sample_has_p = requires(const P& q) { { q.p } -> std::convertible_to<float>; };
template <class P>
concept sample_has_temperature = requires(const P& q) { { q.temperature } -> std::convertible_to<float>; };

/// Which host policy `P` is, from its members: k (TopK), p (TopP), temperature only (Temperature),
/// none (Greedy).
template <class P>
constexpr SampleKind sample_kind_of() {
  if constexpr (sample_has_k<P>) {
    static_assert(sample_has_temperature<P>, "gpu::sample_rows: a top-k policy needs a temperature member");
    return SampleKind::top_k;
  } else if constexpr (sample_has_p<P>) {
    static_assert(sample_has_temperature<P>, "gpu::sample_rows: a top-p policy needs a temperature member");
    return SampleKind::top_p;
  } else if constexpr (sample_has_temperature<P>) {
    return SampleKind::full;
  } else {
    return SampleKind::argmax;
  }
}

struct SampleArgs {
  index_t ld = 0;  // row stride of the logits
  int V = 0;
  int k = 0;
  float temperature = 0.0f;  // 0: argmax
  float p = 1.0f;
  double inv_t = 0.0;  // 1.0 / double(temperature), as the host computes it
  Philox* rng = nullptr;
  index_t rng_stride = 0;
  std::int32_t* tokens = nullptr;
  index_t tokens_stride = 0;
  double* logp_sampled = nullptr;
  index_t sampled_stride = 0;
  double* logp_model = nullptr;
  index_t model_stride = 0;
  SampleStatus* status = nullptr;
  SampleRowState* state = nullptr;  // [B]
  std::int32_t* sort_list = nullptr;  // [B]
  double* tile_sums = nullptr;        // [B, tiles]
  int tiles = 0;
};

// ---- numbers ----

/// 2^(j/32), correctly rounded (glibc's __exp2f_data.tab[j] + (j << 47)).
__device__ __forceinline__ double libm_exp2_entry(int j) {
  switch (j) {  // a switch, not an array: no local memory
    case 0: return 0x1p+0;
    case 1: return 0x1.059b0d3158574p+0;
    case 2: return 0x1.0b5586cf9890fp+0;
    case 3: return 0x1.11301d0125b51p+0;
    case 4: return 0x1.172b83c7d517bp+0;
    case 5: return 0x1.1d4873168b9aap+0;
    case 6: return 0x1.2387a6e756238p+0;
    case 7: return 0x1.29e9df51fdee1p+0;
    case 8: return 0x1.306fe0a31b715p+0;
    case 9: return 0x1.371a7373aa9cbp+0;
    case 10: return 0x1.3dea64c123422p+0;
    case 11: return 0x1.44e086061892dp+0;
    case 12: return 0x1.4bfdad5362a27p+0;
    case 13: return 0x1.5342b569d4f82p+0;
    case 14: return 0x1.5ab07dd485429p+0;
    case 15: return 0x1.6247eb03a5585p+0;
    case 16: return 0x1.6a09e667f3bcdp+0;
    case 17: return 0x1.71f75e8ec5f74p+0;
    case 18: return 0x1.7a11473eb0187p+0;
    case 19: return 0x1.82589994cce13p+0;
    case 20: return 0x1.8ace5422aa0dbp+0;
    case 21: return 0x1.93737b0cdc5e5p+0;
    case 22: return 0x1.9c49182a3f09p+0;
    case 23: return 0x1.a5503b23e255dp+0;
    case 24: return 0x1.ae89f995ad3adp+0;
    case 25: return 0x1.b7f76f2fb5e47p+0;
    case 26: return 0x1.c199bdd85529cp+0;
    case 27: return 0x1.cb720dcef9069p+0;
    case 28: return 0x1.d5818dcfba487p+0;
    case 29: return 0x1.dfc97337b9b5fp+0;
    case 30: return 0x1.ea4afa2a490dap+0;
    default: return 0x1.f50765b6e454p+0;
  }
}

/// expf(x) bit for bit as x86-64 glibc (>= 2.27, FMA build) computes it, for x <= 88 (the sampler
/// only needs x <= 0). exp2_table: libm_exp2_entry(0..31), in shared memory.
/// x N / ln 2 = k + r; exp(x) = 2^(k/N) (1 + c2 r + c1 r^2 + c0 r^3), N = 32, all in double, each
/// operation rounded as glibc's build rounds it (its compiler fuses z * x + shift and z * x - kd).
__device__ __forceinline__ float libm_expf(float x, const double* exp2_table) {
  if (x != x) return x;
  if (!(x >= -0x1.9fe368p6f)) return 0.0f;  // below log(2^-150), -inf included
  if (x > 0x1.62e42ep6f) return INFINITY;
  constexpr double inv_ln2_n = 0x1.71547652b82fep+0 * 32, shift = 0x1.8p+52;
  constexpr double c0 = 0x1.c6af84b912394p-5 / 32 / 32 / 32, c1 = 0x1.ebfce50fac4f3p-3 / 32 / 32,
                   c2 = 0x1.62e42ff0c52d6p-1 / 32;
  const double xd = static_cast<double>(x);
  const double k0 = __fma_rn(inv_ln2_n, xd, shift);
  const auto ki = static_cast<unsigned long long>(__double_as_longlong(k0));
  const double kd = __dsub_rn(k0, shift);
  const double r = __fma_rn(inv_ln2_n, xd, -kd);
  const auto j = static_cast<unsigned>(ki % 32);
  const unsigned long long t = static_cast<unsigned long long>(__double_as_longlong(exp2_table[j])) -
                               (static_cast<unsigned long long>(j) << 47) + (ki << 47);
  const double s = __longlong_as_double(static_cast<long long>(t));
  const double z = __fma_rn(c0, r, c1);
  const double r2 = __dmul_rn(r, r);
  double y = __fma_rn(c2, r, 1.0);
  y = __fma_rn(z, r2, y);
  y = __dmul_rn(y, s);
  return __double2float_rn(y);
}

/// u in (0, 1) from one 32-bit draw, as infer::detail::unit_open.
__device__ __forceinline__ double sample_unit_open(std::uint32_t bits) {
  return __dmul_rn(__dadd_rn(static_cast<double>(bits), 0.5), 0x1.0p-32);
}

/// The host's tempered weight exp((double(x) - mx) * inv_t).
__device__ __forceinline__ double sample_weight(float x, double mx, double inv_t) {
  return ::exp(__dmul_rn(__dsub_rn(static_cast<double>(x), mx), inv_t));
}

/// Float bits mapped so that unsigned order is numeric order; -0 maps as +0.
__device__ __forceinline__ std::uint32_t sample_order_key(float x) {
  std::uint32_t b = __float_as_uint(x);
  if (b == 0x80000000u) b = 0u;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float sample_key_value(std::uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
/// The host's total order as one number: larger is more likely (higher logit, then lower id).
__device__ __forceinline__ unsigned long long sample_rank_key(float x, std::uint32_t v) {
  return (static_cast<unsigned long long>(sample_order_key(x)) << 32) | (0xffffffffu - v);
}
__device__ __forceinline__ std::int32_t sample_rank_id(unsigned long long key) {
  return static_cast<std::int32_t>(0xffffffffu - static_cast<std::uint32_t>(key));
}

// ---- loads ----

/// The 8 tokens [v0, v0 + 8) of a row as float; returns how many exist (the rest are -inf).
/// vec: the row is 16-byte aligned (v0 is a multiple of 8, so every full group is too).
template <class T>
__device__ __forceinline__ int sample_load8(const T* __restrict__ row, int v0, int V, bool vec, float (&x)[8]) {
  const int n = V - v0 >= 8 ? 8 : (V - v0 > 0 ? V - v0 : 0);
  if (n == 8 && vec) {
    if constexpr (std::is_same_v<T, float>) {
      const float4 a = reinterpret_cast<const float4*>(row + v0)[0];
      const float4 b = reinterpret_cast<const float4*>(row + v0)[1];
      x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
    } else {
      const uint4 q = *reinterpret_cast<const uint4*>(row + v0);  // element 2i in the low half of word i
      const std::uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        x[2 * i] = __uint_as_float(w[i] << 16);
        x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = i < n ? to_f32(row[v0 + i]) : -INFINITY;
  }
  return n;
}

// ---- block-wide steps (every thread of the block calls them; all get the result) ----

struct SampleMax {
  template <class V>
  __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct SampleMin {
  template <class V>
  __device__ V operator()(V a, V b) const { return a < b ? a : b; }
};
struct SampleSum {
  __device__ int operator()(int a, int b) const { return a + b; }
  __device__ double operator()(double a, double b) const { return __dadd_rn(a, b); }
};

/// Reduction in a fixed order (butterfly within warps, then warps in order). scratch: 8 bytes per warp.
template <int Block, class V, class Op>
__device__ __forceinline__ V sample_block_reduce(V v, Op op, unsigned long long* scratch) {
  static_assert(sizeof(V) <= sizeof(unsigned long long));
  V* s = reinterpret_cast<V*>(scratch);
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) s[warp] = v;
  __syncthreads();
  V r = s[0];
  for (int w = 1; w < Block / 32; ++w) r = op(r, s[w]);
  __syncthreads();
  return r;
}

/// Exclusive prefix sum of an int over the block, in thread order. scratch: 8 bytes per warp.
template <int Block>
__device__ __forceinline__ int sample_block_exclusive_sum(int v, unsigned long long* scratch) {
  int* s = reinterpret_cast<int*>(scratch);
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  int incl = v;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) s[warp] = incl;
  __syncthreads();
  int off = 0;
  for (int w = 0; w < warp; ++w) off += s[w];
  __syncthreads();
  return off + incl - v;
}

/// Inclusive prefix sums of one tile in position order: thread t holds items [8t, 8t + 8) of the
/// tile in a[]; c[i] = E_t + a[0] + ... + a[i] added one by one, E_t = (the sums of earlier warps,
/// added in order) + (a Kogge-Stone exclusive scan of the per-thread sums within the warp). Returns
/// the tile's sum, defined as c of its item `last` (tile position; -1: no items, 0). Items after
/// `last` must be 0, so that sum is also the owner's c[I - 1] (no indexing by a run-time number,
/// which would put c in local memory). A fixed order: the same items give the same c and sum
/// whenever it runs, and c at a position does not depend on any item after it.
/// scratch: Block / 32 + 1 doubles.
template <int Block, int I>
__device__ __forceinline__ double sample_tile_scan(const double (&a)[I], double (&c)[I], int last, double* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  double s = 0.0;
#pragma unroll
  for (int i = 0; i < I; ++i) s = __dadd_rn(s, a[i]);
  double incl = s;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const double y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl = __dadd_rn(incl, y);
  }
  double excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl = 0.0;
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  double off = 0.0;
  for (int w = 0; w < warp; ++w) off = __dadd_rn(off, scratch[w]);
  double cum = __dadd_rn(off, excl);
#pragma unroll
  for (int i = 0; i < I; ++i) {
    cum = __dadd_rn(cum, a[i]);
    c[i] = cum;
  }
  if (last >= 0 && static_cast<int>(threadIdx.x) == last / I) scratch[Block / 32] = c[I - 1];
  __syncthreads();
  const double sum = last >= 0 ? scratch[Block / 32] : 0.0;
  __syncthreads();
  return sum;
}

/// The digits of the rank-key descent: level L looks at bits [shift, shift + width).
__device__ __forceinline__ int sample_digit_shift(int level) {
  switch (level) {
    case 0: return 53;
    case 1: return 42;
    case 2: return 32;
    case 3: return 21;
    case 4: return 10;
    default: return 0;
  }
}
__device__ __forceinline__ int sample_digit_width(int level) { return level == 2 || level == 5 ? 10 : 11; }

template <bool Select>
struct SampleSmem {
  static constexpr int hist_n = Select ? 2048 : 1;
  static constexpr int cand_n = Select ? sample_candidates : 1;
  double exp2[32];
  unsigned long long red[sample_threads / 32];
  double scan[sample_threads / 32 + 1];
  int hist[hist_n];
  unsigned long long keys[cand_n];
  double w[cand_n];
  double d0, d1;
  int bucket, at_or_above, above, count, tile, retry;
};

/// In a bucket histogram of `width` bits (sm.hist), the highest bucket b with
/// above + (count in buckets >= b) >= want; writes sm.bucket, sm.at_or_above (that count) and
/// sm.above (the count in buckets > b, plus `above`).
template <int Block, bool Select>
__device__ void sample_find_bucket(SampleSmem<Select>& sm, int width, int above, int want) {
  const int nb = 1 << width, per = nb / Block, tid = static_cast<int>(threadIdx.x);
  int s = 0;
  for (int q = 0; q < per; ++q) s += sm.hist[nb - 1 - (tid * per + q)];
  int c = above + sample_block_exclusive_sum<Block>(s, sm.red);
  for (int q = 0; q < per; ++q) {
    const int b = nb - 1 - (tid * per + q), h = sm.hist[b];
    if (c < want && c + h >= want) {
      sm.bucket = b;
      sm.at_or_above = c + h;
      sm.above = c;
    }
    c += h;
  }
  __syncthreads();
}

/// In a bucket histogram of `width` bits (sm.hist), the lowest bucket b with (count in buckets >= b)
/// <= cap: writes sm.bucket = b and sm.at_or_above = that count; 0 (and bucket 2^width) when even the
/// top bucket holds more than cap.
template <int Block, bool Select>
__device__ void sample_find_fit(SampleSmem<Select>& sm, int width, int cap) {
  const int nb = 1 << width, per = nb / Block, tid = static_cast<int>(threadIdx.x);
  int s = 0;
  for (int q = 0; q < per; ++q) s += sm.hist[nb - 1 - (tid * per + q)];
  int c = sample_block_exclusive_sum<Block>(s, sm.red);
  for (int q = 0; q < per; ++q) {
    const int b = nb - 1 - (tid * per + q), h = sm.hist[b];
    if (c <= cap && c + h > cap) {  // the count crosses cap at b: b + 1 is the lowest bucket that fits
      sm.bucket = b + 1;
      sm.at_or_above = c;
    }
    c += h;
    if (b == 0 && c <= cap) {  // everything fits
      sm.bucket = 0;
      sm.at_or_above = c;
    }
  }
  __syncthreads();
}

/// Sorts sm.keys[0, n) descending (bitonic, padded with zeros to a power of two <= cand_n).
template <int Block, bool Select>
__device__ void sample_sort_candidates(SampleSmem<Select>& sm, int n) {
  int n2 = 1;
  while (n2 < n) n2 *= 2;
  for (int i = n + static_cast<int>(threadIdx.x); i < n2; i += Block) sm.keys[i] = 0ull;
  __syncthreads();
  for (int k = 2; k <= n2; k *= 2) {
    for (int j = k / 2; j > 0; j /= 2) {
      for (int i = static_cast<int>(threadIdx.x); i < n2; i += Block) {
        const int l = i ^ j;
        if (l > i) {
          const unsigned long long x = sm.keys[i], y = sm.keys[l];
          if ((i & k) == 0 ? x < y : x > y) {
            sm.keys[i] = y;
            sm.keys[l] = x;
          }
        }
      }
      __syncthreads();
    }
  }
}

/// The host's invert_cdf over w[0, n) with weights in order, run by one thread: the first i with
/// w > 0 whose running sum exceeds u * total, else the last with w > 0.
__device__ __forceinline__ int sample_invert(const double* w, int n, double total, double u) {
  const double target = __dmul_rn(u, total);
  double cum = 0.0;
  int pick = n;
  for (int i = 0; i < n; ++i) {
    if (w[i] <= 0.0) continue;
    cum = __dadd_rn(cum, w[i]);
    pick = i;
    if (cum > target) break;
  }
  return pick;
}

template <class T>
__device__ __forceinline__ void sample_write(const SampleArgs& a, index_t r, const T* row, std::int32_t token,
                                             double logp_sampled, double lse) {
  a.tokens[r * a.tokens_stride] = token;
  if (a.logp_sampled != nullptr) a.logp_sampled[r * a.sampled_stride] = logp_sampled;
  if (a.logp_model != nullptr) {
    const double xt = static_cast<double>(to_f32(row[token]));
    a.logp_model[r * a.model_stride] = static_cast<double>(__double2float_rn(__dsub_rn(xt, lse)));
  }
}

/// One block per row: validation, the draw, and every policy's work but the full sort.
template <class T, SampleKind Kind>
__global__ void __launch_bounds__(sample_threads) sample_rows_kernel(const T* __restrict__ logits, SampleArgs a) {
  constexpr int Block = sample_threads, I = sample_items;
  static_assert(I == 8, "sample_load8 reads 8 tokens a thread");
  constexpr bool select = Kind == SampleKind::top_k || Kind == SampleKind::top_p;
  __shared__ SampleSmem<select> sm;
  const index_t r = blockIdx.x;
  const T* row = logits + r * a.ld;
  const int V = a.V, tid = static_cast<int>(threadIdx.x);
  const bool vec = reinterpret_cast<std::uintptr_t>(row) % 16 == 0;
  const bool tempered = Kind != SampleKind::argmax && a.temperature != 0.0f;
  const bool block_select = select && tempered && (Kind == SampleKind::top_p || a.k <= sample_block_top_k);
  const bool want_model = a.logp_model != nullptr;
  if (tid < 32) sm.exp2[tid] = libm_exp2_entry(tid);
  if constexpr (select)
    for (int b = tid; b < 2048; b += Block) sm.hist[b] = 0;
  __syncthreads();

  // Pass 1: the first invalid token, the finite count, the max (lowest id among equals); for the
  // block-level selection also the histogram of the rank keys' top 11 bits.
  unsigned long long best = 0;
  std::uint32_t bad = 0xffffffffu;
  int finite = 0;
  for (int base = 0; base < V; base += sample_tile) {
    float x[I];
    const int v0 = base + tid * I;
    const int n = sample_load8(row, v0, V, vec, x);
#pragma unroll
    for (int i = 0; i < I; ++i) {
      if (i >= n) continue;
      const auto v = static_cast<std::uint32_t>(v0 + i);
      if (x[i] != x[i]) {
        bad = min(bad, v << 1);
      } else if (x[i] == INFINITY) {
        bad = min(bad, (v << 1) | 1u);
      } else {
        const unsigned long long key = sample_rank_key(x[i], v);
        best = key > best ? key : best;
        if (x[i] != -INFINITY) {
          ++finite;
          if constexpr (select)
            if (block_select) atomicAdd(&sm.hist[key >> 53], 1);
        }
      }
    }
  }
  best = sample_block_reduce<Block>(best, SampleMax{}, sm.red);
  bad = sample_block_reduce<Block>(bad, SampleMin{}, sm.red);
  finite = sample_block_reduce<Block>(finite, SampleSum{}, sm.red);
  if (bad != 0xffffffffu || finite == 0) {  // the same for every thread: the block leaves together
    if (tid == 0)
      atomicMin(&a.status->bad, (static_cast<unsigned long long>(r) << 33) | (bad != 0xffffffffu ? bad : 0xfffffffeu));
    return;
  }
  const std::int32_t argmax = sample_rank_id(best);
  const float mx_f = to_f32(row[argmax]);  // the host's max: the value at the first maximum
  const double mx = static_cast<double>(mx_f), inv_t = a.inv_t;
  if (tid == 0) {  // the row's one draw
    Philox g = a.rng[r * a.rng_stride];
    sm.d0 = sample_unit_open(g.next_u32());
    a.rng[r * a.rng_stride] = g;
  }
  __syncthreads();
  const double u = sm.d0;

  // The selection's first digit, from pass 1's histogram. TopK wants the top k; TopP any top m
  // (its result does not depend on m): the most that the first digit admits, else the top 2048.
  int want = Kind == SampleKind::top_k ? min(a.k, finite) : min(sample_candidates, finite);
  int level = 0, above = 0;
  unsigned long long prefix = 0, lower = 0;
  bool gathered_ok = false;  // the candidates fit: gather those with rank key >= lower
  if constexpr (select) {
    bool fits = false;
    if (Kind == SampleKind::top_p && block_select) {
      sample_find_fit<Block>(sm, 11, sample_candidates);
      fits = sm.at_or_above > 0;
      if (fits) want = sm.at_or_above;
    }
    if (block_select && !fits) sample_find_bucket<Block>(sm, 11, 0, want);
    if (block_select) {
      if (sm.at_or_above <= sample_candidates) {
        gathered_ok = true;
        lower = static_cast<unsigned long long>(sm.bucket) << 53;
      } else {
        prefix = static_cast<unsigned long long>(sm.bucket);
        above = sm.above;
        level = 1;
      }
      if (tid == 0) sm.count = 0;
      __syncthreads();
    }
  }

  // Pass 2: sum of expf(x - mx) for logp_model; Temperature: tile sums of w; TopP: total of w;
  // the candidates when the first digit sufficed.
  double sum_f = 0.0, total = 0.0;
  if (Kind == SampleKind::full && tempered) {
    double P = 0.0;
    for (int j = 0, base = 0; base < V; ++j, base += sample_tile) {
      float x[I];
      double w[I], c[I];
      const int n = sample_load8(row, base + tid * I, V, vec, x);
#pragma unroll
      for (int i = 0; i < I; ++i) w[i] = i < n && x[i] != -INFINITY ? sample_weight(x[i], mx, inv_t) : 0.0;
      if (want_model) {
#pragma unroll
        for (int i = 0; i < I; ++i)
          if (i < n) sum_f = __dadd_rn(sum_f, static_cast<double>(libm_expf(__fsub_rn(x[i], mx_f), sm.exp2)));
      }
      P = __dadd_rn(P, sample_tile_scan<Block>(w, c, min(V - base, sample_tile) - 1, sm.scan));
      if (tid == 0) a.tile_sums[r * a.tiles + j] = P;
    }
    total = P;
  } else if (want_model || (Kind == SampleKind::top_p && tempered) || gathered_ok) {
    const bool top_p_total = Kind == SampleKind::top_p && tempered;
    double t = 0.0;
    for (int base = 0; base < V; base += sample_tile) {
      float x[I];
      const int v0 = base + tid * I;
      const int n = sample_load8(row, v0, V, vec, x);
#pragma unroll
      for (int i = 0; i < I; ++i) {
        if (i >= n) continue;
        if (want_model) sum_f = __dadd_rn(sum_f, static_cast<double>(libm_expf(__fsub_rn(x[i], mx_f), sm.exp2)));
        if (x[i] == -INFINITY) continue;
        if (top_p_total) t = __dadd_rn(t, sample_weight(x[i], mx, inv_t));
        if constexpr (select) {
          if (gathered_ok) {
            const unsigned long long key = sample_rank_key(x[i], static_cast<std::uint32_t>(v0 + i));
            if (key >= lower) sm.keys[atomicAdd(&sm.count, 1)] = key;
          }
        }
      }
    }
    if (top_p_total) total = sample_block_reduce<Block>(t, SampleSum{}, sm.red);
  }
  if (want_model) sum_f = sample_block_reduce<Block>(sum_f, SampleSum{}, sm.red);
  const double lse = want_model ? __dadd_rn(mx, ::log(sum_f)) : 0.0;

  if (!tempered) {  // Greedy, or temperature 0: argmax
    if (tid == 0) sample_write(a, r, row, argmax, 0.0, lse);
    return;
  }

  if constexpr (Kind == SampleKind::full) {
    // Pass 3: the tile holding u * total, then the token within it.
    const double target = __dmul_rn(u, total);
    const int tiles = (V + sample_tile - 1) / sample_tile;
    if (tid == 0) {
      const double* P = a.tile_sums + r * a.tiles;
      int j = -1;
      for (int q = 0; q < tiles; ++q)
        if (P[q] > target) {
          j = q;
          break;
        }
      if (j < 0)  // rounding left u * total at the very top: the last tile with mass
        for (int q = tiles - 1; q >= 0 && j < 0; --q)
          if (P[q] > (q > 0 ? P[q - 1] : 0.0)) j = q;
      sm.tile = j;
      sm.d1 = j > 0 ? P[j - 1] : 0.0;
    }
    __syncthreads();
    const int j = sm.tile;
    const double Pj = sm.d1;
    const int base = j * sample_tile;
    float x[I];
    double w[I], c[I];
    const int n = sample_load8(row, base + tid * I, V, vec, x);
#pragma unroll
    for (int i = 0; i < I; ++i) w[i] = i < n && x[i] != -INFINITY ? sample_weight(x[i], mx, inv_t) : 0.0;
    (void)sample_tile_scan<Block>(w, c, min(V - base, sample_tile) - 1, sm.scan);
    int first = INT_MAX, lastpos = -1;
    double first_w = 0.0, last_w = 0.0;
#pragma unroll
    for (int i = 0; i < I; ++i) {
      if (!(w[i] > 0.0)) continue;
      lastpos = tid * I + i;
      last_w = w[i];
      if (first == INT_MAX && __dadd_rn(Pj, c[i]) > target) {
        first = tid * I + i;
        first_w = w[i];
      }
    }
    const int pick_first = sample_block_reduce<Block>(first, SampleMin{}, sm.red);
    const int pick_last = sample_block_reduce<Block>(lastpos, SampleMax{}, sm.red);
    const int pick = pick_first != INT_MAX ? pick_first : pick_last;
    if (pick / I == tid) {
      const double wp = pick == first ? first_w : last_w;
      sample_write(a, r, row, static_cast<std::int32_t>(base + pick), ::log(wp) - ::log(total), lse);
    }
    return;
  }

  if constexpr (select) {
    if (!block_select) {  // TopK<k > sample_block_top_k>: the full sort
      if (tid == 0) {
        const unsigned slot = atomicAdd(&a.status->sorted_rows, 1u);
        a.sort_list[slot] = static_cast<std::int32_t>(r);
        a.state[r] = SampleRowState{u, total, lse, mx_f, finite};
      }
      return;
    }
    bool gather_pass = level > 0;  // at level 0 pass 2 gathered already
    for (;;) {
      // Further digits while the bucket holding the want-th key leaves too many candidates.
      while (!gathered_ok) {
        const int shift = sample_digit_shift(level), width = sample_digit_width(level);
        for (int b = tid; b < 2048; b += Block) sm.hist[b] = 0;
        __syncthreads();
        for (int base = 0; base < V; base += sample_tile) {
          float x[I];
          const int v0 = base + tid * I;
          const int n = sample_load8(row, v0, V, vec, x);
#pragma unroll
          for (int i = 0; i < I; ++i) {
            if (i >= n || x[i] == -INFINITY) continue;
            const unsigned long long key = sample_rank_key(x[i], static_cast<std::uint32_t>(v0 + i));
            if ((key >> (shift + width)) == prefix)
              atomicAdd(&sm.hist[static_cast<int>((key >> shift) & ((1ull << width) - 1))], 1);
          }
        }
        __syncthreads();
        sample_find_bucket<Block>(sm, width, above, want);
        prefix = (prefix << width) | static_cast<unsigned long long>(sm.bucket);
        if (sm.at_or_above <= sample_candidates) {
          gathered_ok = true;
          lower = prefix << shift;
        } else {
          above = sm.above;
          ++level;  // level 5 buckets are single keys, so the loop ends there at the latest
        }
        gather_pass = true;
        __syncthreads();
      }
      if (gather_pass) {
        for (int base = 0; base < V; base += sample_tile) {
          float x[I];
          const int v0 = base + tid * I;
          const int n = sample_load8(row, v0, V, vec, x);
#pragma unroll
          for (int i = 0; i < I; ++i) {
            if (i >= n || x[i] == -INFINITY) continue;
            const unsigned long long key = sample_rank_key(x[i], static_cast<std::uint32_t>(v0 + i));
            if (key >= lower) sm.keys[atomicAdd(&sm.count, 1)] = key;
          }
        }
      }
      __syncthreads();
      const int count = sm.count;
      sample_sort_candidates<Block>(sm, count);
      // sm.keys[0, want) is the host's order of the top `want` tokens.
      for (int q = tid; q < want; q += Block)
        sm.w[q] = sample_weight(sample_key_value(static_cast<std::uint32_t>(sm.keys[q] >> 32)), mx, inv_t);
      __syncthreads();
      if (tid == 0) {
        sm.retry = 0;
        if constexpr (Kind == SampleKind::top_k) {
          double sum = 0.0;
          for (int q = 0; q < want; ++q) sum = __dadd_rn(sum, sm.w[q]);
          const int pick = sample_invert(sm.w, want, sum, u);
          sample_write(a, r, row, sample_rank_id(sm.keys[pick]), ::log(sm.w[pick]) - ::log(sum), lse);
        } else {
          const double target = __dmul_rn(static_cast<double>(a.p), total);
          double mass = 0.0;
          int n = 0;
          while (n < want && mass < target) mass = __dadd_rn(mass, sm.w[n++]);
          if (mass >= target || want == finite) {
            const int pick = sample_invert(sm.w, n, mass, u);
            sample_write(a, r, row, sample_rank_id(sm.keys[pick]), ::log(sm.w[pick]) - ::log(mass), lse);
          } else if (want < min(sample_candidates, finite)) {  // try again with the top 2048
            sm.retry = 1;
          } else {  // the nucleus is wider than the block's candidates: the full sort
            const unsigned slot = atomicAdd(&a.status->sorted_rows, 1u);
            a.sort_list[slot] = static_cast<std::int32_t>(r);
            a.state[r] = SampleRowState{u, total, lse, mx_f, finite};
          }
        }
      }
      __syncthreads();
      if (sm.retry == 0) break;
      // TopP again, for the top min(2048, finite) by the descent (sm.hist still holds the first
      // digit: a retry only follows a first attempt that fitted at level 0).
      want = min(sample_candidates, finite);
      sample_find_bucket<Block>(sm, 11, 0, want);
      above = 0;
      level = 0;
      if (sm.at_or_above <= sample_candidates) {
        gathered_ok = true;
        lower = static_cast<unsigned long long>(sm.bucket) << 53;
      } else {
        gathered_ok = false;
        prefix = static_cast<unsigned long long>(sm.bucket);
        above = sm.above;
        level = 1;
      }
      gather_pass = true;
      if (tid == 0) sm.count = 0;
      __syncthreads();
    }
  }
}

/// The full path, step 1: (order key, id) of every token of the listed rows [first, first + count),
/// segment s at s V; offsets[s] = s V and offsets[count] = count V.
template <class T>
__global__ void sample_sort_keys_kernel(const T* __restrict__ logits, index_t ld, int V,
                                        const std::int32_t* __restrict__ list, int first, int count,
                                        std::uint32_t* __restrict__ keys, std::int32_t* __restrict__ ids,
                                        int* __restrict__ offsets) {
  const int s = static_cast<int>(blockIdx.x);
  const T* row = logits + static_cast<index_t>(list[first + s]) * ld;
  const index_t o = static_cast<index_t>(s) * V;
  for (int v = static_cast<int>(threadIdx.x); v < V; v += static_cast<int>(blockDim.x)) {
    keys[o + v] = sample_order_key(to_f32(row[v]));
    ids[o + v] = v;
  }
  if (threadIdx.x == 0) {
    offsets[s] = static_cast<int>(o);
    if (s == count - 1) offsets[count] = static_cast<int>(o + V);
  }
}

/// The full path, step 3: one block per listed row, over its tokens sorted by (logit desc, id asc).
/// TopK: the first min(k, finite); TopP: the shortest prefix with mass >= p * total. Then the CDF
/// inverted over that prefix, both by tile scans (as Temperature's pass 2 and 3).
template <class T, SampleKind Kind>
__global__ void __launch_bounds__(sample_threads)
    sample_sorted_kernel(const T* __restrict__ logits, SampleArgs a, const std::uint32_t* __restrict__ keys,
                         const std::int32_t* __restrict__ ids, int first) {
  constexpr int Block = sample_threads, I = sample_items;
  __shared__ SampleSmem<false> sm;
  const int s = static_cast<int>(blockIdx.x), tid = static_cast<int>(threadIdx.x);
  const index_t r = a.sort_list[first + s];
  const SampleRowState st = a.state[r];
  const T* row = logits + r * a.ld;
  const std::uint32_t* kr = keys + static_cast<index_t>(s) * a.V;
  const std::int32_t* ir = ids + static_cast<index_t>(s) * a.V;
  double* P = a.tile_sums + static_cast<index_t>(s) * a.tiles;
  const double mx = static_cast<double>(st.max), inv_t = a.inv_t;
  const int limit = Kind == SampleKind::top_k ? min(a.k, st.finite) : st.finite;
  const double target_p = Kind == SampleKind::top_p ? __dmul_rn(static_cast<double>(a.p), st.total) : 0.0;

  // Scan A: the support [0, n) and its mass.
  int n = limit;
  double mass = 0.0, run = 0.0;
  for (int j = 0, base = 0; base < limit; ++j, base += sample_tile) {
    double w[I], c[I];
#pragma unroll
    for (int i = 0; i < I; ++i) {
      const int q = base + tid * I + i;
      w[i] = q < limit ? sample_weight(sample_key_value(kr[q]), mx, inv_t) : 0.0;
    }
    const double next = __dadd_rn(run, sample_tile_scan<Block>(w, c, min(limit - base, sample_tile) - 1, sm.scan));
    if (Kind == SampleKind::top_p && next >= target_p) {
      int own = INT_MAX;
      double own_mass = 0.0;
#pragma unroll
      for (int i = 0; i < I; ++i) {
        const double m = __dadd_rn(run, c[i]);
        if (own == INT_MAX && base + tid * I + i < limit && m >= target_p) {
          own = tid * I + i;
          own_mass = m;
        }
      }
      const int hit = sample_block_reduce<Block>(own, SampleMin{}, sm.red);
      if (hit == own) sm.d0 = own_mass;  // exactly one thread owns the first position
      __syncthreads();
      n = base + hit + 1;
      run = sm.d0;
      if (tid == 0) P[j] = run;
      break;
    }
    if (tid == 0) P[j] = next;
    run = next;
  }
  mass = run;

  // Scan B: the tile holding u * mass, then the token within it.
  const double target = __dmul_rn(st.u, mass);
  const int tiles = (n + sample_tile - 1) / sample_tile;
  if (tid == 0) {
    int j = -1;
    for (int q = 0; q < tiles; ++q)
      if (P[q] > target) {
        j = q;
        break;
      }
    if (j < 0)
      for (int q = tiles - 1; q >= 0 && j < 0; --q)
        if (P[q] > (q > 0 ? P[q - 1] : 0.0)) j = q;
    sm.tile = j;
    sm.d1 = j > 0 ? P[j - 1] : 0.0;
  }
  __syncthreads();
  const int j = sm.tile;
  const double Pj = sm.d1;
  const int base = j * sample_tile;
  double w[I], c[I];
#pragma unroll
  for (int i = 0; i < I; ++i) {
    const int q = base + tid * I + i;
    w[i] = q < n ? sample_weight(sample_key_value(kr[q]), mx, inv_t) : 0.0;
  }
  (void)sample_tile_scan<Block>(w, c, min(n - base, sample_tile) - 1, sm.scan);
  int own_first = INT_MAX, lastpos = -1;
  double first_w = 0.0, last_w = 0.0;
#pragma unroll
  for (int i = 0; i < I; ++i) {
    if (!(w[i] > 0.0)) continue;
    lastpos = tid * I + i;
    last_w = w[i];
    if (own_first == INT_MAX && __dadd_rn(Pj, c[i]) > target) {
      own_first = tid * I + i;
      first_w = w[i];
    }
  }
  const int pick_first = sample_block_reduce<Block>(own_first, SampleMin{}, sm.red);
  const int pick_last = sample_block_reduce<Block>(lastpos, SampleMax{}, sm.red);
  const int pick = pick_first != INT_MAX ? pick_first : pick_last;
  if (pick / I == tid) {
    const double wp = pick == own_first ? first_w : last_w;
    sample_write(a, r, row, ir[base + pick], ::log(wp) - ::log(mass), st.lse);
  }
}

}  // namespace detail

/// Device scratch of gpu::sample_rows, grown on demand (nothing is allocated until a call needs
/// it). One per stream: every call synchronises its stream, so the workspace is free again when a
/// call returns.
class SampleWorkspace {
 public:
  SampleWorkspace() = default;

  // Used by gpu::sample_rows.
  SampleStatus* status() {
    if (status_.size() == 0) status_ = DeviceBuffer<SampleStatus>(1, "sampler status");
    return status_.data();
  }
  SampleRowState* row_state(index_t rows) { return grow(state_, rows, "sampler row state"); }
  std::int32_t* sort_list(index_t rows) { return grow(list_, rows, "sampler sort list"); }
  double* tile_sums(index_t n) { return grow(tile_sums_, n, "sampler tile sums"); }
  std::uint32_t* sort_keys(int which, index_t n) { return grow(keys_[which], n, "sampler sort keys"); }
  std::int32_t* sort_ids(int which, index_t n) { return grow(ids_[which], n, "sampler sort ids"); }
  int* sort_offsets(index_t n) { return grow(offsets_, n, "sampler sort offsets"); }
  void* cub_temp(std::size_t bytes) {
    return grow(cub_temp_, static_cast<index_t>(std::max<std::size_t>(bytes, 1)), "sampler sort temporary storage");
  }

 private:
  template <class V>
  static V* grow(DeviceBuffer<V>& b, index_t n, const char* what) {
    const auto need = static_cast<std::size_t>(std::max<index_t>(n, 1));
    if (b.size() < need) {
      b = DeviceBuffer<V>();  // free first: the old and new buffers need not coexist
      b = DeviceBuffer<V>(need, what);
    }
    return b.data();
  }

  DeviceBuffer<SampleStatus> status_;
  DeviceBuffer<SampleRowState> state_;
  DeviceBuffer<std::int32_t> list_;
  DeviceBuffer<double> tile_sums_;
  DeviceBuffer<std::uint32_t> keys_[2];
  DeviceBuffer<std::int32_t> ids_[2];
  DeviceBuffer<int> offsets_;
  DeviceBuffer<unsigned char> cub_temp_;
};

/// One token per row of device logits under a host sampling policy (see the header comment).
///   policy        infer::Greedy, infer::Temperature, infer::TopK<k>, infer::TopP (read, not copied to the device)
///   logits [B, V] device, float, __nv_bfloat16 or __half, unit inner stride, any row stride >= V
///   rng [B]       device reason::Philox states (any stride); each valid row's advances by one value
///   tokens [B]    device int32 (any stride): the sampled ids
///   logp_sampled  [B] device double, or empty: log-probability under the tempered, truncated distribution
///   logp_model    [B] device double, or empty: log_softmax(logits)[token] rounded to float, widened
/// Synchronises `stream`. Throws reason::Error on a bad temperature or p (before any launch, with the
/// host policies' wording), on shapes, and on a row with a NaN or +inf logit or with no finite logit.
template <class Policy, class T>
void sample_rows(SampleWorkspace& ws, const Policy& policy, View<const T, 2> logits, View<Philox, 1> rng,
                 View<std::int32_t, 1> tokens, View<double, 1> logp_sampled = {}, View<double, 1> logp_model = {},
                 cudaStream_t stream = nullptr) {
  static_assert(detail::is_storage_v<T>, "gpu::sample_rows: logits are float, __nv_bfloat16 or __half");
  static_assert(Policy::draws_per_token == 1, "gpu::sample_rows: the policy must draw one value per token");
  constexpr detail::SampleKind kind = detail::sample_kind_of<Policy>();
  constexpr const char* fn = "gpu::sample_rows";
  detail::SampleArgs a;
  if constexpr (kind != detail::SampleKind::argmax) {
    a.temperature = static_cast<float>(policy.temperature);
    REASON_CHECK(a.temperature >= 0.0f && std::isfinite(a.temperature), fn, ": temperature = ", a.temperature,
                 "; expected a finite value >= 0 (0 means argmax)");
    a.inv_t = a.temperature > 0.0f ? 1.0 / static_cast<double>(a.temperature) : 0.0;
  }
  if constexpr (kind == detail::SampleKind::top_p) {
    a.p = static_cast<float>(policy.p);
    REASON_CHECK(a.p > 0.0f && a.p <= 1.0f, fn, ": p = ", a.p, "; expected 0 < p <= 1");
  }
  if constexpr (kind == detail::SampleKind::top_k) {
    static_assert(Policy::k >= 1, "gpu::sample_rows: k must be >= 1");
    a.k = Policy::k;
  }
  const index_t B = logits.shape[0], V = logits.shape[1];
  REASON_CHECK(B == 0 || V >= 1, fn, ": row 0 has no logits (vocabulary size 0)");
  REASON_CHECK(V < INT_MAX, fn, ": vocabulary size ", V, " must be below ", INT_MAX);
  REASON_CHECK(B <= INT_MAX, fn, ": ", B, " rows; at most ", INT_MAX, " (one block per row)");
  expect_view(logits, fn, "logits", {B, V});
  REASON_CHECK(B <= 1 || logits.stride[0] >= V, fn, ": logits: row stride ", logits.stride[0],
               " is below the row length ", V);
  expect_view(rng, fn, "rng", {B});
  expect_view(tokens, fn, "tokens", {B});
  if (logp_sampled.data != nullptr) expect_view(logp_sampled, fn, "logp_sampled", {B});
  if (logp_model.data != nullptr) expect_view(logp_model, fn, "logp_model", {B});
  if (B == 0) return;

  a.ld = B <= 1 ? std::max(logits.stride[0], V) : logits.stride[0];
  a.V = static_cast<int>(V);
  a.rng = rng.data;
  a.rng_stride = rng.stride[0];
  a.tokens = tokens.data;
  a.tokens_stride = tokens.stride[0];
  a.logp_sampled = logp_sampled.data;
  a.sampled_stride = logp_sampled.stride[0];
  a.logp_model = logp_model.data;
  a.model_stride = logp_model.stride[0];
  a.tiles = static_cast<int>((V + sample_tile - 1) / sample_tile);
  a.status = ws.status();
  if constexpr (kind != detail::SampleKind::argmax) {
    a.tile_sums = ws.tile_sums(B * a.tiles);
    a.state = ws.row_state(B);
    a.sort_list = ws.sort_list(B);
  }
  REASON_CUDA_CHECK(cudaMemsetAsync(&a.status->bad, 0xFF, sizeof a.status->bad, stream));
  REASON_CUDA_CHECK(cudaMemsetAsync(&a.status->sorted_rows, 0, sizeof a.status->sorted_rows, stream));
  detail::sample_rows_kernel<T, kind><<<static_cast<unsigned>(B), sample_threads, 0, stream>>>(logits.data, a);
  REASON_CUDA_CHECK(cudaGetLastError());
  SampleStatus st{};
  REASON_CUDA_CHECK(cudaMemcpyAsync(&st, a.status, sizeof st, cudaMemcpyDeviceToHost, stream));
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (st.bad != ~0ull) [[unlikely]] {
    const auto row = static_cast<index_t>(st.bad >> 33);
    const auto token = static_cast<std::uint32_t>((st.bad >> 1) & 0xffffffffull);
    if (token == 0x7fffffffu)
      fail(fn, ": every one of the ", V, " logits of row ", row, " is -inf: there is no distribution to sample from");
    fail(fn, ": row ", row, " has a ", (st.bad & 1u) ? "+inf" : "NaN", " logit at token ", token, " (vocabulary size ",
         V, ")");
  }
  if constexpr (kind == detail::SampleKind::top_k || kind == detail::SampleKind::top_p) {
    const auto sorted = static_cast<index_t>(st.sorted_rows);
    if (sorted == 0) return;
    const index_t per_chunk = std::clamp<index_t>(sample_sort_chunk / V, 1, sorted);
    // Every buffer for the largest chunk first: nothing is reallocated while a chunk may still run.
    const index_t most = per_chunk * V;
    std::uint32_t* k0 = ws.sort_keys(0, most);
    std::uint32_t* k1 = ws.sort_keys(1, most);
    std::int32_t* i0 = ws.sort_ids(0, most);
    std::int32_t* i1 = ws.sort_ids(1, most);
    int* offsets = ws.sort_offsets(per_chunk + 1);
    const auto sort_bytes = [&](int items, int segments) {
      std::size_t bytes = 0;
      cub::DoubleBuffer<std::uint32_t> kb(k0, k1);
      cub::DoubleBuffer<std::int32_t> ib(i0, i1);
      REASON_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
          nullptr, bytes, kb, ib, items, segments, offsets, offsets + 1, 0, 32, stream));
      return bytes;
    };
    std::size_t temp_bytes = sort_bytes(static_cast<int>(most), static_cast<int>(per_chunk));
    void* temp = ws.cub_temp(temp_bytes);
    for (index_t c0 = 0; c0 < sorted; c0 += per_chunk) {
      const auto count = static_cast<int>(std::min(per_chunk, sorted - c0));
      const auto items = static_cast<int>(static_cast<index_t>(count) * V);
      std::size_t bytes = sort_bytes(items, count);
      if (bytes > temp_bytes) {  // not expected (a smaller problem), but never reallocate under a running sort
        REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
        temp = ws.cub_temp(bytes);
        temp_bytes = bytes;
      }
      bytes = temp_bytes;
      detail::sample_sort_keys_kernel<T><<<static_cast<unsigned>(count), 256, 0, stream>>>(
          logits.data, a.ld, a.V, a.sort_list, static_cast<int>(c0), count, k0, i0, offsets);
      REASON_CUDA_CHECK(cudaGetLastError());
      cub::DoubleBuffer<std::uint32_t> kb(k0, k1);
      cub::DoubleBuffer<std::int32_t> ib(i0, i1);
      REASON_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(temp, bytes, kb, ib, items, count, offsets,
                                                                           offsets + 1, 0, 32, stream));
      detail::sample_sorted_kernel<T, kind><<<static_cast<unsigned>(count), sample_threads, 0, stream>>>(
          logits.data, a, kb.Current(), ib.Current(), static_cast<int>(c0));
      REASON_CUDA_CHECK(cudaGetLastError());
    }
    REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
}

}  // namespace reason::gpu
