// tests/support/counting_source.hpp — a learnable batch source for training tests.
#pragma once

#include <cstdint>

#include "reason/core/philox.hpp"
#include "reason/train/token_batch.hpp"
#include "reason/train/trainer.hpp"

namespace reason::test {

/// A learnable task: each sequence counts up from a random start modulo the vocabulary, so
/// every next token is determined by the previous one. Pure function of (seed, step, micro).
inline train::BatchSource counting_source(std::uint64_t seed, const train::TrainConfig& tc, index_t vocab) {
  return [=](std::int64_t step, int micro, train::TokenBatch& b) {
    b.resize(tc.batch, tc.seq);
    Philox rng(seed, static_cast<std::uint64_t>(step * tc.micro_batches + micro));
    for (index_t i = 0; i < tc.batch; ++i) {
      const auto start = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab)));
      for (index_t t = 0; t < tc.seq; ++t) {
        b.tokens[i * tc.seq + t] = static_cast<std::int32_t>((start + t) % vocab);
        b.targets[i * tc.seq + t] = t + 1 < tc.seq ? static_cast<std::int32_t>((start + t + 1) % vocab) : -1;
      }
    }
  };
}

}  // namespace reason::test
