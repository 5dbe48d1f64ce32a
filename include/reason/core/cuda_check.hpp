// reason/core/cuda_check.hpp — every CUDA runtime call checked, with a message a person can act on.
//
// Design rule (as in error.hpp): a failed call never passes silently and never aborts the process;
// it throws reason::Error naming the call as written, CUDA's error name and text, and where it
// was made. Host code only (device code cannot throw). Needs the CUDA toolkit's
// cuda_runtime_api.h (link reason::cuda); including it without one is a compile error that
// says so, rather than a page of unknown identifiers.
#pragma once

#if !__has_include(<cuda_runtime_api.h>)
#error "reason/core/cuda_check.hpp needs the CUDA toolkit (cuda_runtime_api.h): link reason::cuda"
#endif

#include <cuda_runtime_api.h>

#include "reason/core/error.hpp"

namespace reason::detail {
[[noreturn]] inline void cuda_fail(const char* call, cudaError_t status, const char* file, int line) {
  fail(call, " failed: ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ") at ", file, ":", line);
}
}  // namespace reason::detail

/// REASON_CUDA_CHECK(call): evaluates a cudaError_t-returning call once; throws reason::Error
/// "<call> failed: <cudaErrorName> (<text>) at <file>:<line>" unless it returned cudaSuccess.
#define REASON_CUDA_CHECK(call)                                                            \
  do {                                                                                     \
    const cudaError_t reason_cuda_status_ = (call);                                        \
    if (reason_cuda_status_ != cudaSuccess) [[unlikely]]                                   \
      ::reason::detail::cuda_fail(#call, reason_cuda_status_, __FILE__, __LINE__);         \
  } while (0)
