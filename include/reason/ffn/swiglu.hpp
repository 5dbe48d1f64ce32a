// reason/ffn/swiglu.hpp — the SwiGLU feed-forward policy: y = W_down (silu(x W_gate^T) * (x W_up^T)).
//
// Shazeer, "GLU Variants Improve Transformer", 2020; the FFN of Llama and of DeepSeek-V3's
// dense layers and experts. Gate and up projections are one fused linear "gate_up" of
// [2F, C]: one GEMM gives [N, 2F] whose column halves are g and u.
#pragma once

#include <string>

#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/swiglu.hpp"

namespace reason::ffn {

/// The run-time sizes a feed-forward module is built with.
struct Dims {
  long long width = 0;   // C
  long long hidden = 0;  // F
  double init_std = 0.02;
  double out_std = 0.02;
  long long expert_hidden = 0;  // an MoE layer's per-expert F (Config::moe_intermediate_size)
};

/// Gated feed-forward with a SiLU gate.
struct SwiGLU {
  static constexpr const char* name = "swiglu";

  template <class T, class Linear>
  class Module {
   public:
    struct Saved {
      View<T, 2> gate_up;  // [N, 2F]: g = columns [0, F), u = columns [F, 2F)
      View<T, 2> act;      // [N, F] silu(g) * u
    };
    struct Scratch {
      View<T, 2> dgate_up;  // [N, 2F]
      View<T, 2> dact;      // [N, F]
    };

    Module() = default;
    Module(ParamLayout& layout, const std::string& name, const Dims& d) : hidden_(d.hidden) {
      gate_up_ = typename Linear::template Module<T>(layout, name + ".gate_up", d.width, 2 * d.hidden, d.init_std);
      down_ = typename Linear::template Module<T>(layout, name + ".down", d.hidden, d.width, d.out_std);
    }

    Saved carve(Arena& arena, index_t rows) const {
      return {arena.view<T>("ffn.gate_up", rows, 2 * hidden_), arena.view<T>("ffn.act", rows, hidden_)};
    }
    Scratch carve_scratch(Arena& arena, index_t rows) const {
      return {arena.view<T>("ffn.dgate_up", rows, 2 * hidden_), arena.view<T>("ffn.dact", rows, hidden_)};
    }

    /// y [N, C] from x [N, C].
    void forward(const T* params, View<const T, 2> x, const Saved& s, View<T, 2> y) const {
      gate_up_.forward(params, x, s.gate_up);
      kernels::swiglu_forward<T>(half(s.gate_up, 0), half(s.gate_up, 1), s.act);
      down_.forward(params, s.act, y);
    }
    /// dx [N, C] (overwrite) from dy [N, C]; parameter gradients accumulate.
    void backward(const T* params, T* grads, View<const T, 2> x, const Saved& s, const Scratch& scratch,
                  View<const T, 2> dy, View<T, 2> dx) const {
      down_.backward(params, grads, s.act, dy, scratch.dact);
      kernels::swiglu_backward<T>(half(s.gate_up, 0), half(s.gate_up, 1), scratch.dact, half(scratch.dgate_up, 0),
                                  half(scratch.dgate_up, 1));
      gate_up_.backward(params, grads, x, scratch.dgate_up, dx);
    }

   private:
    /// Column half `which` (0 = gate, 1 = up) of a [N, 2F] buffer.
    View<T, 2> half(View<T, 2> buf, int which) const { return buf.slice(1, which * hidden_, (which + 1) * hidden_); }

    index_t hidden_ = 0;
    typename Linear::template Module<T> gate_up_, down_;
  };
};

}  // namespace reason::ffn
