// expect: the capacity factor must be > 0
// A capacity factor <= 0 would give every expert no slots and drop every token: refused at compile time.
#include "reason/ffn/swiglu.hpp"
#include "reason/moe/moe.hpp"

template struct reason::moe::MoE<
    reason::moe::SigmoidTopK<reason::moe::GateConfig{.experts = 8, .top_k = 2}, reason::moe::Capacity<-1.25f>>,
    reason::ffn::SwiGLU, reason::moe::Shared<1>>;
