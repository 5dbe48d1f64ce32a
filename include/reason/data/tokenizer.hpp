// reason/data/tokenizer.hpp — a byte-level tokenizer with the R1 template's special tokens.
//
// Design rule: every string has exactly one encoding and decoding gives it back byte for byte.
// Ids 0..255 are the bytes themselves (as in ByT5, Xue et al. 2022), so any input — NUL,
// invalid UTF-8, anything — is representable and the model learns digits as single tokens.
// The special tokens of DeepSeek-R1's template (DeepSeek-AI 2025, Table 1: "<think> reasoning
// process here </think> <answer> answer here </answer>") come after the bytes, plus <eos> and
// <pad>. `encode` maps the exact special strings found in text to their ids (longest match at
// each position; they share no prefix with each other so the match is unique); `decode` writes
// them back as those strings. encode(decode(ids)) == ids for any ids whose byte runs do not
// spell a special string, and decode(encode(s)) == s for every s.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "reason/core/error.hpp"

namespace reason::data {

struct Tokenizer {
  static constexpr std::int32_t think = 256;         // <think>
  static constexpr std::int32_t end_think = 257;     // </think>
  static constexpr std::int32_t answer = 258;        // <answer>
  static constexpr std::int32_t end_answer = 259;    // </answer>
  static constexpr std::int32_t eos = 260;           // <eos>
  static constexpr std::int32_t pad = 261;           // <pad>
  static constexpr std::int32_t vocab_size = 262;
  static constexpr std::int32_t first_special = think;

  static constexpr std::array<std::string_view, 6> special_strings = {"<think>", "</think>", "<answer>",
                                                                     "</answer>", "<eos>", "<pad>"};

  [[nodiscard]] static constexpr bool is_special(std::int32_t id) { return id >= first_special && id < vocab_size; }

  /// The text of one token: a single byte or a special string. Throws for an id outside the vocabulary.
  [[nodiscard]] static std::string token_text(std::int32_t id) {
    REASON_CHECK(id >= 0 && id < vocab_size, "Tokenizer: token id ", id, " out of range [0, ", vocab_size, ")");
    if (is_special(id)) return std::string(special_strings[static_cast<std::size_t>(id - first_special)]);
    return std::string(1, static_cast<char>(static_cast<unsigned char>(id)));
  }

  /// Appends the ids of `text` to `out`.
  static void encode_into(std::string_view text, std::vector<std::int32_t>& out) {
    for (std::size_t i = 0; i < text.size();) {
      std::int32_t special = -1;
      if (text[i] == '<') {
        for (std::size_t s = 0; s < special_strings.size(); ++s)
          if (text.substr(i).starts_with(special_strings[s])) {
            special = first_special + static_cast<std::int32_t>(s);
            i += special_strings[s].size();
            break;
          }
      }
      if (special < 0) special = static_cast<std::int32_t>(static_cast<unsigned char>(text[i++]));
      out.push_back(special);
    }
  }

  [[nodiscard]] static std::vector<std::int32_t> encode(std::string_view text) {
    std::vector<std::int32_t> out;
    out.reserve(text.size());
    encode_into(text, out);
    return out;
  }

  /// The text of `ids`, special tokens written as their strings. Throws for an id outside the vocabulary.
  [[nodiscard]] static std::string decode(std::span<const std::int32_t> ids) {
    std::string out;
    out.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      REASON_CHECK(id >= 0 && id < vocab_size, "Tokenizer::decode: token id ", id, " at position ", i,
                   " out of range [0, ", vocab_size, ")");
      if (is_special(id)) out += special_strings[static_cast<std::size_t>(id - first_special)];
      else out.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    }
    return out;
  }
};

}  // namespace reason::data
