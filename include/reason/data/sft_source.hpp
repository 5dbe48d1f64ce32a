// reason/data/sft_source.hpp — the SFT batch source of the bundled examples: curriculum-drawn
// arithmetic problems, disjoint from a held-out set, as a pure function of (step, micro).
//
// Design rule: train::Trainer's resume is exact only if the batches are a function of the
// position in the run, so step s, micro-batch m draws from Philox(seed, stream_base + s * M + m)
// (M micro-batches per step). stream_base keeps these streams apart from the held-out set's
// (make_held_out uses streams 1..4). Each batch is padded to its longest example, not to the
// model's maximum length, so short problems cost short sequences.
//
// flawed_fraction > 0 writes that share of the level-3 examples whose order of evaluation matters
// with the left-to-right misconception (data/misconception.hpp): cold-start data from a fallible
// teacher, which RL against the answer checker can then correct. The draw is taken only when the
// fraction is positive, so flawed_fraction = 0 keeps the batches of a source without it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"
#include "reason/data/misconception.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/train/token_batch.hpp"

namespace reason::data {

/// What one SFT batch is drawn from; the sampler and curriculum must outlive the source.
struct SftSourceConfig {
  std::uint64_t seed = 1;
  index_t batch = 32;                          // sequences per micro-batch
  int micro_batches = 1;                       // micro-batches per step
  index_t max_seq = 0;                         // longest example allowed (the model's max_seq_len)
  std::uint64_t stream_base = 1ull << 32;      // first Philox stream; disjoint from the held-out streams
  double flawed_fraction = 0;                  // share of order-sensitive level-3 examples solved left to right
};

/// A train::BatchSource of worked examples `prompt + trace</think><answer>N</answer><eos>`.
[[nodiscard]] inline train::BatchSource sft_source(const TrainingSampler& sampler, const Curriculum& curriculum,
                                                   SftSourceConfig c) {
  REASON_CHECK(c.flawed_fraction >= 0 && c.flawed_fraction <= 1, "sft_source: flawed_fraction = ", c.flawed_fraction,
               "; expected a share in [0, 1]");
  REASON_CHECK(c.batch >= 1 && c.micro_batches >= 1 && c.max_seq >= 2, "sft_source: batch = ", c.batch,
               ", micro_batches = ", c.micro_batches, ", max_seq = ", c.max_seq, "; expected >= 1, >= 1, >= 2");
  return [&sampler, &curriculum, c](std::int64_t step, int micro, train::TokenBatch& out) {
    Philox rng(c.seed, c.stream_base + static_cast<std::uint64_t>(step * c.micro_batches + micro));
    std::vector<Problem> problems;
    problems.reserve(static_cast<std::size_t>(c.batch));
    index_t longest = 0;
    for (index_t i = 0; i < c.batch; ++i) {
      problems.push_back(sampler.sample(curriculum.level_for(step, rng), rng));
      if (c.flawed_fraction > 0 && rng.uniform_double() < c.flawed_fraction)
        if (std::optional<Problem> flawed = left_to_right(problems.back())) problems.back() = std::move(*flawed);
      longest = std::max<index_t>(longest, static_cast<index_t>(sft_example(problems.back()).tokens.size()));
    }
    REASON_CHECK(longest <= c.max_seq, "sft_source: a training example of ", longest,
                 " tokens exceeds the maximum sequence length ", c.max_seq);
    SftBatch b = make_sft_batch(problems, longest);
    out.batch = b.batch;
    out.seq = b.seq;
    out.tokens = std::move(b.tokens);
    out.targets = std::move(b.targets);
  };
}

}  // namespace reason::data
