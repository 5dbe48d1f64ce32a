// reason/infer/greedy.hpp — batched greedy generation with the model's KV cache.
//
// Prompts of different lengths advance in lockstep, one position per step: at position t a
// sequence still inside its prompt is fed its prompt token (teacher forcing, filling the
// cache), and one past its prompt it is fed the argmax of its last logits. So every sequence is
// at the same position and the cache needs no per-sequence offsets. A sequence stops at `eos`
// or when it reaches `max_len` tokens in all; the loop stops when all have (an expert-parallel
// model's when every rank's have: infer/lockstep.hpp).
// (Samplers with temperature / top-k / top-p and per-token log-probs arrive with the rollout
// engine; this is the evaluation path: deterministic, exact match.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/infer/lockstep.hpp"

namespace reason::infer {

/// Greedy completions of `prompts` (each non-empty); returns the generated tokens of each,
/// up to and including `eos` when it was produced.
template <class Net>
std::vector<std::vector<std::int32_t>> generate_greedy(const Net& net, const typename Net::T* params,
                                                       std::span<const std::vector<std::int32_t>> prompts,
                                                       index_t max_len, std::int32_t eos) {
  using T = typename Net::T;
  const auto batch = static_cast<index_t>(prompts.size());
  std::vector<std::vector<std::int32_t>> out(prompts.size());
  if (batch == 0) {  // expert parallel: join the other ranks' decode steps (lockstep.hpp)
    detail::join_decoding(net, params);
    return out;
  }
  index_t longest = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    REASON_CHECK(!prompts[i].empty(), "generate_greedy: prompt ", i, " is empty");
    longest = std::max<index_t>(longest, static_cast<index_t>(prompts[i].size()));
  }
  REASON_CHECK(longest < max_len && max_len <= net.config().max_seq_len, "generate_greedy: max_len = ", max_len,
               " must exceed the longest prompt (", longest, ") and be <= max_seq_len = ", net.config().max_seq_len);

  const index_t vocab = net.config().vocab_size;
  auto state = net.make_decode_state(batch, max_len);
  std::vector<std::int32_t> feed(static_cast<std::size_t>(batch));
  std::vector<T> logits(static_cast<std::size_t>(batch * vocab));
  std::vector<char> finished(static_cast<std::size_t>(batch), 0);
  const auto feed_view = make_view(static_cast<const std::int32_t*>(feed.data()), batch);
  const auto logits_view = make_view(logits.data(), batch, vocab);
  for (index_t pos = 0;; ++pos) {
    bool all_finished = true;
    for (index_t b = 0; b < batch; ++b) {
      const auto& p = prompts[static_cast<std::size_t>(b)];
      const auto& o = out[static_cast<std::size_t>(b)];
      const auto plen = static_cast<index_t>(p.size());
      feed[b] = pos < plen ? p[pos] : (o.empty() ? p.back() : o.back());
      all_finished = all_finished && finished[b];
    }
    const bool all_done = all_finished || pos + 1 >= max_len;
    if (!detail::keep_decoding(net, params, all_done, feed_view, pos, state, logits_view)) break;  // (lockstep.hpp)
    net.decode_step(params, feed_view, pos, state, logits_view);
    for (index_t b = 0; b < batch; ++b) {
      const auto plen = static_cast<index_t>(prompts[static_cast<std::size_t>(b)].size());
      if (finished[b] || pos + 1 < plen) continue;  // still reading the prompt
      const T* row = logits.data() + b * vocab;
      const auto next = static_cast<std::int32_t>(std::max_element(row, row + vocab) - row);
      out[static_cast<std::size_t>(b)].push_back(next);
      if (next == eos) finished[b] = 1;
    }
  }
  return out;
}

}  // namespace reason::infer
