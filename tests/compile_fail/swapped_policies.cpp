// expect: Attn must be an attention policy
// The feed-forward policy given where the attention policy belongs.
#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::MultiHead<reason::attention::Shape{.head_dim = 16}>;
reason::model::Transformer<reason::ffn::SwiGLU, Attn> net{reason::model::Config{}};
