// reason/kernels/quant_common.cuh — what the quantized products on the GPU share.
//
// The device side of quant/ (quant/concepts.hpp): for each host quantizer Q, the headers
// quant_int8.cuh, quant_int4.cuh and quant_fp8.cuh give
//   gpu::quant::DevicePacked<Q>          the host's Q::Packed in device memory, the same bytes in the
//                                        same layout (uploaded once with upload<Q>(packed));
//   gpu::quant::matmul(ws, x, w, y, s)   y [M, N] = x [M, K] W[N, K]^T on device views, activations
//                                        quantized on the device where the scheme quantizes them;
//                                        returns which path ran (cuBLASLt or a kernel of our own).
// This header holds what they share:
//   * Workspace: one per stream and thread (like gpu::CublasLtGemm): the cuBLASLt handle and its
//     workspace, the cuBLASLt plans made so far (descriptors plus the heuristic's algorithm, or the
//     note that it had none, so the fallback is chosen once per shape), grow-only scratch for the
//     quantized activations, and the device word that records a non-finite activation.
//   * The device copies of quant/grid.hpp's IntGrid::symmetric / affine / code, bit for bit: the
//     scale is computed in double and rounded once (__ddiv_rn, __double2float_rn), x / s is IEEE
//     division (__fdiv_rn: never the approximate division of -use_fast_math), round half to even is
//     __float2int_rn (the host's (v + 1.5 2^23) - 1.5 2^23 on |v| < 2^22 is the same rounding), and
//     clamps are std::clamp's comparisons.
//   * Non-finite activations. A kernel cannot throw; the quantizers record the first element
//     (row-major order) that is Inf or NaN with one atomicMin on a 64-bit word (row, column, kind).
//     With WorkspaceOptions::synchronous_checks (the default) each quantization is followed by a
//     copy of that word and throws the host quantizer's message ("... x: element [3, 17] is NaN;
//     quantization needs finite values"); that costs a stream synchronisation per product, so a
//     decode loop or a benchmark turns it off and calls Workspace::check_finite when it chooses.
//     The product's output is unspecified when the input was not finite.
//   * Host checks with the library's messages (the tensor, its shape, what was expected) for device
//     views: shape, unit inner stride, non-overlapping rows, element alignment of the pointer.
// Host code here throws reason::Error; device code never does.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "reason/core/cublaslt_check.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/quant/checks.hpp"

namespace reason::gpu::quant {

/// The device copy of a quantizer's packed weights; specialised by each scheme's header.
template <class Q>
struct DevicePacked;

/// Q::Packed on the device, the same bytes in the same layout (see each scheme's DevicePacked).
template <class Q>
DevicePacked<Q> upload(const typename Q::Packed& packed) {
  return DevicePacked<Q>::upload(packed);
}

/// Which code computed a product.
enum class MatmulPath : std::uint8_t {
  cublaslt,    // cuBLASLt (tensor cores), then our epilogue where the scheme needs one
  own_kernel,  // a kernel of this library (the shape, type or GPU is outside cuBLASLt's path)
};
[[nodiscard]] inline const char* path_name(MatmulPath p) {
  return p == MatmulPath::cublaslt ? "cublaslt" : "own_kernel";
}

struct WorkspaceOptions {
  std::size_t cublaslt_workspace_bytes = std::size_t{32} << 20;  // split-K and the like (32 MiB suits Hopper)
  bool synchronous_checks = true;  // throw at once on a non-finite activation (one stream sync per product)
  bool use_cublaslt = true;        // false: our own kernels even where cuBLASLt applies (tests, benchmarks)
};

namespace detail {

// ---- device: quant/grid.hpp's grids, bit for bit ----------------------------------------------

/// IntGrid on the device: x ≈ scale (q - zero_point), q in [qmin, qmax].
struct DeviceGrid {
  float scale;
  std::int32_t zero_point, qmin, qmax;
};

/// IntGrid::symmetric(absmax, qmax).
__device__ __forceinline__ DeviceGrid symmetric_grid(float absmax, std::int32_t qmax) {
  DeviceGrid g{1.0f, 0, -qmax, qmax};
  if (absmax > 0.0f) g.scale = fmaxf(__double2float_rn(__ddiv_rn(double(absmax), double(qmax))), FLT_MIN);
  return g;
}

/// IntGrid::affine(lo, hi, qmin, qmax): the range widened to contain 0, z = qmin - round(lo / s).
__device__ __forceinline__ DeviceGrid affine_grid(float lo, float hi, std::int32_t qmin, std::int32_t qmax) {
  const double l = 0.0 < double(lo) ? 0.0 : double(lo), h = double(hi) < 0.0 ? 0.0 : double(hi);  // std::min / max
  DeviceGrid g{1.0f, qmin, qmin, qmax};
  if (h > l) {
    g.scale = fmaxf(__double2float_rn(__ddiv_rn(__dsub_rn(h, l), double(qmax - qmin))), FLT_MIN);
    const double z = __dsub_rn(double(qmin), rint(__ddiv_rn(l, double(g.scale))));  // rint: half to even
    g.zero_point = static_cast<std::int32_t>(z < double(qmin) ? double(qmin) : (double(qmax) < z ? double(qmax) : z));
  }
  return g;
}

/// IntGrid::code: clamp(round(x / s) + z, qmin, qmax), the clamp taken on x / s first.
__device__ __forceinline__ std::int32_t grid_code(const DeviceGrid& g, float x) {
  const float lo = static_cast<float>(g.qmin - g.zero_point), hi = static_cast<float>(g.qmax - g.zero_point);
  float v = __fdiv_rn(x, g.scale);
  v = v < lo ? lo : (hi < v ? hi : v);  // std::clamp
  return __float2int_rn(v) + g.zero_point;
}

// ---- device: reductions -------------------------------------------------------------------------

struct MinOp {
  __device__ float operator()(float a, float b) const { return fminf(a, b); }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct AddOp {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// The reduction of `v` over a block of `Threads` (a multiple of 32, at most 1024) threads, in a fixed
/// order; every thread gets the result. `smem` holds Threads / 32 values. Ends with a barrier, so
/// the same smem may be used again right after.
template <int Threads, class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T* smem) {
  static_assert(Threads % 32 == 0 && Threads <= 1024);
  constexpr int warps = Threads / 32;
  v = warp_reduce(v, op);
  if constexpr (warps == 1) {
    return v;
  } else {
    const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    T r = smem[0];
#pragma unroll
    for (int w = 1; w < warps; ++w) r = op(r, smem[w]);
    __syncthreads();
    return r;
  }
}

// ---- non-finite activations ---------------------------------------------------------------------

/// The flag word when every element was finite.
inline constexpr unsigned long long all_finite = ~0ull;

/// Records element [r, c] = v (Inf or NaN) if it precedes, in row-major order, what is recorded:
/// bits 63-34 the row, 33-2 the column, 1-0 the kind (0 NaN, 1 +Inf, 2 -Inf).
__device__ __forceinline__ void report_non_finite(unsigned long long* flag, index_t r, index_t c, float v) {
  const unsigned long long kind = isnan(v) ? 0ull : (v > 0.0f ? 1ull : 2ull);
  atomicMin(flag, (static_cast<unsigned long long>(r) << 34) | (static_cast<unsigned long long>(c) << 2) | kind);
}

/// Throws the host quantizer's message for a recorded flag word (quant/checks.hpp).
[[noreturn]] inline void fail_recorded(std::string_view fn, std::string_view tensor, unsigned long long word) {
  const auto r = static_cast<index_t>(word >> 34), c = static_cast<index_t>((word >> 2) & 0xFFFFFFFFull);
  const unsigned kind = static_cast<unsigned>(word & 3u);
  const float v = kind == 0
                      ? std::numeric_limits<float>::quiet_NaN()
                      : (kind == 1 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity());
  reason::quant::detail::fail_not_finite(fn, tensor, r, c, v);
}

// ---- host checks --------------------------------------------------------------------------------

/// Throws unless `v` is a device matrix of shape [rows, cols] (a negative bound is not checked) with
/// unit inner stride, rows that do not overlap and a pointer aligned to its element type.
template <class T>
void expect_device_matrix(const View<T, 2>& v, std::string_view fn, std::string_view name, index_t rows, index_t cols) {
  if ((rows >= 0 && v.shape[0] != rows) || (cols >= 0 && v.shape[1] != cols)) [[unlikely]] {
    fail(fn, ": ", name, ": shape ", shape_string(v.shape), ", expected ",
         shape_string({rows >= 0 ? rows : v.shape[0], cols >= 0 ? cols : v.shape[1]}));
  }
  if (v.numel() == 0) return;
  if (v.data == nullptr) [[unlikely]]
    fail(fn, ": ", name, " (shape ", shape_string(v.shape), ") has a null data pointer");
  if (v.shape[1] > 1 && v.stride[1] != 1) [[unlikely]] {
    fail(fn, ": ", name, ": innermost stride ", v.stride[1], ", expected 1 (shape ", shape_string(v.shape), ")");
  }
  if (v.shape[0] > 1 && v.stride[0] < v.shape[1]) [[unlikely]] {
    fail(fn, ": ", name, ": row stride ", v.stride[0], " is smaller than the row length (shape ", shape_string(v.shape),
         "); rows must not overlap");
  }
  if (reinterpret_cast<std::uintptr_t>(v.data) % alignof(T) != 0) [[unlikely]] {
    fail(fn, ": ", name, ": data pointer ", static_cast<const void*>(v.data), " is not aligned to its ", alignof(T),
         "-byte elements (shape ", shape_string(v.shape), ")");
  }
}

/// Checks x [M, K] and y [M, N] of a product with a weight [N, K] (shapes, strides, alignment).
inline void expect_product_views(std::string_view fn, const View<const float, 2>& x, const View<float, 2>& y,
                                 index_t n_out, index_t k_in) {
  if (x.shape[1] != k_in) [[unlikely]] {
    fail(fn, ": x: shape ", shape_string(x.shape), ", expected [M, ", k_in, "] (the weight is [", n_out, ", ", k_in,
         "])");
  }
  expect_device_matrix(x, fn, "x", -1, k_in);
  expect_device_matrix(y, fn, "y", x.shape[0], n_out);
}

/// A function's name in messages: "gpu::quant::matmul<int8_sym_channel_token>".
template <class Q>
std::string fn_name(const char* what) {
  return std::string("gpu::quant::") + what + "<" + Q::name + ">";
}

/// Whether `p` is aligned to `bytes`.
inline bool aligned(const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

/// Whether a row-major [rows, cols] view of T can be read 16 bytes at a time.
template <class T>
bool rows_vectorizable(const View<T, 2>& v) {
  constexpr index_t per16 = static_cast<index_t>(16 / sizeof(T));
  return aligned(v.data, 16) && v.shape[1] % per16 == 0 && (v.shape[0] <= 1 || v.stride[0] % per16 == 0);
}

/// Host elements in a new device buffer (synchronous on the default stream; asynchronous on `stream`
/// otherwise, the host memory then has to outlive the copy).
template <class T>
DeviceBuffer<T> to_device(std::span<const T> host, const char* what, cudaStream_t stream) {
  DeviceBuffer<T> d(host.size(), what);
  d.copy_from(host, stream);
  return d;
}
template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host, const char* what, cudaStream_t stream) {
  return to_device(std::span<const T>(host), what, stream);
}

/// ceil(a / b) for positive b.
__host__ __device__ constexpr index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
/// a rounded up to a multiple of b.
__host__ __device__ constexpr index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

/// Grid size along x, capped at CUDA's limit for a 1-D grid (callers loop when they pass it).
inline unsigned blocks_for(index_t work, int per_block) {
  return static_cast<unsigned>(std::clamp<index_t>(ceil_div(work, per_block), 1, index_t{1} << 30));
}

// ---- cuBLASLt plans -----------------------------------------------------------------------------

/// One cuBLASLt product: descriptors and the heuristic's algorithm, or `supported` false when the
/// heuristic had none (the caller then runs its own kernel, and asks no more for this key).
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool supported = false;
  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (d) (void)cublasLtMatrixLayoutDestroy(d);
    if (b) (void)cublasLtMatrixLayoutDestroy(b);
    if (a) (void)cublasLtMatrixLayoutDestroy(a);
    if (op) (void)cublasLtMatmulDescDestroy(op);
  }
};

/// Sets one attribute of a matmul descriptor (checked).
template <class T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  REASON_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof value));
}

/// The key of a plan: which product (a small integer per scheme and type) and its numbers.
using PlanKey = std::array<std::int64_t, 8>;

}  // namespace detail

/// cuBLASLt handle, plans, scratch and the non-finite flag of the quantized products on one stream.
class Workspace {
 public:
  explicit Workspace(WorkspaceOptions options = {})
      : options_(options),
        lt_workspace_(options.cublaslt_workspace_bytes, "cuBLASLt workspace (quantized products)"),
        flag_(1, "non-finite activation flag") {
    int device = 0;
    REASON_CUDA_CHECK(cudaGetDevice(&device));
    int major = 0, minor = 0;
    REASON_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    REASON_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    capability_ = major * 10 + minor;
    REASON_CUBLASLT_CHECK(cublasLtCreate(&handle_));
    REASON_CUDA_CHECK(cudaMemset(flag_.data(), 0xFF, sizeof(unsigned long long)));  // all_finite
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    plans_.clear();
    if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
  }

  [[nodiscard]] const WorkspaceOptions& options() const { return options_; }
  [[nodiscard]] cublasLtHandle_t handle() const { return handle_; }
  [[nodiscard]] void* lt_workspace() { return lt_workspace_.data(); }
  [[nodiscard]] std::size_t lt_workspace_bytes() const { return lt_workspace_.bytes(); }
  /// Compute capability of the device current at construction (90 for sm_90).
  [[nodiscard]] int capability() const { return capability_; }
  /// Whether cuBLASLt's fp32 block scaling of fp8 operands (VEC128_32F, BLK128x128_32F) can run
  /// here: cuBLAS documents it for compute capability 9.0 only, from cuBLAS 12.9.
  [[nodiscard]] bool fp8_block_scaling() const { return capability_ / 10 == 9 && cublasLtGetVersion() >= 120900; }

  /// `count` elements of scratch slot `slot` (grow-only; contents undefined). Growing waits for the
  /// device first, since work queued earlier may still read the old buffer.
  template <class T>
  T* scratch(int slot, std::size_t count) {
    std::size_t bytes = count * sizeof(T);
    bytes = (bytes + 255) / 256 * 256;  // every slot 256-byte aligned, whatever was asked before
    auto& buf = scratch_[static_cast<std::size_t>(slot)];
    if (buf.bytes() < bytes) {
      if (buf.bytes() > 0) REASON_CUDA_CHECK(cudaDeviceSynchronize());
      buf = DeviceBuffer<std::byte>();
      buf = DeviceBuffer<std::byte>(bytes, "quantized-product scratch");
    }
    return reinterpret_cast<T*>(buf.data());
  }
  static constexpr int scratch_slots = 6;

  /// The device word a quantizer records its first non-finite element in.
  [[nodiscard]] unsigned long long* non_finite_flag() { return flag_.data(); }

  /// Throws, naming `fn` and `tensor`, if an activation quantized through this workspace since the
  /// last check held Inf or NaN (and clears the record). Synchronises `stream`.
  void check_finite(std::string_view fn, std::string_view tensor, cudaStream_t stream) {
    unsigned long long word = detail::all_finite;
    REASON_CUDA_CHECK(cudaMemcpyAsync(&word, flag_.data(), sizeof word, cudaMemcpyDeviceToHost, stream));
    REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (word == detail::all_finite) return;
    REASON_CUDA_CHECK(cudaMemsetAsync(flag_.data(), 0xFF, sizeof word, stream));
    REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
    detail::fail_recorded(fn, tensor, word);
  }
  /// What each activation quantizer calls after its kernels: check_finite under synchronous_checks.
  void after_quantize(std::string_view fn, std::string_view tensor, cudaStream_t stream) {
    if (options_.synchronous_checks) check_finite(fn, tensor, stream);
  }

  /// The plan for `key`, made by `make(plan)` the first time (which sets its descriptors and may
  /// leave `supported` false).
  template <class Make>
  detail::LtPlan& plan(const detail::PlanKey& key, Make&& make) {
    if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
    auto p = std::make_unique<detail::LtPlan>();
    make(*p);
    return *plans_.emplace(key, std::move(p)).first->second;
  }
  /// Plans made so far (supported or not).
  [[nodiscard]] std::size_t cached_plans() const { return plans_.size(); }

  /// Asks the heuristic for one algorithm for plan `p` (D = C, no separate C); false when it has
  /// none or reports the configuration unsupported here.
  bool pick_algorithm(detail::LtPlan& p) {
    cublasLtMatmulPreference_t pref = nullptr;
    REASON_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::size_t ws = lt_workspace_.bytes();
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t status =
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
    (void)cublasLtMatmulPreferenceDestroy(pref);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_ARCH_MISMATCH) return false;
    REASON_CUBLASLT_CHECK(status);
    if (found <= 0) return false;
    p.algo = result.algo;
    p.supported = true;
    return true;
  }

 private:
  WorkspaceOptions options_;
  cublasLtHandle_t handle_ = nullptr;
  int capability_ = 0;
  DeviceBuffer<std::byte> lt_workspace_;
  DeviceBuffer<unsigned long long> flag_;
  std::array<DeviceBuffer<std::byte>, scratch_slots> scratch_;
  std::map<detail::PlanKey, std::unique_ptr<detail::LtPlan>> plans_;
};

}  // namespace reason::gpu::quant
