// reason/core/narrow_float.hpp — rounding binary32/binary64 into a narrow binary format, and back.
//
// IEEE 754-2019 §4.3.1 roundTiesToEven, done on the integer bits so that it is exact, constexpr,
// and gives the same bits on the host and on a GPU (the same code runs on both). One routine serves
// every narrow format (bf16, fp16, fp8 E4M3/E5M2 of Micikevicius et al., "FP8 Formats for Deep
// Learning", arXiv:2209.05433); what differs between them — NaN encodings, infinity or saturation —
// is decided by each type's header (bf16.hpp, fp16.hpp, fp8.hpp), which mirror CUDA's cuda_bf16.h,
// cuda_fp16.h and cuda_fp8.h. Rounding straight from the source's bits means a double is rounded
// once, never through float (double rounding would move results that lie near a midpoint).
#pragma once

#include <cstdint>

#include "reason/core/host_device.hpp"

namespace reason::detail {

/// The bit layout of a binary source format.
template <class U, int Man, int Bias>
struct SourceFormat {
  using Bits = U;
  static constexpr int man = Man;    // stored fraction bits
  static constexpr int bias = Bias;  // exponent bias
  static constexpr int bits = int(sizeof(U) * 8);
  static constexpr U abs_mask = U(~U(0)) >> 1;
  static constexpr U inf = U(abs_mask >> Man) << Man;  // exponent all ones, fraction zero
};
using Binary32 = SourceFormat<std::uint32_t, 23, 127>;
using Binary64 = SourceFormat<std::uint64_t, 52, 1023>;

/// Rounds a finite non-negative source magnitude `a` (sign bit clear, not Inf/NaN) to nearest-even
/// in a target with `man` fraction bits and exponent bias `bias`, ignoring the target's top end.
/// Returns the target's magnitude encoding ((biased exponent << man) | fraction); a carry out of
/// the fraction moves into the exponent, so a result at or past the target's Inf/NaN encodings
/// means overflow, which the caller resolves. Target subnormals and underflow to zero are exact.
template <class Src>
REASON_HOST_DEVICE constexpr std::uint32_t round_magnitude(typename Src::Bits a, int man, int bias) {
  using U = typename Src::Bits;
  int e = int(a >> Src::man);                     // biased source exponent
  U sig = a & ((U(1) << Src::man) - 1);
  if (e == 0) e = 1;                              // source subnormal: no implicit bit
  else sig |= U(1) << Src::man;
  const int te = e - Src::bias + bias;            // biased target exponent if normal
  int shift = Src::man - man;                     // fraction bits to drop
  if (te < 1) shift += 1 - te;                    // target subnormal: drop more
  if (shift >= Src::man + 2) return 0;            // below half the smallest subnormal
  const U kept = sig >> shift;
  const U rest = sig & ((U(1) << shift) - 1);
  const U half = U(1) << (shift - 1);
  const U rounded = kept + ((rest > half || (rest == half && (kept & 1))) ? 1 : 0);
  // kept carries the implicit bit for normals, so adding (te - 1) << man restores the exponent.
  const int base = te < 1 ? 0 : te - 1;
  return static_cast<std::uint32_t>((std::uint64_t(unsigned(base)) << man) + std::uint64_t(rounded));
}

/// Widens a finite narrow magnitude ((exponent << man) | fraction) exactly to a destination's
/// magnitude bits (sign not included). Exact: every narrow value is a float and a double.
template <class Dst>
REASON_HOST_DEVICE constexpr typename Dst::Bits widen_magnitude(std::uint32_t m, int man, int bias) {
  using U = typename Dst::Bits;
  int e = int(m >> man);
  U frac = U(m & ((1u << man) - 1));
  if (e == 0) {
    if (frac == 0) return 0;
    e = 1;
    while (!(frac >> man)) {  // normalise the subnormal
      frac <<= 1;
      --e;
    }
    frac &= (U(1) << man) - 1;
  }
  return (U(unsigned(e - bias + Dst::bias)) << Dst::man) | (frac << (Dst::man - man));
}

/// Float NaN bits widened to double the way x86 and C's (double) cast do it: sign and payload
/// kept, quiet bit set.
REASON_HOST_DEVICE_INLINE constexpr std::uint64_t widen_nan_bits(std::uint32_t f) {
  return (std::uint64_t(f >> 31) << 63) | 0x7FF8000000000000ull | (std::uint64_t(f & 0x7FFFFFu) << 29);
}

}  // namespace reason::detail
