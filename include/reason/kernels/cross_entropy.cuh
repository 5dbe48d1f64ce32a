// reason/kernels/cross_entropy.cuh — softmax cross-entropy on the GPU, and its fusion with the LM head.
//
// The device counterpart of kernels/cross_entropy.hpp, same contract:
//   loss_n     = logsumexp(x_n) - x_n[target_n]
//   dlogits_n  = grad_scale * (softmax(x_n) - onehot(target_n)), written in place over x_n;
//   target < 0 ignores the row (loss 0, gradient 0); a target >= V is an Error naming the row and
//   the value ("targets[n] = t is out of range for vocabulary size V"), as on the host.
//
// Kernels (T, the logits' storage type, is float, __nv_bfloat16 or __half; all arithmetic is fp32):
//   ce_check_targets_kernel
//                     one block over all N targets: counts target >= 0 and finds the first
//                     target >= V (the minimum of (row << 32 | value) over a fixed block
//                     reduction: the lowest row, with its value), written to a CeStatus on the
//                     device. Every row kernel runs after it (stream order) and reads it first.
//   ce_row_kernel     one block per row. Pass 1: each thread keeps an online softmax (running max
//                     m and sum s of exp(x - m), rescaled when m grows; Milakov & Gimelshein 2018)
//                     over a strided slice of the row; the (m, s) pairs are merged by warp
//                     shuffles and then across warps in a fixed order, so the result is
//                     deterministic. Pass 2 rereads the row and writes
//                     grad_scale * exp(x - M) / S (minus grad_scale at the target) over it in T,
//                     formed in fp32 with grad_scale applied and rounded to T once (fp16 loss
//                     scaling passes the loss scale inside grad_scale: an overflow is stored as
//                     +-Inf, never clamped; see the kernel).
//                     -inf logits count as probability 0 (never NaN); a NaN logit makes the
//                     row's loss NaN, as on the host. The row loss, (M - x_t) + log S computed
//                     in double, is stored in fp32 per row. If the status says a target is out
//                     of range, every block writes nothing (zero_on_error: zero gradients, so a
//                     fused step adds exactly 0 to dW) and the host throws after the launch.
//   ce_sum_losses_kernel
//                     one block: the per-row losses summed in double, strided per thread then a
//                     fixed shared-memory tree — deterministic, and independent of the chunk size.
// One device-to-host copy of the 24-byte status at the end, then the stream is synchronised (the
// caller gets the loss on the host, as from the host kernel). The status and the per-row losses
// live in a CrossEntropyWorkspace the caller keeps (no cudaMalloc per call once it has grown).
// The accuracy argument assumes CUDA's expf, i.e. no --use_fast_math (__expf is coarser).
//
// gpu::lm_head_cross_entropy mirrors kernels::lm_head_cross_entropy: for chunks of R rows,
// logits = h_c W^T into scratch [R, V] (cuBLASLt, fp32 accumulation), the row kernel turns them
// into grad_scale * dlogits in place, then dh_c = dlogits W (overwrite) and dW += dlogits^T h_c
// (beta = 1) — the [N, V] logits never exist. Chunks whose rows are all ignored are not skipped
// (the host cannot see the device targets without a sync): their gradient rows are exact zeros,
// so dh_c = 0 and dW gains exactly 0, the same result as the host's skip for finite h and W.
// dh and dw may be fp32 while h and w are bf16 or fp16 (fp32 gradient accumulation in mixed
// precision); the logits of a chunk live in T (scratch), as a separate LM-head GEMM would store them.
//
// Differences from the host kernel, all rounding-level: the host sums exp in double in index
// order, the device in fp32 in a blocked tree; expf is CUDA's (<= 2 ulp) rather than the C
// library's (the row's log is taken in double on both sides); and the GEMMs accumulate in a
// different order. See tests/cuda/cross_entropy.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/cross_entropy.hpp"
#include "reason/kernels/device_util.cuh"
#include "reason/kernels/gemm.cuh"

namespace reason::gpu {

using kernels::CrossEntropyResult;

/// What the device reports back: the first out-of-range target and the loss.
struct CeStatus {
  unsigned long long bad = ~0ull;  // (row << 32) | uint32(value) of the first target >= V; ~0 when none
  unsigned long long count = 0;    // rows with target >= 0
  double loss_sum = 0;             // sum of the per-row losses (double)
};

namespace detail {

constexpr unsigned long long ce_no_error = ~0ull;

// ---- the online softmax pair (m, s): s = sum of exp(x - m) over the elements seen ----

/// Adds one element x to (m, s). -inf adds nothing (probability 0); NaN makes s NaN for good
/// (x > m is false for it, and NaN * 0 stays NaN when m grows later), so the row loss is NaN.
__device__ __forceinline__ void ce_online_add(float& m, float& s, float x) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;  // m = -inf at the start: expf(-inf) = 0, and s was 0
    m = x;
  } else if (x != -INFINITY) {
    s += expf(x - m);
  }
}

/// Merges (m2, s2) into (m, s). A side with m = -inf has seen only -inf (s = 0) or a NaN first
/// (s = NaN): its s is taken as it is, so it adds 0 or carries the NaN (never exp(-inf - -inf)).
__device__ __forceinline__ void ce_online_merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  const float a = m == -INFINITY ? s : s * expf(m - mx);
  const float b = m2 == -INFINITY ? s2 : s2 * expf(m2 - mx);
  m = mx;
  s = a + b;
}

template <class T>
__device__ __forceinline__ float ce_load(const T* p) {
  return to_f32(*p);
}
/// Rounds to T once, to nearest even; in fp16 |v| >= 65520 becomes +-Inf (never clamped).
template <class T>
__device__ __forceinline__ void ce_store(T* p, float v) {
  *p = from_f32<T>(v);
}

/// Validates targets [N] (one block of Block threads): status = {first bad, count, 0}.
template <int Block>
__global__ void __launch_bounds__(Block)
    ce_check_targets_kernel(const std::int32_t* __restrict__ targets, index_t N, index_t V, CeStatus* status) {
  __shared__ unsigned long long s_bad[Block / 32], s_count[Block / 32];
  unsigned long long bad = ce_no_error, count = 0;
  for (index_t n = threadIdx.x; n < N; n += Block) {
    const std::int32_t t = targets[n];
    if (t >= V) {
      const unsigned long long key = (static_cast<unsigned long long>(n) << 32) | static_cast<std::uint32_t>(t);
      bad = key < bad ? key : bad;
    }
    count += t >= 0 ? 1u : 0u;
  }
  for (int o = 16; o > 0; o /= 2) {
    const unsigned long long b2 = __shfl_xor_sync(0xffffffffu, bad, o);
    bad = b2 < bad ? b2 : bad;
    count += __shfl_xor_sync(0xffffffffu, count, o);
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) {
    s_bad[warp] = bad;
    s_count[warp] = count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long b = ce_no_error, c = 0;
    for (int w = 0; w < Block / 32; ++w) {
      b = s_bad[w] < b ? s_bad[w] : b;
      c += s_count[w];
    }
    status->bad = b;
    status->count = c;
    status->loss_sum = 0;
  }
}

/// One block per row r of x (row stride ld): loss into loss[r] (0 when ignored), and when
/// want_grad, grad_scale * (softmax - onehot) over the row in place.
template <class T, int Block>
__global__ void __launch_bounds__(Block)
    ce_row_kernel(T* __restrict__ x, index_t ld, int V, const std::int32_t* __restrict__ targets, float grad_scale,
                  bool want_grad, bool zero_on_error, float* __restrict__ loss, const CeStatus* __restrict__ status) {
  __shared__ float s_m[Block / 32], s_s[Block / 32];
  __shared__ float s_row_m, s_row_s;
  const index_t r = blockIdx.x;
  T* row = x + r * ld;
  const std::int32_t t = targets[r];
  const bool error = status->bad != ce_no_error;
  if (error || t < 0 || t >= V) {  // t >= V only ever with error set; never read there
    if (threadIdx.x == 0) loss[r] = 0.0f;
    if (want_grad && (!error || zero_on_error))
      for (int v = static_cast<int>(threadIdx.x); v < V; v += Block) ce_store(row + v, 0.0f);
    return;
  }
  // Pass 1: per-thread online (max, sum) over a strided slice, then merged across the block.
  float m = -INFINITY, s = 0.0f;
#pragma unroll 4
  for (int v = static_cast<int>(threadIdx.x); v < V; v += Block) ce_online_add(m, s, ce_load(row + v));
  for (int o = 16; o > 0; o /= 2) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    ce_online_merge(m, s, m2, s2);
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) {
    s_m[warp] = m;
    s_s[warp] = s;
  }
  // The target logit, read before any thread of this block can overwrite it (the barriers below).
  const float xt = threadIdx.x == 0 ? ce_load(row + t) : 0.0f;
  __syncthreads();
  if (warp == 0) {
    m = lane < Block / 32 ? s_m[lane] : -INFINITY;
    s = lane < Block / 32 ? s_s[lane] : 0.0f;
    for (int o = 16; o > 0; o /= 2) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      ce_online_merge(m, s, m2, s2);
    }
    if (lane == 0) {
      s_row_m = m;
      s_row_s = s;
      loss[r] = static_cast<float>(static_cast<double>(m) + log(static_cast<double>(s)) - static_cast<double>(xt));
    }
  }
  __syncthreads();
  if (!want_grad) return;
  // Pass 2: the gradient in place (each element read and written by the same thread). This is the
  // seed gradient of the backward: formed in fp32 with grad_scale applied — under fp16 loss
  // scaling grad_scale is the trainer's loss scale (up to 2^24 or more) times 1 / tokens — and
  // only then rounded to T, once. So small probabilities are lifted above fp16's underflow before
  // the rounding, and a value beyond fp16's range is stored as +-Inf: it reaches dh and dW and,
  // through the backward, the fp32 parameter gradients, so the trainer sees a non-finite gradient
  // norm and skips the step. Never clamp or flush it here.
  const float M = s_row_m, c = grad_scale / s_row_s;
#pragma unroll 4
  for (int v = static_cast<int>(threadIdx.x); v < V; v += Block) {
    float g = expf(ce_load(row + v) - M) * c;
    if (v == t) g -= grad_scale;
    ce_store(row + v, g);
  }
}

/// status->loss_sum = sum of loss[0, N) in double, in a fixed order (one block).
template <int Block>
__global__ void __launch_bounds__(Block) ce_sum_losses_kernel(const float* __restrict__ loss, index_t N, CeStatus* status) {
  __shared__ double s_sum[Block];
  double acc = 0;
  for (index_t n = threadIdx.x; n < N; n += Block) acc += static_cast<double>(loss[n]);
  s_sum[threadIdx.x] = acc;
  __syncthreads();
  for (int half = Block / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) s_sum[threadIdx.x] += s_sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) status->loss_sum = s_sum[0];
}

template <class T>
void launch_ce_rows(T* x, index_t ld, index_t rows, index_t V, const std::int32_t* targets, float grad_scale,
                    bool want_grad, bool zero_on_error, float* loss, const CeStatus* status, cudaStream_t stream) {
  if (rows == 0) return;
  const int v = static_cast<int>(V);
  if (V < 4096) {
    ce_row_kernel<T, 256><<<static_cast<unsigned>(rows), 256, 0, stream>>>(x, ld, v, targets, grad_scale, want_grad,
                                                                          zero_on_error, loss, status);
  } else {
    ce_row_kernel<T, 1024><<<static_cast<unsigned>(rows), 1024, 0, stream>>>(x, ld, v, targets, grad_scale, want_grad,
                                                                            zero_on_error, loss, status);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

template <class T>
constexpr bool ce_type_ok = is_storage_v<T>;

}  // namespace detail

/// Device state of the cross-entropy calls: the status word and the per-row losses [N] (fp32),
/// grown on demand. One per stream; every call synchronises its stream before returning, so a
/// workspace is free again when a call returns. After a successful call, row_losses() holds the
/// per-row losses of that call (0 for ignored rows).
class CrossEntropyWorkspace {
 public:
  CrossEntropyWorkspace() : status_(1, "cross-entropy status") {}

  [[nodiscard]] const float* row_losses() const { return losses_.data(); }
  [[nodiscard]] std::size_t row_losses_size() const { return losses_.size(); }

  // Used by the calls below.
  float* losses_for(index_t n) {
    if (losses_.size() < static_cast<std::size_t>(n))
      losses_ = DeviceBuffer<float>(static_cast<std::size_t>(n), "cross-entropy per-row losses");
    return losses_.data();
  }
  CeStatus* status() { return status_.data(); }

 private:
  DeviceBuffer<CeStatus> status_;
  DeviceBuffer<float> losses_;
};

namespace detail {

inline void ce_check_sizes(const char* fn, index_t N, index_t V) {
  REASON_CHECK(V >= 1 && V <= INT_MAX, fn, ": vocabulary size ", V, " must be in [1, ", INT_MAX, "]");
  REASON_CHECK(N <= INT_MAX, fn, ": ", N, " rows; at most ", INT_MAX, " (one block per row)");
}

inline void ce_launch_check(const std::int32_t* targets, index_t N, index_t V, CeStatus* status, cudaStream_t stream) {
  ce_check_targets_kernel<1024><<<1, 1024, 0, stream>>>(targets, N, V, status);
  REASON_CUDA_CHECK(cudaGetLastError());
}

/// Sums the losses, copies the status back (one copy, then a sync) and throws on a bad target.
inline CrossEntropyResult ce_finish(const char* fn, CrossEntropyWorkspace& ws, const float* losses, index_t N,
                                    index_t V, cudaStream_t stream) {
  ce_sum_losses_kernel<1024><<<1, 1024, 0, stream>>>(losses, N, ws.status());
  REASON_CUDA_CHECK(cudaGetLastError());
  CeStatus st;
  REASON_CUDA_CHECK(cudaMemcpyAsync(&st, ws.status(), sizeof st, cudaMemcpyDeviceToHost, stream));
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (st.bad != ce_no_error) [[unlikely]] {
    const auto row = static_cast<index_t>(st.bad >> 32);
    const auto value = static_cast<std::int32_t>(static_cast<std::uint32_t>(st.bad & 0xffffffffull));
    fail(fn, ": targets[", row, "] = ", value, " is out of range for vocabulary size ", V,
         " (negative means ignored)");
  }
  return {st.loss_sum, static_cast<index_t>(st.count)};
}

}  // namespace detail

/// Unfused softmax cross-entropy over device logits, the gradient written in place.
///   logits [N, V] (device, unit inner stride, any row stride), overwritten with
///   grad_scale * (softmax - onehot) (zero rows where ignored) when want_grad, else left as is;
///   targets [N] (device, contiguous) in [0, V), or < 0 to ignore the row.
/// A target >= V throws reason::Error naming the row and the value; the logits are then untouched.
template <class T>
CrossEntropyResult softmax_cross_entropy(CrossEntropyWorkspace& ws, View<T, 2> logits,
                                         View<const std::int32_t, 1> targets, float grad_scale, bool want_grad,
                                         cudaStream_t stream = nullptr) {
  static_assert(detail::ce_type_ok<T>, "gpu::softmax_cross_entropy: logits are float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::softmax_cross_entropy";
  const index_t N = logits.shape[0], V = logits.shape[1];
  detail::ce_check_sizes(fn, N, V);
  expect_view(logits, fn, "logits", {N, V});
  expect_view(targets, fn, "targets", {N});
  REASON_CHECK(N <= 1 || targets.stride[0] == 1, fn, ": targets: stride ", targets.stride[0], ", expected 1");
  REASON_CHECK(N <= 1 || logits.stride[0] >= V, fn, ": logits: row stride ", logits.stride[0],
               " is below the row length ", V);
  if (N == 0) return {};
  float* losses = ws.losses_for(N);
  detail::ce_launch_check(targets.data, N, V, ws.status(), stream);
  detail::launch_ce_rows<T>(logits.data, logits.stride[0], N, V, targets.data, grad_scale, want_grad, false, losses,
                            ws.status(), stream);
  return detail::ce_finish(fn, ws, losses, N, V, stream);
}

/// Fused LM head and cross-entropy on the device, chunk by chunk (kernels::lm_head_cross_entropy's contract).
///   h [N, C] hidden states; w [V, C] the LM head weight (T: float, __nv_bfloat16 or __half);
///   targets [N] (device, contiguous) in [0, V), or < 0 to ignore; grad_scale multiplies both gradients;
///   scratch [R, V] (T) workspace, R >= 1 rows per chunk;
///   dh [N, C] overwritten with grad_scale * dlogits w, or empty (DH: T or float, default G);
///   dw [V, C] accumulated (beta = 1) with grad_scale * dlogits^T h, or empty. G is T or float
///   (a bf16 / fp16 model keeps dh in T beside its other activations and dw in fp32 with its gradients).
/// compute: Compute::tf32 lets fp32 GEMMs use tf32 tensor cores. A target >= V throws after the
/// work is done, naming the row and value; dh is then zero and dw has gained exactly 0.
template <class T, class G = T, class DH = G>
CrossEntropyResult lm_head_cross_entropy(CublasLtGemm& gemm, CrossEntropyWorkspace& ws, View<const T, 2> h,
                                         View<const T, 2> w, View<const std::int32_t, 1> targets, float grad_scale,
                                         View<T, 2> scratch, View<DH, 2> dh, View<G, 2> dw,
                                         cudaStream_t stream = nullptr, Compute compute = Compute::fp32) {
  static_assert(detail::ce_type_ok<T>, "gpu::lm_head_cross_entropy: h and w are float, __nv_bfloat16 or __half");
  static_assert((std::is_same_v<G, T> || std::is_same_v<G, float>) && (std::is_same_v<DH, T> || std::is_same_v<DH, float>),
                "gpu::lm_head_cross_entropy: dh and dw have the inputs' type or float");
  constexpr const char* fn = "gpu::lm_head_cross_entropy";
  const index_t N = h.shape[0], V = w.shape[0], C = w.shape[1];
  detail::ce_check_sizes(fn, N, V);
  REASON_CHECK(C >= 1, fn, ": w: shape ", shape_string(w.shape), ", expected [V, C] with C >= 1");
  expect_view(w, fn, "w", {V, C});
  expect_view(h, fn, "h", {N, C});
  expect_view(targets, fn, "targets", {N});
  REASON_CHECK(N <= 1 || targets.stride[0] == 1, fn, ": targets: stride ", targets.stride[0], ", expected 1");
  const index_t R = scratch.shape[0];
  if (R < 1 || scratch.shape[1] != V) [[unlikely]] {
    fail(fn, ": scratch: shape ", shape_string(scratch.shape), ", expected [R, ", V, "] with R >= 1 rows per chunk");
  }
  expect_view(scratch, fn, "scratch", {R, V});
  const bool want_dh = dh.data != nullptr, want_dw = dw.data != nullptr, want_grad = want_dh || want_dw;
  if (want_dh) expect_view(dh, fn, "dh", {N, C});
  if (want_dw) expect_view(dw, fn, "dw", {V, C});
  const auto ld = [](const auto& v, index_t cols) { return v.shape[0] <= 1 ? std::max(v.stride[0], cols) : v.stride[0]; };
  const index_t ldh = ld(h, C), ldw = ld(w, C), lds = ld(scratch, V);
  if (N == 0) return {};
  float* losses = ws.losses_for(N);
  detail::ce_launch_check(targets.data, N, V, ws.status(), stream);
  for (index_t r0 = 0; r0 < N; r0 += R) {
    const index_t rows = std::min(R, N - r0);
    const T* hc = h.data + r0 * ldh;  // [rows, C]
    T* sc = scratch.data;             // [rows, V]: logits, then grad_scale * dlogits
    gemm.run<T, T>(Trans::N, Trans::T, rows, V, C, 1.0f, hc, ldh, w.data, ldw, 0.0f, sc, lds, compute,
                   Epilogue::none, nullptr, stream);
    detail::launch_ce_rows<T>(sc, lds, rows, V, targets.data + r0, grad_scale, want_grad, true, losses + r0,
                              ws.status(), stream);
    if (want_dh)
      gemm.run<T, DH>(Trans::N, Trans::N, rows, C, V, 1.0f, sc, lds, w.data, ldw, 0.0f, dh.data + r0 * ld(dh, C),
                     ld(dh, C), compute, Epilogue::none, nullptr, stream);
    if (want_dw)
      gemm.run<T, G>(Trans::T, Trans::N, V, C, rows, 1.0f, sc, lds, hc, ldh, 1.0f, dw.data, ld(dw, C), compute,
                     Epilogue::none, nullptr, stream);
  }
  return detail::ce_finish(fn, ws, losses, N, V, stream);
}

}  // namespace reason::gpu
