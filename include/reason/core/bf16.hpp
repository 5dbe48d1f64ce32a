// reason/core/bf16.hpp — bfloat16 storage type that rounds exactly like CUDA's cuda_bf16.h.
//
// bfloat16 is the top half of an IEEE binary32: 1 sign, 8 exponent, 7 fraction bits (Kalamkar et
// al., "A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322). Design rule: a host
// bf16 must hold the very bits a GPU produces, so conversions copy CUDA 13's definitions:
//   float  -> bf16  __float2bfloat16: round to nearest even; Inf kept; overflow -> Inf;
//                   every NaN -> 0x7FFF (sign and payload dropped).
//   double -> bf16  __double2bfloat16: rounded once from the double (never through float);
//                   NaN -> 0x7FFF.
//   bf16 -> float   __bfloat162float: the bits shifted up, NaN payload and sign kept.
//   bf16 -> double  exact; a NaN widens like (double)float (payload kept, quiet bit set).
// The type is a bag of bits with explicit conversions; arithmetic happens in float.
#pragma once

#include <cstdint>

#include "reason/core/host_device.hpp"
#include "reason/core/narrow_float.hpp"

namespace reason {

/// bfloat16 (1-8-7). Trivially copyable; `bits` is the raw encoding.
struct bf16 {
  std::uint16_t bits;

  bf16() = default;
  REASON_HOST_DEVICE constexpr explicit bf16(float x) : bits(from_float_bits(detail::bit_cast<std::uint32_t>(x))) {}
  REASON_HOST_DEVICE constexpr explicit bf16(double x) : bits(from_double_bits(detail::bit_cast<std::uint64_t>(x))) {}
  [[nodiscard]] REASON_HOST_DEVICE static constexpr bf16 from_bits(std::uint16_t b) {
    bf16 r{};
    r.bits = b;
    return r;
  }

  REASON_HOST_DEVICE constexpr explicit operator float() const {
    return detail::bit_cast<float>(std::uint32_t{bits} << 16);
  }
  REASON_HOST_DEVICE constexpr explicit operator double() const {
    const std::uint32_t f = std::uint32_t{bits} << 16;
    if ((f & 0x7FFFFFFFu) > 0x7F800000u) return detail::bit_cast<double>(detail::widen_nan_bits(f));
    const std::uint64_t sign = std::uint64_t(bits >> 15) << 63;
    if ((bits & 0x7FFFu) == 0x7F80u) return detail::bit_cast<double>(sign | 0x7FF0000000000000ull);
    return detail::bit_cast<double>(sign | detail::widen_magnitude<detail::Binary64>(bits & 0x7FFFu, 7, 127));
  }

  static constexpr std::uint16_t nan_bits = 0x7FFF;  // what CUDA makes of every NaN

 private:
  template <class Src>
  REASON_HOST_DEVICE static constexpr std::uint16_t round_bits(typename Src::Bits x) {
    const auto a = x & Src::abs_mask;
    if (a > Src::inf) return nan_bits;
    const auto sign = static_cast<std::uint16_t>((x >> (Src::bits - 1)) << 15);
    if (a == Src::inf) return sign | 0x7F80u;
    const std::uint32_t m = detail::round_magnitude<Src>(a, 7, 127);
    return static_cast<std::uint16_t>(sign | (m >= 0x7F80u ? 0x7F80u : m));
  }
  REASON_HOST_DEVICE static constexpr std::uint16_t from_float_bits(std::uint32_t x) { return round_bits<detail::Binary32>(x); }
  REASON_HOST_DEVICE static constexpr std::uint16_t from_double_bits(std::uint64_t x) { return round_bits<detail::Binary64>(x); }
};

static_assert(sizeof(bf16) == 2);

}  // namespace reason
