// reason/precision/precision.hpp — which number types a model stores and computes in.
//
// A precision policy names the parameter (master) type and the compute type. The host backend
// computes in the parameter type: Fp32 is the default; Fp64 is the reference instantiation on
// which every backward is checked against finite differences. The CUDA backend adds bf16
// compute with fp32 master weights (and the quantization work fp16 with loss scaling).
#pragma once

#include <concepts>

namespace reason::precision {

/// fp32 weights, fp32 compute: the default.
struct Fp32 {
  using param_t = float;
  using compute_t = float;
  static constexpr const char* name = "fp32";
};

/// fp64 weights and compute: the reference for gradient checks.
struct Fp64 {
  using param_t = double;
  using compute_t = double;
  static constexpr const char* name = "fp64";
};

template <class P>
concept PrecisionPolicy = requires {
  typename P::param_t;
  typename P::compute_t;
  { P::name } -> std::convertible_to<const char*>;
} && std::floating_point<typename P::param_t>;

}  // namespace reason::precision
