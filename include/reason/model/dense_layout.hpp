// reason/model/dense_layout.hpp — where the dense decoder's tensors live in the flat parameter buffer.
//
// The parameter layout of model::Transformer<attention::MultiHead<Shape{.head_dim = D}>, ffn::SwiGLU,
// norm::RMSNorm, linear::Dense> — the same names, shapes, order, initialisation and decay flags —
// written out as a plain function of (Config, head_dim). The CUDA model (gpu::DenseTransformer) is
// built on it, so a checkpoint written by either backend loads into the other tensor by tensor
// (tests/model/test_dense_layout.cpp compares the two layouts field by field). It exists because
// nvcc's front end cannot emit host code for templates with class-type template arguments
// (attention::Shape{...}), so a CUDA translation unit cannot name the host model's policies.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "reason/core/param_layout.hpp"
#include "reason/model/config.hpp"

namespace reason::model {

/// Offsets (in elements) of one layer's tensors.
struct DenseLayerOffsets {
  std::size_t attn_norm = 0;  // [C]
  std::size_t qkv = 0;        // [(H + 2 Hkv) D, C]: rows of q heads, then k heads, then v heads
  std::size_t o = 0;          // [C, H D]
  std::size_t ffn_norm = 0;   // [C]
  std::size_t gate_up = 0;    // [2 F, C]: gate rows [0, F), up rows [F, 2F)
  std::size_t down = 0;       // [C, F]
};

/// The layout and every tensor's offset.
struct DenseLayout {
  ParamLayout layout;
  std::size_t embed = 0;    // [V, C]
  std::vector<DenseLayerOffsets> layers;
  std::size_t final_norm = 0;  // [C]
  std::size_t lm_head = 0;     // [V, C]
};

/// The dense model's layout for `config` and `head_dim` (config is validated; it must be dense).
inline DenseLayout dense_layout(const Config& config, int head_dim) {
  config.validate(head_dim);
  REASON_CHECK(config.first_dense_layers == 0 && config.moe_intermediate_size == 0,
               "model::dense_layout: the config describes an MoE model (moe_intermediate_size = ",
               config.moe_intermediate_size, ", first_dense_layers = ", config.first_dense_layers,
               "); the dense layout has a SwiGLU FFN in every layer");
  REASON_CHECK(head_dim % 2 == 0, "model::dense_layout: head_dim = ", head_dim, " must be even (RoPE rotates pairs)");
  const Config& c = config;
  const index_t d = head_dim;
  const double out_std = c.init_std / std::sqrt(2.0 * static_cast<double>(c.num_layers));  // GPT-2 residual scaling
  DenseLayout r;
  ParamLayout& l = r.layout;
  r.embed = l.add("embed.weight", {c.vocab_size, c.hidden_size}, Init::normal, c.init_std);
  for (index_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i);
    DenseLayerOffsets o;
    o.attn_norm = l.add(p + ".attn_norm.weight", {c.hidden_size}, Init::ones);
    o.qkv = l.add(p + ".attn.qkv.weight", {(c.num_heads + 2 * c.num_kv_heads) * d, c.hidden_size}, Init::normal,
                  c.init_std);
    o.o = l.add(p + ".attn.o.weight", {c.hidden_size, c.num_heads * d}, Init::normal, out_std);
    o.ffn_norm = l.add(p + ".ffn_norm.weight", {c.hidden_size}, Init::ones);
    o.gate_up = l.add(p + ".ffn.gate_up.weight", {2 * c.intermediate_size, c.hidden_size}, Init::normal, c.init_std);
    o.down = l.add(p + ".ffn.down.weight", {c.hidden_size, c.intermediate_size}, Init::normal, out_std);
    r.layers.push_back(o);
  }
  r.final_norm = l.add("norm.weight", {c.hidden_size}, Init::ones);
  r.lm_head = l.add("lm_head.weight", {c.vocab_size, c.hidden_size}, Init::normal, c.init_std);
  return r;
}

}  // namespace reason::model
