// examples/common/ffn_choice.hpp — the feed-forward policy of the examples, chosen at compile time.
//
// Each variant is a small struct, like the attention variants (common/attention_choice.hpp): the
// option value (`name`), a line saying what it is (`detail`), the policy (`type`), its run-time
// numbers as constants (`expert_width`: each routed expert's hidden width; `first_dense_layers`:
// how many first layers keep the dense FFN), which `with_ffn<Variant>(config)` writes into a
// model::Config. The examples' dense FFN is 384 wide; the MoE variants size their experts so that
// the FFN a token goes through has the same width, (top_k + shared) x expert_width = 384: the same
// active FFN parameters and FLOPs per token as the dense model, with 8 experts' worth of capacity.
// The build picks one with the compile definition REASON_EXAMPLE_FFN (CMake: -DREASON_EXAMPLE_FFN=moe;
// default dense):
//
//   using Net = model::Transformer<examples::Attention, examples::Ffn, ...>;
//   const model::Config mc = examples::with_ffn<examples::FfnChoice>(base_config);
#pragma once

#include <string>
#include <tuple>

#include "reason/ffn/swiglu.hpp"
#include "reason/model/config.hpp"
#include "reason/moe/moe.hpp"

namespace examples::ffn_variants {

namespace ffn = reason::ffn;
namespace rm = reason::moe;  // (not `moe`: that is a variant below)
using reason::index_t;

/// The dense SwiGLU of every layer, Config::intermediate_size wide (384 in the examples).
struct dense {
  static constexpr const char* name = "dense";
  static constexpr const char* detail = "SwiGLU in every layer (width --ffn, 384 by default)";
  using type = ffn::SwiGLU;
  static constexpr index_t expert_width = 0;
  static constexpr index_t first_dense_layers = 0;
};

/// DeepSeek-V3's recipe at the examples' scale (§2.1.2): sigmoid scores, the 2 best of 8 fine-grained
/// experts plus 1 shared expert, auxiliary-loss-free balancing by a per-expert bias (gamma 0.001),
/// no token dropped, and the first layer kept dense (DeepSeek-V3 keeps its first 3 of 61).
struct moe {
  static constexpr const char* name = "moe";
  static constexpr const char* detail =
      "DeepSeek-V3 style: sigmoid top-2 of 8 experts + 1 shared, width 128 each, bias balancing, no drops, "
      "first layer dense";
  using type = rm::MoE<rm::SigmoidTopK<rm::GateConfig{.experts = 8, .top_k = 2}, rm::NoDrop, rm::BiasBalance<0.001f>>,
                       ffn::SwiGLU, rm::Shared<1>>;
  static constexpr index_t expert_width = 128;  // (2 routed + 1 shared) x 128 = 384, the dense width
  static constexpr index_t first_dense_layers = 1;
};

/// Switch Transformer / GShard style: softmax top-2 of 8 experts, no shared expert, capacity factor
/// 1.25 (assignments over an expert's slots are dropped; the token keeps its residual) and the Switch
/// load-balancing loss (alpha 0.01). Every layer is routed, as in Switch and Mixtral, which have no
/// dense first layers (the contrast with `moe` is the point: all of this variant's balancing is the
/// aux loss's doing).
struct moe_switch {
  static constexpr const char* name = "moe_switch";
  static constexpr const char* detail =
      "Switch/GShard style: softmax top-2 of 8 experts, width 192 each, capacity 1.25, switch loss 0.01, "
      "every layer routed";
  using type = rm::MoE<rm::SoftmaxTopK<rm::GateConfig{.experts = 8, .top_k = 2}, rm::Capacity<1.25f>, rm::SwitchLoss<0.01f>>,
                       ffn::SwiGLU>;
  static constexpr index_t expert_width = 192;  // 2 routed x 192 = 384, the dense width
  static constexpr index_t first_dense_layers = 0;
};

}  // namespace examples::ffn_variants

namespace examples {

/// Every FFN variant (the values of REASON_EXAMPLE_FFN).
using AllFfnVariants = std::tuple<ffn_variants::dense, ffn_variants::moe, ffn_variants::moe_switch>;

/// `c` with the variant's expert width and dense layers.
template <class Variant>
[[nodiscard]] reason::model::Config with_ffn(reason::model::Config c) {
  c.moe_intermediate_size = Variant::expert_width;
  c.first_dense_layers = Variant::first_dense_layers;
  return c;
}

/// "ffn: ..." — the policy's signature and, for an MoE model, its experts, their width, the active
/// width per token and which layers are routed (config `c`, as the model was built).
template <class Net>
[[nodiscard]] std::string ffn_description(const reason::model::Config& c) {
  using Ffn = typename Net::ffn_policy;
  std::string s = "ffn: " + Net::ffn_signature();
  if constexpr (Net::routed) {
    const long long width = c.moe_intermediate_size, dense_layers = c.first_dense_layers;
    s += "; " + std::to_string(Ffn::experts) + " experts of width " + std::to_string(width) + ", top " +
         std::to_string(Ffn::top_k) + (Ffn::shared_experts > 0 ? " + " + std::to_string(Ffn::shared_experts) + " shared" : "") +
         " (active width " + std::to_string((Ffn::top_k + Ffn::shared_experts) * width) + " per token); ";
    if (dense_layers >= c.num_layers)
      s += "every layer dense (the model is no deeper than first_dense_layers)";
    else
      s += (dense_layers + 1 == c.num_layers ? "layer " + std::to_string(dense_layers)
                                               : "layers " + std::to_string(dense_layers) + "-" + std::to_string(c.num_layers - 1)) +
           " routed" +
           (dense_layers > 0 ? ", first " + std::to_string(dense_layers) + " dense (width " +
                                   std::to_string(c.intermediate_size) + ")"
                             : "");
  } else {
    s += ", width " + std::to_string(c.intermediate_size) + ", every layer";
  }
  return s;
}

/// The routed experts of each MoE layer of Net (0 for a dense model).
template <class Net>
[[nodiscard]] constexpr int routed_experts() {
  if constexpr (Net::routed)
    return Net::ffn_policy::experts;
  else
    return 0;
}

/// The parameters one token goes through: all of them but the routed experts it is not sent to
/// ((E - k) / E of the "*.experts.*" tensors of each MoE layer). A dense model: num_params().
template <class Net>
[[nodiscard]] std::size_t active_params(const Net& net) {
  if constexpr (Net::routed) {
    using Ffn = typename Net::ffn_policy;
    std::size_t routed = 0;
    for (const reason::ParamInfo& p : net.layout().params())
      if (p.name.find(".experts.") != std::string::npos) routed += p.numel;
    return net.num_params() - routed / Ffn::experts * (Ffn::experts - Ffn::top_k);
  } else {
    return net.num_params();
  }
}

#ifndef REASON_EXAMPLE_FFN
#define REASON_EXAMPLE_FFN dense
#endif
/// The variant this build was configured with (an unknown name fails here: no such variant).
using FfnChoice = ffn_variants::REASON_EXAMPLE_FFN;
using Ffn = FfnChoice::type;

}  // namespace examples
