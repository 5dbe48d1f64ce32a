// reason/kernels/embedding.hpp — token embedding lookup and its scatter-add backward.
//
// Design rule: a lookup is a gather (out[n, :] = table[tokens[n], :]) and its backward a
// scatter-add into the table (the wte part of llm.c's encoder_backward). Several positions
// may hold the same token, so the backward must not let threads race on a row or make the
// sum's order depend on scheduling: threads split the *columns* of the table, and each one
// walks the positions in order, so dtable is bit-identical for any thread count. Tokens are
// checked before anything is written: an id outside [0, vocab) names its position, the id
// and the vocabulary size instead of reading or writing out of bounds.
#pragma once

#include <algorithm>
#include <cstdint>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

namespace detail {
inline void check_tokens(View<const std::int32_t, 1> tokens, index_t vocab, const char* who) {
  for (index_t n = 0; n < tokens.shape[0]; ++n) {
    const std::int32_t t = tokens(n);
    if (t < 0 || t >= vocab) [[unlikely]] {
      fail(who, ": tokens[", n, "] = ", t, " is outside the vocabulary [0, ", vocab, ")");
    }
  }
}
}  // namespace detail

/// out[n, :] = table[tokens[n], :].
template <class T>
void embedding_forward(View<const std::int32_t, 1> tokens,  // tokens: [N], ids in [0, V)
                       View<const T, 2> table,              // table: [V, C]
                       View<T, 2> out) {                    // out: [N, C]
  const index_t n = tokens.shape[0], vocab = table.shape[0], c = table.shape[1];
  expect_shape(out, "embedding_forward: out", {n, c});
  expect_unit_inner_stride(table, "embedding_forward: table");
  expect_unit_inner_stride(out, "embedding_forward: out");
  detail::check_tokens(tokens, vocab, "embedding_forward");
  const index_t grain = std::max<index_t>(1, 16384 / std::max<index_t>(c, 1));
  parallel_for(n, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) std::copy_n(table.row(tokens(r)), c, out.row(r));
  });
}

/// dtable[tokens[n], :] += dout[n, :], positions summed in order n = 0, 1, ...
template <class T>
void embedding_backward(View<const std::int32_t, 1> tokens,  // tokens: [N], ids in [0, V)
                        View<const T, 2> dout,               // dout: [N, C]
                        View<T, 2> dtable) {                 // dtable: [V, C], accumulated
  const index_t n = tokens.shape[0], vocab = dtable.shape[0], c = dtable.shape[1];
  expect_shape(dout, "embedding_backward: dout", {n, c});
  expect_unit_inner_stride(dout, "embedding_backward: dout");
  expect_unit_inner_stride(dtable, "embedding_backward: dtable");
  detail::check_tokens(tokens, vocab, "embedding_backward");
  const index_t grain = std::max<index_t>(16, 16384 / std::max<index_t>(n, 1));
  parallel_for(c, grain, [&](index_t c0, index_t c1) {
    for (index_t r = 0; r < n; ++r) {
      const T* g = dout.row(r);
      T* d = dtable.row(tokens(r));
      for (index_t j = c0; j < c1; ++j) d[j] += g[j];
    }
  });
}

}  // namespace reason::kernels
