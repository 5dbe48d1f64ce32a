// tests/cuda/cuda_test_util.hpp — what every CUDA test program shares: whether a GPU is there,
// bf16 and fp16 values with the host's rounding, and checking that a call fails with the intended
// message.
// (The CUDA tests are plain programs with exit status 0 pass / 1 fail / 77 no GPU / 2 error,
// not doctest, so that nvcc never has to compile doctest.)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

#include "reason/core/bf16.hpp"
#include "reason/core/fp16.hpp"
#include "reason/core/error.hpp"

namespace reason::test {

/// Whether a CUDA device is visible; a failed query's sticky error is cleared.
inline bool gpu_present() {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) return true;
  (void)cudaGetLastError();
  return false;
}

/// Without a GPU, says so and gives the program's exit status: 77 (skipped), or 1 when one of the
/// `host_failures` checks that run everywhere (argument errors) failed. With a GPU: -1, go on.
inline int exit_status_without_gpu(int host_failures = 0) {
  if (gpu_present()) return -1;
  std::printf("no CUDA device: skipped%s\n", host_failures ? " (but a host-side argument check FAILED)" : "");
  return host_failures ? 1 : 77;
}

/// The host twin of a device storage type: reason::bf16 for __nv_bfloat16, reason::fp16 for __half.
template <class T>
using host_twin_t = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, bf16, fp16>;

/// x as float, or as __nv_bfloat16 / __half rounded the host's way (core/bf16.hpp, core/fp16.hpp,
/// which are CUDA's: nearest even; fp16 overflows to Inf).
template <class T>
T from_float(float x) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    const std::uint16_t bits = host_twin_t<T>(x).bits;
    T t;
    std::memcpy(static_cast<void*>(&t), &bits, sizeof t);
    return t;
  }
}
/// The value of a float, __nv_bfloat16 or __half, widened exactly.
template <class T>
float to_float(T x) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    std::uint16_t bits;
    std::memcpy(&bits, static_cast<const void*>(&x), sizeof bits);
    return static_cast<float>(host_twin_t<T>::from_bits(bits));
  }
}

/// Rounding of a stored value, for error bounds: `rel` is half an ulp relative (2^-8 bf16, 2^-11
/// fp16, 0 for float, which stores the fp32 result itself) and `abs` the absolute error near zero,
/// half the subnormal spacing (fp16: 2^-25; bf16 reaches down to 2^-133, far below any bound here).
template <class T>
struct StorageRounding {
  static constexpr double rel = std::is_same_v<T, __nv_bfloat16> ? 0x1p-8 : (std::is_same_v<T, __half> ? 0x1p-11 : 0.0);
  static constexpr double abs = std::is_same_v<T, __half> ? 0x1p-25 : 0.0;
};

/// "fp32", "bf16" or "fp16".
template <class T>
constexpr const char* storage_name() {
  return std::is_same_v<T, float> ? "fp32" : (std::is_same_v<T, __nv_bfloat16> ? "bf16" : "fp16");
}

/// Runs f, which must throw reason::Error with `needle` in its message: "" when it did, else
/// what happened instead.
template <class F>
std::string error_mismatch(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    return std::string(e.what()).find(needle) != std::string::npos ? std::string()
                                                                    : std::string("message was \"") + e.what() + "\"";
  }
  return "no error";
}

}  // namespace reason::test
