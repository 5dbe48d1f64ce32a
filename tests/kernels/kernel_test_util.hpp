// tests/kernels/kernel_test_util.hpp — strided test matrices for the host kernel tests.
//
// A Mat is a rows x cols matrix stored in rows of width cols + pad, so with pad > 0 its View
// is a slice of a wider buffer (row stride > cols), as a kernel sees the rows of an activation
// arena. The padding holds a sentinel that kernels must never write; `padding_intact` checks
// it. `all()` spans the whole buffer, padding included, which is what gradcheck perturbs:
// the padding's numeric gradient is zero, so a kernel reading it shows up as a mismatch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "support/gradcheck.hpp"

namespace reason::test {

template <class T>
struct Mat {
  index_t rows = 0, cols = 0, ld = 0;
  std::vector<T> buf;
  T sentinel;

  Mat(index_t r, index_t c, index_t pad = 0, T sentinel_value = T(-777))
      : rows(r), cols(c), ld(c + pad), buf(static_cast<std::size_t>(std::max<index_t>(r * (c + pad), 1)), sentinel_value),
        sentinel(sentinel_value) {
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) (*this)(i, j) = T(0);
  }

  T& operator()(index_t i, index_t j) { return buf[static_cast<std::size_t>(i * ld + j)]; }
  T operator()(index_t i, index_t j) const { return buf[static_cast<std::size_t>(i * ld + j)]; }

  [[nodiscard]] View<T, 2> view() { return View<T, 2>(buf.data(), {rows, cols}, {ld, 1}); }
  [[nodiscard]] View<const T, 2> cview() const { return View<const T, 2>(buf.data(), {rows, cols}, {ld, 1}); }
  [[nodiscard]] std::span<T> all() { return buf; }

  /// Uniform values in [lo, hi) in the matrix (padding keeps its sentinel).
  Mat& randomize(Philox& rng, double lo = -1.0, double hi = 1.0) {
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) (*this)(i, j) = T(lo + (hi - lo) * rng.uniform_double());
    return *this;
  }
  Mat& fill(T value) {
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) (*this)(i, j) = value;
    return *this;
  }
  [[nodiscard]] bool padding_intact() const {
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = cols; j < ld; ++j)
        if (!((*this)(i, j) == sentinel)) return false;
    return true;
  }
  /// The same values as another type (padding too).
  template <class U>
  [[nodiscard]] Mat<U> as() const {
    Mat<U> m(rows, cols, ld - cols, U(sentinel));
    for (std::size_t i = 0; i < buf.size(); ++i) m.buf[i] = U(buf[i]);
    return m;
  }
};

/// A length-n vector with element stride `stride` (strided when stride > 1).
template <class T>
struct Vec {
  index_t n = 0, stride = 1;
  std::vector<T> buf;

  Vec(index_t len, index_t s = 1, T fill_value = T(0))
      : n(len), stride(s), buf(static_cast<std::size_t>(std::max<index_t>(len * s, 1)), fill_value) {}
  T& operator()(index_t i) { return buf[static_cast<std::size_t>(i * stride)]; }
  T operator()(index_t i) const { return buf[static_cast<std::size_t>(i * stride)]; }
  [[nodiscard]] View<T, 1> view() { return View<T, 1>(buf.data(), {n}, {stride}); }
  [[nodiscard]] View<const T, 1> cview() const { return View<const T, 1>(buf.data(), {n}, {stride}); }
  [[nodiscard]] std::span<T> all() { return buf; }
  Vec& randomize(Philox& rng, double lo = -1.0, double hi = 1.0) {
    for (index_t i = 0; i < n; ++i) (*this)(i) = T(lo + (hi - lo) * rng.uniform_double());
    return *this;
  }
  template <class U>
  [[nodiscard]] Vec<U> as() const {
    Vec<U> v(n, stride);
    for (std::size_t i = 0; i < buf.size(); ++i) v.buf[i] = U(buf[i]);
    return v;
  }
};

/// sum_ij out(i, j) * r(i, j): the scalar loss whose gradient w.r.t. out is r.
inline double dot(const Mat<double>& out, const Mat<double>& r) {
  double s = 0;
  for (index_t i = 0; i < out.rows; ++i)
    for (index_t j = 0; j < out.cols; ++j) s += out(i, j) * r(i, j);
  return s;
}

/// A buffer-shaped vector that is `after - before` element-wise (the accumulated part of a += gradient).
inline std::vector<double> diff(std::span<const double> after, std::span<const double> before) {
  std::vector<double> d(after.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
  return d;
}

/// The buffer of an overwritten gradient with its padding read as 0 (what gradcheck compares).
inline std::vector<double> grad_buffer(const Mat<double>& m) {
  std::vector<double> g(m.buf.size(), 0.0);
  for (index_t i = 0; i < m.rows; ++i)
    for (index_t j = 0; j < m.cols; ++j) g[static_cast<std::size_t>(i * m.ld + j)] = m(i, j);
  return g;
}

/// Largest |a - b| over the matrix part.
template <class T>
double max_abs_diff(const Mat<T>& a, const Mat<double>& b) {
  double m = 0;
  for (index_t i = 0; i < a.rows; ++i)
    for (index_t j = 0; j < a.cols; ++j) m = std::max(m, std::abs(double(a(i, j)) - b(i, j)));
  return m;
}

}  // namespace reason::test
