// reason/core/fp8.hpp — FP8 E4M3 and E5M2 storage types that round exactly like CUDA's cuda_fp8.h.
//
// The two formats of Micikevicius et al., "FP8 Formats for Deep Learning" (arXiv:2209.05433), as
// used for DeepSeek-V3's fp8 GEMM inputs:
//   E4M3: bias 7, no infinities, NaN = S.1111.111, largest finite 448 (0x7E).
//   E5M2: IEEE-like, bias 15, Inf = S.11111.00, NaN = S.11111.{01,10,11}, largest finite 57344.
// Design rule: a host fp8 holds the very bits a GPU produces. Conversions copy CUDA 13's
// __nv_cvt_double_to_fp8 / __nv_cvt_float_to_fp8 (round to nearest even, from the source's bits):
//   overflow (E4M3: |x| > 464; E5M2: |x| >= 61440; and ±Inf), by Saturation:
//     finite (__NV_SATFINITE, what the __nv_fp8_e4m3(float) constructor uses): ±largest finite;
//     none   (__NV_NOSAT): E4M3 -> ±NaN (0x7F | sign), E5M2 -> ±Inf.
//   float NaN  -> 0x7F for both formats (CUDA makes it the canonical float NaN first).
//   double NaN -> E4M3: 0x7F | sign; E5M2: 0x7E | top two fraction bits of the double | sign.
//   fp8 -> float: exact (through CUDA's fp8 -> half -> float); every NaN -> 0x7FFFFFFF.
//   fp8 -> double: exact; NaN -> the widening of 0x7FFFFFFF.
#pragma once

#include <cstdint>

#include "reason/core/host_device.hpp"
#include "reason/core/narrow_float.hpp"

namespace reason {

/// What an fp8 conversion does with values beyond the largest finite one (CUDA's
/// __nv_saturation_t): `finite` = __NV_SATFINITE, `none` = __NV_NOSAT.
enum class Saturation : std::uint8_t { finite, none };

namespace detail {

/// One fp8 format: exponent bias, fraction bits, and CUDA's rules for its edges.
template <int Man, int Bias, bool E4M3>
struct Fp8Format {
  static constexpr int man = Man, bias = Bias;
  static constexpr std::uint8_t max_finite = E4M3 ? 0x7E : 0x7B;
  static constexpr std::uint8_t overflow_from = E4M3 ? 0x7F : 0x7C;  // first magnitude past max_finite
  static constexpr std::uint8_t overflow_nosat = E4M3 ? 0x7F : 0x7C;  // NaN (E4M3) or Inf (E5M2)

  REASON_HOST_DEVICE static constexpr bool is_nan(std::uint8_t b) {
    return E4M3 ? (b & 0x7F) == 0x7F : (b & 0x7F) > 0x7C;
  }
  REASON_HOST_DEVICE static constexpr bool is_inf(std::uint8_t b) { return !E4M3 && (b & 0x7F) == 0x7C; }

  /// __nv_cvt_double_to_fp8, bit for bit.
  REASON_HOST_DEVICE static constexpr std::uint8_t from_double_bits(std::uint64_t x, Saturation sat) {
    const auto sign = static_cast<std::uint8_t>((x >> 63) << 7);
    const std::uint64_t a = x & Binary64::abs_mask;
    if (a > Binary64::inf) {
      const auto nan = E4M3 ? std::uint8_t{0x7F} : static_cast<std::uint8_t>(0x7E | ((x >> 50) & 3));
      return nan | sign;
    }
    const std::uint32_t m = a == Binary64::inf ? overflow_from : round_magnitude<Binary64>(a, Man, Bias);
    if (m >= overflow_from) return (sat == Saturation::finite ? max_finite : overflow_nosat) | sign;
    return static_cast<std::uint8_t>(m) | sign;
  }
  /// __nv_cvt_float_to_fp8, bit for bit: NaN made canonical, then the value rounded exactly.
  REASON_HOST_DEVICE static constexpr std::uint8_t from_float_bits(std::uint32_t x, Saturation sat) {
    const std::uint32_t a = x & Binary32::abs_mask;
    if (a > Binary32::inf) return 0x7F;
    const auto sign = static_cast<std::uint8_t>((x >> 31) << 7);
    const std::uint32_t m = a == Binary32::inf ? overflow_from : round_magnitude<Binary32>(a, Man, Bias);
    if (m >= overflow_from) return (sat == Saturation::finite ? max_finite : overflow_nosat) | sign;
    return static_cast<std::uint8_t>(m) | sign;
  }
  REASON_HOST_DEVICE static constexpr std::uint32_t to_float_bits(std::uint8_t b) {
    if (is_nan(b)) return 0x7FFFFFFFu;
    const std::uint32_t sign = std::uint32_t(b >> 7) << 31;
    if (is_inf(b)) return sign | 0x7F800000u;
    return sign | widen_magnitude<Binary32>(b & 0x7Fu, Man, Bias);
  }
  REASON_HOST_DEVICE static constexpr std::uint64_t to_double_bits(std::uint8_t b) {
    if (is_nan(b)) return widen_nan_bits(0x7FFFFFFFu);
    const std::uint64_t sign = std::uint64_t(b >> 7) << 63;
    if (is_inf(b)) return sign | 0x7FF0000000000000ull;
    return sign | widen_magnitude<Binary64>(b & 0x7Fu, Man, Bias);
  }
};

/// The storage type for one format; F is an Fp8Format.
template <class F, class Self>
struct Fp8 {
  std::uint8_t bits;

  [[nodiscard]] REASON_HOST_DEVICE static constexpr Self from_bits(std::uint8_t b) {
    Self r{};
    r.bits = b;
    return r;
  }
  REASON_HOST_DEVICE constexpr explicit operator float() const { return bit_cast<float>(F::to_float_bits(bits)); }
  REASON_HOST_DEVICE constexpr explicit operator double() const { return bit_cast<double>(F::to_double_bits(bits)); }
};

using E4M3Format = Fp8Format<3, 7, true>;
using E5M2Format = Fp8Format<2, 15, false>;

}  // namespace detail

/// FP8 E4M3 (1-4-3, no Inf, largest finite 448). Trivially copyable; `bits` is the raw encoding.
struct fp8_e4m3 : detail::Fp8<detail::E4M3Format, fp8_e4m3> {
  using Format = detail::E4M3Format;
  fp8_e4m3() = default;
  REASON_HOST_DEVICE constexpr explicit fp8_e4m3(float x, Saturation s = Saturation::finite)
      : Fp8{Format::from_float_bits(detail::bit_cast<std::uint32_t>(x), s)} {}
  REASON_HOST_DEVICE constexpr explicit fp8_e4m3(double x, Saturation s = Saturation::finite)
      : Fp8{Format::from_double_bits(detail::bit_cast<std::uint64_t>(x), s)} {}
};

/// FP8 E5M2 (1-5-2, IEEE-like, largest finite 57344). Trivially copyable; `bits` is the raw encoding.
struct fp8_e5m2 : detail::Fp8<detail::E5M2Format, fp8_e5m2> {
  using Format = detail::E5M2Format;
  fp8_e5m2() = default;
  REASON_HOST_DEVICE constexpr explicit fp8_e5m2(float x, Saturation s = Saturation::finite)
      : Fp8{Format::from_float_bits(detail::bit_cast<std::uint32_t>(x), s)} {}
  REASON_HOST_DEVICE constexpr explicit fp8_e5m2(double x, Saturation s = Saturation::finite)
      : Fp8{Format::from_double_bits(detail::bit_cast<std::uint64_t>(x), s)} {}
};

static_assert(sizeof(fp8_e4m3) == 1 && sizeof(fp8_e5m2) == 1);

}  // namespace reason
