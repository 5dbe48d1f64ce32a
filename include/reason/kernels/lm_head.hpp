// reason/kernels/lm_head.hpp — the LM head with a caller-defined objective on its logits, chunk by chunk.
//
// The generalisation of lm_head_cross_entropy (cross_entropy.hpp) that RL and distillation
// losses need: logits = h W^T are formed for R rows at a time into scratch [R, V]; the objective
// reads them and overwrites them, in place, with the gradient of its loss with respect to those
// logits (already scaled), returning the loss it added; then dh = dlogits W (overwrite) and
// dW += dlogits^T h. As in the fused cross-entropy, the [N, V] logits never exist whole
// (Hsu et al. 2024, Liger-Kernel; Wijmans et al. 2024, Cut Cross-Entropy), and the objective sees
// exactly the logits training computes — the ones a rollout sampled from, up to rounding.
//
// The objective is called as `double objective(index_t first_row, View<T, 2> logits)` for rows
// [first_row, first_row + logits.shape[0]) in order, on the calling thread. Rows it leaves with
// zero gradient cost nothing extra; with dh and dw empty (evaluation) the GEMMs of the backward
// are skipped and the objective's writes are ignored.
#pragma once

#include <algorithm>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/gemm.hpp"

namespace reason::kernels {

/// Runs `objective` over the logits of h [N, C] under w [V, C], R = scratch.shape[0] rows at a
/// time; returns the sum of what it returned. dh [N, C] is overwritten, dw [V, C] accumulated,
/// each only when non-empty.
template <class T, class Objective>
double lm_head_objective(View<const T, 2> h, View<const T, 2> w, View<T, 2> scratch, View<T, 2> dh, View<T, 2> dw,
                         Objective&& objective) {
  const index_t N = h.size(0), V = w.size(0), C = w.size(1);
  expect_shape(h, "lm_head_objective: h", {N, C});
  REASON_CHECK(scratch.size(0) >= 1 && scratch.size(1) == V, "lm_head_objective: scratch: shape ",
               shape_string(scratch.shape), ", expected [R, ", V, "] with R >= 1");
  const bool want_dh = dh.data != nullptr, want_dw = dw.data != nullptr;
  if (want_dh) expect_shape(dh, "lm_head_objective: dh", {N, C});
  if (want_dw) expect_shape(dw, "lm_head_objective: dw", {V, C});
  const index_t R = scratch.size(0);
  double loss = 0;
  for (index_t r0 = 0; r0 < N; r0 += R) {
    const index_t rows = std::min(R, N - r0);
    const View<const T, 2> hc = h.slice(0, r0, r0 + rows);  // [rows, C]
    const View<T, 2> sc = scratch.slice(0, 0, rows);        // [rows, V]: logits in, dlogits out
    gemm<T>(Trans::N, Trans::T, T(1), hc, w, T(0), sc);
    loss += objective(r0, sc);
    if (want_dh) gemm<T>(Trans::N, Trans::N, T(1), View<const T, 2>(sc), w, T(0), dh.slice(0, r0, r0 + rows));
    if (want_dw) gemm<T>(Trans::T, Trans::N, T(1), View<const T, 2>(sc), hc, T(1), dw);
  }
  return loss;
}

}  // namespace reason::kernels
