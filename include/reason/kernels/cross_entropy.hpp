// reason/kernels/cross_entropy.hpp — softmax cross-entropy, fused with the LM head.
//
// The loss of next-token prediction: loss_n = logsumexp(logits_n) - logits_n[target_n], whose
// gradient with respect to the logits is softmax(logits_n) - onehot(target_n). With a vocabulary
// of 10^5 the logits [N, V] dwarf every other activation, so lm_head_cross_entropy never stores
// them whole (the chunked "fused linear cross-entropy" of Liger-Kernel, Hsu et al. 2024, and
// Apple's Cut Cross-Entropy, Wijmans et al. 2024): rows of logits = h W^T are computed chunk by
// chunk into a caller-provided scratch [R, V], turned in place into grad_scale * dlogits, and
// multiplied straight into dh (overwritten) and dw (accumulated), llm.c's convention for
// activation and parameter gradients. Peak memory is R * V, whatever N is.
//
// Design rule: one row routine (`ce_row`) serves the fused and the unfused path, so the two give
// the same loss for the same logits. The softmax subtracts the row max (-inf logits give
// probability 0, never NaN), sums exponentials in double, and the loss is summed in double in row
// order — a fixed order, so the result does not depend on the chunk size or thread count. Rows whose
// target is negative are ignored (prompt tokens, padding): no loss, zero gradient. Every target is
// checked before anything is written; one >= V is an Error naming the row and the value.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/gemm.hpp"

namespace reason::kernels {

/// The summed loss over the counted rows (target >= 0) and how many there were.
struct CrossEntropyResult {
  double loss_sum = 0;
  index_t count = 0;
};

namespace detail {

/// Throws on the first target >= V; returns how many targets are counted (>= 0).
inline index_t ce_check_targets(const char* fn, const View<const std::int32_t, 1>& targets, index_t V) {
  index_t count = 0;
  for (index_t n = 0; n < targets.shape[0]; ++n) {
    const std::int32_t t = targets(n);
    if (t >= V) [[unlikely]] {
      fail(fn, ": targets[", n, "] = ", t, " is out of range for vocabulary size ", V, " (negative means ignored)");
    }
    count += t >= 0;
  }
  return count;
}

/// Loss of one row x [V] with target `target` (>= 0); when dl is non-null it receives
/// grad_scale * (softmax(x) - onehot(target)) [V]. dl may alias x.
template <class T>
double ce_row(const T* x, index_t V, std::int32_t target, T grad_scale, T* dl) {
  const T xt = x[target];
  T mx = -INFINITY;
  for (index_t v = 0; v < V; ++v) mx = std::max(mx, x[v]);
  double sum = 0;
  for (index_t v = 0; v < V; ++v) {
    const T e = std::exp(x[v] - mx);
    sum += e;
    if (dl) dl[v] = e;
  }
  if (dl) {
    const T c = static_cast<T>(static_cast<double>(grad_scale) / sum);
    for (index_t v = 0; v < V; ++v) dl[v] *= c;
    dl[target] -= grad_scale;
  }
  return static_cast<double>(mx) + std::log(sum) - static_cast<double>(xt);
}

/// Rows [0, rows) of x: losses into loss[r] (0 for ignored rows), gradients into dl when wanted.
template <class T>
void ce_rows(const View<const T, 2>& x, const View<const std::int32_t, 1>& targets, index_t row0, T grad_scale,
             const View<T, 2>& dl, bool want_grad, std::vector<double>& loss) {
  const index_t rows = x.shape[0], V = x.shape[1];
  loss.assign(static_cast<std::size_t>(rows), 0.0);
  parallel_for(rows, std::max<index_t>(1, 16384 / std::max<index_t>(1, V)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const std::int32_t t = targets(row0 + r);
      T* g = want_grad ? dl.row(r) : nullptr;
      if (t < 0) {
        if (g) std::fill(g, g + V, T(0));
        continue;
      }
      loss[r] = ce_row(x.row(r), V, t, grad_scale, g);
    }
  });
}

}  // namespace detail

/// Unfused softmax cross-entropy over given logits.
///   logits [N, V]; targets [N] in [0, V), or < 0 to ignore the row;
///   dlogits [N, V] overwritten with grad_scale * (softmax - onehot) (zero rows where ignored), or empty.
template <class T>
CrossEntropyResult softmax_cross_entropy(View<const std::type_identity_t<T>, 2> logits,
                                         View<const std::int32_t, 1> targets, std::type_identity_t<T> grad_scale,
                                         View<T, 2> dlogits) {
  constexpr const char* fn = "softmax_cross_entropy";
  const index_t N = logits.shape[0], V = logits.shape[1];
  expect_view(logits, fn, "logits", {N, V});
  expect_view(targets, fn, "targets", {N});
  const bool want_grad = dlogits.data != nullptr;
  if (want_grad) expect_view(dlogits, fn, "dlogits", {N, V});
  CrossEntropyResult res;
  res.count = detail::ce_check_targets(fn, targets, V);
  std::vector<double> loss;
  detail::ce_rows(logits, targets, 0, grad_scale, dlogits, want_grad, loss);
  for (double l : loss) res.loss_sum += l;
  return res;
}

/// Fused LM head and cross-entropy: logits = h w^T, chunk by chunk in scratch, never stored whole.
///   h [N, C] final hidden states; w [V, C] the unembedding (LM head) weight;
///   targets [N] in [0, V), or < 0 to ignore the row; grad_scale multiplies both gradients
///   (e.g. 1 / count for a mean loss); scratch [R, V] workspace, R >= 1 rows per chunk (any R);
///   dh [N, C] overwritten with grad_scale * dlogits w, or empty;
///   dw [V, C] accumulated with grad_scale * dlogits^T h, or empty. No gradient work when both are empty.
template <class T>
CrossEntropyResult lm_head_cross_entropy(View<const std::type_identity_t<T>, 2> h,
                                         View<const std::type_identity_t<T>, 2> w,
                                         View<const std::int32_t, 1> targets, std::type_identity_t<T> grad_scale,
                                         View<T, 2> scratch, View<T, 2> dh, View<T, 2> dw) {
  constexpr const char* fn = "lm_head_cross_entropy";
  const index_t N = h.shape[0], V = w.shape[0], C = w.shape[1];
  expect_view(w, fn, "w", {V, C});
  expect_view(h, fn, "h", {N, C});
  expect_view(targets, fn, "targets", {N});
  const index_t R = scratch.shape[0];
  if (R < 1 || scratch.shape[1] != V) [[unlikely]] {
    fail(fn, ": scratch: shape ", shape_string(scratch.shape), ", expected [R, ", V, "] with R >= 1 rows per chunk");
  }
  expect_view(scratch, fn, "scratch", {R, V});
  const bool want_dh = dh.data != nullptr, want_dw = dw.data != nullptr, want_grad = want_dh || want_dw;
  if (want_dh) expect_view(dh, fn, "dh", {N, C});
  if (want_dw) expect_view(dw, fn, "dw", {V, C});
  CrossEntropyResult res;
  res.count = detail::ce_check_targets(fn, targets, V);
  std::vector<double> loss;
  for (index_t r0 = 0; r0 < N; r0 += R) {
    const index_t rows = std::min(R, N - r0);
    const auto hc = h.slice(0, r0, r0 + rows);   // [rows, C]
    const auto sc = scratch.slice(0, 0, rows);   // [rows, V]: logits, then grad_scale * dlogits
    index_t counted = 0;
    for (index_t r = r0; r < r0 + rows; ++r) counted += targets(r) >= 0;
    if (counted == 0) {  // nothing to learn from this chunk: skip both GEMMs
      if (want_dh) detail::scale_c(T(0), dh.slice(0, r0, r0 + rows));
      continue;
    }
    gemm<T>(Trans::N, Trans::T, T(1), hc, w, T(0), sc);
    detail::ce_rows<T>(sc, targets, r0, grad_scale, sc, want_grad, loss);
    for (double l : loss) res.loss_sum += l;
    if (want_dh) gemm<T>(Trans::N, Trans::N, T(1), sc, w, T(0), dh.slice(0, r0, r0 + rows));
    if (want_dw) gemm<T>(Trans::T, Trans::N, T(1), sc, hc, T(1), dw);
  }
  return res;
}

/// log-softmax of one row: out[i] = logits[i] - logsumexp(logits). -inf logits give -inf.
///   logits [V], V >= 1, not all -inf; out [V] (may be the same memory as logits).
template <class T>
void log_softmax(std::span<const std::type_identity_t<T>> logits, std::span<T> out) {
  REASON_CHECK(!logits.empty(), "log_softmax: logits is empty");
  REASON_CHECK(out.size() == logits.size(), "log_softmax: out has ", out.size(), " entries, expected ",
               logits.size(), " (one per logit)");
  T mx = -INFINITY;
  for (T x : logits) mx = std::max(mx, x);
  REASON_CHECK(mx > -INFINITY, "log_softmax: every one of the ", logits.size(),
               " logits is -inf (or NaN): there is no distribution");
  double sum = 0;
  for (T x : logits) sum += std::exp(x - mx);
  const double lse = static_cast<double>(mx) + std::log(sum);
  for (std::size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<T>(static_cast<double>(logits[i]) - lse);
}

}  // namespace reason::kernels
