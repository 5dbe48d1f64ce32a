// reason/kernels/swiglu.hpp — the SwiGLU gate h = silu(g) * u and its backward.
//
// Shazeer, "GLU Variants Improve Transformer", 2020: FFN_SwiGLU(x) = (silu(x W_g) * x W_u) W_d,
// with silu(g) = g * sigmoid(g) (Ramachandran et al. 2017's Swish with beta = 1). This kernel
// is only the element-wise middle; the three projections are linear.hpp. With s = sigmoid(g):
//   dg = dh * u * s * (1 + g * (1 - s)),   du = dh * g * s.
// Both gradients are overwritten (they are activation gradients). Element-wise, rows split
// across threads; sigmoid is written 1 / (1 + exp(-g)), which saturates to 0 or 1 without NaN.
#pragma once

#include <algorithm>
#include <cmath>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

namespace detail {
template <class T>
T sigmoid(T g) {
  return T(1) / (T(1) + std::exp(-g));
}
}  // namespace detail

/// h = silu(g) * u.
template <class T>
void swiglu_forward(View<const T, 2> g,  // g: [N, F], gate pre-activation
                    View<const T, 2> u,  // u: [N, F], up projection
                    View<T, 2> h) {      // h: [N, F]
  const index_t n = g.shape[0], f = g.shape[1];
  expect_shape(u, "swiglu_forward: u", {n, f});
  expect_shape(h, "swiglu_forward: h", {n, f});
  expect_unit_inner_stride(g, "swiglu_forward: g");
  expect_unit_inner_stride(u, "swiglu_forward: u");
  expect_unit_inner_stride(h, "swiglu_forward: h");
  parallel_for(n, std::max<index_t>(1, 4096 / std::max<index_t>(f, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T *gr = g.row(r), *ur = u.row(r);
      T* hr = h.row(r);
      for (index_t j = 0; j < f; ++j) hr[j] = gr[j] * detail::sigmoid(gr[j]) * ur[j];
    }
  });
}

/// dg = dh * u * silu'(g), du = dh * silu(g); both overwritten.
template <class T>
void swiglu_backward(View<const T, 2> g,   // g: [N, F]
                     View<const T, 2> u,   // u: [N, F]
                     View<const T, 2> dh,  // dh: [N, F]
                     View<T, 2> dg,        // dg: [N, F], overwritten
                     View<T, 2> du) {      // du: [N, F], overwritten
  const index_t n = g.shape[0], f = g.shape[1];
  expect_shape(u, "swiglu_backward: u", {n, f});
  expect_shape(dh, "swiglu_backward: dh", {n, f});
  expect_shape(dg, "swiglu_backward: dg", {n, f});
  expect_shape(du, "swiglu_backward: du", {n, f});
  expect_unit_inner_stride(g, "swiglu_backward: g");
  expect_unit_inner_stride(u, "swiglu_backward: u");
  expect_unit_inner_stride(dh, "swiglu_backward: dh");
  expect_unit_inner_stride(dg, "swiglu_backward: dg");
  expect_unit_inner_stride(du, "swiglu_backward: du");
  parallel_for(n, std::max<index_t>(1, 4096 / std::max<index_t>(f, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T *gr = g.row(r), *ur = u.row(r), *d = dh.row(r);
      T *dgr = dg.row(r), *dur = du.row(r);
      for (index_t j = 0; j < f; ++j) {
        const T gj = gr[j], uj = ur[j], dj = d[j];  // read first: dg or du may alias dh
        const T s = detail::sigmoid(gj);
        dgr[j] = dj * uj * s * (T(1) + gj * (T(1) - s));
        dur[j] = dj * gj * s;
      }
    }
  });
}

}  // namespace reason::kernels
