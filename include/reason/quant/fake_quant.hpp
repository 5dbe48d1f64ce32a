// reason/quant/fake_quant.hpp — quantize-dequantize in the forward, a straight-through gradient in the backward.
//
// Quantization-aware training (Jacob et al., "Quantization and Training of Neural Networks for
// Efficient Integer-Arithmetic-Only Inference", CVPR 2018, §3) trains float weights through a
// forward that sees their quantized values:
//   forward   y = dq(q(x)) = s (clamp(round(x / s) + z, qmin, qmax) - z)   (an integer grid)
//             y = s fp8(x / s)                                              (an fp8 grid)
// round has zero derivative almost everywhere, so the backward uses the straight-through estimator
// (Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through Stochastic Neurons for
// Conditional Computation", arXiv:1308.3432, 2013) in its clipped form (Jacob et al. §3; Hubara et
// al. 2016): round is treated as the identity, clamp is not,
//   backward  dx = dy where x was inside the grid's range, 0 where it was clipped.
// "Inside" is decided per element by the forward and kept as a 0/1 mask `pass`:
//   integer grid: round(x / s) + z lies in [qmin, qmax] (no clamp was needed), i.e. x within half a
//                 step of [s (qmin - z), s (qmax - z)] (TensorFlow's FakeQuantWithMinMaxVars passes
//                 on [s (qmin - z), s (qmax - z)] exactly; the two differ only on those half steps,
//                 where the forward output equals the unclamped rounding, so passing is consistent);
//   fp8 grid:     x / s rounds to a finite fp8 value without saturating (|x / s| <= 464 for E4M3).
// Grids with fixed ranges clip (activation ranges from running min/max, Jacob et al. §3.1; a
// learned clip), and those are the ones the mask matters for. Weights fake-quantized with a
// quantizer policy's own scales (fake_quant_weights) are never clipped, because the scales are
// taken from the weights themselves (absmax or min/max): their backward is the identity,
// dW = dW_q. fake_quant_weights gives exactly Q::dequantize(Q::quantize(w)), the weights the
// quantized model will multiply by.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "reason/core/error.hpp"
#include "reason/core/fp8.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/quant/checks.hpp"
#include "reason/quant/concepts.hpp"
#include "reason/quant/fp8_block.hpp"  // Fp8Limits
#include "reason/quant/grid.hpp"

namespace reason::quant {

/// One fp8 grid: x ≈ s fp8(x / s), codes rounded to nearest even with CUDA's rules.
template <class Fp8>
struct Fp8Grid {
  float scale = 1.0f;

  /// The grid whose largest code is amax: s = amax / fp8_max (1 for amax == 0, at least FLT_MIN).
  [[nodiscard]] static Fp8Grid from_absmax(float amax) {
    return {amax > 0.0f ? std::max(static_cast<float>(double(amax) / double(Fp8Limits<Fp8>::max_finite)), FLT_MIN)
                        : 1.0f};
  }
  [[nodiscard]] float round_trip(float x) const { return scale * Fp8Limits<Fp8>::values[Fp8(x / scale).bits]; }
  /// Whether x / s is beyond the largest finite code (saturated by the forward).
  [[nodiscard]] bool clips(float x) const {
    return !std::isfinite(Fp8Limits<Fp8>::values[Fp8(x / scale, Saturation::none).bits]);
  }
};

/// What fake_quant_forward needs of a grid: its quantize-dequantize and whether it clips x.
/// quant::IntGrid and quant::Fp8Grid<Fp8> provide both.
template <class G>
concept FakeQuantGrid = requires(const G& g, float x) {
  { g.round_trip(x) } -> std::same_as<float>;
  { g.clips(x) } -> std::same_as<bool>;
};

static_assert(FakeQuantGrid<IntGrid> && FakeQuantGrid<Fp8Grid<fp8_e4m3>>);

/// y = dq(q(x)) element-wise with the grid of each row (grids.size() == rows) or one grid for all
/// (grids.size() == 1); pass[r, c] = 1 where x[r, c] was inside its grid's range, 0 where clipped.
/// Inf or NaN in x is an error naming `name` and the element.
template <FakeQuantGrid Grid>
void fake_quant_forward(View<const float, 2> x,       // x: [R, C]
                        std::span<const Grid> grids,   // grids: [R] or [1]
                        View<float, 2> y,              // y: [R, C], overwritten
                        View<std::uint8_t, 2> pass,    // pass: [R, C], overwritten (1 = gradient passes)
                        std::string_view name = "x") {
  constexpr std::string_view fn = "fake_quant_forward";
  const index_t rows = x.shape[0], cols = x.shape[1];
  detail::expect_matrix(x, fn, name);
  detail::expect_output(y, fn, "y", rows, cols);
  REASON_CHECK(pass.shape[0] == rows && pass.shape[1] == cols, fn, ": pass: shape ", shape_string(pass.shape),
               ", expected ", shape_string({rows, cols}));
  REASON_CHECK(grids.size() == 1 || grids.size() == static_cast<std::size_t>(rows), fn, ": ", grids.size(),
               " grids for ", name, " with ", rows, " rows: expected one per row or one for all");
  parallel_for(rows, std::max<index_t>(1, 16384 / std::max<index_t>(cols, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const Grid& g = grids[grids.size() == 1 ? 0 : static_cast<std::size_t>(r)];
      const float* xr = x.row(r);
      float* yr = y.row(r);
      for (index_t c = 0; c < cols; ++c) {
        if (!std::isfinite(xr[c])) [[unlikely]] detail::fail_not_finite(fn, name, r, c, xr[c]);
        yr[c] = g.round_trip(xr[c]);
        pass(r, c) = g.clips(xr[c]) ? 0 : 1;
      }
    }
  });
}

/// The straight-through backward: dx = dy where pass, 0 where the forward clipped.
inline void fake_quant_backward(View<const float, 2> dy,           // dy: [R, C]
                                View<const std::uint8_t, 2> pass,  // pass: [R, C], from the forward
                                View<float, 2> dx) {               // dx: [R, C], overwritten
  constexpr std::string_view fn = "fake_quant_backward";
  const index_t rows = dy.shape[0], cols = dy.shape[1];
  detail::expect_matrix(dy, fn, "dy");
  detail::expect_output(dx, fn, "dx", rows, cols);
  REASON_CHECK(pass.shape[0] == rows && pass.shape[1] == cols, fn, ": pass: shape ", shape_string(pass.shape),
               ", expected ", shape_string({rows, cols}));
  parallel_for(rows, std::max<index_t>(1, 16384 / std::max<index_t>(cols, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const float* g = dy.row(r);
      float* d = dx.row(r);
      for (index_t c = 0; c < cols; ++c) d[c] = pass(r, c) ? g[c] : 0.0f;
    }
  });
}

/// The QAT forward of weights w [out, in] under quantizer Q: wq = Q::dequantize(Q::quantize(w)).
/// Q's scales come from w itself, so nothing is clipped and the backward is dW = dW_q.
template <Quantizer Q>
void fake_quant_weights(View<const float, 2> w, View<float, 2> wq, std::string_view name = "weight") {
  Q::dequantize(Q::quantize(w, name), wq);
}

}  // namespace reason::quant
