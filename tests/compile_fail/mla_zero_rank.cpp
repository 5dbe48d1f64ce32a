// expect: MLA ranks .*must be positive
// MLA compresses keys and values into a latent of kv_lora_rank values: a rank of 0 is refused at compile time.
#include "reason/attention/mla.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

using Attn = reason::attention::Mla<reason::attention::MlaShape{
    .q_lora_rank = 64, .kv_lora_rank = 0, .qk_nope_head_dim = 16, .qk_rope_head_dim = 8, .v_head_dim = 16}>;
reason::model::Transformer<Attn, reason::ffn::SwiGLU> net{reason::model::Config{}};
