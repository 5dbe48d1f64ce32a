// reason/quant/grid.hpp — the uniform integer grid every integer quantizer rounds onto.
//
// Affine quantization (Jacob et al., "Quantization and Training of Neural Networks for Efficient
// Integer-Arithmetic-Only Inference", CVPR 2018, §2.1, eq. 1): a real value x is represented by an
// integer code q in [qmin, qmax] through a scale s > 0 and an integer zero point z,
//   x ≈ s (q - z),   q = clamp(round(x / s) + z, qmin, qmax),
// with round = round-half-to-even (IEEE 754's default, CUDA's __float2int_rn, torch.round).
// Two ways to choose (s, z) from the values a grid must cover:
//   symmetric  z = 0, q in [-qmax, qmax], s = absmax / qmax (-qmax, not -qmax - 1, so the grid is
//              symmetric about 0: LLM.int8() of Dettmers et al. 2022, TensorRT's int8);
//   affine     the range [lo, hi] is first widened to contain 0 (Jacob et al. §2.1: zero must be
//              exactly representable; GPTQ's quantizer does the same), then
//              s = (hi - lo) / (qmax - qmin),  z = qmin - round(lo / s), clamped to [qmin, qmax].
// Edge cases, chosen so the round-trip bound |x - s (q - z)| <= s / 2 holds for every finite input:
//   - an all-zero range (absmax == 0, or lo == hi == 0) gets s = 1, so every code decodes to
//     exactly 0;
//   - s is never below FLT_MIN (the smallest normal float): a range of subnormals would otherwise
//     give a subnormal (or zero) scale that has lost its precision, so that absmax / s overshoots
//     qmax and clips; with s >= FLT_MIN, x / s and s (q - z) are exact for subnormal x;
//   - s is computed in double and rounded to float once, so hi - lo cannot overflow.
// Because the float s is a rounding of the ideal one, absmax / s may exceed qmax by a relative
// 2^-24; such a value rounds (or clamps) to qmax and stays within s / 2 (1 + 2^-23).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "reason/quant/checks.hpp"

namespace reason::quant {

/// Whether a quantizer's zero point is fixed at 0 (symmetric) or chosen per grid (asymmetric / affine).
enum class Symmetry : std::uint8_t { symmetric, asymmetric };

/// Round half to even, for |v| < 2^22: adding and removing 1.5 * 2^23 leaves v's integer part in
/// the float's last bit under the default rounding mode (no libm call, vectorisable). The library
/// is built without -ffast-math, which would fold the two additions away.
[[nodiscard]] inline float round_half_even(float v) {
  constexpr float magic = 0x1.8p23f;
  return (v + magic) - magic;
}

/// One uniform grid: x ≈ scale * (q - zero_point), q in [qmin, qmax].
struct IntGrid {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
  std::int32_t qmin = -127, qmax = 127;

  /// The smallest scale a grid is given (see the header comment).
  static constexpr float min_scale = FLT_MIN;

  /// Symmetric grid over [-absmax, absmax]: z = 0, q in [-qmax, qmax], s = absmax / qmax.
  [[nodiscard]] static IntGrid symmetric(float absmax, std::int32_t qmax) {
    IntGrid g{1.0f, 0, -qmax, qmax};
    if (absmax > 0.0f) g.scale = std::max(static_cast<float>(double(absmax) / double(qmax)), min_scale);
    return g;
  }

  /// Affine grid over [min(lo, 0), max(hi, 0)]: s = (hi - lo) / (qmax - qmin), z = qmin - round(lo / s).
  [[nodiscard]] static IntGrid affine(float lo, float hi, std::int32_t qmin, std::int32_t qmax) {
    const double l = std::min(double(lo), 0.0), h = std::max(double(hi), 0.0);
    IntGrid g{1.0f, qmin, qmin, qmax};  // all zeros: s = 1, z = qmin decodes to 0
    if (h > l) {
      g.scale = std::max(static_cast<float>((h - l) / double(qmax - qmin)), min_scale);
      const double z = double(qmin) - std::nearbyint(l / double(g.scale));
      g.zero_point = static_cast<std::int32_t>(std::clamp(z, double(qmin), double(qmax)));
    }
    return g;
  }

  /// The code of x: clamp(round(x / s) + z, qmin, qmax). Clamping x / s to [qmin - z, qmax - z]
  /// before rounding gives the same code (the bounds are integers) and keeps |x / s| small.
  [[nodiscard]] std::int32_t code(float x) const {
    const float v = std::clamp(x / scale, float(qmin - zero_point), float(qmax - zero_point));
    return static_cast<std::int32_t>(round_half_even(v)) + zero_point;
  }
  /// Whether code(x) is clamped: round(x / s) + z lies outside [qmin, qmax].
  [[nodiscard]] bool clips(float x) const {
    const float v = x / scale;
    if (!(std::abs(v) < 0x1p22f)) return true;  // beyond every grid (and outside round_half_even's domain)
    const float q = round_half_even(v) + static_cast<float>(zero_point);
    return q < static_cast<float>(qmin) || q > static_cast<float>(qmax);
  }
  /// The value of code q: s (q - z).
  [[nodiscard]] float value(std::int32_t q) const { return scale * static_cast<float>(q - zero_point); }
  /// dq(q(x)) = value(code(x)).
  [[nodiscard]] float round_trip(float x) const { return value(code(x)); }
};

namespace detail {

/// The grid of one range: symmetric over max(|lo|, |hi|), or affine over [lo, hi].
inline IntGrid grid_of(MinMax m, Symmetry sym, std::int32_t qmin, std::int32_t qmax) {
  return sym == Symmetry::symmetric ? IntGrid::symmetric(std::max(-m.lo, m.hi), qmax) : IntGrid::affine(m.lo, m.hi, qmin, qmax);
}

}  // namespace detail

}  // namespace reason::quant
