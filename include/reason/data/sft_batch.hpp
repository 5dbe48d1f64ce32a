// reason/data/sft_batch.hpp — supervised fine-tuning examples in DeepSeek-R1's template.
//
// DeepSeek-R1 (DeepSeek-AI 2025, §2.3.1 cold start, Table 1 template): the model is taught to
// answer as  <think> reasoning </think><answer> answer </answer>. An example is the question
// (the prompt), then the completion  <think> trace </think><answer> answer </answer><eos>.
// Design rule: the loss sees only the completion — the prompt is given, not predicted — so the
// next-token target at position t is tokens[t+1] when t+1 lies in the completion and -1
// (ignored) for the prompt, the padding and the last position. Batches are fixed [batch, seq]
// int32 buffers padded with <pad>; an example that does not fit is an error, never truncated.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/tokenizer.hpp"

namespace reason::data {

/// One example's tokens and where its completion starts.
struct SftExample {
  std::vector<std::int32_t> tokens;  // question <think> trace </think><answer> answer </answer><eos>
  std::size_t prompt_length = 0;     // tokens of the question alone
};

/// The prompt a model generates from: question + <think>.
[[nodiscard]] inline std::vector<std::int32_t> prompt_tokens(const Problem& p) {
  std::vector<std::int32_t> t = Tokenizer::encode(p.question);
  t.push_back(Tokenizer::think);
  return t;
}

[[nodiscard]] inline SftExample sft_example(const Problem& p) {
  SftExample e;
  e.tokens = Tokenizer::encode(p.question);
  e.prompt_length = e.tokens.size();
  e.tokens.push_back(Tokenizer::think);
  Tokenizer::encode_into(p.trace, e.tokens);
  e.tokens.push_back(Tokenizer::end_think);
  e.tokens.push_back(Tokenizer::answer);
  Tokenizer::encode_into(p.answer, e.tokens);
  e.tokens.push_back(Tokenizer::end_answer);
  e.tokens.push_back(Tokenizer::eos);
  return e;
}

/// A padded batch: tokens and next-token targets, both int32 [batch, seq], row-major.
struct SftBatch {
  index_t batch = 0, seq = 0;
  std::vector<std::int32_t> tokens;   // (batch, seq) token ids, <pad> after each example
  std::vector<std::int32_t> targets;  // (batch, seq) tokens[b, t+1] where t+1 is in the completion, else -1
  std::vector<std::int32_t> lengths;  // (batch) unpadded length of each example

  [[nodiscard]] View<const std::int32_t, 2> tokens_view() const { return {tokens.data(), {batch, seq}}; }
  [[nodiscard]] View<const std::int32_t, 2> targets_view() const { return {targets.data(), {batch, seq}}; }
  /// Number of positions the loss counts (targets != -1).
  [[nodiscard]] std::int64_t target_count() const {
    std::int64_t n = 0;
    for (auto t : targets) n += t >= 0;
    return n;
  }
};

/// The batch of `problems`, each padded to `seq_len`; an example longer than seq_len is an error
/// naming its length, the limit and the question.
[[nodiscard]] inline SftBatch make_sft_batch(std::span<const Problem> problems, index_t seq_len) {
  REASON_CHECK(seq_len >= 2, "make_sft_batch: sequence length ", seq_len, " must be at least 2");
  SftBatch b;
  b.batch = static_cast<index_t>(problems.size());
  b.seq = seq_len;
  b.tokens.assign(static_cast<std::size_t>(b.batch * seq_len), Tokenizer::pad);
  b.targets.assign(b.tokens.size(), -1);
  for (std::size_t i = 0; i < problems.size(); ++i) {
    const SftExample e = sft_example(problems[i]);
    const auto n = static_cast<index_t>(e.tokens.size());
    REASON_CHECK(n <= seq_len, "make_sft_batch: example ", i, " is ", n, " tokens, longer than the sequence length ",
                 seq_len, " (question \"", problems[i].question, "\")");
    std::int32_t* row = b.tokens.data() + static_cast<index_t>(i) * seq_len;
    std::int32_t* tgt = b.targets.data() + static_cast<index_t>(i) * seq_len;
    std::copy(e.tokens.begin(), e.tokens.end(), row);
    for (index_t t = static_cast<index_t>(e.prompt_length) - 1; t + 1 < n; ++t)
      if (t >= 0) tgt[t] = row[t + 1];
    b.lengths.push_back(static_cast<std::int32_t>(n));
  }
  return b;
}

/// The parts of a completion in the template.
struct Completion {
  std::string think, answer;
};

/// Splits `text` = [<think>] think </think><answer> answer </answer> [<eos>] [<pad>...] into its
/// parts; std::nullopt when the format is wrong (a tag missing, repeated or out of order, or
/// anything else after </answer>). A leading <think> is optional because prompts end with it.
[[nodiscard]] inline std::optional<Completion> parse_completion(std::string_view text) {
  constexpr std::string_view open = "<think>", close = "</think>", a_open = "<answer>", a_close = "</answer>";
  if (text.starts_with(open)) text.remove_prefix(open.size());
  const auto c = text.find(close);
  if (c == std::string_view::npos) return std::nullopt;
  Completion out;
  out.think = std::string(text.substr(0, c));
  text.remove_prefix(c + close.size());
  if (!text.starts_with(a_open)) return std::nullopt;
  text.remove_prefix(a_open.size());
  const auto e = text.find(a_close);
  if (e == std::string_view::npos) return std::nullopt;
  out.answer = std::string(text.substr(0, e));
  text.remove_prefix(e + a_close.size());
  if (text.starts_with("<eos>")) text.remove_prefix(5);
  while (text.starts_with("<pad>")) text.remove_prefix(5);
  if (!text.empty()) return std::nullopt;
  for (std::string_view part : {std::string_view(out.think), std::string_view(out.answer)})
    for (std::string_view tag : {open, close, a_open, a_close, std::string_view("<eos>")})
      if (part.find(tag) != std::string_view::npos) return std::nullopt;
  return out;
}

}  // namespace reason::data
