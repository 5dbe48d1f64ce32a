// reason/kernels/adamw.cuh — the fused AdamW update over the flat parameter buffer, on the GPU.
//
// The contract of the host optimizer (optim/adamw.hpp walking kernels/adamw.hpp) on device memory:
// fp32 master parameters, fp32 moments m and v, gradients fp32 or bf16 (__nv_bfloat16); per element
// at step t >= 1, with c1 = 1 / (1 - b1^t) and c2 = 1 / (1 - b2^t) computed once on the host in
// double, exactly as the host kernel does:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g g;
//   p = p - lr ((m c1) / (sqrt(v c2) + eps) + wd p)          (wd p uses the old p)
// Weight decay only on tensors with ParamInfo::decay; tensors with !ParamInfo::trainable are not
// touched at all (p, m and v keep their bits), as on the host.
//
// Design choices:
// * Segments, not a mask. The layout is cut into runs of consecutive trainable tensors with the
//   same decay flag (adamw_segments); a non-trainable tensor is a gap. The runs travel by value in
//   the kernel's parameter block (up to adamw_max_segments per launch, < 4 KiB of parameters, so no
//   device table, no upload and no synchronisation per step); a layout with more runs takes one
//   launch per adamw_max_segments runs. Each run is covered by tiles of adamw_tile elements that
//   sit on multiples of adamw_tile in the flat index; one block per tile (grid-stride over tiles),
//   and a block finds its run by a binary search over the runs' first-tile prefix (uniform across
//   the block, so it reads the parameter bank as broadcasts). No per-element mask is read.
// * Vector loads. float4 for p, m, v and 4-element loads of g (16 bytes of fp32, 8 of bf16) where
//   all four pointers have the same phase modulo 4 elements (the usual case: separate cudaMalloc
//   buffers, or views at the same offset of each); a tile's head and tail outside the vector grid
//   are done element by element. When the phases differ (e.g. v = state + n with n % 4 != 0 in the
//   two-slot state buffer) the whole launch runs element by element — correct, only slower.
// * Arithmetic precision, the template parameter Acc:
//     double (the default): the host's own sequence of IEEE double operations, each correctly
//       rounded and never contracted into an FMA (__dmul_rn, __dadd_rn, __ddiv_rn, __dsqrt_rn),
//       and only the stored state rounded to float — bit-identical to a host build that does not
//       contract either (x86-64 without -mfma); where the host compiler contracts (e.g. GCC on
//       AArch64), an element can differ in the last float bit, with probability ~2^-29. The update
//       is memory bound (28 bytes per element with fp32 gradients), and on H100 / H200 / A100
//       the FP64 units keep up with memory; on GPUs with 1/64-rate FP64 prefer float.
//     float: the same formula in IEEE binary32, correctly rounded, uncontracted (__fmul_rn, ...),
//       with the hyper-parameters and c1, c2 rounded to float once on the host. Within ~1e-6 of
//       the host relative to the size of the terms (see tests/cuda/adamw_norm.cu). (1 - b2) g g in
//       float overflows to inf for |g| >~ 1e19, where the double host still stores a finite v.
// * Inf and NaN gradients behave as on the host: IEEE arithmetic throughout (inf g: m, v = inf,
//   p = NaN; NaN g: all NaN), only on the elements they touch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/optim/adamw.hpp"

namespace reason::gpu {

/// A run of consecutive trainable tensors with one decay flag: elements [begin, end) of the flat buffer.
struct AdamWSegment {
  std::size_t begin = 0, end = 0;
  bool decay = false;
};

inline constexpr int adamw_max_segments = 96;  // runs per launch (they ride in the parameter block)
inline constexpr int adamw_threads = 256;      // threads per block
inline constexpr int adamw_tile = adamw_threads * 4 * 4;  // elements per block-tile: 4 float4 per thread

/// The runs of `layout` the device update walks: trainable tensors only, neighbours with the same
/// decay flag merged, non-trainable tensors left out. Throws if the layout is not contiguous.
[[nodiscard]] inline std::vector<AdamWSegment> adamw_segments(const ParamLayout& layout) {
  std::vector<AdamWSegment> runs;
  std::size_t expect = 0;
  for (const ParamInfo& p : layout.params()) {
    REASON_CHECK(p.offset == expect, "gpu::adamw_segments: tensor '", p.name, "' starts at ", p.offset,
                 ", expected ", expect, " (tensors must be contiguous, in declaration order)");
    expect = p.offset + p.numel;
    if (!p.trainable || p.numel == 0) continue;
    if (!runs.empty() && runs.back().end == p.offset && runs.back().decay == p.decay)
      runs.back().end = p.offset + p.numel;
    else
      runs.push_back({p.offset, p.offset + p.numel, p.decay});
  }
  REASON_CHECK(expect == layout.size(), "gpu::adamw_segments: the tensors cover ", expect,
               " elements, the layout says ", layout.size());
  return runs;
}

namespace detail {

/// One launch's runs, by value. first_tile[s] .. first_tile[s + 1] are run s's tiles.
struct AdamWBatch {
  std::uint64_t begin[adamw_max_segments];
  std::uint64_t end[adamw_max_segments];
  std::uint64_t first_tile[adamw_max_segments + 1];
  std::uint8_t decay[adamw_max_segments];
  int count;
};
static_assert(sizeof(AdamWBatch) < 3600, "the AdamW batch must fit the 4 KiB kernel parameter block");

template <class Acc>
struct AdamWScalars {
  Acc lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, c1, c2;
};

// Correctly rounded, never-contracted operations (the host's IEEE sequence).
__device__ __forceinline__ float op_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float op_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float op_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float op_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float op_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double op_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double op_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double op_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double op_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double op_sqrt(double a) { return __dsqrt_rn(a); }

template <class G>
__device__ __forceinline__ float grad_to_float(G g) {
  if constexpr (std::is_same_v<G, float>)
    return g;
  else
    return __bfloat162float(g);
}

/// The host formula for one element (kernels::adamw_update), in Acc.
template <class Acc>
__device__ __forceinline__ void adamw_element(float g_in, float& p, float& m, float& v, const AdamWScalars<Acc>& s,
                                              Acc wd) {
  const Acc gi = static_cast<Acc>(g_in), pi = static_cast<Acc>(p);
  const Acc mi = op_add(op_mul(s.beta1, static_cast<Acc>(m)), op_mul(s.one_minus_beta1, gi));
  const Acc vi = op_add(op_mul(s.beta2, static_cast<Acc>(v)), op_mul(op_mul(s.one_minus_beta2, gi), gi));
  m = static_cast<float>(mi);
  v = static_cast<float>(vi);
  const Acc step = op_add(op_div(op_mul(mi, s.c1), op_add(op_sqrt(op_mul(vi, s.c2)), s.eps)), op_mul(wd, pi));
  p = static_cast<float>(op_sub(pi, op_mul(s.lr, step)));
}

/// Four gradients at g[i..i+3], i a multiple of 4 away from a 4*sizeof(G)-aligned address.
template <class G>
__device__ __forceinline__ void load_grad4(const G* g, std::uint64_t i, float out[4]) {
  if constexpr (std::is_same_v<G, float>) {
    const float4 q = *reinterpret_cast<const float4*>(g + i);
    out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
  } else {
    const uint2 raw = *reinterpret_cast<const uint2*>(g + i);
    const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
    const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
    out[0] = __low2float(lo), out[1] = __high2float(lo), out[2] = __low2float(hi), out[3] = __high2float(hi);
  }
}

template <class G, class Acc>
__global__ void __launch_bounds__(adamw_threads)
    adamw_kernel(float* __restrict__ p, const G* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                 const AdamWBatch batch, const AdamWScalars<Acc> s, int phase, bool vec) {
  const std::uint64_t tiles = batch.first_tile[batch.count];
  for (std::uint64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int lo_s = 0, hi_s = batch.count - 1;  // the run r with first_tile[r] <= tile < first_tile[r + 1]
    while (lo_s < hi_s) {
      const int mid = (lo_s + hi_s + 1) / 2;
      if (batch.first_tile[mid] <= tile)
        lo_s = mid;
      else
        hi_s = mid - 1;
    }
    const int r = lo_s;
    const std::uint64_t base = (batch.begin[r] / adamw_tile + (tile - batch.first_tile[r])) * adamw_tile;
    const std::uint64_t lo = base > batch.begin[r] ? base : batch.begin[r];
    const std::uint64_t hi = base + adamw_tile < batch.end[r] ? base + adamw_tile : batch.end[r];
    const Acc wd = batch.decay[r] ? s.weight_decay : Acc(0);
    const auto tid = static_cast<std::uint64_t>(threadIdx.x);
    if (!vec) {
      for (std::uint64_t i = lo + tid; i < hi; i += blockDim.x) adamw_element<Acc>(grad_to_float(g[i]), p[i], m[i], v[i], s, wd);
      continue;
    }
    // The vector grid: indices i with (i + phase) % 4 == 0; [a, b) is the part of [lo, hi) it covers.
    const std::uint64_t up = (4 - (lo + static_cast<std::uint64_t>(phase)) % 4) % 4;
    const std::uint64_t a = lo + up < hi ? lo + up : hi;
    const std::uint64_t b = a + (hi - a) / 4 * 4;
    if (tid < a - lo) adamw_element<Acc>(grad_to_float(g[lo + tid]), p[lo + tid], m[lo + tid], v[lo + tid], s, wd);
    if (tid < hi - b) adamw_element<Acc>(grad_to_float(g[b + tid]), p[b + tid], m[b + tid], v[b + tid], s, wd);
    for (std::uint64_t i = a + 4 * tid; i < b; i += 4 * static_cast<std::uint64_t>(blockDim.x)) {
      float gq[4];
      load_grad4(g, i, gq);
      float4 pq = *reinterpret_cast<const float4*>(p + i);
      float4 mq = *reinterpret_cast<const float4*>(m + i);
      float4 vq = *reinterpret_cast<const float4*>(v + i);
      adamw_element<Acc>(gq[0], pq.x, mq.x, vq.x, s, wd);
      adamw_element<Acc>(gq[1], pq.y, mq.y, vq.y, s, wd);
      adamw_element<Acc>(gq[2], pq.z, mq.z, vq.z, s, wd);
      adamw_element<Acc>(gq[3], pq.w, mq.w, vq.w, s, wd);
      *reinterpret_cast<float4*>(p + i) = pq;
      *reinterpret_cast<float4*>(m + i) = mq;
      *reinterpret_cast<float4*>(v + i) = vq;
    }
  }
}

/// The phase of a pointer modulo 4 elements, or -1 when it is not even element-aligned.
template <class T>
int phase4(const T* ptr) {
  const auto a = reinterpret_cast<std::uintptr_t>(ptr);
  if (a % sizeof(T) != 0) return -1;
  return static_cast<int>((a / sizeof(T)) % 4);
}

}  // namespace detail

/// One AdamW step (t >= 1) on device memory over the runs `segments` (see adamw_segments), whose
/// elements index p, g, m and v (each `n` elements). Asynchronous on `stream`. G: float or
/// __nv_bfloat16; Acc: double (the host's arithmetic) or float (see the header comment).
template <class G, class Acc = double>
void adamw_update(std::span<const AdamWSegment> segments, std::size_t n, float* p, const G* g, float* m, float* v,
                  const optim::AdamW::Config& config, double lr, std::int64_t t, cudaStream_t stream) {
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, __nv_bfloat16>,
                "gpu::adamw_update: gradients are float or __nv_bfloat16");
  static_assert(std::is_same_v<Acc, float> || std::is_same_v<Acc, double>,
                "gpu::adamw_update: the arithmetic is float or double");
  REASON_CHECK(t >= 1, "gpu::adamw_update: step t = ", t, ", expected t >= 1 (steps count from 1)");
  REASON_CHECK(config.beta1 >= 0 && config.beta1 < 1, "gpu::adamw_update: beta1 = ", config.beta1,
               ", expected 0 <= beta1 < 1");
  REASON_CHECK(config.beta2 >= 0 && config.beta2 < 1, "gpu::adamw_update: beta2 = ", config.beta2,
               ", expected 0 <= beta2 < 1");
  REASON_CHECK(config.eps >= 0, "gpu::adamw_update: eps = ", config.eps, ", expected eps >= 0");
  for (const AdamWSegment& s : segments)
    REASON_CHECK(s.begin <= s.end && s.end <= n, "gpu::adamw_update: segment [", s.begin, ", ", s.end,
                 ") lies outside the ", n, "-element buffers");
  if (n == 0) return;
  REASON_CHECK(p != nullptr, "gpu::adamw_update: params is a null pointer (", n, " elements expected)");
  REASON_CHECK(g != nullptr, "gpu::adamw_update: grads is a null pointer (", n, " elements expected)");
  REASON_CHECK(m != nullptr, "gpu::adamw_update: exp_avg is a null pointer (", n, " elements expected)");
  REASON_CHECK(v != nullptr, "gpu::adamw_update: exp_avg_sq is a null pointer (", n, " elements expected)");
  const int pp = detail::phase4(p), pg = detail::phase4(g), pm = detail::phase4(m), pv = detail::phase4(v);
  REASON_CHECK(pp >= 0 && pg >= 0 && pm >= 0 && pv >= 0,
               "gpu::adamw_update: a device pointer is not aligned to its element size (params, grads, exp_avg, "
               "exp_avg_sq: ",
               static_cast<const void*>(p), ", ", static_cast<const void*>(g), ", ", static_cast<const void*>(m), ", ",
               static_cast<const void*>(v), ")");
  const bool vec = pp == pg && pp == pm && pp == pv;
  if (segments.empty()) return;  // nothing trainable

  detail::AdamWScalars<Acc> s{};
  s.lr = static_cast<Acc>(lr);
  s.beta1 = static_cast<Acc>(config.beta1);
  s.one_minus_beta1 = static_cast<Acc>(1.0 - config.beta1);
  s.beta2 = static_cast<Acc>(config.beta2);
  s.one_minus_beta2 = static_cast<Acc>(1.0 - config.beta2);
  s.eps = static_cast<Acc>(config.eps);
  s.weight_decay = static_cast<Acc>(config.weight_decay);
  s.c1 = static_cast<Acc>(1.0 / (1.0 - std::pow(config.beta1, double(t))));  // bias corrections, as on the host
  s.c2 = static_cast<Acc>(1.0 / (1.0 - std::pow(config.beta2, double(t))));

  for (std::size_t first = 0; first < segments.size(); first += adamw_max_segments) {
    detail::AdamWBatch batch{};
    batch.count = 0;
    std::uint64_t tiles = 0;
    for (std::size_t k = first; k < std::min(segments.size(), first + adamw_max_segments); ++k) {
      const AdamWSegment& seg = segments[k];
      if (seg.begin == seg.end) continue;
      const int c = batch.count++;
      batch.begin[c] = seg.begin;
      batch.end[c] = seg.end;
      batch.decay[c] = seg.decay ? 1 : 0;
      batch.first_tile[c] = tiles;
      tiles += (seg.end + adamw_tile - 1) / adamw_tile - seg.begin / adamw_tile;
    }
    if (batch.count == 0) continue;
    batch.first_tile[batch.count] = tiles;
    const auto grid = static_cast<unsigned>(std::min<std::uint64_t>(tiles, std::uint64_t{1} << 20));
    detail::adamw_kernel<G, Acc><<<grid, adamw_threads, 0, stream>>>(p, g, m, v, batch, s, pp, vec);
    REASON_CUDA_CHECK(cudaGetLastError());
  }
}

/// One AdamW step of every trainable tensor in `layout` — optim::AdamW::step on the device.
/// params, grads: layout.size() elements; state: 2 * layout.size() (exp_avg, then exp_avg_sq, the
/// host optimizer's slots). All device memory; asynchronous on `stream`.
template <class G, class Acc = double>
void adamw_step(const ParamLayout& layout, std::span<float> params, std::span<const G> grads, std::span<float> state,
                const optim::AdamW::Config& config, double lr, std::int64_t t, cudaStream_t stream) {
  const std::size_t n = layout.size();
  REASON_CHECK(params.size() == n, "gpu::adamw_step: params has ", params.size(), " elements, expected ", n,
               " (the layout's size)");
  REASON_CHECK(grads.size() == n, "gpu::adamw_step: grads has ", grads.size(), " elements, expected ", n,
               " (the layout's size)");
  REASON_CHECK(state.size() == 2 * n, "gpu::adamw_step: state has ", state.size(), " elements, expected ", 2 * n,
               " (exp_avg and exp_avg_sq, ", n, " each)");
  const std::vector<AdamWSegment> runs = adamw_segments(layout);
  adamw_update<G, Acc>(runs, n, params.data(), grads.data(), state.data(), state.data() + n, config, lr, t,
                       stream);
}

/// The same with the two moments in separate buffers (exp_avg, exp_avg_sq: layout.size() each),
/// which keeps all four operands 16-byte aligned for any layout size.
template <class G, class Acc = double>
void adamw_step(const ParamLayout& layout, std::span<float> params, std::span<const G> grads,
                std::span<float> exp_avg, std::span<float> exp_avg_sq, const optim::AdamW::Config& config, double lr,
                std::int64_t t, cudaStream_t stream) {
  const std::size_t n = layout.size();
  REASON_CHECK(params.size() == n, "gpu::adamw_step: params has ", params.size(), " elements, expected ", n,
               " (the layout's size)");
  REASON_CHECK(grads.size() == n, "gpu::adamw_step: grads has ", grads.size(), " elements, expected ", n,
               " (the layout's size)");
  REASON_CHECK(exp_avg.size() == n, "gpu::adamw_step: exp_avg has ", exp_avg.size(), " elements, expected ", n,
               " (the layout's size)");
  REASON_CHECK(exp_avg_sq.size() == n, "gpu::adamw_step: exp_avg_sq has ", exp_avg_sq.size(),
               " elements, expected ", n, " (the layout's size)");
  const std::vector<AdamWSegment> runs = adamw_segments(layout);
  adamw_update<G, Acc>(runs, n, params.data(), grads.data(), exp_avg.data(), exp_avg_sq.data(), config, lr, t, stream);
}

}  // namespace reason::gpu
