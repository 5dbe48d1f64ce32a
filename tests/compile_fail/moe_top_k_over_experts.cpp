// expect: top_k must be in \[1, experts\]
// A gate that picks more experts per token than there are: refused at compile time.
#include "reason/ffn/swiglu.hpp"
#include "reason/moe/moe.hpp"

template struct reason::moe::MoE<reason::moe::SoftmaxTopK<reason::moe::GateConfig{.experts = 4, .top_k = 5}>,
                                 reason::ffn::SwiGLU>;
