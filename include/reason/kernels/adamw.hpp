// reason/kernels/adamw.hpp — the element-wise AdamW update over flat spans.
//
// Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW), on top of
// Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (bias correction):
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2,
//   mhat = m / (1 - b1^t),   vhat = v / (1 - b2^t),
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)        (p on the right is the old p).
// Design rule: parameters, gradients and both moments each live in one flat buffer (DESIGN.md),
// so the optimizer is one pass over spans; optim/ policies decide lr, t and which spans get
// weight decay. Hyper-parameters are double and the arithmetic is done in double for both
// T = float and T = double; only the stored state is rounded to T. Element-wise, so the
// threaded split cannot change a result.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"

namespace reason::kernels {

/// One AdamW step on p (step number t >= 1), updating the moments m and v in place.
template <class T>
void adamw_update(std::span<T> p,        // p: [P] parameters, updated
                  std::span<const T> g,  // g: [P] gradients
                  std::span<T> m,        // m: [P] first moment, updated
                  std::span<T> v,        // v: [P] second moment, updated
                  double lr, double beta1, double beta2, double eps, double weight_decay, std::int64_t t) {
  const std::size_t n = p.size();
  REASON_CHECK(g.size() == n, "adamw_update: g has ", g.size(), " elements, expected ", n, " (the size of p)");
  REASON_CHECK(m.size() == n, "adamw_update: m has ", m.size(), " elements, expected ", n, " (the size of p)");
  REASON_CHECK(v.size() == n, "adamw_update: v has ", v.size(), " elements, expected ", n, " (the size of p)");
  REASON_CHECK(t >= 1, "adamw_update: step t = ", t, ", expected t >= 1 (steps count from 1)");
  REASON_CHECK(beta1 >= 0 && beta1 < 1, "adamw_update: beta1 = ", beta1, ", expected 0 <= beta1 < 1");
  REASON_CHECK(beta2 >= 0 && beta2 < 1, "adamw_update: beta2 = ", beta2, ", expected 0 <= beta2 < 1");
  REASON_CHECK(eps >= 0, "adamw_update: eps = ", eps, ", expected eps >= 0");
  const double c1 = 1.0 / (1.0 - std::pow(beta1, double(t)));  // bias corrections
  const double c2 = 1.0 / (1.0 - std::pow(beta2, double(t)));
  parallel_for(static_cast<std::int64_t>(n), 1 << 15, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      const double gi = double(g[i]), pi = double(p[i]);
      const double mi = beta1 * double(m[i]) + (1.0 - beta1) * gi;
      const double vi = beta2 * double(v[i]) + (1.0 - beta2) * gi * gi;
      m[i] = T(mi);
      v[i] = T(vi);
      p[i] = T(pi - lr * ((mi * c1) / (std::sqrt(vi * c2) + eps) + weight_decay * pi));
    }
  });
}

}  // namespace reason::kernels
