// reason/kernels/residual.hpp — element-wise adds of the residual stream.
//
// y += x (accumulate) and out = a + b, row by row over [N, C] views (rows may be strided).
#pragma once

#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

/// y [N, C] += x [N, C].
template <class T>
void accumulate(View<T, 2> y, View<const T, 2> x) {
  expect_shape(x, "accumulate: x", y.shape);
  const index_t cols = y.size(1);
  parallel_for(y.size(0), std::max<index_t>(1, 16384 / std::max<index_t>(cols, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      T* yr = y.row(r);
      const T* xr = x.row(r);
      for (index_t c = 0; c < cols; ++c) yr[c * y.stride[1]] += xr[c * x.stride[1]];
    }
  });
}

/// out [N, C] = a [N, C] + b [N, C].
template <class T>
void add(View<const T, 2> a, View<const T, 2> b, View<T, 2> out) {
  expect_shape(a, "add: a", out.shape);
  expect_shape(b, "add: b", out.shape);
  const index_t cols = out.size(1);
  parallel_for(out.size(0), std::max<index_t>(1, 16384 / std::max<index_t>(cols, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r)
      for (index_t c = 0; c < cols; ++c) out(r, c) = a(r, c) + b(r, c);
  });
}

}  // namespace reason::kernels
