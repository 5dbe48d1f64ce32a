// The cuBLASLt GEMM (kernels/gemm.cuh) against a float64 product of the same inputs on the host:
// every transpose combination, odd shapes, padded leading dimensions, beta 0 and 1, fp32, tf32, bf16
// and fp16 inputs, fp32, bf16 and fp16 outputs, and the bias / ReLU / GELU epilogues.
// Error bound per element: |D - ref| <= tol * sum_k |a_ik b_kj| (+ the output rounding: a full ulp,
// 2^-7 |ref| for bf16 and 2^-10 |ref| for fp16), tol by precision: fp32 1e-5, tf32 4e-3 (10-bit
// mantissa inputs), bf16 / fp16 inputs 1e-5 after rounding the reference's inputs to the 16-bit type
// as well (the 16-bit products are exact in fp32 and accumulate in fp32).
// Exit status: 0 pass, 1 a check failed, 77 no GPU (CTest: skipped), 2 an unexpected error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "reason/core/bf16.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/gemm.cuh"
#include "cuda/cuda_test_util.hpp"

using namespace reason;
using kernels::Trans;

namespace {

int failures = 0;

using test::from_float;
template <class T>
double to_double(T x) {
  return static_cast<double>(test::to_float(x));
}

double apply_epilogue(double v, gpu::Epilogue e) {
  switch (e) {
    case gpu::Epilogue::relu_bias: return v > 0 ? v : 0;
    case gpu::Epilogue::gelu_bias: return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    default: return v;
  }
}

template <class In, class Out>
void check(gpu::CublasLtGemm& gemm, Trans ta, Trans tb, index_t M, index_t N, index_t K, index_t pad, float beta,
           gpu::Compute compute, gpu::Epilogue epi, std::uint64_t seed) {
  Philox rng(seed, 1);
  const index_t a_rows = ta == Trans::N ? M : K, a_cols = ta == Trans::N ? K : M;
  const index_t b_rows = tb == Trans::N ? K : N, b_cols = tb == Trans::N ? N : K;
  const index_t lda = a_cols + pad, ldb = b_cols + pad, ldd = N + pad;
  std::vector<In> a(static_cast<std::size_t>(a_rows * lda)), b(static_cast<std::size_t>(b_rows * ldb));
  std::vector<Out> d(static_cast<std::size_t>(M * ldd)), bias(static_cast<std::size_t>(N));
  for (auto& x : a) x = from_float<In>(static_cast<float>(rng.uniform_double() * 2 - 1));
  for (auto& x : b) x = from_float<In>(static_cast<float>(rng.uniform_double() * 2 - 1));
  for (auto& x : d) x = from_float<Out>(static_cast<float>(rng.uniform_double() * 2 - 1));
  for (auto& x : bias) x = from_float<Out>(static_cast<float>(rng.uniform_double() * 2 - 1));
  gpu::DeviceBuffer<In> da(a.size()), db(b.size());
  gpu::DeviceBuffer<Out> dd(d.size()), dbias(bias.size());
  da.copy_from(a);
  db.copy_from(b);
  dd.copy_from(d);
  dbias.copy_from(bias);
  const bool with_bias = epi != gpu::Epilogue::none;
  gemm.run<In, Out>(ta, tb, M, N, K, 1.0f, da.data(), lda, db.data(), ldb, beta, dd.data(), ldd, compute, epi,
                    with_bias ? dbias.data() : nullptr);
  REASON_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<Out> got(d.size());
  dd.copy_to(got);

  const double tol = compute == gpu::Compute::tf32 ? 4e-3 : 1e-5;
  const double out_round = 2 * test::StorageRounding<Out>::rel;  // a full ulp: bf16 2^-7, fp16 2^-10
  double worst = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double ref = 0, mag = 0;
      for (index_t k = 0; k < K; ++k) {
        const double x = to_double(ta == Trans::N ? a[i * lda + k] : a[k * lda + i]);
        const double y = to_double(tb == Trans::N ? b[k * ldb + j] : b[j * ldb + k]);
        ref += x * y;
        mag += std::abs(x * y);
      }
      ref += beta * to_double(d[i * ldd + j]);
      if (with_bias) ref += to_double(bias[j]);
      ref = apply_epilogue(ref, epi);
      const double err = std::abs(to_double(got[i * ldd + j]) - ref);
      const double bound = tol * (mag + std::abs(beta) + 1) + out_round * std::abs(ref) + 1e-6;
      worst = std::max(worst, err / bound);
    }
  // Padding between rows is never written.
  bool pad_kept = true;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = N; j < ldd; ++j) pad_kept = pad_kept && std::memcmp(&got[i * ldd + j], &d[i * ldd + j], sizeof(Out)) == 0;
  const bool ok = worst <= 1.0 && pad_kept;
  if (!ok) ++failures;
  std::printf("%s %s%s M %lld N %lld K %lld pad %lld beta %g %s%s epilogue %d: error / bound %.3f%s\n",
              ok ? "ok  " : "FAIL", ta == Trans::N ? "N" : "T", tb == Trans::N ? "N" : "T", static_cast<long long>(M),
              static_cast<long long>(N), static_cast<long long>(K), static_cast<long long>(pad), beta,
              std::is_same_v<In, float> ? (compute == gpu::Compute::tf32 ? "tf32" : "fp32")
                                        : (std::is_same_v<In, __half> ? "fp16 in" : "bf16 in"),
              std::is_same_v<Out, float> ? "" : (std::is_same_v<Out, __half> ? ", fp16 out" : ", bf16 out"),
              static_cast<int>(epi), worst,
              pad_kept ? "" : " (padding overwritten)");
}

}  // namespace

int main() {
  try {
    if (const int rc = test::exit_status_without_gpu(); rc >= 0) return rc;
    (void)gpu::require_device(0);
    gpu::CublasLtGemm gemm;
    std::uint64_t seed = 1;
    const index_t shapes[][3] = {{1, 1, 1}, {17, 33, 65}, {128, 96, 256}, {512, 384, 128}};
    for (Trans ta : {Trans::N, Trans::T})
      for (Trans tb : {Trans::N, Trans::T})
        for (const auto& s : shapes) {
          check<float, float>(gemm, ta, tb, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32, gpu::Epilogue::none, ++seed);
          check<float, float>(gemm, ta, tb, s[0], s[1], s[2], 3, 1.0f, gpu::Compute::fp32, gpu::Epilogue::none, ++seed);
          check<float, float>(gemm, ta, tb, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::tf32, gpu::Epilogue::none, ++seed);
        }
    for (const auto& s : shapes) {
      check<__nv_bfloat16, float>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32,
                                  gpu::Epilogue::none, ++seed);
      check<__nv_bfloat16, __nv_bfloat16>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32,
                                          gpu::Epilogue::none, ++seed);
      check<__half, float>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32, gpu::Epilogue::none,
                           ++seed);
      check<__half, __half>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32,
                            gpu::Epilogue::none, ++seed);
      for (gpu::Epilogue e : {gpu::Epilogue::bias, gpu::Epilogue::relu_bias, gpu::Epilogue::gelu_bias}) {
        check<float, float>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32, e, ++seed);
        check<__nv_bfloat16, __nv_bfloat16>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32, e,
                                            ++seed);
        check<__half, __half>(gemm, Trans::N, Trans::T, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32, e, ++seed);
      }
    }
    // The model's other layouts in 16 bits: dx = dy W (N N), dW += dy^T x into fp32 (T N, beta 1).
    for (const auto& s : shapes) {
      check<__nv_bfloat16, __nv_bfloat16>(gemm, Trans::N, Trans::N, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32,
                                          gpu::Epilogue::none, ++seed);
      check<__half, __half>(gemm, Trans::N, Trans::N, s[0], s[1], s[2], 0, 0.0f, gpu::Compute::fp32,
                            gpu::Epilogue::none, ++seed);
      check<__nv_bfloat16, float>(gemm, Trans::T, Trans::N, s[0], s[1], s[2], 3, 1.0f, gpu::Compute::fp32,
                                  gpu::Epilogue::none, ++seed);
      check<__half, float>(gemm, Trans::T, Trans::N, s[0], s[1], s[2], 3, 1.0f, gpu::Compute::fp32,
                           gpu::Epilogue::none, ++seed);
    }
    // fp16 outputs beyond 65504 are Inf, not clamped: each output sums 64 products 64 * 64, 262144.
    {
      const std::vector<__half> big(64 * 64, from_float<__half>(64.0f));
      gpu::DeviceBuffer<__half> da(big.size()), dd(big.size());
      da.copy_from(big);
      gemm.run<__half, __half>(Trans::N, Trans::T, 64, 64, 64, 1.0f, da.data(), 64, da.data(), 64, 0.0f, dd.data(), 64);
      REASON_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<__half> got(big.size());
      dd.copy_to(got);
      bool all_inf = true;
      for (__half x : got) all_inf = all_inf && std::isinf(test::to_float(x)) && test::to_float(x) > 0;
      if (!all_inf) ++failures;
      std::printf("%s fp16 output overflow: %s\n", all_inf ? "ok  " : "FAIL", all_inf ? "+Inf" : "NOT all +Inf");
    }
    // The plan cache: the same shape again makes no new plan.
    const std::size_t plans = gemm.cached_plans();
    check<float, float>(gemm, Trans::N, Trans::T, 128, 96, 256, 0, 0.0f, gpu::Compute::fp32, gpu::Epilogue::none, ++seed);
    if (gemm.cached_plans() != plans) {
      std::printf("FAIL: a repeated shape made a new plan (%zu -> %zu)\n", plans, gemm.cached_plans());
      ++failures;
    }
    // Bad arguments are named.
    try {
      gemm.run<float, float>(Trans::N, Trans::N, 4, 4, 4, 1.0f, nullptr, 2, nullptr, 4, 0.0f, nullptr, 4);
      std::printf("FAIL: lda 2 < K 4 accepted\n");
      ++failures;
    } catch (const Error& e) {
      if (std::string(e.what()).find("leading dimensions") == std::string::npos) {
        std::printf("FAIL: unexpected message: %s\n", e.what());
        ++failures;
      }
    }
    std::printf("%s (%zu plans cached)\n", failures ? "FAILED" : "passed", gemm.cached_plans());
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
