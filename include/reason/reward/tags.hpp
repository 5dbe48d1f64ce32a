// reason/reward/tags.hpp — one linear scan of a completion's template tags.
//
// DeepSeek-R1's template (DeepSeek-AI 2025, Table 1):  <think> reasoning </think><answer> answer
// </answer>. Every rule reward here reads a completion through this one scan, so they agree on
// what "well formed" means, and that meaning is data::parse_completion's grammar exactly:
//     [<think>] trace </think><answer> answer </answer> [<eos>] [<pad>]*
// with no <think>, </think>, <answer>, </answer> or <eos> inside the trace or the answer (a <pad>
// there is tolerated, as parse_completion does). The leading <think> is optional because the
// prompt ends with it.
// Design rule: linear time and no allocation on any input. The scan jumps between '<' bytes
// (memchr) and tries the six special strings there; they contain no '<' after their first byte,
// so occurrences never overlap and this finds exactly the tokens data::Tokenizer would encode. It
// records, per tag, how often it occurs and where first — enough to decide the grammar, the
// partial-credit checks of reward::Format and the token count of reward::Overlong.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "reason/data/tokenizer.hpp"

namespace reason::reward {

/// The special tags in data::Tokenizer's order.
enum class Tag : int { think = 0, end_think, answer, end_answer, eos, pad };
inline constexpr std::size_t tag_count = 6;

/// Where the tags of one completion are. Positions are byte offsets; npos when a tag is absent.
struct TagScan {
  static constexpr std::size_t npos = std::string_view::npos;
  std::string_view text;
  std::array<std::size_t, tag_count> count{};  // occurrences of each tag
  std::array<std::size_t, tag_count> first{};  // offset of the first occurrence
  std::size_t trailing_pads = 0;               // <pad>s that end the text, back to back

  [[nodiscard]] std::size_t n(Tag t) const { return count[static_cast<std::size_t>(t)]; }
  [[nodiscard]] std::size_t at(Tag t) const { return first[static_cast<std::size_t>(t)]; }
  [[nodiscard]] static constexpr std::size_t length(Tag t) {
    return data::Tokenizer::special_strings[static_cast<std::size_t>(t)].size();
  }

  /// Tokens data::Tokenizer::encode gives the text: one per byte, one per special tag.
  [[nodiscard]] std::size_t tokens() const {
    std::size_t saved = 0;
    for (std::size_t t = 0; t < tag_count; ++t) saved += count[t] * (length(Tag(t)) - 1);
    return text.size() - saved;
  }

  /// True when the text is the template exactly (data::parse_completion would accept it).
  [[nodiscard]] bool well_formed() const {
    const bool lead_ok = n(Tag::think) == 0 || (n(Tag::think) == 1 && at(Tag::think) == 0);
    if (!lead_ok || n(Tag::end_think) != 1 || n(Tag::answer) != 1 || n(Tag::end_answer) != 1 || n(Tag::eos) > 1)
      return false;
    if (at(Tag::answer) != at(Tag::end_think) + length(Tag::end_think)) return false;  // </think><answer>
    if (at(Tag::end_answer) < at(Tag::answer)) return false;
    // After </answer>: an optional <eos>, then only <pad>s up to the end.
    std::size_t tail = at(Tag::end_answer) + length(Tag::end_answer);
    if (n(Tag::eos) == 1) {
      if (at(Tag::eos) != tail) return false;
      tail += length(Tag::eos);
    }
    return text.size() - tail == trailing_pads * length(Tag::pad);
  }

  /// The trace: between the optional leading <think> and </think> (valid when well_formed()).
  [[nodiscard]] std::string_view think() const {
    const std::size_t b = n(Tag::think) == 1 ? length(Tag::think) : 0;
    return text.substr(b, at(Tag::end_think) - b);
  }
  /// The answer: between <answer> and </answer> (valid when well_formed()).
  [[nodiscard]] std::string_view answer() const {
    const std::size_t b = at(Tag::answer) + length(Tag::answer);
    return text.substr(b, at(Tag::end_answer) - b);
  }
};

/// Scans `text` once (O(size), no allocation).
[[nodiscard]] inline TagScan scan_tags(std::string_view text) {
  TagScan s;
  s.text = text;
  s.first.fill(TagScan::npos);
  const char* const base = text.data();
  const std::size_t size = text.size();
  std::size_t i = 0, pad_run_end = TagScan::npos;  // end of the current run of back-to-back <pad>s
  while (i < size) {
    const void* hit = std::memchr(base + i, '<', size - i);
    if (!hit) break;
    i = static_cast<std::size_t>(static_cast<const char*>(hit) - base);
    const std::string_view rest = text.substr(i);
    std::size_t t = 0;
    while (t < tag_count && !rest.starts_with(data::Tokenizer::special_strings[t])) ++t;
    if (t == tag_count) {
      ++i;
      continue;
    }
    const std::size_t len = TagScan::length(Tag(t));
    if (s.count[t]++ == 0) s.first[t] = i;
    if (Tag(t) == Tag::pad) {
      s.trailing_pads = pad_run_end == i ? s.trailing_pads + 1 : 1;
      pad_run_end = i + len;
    }
    i += len;
  }
  if (pad_run_end != size) s.trailing_pads = 0;
  return s;
}

}  // namespace reason::reward
