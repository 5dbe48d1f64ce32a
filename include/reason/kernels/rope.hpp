// reason/kernels/rope.hpp — rotary position embedding, forward and backward.
//
// Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
// Embedding" (2021). A head vector x of width D is split into D/2 planes; plane i rotates by the
// angle pos * theta^(-2i/D). The pairing is the GPT-NeoX / Llama "rotate_half" one: plane i is
// the coordinate pair (i, i + D/2), so checkpoints in the Hugging Face layout load unchanged.
//
// Design rule: a rotation is orthogonal, so the backward is the transpose — the inverse
// rotation — applied in place to the gradient; no activation is saved. The angles are computed
// once, in double, into a RopeTable and rounded to T, so every call (training, prefill, one-token
// decoding) rotates a given position by bit-identical cos/sin. Positions are checked against the
// table before anything is written: an out-of-range position leaves x untouched.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

/// cos and sin of pos * theta^(-2i/D) for pos in [0, max_positions), i in [0, D/2).
template <class T>
class RopeTable {
 public:
  RopeTable(index_t max_positions, int head_dim, double theta = 10000.0)
      : max_positions_(max_positions), head_dim_(head_dim) {
    REASON_CHECK(max_positions >= 0, "RopeTable: max_positions ", max_positions, " is negative");
    REASON_CHECK(head_dim > 0 && head_dim % 2 == 0, "RopeTable: head_dim ", head_dim,
                 " must be positive and even (rotate_half pairs i with i + head_dim/2)");
    REASON_CHECK(theta > 0 && std::isfinite(theta), "RopeTable: theta ", theta, " must be positive and finite");
    const int half = head_dim / 2;
    cos_.resize(static_cast<std::size_t>(max_positions) * half);
    sin_.resize(cos_.size());
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * i / head_dim);
      for (index_t p = 0; p < max_positions; ++p) {
        const double angle = static_cast<double>(p) * inv_freq;
        cos_[p * half + i] = static_cast<T>(std::cos(angle));
        sin_[p * half + i] = static_cast<T>(std::sin(angle));
      }
    }
  }

  [[nodiscard]] index_t max_positions() const { return max_positions_; }
  [[nodiscard]] int head_dim() const { return head_dim_; }
  [[nodiscard]] T cos(index_t pos, int i) const { return cos_[pos * (head_dim_ / 2) + i]; }
  [[nodiscard]] T sin(index_t pos, int i) const { return sin_[pos * (head_dim_ / 2) + i]; }
  /// The D/2 cosines (sines) of one position.
  [[nodiscard]] const T* cos_row(index_t pos) const { return cos_.data() + pos * (head_dim_ / 2); }
  [[nodiscard]] const T* sin_row(index_t pos) const { return sin_.data() + pos * (head_dim_ / 2); }

 private:
  index_t max_positions_;
  int head_dim_;
  std::vector<T> cos_, sin_;  // [max_positions, head_dim/2]
};

namespace detail {

template <class T>
void rope_check(const char* fn, const RopeTable<T>& table, const View<const std::int32_t, 1>& pos,
                const View<T, 3>& x, const char* xname) {
  if (x.shape[0] != pos.shape[0] || x.shape[2] != table.head_dim()) [[unlikely]] {
    fail(fn, ": ", xname, ": shape ", shape_string(x.shape), ", expected ",
         shape_string({pos.shape[0], x.shape[1], table.head_dim()}), " (N from pos, D from the table)");
  }
  REASON_CHECK(pos.data != nullptr || pos.shape[0] == 0, fn, ": pos is empty (data is null)");
  REASON_CHECK(x.data != nullptr || x.numel() == 0, fn, ": ", xname, " is empty (data is null)");
  for (index_t n = 0; n < pos.shape[0]; ++n) {
    const std::int32_t p = pos(n);
    if (p < 0 || p >= table.max_positions()) [[unlikely]] {
      fail(fn, ": pos[", n, "] = ", p, " is out of range [0, ", table.max_positions(), ") of the RopeTable");
    }
  }
}

// sign = +1 rotates by +angle (forward), -1 by -angle (backward, the transpose).
template <class T>
void rope_apply(const RopeTable<T>& table, const View<const std::int32_t, 1>& pos, const View<T, 3>& x, T sign) {
  const index_t N = x.shape[0], H = x.shape[1];
  const int half = table.head_dim() / 2;
  const index_t s2 = x.stride[2];
  parallel_for(N, std::max<index_t>(1, 4096 / std::max<index_t>(1, H * half)), [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) {
      const T* c = table.cos_row(pos(n));
      const T* s = table.sin_row(pos(n));
      for (index_t h = 0; h < H; ++h) {
        T* r = x.row(n, h);
        for (int i = 0; i < half; ++i) {
          const T a = r[i * s2], b = r[(i + half) * s2];
          const T si = sign * s[i];
          r[i * s2] = a * c[i] - b * si;
          r[(i + half) * s2] = a * si + b * c[i];
        }
      }
    }
  });
}

}  // namespace detail

/// Rotates x in place: x[n, h, :] by the angles of position pos[n].
///   pos [N] positions in [0, table.max_positions()); x [N, H, D], D == table.head_dim(), any strides.
template <class T>
void rope_forward(const RopeTable<T>& table, View<const std::int32_t, 1> pos, View<T, 3> x) {
  detail::rope_check("rope_forward", table, pos, x, "x");
  detail::rope_apply(table, pos, x, T(1));
}

/// The backward of rope_forward, in place: dx <- R(pos)^T dx, the inverse rotation.
///   pos [N]; dx [N, H, D] (incoming gradient of the rotated x, overwritten by the gradient of x).
template <class T>
void rope_backward(const RopeTable<T>& table, View<const std::int32_t, 1> pos, View<T, 3> dx) {
  detail::rope_check("rope_backward", table, pos, dx, "dx");
  detail::rope_apply(table, pos, dx, T(-1));
}

}  // namespace reason::kernels
