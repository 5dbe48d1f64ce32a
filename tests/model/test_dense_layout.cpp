// model::dense_layout (what the CUDA model is built on) against the host model's own layout:
// every tensor's name, shape, offset, initialisation and flags, so a checkpoint moves between backends.
#include <doctest/doctest.h>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/dense_layout.hpp"
#include "reason/model/transformer.hpp"

using namespace reason;

namespace {

template <int D>
void expect_same_layout(const model::Config& c) {
  using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = D}>, ffn::SwiGLU>;
  const Net net(c);
  const model::DenseLayout dense = model::dense_layout(c, D);
  const auto& host = net.layout().params();
  const auto& mine = dense.layout.params();
  REQUIRE(mine.size() == host.size());
  CHECK(dense.layout.size() == net.layout().size());
  for (std::size_t i = 0; i < host.size(); ++i) {
    CAPTURE(host[i].name);
    CHECK(mine[i].name == host[i].name);
    CHECK(mine[i].shape == host[i].shape);
    CHECK(mine[i].offset == host[i].offset);
    CHECK(mine[i].numel == host[i].numel);
    CHECK(mine[i].init == host[i].init);
    CHECK(mine[i].init_std == host[i].init_std);
    CHECK(mine[i].decay == host[i].decay);
    CHECK(mine[i].trainable == host[i].trainable);
  }
  // The named offsets point at the tensors of those names.
  CHECK(dense.embed == dense.layout.find("embed.weight").offset);
  CHECK(dense.lm_head == dense.layout.find("lm_head.weight").offset);
  CHECK(dense.final_norm == dense.layout.find("norm.weight").offset);
  REQUIRE(static_cast<index_t>(dense.layers.size()) == c.num_layers);
  for (index_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    const model::DenseLayerOffsets& o = dense.layers[static_cast<std::size_t>(l)];
    CHECK(o.attn_norm == dense.layout.find(p + ".attn_norm.weight").offset);
    CHECK(o.qkv == dense.layout.find(p + ".attn.qkv.weight").offset);
    CHECK(o.o == dense.layout.find(p + ".attn.o.weight").offset);
    CHECK(o.ffn_norm == dense.layout.find(p + ".ffn_norm.weight").offset);
    CHECK(o.gate_up == dense.layout.find(p + ".ffn.gate_up.weight").offset);
    CHECK(o.down == dense.layout.find(p + ".ffn.down.weight").offset);
  }
}

}  // namespace

TEST_CASE("dense_layout: the host dense model's layout, tensor by tensor") {
  expect_same_layout<32>({.vocab_size = 61, .hidden_size = 48, .num_layers = 3, .num_heads = 4, .num_kv_heads = 2,
                          .intermediate_size = 80, .max_seq_len = 40});
  expect_same_layout<64>({.vocab_size = 300, .hidden_size = 128, .num_layers = 1, .num_heads = 2, .num_kv_heads = 2,
                          .intermediate_size = 96, .max_seq_len = 16, .init_std = 0.05});
}

TEST_CASE("dense_layout: refuses an MoE config and an odd head_dim") {
  model::Config c{.vocab_size = 61, .hidden_size = 48, .num_layers = 3, .num_heads = 4, .num_kv_heads = 2,
                  .intermediate_size = 80, .moe_intermediate_size = 32, .first_dense_layers = 1, .max_seq_len = 40};
  CHECK_THROWS_WITH(model::dense_layout(c, 32), doctest::Contains("describes an MoE model"));
  c.moe_intermediate_size = 0;
  c.first_dense_layers = 0;
  CHECK_THROWS_WITH(model::dense_layout(c, 33), doctest::Contains("must be even"));
}
