// tests/parallel/fixtures.hpp — what the multi-rank training tests share: comparisons against the
// one-process reference, and a rank's share of a global batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>

#include "reason/core/param_layout.hpp"
#include "reason/train/token_batch.hpp"
#include "reason/train/trainer.hpp"

namespace reason::test {

inline double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}
inline double max_abs(std::span<const float> a) {
  double m = 0;
  for (float x : a) m = std::max(m, std::abs(double(x)));
  return m;
}
/// x in 4 significant digits, for messages ("1.234e-05").
/// Whether an MoE model's balancing biases (the tensors of `layout` named "*.e_score_correction_bias")
/// in `p` equal `ref`'s bit for bit, and have moved from zero (else the comparison proves nothing).
inline bool balancing_biases_match(const ParamLayout& layout, std::span<const float> p, std::span<const float> ref) {
  bool equal = true, moved = false;
  for (const ParamInfo& info : layout.params())
    if (info.name.find(".e_score_correction_bias") != std::string::npos)
      for (std::size_t i = info.offset; i < info.offset + info.numel; ++i) {
        equal = equal && p[i] == ref[i];
        moved = moved || p[i] != 0.0f;
      }
  return equal && moved;
}

inline std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3e", x);
  return buf;
}

/// Rank r's share of the global batch: rows [r R, (r + 1) R) of what `global` draws, R = rows_per_rank.
inline train::BatchSource share(const train::BatchSource& global, int rank, index_t rows_per_rank) {
  return [=](std::int64_t step, int micro, train::TokenBatch& b) {
    train::TokenBatch all;
    global(step, micro, all);
    b.resize(rows_per_rank, all.seq);
    const auto first = static_cast<std::ptrdiff_t>(rank * rows_per_rank * all.seq);
    const auto count = static_cast<std::ptrdiff_t>(rows_per_rank * all.seq);
    std::copy(all.tokens.begin() + first, all.tokens.begin() + first + count, b.tokens.begin());
    std::copy(all.targets.begin() + first, all.targets.begin() + first + count, b.targets.begin());
  };
}

}  // namespace reason::test
