// reason/core/fp16.hpp — IEEE binary16 storage type that rounds exactly like CUDA's cuda_fp16.h.
//
// binary16 (IEEE 754-2019 §3.6): 1 sign, 5 exponent, 10 fraction bits, bias 15, largest finite
// 65504. Design rule: a host fp16 holds the very bits a GPU produces; conversions copy CUDA 13's
// definitions:
//   float  -> fp16  __float2half: round to nearest even; |x| >= 65520 -> Inf; Inf kept;
//                   every NaN -> 0x7FFF.
//   double -> fp16  __double2half: rounded once from the double (never through float);
//                   NaN -> 0x7FFF.
//   fp16 -> float   __half2float: exact; every NaN -> 0x7FFFFFFF (sign and payload dropped).
//   fp16 -> double  exact; NaN -> the widening of 0x7FFFFFFF.
#pragma once

#include <cstdint>

#include "reason/core/host_device.hpp"
#include "reason/core/narrow_float.hpp"

namespace reason {

/// IEEE half precision (1-5-10). Trivially copyable; `bits` is the raw encoding.
struct fp16 {
  std::uint16_t bits;

  fp16() = default;
  REASON_HOST_DEVICE constexpr explicit fp16(float x) : bits(round_bits<detail::Binary32>(detail::bit_cast<std::uint32_t>(x))) {}
  REASON_HOST_DEVICE constexpr explicit fp16(double x) : bits(round_bits<detail::Binary64>(detail::bit_cast<std::uint64_t>(x))) {}
  [[nodiscard]] REASON_HOST_DEVICE static constexpr fp16 from_bits(std::uint16_t b) {
    fp16 r{};
    r.bits = b;
    return r;
  }

  REASON_HOST_DEVICE constexpr explicit operator float() const { return detail::bit_cast<float>(float_bits()); }
  REASON_HOST_DEVICE constexpr explicit operator double() const {
    const std::uint32_t f = float_bits();
    if ((f & 0x7FFFFFFFu) > 0x7F800000u) return detail::bit_cast<double>(detail::widen_nan_bits(f));
    const std::uint64_t sign = std::uint64_t(bits >> 15) << 63;
    if ((bits & 0x7FFFu) == 0x7C00u) return detail::bit_cast<double>(sign | 0x7FF0000000000000ull);
    return detail::bit_cast<double>(sign | detail::widen_magnitude<detail::Binary64>(bits & 0x7FFFu, 10, 15));
  }

  static constexpr std::uint16_t nan_bits = 0x7FFF;  // what CUDA makes of every NaN

 private:
  REASON_HOST_DEVICE constexpr std::uint32_t float_bits() const {
    const std::uint32_t a = bits & 0x7FFFu, sign = std::uint32_t(bits >> 15) << 31;
    if (a > 0x7C00u) return 0x7FFFFFFFu;
    if (a == 0x7C00u) return sign | 0x7F800000u;
    return sign | detail::widen_magnitude<detail::Binary32>(a, 10, 15);
  }
  template <class Src>
  REASON_HOST_DEVICE static constexpr std::uint16_t round_bits(typename Src::Bits x) {
    const auto a = x & Src::abs_mask;
    if (a > Src::inf) return nan_bits;
    const auto sign = static_cast<std::uint16_t>((x >> (Src::bits - 1)) << 15);
    if (a == Src::inf) return sign | 0x7C00u;
    const std::uint32_t m = detail::round_magnitude<Src>(a, 10, 15);
    return static_cast<std::uint16_t>(sign | (m >= 0x7C00u ? 0x7C00u : m));
  }
};

static_assert(sizeof(fp16) == 2);

}  // namespace reason
