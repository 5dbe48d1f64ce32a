// reason/kernels/linear.hpp — the affine map y = x W^T + b and its backward.
//
// Design rule (llm.c's matmul_forward / matmul_backward): the weight is stored [out, in] as
// in PyTorch and Hugging Face checkpoints, so the forward is one GEMM with op(W) = W^T and the
// backward is two GEMMs plus a column sum. Activation gradients are overwritten (dx = dy W),
// parameter gradients accumulate (dW += dy^T x, db += sum_n dy[n, :]), so micro-batches and
// shared weights add up without a zeroing pass in between. An empty View (data == nullptr)
// for b, dx or db means "not wanted": no bias, an input that needs no gradient, a bias-free
// layer. The bias column sums are split by output column across threads, each column summed
// over rows in order, so the result does not depend on the thread count.
#pragma once

#include <algorithm>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/gemm.hpp"

namespace reason::kernels {

/// y = x W^T (+ b when b is non-empty).
template <class T>
void linear_forward(View<const T, 2> x,  // x: [N, in]
                    View<const T, 2> w,  // w: [out, in]
                    View<const T, 1> b,  // b: [out], or empty for no bias
                    View<T, 2> y) {      // y: [N, out]
  const index_t n = x.shape[0], in = x.shape[1], out = w.shape[0];
  expect_shape(w, "linear_forward: w", {out, in});
  expect_shape(y, "linear_forward: y", {n, out});
  if (b.data != nullptr) expect_shape(b, "linear_forward: b", {out});
  expect_unit_inner_stride(x, "linear_forward: x");
  expect_unit_inner_stride(w, "linear_forward: w");
  expect_unit_inner_stride(y, "linear_forward: y");
  gemm(Trans::N, Trans::T, T(1), x, w, T(0), y);
  if (b.data == nullptr || out == 0) return;
  const index_t grain = std::max<index_t>(1, 16384 / std::max<index_t>(out, 1));
  parallel_for(n, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      T* yr = y.row(r);
      for (index_t o = 0; o < out; ++o) yr[o] += b(o);
    }
  });
}

/// dx = dy W (when dx is non-empty), dW += dy^T x, db += column sums of dy (when db is non-empty).
template <class T>
void linear_backward(View<const T, 2> x,   // x: [N, in], the forward input
                     View<const T, 2> w,   // w: [out, in]
                     View<const T, 2> dy,  // dy: [N, out]
                     View<T, 2> dx,        // dx: [N, in], overwritten; empty to skip
                     View<T, 2> dw,        // dw: [out, in], accumulated
                     View<T, 1> db) {      // db: [out], accumulated; empty to skip
  const index_t n = x.shape[0], in = x.shape[1], out = w.shape[0];
  expect_shape(w, "linear_backward: w", {out, in});
  expect_shape(dy, "linear_backward: dy", {n, out});
  expect_shape(dw, "linear_backward: dw", {out, in});
  if (dx.data != nullptr) expect_shape(dx, "linear_backward: dx", {n, in});
  if (db.data != nullptr) expect_shape(db, "linear_backward: db", {out});
  expect_unit_inner_stride(x, "linear_backward: x");
  expect_unit_inner_stride(w, "linear_backward: w");
  expect_unit_inner_stride(dy, "linear_backward: dy");
  expect_unit_inner_stride(dw, "linear_backward: dw");
  if (dx.data != nullptr) expect_unit_inner_stride(dx, "linear_backward: dx");
  if (dx.data != nullptr) gemm(Trans::N, Trans::N, T(1), dy, w, T(0), dx);
  gemm(Trans::T, Trans::N, T(1), dy, x, T(1), dw);
  if (db.data == nullptr || out == 0) return;
  const index_t grain = std::max<index_t>(16, 16384 / std::max<index_t>(n, 1));
  parallel_for(out, grain, [&](index_t o0, index_t o1) {
    for (index_t r = 0; r < n; ++r) {
      const T* g = dy.row(r);
      for (index_t o = o0; o < o1; ++o) db(o) += g[o];
    }
  });
}

}  // namespace reason::kernels
