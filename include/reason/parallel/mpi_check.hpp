// reason/parallel/mpi_check.hpp — every MPI call checked, and the MPI names of reason's types.
//
// Design rule (as core/cuda_check.hpp): a failed call never passes silently and never aborts the
// process; it throws reason::Error naming the call as written, where it was made (collective, rank,
// sizes when there are some), and MPI's own text for the error (MPI_Error_string). This only works
// on communicators whose error handler is MPI_ERRORS_RETURN, which MpiCommunicator sets; with MPI's
// default (MPI_ERRORS_ARE_FATAL) the library aborts before the check sees the code.
// Counts: MPI-3 counts and displacements are `int`; a larger one is an error that says so, never
// a silent wrap (MPI 4.0's _c large-count calls are not in Open MPI 4.1).
// Needs an MPI implementation (mpi.h): link reason::mpi.
#pragma once

#if !__has_include(<mpi.h>)
#error "reason/parallel/mpi_*.hpp need MPI (mpi.h): link reason::mpi (apt-get install libopenmpi-dev)"
#endif

// The C API only: not the C++ bindings that MPI 3.0 removed (Open MPI and MPICH still ship them).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "reason/core/error.hpp"
#include "reason/parallel/checks.hpp"
#include "reason/parallel/communicator.hpp"

namespace reason::parallel::detail {

/// MPI's text for an error code ("MPI_ERR_TRUNCATE: message truncated").
inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(length));
}

template <class... Context>
[[noreturn]] void mpi_fail(const char* call, int code, const char* file, int line, const Context&... context) {
  fail(call, " failed", context..., ": ", mpi_error_string(code), " at ", file, ":", line);
}

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  else {
    static_assert(std::is_same_v<T, std::byte>, "mpi_type<T>: T is not a parallel::Element");
    return MPI_BYTE;
  }
}

inline MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : MPI_MAX; }

/// `n` (elements of `what`) as an MPI count, or an error naming the call when it does not fit.
inline int mpi_count(const Site& s, const char* what, std::size_t n) {
  REASON_CHECK(n <= static_cast<std::size_t>(INT_MAX), s, ": ", what, " is ", n,
               " elements, more than an MPI count holds (", INT_MAX, "); split the call");
  return static_cast<int>(n);
}
inline int mpi_count(const Site& s, const char* what, std::int64_t n) {
  return mpi_count(s, what, static_cast<std::size_t>(n));  // n >= 0: the checks ran first
}

}  // namespace reason::parallel::detail

/// REASON_MPI_CHECK(call, context...): evaluates an MPI call once; unless it returned MPI_SUCCESS,
/// throws reason::Error "<call> failed<context>: <MPI's error text> at <file>:<line>".
#define REASON_MPI_CHECK(call, ...)                                                                     \
  do {                                                                                                  \
    const int reason_mpi_code_ = (call);                                                                \
    if (reason_mpi_code_ != MPI_SUCCESS) [[unlikely]]                                                   \
      ::reason::parallel::detail::mpi_fail(#call, reason_mpi_code_, __FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__); \
  } while (0)
