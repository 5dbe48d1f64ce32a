// reason/core/cublaslt_check.hpp — every cuBLASLt call checked, naming the call and where.
//
// REASON_CUDA_CHECK (core/cuda_check.hpp) for the runtime; REASON_CUBLASLT_CHECK here for
// cuBLASLt, whose status has its own name and text (cublasLtGetStatusName / String). Both throw
// reason::Error "<call as written> failed: <name> (<text>) at <file>:<line>". Host code only.
#pragma once

#include <cublasLt.h>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"

namespace reason::detail {
[[noreturn]] inline void cublaslt_fail(const char* call, cublasStatus_t status, const char* file, int line) {
  fail(call, " failed: ", cublasLtGetStatusName(status), " (", cublasLtGetStatusString(status), ") at ", file, ":", line);
}
}  // namespace reason::detail

/// REASON_CUBLASLT_CHECK(call): evaluates a cublasStatus_t-returning call once; throws unless
/// it returned CUBLAS_STATUS_SUCCESS.
#define REASON_CUBLASLT_CHECK(call)                                                        \
  do {                                                                                     \
    const cublasStatus_t reason_cublas_status_ = (call);                                   \
    if (reason_cublas_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                       \
      ::reason::detail::cublaslt_fail(#call, reason_cublas_status_, __FILE__, __LINE__);   \
  } while (0)
