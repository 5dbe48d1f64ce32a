// reason/core/view.hpp — a strided, non-owning view of a rank-R tensor.
//
// Design rule: kernels and modules never own memory; they see Views into flat buffers
// (parameters, gradients, the activation arena). A View is a pointer, a shape and strides
// in elements, like a row of llm.c's "float* qkvw; // (L, 3*C, C)" made checkable.
// Shapes are checked at the boundary with `expect_shape`, whose error names the tensor, the
// shape it has and the shape it should have.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "reason/core/error.hpp"

namespace reason {

using index_t = std::int64_t;

template <class T, int Rank>
struct View {
  static_assert(Rank >= 1, "reason::View: rank must be at least 1");
  using value_type = T;
  using shape_type = std::array<index_t, Rank>;

  T* data = nullptr;
  shape_type shape{};
  shape_type stride{};  // in elements, not bytes

  static constexpr int rank = Rank;

  constexpr View() = default;
  constexpr View(T* d, shape_type s, shape_type st) : data(d), shape(s), stride(st) {}
  /// Contiguous row-major view of `s`.
  constexpr View(T* d, shape_type s) : data(d), shape(s), stride(row_major_strides(s)) {}

  /// A View<T> converts to View<const T>.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr View(const View<U, Rank>& o) : data(o.data), shape(o.shape), stride(o.stride) {}

  static constexpr shape_type row_major_strides(const shape_type& s) {
    shape_type st{};
    index_t acc = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      st[d] = acc;
      acc *= s[d];
    }
    return st;
  }

  [[nodiscard]] constexpr index_t size(int d) const { return shape[d]; }
  [[nodiscard]] constexpr index_t numel() const {
    index_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  [[nodiscard]] constexpr bool empty() const { return data == nullptr || numel() == 0; }
  [[nodiscard]] constexpr bool is_contiguous() const { return stride == row_major_strides(shape); }

  template <class... I>
    requires(sizeof...(I) == Rank)
  [[nodiscard]] constexpr T& operator()(I... idx) const {
    const std::array<index_t, Rank> i{static_cast<index_t>(idx)...};
    index_t off = 0;
    for (int d = 0; d < Rank; ++d) off += i[d] * stride[d];
    return data[off];
  }

  /// Pointer to the start of the innermost row at the leading indices `idx`.
  template <class... I>
    requires(sizeof...(I) == Rank - 1)
  [[nodiscard]] constexpr T* row(I... idx) const {
    const std::array<index_t, Rank - 1> i{static_cast<index_t>(idx)...};
    index_t off = 0;
    for (int d = 0; d < Rank - 1; ++d) off += i[d] * stride[d];
    return data + off;
  }

  /// The sub-view with the leading index fixed (rank drops by one).
  [[nodiscard]] constexpr View<T, Rank - 1> operator[](index_t i) const
    requires(Rank > 1)
  {
    View<T, Rank - 1> v;
    v.data = data + i * stride[0];
    for (int d = 1; d < Rank; ++d) {
      v.shape[d - 1] = shape[d];
      v.stride[d - 1] = stride[d];
    }
    return v;
  }

  /// Elements [begin, end) along dimension `d`.
  [[nodiscard]] constexpr View slice(int d, index_t begin, index_t end) const {
    View v = *this;
    v.data = data + begin * stride[d];
    v.shape[d] = end - begin;
    return v;
  }
};

/// Contiguous row-major view over `data` with shape `dims...`.
template <class T, class... I>
[[nodiscard]] constexpr View<T, static_cast<int>(sizeof...(I))> make_view(T* data, I... dims) {
  return View<T, static_cast<int>(sizeof...(I))>(data, {static_cast<index_t>(dims)...});
}

/// Throws unless `v` has exactly `expected` shape; the message names `name`.
template <class T, int Rank>
void expect_shape(const View<T, Rank>& v, const char* name, const typename View<T, Rank>::shape_type& expected) {
  if (v.shape != expected) [[unlikely]] {
    fail(name, ": shape ", shape_string(v.shape), ", expected ", shape_string(expected));
  }
}

/// Throws unless the innermost dimension of `v` is unit-stride (what BLAS and the kernels' inner loops need).
template <class T, int Rank>
void expect_unit_inner_stride(const View<T, Rank>& v, const char* name) {
  if (v.shape[Rank - 1] > 1 && v.stride[Rank - 1] != 1) [[unlikely]] {
    fail(name, ": innermost stride ", v.stride[Rank - 1], ", expected 1 (shape ", shape_string(v.shape), ")");
  }
}

/// Checks a kernel argument in one call: the shape, non-null data when it has elements, and a
/// unit innermost stride. Messages read "<fn>: <name>: shape [..], expected [..]".
template <class T, int Rank>
void expect_view(const View<T, Rank>& v, const char* fn, const char* name,
                 const typename View<T, Rank>::shape_type& expected) {
  if (v.shape != expected) [[unlikely]] {
    fail(fn, ": ", name, ": shape ", shape_string(v.shape), ", expected ", shape_string(expected));
  }
  if (v.data == nullptr && v.numel() > 0) [[unlikely]] fail(fn, ": ", name, " is empty (data is null)");
  if (Rank > 1 && v.shape[Rank - 1] > 1 && v.stride[Rank - 1] != 1) [[unlikely]] {
    fail(fn, ": ", name, ": innermost stride ", v.stride[Rank - 1], ", expected 1 (shape ", shape_string(v.shape), ")");
  }
}

}  // namespace reason
