// expect: this pattern has no non-causal form
// The sliding window is defined over past positions only; Shape{.causal = false} is refused.
#include "reason/attention/sliding_window.hpp"
#include "reason/linear/dense.hpp"

using Attn = reason::attention::SlidingWindow<reason::attention::Shape{.head_dim = 16, .causal = false}, 8>;
Attn::Module<float, reason::linear::Dense> module;
