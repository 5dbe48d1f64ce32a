// expect: the window W must be positive
// A sliding window of 0 positions would not even see the query itself: refused at compile time.
#include "reason/attention/sliding_window.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::SlidingWindow<reason::attention::Shape{.head_dim = 16}, 0>;
reason::model::Transformer<Attn, reason::ffn::SwiGLU> net{reason::model::Config{}};
