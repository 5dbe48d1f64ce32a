// examples/common/attention_choice.hpp — the attention policy of the examples, chosen at compile time.
//
// Each variant is a small struct: the option value (`name`), the policy (`type`) with the
// examples' numbers, and a line saying what it is. The examples' model has width 128, 4 query
// heads, 2 key/value heads and sequences of up to 96 tokens, so a window of 32 positions and 16 keys
// per query really are sparser than full attention. The build picks one with the compile definition
// REASON_EXAMPLE_ATTENTION (CMake: -DREASON_EXAMPLE_ATTENTION=sliding_window; default multi_head):
//
//   using Net = model::Transformer<examples::Attention, ffn::SwiGLU, ...>;
//
// examples/attention_swap instantiates its trainer for every entry of examples::AllVariants.
#pragma once

#include <string_view>
#include <tuple>

#include "reason/attention/hierarchical.hpp"
#include "reason/attention/mla.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/attention/sliding_window.hpp"
#include "reason/attention/top_k.hpp"

namespace examples::variants {

namespace attn = reason::attention;

/// Full causal attention, GQA (4 query heads share 2 key/value heads), RoPE, head_dim 32.
struct multi_head {
  static constexpr const char* name = "multi_head";
  static constexpr const char* detail = "full causal GQA, head_dim 32";
  using type = attn::MultiHead<attn::Shape{.head_dim = 32}>;
};

/// The last 32 positions only; the decode cache is a ring of 32 slots.
struct sliding_window {
  static constexpr const char* name = "sliding_window";
  static constexpr const char* detail = "window of 32 positions (ring-buffer cache)";
  using type = attn::SlidingWindow<attn::Shape{.head_dim = 32}, 32>;
};

/// Each query keeps its 16 highest-scoring visible keys.
struct top_k {
  static constexpr const char* name = "top_k";
  static constexpr const char* detail = "16 best keys per query (full cache)";
  using type = attn::TopK<attn::Shape{.head_dim = 32}, 16>;
};

/// multi_head and sliding_window on shared projections, mixed by learned per-head gates.
struct hierarchical {
  static constexpr const char* name = "hierarchical";
  static constexpr const char* detail = "full + window 32, learned per-head gates";
  using type = attn::Hierarchical<multi_head::type, sliding_window::type>;
};

/// Multi-head latent attention: the cache keeps a 32-wide latent and a 16-wide RoPE key per token.
/// The model sees head_dim = nope + rope = 48; kv_heads does not apply.
struct mla {
  static constexpr const char* name = "mla";
  static constexpr const char* detail = "latent attention, ranks q 64 / kv 32, nope 32 + rope 16, v 32";
  using type = attn::Mla<attn::MlaShape{
      .q_lora_rank = 64, .kv_lora_rank = 32, .qk_nope_head_dim = 32, .qk_rope_head_dim = 16, .v_head_dim = 32}>;
};

}  // namespace examples::variants

namespace examples {

/// Every variant, in the order the comparison lists them (the values of REASON_EXAMPLE_ATTENTION).
using AllVariants = std::tuple<variants::multi_head, variants::sliding_window, variants::top_k,
                               variants::hierarchical, variants::mla>;

// Each variant's option value is its policy's own name.
static_assert([]<class... V>(std::tuple<V...>*) {
  return ((std::string_view(V::name) == std::string_view(V::type::name)) && ...);
}(static_cast<AllVariants*>(nullptr)));

#ifndef REASON_EXAMPLE_ATTENTION
#define REASON_EXAMPLE_ATTENTION multi_head
#endif
/// The variant this build was configured with (an unknown name fails here: no such variant).
using AttentionChoice = variants::REASON_EXAMPLE_ATTENTION;
using Attention = AttentionChoice::type;

}  // namespace examples
