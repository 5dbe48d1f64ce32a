// reason/norm/rmsnorm.hpp — the RMSNorm policy: y = x / sqrt(mean(x^2) + eps) * g.
//
// Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019; the norm of
// Llama and DeepSeek-V3. The module owns one gain vector (initialised to ones) and saves
// the per-row reciprocal RMS for its backward.
#pragma once

#include <string>

#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/rmsnorm.hpp"

namespace reason::norm {

/// Root-mean-square normalisation with a learned gain.
struct RMSNorm {
  static constexpr const char* name = "rmsnorm";

  template <class T>
  class Module {
   public:
    Module() = default;
    Module(ParamLayout& layout, const std::string& name, index_t width, double eps)
        : width_(width), eps_(static_cast<T>(eps)), weight_(layout.add(name + ".weight", {width}, Init::ones)) {}

    /// y [N, C] from x [N, C]; rstd [N] saved for backward.
    void forward(const T* params, View<const T, 2> x, View<T, 2> y, View<T, 1> rstd) const {
      kernels::rmsnorm_forward<T>(x, vector_at(params, weight_, width_), eps_, y, rstd);
    }
    /// dx [N, C] = d(loss)/dx (overwrite); d(gain) accumulated into grads.
    void backward(const T* params, T* grads, View<const T, 2> x, View<const T, 1> rstd, View<const T, 2> dy,
                  View<T, 2> dx) const {
      kernels::rmsnorm_backward<T>(x, vector_at(params, weight_, width_), rstd, dy, dx, vector_at(grads, weight_, width_));
    }

   private:
    index_t width_ = 0;
    T eps_ = T(0);
    std::size_t weight_ = 0;
  };
};

}  // namespace reason::norm
