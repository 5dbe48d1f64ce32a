// reason/kernels/reduce.hpp — the deterministic sum of squares and an in-place scale.
//
// What they are for: global-norm gradient clipping (Pascanu, Mikolov & Bengio, "On the
// difficulty of training recurrent neural networks", ICML 2013): norm = sqrt(sum_squares(g)),
// then scale(g, clip / norm). Design rule: a reduction's order is fixed by the data size
// alone, never by the thread count. The span is cut into fixed chunks of `chunk` elements;
// each chunk is summed in double with eight interleaved lanes combined in a fixed order;
// the chunk partials are stored and summed in index order. Threads only decide who computes
// which chunk, so the answer is bit-identical for every REASON_NUM_THREADS, and for a given
// size it is the same on every run, which keeps clipping and data-parallel ranks in step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"

namespace reason::kernels {

namespace detail {

inline constexpr std::int64_t sum_squares_chunk = 1 << 14;  // elements per partial sum

/// Sum of squares of x[0, n) in double, in one fixed order (eight lanes, then lane 0..7).
template <class T>
double sum_squares_serial(const T* x, std::int64_t n) {
  double lane[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] += double(x[i + l]) * double(x[i + l]);
  for (; i < n; ++i) lane[i % 8] += double(x[i]) * double(x[i]);
  double s = 0;
  for (double v : lane) s += v;
  return s;
}

/// sum_squares with the chunk size and the parallel grain (in chunks) exposed for tests:
/// the result depends on `chunk` and never on `grain` or the thread count.
template <class T>
double sum_squares_chunked(std::span<const T> x, std::int64_t chunk, std::int64_t grain) {
  REASON_CHECK(chunk >= 1, "sum_squares: chunk = ", chunk, ", expected chunk >= 1");
  const auto n = static_cast<std::int64_t>(x.size());
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks <= 1) return sum_squares_serial(x.data(), n);
  std::vector<double> partial(static_cast<std::size_t>(chunks));
  parallel_for(chunks, std::max<std::int64_t>(1, grain), [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t b = c * chunk, e = std::min(n, b + chunk);
      partial[static_cast<std::size_t>(c)] = sum_squares_serial(x.data() + b, e - b);
    }
  });
  double s = 0;
  for (double v : partial) s += v;
  return s;
}

}  // namespace detail

/// sum_i x[i]^2 in double, bit-identical for any thread count.
template <class T>
double sum_squares(std::span<const T> x) {  // x: [P], e.g. the flat gradient buffer
  return detail::sum_squares_chunked(x, detail::sum_squares_chunk, 4);
}

/// x[i] *= factor.
template <class T>
void scale(std::span<T> x, T factor) {  // x: [P], scaled in place
  parallel_for(static_cast<std::int64_t>(x.size()), 1 << 15, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) x[i] *= factor;
  });
}

}  // namespace reason::kernels
