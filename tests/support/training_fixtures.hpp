// tests/support/training_fixtures.hpp — what training tests share: a learnable batch source, a
// small run configuration, a scratch directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "reason/core/philox.hpp"
#include "reason/model/config.hpp"
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

/// The small dense model the training tests share: vocabulary 16, width 32, 2 layers, 4 heads
/// (2 KV heads), SwiGLU 48, up to 16 positions.
inline model::Config small_model_config() {
  model::Config c;
  c.vocab_size = 16;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.intermediate_size = 48;
  c.max_seq_len = 16;
  return c;
}

/// A short run of batch 4 x 12 tokens: cosine from 3e-3 to 3e-4 after `warmup` steps.
inline train::TrainConfig small_train(std::int64_t steps, int micro, std::int64_t warmup, std::uint64_t seed) {
  train::TrainConfig tc;
  tc.total_steps = steps;
  tc.micro_batches = micro;
  tc.batch = 4;
  tc.seq = 12;
  tc.schedule = {.peak_lr = 3e-3, .min_lr = 3e-4, .warmup_steps = warmup, .total_steps = steps};
  tc.seed = seed;
  return tc;
}

/// <tmp>/<prefix><pid>, created (one per test process, so parallel runs do not collide).
inline std::filesystem::path temp_dir(const std::string& prefix) {
  auto d = std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace reason::test
