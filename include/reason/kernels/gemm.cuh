// reason/kernels/gemm.cuh — row-major GEMM on the GPU through cuBLASLt, with fused epilogues.
//
//   D[M, N] = alpha * op(A) op(B) + beta * D  (+ bias[N], then ReLU or GELU, when the epilogue says)
//
// the contract of the host kernels::gemm (row-major, op = N or T, leading dimensions in
// elements), on device pointers. cuBLASLt is column-major; a row-major X is the column-major X^T,
// so the call computes D^T = op(B)^T op(A)^T: cuBLASLt's "A" is our B (same transpose flag), its
// "B" our A, m = N, n = M — and its per-row bias is then our per-column bias, the linear layer's.
// Inputs are fp32, bf16 (__nv_bfloat16) or fp16 (__half), output fp32 or the 16-bit input type,
// accumulation always fp32:
//   Compute::fp32   full fp32 products;
//   Compute::tf32   fp32 inputs rounded to tf32 in the tensor cores (10-bit mantissa);
//   bf16 / fp16     16-bit products (exact in fp32), fp32 accumulation (CUBLAS_COMPUTE_32F either
//   inputs          way: never fp16 accumulation), rounded once to the output type (an fp16 output
//                   beyond 65504 becomes Inf).
// GELU is cuBLASLt's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//
// A GemmPlan cache keeps, per shape / layout / types / epilogue / pointer alignment, the
// descriptors and the algorithm cuBLASLt's heuristic picked, so a training step's repeated
// shapes pay for the heuristic once. One CublasLtGemm per stream and thread (it sets the bias
// pointer on its cached descriptor per call).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>

#include "reason/core/cublaslt_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/gemm.hpp"

namespace reason::gpu {

using kernels::Trans;

enum class Compute { fp32, tf32 };
enum class Epilogue { none, bias, relu_bias, gelu_bias };

namespace detail {
template <class T>
constexpr cudaDataType_t data_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>,
                "gpu::CublasLtGemm: operands are float, __nv_bfloat16 or __half");
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return CUDA_R_16BF;
  else
    return CUDA_R_16F;
}
inline cublasLtEpilogue_t epilogue_of(Epilogue e) {
  switch (e) {
    case Epilogue::none: return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::bias: return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::relu_bias: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case Epilogue::gelu_bias: return CUBLASLT_EPILOGUE_GELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}
/// The largest power of two (up to 16) dividing a pointer: algorithms differ by alignment.
inline int alignment_of(const void* p) {
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  int a = 16;
  while (a > 1 && v % static_cast<std::uintptr_t>(a) != 0) a /= 2;
  return a;
}
}  // namespace detail

class CublasLtGemm {
 public:
  /// `workspace_bytes` of device memory for cuBLASLt's split-K and the like (32 MiB suits Hopper).
  explicit CublasLtGemm(std::size_t workspace_bytes = std::size_t{32} << 20)
      : workspace_(workspace_bytes, "cuBLASLt workspace") {
    REASON_CUBLASLT_CHECK(cublasLtCreate(&handle_));
  }
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;
  ~CublasLtGemm() {
    plans_.clear();
    if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
  }

  /// D[M, N] (leading dimension ldd) = alpha op(A) op(B) + beta D, then the epilogue with
  /// bias[N] (same type as D; null for Epilogue::none). A is [M, K] (ta N) or [K, M] (ta T).
  template <class In, class Out>
  void run(Trans ta, Trans tb, index_t M, index_t N, index_t K, float alpha, const In* A, index_t lda, const In* B,
           index_t ldb, float beta, Out* D, index_t ldd, Compute compute = Compute::fp32,
           Epilogue epilogue = Epilogue::none, const Out* bias = nullptr, cudaStream_t stream = nullptr) {
    REASON_CHECK(M > 0 && N > 0 && K > 0, "cuda gemm: M = ", M, ", N = ", N, ", K = ", K, "; all must be > 0");
    const index_t a_cols = ta == Trans::N ? K : M, b_cols = tb == Trans::N ? N : K;
    REASON_CHECK(lda >= a_cols && ldb >= b_cols && ldd >= N, "cuda gemm: leading dimensions lda = ", lda, ", ldb = ",
                 ldb, ", ldd = ", ldd, " are below the row lengths ", a_cols, ", ", b_cols, ", ", N);
    REASON_CHECK(A != nullptr && B != nullptr && D != nullptr, "cuda gemm: a null operand pointer");
    REASON_CHECK((epilogue == Epilogue::none) == (bias == nullptr), "cuda gemm: epilogue ",
                 static_cast<int>(epilogue), (bias ? " with" : " without"), " a bias pointer");
    REASON_CHECK(!(compute == Compute::tf32 && !std::is_same_v<In, float>), "cuda gemm: tf32 applies to float inputs");
    const Key key{static_cast<int>(ta), static_cast<int>(tb), M, N, K, lda, ldb, ldd,
                  static_cast<int>(detail::data_type<In>()), static_cast<int>(detail::data_type<Out>()),
                  static_cast<int>(compute), static_cast<int>(epilogue),
                  std::min({detail::alignment_of(A), detail::alignment_of(B), detail::alignment_of(D),
                            bias ? detail::alignment_of(bias) : 16})};
    Plan& plan = plan_for<In, Out>(key, ta, tb, M, N, K, lda, ldb, ldd, compute, epilogue);
    if (bias != nullptr)
      REASON_CUBLASLT_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    // Column-major D^T = op(B)^T op(A)^T: cuBLASLt's A is our B, its B our A.
    REASON_CUBLASLT_CHECK(cublasLtMatmul(handle_, plan.op, &alpha, B, plan.a, A, plan.b, &beta, D, plan.d, D, plan.d,
                                         &plan.algo, workspace_.data(), workspace_.bytes(), stream));
  }

  /// Plans made so far (one per distinct shape / type / epilogue / alignment).
  [[nodiscard]] std::size_t cached_plans() const { return plans_.size(); }

 private:
  using Key = std::tuple<int, int, index_t, index_t, index_t, index_t, index_t, index_t, int, int, int, int, int>;

  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    Plan() = default;
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    ~Plan() {
      if (d) (void)cublasLtMatrixLayoutDestroy(d);
      if (b) (void)cublasLtMatrixLayoutDestroy(b);
      if (a) (void)cublasLtMatrixLayoutDestroy(a);
      if (op) (void)cublasLtMatmulDescDestroy(op);
    }
  };

  template <class In, class Out>
  Plan& plan_for(const Key& key, Trans ta, Trans tb, index_t M, index_t N, index_t K, index_t lda, index_t ldb,
                 index_t ldd, Compute compute, Epilogue epilogue) {
    if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
    auto plan = std::make_unique<Plan>();
    const cublasComputeType_t ct = compute == Compute::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    REASON_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&plan->op, ct, CUDA_R_32F));
    const cublasOperation_t op_a = tb == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;  // cuBLASLt's A is our B
    const cublasOperation_t op_b = ta == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
    REASON_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    REASON_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    const cublasLtEpilogue_t ep = detail::epilogue_of(epilogue);
    REASON_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)));
    if (epilogue != Epilogue::none) {
      const cudaDataType_t bt = detail::data_type<Out>();
      REASON_CUBLASLT_CHECK(
          cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    // Column-major shapes (rows, cols, ld) of our row-major B, A and D.
    const auto in = detail::data_type<In>();
    REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in, tb == Trans::N ? N : K, tb == Trans::N ? K : N, ldb));
    REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in, ta == Trans::N ? K : M, ta == Trans::N ? M : K, lda));
    REASON_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->d, detail::data_type<Out>(), N, M, ldd));

    cublasLtMatmulPreference_t pref = nullptr;
    REASON_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::size_t ws = workspace_.bytes();
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t set = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    const cublasStatus_t heur = set == CUBLAS_STATUS_SUCCESS
                                    ? cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->d,
                                                                     plan->d, pref, 1, &result, &found)
                                    : set;
    (void)cublasLtMatmulPreferenceDestroy(pref);
    REASON_CUBLASLT_CHECK(heur);
    REASON_CHECK(found > 0, "cuda gemm: cuBLASLt has no algorithm for M = ", M, ", N = ", N, ", K = ", K, ", lda = ",
                 lda, ", ldb = ", ldb, ", ldd = ", ldd, ", epilogue ", static_cast<int>(epilogue));
    plan->algo = result.algo;
    return *plans_.emplace(key, std::move(plan)).first->second;
  }

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<std::byte> workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace reason::gpu
