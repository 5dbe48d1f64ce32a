// expect: groups must divide experts
// Group-limited routing splits the experts into equal groups: 8 experts in 3 groups is refused at compile time.
#include "reason/ffn/swiglu.hpp"
#include "reason/moe/moe.hpp"

template struct reason::moe::MoE<
    reason::moe::SigmoidTopK<reason::moe::GateConfig{.experts = 8, .top_k = 2, .groups = 3, .top_groups = 1}>,
    reason::ffn::SwiGLU>;
