// expect: Opt must be an optimizer policy
// A schedule is not an optimizer.
#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/train/trainer.hpp"

using Attn = reason::attention::MultiHead<reason::attention::Shape{.head_dim = 16}>;
using Net = reason::model::Transformer<Attn, reason::ffn::SwiGLU>;
using Bad = reason::train::Trainer<Net, reason::train::CosineSchedule>;
Bad* trainer = nullptr;
void use() { (void)sizeof(Bad); }
