// tests/attention/attention_test_util.hpp — a naive float64 attention module and the checks every
// attention policy goes through (module gradcheck, decode-vs-forward in a Transformer).
//
// The naive module is written from the formulas, not from the library: its own projections,
// rotate_half RoPE, and per-row softmax over the keys a pattern keeps, in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "reason/attention/shape.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/linear/dense.hpp"
#include "reason/model/transformer.hpp"
#include "support/decode_check.hpp"
#include "support/gradcheck.hpp"

namespace reason::test {

/// Which keys row t keeps, given its scores over all T keys: returns the kept key indices.
using KeepFn = std::function<std::vector<index_t>(index_t t, const std::vector<double>& scores)>;

inline KeepFn keep_causal() {
  return [](index_t t, const std::vector<double>&) {
    std::vector<index_t> k(static_cast<std::size_t>(t + 1));
    std::iota(k.begin(), k.end(), index_t{0});
    return k;
  };
}
inline KeepFn keep_all() {
  return [](index_t, const std::vector<double>& s) {
    std::vector<index_t> k(s.size());
    std::iota(k.begin(), k.end(), index_t{0});
    return k;
  };
}
inline KeepFn keep_window(index_t W) {
  return [W](index_t t, const std::vector<double>&) {
    std::vector<index_t> k;
    for (index_t u = std::max<index_t>(0, t - W + 1); u <= t; ++u) k.push_back(u);
    return k;
  };
}
/// The K best of the visible keys (ties to the earlier key).
inline KeepFn keep_top(index_t K, bool causal) {
  return [K, causal](index_t t, const std::vector<double>& s) {
    const index_t n = causal ? t + 1 : static_cast<index_t>(s.size());
    std::vector<index_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), index_t{0});
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return s[a] > s[b]; });
    order.resize(static_cast<std::size_t>(std::min(n, K)));
    std::sort(order.begin(), order.end());
    return order;
  };
}

struct NaiveDims {
  index_t batch, seq, width, heads, kv_heads, head_dim;
  double theta = 10000.0;
};

/// Rotates one head vector (rotate_half pairing (i, i + D/2)) to position pos.
inline void naive_rope(double* x, index_t D, index_t pos, double theta) {
  for (index_t i = 0; i < D / 2; ++i) {
    const double ang = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
    const double a = x[i], b = x[i + D / 2];
    x[i] = a * std::cos(ang) - b * std::sin(ang);
    x[i + D / 2] = a * std::sin(ang) + b * std::cos(ang);
  }
}

/// y [B T, C] of the q/k/v shell with the given branches (keep rules) mixed by per-head gates:
/// ctx_h = sum_b gate[b][h] * attention_b(q, k, v)_h. Weights read from `params` by name.
inline std::vector<double> naive_attention(const ParamLayout& layout, std::span<const double> params,
                                           const std::string& name, const NaiveDims& d, std::span<const double> x,
                                           const std::vector<KeepFn>& branches,
                                           const std::vector<std::vector<double>>& gates) {
  const index_t B = d.batch, T = d.seq, C = d.width, H = d.heads, Hkv = d.kv_heads, D = d.head_dim;
  const index_t QW = (H + 2 * Hkv) * D, N = B * T;
  const double* wqkv = params.data() + layout.find(name + ".qkv.weight").offset;
  const double* wo = params.data() + layout.find(name + ".o.weight").offset;
  std::vector<double> qkv(static_cast<std::size_t>(N * QW), 0.0);
  for (index_t r = 0; r < N; ++r)
    for (index_t j = 0; j < QW; ++j) {
      double s = 0;
      for (index_t c = 0; c < C; ++c) s += x[r * C + c] * wqkv[j * C + c];
      qkv[r * QW + j] = s;
    }
  for (index_t r = 0; r < N; ++r)
    for (index_t h = 0; h < H + Hkv; ++h) naive_rope(&qkv[r * QW + h * D], D, r % T, d.theta);
  std::vector<double> ctx(static_cast<std::size_t>(N * H * D), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h) {
      const index_t g = h / (H / Hkv);
      for (index_t t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * QW + h * D];
        std::vector<double> scores(static_cast<std::size_t>(T));
        for (index_t u = 0; u < T; ++u) {
          const double* k = &qkv[(b * T + u) * QW + (H + g) * D];
          double s = 0;
          for (index_t i = 0; i < D; ++i) s += q[i] * k[i];
          scores[u] = s * scale;
        }
        for (std::size_t br = 0; br < branches.size(); ++br) {
          const auto kept = branches[br](t, scores);
          double mx = -INFINITY, z = 0;
          for (index_t u : kept) mx = std::max(mx, scores[u]);
          for (index_t u : kept) z += std::exp(scores[u] - mx);
          for (index_t u : kept) {
            const double p = std::exp(scores[u] - mx) / z * gates[br][h];
            const double* v = &qkv[(b * T + u) * QW + (H + Hkv + g) * D];
            for (index_t i = 0; i < D; ++i) ctx[((b * T + t) * H + h) * D + i] += p * v[i];
          }
        }
      }
    }
  std::vector<double> y(static_cast<std::size_t>(N * C), 0.0);
  for (index_t r = 0; r < N; ++r)
    for (index_t c = 0; c < C; ++c) {
      double s = 0;
      for (index_t j = 0; j < H * D; ++j) s += ctx[r * H * D + j] * wo[c * H * D + j];
      y[r * C + c] = s;
    }
  return y;
}

/// A module of policy A on its own: layout, random params (std `init_std`), an arena.
template <class A, class T>
struct ModuleRig {
  using Module = typename A::template Module<T, linear::Dense>;
  ParamLayout layout;
  Module m;
  std::vector<T> params, grads;
  index_t batch, seq;
  Arena arena;
  typename Module::Saved saved;
  typename Module::Scratch scratch;
  std::vector<std::int32_t> pos;

  ModuleRig(const attention::Dims& dims, index_t b, index_t t, std::uint64_t seed) : batch(b), seq(t) {
    m = Module(layout, "attn", dims);
    params.resize(layout.size());
    grads.assign(layout.size(), T(0));
    layout.initialize(std::span<T>(params), seed);
    arena.reserve(Arena::measure([&](Arena& a) {
      (void)m.carve(a, b, t);
      (void)m.carve_scratch(a, b, t);
    }));
    saved = m.carve(arena, b, t);
    scratch = m.carve_scratch(arena, b, t);
    for (index_t i = 0; i < b * t; ++i) pos.push_back(static_cast<std::int32_t>(i % t));
  }
  View<const std::int32_t, 1> positions() const { return make_view(pos.data(), batch * seq); }
  std::vector<T> forward(std::span<const T> x, index_t width) {
    std::vector<T> y(static_cast<std::size_t>(batch * seq * width));
    m.forward(params.data(), batch, make_view(x.data(), batch * seq, width), positions(), saved,
              make_view(y.data(), batch * seq, width));
    return y;
  }
};

/// Module backward (float64) against finite differences, for the parameters and for x:
/// loss = sum(y * R) with a fixed random R.
template <class A>
void check_module_gradients(const attention::Dims& dims, index_t batch, index_t seq, std::uint64_t seed,
                            double tol = 1e-6) {
  ModuleRig<A, double> rig(dims, batch, seq, seed);
  const index_t n = batch * seq, C = dims.width;
  Philox rng(seed, 3);
  std::vector<double> x(static_cast<std::size_t>(n * C)), R(x.size()), dx(x.size());
  fill_uniform(std::span<double>(x), rng);
  fill_uniform(std::span<double>(R), rng);
  auto loss = [&] {
    const auto y = rig.forward(x, C);
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * R[i];
    return s;
  };
  (void)loss();
  rig.m.backward(rig.params.data(), rig.grads.data(), batch, make_view(static_cast<const double*>(x.data()), n, C),
                 rig.positions(), rig.saved, rig.scratch, make_view(static_cast<const double*>(R.data()), n, C),
                 make_view(dx.data(), n, C));
  const auto gp = gradcheck(loss, std::span<double>(rig.params), rig.grads, tol);
  INFO("parameters: " << gp.describe() << " (" << rig.layout.size() << " of them)");
  CHECK(gp.ok);
  const auto gx = gradcheck(loss, std::span<double>(x), dx, tol);
  INFO("input: " << gx.describe());
  CHECK(gx.ok);
}

}  // namespace reason::test
