// reason/train/clip.hpp — global-norm gradient clipping.
//
// Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
// ICML 2013: if ||g||_2 > max_norm, g *= max_norm / ||g||_2. The norm is taken over the whole
// flat gradient buffer (one span, whatever the model), summed deterministically.
#pragma once

#include <cmath>
#include <span>

#include "reason/kernels/reduce.hpp"

namespace reason::train {

/// Scales `grads` in place so their global L2 norm is at most `max_norm` (<= 0: no clipping).
/// Returns the norm before clipping.
template <class T>
double clip_grad_norm(std::span<T> grads, double max_norm) {
  const double norm = std::sqrt(kernels::sum_squares<T>(std::span<const T>(grads)));
  if (max_norm > 0 && norm > max_norm) kernels::scale<T>(grads, static_cast<T>(max_norm / (norm + 1e-6)));
  return norm;
}

}  // namespace reason::train
