// reason/kernels/gemm.hpp — C = alpha * op(A) * op(B) + beta * C on row-major host views.
//
// Design rule: one GEMM entry point for every dense product on the host (linear layers,
// attention scores, the LM head), with BLAS semantics (the Level-3 BLAS of Dongarra, Du Croz,
// Hammarling & Duff 1990): op(X) is X or X^T, a 2-D View's leading dimension is its row stride
// (rows of a wider buffer are fine, the innermost stride must be 1), beta == 0 means C is
// write-only (NaN or garbage in C is ignored), alpha == 0 means A and B are not read.
// With REASON_WITH_CBLAS (the reason::blas component) the work goes to cblas_sgemm /
// cblas_dgemm; otherwise to detail::gemm_blocked, a Goto-style (Goto & van de Geijn 2008)
// cache-blocked loop nest that packs panels of op(A) and op(B) and threads over C tiles.
// Each C element is summed over k in one fixed order by one thread, so the fallback is
// bit-identical whatever REASON_NUM_THREADS is. It stays callable when CBLAS is on, so tests
// check both paths.
#pragma once

#include <algorithm>
#include <climits>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

#if defined(REASON_WITH_CBLAS)
#include <cblas.h>
#endif

namespace reason::kernels {

/// Whether a GEMM operand is used as stored (N) or transposed (T).
enum class Trans { N, T };

namespace detail {

inline const char* trans_name(Trans t) { return t == Trans::N ? "Trans::N" : "Trans::T"; }

/// Rows, columns of op(X) for a stored [r, c] matrix.
template <class T>
std::array<index_t, 2> op_shape(const View<T, 2>& x, Trans t) {
  return t == Trans::N ? std::array<index_t, 2>{x.shape[0], x.shape[1]}
                       : std::array<index_t, 2>{x.shape[1], x.shape[0]};
}

/// A BLAS leading dimension for `x`: its row stride, which must not let rows overlap.
template <class T>
index_t leading_dim(const View<T, 2>& x, const char* name) {
  expect_unit_inner_stride(x, name);
  if (x.shape[0] <= 1 || x.shape[1] == 0) return std::max<index_t>(x.shape[1], 1);  // the stride is never used
  if (x.stride[0] < x.shape[1]) [[unlikely]] {
    fail(name, ": row stride ", x.stride[0], " is smaller than the row length (shape ", shape_string(x.shape),
         "); rows must not overlap");
  }
  return x.stride[0];
}

/// Checks the shapes of a GEMM and returns {M, N, K}.
template <class T>
std::array<index_t, 3> gemm_shapes(Trans ta, Trans tb, const View<const T, 2>& A, const View<const T, 2>& B,
                                   const View<T, 2>& C) {
  const auto a = op_shape(A, ta), b = op_shape(B, tb);
  if (a[1] != b[0]) [[unlikely]] {
    fail("gemm: op(A) is ", shape_string(a), " (A ", shape_string(A.shape), ", ", trans_name(ta), ") but op(B) is ",
         shape_string(b), " (B ", shape_string(B.shape), ", ", trans_name(tb), "): inner dimensions ", a[1], " and ",
         b[0], " differ");
  }
  if (C.shape[0] != a[0] || C.shape[1] != b[1]) [[unlikely]] {
    fail("gemm: C: shape ", shape_string(C.shape), ", expected ", shape_string({a[0], b[1]}), " (op(A) ",
         shape_string(a), " times op(B) ", shape_string(b), ")");
  }
  return {a[0], b[1], a[1]};
}

/// C = beta * C, with beta == 0 writing zeros (NaN in C ignored).
template <class T>
void scale_c(T beta, const View<T, 2>& C) {
  for (index_t i = 0; i < C.shape[0]; ++i) {
    T* c = C.row(i);
    if (beta == T(0)) {
      std::fill(c, c + C.shape[1], T(0));
    } else if (beta != T(1)) {
      for (index_t j = 0; j < C.shape[1]; ++j) c[j] *= beta;
    }
  }
}

/// Tile sizes of the blocked fallback: an MC x KC block of op(A) and a KC x NC panel of
/// op(B) are packed; an MC x NC accumulator (64 KiB of float) stays in L2.
struct GemmTiles {
  static constexpr index_t mc = 64, nc = 256, kc = 128;
  static constexpr double serial_flops = 1 << 18;  // below this many multiply-adds, no threads
};

/// dst[r, c] = op(X)(r0 + r, c0 + c) for r < rows, c < cols; X stored row-major with row stride ld.
template <class T>
void pack(const T* x, index_t ld, Trans t, index_t r0, index_t c0, index_t rows, index_t cols, T* dst) {
  if (t == Trans::N) {
    for (index_t r = 0; r < rows; ++r) std::copy_n(x + (r0 + r) * ld + c0, cols, dst + r * cols);
  } else {
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) dst[r * cols + c] = x[(c0 + c) * ld + r0 + r];
  }
}

/// The cache-blocked, threaded GEMM used when there is no CBLAS (same contract as gemm).
template <class T>
void gemm_blocked(Trans ta, Trans tb, T alpha, View<const T, 2> A,  // A: op(A) is [M, K]
                  View<const T, 2> B,                                // B: op(B) is [K, N]
                  T beta, View<T, 2> C) {                            // C: [M, N]
  const auto mnk = gemm_shapes(ta, tb, A, B, C);
  const index_t M = mnk[0], N = mnk[1], K = mnk[2];
  const index_t lda = leading_dim(A, "gemm: A"), ldb = leading_dim(B, "gemm: B");
  (void)leading_dim(C, "gemm: C");
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {
    scale_c(beta, C);
    return;
  }
  using Tiles = GemmTiles;
  const index_t mt = (M + Tiles::mc - 1) / Tiles::mc, nt = (N + Tiles::nc - 1) / Tiles::nc, tiles = mt * nt;
  const bool serial = double(M) * double(N) * double(K) < Tiles::serial_flops;
  parallel_for(tiles, serial ? tiles : 1, [&](index_t t0, index_t t1) {
    std::vector<T> ap(Tiles::mc * Tiles::kc), bp(Tiles::kc * Tiles::nc), acc(Tiles::mc * Tiles::nc);
    for (index_t t = t0; t < t1; ++t) {
      const index_t i0 = (t / nt) * Tiles::mc, j0 = (t % nt) * Tiles::nc;
      const index_t mb = std::min(Tiles::mc, M - i0), nb = std::min(Tiles::nc, N - j0);
      std::fill(acc.begin(), acc.begin() + mb * nb, T(0));
      for (index_t k0 = 0; k0 < K; k0 += Tiles::kc) {
        const index_t kb = std::min(Tiles::kc, K - k0);
        pack(A.data, lda, ta, i0, k0, mb, kb, ap.data());  // ap: [mb, kb] = op(A)[i0:, k0:]
        pack(B.data, ldb, tb, k0, j0, kb, nb, bp.data());  // bp: [kb, nb] = op(B)[k0:, j0:]
        index_t i = 0;
        for (; i + 4 <= mb; i += 4) {  // four rows share each load of a bp row
          T* c0 = &acc[i * nb];
          T *c1 = c0 + nb, *c2 = c1 + nb, *c3 = c2 + nb;
          for (index_t k = 0; k < kb; ++k) {
            const T a0 = ap[i * kb + k], a1 = ap[(i + 1) * kb + k], a2 = ap[(i + 2) * kb + k],
                    a3 = ap[(i + 3) * kb + k];
            const T* b = &bp[k * nb];
            for (index_t j = 0; j < nb; ++j) {
              c0[j] += a0 * b[j];
              c1[j] += a1 * b[j];
              c2[j] += a2 * b[j];
              c3[j] += a3 * b[j];
            }
          }
        }
        for (; i < mb; ++i) {
          T* c = &acc[i * nb];
          for (index_t k = 0; k < kb; ++k) {
            const T a = ap[i * kb + k];
            const T* b = &bp[k * nb];
            for (index_t j = 0; j < nb; ++j) c[j] += a * b[j];
          }
        }
      }
      for (index_t i = 0; i < mb; ++i) {
        T* c = C.row(i0 + i) + j0;
        const T* s = &acc[i * nb];
        if (beta == T(0)) {
          for (index_t j = 0; j < nb; ++j) c[j] = alpha * s[j];
        } else {
          for (index_t j = 0; j < nb; ++j) c[j] = alpha * s[j] + beta * c[j];
        }
      }
    }
  });
}

#if defined(REASON_WITH_CBLAS)
/// One CBLAS call on raw row-major operands.
template <class T>
void blas_gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
               int ldc) {
  const auto ca = ta == Trans::N ? CblasNoTrans : CblasTrans, cb = tb == Trans::N ? CblasNoTrans : CblasTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ca, cb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, ca, cb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

/// Asks OpenBLAS (once) to run each call on the calling thread; reason's pool does the splitting.
inline void blas_single_threaded() {
#if defined(OPENBLAS_VERSION)
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
#endif
}
#endif

}  // namespace detail

/// C = alpha * op(A) * op(B) + beta * C. Views are row-major with unit inner stride; the
/// leading dimension is stride[0]. Through CBLAS when REASON_WITH_CBLAS is defined.
template <class T>
void gemm(Trans ta, Trans tb, T alpha, View<const T, 2> A,  // A: [M, K] (N) or [K, M] (T)
          View<const T, 2> B,                                // B: [K, N] (N) or [N, K] (T)
          T beta, View<T, 2> C) {                            // C: [M, N]
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "reason::kernels::gemm: T must be float or double");
#if defined(REASON_WITH_CBLAS)
  const auto mnk = detail::gemm_shapes(ta, tb, A, B, C);
  const index_t M = mnk[0], N = mnk[1], K = mnk[2];
  const index_t lda = detail::leading_dim(A, "gemm: A"), ldb = detail::leading_dim(B, "gemm: B"),
                ldc = detail::leading_dim(C, "gemm: C");
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {
    detail::scale_c(beta, C);
    return;
  }
  for (index_t d : {M, N, K, lda, ldb, ldc}) {
    REASON_CHECK(d <= INT_MAX, "gemm: dimension or leading dimension ", d, " exceeds the BLAS integer range (M ", M,
                 ", N ", N, ", K ", K, ")");
  }
  if (beta == T(0)) detail::scale_c(T(0), C);  // BLAS leaves beta == 0 to the library; make NaN-safety explicit
  // Threads: BLAS runs single-threaded and the pool splits C into row (or column) blocks, one
  // BLAS call each. OpenBLAS's own threads busy-wait between calls and steal the cores from
  // the rest of a training step; the pool's threads sleep. Each C element is still one
  // BLAS dot product over all of K, so the split does not change the result.
  detail::blas_single_threaded();
  const bool split_rows = M >= N;
  const index_t extent = split_rows ? M : N;
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const index_t grain = flops < 4e6 ? extent : std::max<index_t>(16, extent / 64);
  parallel_for(extent, grain, [&](index_t b0, index_t b1) {
    const T* a = A.data;
    const T* b = B.data;
    T* c = C.data;
    index_t m = M, n = N;
    if (split_rows) {
      a += ta == Trans::N ? b0 * lda : b0;  // rows of op(A)
      c += b0 * ldc;
      m = b1 - b0;
    } else {
      b += tb == Trans::N ? b0 : b0 * ldb;  // columns of op(B)
      c += b0;
      n = b1 - b0;
    }
    detail::blas_gemm(ta, tb, int(m), int(n), int(K), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  });
#else
  detail::gemm_blocked(ta, tb, alpha, A, B, beta, C);
#endif
}

}  // namespace reason::kernels
