// reason/model/config.hpp — the run-time sizes of a transformer, and their checkpoint form.
//
// Sizes that vary per run (width, depth, heads, vocabulary, context) are run-time; what
// kernels specialise on (head_dim) is compile-time and lives in the attention policy. A
// checkpoint stores the config as string metadata under Hugging Face `config.json` names; a
// loader compares field by field and names the first that differs.
#pragma once

#include <charconv>
#include <cstdint>
#include <map>
#include <string>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"

namespace reason::model {

struct Config {
  index_t vocab_size = 262;
  index_t hidden_size = 128;        // model width C
  index_t num_layers = 4;
  index_t num_heads = 4;            // query heads H
  index_t num_kv_heads = 4;         // key/value heads; H % kv_heads == 0 (GQA, MQA when 1)
  index_t intermediate_size = 384;  // FFN hidden width F (of the dense layers)
  index_t moe_intermediate_size = 0;  // each routed expert's hidden width (MoE models; 0 otherwise)
  index_t first_dense_layers = 0;     // MoE models: how many first layers keep the dense FFN (DeepSeek-V3: 3)
  index_t max_seq_len = 128;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;           // normal init of matrices; output projections scaled by 1/sqrt(2 L)

  /// Checks the values against each other and against the compile-time head_dim.
  void validate(int head_dim) const {
    auto positive = [](const char* field, index_t v) {
      REASON_CHECK(v > 0, "model::Config: ", field, " = ", v, ", expected > 0");
    };
    positive("vocab_size", vocab_size);
    positive("hidden_size", hidden_size);
    positive("num_layers", num_layers);
    positive("num_heads", num_heads);
    positive("num_kv_heads", num_kv_heads);
    positive("intermediate_size", intermediate_size);
    positive("max_seq_len", max_seq_len);
    REASON_CHECK(moe_intermediate_size >= 0 && first_dense_layers >= 0 && first_dense_layers <= num_layers,
                 "model::Config: moe_intermediate_size = ", moe_intermediate_size, ", first_dense_layers = ",
                 first_dense_layers, "; expected >= 0 and first_dense_layers <= num_layers = ", num_layers);
    REASON_CHECK(vocab_size <= 2147483647, "model::Config: vocab_size = ", vocab_size, " does not fit the int32 token ids");
    REASON_CHECK(num_heads % num_kv_heads == 0, "model::Config: num_heads = ", num_heads,
                 " is not a multiple of num_kv_heads = ", num_kv_heads);
    // Evenness for RoPE is the attention policy's own compile-time check (MLA rotates only part of a head).
    REASON_CHECK(head_dim > 0, "model::Config: head_dim = ", head_dim, ", expected > 0");
    REASON_CHECK(norm_eps > 0 && rope_theta > 0 && init_std > 0, "model::Config: rope_theta, norm_eps and init_std must be > 0");
  }

  /// The fields under their Hugging Face names, as checkpoint metadata.
  [[nodiscard]] std::map<std::string, std::string> to_metadata(int head_dim) const {
    auto num = [](double v) {
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest exact round trip
      return std::string(buf, end);
    };
    return {{"vocab_size", std::to_string(vocab_size)},
            {"hidden_size", std::to_string(hidden_size)},
            {"num_hidden_layers", std::to_string(num_layers)},
            {"num_attention_heads", std::to_string(num_heads)},
            {"num_key_value_heads", std::to_string(num_kv_heads)},
            {"intermediate_size", std::to_string(intermediate_size)},
            {"moe_intermediate_size", std::to_string(moe_intermediate_size)},
            {"first_k_dense_replace", std::to_string(first_dense_layers)},
            {"max_position_embeddings", std::to_string(max_seq_len)},
            {"head_dim", std::to_string(head_dim)},
            {"rope_theta", num(rope_theta)},
            {"rms_norm_eps", num(norm_eps)},
            {"initializer_range", num(init_std)}};
  }

  /// Reads a config back from checkpoint metadata; every field must be present and numeric.
  [[nodiscard]] static Config from_metadata(const std::map<std::string, std::string>& meta, int head_dim) {
    auto get = [&](const char* key) -> const std::string& {
      auto it = meta.find(key);
      REASON_CHECK(it != meta.end(), "model::Config: checkpoint metadata has no '", key, "'");
      return it->second;
    };
    auto integer = [&](const char* key) {
      const std::string& s = get(key);
      index_t v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      REASON_CHECK(ec == std::errc{} && p == s.data() + s.size(), "model::Config: '", key, "' = '", s, "' is not an integer");
      return v;
    };
    auto real = [&](const char* key) {
      const std::string& s = get(key);
      double v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      REASON_CHECK(ec == std::errc{} && p == s.data() + s.size(), "model::Config: '", key, "' = '", s, "' is not a number");
      return v;
    };
    REASON_CHECK(integer("head_dim") == head_dim, "model::Config: checkpoint head_dim = ", integer("head_dim"),
                 ", but this model's attention policy is compiled for head_dim = ", head_dim);
    Config c;
    c.vocab_size = integer("vocab_size");
    c.hidden_size = integer("hidden_size");
    c.num_layers = integer("num_hidden_layers");
    c.num_heads = integer("num_attention_heads");
    c.num_kv_heads = integer("num_key_value_heads");
    c.intermediate_size = integer("intermediate_size");
    // Files written before MoE models existed have neither; they were dense.
    c.moe_intermediate_size = meta.contains("moe_intermediate_size") ? integer("moe_intermediate_size") : 0;
    c.first_dense_layers = meta.contains("first_k_dense_replace") ? integer("first_k_dense_replace") : 0;
    c.max_seq_len = integer("max_position_embeddings");
    c.rope_theta = real("rope_theta");
    c.norm_eps = real("rms_norm_eps");
    c.init_std = real("initializer_range");
    return c;
  }

  /// Throws naming the first field where `other` (e.g. from a checkpoint) differs from this.
  void expect_same(const Config& other, const char* what) const {
    const auto mine = to_metadata(0), theirs = other.to_metadata(0);
    for (const auto& [key, value] : mine) {
      const auto& o = theirs.at(key);
      REASON_CHECK(o == value, what, ": config field '", key, "' is ", o, ", expected ", value);
    }
  }
};

}  // namespace reason::model
