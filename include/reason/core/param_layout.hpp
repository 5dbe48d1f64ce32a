// reason/core/param_layout.hpp — named tensors laid out in one flat buffer.
//
// Design rule (llm.c): all parameters of a model live in one contiguous buffer, and so do
// their gradients and each optimizer state slot, with the same layout. Modules declare
// their tensors once, in forward order, and keep offsets; the optimizer, gradient clipping,
// an all-reduce and a checkpoint each see one span. Names follow the Hugging Face layout
// ("layers.3.attn.qkv.weight") so checkpoints read like any safetensors model.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"

namespace reason {

/// How a parameter tensor starts.
enum class Init { zeros, ones, normal };

struct ParamInfo {
  std::string name;
  std::vector<index_t> shape;
  std::size_t offset = 0;  // in elements, into the flat buffer
  std::size_t numel = 0;
  Init init = Init::zeros;
  double init_std = 0;     // for Init::normal
  bool decay = false;      // weight decay applies (matrices), not to norms and biases
  bool trainable = true;   // false: a buffer kept with the weights but set by its module, never by an
                           // optimizer (its gradient stays zero), e.g. the MoE balancing bias
  std::string storage;     // "": used as stored; else the format its module multiplies it in (a
                           // linear::Quantized layer's quantizer name, e.g. "int4_g128_asym")
};

class ParamLayout {
 public:
  /// Declares a tensor; returns its offset. Names must be unique.
  std::size_t add(std::string name, std::vector<index_t> shape, Init init, double init_std = 0) {
    return add_tensor(std::move(name), std::move(shape), init, init_std, true);
  }
  /// Declares a non-trainable buffer (ParamInfo::trainable false): saved and loaded with the
  /// parameters, skipped by the optimizers.
  std::size_t add_buffer(std::string name, std::vector<index_t> shape, Init init) {
    return add_tensor(std::move(name), std::move(shape), init, 0, false);
  }

  /// Records that the tensor at `offset` is used in another storage format (ParamInfo::storage).
  void set_storage(std::size_t offset, std::string storage) {
    for (auto& p : params_)
      if (p.offset == offset && p.numel > 0) {
        p.storage = std::move(storage);
        return;
      }
    fail("ParamLayout::set_storage: no tensor starts at offset ", offset);
  }

  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] const std::vector<ParamInfo>& params() const { return params_; }

  [[nodiscard]] const ParamInfo& find(std::string_view name) const {
    for (const auto& p : params_)
      if (p.name == name) return p;
    fail("ParamLayout: no parameter named '", name, "'");
  }

  /// The elements [first, first + count) of the flat buffer as a layout of their own: each tensor
  /// they overlap, cut to the overlap, as a 1-D tensor "name[a:b]" at its offset minus `first`,
  /// keeping its decay and trainable flags. What a ZeRO rank's optimizer steps over: an
  /// element-wise optimizer (AdamW, SGD) given this layout and the slice of every buffer updates
  /// exactly those elements as the whole layout's step would (parallel/zero.hpp).
  [[nodiscard]] ParamLayout slice(std::size_t first, std::size_t count) const {
    REASON_CHECK(first <= size_ && count <= size_ - first, "ParamLayout::slice: [", first, ", ", first + count,
                 ") is outside the layout of ", size_, " elements");
    ParamLayout out;
    out.size_ = count;
    const std::size_t last = first + count;
    for (const ParamInfo& p : params_) {
      const std::size_t lo = std::max(first, p.offset), hi = std::min(last, p.offset + p.numel);
      if (lo >= hi) continue;
      ParamInfo q = p;
      q.name = p.name + "[" + std::to_string(lo - p.offset) + ":" + std::to_string(hi - p.offset) + "]";
      q.shape = {static_cast<index_t>(hi - lo)};
      q.offset = lo - first;
      q.numel = hi - lo;
      out.params_.push_back(std::move(q));
    }
    return out;
  }

  /// Initializes every tensor from its own Philox stream (stream = tensor index), so a
  /// tensor's initial values depend only on the seed and its place, not on the others' sizes.
  template <class T>
  void initialize(std::span<T> flat, std::uint64_t seed) const {
    REASON_CHECK(flat.size() == size_, "ParamLayout::initialize: buffer has ", flat.size(), " elements, expected ", size_);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      auto out = flat.subspan(p.offset, p.numel);
      switch (p.init) {
        case Init::zeros:
          for (auto& x : out) x = T(0);
          break;
        case Init::ones:
          for (auto& x : out) x = T(1);
          break;
        case Init::normal: {
          Philox rng(seed, i);
          for (auto& x : out) x = static_cast<T>(p.init_std * rng.normal());
          break;
        }
      }
    }
  }

 private:
  std::size_t add_tensor(std::string name, std::vector<index_t> shape, Init init, double init_std, bool trainable) {
    for (const auto& p : params_) REASON_CHECK(p.name != name, "ParamLayout: parameter '", name, "' declared twice");
    std::size_t n = 1;
    for (index_t s : shape) {
      REASON_CHECK(s > 0, "ParamLayout: parameter '", name, "' has shape ", shape_string(shape), "; every dimension must be > 0");
      n *= static_cast<std::size_t>(s);
    }
    const bool decay = trainable && shape.size() >= 2;
    params_.push_back({std::move(name), std::move(shape), size_, n, init, init_std, decay, trainable, {}});
    size_ += n;
    return params_.back().offset;
  }

  std::vector<ParamInfo> params_;
  std::size_t size_ = 0;
};

/// A 2-D view of the tensor at `offset` in `flat` with shape [rows, cols].
template <class T>
[[nodiscard]] View<T, 2> matrix_at(T* flat, std::size_t offset, index_t rows, index_t cols) {
  return make_view(flat + offset, rows, cols);
}
/// A 1-D view of the tensor at `offset` in `flat` with `n` elements.
template <class T>
[[nodiscard]] View<T, 1> vector_at(T* flat, std::size_t offset, index_t n) {
  return make_view(flat + offset, n);
}

}  // namespace reason
