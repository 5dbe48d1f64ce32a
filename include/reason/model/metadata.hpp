// reason/model/metadata.hpp — what a checkpoint records about a model, and the check on loading.
//
// The config under Hugging Face names (Config::to_metadata), plus "attention" and "ffn": the
// policies' signatures with their compile-time numbers ("sliding_window(W=256)", "moe(...)"), so
// weights trained with one variant do not load silently into another. Shared by every model type
// (model::Transformer, gpu::DenseTransformer), so a file moves between backends.
#pragma once

#include <map>
#include <string>

#include "reason/core/error.hpp"
#include "reason/model/config.hpp"

namespace reason::model {

[[nodiscard]] inline std::map<std::string, std::string> model_metadata(const Config& config, int head_dim,
                                                                       const std::string& attention,
                                                                       const std::string& ffn) {
  auto meta = config.to_metadata(head_dim);
  meta["attention"] = attention;
  meta["ffn"] = ffn;
  return meta;
}

/// Throws unless `meta` describes this model: the config field by field, then the attention policy
/// (a file without "attention" predates the record and was multi_head), then the feed-forward
/// policy (a file without "ffn" predates MoE models and was the dense SwiGLU).
inline void expect_model_metadata(const Config& config, int head_dim, const std::string& attention,
                                  const std::string& ffn, const std::map<std::string, std::string>& meta,
                                  const std::string& what) {
  config.expect_same(Config::from_metadata(meta, head_dim), what.c_str());
  const auto a = meta.find("attention");
  const std::string saved = a == meta.end() ? std::string("multi_head") : a->second;
  REASON_CHECK(saved == attention, what, ": attention is ", saved, ", but this model is built with ", attention);
  const auto f = meta.find("ffn");
  const std::string saved_ffn = f == meta.end() ? std::string("swiglu") : f->second;
  REASON_CHECK(saved_ffn == ffn, what, ": the feed-forward policy is ", saved_ffn, ", but this model is built with ",
               ffn);
}

}  // namespace reason::model
