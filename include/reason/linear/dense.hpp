// reason/linear/dense.hpp — the float linear layer: y = x W^T (+ b).
//
// The linear policy is the seam where quantized layers will slot in (`Linear<quant::Int4Group<128>>`):
// attention and feed-forward modules hold their projections as `Linear::Module<T>` and never
// touch a weight matrix directly. Weights are [out, in] (PyTorch's nn.Linear layout), so a
// row of W is one output feature and a checkpoint maps one to one.
#pragma once

#include <string>

#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/linear.hpp"

namespace reason::linear {

/// Dense float weights, with an optional bias.
struct Dense {
  static constexpr const char* name = "dense";

  template <class T>
  class Module {
   public:
    Module() = default;
    /// Declares "<name>.weight" [out, in] (normal, std `init_std`) and, if `bias`, "<name>.bias" [out].
    Module(ParamLayout& layout, const std::string& name, index_t in, index_t out, double init_std, bool bias = false)
        : in_(in), out_(out), bias_(bias) {
      weight_ = layout.add(name + ".weight", {out, in}, Init::normal, init_std);
      if (bias) bias_offset_ = layout.add(name + ".bias", {out}, Init::zeros);
    }

    [[nodiscard]] index_t in_features() const { return in_; }
    [[nodiscard]] index_t out_features() const { return out_; }

    /// y [N, out] = x [N, in] W^T (+ b).
    void forward(const T* params, View<const T, 2> x, View<T, 2> y) const {
      kernels::linear_forward<T>(x, weight(params), bias(params), y);
    }
    /// dx [N, in] = dy W (overwrite; skipped when empty); dW += dy^T x; db += sum_rows dy.
    void backward(const T* params, T* grads, View<const T, 2> x, View<const T, 2> dy, View<T, 2> dx) const {
      kernels::linear_backward<T>(x, weight(params), dy, dx, matrix_at(grads, weight_, out_, in_),
                                  bias_ ? vector_at(grads, bias_offset_, out_) : View<T, 1>{});
    }

    /// The weight [out, in] inside `params`, for a module that folds it into another product
    /// (MLA's absorbed decode). A quantized policy need not offer it.
    [[nodiscard]] View<const T, 2> weight(const T* p) const { return matrix_at(p, weight_, out_, in_); }

   private:
    View<const T, 1> bias(const T* p) const { return bias_ ? vector_at(p, bias_offset_, out_) : View<const T, 1>{}; }

    index_t in_ = 0, out_ = 0;
    bool bias_ = false;
    std::size_t weight_ = 0, bias_offset_ = 0;
  };
};

}  // namespace reason::linear
