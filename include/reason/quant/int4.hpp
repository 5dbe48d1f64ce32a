// reason/quant/int4.hpp — INT4 weight-only, group-wise quantization and its product with float activations.
//
// The layout of GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers", ICLR 2023) and AWQ (Lin et al., "AWQ: Activation-aware Weight
// Quantization for LLM Compression and Acceleration", MLSys 2024) without their packing into
// int32 words: W [out, in] is cut along `in` into groups of G = 32, 64 or 128 consecutive weights
// of one row, and each group has its own grid (quant/grid.hpp) over 4-bit unsigned codes u:
//   w ≈ s (u - z),
//   asymmetric: u in [0, 15], the group's [min(lo, 0), max(hi, 0)] spread over 15 steps,
//               s = (hi - lo) / 15, z = -round(lo / s) in [0, 15], stored per group;
//   symmetric:  u = q + 8 with q in [-7, 7], s = absmax / 7, z = 8 for every group (not stored).
// Storage (Int4Matrix):
//   codes        [out, in / 2] bytes; byte j of row r holds column 2j in its low nibble (bits 0-3)
//                and column 2j + 1 in its high nibble (bits 4-7):
//                  u(r, c) = (codes[r * in / 2 + c / 2] >> (4 * (c % 2))) & 0xF
//                (GPTQ's order inside its int32 words too: the lower input index in the lower bits);
//   scales       [out, in / G] fp32;
//   zero_points  [out, in / G] one byte each (values 0-15, not packed), asymmetric only.
// `in` must be a multiple of G (as in GPTQ and AWQ).
//
// Product y [M, out] = x [M, in] W^T with float x:
//   y[m, n] = sum_g s[n, g] * sum_{k in g} x[m, k] (u[n, k] - z[n, g]).
// For each weight row n and group g, the group's bytes are unpacked right where they are used into
// G floats (u - z: small integers, exact; low nibbles then high nibbles), dotted with the group's
// slice of each of 16 x rows, and each partial sum is scaled by s[n, g] and added in group order.
// No dequantized W is ever formed. To match the unpacked order, each tile's 16 x rows are copied
// once with every group's even columns first, then its odd ones. Each dot product sums in 8 fixed
// lanes (so it vectorises without reassociating), so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"
#include "reason/quant/checks.hpp"
#include "reason/quant/concepts.hpp"
#include "reason/quant/grid.hpp"

namespace reason::quant {

/// Two 4-bit codes in one byte: `low` (the even column) in bits 0-3, `high` (the odd column) in bits 4-7.
[[nodiscard]] constexpr std::uint8_t pack_int4(std::uint8_t low, std::uint8_t high) {
  return static_cast<std::uint8_t>((low & 0xF) | ((high & 0xF) << 4));
}
/// The 4-bit code of column c from the byte holding columns c & ~1 and c | 1.
[[nodiscard]] constexpr std::uint8_t unpack_int4(std::uint8_t byte, index_t c) {
  return static_cast<std::uint8_t>((byte >> (4 * (c & 1))) & 0xF);
}

/// Group-wise INT4 weights [rows = out, cols = in] with groups of Group columns.
template <index_t Group>
struct Int4Matrix {
  static constexpr index_t group = Group;
  static constexpr std::uint8_t symmetric_zero_point = 8;

  index_t rows = 0, cols = 0;
  std::vector<std::uint8_t> codes;        // [rows, cols / 2], two codes per byte (see the header comment)
  std::vector<float> scales;              // [rows, cols / Group]
  std::vector<std::uint8_t> zero_points;  // [rows, cols / Group], 0-15; empty when symmetric (z = 8)

  [[nodiscard]] index_t groups_per_row() const { return cols / Group; }
  [[nodiscard]] bool symmetric() const { return zero_points.empty(); }
  /// The 4-bit code of weight [r, c].
  [[nodiscard]] std::uint8_t code(index_t r, index_t c) const {
    return unpack_int4(codes[static_cast<std::size_t>(r * (cols / 2) + c / 2)], c);
  }
  [[nodiscard]] float scale(index_t r, index_t g) const {
    return scales[static_cast<std::size_t>(r * groups_per_row() + g)];
  }
  [[nodiscard]] std::uint8_t zero_point(index_t r, index_t g) const {
    return symmetric() ? symmetric_zero_point : zero_points[static_cast<std::size_t>(r * groups_per_row() + g)];
  }
  /// Every byte stored: codes, scales, zero points.
  [[nodiscard]] std::size_t bytes() const { return codes.size() + 4 * scales.size() + zero_points.size(); }
};

/// Quantizes weights w [out, in] to group-wise INT4; `in` must be a multiple of Group. Inf or NaN
/// is an error naming `name` and the element.
template <index_t Group>
[[nodiscard]] Int4Matrix<Group> quantize_int4(View<const float, 2> w, Symmetry symmetry, std::string_view name = "weight") {
  static_assert(Group > 0 && Group % 8 == 0, "quantize_int4: the group size must be a positive multiple of 8");
  constexpr std::string_view fn = "quantize_int4";
  detail::expect_matrix(w, fn, name);
  Int4Matrix<Group> q;
  q.rows = w.shape[0];
  q.cols = w.shape[1];
  if (q.cols % Group != 0) [[unlikely]] {
    fail(fn, ": ", name, ": shape ", shape_string(w.shape), ": in features ", q.cols,
         " is not a multiple of the group size ", Group);
  }
  const index_t groups = q.cols / Group;
  const auto n_groups = static_cast<std::size_t>(q.rows * groups);
  q.codes.assign(static_cast<std::size_t>(q.rows * (q.cols / 2)), 0);
  q.scales.resize(n_groups);
  if (symmetry == Symmetry::asymmetric) q.zero_points.resize(n_groups);
  const index_t grain = std::max<index_t>(1, 16384 / std::max<index_t>(q.cols, 1));
  parallel_for(q.rows, grain, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const float* wr = w.row(r);
      std::uint8_t* cr = q.codes.data() + r * (q.cols / 2);
      for (index_t g = 0; g < groups; ++g) {
        const detail::MinMax m = detail::row_min_max(w, r, g * Group, (g + 1) * Group, fn, name);
        IntGrid grid;
        if (symmetry == Symmetry::symmetric) {
          grid = IntGrid::symmetric(std::max(-m.lo, m.hi), 7);  // q in [-7, 7] ...
          grid.zero_point = Int4Matrix<Group>::symmetric_zero_point;  // ... stored as u = q + 8 in [1, 15]
          grid.qmin = 1;
          grid.qmax = 15;
        } else {
          grid = IntGrid::affine(m.lo, m.hi, 0, 15);
          q.zero_points[static_cast<std::size_t>(r * groups + g)] = static_cast<std::uint8_t>(grid.zero_point);
        }
        q.scales[static_cast<std::size_t>(r * groups + g)] = grid.scale;
        for (index_t c = g * Group; c < (g + 1) * Group; c += 2) {
          cr[c / 2] = pack_int4(static_cast<std::uint8_t>(grid.code(wr[c])), static_cast<std::uint8_t>(grid.code(wr[c + 1])));
        }
      }
    }
  });
  return q;
}

/// out [out, in] = s (u - z), the float value of every code.
template <index_t Group>
void dequantize_int4(const Int4Matrix<Group>& q, View<float, 2> out) {
  detail::expect_output(out, "dequantize_int4", "out", q.rows, q.cols);
  for (index_t r = 0; r < q.rows; ++r) {
    float* o = out.row(r);
    for (index_t c = 0; c < q.cols; ++c) {
      const index_t g = c / Group;
      o[c] = q.scale(r, g) * static_cast<float>(std::int32_t(q.code(r, c)) - std::int32_t(q.zero_point(r, g)));
    }
  }
}

namespace detail {

/// sum_k a[k] b[k] over N (a multiple of 8) in 8 fixed lanes, added pairwise at the end.
template <index_t N>
float dot_lanes(const float* a, const float* b) {
  static_assert(N % 8 == 0);
  float lane[8] = {};
  for (index_t k = 0; k < N; k += 8)
    for (int l = 0; l < 8; ++l) lane[l] += a[k + l] * b[k + l];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace detail

/// y [M, out] = x [M, in] W^T, W group-wise INT4 unpacked group by group inside the K loop.
template <index_t Group>
void matmul_int4(View<const float, 2> x, const Int4Matrix<Group>& w, View<float, 2> y) {
  constexpr std::string_view fn = "matmul_int4";
  detail::expect_matrix(x, fn, "x");
  REASON_CHECK(x.shape[1] == w.cols, fn, ": x: shape ", shape_string(x.shape), ", expected [M, ", w.cols,
               "] (the weight is [", w.rows, ", ", w.cols, "])");
  detail::expect_output(y, fn, "y", x.shape[0], w.rows);
  const index_t m_len = x.shape[0], n_len = w.rows, groups = w.groups_per_row();
  constexpr index_t mb = 16, nb = 32;  // a tile: 16 rows of x against 32 weight rows
  const index_t mt = (m_len + mb - 1) / mb, nt = (n_len + nb - 1) / nb;
  const double work = double(m_len) * double(n_len) * double(w.cols);
  parallel_for(mt * nt, work < (1 << 20) ? mt * nt : 1, [&](index_t t0, index_t t1) {
    // The tile's x rows with each group's columns in nibble order (the even columns, then the odd
    // ones), so that a group's low and high nibbles unpack into two contiguous halves.
    std::vector<float> xs(static_cast<std::size_t>(mb * w.cols));
    float unpacked[Group];  // one group of one weight row: u - z, low nibbles then high nibbles
    float acc[mb];
    index_t arranged_m0 = -1;
    for (index_t t = t0; t < t1; ++t) {
      const index_t m0 = (t / nt) * mb, n0 = (t % nt) * nb;
      const index_t m1 = std::min(m_len, m0 + mb), n1 = std::min(n_len, n0 + nb);
      if (m0 != arranged_m0) {
        for (index_t m = m0; m < m1; ++m) {
          const float* xr = x.row(m);
          float* dst = xs.data() + (m - m0) * w.cols;
          for (index_t k0 = 0; k0 < w.cols; k0 += Group)
            for (index_t j = 0; j < Group / 2; ++j) {
              dst[k0 + j] = xr[k0 + 2 * j];
              dst[k0 + Group / 2 + j] = xr[k0 + 2 * j + 1];
            }
        }
        arranged_m0 = m0;
      }
      for (index_t n = n0; n < n1; ++n) {
        std::fill(acc, acc + mb, 0.0f);
        const std::uint8_t* codes = w.codes.data() + n * (w.cols / 2);
        const float* scales = w.scales.data() + n * groups;
        const std::uint8_t* zeros = w.symmetric() ? nullptr : w.zero_points.data() + n * groups;
        for (index_t g = 0; g < groups; ++g) {
          const float z = zeros ? static_cast<float>(zeros[g]) : float(Int4Matrix<Group>::symmetric_zero_point);
          const float s = scales[g];
          const std::uint8_t* cg = codes + g * (Group / 2);
          for (index_t j = 0; j < Group / 2; ++j) {
            unpacked[j] = static_cast<float>(cg[j] & 0xF) - z;           // column 2j
            unpacked[Group / 2 + j] = static_cast<float>(cg[j] >> 4) - z;  // column 2j + 1
          }
          for (index_t m = m0; m < m1; ++m) {
            acc[m - m0] += s * detail::dot_lanes<Group>(xs.data() + (m - m0) * w.cols + g * Group, unpacked);
          }
        }
        for (index_t m = m0; m < m1; ++m) y(m, n) = acc[m - m0];
      }
    }
  });
}

/// INT4 weight-only quantization in groups of Group (32, 64 or 128) input columns; float activations.
template <index_t Group, Symmetry Sym = Symmetry::asymmetric>
struct Int4Group {
  static_assert(Group == 32 || Group == 64 || Group == 128, "quant::Int4Group: the group size must be 32, 64 or 128");
  static constexpr index_t group = Group;
  static constexpr Symmetry symmetry = Sym;
  static constexpr int bits = 4;
  using Packed = Int4Matrix<Group>;
  static constexpr const char* name =
      Sym == Symmetry::asymmetric ? (Group == 32 ? "int4_g32_asym" : Group == 64 ? "int4_g64_asym" : "int4_g128_asym")
                                  : (Group == 32 ? "int4_g32_sym" : Group == 64 ? "int4_g64_sym" : "int4_g128_sym");

  [[nodiscard]] static Packed quantize(View<const float, 2> w, std::string_view tensor = "weight") {
    return quantize_int4<Group>(w, Sym, tensor);
  }
  static void dequantize(const Packed& w, View<float, 2> out) { dequantize_int4(w, out); }
  static void matmul(View<const float, 2> x, const Packed& w, View<float, 2> y) { matmul_int4(x, w, y); }
};

static_assert(Quantizer<Int4Group<128>> && Quantizer<Int4Group<32, Symmetry::symmetric>>);

}  // namespace reason::quant
