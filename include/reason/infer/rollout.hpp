// reason/infer/rollout.hpp — batched sampling of G completions per prompt with the KV cache.
//
// The generation half of on-policy RL: GRPO (Shao et al., "DeepSeekMath", 2024; DeepSeek-AI,
// "DeepSeek-R1", 2025) samples a group of G outputs for each prompt from the current policy,
// scores them, and trains on their per-token log-probabilities. `rollout` produces exactly that:
// for prompt i, sample g (row r = i G + g), the generated tokens, log pi(token) of each under the
// model's untempered distribution, and whether the row ended on `eos` or on the length limit.
//
// Design rules.
//  * The model owns the cache layout (Transformer::DecodeState, laid out by the attention
//    policy); infer/ owns the loop. Rows advance in lockstep like generate_greedy: at position t
//    a row still inside its prompt is fed its prompt token (teacher forcing), and from its last
//    prompt token on it is fed its own samples. One DecodeState holds all prompts x G rows, or
//    sub-batches of at most `max_batch` rows, one after another, when memory asks for it.
//  * Reproducible and independent of batching: row r draws from Philox(seed, stream = r), one
//    sampler call per generated token, each consuming exactly Sampler::draws_per_token values,
//    so token j of row r uses values [j d, (j + 1) d) of its stream whatever the other rows do,
//    whatever max_batch and thread count are. Decoding a row does not depend on the other rows
//    (attention is per row; the GEMMs sum each row in a fixed order), so chunked and unchunked
//    rollouts agree to rounding.
//  * One model, one distribution: decode and training share every kernel, and the recorded
//    log-probs are log_softmax of the decode logits formed as kernels::log_softmax forms them,
//    so they equal what training recomputes on prompt + completion (rl::TokenLogProbs) to
//    rounding — measured by tests/infer, not assumed.
//  * Limits: a row stops at `eos` (kept as its last token) or after `max_new_tokens`, or when
//    prompt + completion reaches `max_len` (default: the model's max_seq_len). Finished rows idle
//    in the batch until every row of their sub-batch is done.
//  * An expert-parallel model decodes in lockstep with the other ranks of its expert group: each
//    rank its own prompts, every rank as many decode steps as the busiest (infer/lockstep.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/infer/lockstep.hpp"
#include "reason/infer/sampler.hpp"

namespace reason::infer {

/// What to generate: G samples per prompt, limits, stop token, seed, memory cap.
struct RolloutConfig {
  index_t samples_per_prompt = 1;  // G: rows i G .. i G + G - 1 belong to prompt i
  index_t max_new_tokens = 0;      // completion tokens per row at most; 0: only max_len limits
  index_t max_len = 0;             // prompt + completion tokens at most; 0: the model's max_seq_len
  std::int32_t eos = -1;           // stop token, kept in the completion; < 0: none
  std::uint64_t seed = 0;          // row r samples from Philox(seed, stream = r)
  index_t max_batch = 0;           // rows per DecodeState; 0: every row in one
};

/// One generated row.
struct Completion {
  index_t prompt = 0;                 // index of its prompt
  index_t sample = 0;                 // g in [0, G)
  std::vector<std::int32_t> tokens;   // generated tokens (ending in eos if stopped_on_eos)
  std::vector<double> logps;          // [tokens] log pi(token | prefix), untempered: what training recomputes
  std::vector<double> sampler_logps;  // [tokens] log-prob under the tempered, truncated distribution sampled
  bool stopped_on_eos = false;        // else it hit the length limit
};

/// Every row of a rollout; row i G + g is prompt i's sample g.
struct Rollouts {
  index_t samples_per_prompt = 1;
  std::vector<Completion> rows;

  [[nodiscard]] index_t size() const { return static_cast<index_t>(rows.size()); }
  [[nodiscard]] const Completion& at(index_t prompt, index_t sample) const {
    REASON_CHECK(sample >= 0 && sample < samples_per_prompt && prompt >= 0 && (prompt + 1) * samples_per_prompt <= size(),
                 "Rollouts::at(", prompt, ", ", sample, "): out of range for ", size() / std::max<index_t>(1, samples_per_prompt),
                 " prompts x ", samples_per_prompt, " samples");
    return rows[static_cast<std::size_t>(prompt * samples_per_prompt + sample)];
  }
};

/// The whole sequence of a row, prompt then completion: what training feeds the model.
inline std::vector<std::int32_t> full_sequence(std::span<const std::vector<std::int32_t>> prompts, const Completion& c) {
  REASON_CHECK(c.prompt >= 0 && c.prompt < static_cast<index_t>(prompts.size()), "full_sequence: completion of prompt ",
               c.prompt, " but ", prompts.size(), " prompts were given");
  std::vector<std::int32_t> s = prompts[static_cast<std::size_t>(c.prompt)];
  s.insert(s.end(), c.tokens.begin(), c.tokens.end());
  return s;
}

namespace detail {

/// Rows [r0, r1) of a rollout in one DecodeState, in lockstep; fills out.rows[r0, r1).
template <class Net, class S>
void rollout_rows(const Net& net, const typename Net::T* params, std::span<const std::vector<std::int32_t>> prompts,
                  const S& sampler, const RolloutConfig& cfg, std::span<const index_t> limit, index_t r0, index_t r1,
                  typename Net::DecodeState& state, Rollouts& out) {
  using T = typename Net::T;
  const index_t batch = r1 - r0, vocab = net.config().vocab_size, G = cfg.samples_per_prompt;
  auto prompt_of = [&](index_t r) -> const std::vector<std::int32_t>& { return prompts[static_cast<std::size_t>(r / G)]; };
  std::vector<std::int32_t> feed(static_cast<std::size_t>(batch));
  std::vector<T> logits(static_cast<std::size_t>(batch * vocab));  // [batch, V]
  std::vector<Philox> rng;
  for (index_t r = r0; r < r1; ++r) rng.emplace_back(cfg.seed, static_cast<std::uint64_t>(r));
  std::vector<char> done(static_cast<std::size_t>(batch), 0);
  const auto feed_view = make_view(static_cast<const std::int32_t*>(feed.data()), batch);
  const auto logits_view = make_view(logits.data(), batch, vocab);
  for (index_t pos = 0;; ++pos) {
    bool all_done = true;
    for (index_t b = 0; b < batch; ++b) {
      const auto& p = prompt_of(r0 + b);
      const auto& o = out.rows[static_cast<std::size_t>(r0 + b)].tokens;
      const auto plen = static_cast<index_t>(p.size());
      feed[static_cast<std::size_t>(b)] = pos < plen ? p[static_cast<std::size_t>(pos)] : (o.empty() ? p.back() : o.back());
      all_done = all_done && done[static_cast<std::size_t>(b)];
    }
    if (!keep_decoding(net, params, all_done, feed_view, pos, state, logits_view)) break;  // (lockstep.hpp)
    net.decode_step(params, feed_view, pos, state, logits_view);
    parallel_for(batch, std::max<index_t>(1, 16384 / std::max<index_t>(1, vocab)), [&](index_t b0, index_t b1) {
      SampleScratch ws;
      for (index_t b = b0; b < b1; ++b) {
        const index_t r = r0 + b;
        const auto plen = static_cast<index_t>(prompt_of(r).size());
        if (done[static_cast<std::size_t>(b)] || pos + 1 < plen) continue;  // finished, or still reading the prompt
        Philox& g = rng[static_cast<std::size_t>(b)];
        const std::uint64_t before = g.offset();
        const TokenDraw d = sampler.sample(std::span<const T>(logits.data() + b * vocab, static_cast<std::size_t>(vocab)),
                                           g, ws, r);
        REASON_CHECK(g.offset() == before + static_cast<std::uint64_t>(S::draws_per_token), "rollout: the sampler drew ",
                     g.offset() - before, " values for one token, but declares draws_per_token = ", S::draws_per_token);
        REASON_CHECK(d.token >= 0 && d.token < vocab, "rollout: the sampler returned token ", d.token, " for row ", r,
                     ", outside the vocabulary of ", vocab);
        Completion& c = out.rows[static_cast<std::size_t>(r)];
        c.tokens.push_back(d.token);
        c.logps.push_back(d.logp_model);
        c.sampler_logps.push_back(d.logp_sampled);
        c.stopped_on_eos = d.token == cfg.eos;
        if (c.stopped_on_eos || static_cast<index_t>(c.tokens.size()) >= limit[static_cast<std::size_t>(r)])
          done[static_cast<std::size_t>(b)] = 1;
      }
    });
  }
}

}  // namespace detail

/// Samples cfg.samples_per_prompt completions of each prompt (each non-empty) with `sampler`.
template <class Net, Sampler S>
Rollouts rollout(const Net& net, const typename Net::T* params, std::span<const std::vector<std::int32_t>> prompts,
                 const S& sampler, const RolloutConfig& cfg) {
  const index_t G = cfg.samples_per_prompt, vocab = net.config().vocab_size, max_seq = net.config().max_seq_len;
  REASON_CHECK(G >= 1, "rollout: samples_per_prompt = ", G, "; expected >= 1");
  REASON_CHECK(cfg.max_new_tokens >= 0 && cfg.max_batch >= 0, "rollout: max_new_tokens = ", cfg.max_new_tokens,
               ", max_batch = ", cfg.max_batch, "; expected >= 0 (0: no limit)");
  const index_t max_len = cfg.max_len > 0 ? cfg.max_len : max_seq;
  REASON_CHECK(max_len <= max_seq, "rollout: max_len = ", max_len, " exceeds the model's max_seq_len = ", max_seq);
  REASON_CHECK(cfg.eos < vocab, "rollout: eos = ", cfg.eos, " is outside the vocabulary of ", vocab, " (< 0 for none)");

  const auto rows = static_cast<index_t>(prompts.size()) * G;
  Rollouts out;
  out.samples_per_prompt = G;
  out.rows.resize(static_cast<std::size_t>(rows));
  std::vector<index_t> limit(static_cast<std::size_t>(rows));  // completion tokens row r may have
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto plen = static_cast<index_t>(prompts[i].size());
    REASON_CHECK(plen > 0, "rollout: prompt ", i, " is empty");
    REASON_CHECK(plen < max_len, "rollout: prompt ", i, " has ", plen, " tokens, leaving no room under max_len = ", max_len);
    for (index_t j = 0; j < plen; ++j) {
      const std::int32_t t = prompts[i][static_cast<std::size_t>(j)];
      REASON_CHECK(t >= 0 && t < vocab, "rollout: prompt ", i, " token ", j, " = ", t, " is outside the vocabulary of ", vocab);
    }
    const index_t room = max_len - plen;
    for (index_t g = 0; g < G; ++g) {
      const auto r = static_cast<std::size_t>(static_cast<index_t>(i) * G + g);
      out.rows[r].prompt = static_cast<index_t>(i);
      out.rows[r].sample = g;
      limit[r] = cfg.max_new_tokens > 0 ? std::min(cfg.max_new_tokens, room) : room;
    }
  }
  // One DecodeState per chunk of rows. Expert parallel: while another rank still has a chunk, this
  // one joins its decode steps (lockstep.hpp; the ranks may hold different numbers of rows).
  const index_t chunk = std::max<index_t>(1, cfg.max_batch > 0 ? std::min(cfg.max_batch, rows) : rows);
  for (index_t r0 = 0; detail::any_rank_decoding(net, r0 < rows); r0 += chunk) {
    if (r0 >= rows) {
      detail::join_decoding(net, params);
      continue;
    }
    const index_t r1 = std::min(rows, r0 + chunk);
    index_t positions = 1;  // a row feeds prompt + completion - 1 tokens (its last sample is never fed)
    for (index_t r = r0; r < r1; ++r)
      positions = std::max(positions, static_cast<index_t>(prompts[static_cast<std::size_t>(r / G)].size()) +
                                          limit[static_cast<std::size_t>(r)] - 1);
    auto state = net.make_decode_state(r1 - r0, positions);
    detail::rollout_rows(net, params, prompts, sampler, cfg, std::span<const index_t>(limit), r0, r1, state, out);
  }
  return out;
}

}  // namespace reason::infer
