// expect: k must be positive
// Top-k attention with k = 0 would leave a softmax over no keys: refused at compile time.
#include "reason/attention/top_k.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::TopK<reason::attention::Shape{.head_dim = 16}, 0>;
reason::model::Transformer<Attn, reason::ffn::SwiGLU> net{reason::model::Config{}};
