// expect: head_dim must be positive and even
// RoPE rotates pairs of dimensions: an odd head_dim is refused at compile time.
#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::MultiHead<reason::attention::Shape{.head_dim = 7}>;
reason::model::Transformer<Attn, reason::ffn::SwiGLU> net{reason::model::Config{}};
