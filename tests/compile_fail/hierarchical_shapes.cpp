// expect: both branches must have the same Shape
// Hierarchical mixes two branches over the same q, k and v: their head_dim must agree.
#include "reason/attention/hierarchical.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/attention/sliding_window.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::Hierarchical<reason::attention::MultiHead<reason::attention::Shape{.head_dim = 16}>,
                                             reason::attention::SlidingWindow<reason::attention::Shape{.head_dim = 32}, 8>>;
reason::model::Transformer<Attn, reason::ffn::SwiGLU> net{reason::model::Config{}};
