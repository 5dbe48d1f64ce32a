// expect: Precision must be a precision policy
// A bare scalar type is not a precision policy.
#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::MultiHead<reason::attention::Shape{.head_dim = 16}>;
reason::model::Transformer<Attn, reason::ffn::SwiGLU, reason::norm::RMSNorm, reason::linear::Dense, float> net{
    reason::model::Config{}};
