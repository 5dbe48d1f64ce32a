// Shared pieces of the rl tests that sample from a model: a tiny float32 byte-level transformer
// with the tokenizer's vocabulary, a reward a random policy half-earns, and its questions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

namespace reason::test {

using TinyNet = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;

/// 2 layers, width 32, GQA 4/2 heads. The default init_std gives near-uniform next-token
/// distributions; a larger one gives peaked, question-dependent ones.
inline model::Config tiny_policy_config(index_t max_seq_len = 24, double init_std = 0.02) {
  return {.vocab_size = data::Tokenizer::vocab_size,
          .hidden_size = 32,
          .num_layers = 2,
          .num_heads = 4,
          .num_kv_heads = 2,
          .intermediate_size = 64,
          .max_seq_len = max_seq_len,
          .init_std = init_std};
}

inline std::vector<float> initial_params(const TinyNet& net, std::uint64_t seed) {
  std::vector<float> p(net.num_params());
  net.layout().initialize(std::span<float>(p), seed);
  return p;
}

/// 1 when a byte of the completion before its first <eos> occurs in sample.answer (a set of
/// target bytes), else 0. With 26 targets of 262 tokens and 4 new tokens a uniform policy earns
/// 1 - (236/262)^4 = 0.34 on average.
struct ContainsTarget {
  static constexpr const char* name = "contains_target";
  static constexpr float min_score = 0.0f, max_score = 1.0f;
  [[nodiscard]] float score(std::string_view completion, const data::Problem& sample) const {
    const std::string_view body = completion.substr(0, completion.find("<eos>"));
    return body.find_first_of(sample.answer) != std::string_view::npos ? 1.0f : 0.0f;
  }
};

/// n questions "Q<number>" drawn from Philox(seed, stream), each answered by the target set.
inline std::vector<data::Problem> target_prompts(std::uint64_t stream, index_t n,
                                                 std::string targets = "abcdefghijklmnopqrstuvwxyz",
                                                 std::uint64_t seed = 7, std::uint32_t range = 100) {
  Philox rng(seed, stream);
  std::vector<data::Problem> out;
  for (index_t i = 0; i < n; ++i) {
    data::Problem p;
    p.question = "Q";
    p.question += std::to_string(rng.below(range));  // appended: GCC 12 warns falsely on "Q" + s
    p.answer = targets;
    out.push_back(p);
  }
  return out;
}

}  // namespace reason::test
