// reason/train/clip.hpp — global-norm gradient clipping.
//
// Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
// ICML 2013: if ||g||_2 > max_norm, g *= max_norm / ||g||_2. The norm is taken over the whole
// flat gradient buffer (one span, whatever the model), summed deterministically.
//
// With loss scaling (train/loss_scale.hpp) the buffer holds S times the gradients: `unscale` = 1/S
// is folded into the same single pass over the buffer, g *= unscale * (clip factor), and the norm
// returned and compared with max_norm is the unscaled one.
#pragma once

#include <cmath>
#include <span>

#include "reason/kernels/reduce.hpp"

namespace reason::train {

/// The factor clip_grad_norm multiplies the gradients by, given their unscaled norm: `unscale`,
/// times max_norm / (norm + 1e-6) when the norm exceeds max_norm > 0. (Shared with the GPU buffers.)
[[nodiscard]] inline double clip_factor(double norm, double max_norm, double unscale) {
  return max_norm > 0 && norm > max_norm ? unscale * (max_norm / (norm + 1e-6)) : unscale;
}

/// Multiplies `grads` by `unscale` (1/S under loss scaling, else 1) and scales them so their global
/// L2 norm is at most `max_norm` (<= 0: no clipping). Returns the unscaled norm before clipping.
template <class T>
double clip_grad_norm(std::span<T> grads, double max_norm, double unscale = 1.0) {
  const double norm = std::sqrt(kernels::sum_squares<T>(std::span<const T>(grads))) * unscale;
  const double factor = clip_factor(norm, max_norm, unscale);
  if (factor != 1.0) kernels::scale<T>(grads, static_cast<T>(factor));
  return norm;
}

}  // namespace reason::train
