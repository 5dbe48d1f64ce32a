// reason/linear/quantized.hpp — linear layers with quantized weights, as linear-layer policies.
//
//   model::Transformer<Attn, Ffn, norm::RMSNorm, linear::Quantized<quant::Int4Group<128>>>
//
//   linear::Quantized<Q>      inference: W is held as Q::Packed and every product is Q::matmul on
//                             the quantized operands (int8 x int8 -> int32, int4 unpacked inside
//                             the product, fp8 blocks promoted to fp32 every 128 elements of K).
//   linear::FakeQuantized<Q>  quantization-aware fine-tuning: the forward multiplies by
//                             dq(q(W)), exactly the weights Q's inference layer will use; the
//                             backward is the straight-through estimator (Bengio et al. 2013): Q
//                             takes its scales from W itself, so no weight is clipped and
//                             dW = dy^T x, dx = dy dq(q(W)) (quant/fake_quant.hpp).
// Both declare exactly linear::Dense's parameters ("<name>.weight" [out, in] and "<name>.bias",
// float), so a float checkpoint loads into either unchanged, and Q quantizes on load. Quantized<Q>
// marks its weights in the layout (ParamInfo::storage = Q::name), so a model's bytes can be counted.
//
// Quantize on load. Modules only ever see a parameter pointer, so Quantized<Q> quantizes the
// float weight the first time it multiplies with a parameter buffer and keeps the packed copy
// with the buffer's address and a fingerprint (the bits of 64 weights spread over the matrix).
// A different buffer, or the same one written over (a new checkpoint loaded into it), differs in
// address or fingerprint and is quantized again; an edit that changes none of the 64 sampled
// weights is not seen, so code that edits weights in place constructs a new model (inference
// layers are never trained: they have no backward). FakeQuantized<Q> quantizes on every forward,
// since training moves every weight every step.
// Activations stay float between layers; the embedding, the norms and the LM head, which are not
// linear-policy modules, stay float too (the usual choice in weight quantization).
// Calls on one model are not concurrent (as for the rest of model::Transformer).
#pragma once

#include <bit>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/linear.hpp"
#include "reason/quant/concepts.hpp"
#include "reason/quant/fake_quant.hpp"

namespace reason::linear {

namespace detail {

/// The float weight [out, in] and optional bias a quantized policy declares: linear::Dense's names.
struct FloatLinearParams {
  index_t in = 0, out = 0;
  bool bias = false;
  std::size_t weight = 0, bias_offset = 0;
  std::string name;

  FloatLinearParams() = default;
  FloatLinearParams(ParamLayout& layout, const std::string& n, index_t in_features, index_t out_features,
                    double init_std, bool with_bias)
      : in(in_features), out(out_features), bias(with_bias), name(n + ".weight") {
    weight = layout.add(n + ".weight", {out, in}, Init::normal, init_std);
    if (with_bias) bias_offset = layout.add(n + ".bias", {out}, Init::zeros);
  }
  [[nodiscard]] View<const float, 2> w(const float* p) const { return matrix_at(p, weight, out, in); }
  [[nodiscard]] View<const float, 1> b(const float* p) const {
    return bias ? vector_at(p, bias_offset, out) : View<const float, 1>{};
  }
};

/// 64 weights spread over the matrix, as bits: what tells one parameter buffer's contents from another's.
inline std::uint64_t weight_fingerprint(View<const float, 2> w) {
  const index_t n = w.shape[0] * w.shape[1];
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the sampled bit patterns
  for (index_t i = 0; i < 64 && n > 0; ++i) {
    const index_t k = (n - 1) * i / 63;
    h = (h ^ std::bit_cast<std::uint32_t>(w(k / w.shape[1], k % w.shape[1]))) * 1099511628211ull;
  }
  return h;
}

/// y += b on every row.
inline void add_bias(View<const float, 1> b, View<float, 2> y) {
  if (b.data == nullptr) return;
  for (index_t r = 0; r < y.shape[0]; ++r)
    for (index_t c = 0; c < y.shape[1]; ++c) y(r, c) += b(c);
}

}  // namespace detail

/// Inference with weights stored and multiplied as Q::Packed (quantized on load).
template <quant::Quantizer Q>
struct Quantized {
  static constexpr const char* name = Q::name;
  using quantizer = Q;

  template <class T>
  class Module {
    static_assert(std::is_same_v<T, float>, "linear::Quantized<Q>: quantized products take float activations "
                                            "(precision::Fp32)");

   public:
    Module() = default;
    Module(ParamLayout& layout, const std::string& name, index_t in, index_t out, double init_std, bool bias = false)
        : p_(layout, name, in, out, init_std, bias), cache_(std::make_shared<Cache>()) {
      layout.set_storage(p_.weight, Q::name);  // (what a model's byte count reads)
    }

    [[nodiscard]] index_t in_features() const { return p_.in; }
    [[nodiscard]] index_t out_features() const { return p_.out; }

    /// y [N, out] = x [N, in] dq(W)^T (+ b), on the quantized operands.
    void forward(const float* params, View<const float, 2> x, View<float, 2> y) const {
      Q::matmul(x, packed(params), y);
      detail::add_bias(p_.b(params), y);
    }
    /// Quantized layers are for inference; linear::FakeQuantized<Q> trains through the same weights.
    [[noreturn]] void backward(const float*, float*, View<const float, 2>, View<const float, 2>, View<float, 2>) const {
      fail("linear::Quantized<", Q::name, ">: '", p_.name, "' is an inference layer and has no backward; fine-tune "
           "with linear::FakeQuantized<", Q::name, "> and load the result into the quantized model");
    }

    /// The packed weights for `params` (quantized now if this buffer has not been seen, or changed).
    [[nodiscard]] const typename Q::Packed& packed(const float* params) const {
      REASON_CHECK(cache_ != nullptr, "linear::Quantized: a default-constructed module has no weights");
      const View<const float, 2> w = p_.w(params);
      const std::uint64_t fp = detail::weight_fingerprint(w);
      if (!cache_->packed || cache_->source != params || cache_->fingerprint != fp) {
        cache_->packed = std::make_unique<typename Q::Packed>(Q::quantize(w, p_.name));
        cache_->source = params;
        cache_->fingerprint = fp;
      }
      return *cache_->packed;
    }

   private:
    struct Cache {
      const float* source = nullptr;
      std::uint64_t fingerprint = 0;
      std::unique_ptr<typename Q::Packed> packed;
    };
    detail::FloatLinearParams p_;
    std::shared_ptr<Cache> cache_;  // (shared: a copied module is the same layer)
  };
};

/// Quantization-aware training: the forward sees dq(q(W)), the backward passes straight through.
template <quant::Quantizer Q>
struct FakeQuantized {
  static constexpr const char* name = Q::name;
  using quantizer = Q;

  template <class T>
  class Module {
    static_assert(std::is_same_v<T, float>, "linear::FakeQuantized<Q>: fake quantization runs in float "
                                            "(precision::Fp32)");

   public:
    Module() = default;
    Module(ParamLayout& layout, const std::string& name, index_t in, index_t out, double init_std, bool bias = false)
        : p_(layout, name, in, out, init_std, bias), wq_(std::make_shared<std::vector<float>>()) {}

    [[nodiscard]] index_t in_features() const { return p_.in; }
    [[nodiscard]] index_t out_features() const { return p_.out; }

    /// y = x dq(q(W))^T (+ b), dq(q(W)) taken afresh from params.
    void forward(const float* params, View<const float, 2> x, View<float, 2> y) const {
      kernels::linear_forward<float>(x, fake_quantized(params), p_.b(params), y);
    }
    /// dx = dy dq(q(W)) (overwrite; skipped when empty); dW += dy^T x (straight through); db += sum_rows dy.
    /// Uses the dq(q(W)) of the forward: the parameters must not change in between.
    void backward(const float* params, float* grads, View<const float, 2> x, View<const float, 2> dy,
                  View<float, 2> dx) const {
      REASON_CHECK(wq_->size() == static_cast<std::size_t>(p_.out * p_.in), "linear::FakeQuantized: '", p_.name,
                   "': backward before any forward");
      kernels::linear_backward<float>(x, make_view(static_cast<const float*>(wq_->data()), p_.out, p_.in), dy, dx,
                                      matrix_at(grads, p_.weight, p_.out, p_.in),
                                      p_.bias ? vector_at(grads, p_.bias_offset, p_.out) : View<float, 1>{});
    }

   private:
    View<const float, 2> fake_quantized(const float* params) const {
      wq_->resize(static_cast<std::size_t>(p_.out * p_.in));
      quant::fake_quant_weights<Q>(p_.w(params), make_view(wq_->data(), p_.out, p_.in), p_.name);
      return make_view(static_cast<const float*>(wq_->data()), p_.out, p_.in);
    }
    detail::FloatLinearParams p_;
    std::shared_ptr<std::vector<float>> wq_;  // dq(q(W)) of the last forward
  };
};

}  // namespace reason::linear
