// reason/attention/shape.hpp — the compile-time numbers every attention policy specialises on.
//
// Passed as a C++20 non-type template parameter; spell the type at the use site
// (`attention::MultiHead<attention::Shape{.head_dim = 32}>`), which nvcc requires.
#pragma once

namespace reason::attention {

struct Shape {
  int head_dim = 64;   // D: per-head width of queries, keys and values
  bool causal = true;  // false for encoders (no mask)
  friend constexpr bool operator==(const Shape&, const Shape&) = default;
};

/// The run-time sizes an attention module is built with (mapped from model::Config).
struct Dims {
  long long width = 0;     // C, the residual stream
  long long heads = 0;     // H query heads
  long long kv_heads = 0;  // Hkv key/value heads, H % Hkv == 0
  long long max_seq = 0;   // longest sequence (RoPE table, KV cache)
  double rope_theta = 10000.0;
  double init_std = 0.02;  // input projections
  double out_std = 0.02;   // output projection (scaled down with depth by the model)
};

/// What an attention pattern (the part between the projections: which keys a query sees and how
/// they are cached) is built with.
struct PatternDims {
  long long heads = 0;     // H
  long long kv_heads = 0;  // Hkv
  long long head_dim = 0;  // D
  bool causal = true;
};

}  // namespace reason::attention
