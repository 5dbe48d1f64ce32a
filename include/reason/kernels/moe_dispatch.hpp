// reason/kernels/moe_dispatch.hpp — token <-> expert permutation of a mixture-of-experts layer (host).
//
// Dispatch turns the routing (experts [N, k]: token t's j-th expert) into the layout a grouped
// GEMM wants: the kept (token, expert) assignments sorted by expert, so expert e owns the
// contiguous rows [offsets[e], offsets[e + 1]) of the permuted matrix, and within an expert
// the rows are in token order. perm[s] is the token of permuted row s; slot[t, j] is the
// permuted row of token t's j-th assignment, or -1 when capacity dropped it.
//
// Capacity (GShard, Lepikhin et al. 2020; Switch, Fedus et al. 2021): an expert keeps at most
// `capacity` assignments (capacity < 0: no limit). Which ones is deterministic: by token order
// (earlier tokens keep their slots) or by score (higher combine weight first, ties to the
// earlier token — "batch prioritized routing", Riquelme et al. 2021).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

enum class DropOrder { token, score };

/// What a dispatch decided, besides the views it filled.
struct DispatchCounts {
  index_t kept = 0;     // assignments kept (rows of the permuted matrix)
  index_t dropped = 0;  // assignments over capacity
};

/// Builds perm [>= kept], offsets [E + 1], slot [N, k] and load [E] (assignments routed to each
/// expert, before capacity) from experts [N, k]; weights [N, k] order the drops by score.
template <class T>
DispatchCounts moe_dispatch(View<const std::int32_t, 2> experts, View<const T, 2> weights, index_t num_experts,
                            index_t capacity, DropOrder order, View<std::int32_t, 1> perm, View<std::int32_t, 1> offsets,
                            View<std::int32_t, 2> slot, View<std::int32_t, 1> load) {
  const index_t n = experts.size(0), k = experts.size(1), e = num_experts;
  expect_shape(weights, "moe_dispatch: weights", {n, k});
  expect_shape(offsets, "moe_dispatch: offsets", {e + 1});
  expect_shape(slot, "moe_dispatch: slot", {n, k});
  expect_shape(load, "moe_dispatch: load", {e});
  for (index_t i = 0; i < e; ++i) load(i) = 0;
  for (index_t t = 0; t < n; ++t)
    for (index_t j = 0; j < k; ++j) {
      const std::int32_t x = experts(t, j);
      REASON_CHECK(x >= 0 && x < e, "moe_dispatch: token ", t, " is routed to expert ", x, " of ", e);
      ++load(x);
    }
  const index_t cap = capacity < 0 ? n * k : capacity;
  // keep[t k + j]: whether the assignment stays, needed only when scores decide. In token order an
  // expert keeps its first `cap`, which the slot pass below decides by itself.
  std::vector<char> keep;
  if (order == DropOrder::score) {
    keep.assign(static_cast<std::size_t>(n * k), 1);
    std::vector<std::vector<index_t>> by_expert(static_cast<std::size_t>(e));
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j) by_expert[experts(t, j)].push_back(t * k + j);
    for (auto& list : by_expert) {
      if (static_cast<index_t>(list.size()) <= cap) continue;
      std::stable_sort(list.begin(), list.end(), [&](index_t a, index_t b) {
        return weights(a / k, a % k) > weights(b / k, b % k);  // stable: ties keep the earlier token
      });
      for (std::size_t i = static_cast<std::size_t>(cap); i < list.size(); ++i) keep[list[i]] = 0;
    }
  }
  // Offsets from the kept counts (min(load, cap) either way), then rows in token order within each expert.
  std::vector<index_t> fill(static_cast<std::size_t>(e), 0);
  offsets(0) = 0;
  for (index_t i = 0; i < e; ++i) offsets(i + 1) = offsets(i) + static_cast<std::int32_t>(std::min(cap, index_t{load(i)}));
  DispatchCounts c;
  c.kept = offsets(e);
  c.dropped = n * k - c.kept;
  REASON_CHECK(perm.size(0) >= c.kept, "moe_dispatch: perm has ", perm.size(0), " rows for ", c.kept, " kept assignments");
  for (index_t t = 0; t < n; ++t)
    for (index_t j = 0; j < k; ++j) {
      const std::int32_t x = experts(t, j);
      if (keep.empty() ? fill[x] >= cap : !keep[t * k + j]) {
        slot(t, j) = -1;
        continue;
      }
      const index_t s = offsets(x) + fill[x]++;
      slot(t, j) = static_cast<std::int32_t>(s);
      perm(s) = static_cast<std::int32_t>(t);
    }
  return c;
}

/// xs[s] = x[perm[s]] for s < rows: the expert inputs in permuted order.
template <class T>
void moe_gather(View<const T, 2> x, View<const std::int32_t, 1> perm, index_t rows, View<T, 2> xs) {
  const index_t c = x.size(1);
  REASON_CHECK(xs.size(0) >= rows && xs.size(1) == c && perm.size(0) >= rows, "moe_gather: xs ", shape_string(xs.shape),
               ", perm ", perm.size(0), " for ", rows, " rows of width ", c);
  parallel_for(rows, std::max<index_t>(1, 4096 / std::max<index_t>(c, 1)), [&](index_t r0, index_t r1) {
    for (index_t s = r0; s < r1; ++s) std::copy(x.row(perm(s)), x.row(perm(s)) + c, xs.row(s));
  });
}

/// y[t] += sum_j weights[t, j] ys[slot[t, j]] over kept assignments, in j order (deterministic).
template <class T>
void moe_combine(View<const T, 2> ys, View<const std::int32_t, 2> slot, View<const T, 2> weights, View<T, 2> y) {
  const index_t n = slot.size(0), k = slot.size(1), c = y.size(1);
  expect_shape(weights, "moe_combine: weights", {n, k});
  expect_shape(y, "moe_combine: y", {n, c});
  parallel_for(n, std::max<index_t>(1, 4096 / std::max<index_t>(c * k, 1)), [&](index_t r0, index_t r1) {
    for (index_t t = r0; t < r1; ++t) {
      T* yr = y.row(t);
      for (index_t j = 0; j < k; ++j) {
        if (slot(t, j) < 0) continue;
        const T w = weights(t, j), *src = ys.row(slot(t, j));
        for (index_t i = 0; i < c; ++i) yr[i] += w * src[i];
      }
    }
  });
}

/// Backward of moe_combine: dys[slot] = weights[t, j] dy[t] (overwritten, kept rows) and
/// dweights[t, j] = dy[t] . ys[slot] (overwritten; 0 for dropped assignments).
template <class T>
void moe_combine_backward(View<const T, 2> ys, View<const std::int32_t, 2> slot, View<const T, 2> weights,
                          View<const T, 2> dy, View<T, 2> dys, View<T, 2> dweights) {
  const index_t n = slot.size(0), k = slot.size(1), c = dy.size(1);
  expect_shape(dweights, "moe_combine_backward: dweights", {n, k});
  parallel_for(n, std::max<index_t>(1, 4096 / std::max<index_t>(c * k, 1)), [&](index_t r0, index_t r1) {
    for (index_t t = r0; t < r1; ++t) {
      const T* g = dy.row(t);
      for (index_t j = 0; j < k; ++j) {
        const std::int32_t s = slot(t, j);
        if (s < 0) {
          dweights(t, j) = T(0);
          continue;
        }
        const T w = weights(t, j), *src = ys.row(s);
        T* d = dys.row(s);
        T dot = T(0);
        for (index_t i = 0; i < c; ++i) {
          d[i] = w * g[i];
          dot += g[i] * src[i];
        }
        dweights(t, j) = dot;
      }
    }
  });
}

/// dx[t] += sum_j dxs[slot[t, j]] over kept assignments, in j order: the inverse of moe_gather.
template <class T>
void moe_scatter_add(View<const T, 2> dxs, View<const std::int32_t, 2> slot, View<T, 2> dx) {
  const index_t n = slot.size(0), k = slot.size(1), c = dx.size(1);
  parallel_for(n, std::max<index_t>(1, 4096 / std::max<index_t>(c * k, 1)), [&](index_t r0, index_t r1) {
    for (index_t t = r0; t < r1; ++t) {
      T* d = dx.row(t);
      for (index_t j = 0; j < k; ++j) {
        if (slot(t, j) < 0) continue;
        const T* src = dxs.row(slot(t, j));
        for (index_t i = 0; i < c; ++i) d[i] += src[i];
      }
    }
  });
}

}  // namespace reason::kernels
