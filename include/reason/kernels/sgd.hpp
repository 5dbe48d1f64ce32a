// reason/kernels/sgd.hpp — the element-wise SGD-with-momentum update over flat spans.
//
// Heavy-ball momentum as PyTorch writes it (Sutskever, Martens, Dahl & Hinton, "On the
// importance of initialization and momentum in deep learning", ICML 2013, for the Nesterov
// form), with weight decay decoupled from the gradient as in Loshchilov & Hutter 2019:
//   buf = mu buf + g,
//   p  -= lr * (nesterov ? g + mu buf : buf) + lr * wd * p      (p on the right is the old p).
// Design rule: like adamw.hpp, one pass over flat spans, arithmetic in double, state rounded
// to T on store, element-wise so threads cannot change a result. With momentum == 0 the
// buffer is not needed and may be an empty span (plain SGD).
#pragma once

#include <cstdint>
#include <span>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"

namespace reason::kernels {

/// One SGD step with momentum buffer buf (empty allowed when momentum == 0).
template <class T>
void sgd_momentum_update(std::span<T> p,        // p: [P] parameters, updated
                         std::span<const T> g,  // g: [P] gradients
                         std::span<T> buf,      // buf: [P] momentum buffer, updated; or empty when momentum == 0
                         double lr, double momentum, double weight_decay, bool nesterov) {
  const std::size_t n = p.size();
  REASON_CHECK(g.size() == n, "sgd_momentum_update: g has ", g.size(), " elements, expected ", n, " (the size of p)");
  const bool use_buf = !(momentum == 0 && buf.empty());
  REASON_CHECK(!use_buf || buf.size() == n, "sgd_momentum_update: buf has ", buf.size(), " elements, expected ", n,
               " (the size of p; empty is allowed only with momentum 0)");
  REASON_CHECK(momentum >= 0, "sgd_momentum_update: momentum = ", momentum, ", expected momentum >= 0");
  parallel_for(static_cast<std::int64_t>(n), 1 << 15, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      const double gi = double(g[i]), pi = double(p[i]);
      double step = gi;
      if (use_buf) {
        const double b = momentum * double(buf[i]) + gi;
        buf[i] = T(b);
        step = nesterov ? gi + momentum * b : b;
      }
      p[i] = T(pi - lr * step - lr * weight_decay * pi);
    }
  });
}

}  // namespace reason::kernels
