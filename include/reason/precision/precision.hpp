// reason/precision/precision.hpp — which number types a model stores and computes in.
//
// A precision policy names the parameter (master) type and the compute type. The host backend
// computes in the parameter type: Fp32 is the default; Fp64 is the reference instantiation on
// which every backward is checked against finite differences. The CUDA backend
// (gpu::DenseTransformer) also takes Bf16 and Fp16: fp32 master weights, gradients and optimizer
// state; weights cast to the 16-bit type for each forward, activations stored in it, every GEMM
// and reduction accumulating in fp32 (Micikevicius et al., "Mixed Precision Training", ICLR 2018).
// bf16 has fp32's exponent range and needs no loss scaling; fp16's smallest normal is 2^-14, so
// small activation gradients underflow unless the loss is scaled up first, and the scale must back
// off when a scaled gradient overflows 65504: `loss_scaling` asks the trainer for dynamic loss
// scaling (train/loss_scale.hpp).
#pragma once

#include <concepts>

#include "reason/core/bf16.hpp"
#include "reason/core/fp16.hpp"

namespace reason::precision {

/// fp32 weights, fp32 compute: the default.
struct Fp32 {
  using param_t = float;
  using compute_t = float;
  static constexpr const char* name = "fp32";
  static constexpr bool loss_scaling = false;
};

/// fp64 weights and compute: the reference for gradient checks.
struct Fp64 {
  using param_t = double;
  using compute_t = double;
  static constexpr const char* name = "fp64";
  static constexpr bool loss_scaling = false;
};

/// fp32 master weights, bf16 compute with fp32 accumulation: the CUDA backend's training precision.
struct Bf16 {
  using param_t = float;
  using compute_t = reason::bf16;
  static constexpr const char* name = "bf16";
  static constexpr bool loss_scaling = false;
};

/// fp32 master weights, fp16 compute with fp32 accumulation, dynamic loss scaling in the trainer.
struct Fp16 {
  using param_t = float;
  using compute_t = reason::fp16;
  static constexpr const char* name = "fp16";
  static constexpr bool loss_scaling = true;
};

template <class P>
concept PrecisionPolicy = requires {
  typename P::param_t;
  typename P::compute_t;
  { P::name } -> std::convertible_to<const char*>;
  { P::loss_scaling } -> std::convertible_to<bool>;
} && std::floating_point<typename P::param_t>;

}  // namespace reason::precision
