// reason/core/host_device.hpp — one spelling for "this function runs on the host and on a GPU".
//
// Design rule: code that must give the same bits on both sides (Philox draws, dtype rounding)
// is written once, as plain constexpr C++ that a host compiler and nvcc both accept, and marked
// REASON_HOST_DEVICE. Under nvcc (__CUDACC__) that is `__host__ __device__`; under a plain C++
// compiler it is nothing. Such code uses no std:: function that lacks a device overload: no
// std::array accessors, no std::bit_cast (reason::detail::bit_cast below uses the builtin, which
// both compilers provide), no exceptions.
#pragma once

#ifndef REASON_HOST_DEVICE
#if defined(__CUDACC__)
#define REASON_HOST_DEVICE __host__ __device__
#else
#define REASON_HOST_DEVICE
#endif
#endif

/// REASON_INLINE: a strong inline hint for tiny hot helpers (conversions, RNG rounds).
#ifndef REASON_INLINE
#if defined(__CUDACC__)
#define REASON_INLINE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define REASON_INLINE inline __attribute__((always_inline))
#else
#define REASON_INLINE inline
#endif
#endif

/// REASON_HOST_DEVICE_INLINE: both of the above, for one-line helpers.
#define REASON_HOST_DEVICE_INLINE REASON_HOST_DEVICE REASON_INLINE

namespace reason::detail {
/// std::bit_cast for trivially copyable types of equal size, usable in device code and constexpr.
template <class To, class From>
REASON_HOST_DEVICE_INLINE constexpr To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "reason::detail::bit_cast: sizes differ");
  return __builtin_bit_cast(To, from);
}
}  // namespace reason::detail
