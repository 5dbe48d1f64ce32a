// reason/moe/gate_config.hpp — the compile-time numbers of an MoE gate.
//
// A structural type, so it is a template argument of the gate policies:
//   moe::SigmoidTopK<moe::GateConfig{.experts = 64, .top_k = 6, .groups = 8, .top_groups = 3,
//                                    .routed_scale = 2.5f}, moe::Capacity<1.25f>>
// Group-limited routing (DeepSeek-V2 §2.1.3 device-limited routing; DeepSeek-V3 §2.1.2 node-limited
// routing): the experts are split into `groups` equal groups; only the `top_groups` best groups
// (by the sum of their two best experts' scores) compete for a token's top_k. groups = 1: off.
#pragma once

namespace reason::moe {

struct GateConfig {
  int experts = 8;            // routed experts E
  int top_k = 2;              // experts per token k
  int groups = 1;             // expert groups (1: no group limit)
  int top_groups = 1;         // groups a token may use (<= groups; ignored when groups == 1)
  bool normalize = true;      // renormalise the chosen experts' weights to sum 1 (Mixtral, DeepSeek-V3)
  float routed_scale = 1.0f;  // multiplies the routed weights (DeepSeek-V3's routed_scaling_factor, 2.5)
};

/// The groups a token may use: top_groups, or all of them when grouping is off.
[[nodiscard]] constexpr int kept_groups(const GateConfig& g) { return g.groups == 1 ? 1 : g.top_groups; }

}  // namespace reason::moe
