// reason/kernels/rmsnorm.hpp — root-mean-square layer normalisation and its backward.
//
// Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019:
//   rstd[n] = 1 / sqrt(mean_c x[n, c]^2 + eps),   y[n, c] = x[n, c] * rstd[n] * weight[c].
// No mean subtraction and no bias, as in LLaMA and DeepSeek. Design rule (llm.c's layernorm):
// the forward saves rstd[n] (one number a row) so the backward needs no second reduction
// over x. With xhat = x * rstd and g = dy * weight,
//   dx[n, c]    = rstd[n] * (g[n, c] - xhat[n, c] * mean_c'(g[n, c'] * xhat[n, c'])),
//   dweight[c] += sum_n dy[n, c] * xhat[n, c].
// dx is overwritten, dweight accumulated. Rows are independent and split across threads;
// dweight is split by column and summed over rows in order, so results do not depend on the
// thread count. Row reductions accumulate in double.
#pragma once

#include <algorithm>
#include <cmath>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

/// y = x * rstd * weight; rstd[n] = 1/sqrt(mean_c(x[n, c]^2) + eps), written when rstd is non-empty.
template <class T>
void rmsnorm_forward(View<const T, 2> x,       // x: [N, C]
                     View<const T, 1> weight,  // weight: [C]
                     T eps,                    // eps > 0 keeps a zero row finite
                     View<T, 2> y,             // y: [N, C]
                     View<T, 1> rstd) {        // rstd: [N], saved for backward; empty at inference
  const index_t n = x.shape[0], c = x.shape[1];
  expect_shape(weight, "rmsnorm_forward: weight", {c});
  expect_shape(y, "rmsnorm_forward: y", {n, c});
  if (rstd.data != nullptr) expect_shape(rstd, "rmsnorm_forward: rstd", {n});
  expect_unit_inner_stride(x, "rmsnorm_forward: x");
  expect_unit_inner_stride(y, "rmsnorm_forward: y");
  REASON_CHECK(eps >= T(0), "rmsnorm_forward: eps = ", eps, ", expected eps >= 0");
  const index_t grain = std::max<index_t>(1, 8192 / std::max<index_t>(c, 1));
  parallel_for(n, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T* xr = x.row(r);
      T* yr = y.row(r);
      double ss = 0;
      for (index_t j = 0; j < c; ++j) ss += double(xr[j]) * double(xr[j]);
      const T s = T(1.0 / std::sqrt(ss / double(std::max<index_t>(c, 1)) + double(eps)));
      for (index_t j = 0; j < c; ++j) yr[j] = xr[j] * s * weight(j);
      if (rstd.data != nullptr) rstd(r) = s;
    }
  });
}

/// dx = d(y)/d(x)^T dy (overwritten), dweight += sum_n dy * x * rstd.
template <class T>
void rmsnorm_backward(View<const T, 2> x,       // x: [N, C], the forward input
                      View<const T, 1> weight,  // weight: [C]
                      View<const T, 1> rstd,    // rstd: [N], from rmsnorm_forward
                      View<const T, 2> dy,      // dy: [N, C]
                      View<T, 2> dx,            // dx: [N, C], overwritten
                      View<T, 1> dweight) {     // dweight: [C], accumulated
  const index_t n = x.shape[0], c = x.shape[1];
  expect_shape(weight, "rmsnorm_backward: weight", {c});
  expect_shape(rstd, "rmsnorm_backward: rstd", {n});
  expect_shape(dy, "rmsnorm_backward: dy", {n, c});
  expect_shape(dx, "rmsnorm_backward: dx", {n, c});
  expect_shape(dweight, "rmsnorm_backward: dweight", {c});
  expect_unit_inner_stride(x, "rmsnorm_backward: x");
  expect_unit_inner_stride(dy, "rmsnorm_backward: dy");
  expect_unit_inner_stride(dx, "rmsnorm_backward: dx");
  const index_t grain = std::max<index_t>(1, 8192 / std::max<index_t>(c, 1));
  // dweight first: dx may alias dy (an in-place backward), dweight still needs dy.
  parallel_for(c, std::max<index_t>(16, 16384 / std::max<index_t>(n, 1)), [&](index_t c0, index_t c1) {
    for (index_t r = 0; r < n; ++r) {
      const T *xr = x.row(r), *g = dy.row(r);
      const T s = rstd(r);
      for (index_t j = c0; j < c1; ++j) dweight(j) += g[j] * xr[j] * s;
    }
  });
  parallel_for(n, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T *xr = x.row(r), *g = dy.row(r);
      T* d = dx.row(r);
      const double s = double(rstd(r));
      double dot = 0;  // sum_c dy * weight * x
      for (index_t j = 0; j < c; ++j) dot += double(g[j]) * double(weight(j)) * double(xr[j]);
      const T k = T(dot * s * s * s / double(std::max<index_t>(c, 1)));
      const T st = T(s);
      for (index_t j = 0; j < c; ++j) d[j] = st * g[j] * weight(j) - k * xr[j];
    }
  });
}

}  // namespace reason::kernels
