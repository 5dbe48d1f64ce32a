// tests/moe/moe_test_util.hpp — a naive float64 mixture-of-experts layer and a rig that runs the
// library's MoE module on its own.
//
// The naive layer is written from the formulas (DeepSeek-V3 §2.1.2, Switch Transformer eq. 3-4),
// not from the library: per token, in double, reading every weight from the flat parameter
// buffer by name (ParamLayout::find):
//   s = softmax(x W^T) or sigmoid(x W^T);  c = s + b (the balancing bias, when the gate has one)
//   groups > 1: a group's score is the sum of its two best c; only the top_groups best groups stay
//   the top_k allowed experts by c (ties to the lower index), best first
//   w_j = routed_scale * s_j (/ sum of the chosen s when normalize)
//   capacity: ceil(f N k / E) slots per expert, f the factor as the decimal it was written as
//   (exact integer arithmetic); token order keeps each expert's first assignments, score order
//   its highest w (ties to the earlier assignment)
//   y = shared(x) + sum over kept assignments of w_j SwiGLU_{e_j}(x)
//   aux = mean over segments of alpha * sum_i (E / (k T) count_i) (mean_t p_{t,i}), p = s
//   (softmax) or s / sum s (sigmoid), counts before capacity.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/linear/dense.hpp"
#include "reason/moe/moe.hpp"
#include "support/gradcheck.hpp"

namespace reason::test {

/// SwiGLU of one row: down(silu(x Wg^T) * (x Wu^T)), weights "<prefix>.gate_up.weight" [2F, C]
/// (gate rows first) and "<prefix>.down.weight" [C, F]. Adds `scale` times it to y.
inline void naive_swiglu_add(const ParamLayout& layout, std::span<const double> p, const std::string& prefix, index_t C,
                             const double* x, double scale, double* y) {
  const auto& gu = layout.find(prefix + ".gate_up.weight");
  const auto& dn = layout.find(prefix + ".down.weight");
  const index_t F = gu.shape[0] / 2;
  REQUIRE(gu.shape[1] == C);
  REQUIRE(dn.shape[0] == C);
  REQUIRE(dn.shape[1] == F);
  const double* wgu = p.data() + gu.offset;
  const double* wd = p.data() + dn.offset;
  std::vector<double> h(static_cast<std::size_t>(F));
  for (index_t j = 0; j < F; ++j) {
    double g = 0, u = 0;
    for (index_t c = 0; c < C; ++c) {
      g += wgu[j * C + c] * x[c];
      u += wgu[(F + j) * C + c] * x[c];
    }
    h[j] = g / (1.0 + std::exp(-g)) * u;
  }
  for (index_t c = 0; c < C; ++c) {
    double s = 0;
    for (index_t j = 0; j < F; ++j) s += wd[c * F + j] * h[j];
    y[c] += scale * s;
  }
}

/// The slots per expert of capacity factor f (a float template argument) for N tokens: ceil(f N k / E)
/// with f taken as the decimal it was written as (6 decimals), in integers.
inline index_t naive_capacity(float factor, index_t n, int k, int e) {
  const auto num = static_cast<std::int64_t>(std::llround(static_cast<double>(factor) * 1e6));
  const std::int64_t a = num * n * k, b = std::int64_t{1000000} * e;
  return (a + b - 1) / b;
}

struct NaiveRouting {
  std::vector<std::vector<int>> experts;     // [N][k] chosen, best first
  std::vector<std::vector<double>> scores;   // [N][E] unbiased s
  std::vector<std::vector<double>> weights;  // [N][k]
  std::vector<std::vector<char>> kept;       // [N][k]
  std::vector<double> load, kept_count;      // [E]
  double aux = 0;
  index_t capacity = -1;
  [[nodiscard]] index_t dropped() const {
    index_t d = 0;
    for (const auto& r : kept)
      for (char c : r) d += c ? 0 : 1;
    return d;
  }
};

/// The routing of the gate of MoE policy `P` ("<name>.gate.*") for x [N, C]; `segment` rows per
/// sequence for a sequence-wise aux loss (0: all rows).
template <class P>
NaiveRouting naive_route(const ParamLayout& layout, std::span<const double> p, const std::string& name, index_t C,
                         std::span<const double> x, index_t N, index_t segment = 0) {
  using Gate = typename P::gate_policy;
  constexpr moe::GateConfig G = Gate::config;
  constexpr int E = G.experts, K = G.top_k;
  const double* w = p.data() + layout.find(name + ".gate.weight").offset;
  std::vector<double> bias(E, 0.0);
  if constexpr (Gate::balance_policy::has_bias) {
    const double* b = p.data() + layout.find(name + ".gate.e_score_correction_bias").offset;
    bias.assign(b, b + E);
  }
  NaiveRouting r;
  r.load.assign(E, 0.0);
  r.kept_count.assign(E, 0.0);
  for (index_t t = 0; t < N; ++t) {
    std::vector<double> logit(E), s(E), c(E);
    for (int e = 0; e < E; ++e) {
      double z = 0;
      for (index_t i = 0; i < C; ++i) z += w[e * C + i] * x[t * C + i];
      logit[e] = z;
    }
    if constexpr (Gate::scoring == moe::Scoring::softmax) {
      const double m = *std::max_element(logit.begin(), logit.end());
      double z = 0;
      for (int e = 0; e < E; ++e) z += std::exp(logit[e] - m);
      for (int e = 0; e < E; ++e) s[e] = std::exp(logit[e] - m) / z;
    } else {
      for (int e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-logit[e]));
    }
    for (int e = 0; e < E; ++e) c[e] = s[e] + bias[e];
    std::vector<char> allowed(E, 1);
    if (G.groups > 1) {
      const int per = E / G.groups;
      std::vector<double> gscore(G.groups);
      for (int g = 0; g < G.groups; ++g) {
        std::vector<double> v(c.begin() + g * per, c.begin() + (g + 1) * per);
        std::sort(v.begin(), v.end(), std::greater<>());
        gscore[g] = v[0] + (per >= 2 ? v[1] : 0.0);
      }
      std::vector<int> go(G.groups);
      std::iota(go.begin(), go.end(), 0);
      std::stable_sort(go.begin(), go.end(), [&](int a, int b) { return gscore[a] > gscore[b]; });
      std::fill(allowed.begin(), allowed.end(), char(0));
      for (int i = 0; i < G.top_groups; ++i)
        for (int e = go[i] * per; e < (go[i] + 1) * per; ++e) allowed[e] = 1;
    }
    std::vector<int> order;
    for (int e = 0; e < E; ++e)
      if (allowed[e]) order.push_back(e);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return c[a] > c[b]; });
    order.resize(K);
    double z = 0;
    for (int e : order) z += s[e];
    std::vector<double> wt(K);
    for (int j = 0; j < K; ++j) wt[j] = static_cast<double>(G.routed_scale) * s[order[j]] / (G.normalize ? z : 1.0);
    for (int e : order) r.load[e] += 1;
    r.experts.push_back(order);
    r.scores.push_back(s);
    r.weights.push_back(wt);
    r.kept.emplace_back(K, char(1));
  }
  using Cap = typename P::capacity_policy;
  if constexpr (Cap::drops) {
    r.capacity = naive_capacity(Cap::factor, N, K, E);
    for (int e = 0; e < E; ++e) {
      std::vector<std::pair<index_t, int>> list;  // (token, j) in token order
      for (index_t t = 0; t < N; ++t)
        for (int j = 0; j < K; ++j)
          if (r.experts[t][j] == e) list.emplace_back(t, j);
      if (Cap::order == moe::DropOrder::score)
        std::stable_sort(list.begin(), list.end(), [&](const auto& a, const auto& b) {
          return r.weights[a.first][a.second] > r.weights[b.first][b.second];
        });
      for (std::size_t i = static_cast<std::size_t>(r.capacity); i < list.size(); ++i) r.kept[list[i].first][list[i].second] = 0;
    }
  }
  for (index_t t = 0; t < N; ++t)
    for (int j = 0; j < K; ++j)
      if (r.kept[t][j]) r.kept_count[r.experts[t][j]] += 1;
  using Aux = typename Gate::aux_loss_policy;
  if constexpr (Aux::active) {
    const index_t seg = Aux::per_sequence && segment > 0 ? segment : N;
    double total = 0;
    for (index_t t0 = 0; t0 < N; t0 += seg) {
      std::vector<double> f(E, 0.0), mean_p(E, 0.0);
      for (index_t t = t0; t < t0 + seg; ++t) {
        for (int e : r.experts[t]) f[e] += static_cast<double>(E) / static_cast<double>(K * seg);
        double z = 0;
        for (int e = 0; e < E; ++e) z += r.scores[t][e];
        for (int e = 0; e < E; ++e)
          mean_p[e] += (Gate::scoring == moe::Scoring::softmax ? r.scores[t][e] : r.scores[t][e] / z) / static_cast<double>(seg);
      }
      double l = 0;
      for (int e = 0; e < E; ++e) l += f[e] * mean_p[e];
      total += Aux::alpha * l;
    }
    r.aux = total / static_cast<double>(N / seg);
  }
  return r;
}

struct NaiveMoE {
  std::vector<double> y;
  NaiveRouting routing;
};

/// y [N, C] of MoE policy P ("<name>.*") on x [N, C], from the formulas in the file comment.
template <class P>
NaiveMoE naive_moe(const ParamLayout& layout, std::span<const double> p, const std::string& name, index_t C,
                   std::span<const double> x, index_t N, index_t segment = 0) {
  NaiveMoE out;
  out.routing = naive_route<P>(layout, p, name, C, x, N, segment);
  out.y.assign(static_cast<std::size_t>(N * C), 0.0);
  for (index_t t = 0; t < N; ++t) {
    if constexpr (P::shared_experts > 0) naive_swiglu_add(layout, p, name + ".shared_experts", C, &x[t * C], 1.0, &out.y[t * C]);
    for (int j = 0; j < P::top_k; ++j)
      if (out.routing.kept[t][j])
        naive_swiglu_add(layout, p, name + ".experts." + std::to_string(out.routing.experts[t][j]), C, &x[t * C],
                         out.routing.weights[t][j], &out.y[t * C]);
  }
  return out;
}

/// An MoE module of policy P named "moe" on its own: layout, params (init from `seed`), grads, an
/// arena carved for `rows` tokens (sequences of `seq` rows for a sequence-wise loss).
template <class P, class T>
struct MoeRig {
  using Module = typename P::template Module<T, linear::Dense>;
  ParamLayout layout;
  Module m;
  std::vector<T> params, grads;
  index_t rows, width;
  Arena arena;
  typename Module::Saved saved;
  typename Module::Scratch scratch;

  MoeRig(const ffn::Dims& d, index_t n, std::uint64_t seed, index_t seq = 0) : rows(n), width(d.width) {
    m = Module(layout, "moe", d);
    params.resize(layout.size());
    grads.assign(layout.size(), T(0));
    layout.initialize(std::span<T>(params), seed);
    arena.reserve(Arena::measure([&](Arena& a) {
      (void)m.carve(a, n, seq);
      (void)m.carve_scratch(a, n);
    }));
    saved = m.carve(arena, n, seq);
    scratch = m.carve_scratch(arena, n);
  }
  [[nodiscard]] const ParamInfo& info(const std::string& name) const { return layout.find(name); }
  [[nodiscard]] std::span<T> tensor(const std::string& name) {
    const auto& i = layout.find(name);
    return std::span<T>(params).subspan(i.offset, i.numel);
  }
  std::vector<T> forward(std::span<const T> x) {
    const index_t n = static_cast<index_t>(x.size()) / width;
    std::vector<T> y(x.size());
    m.forward(params.data(), make_view(x.data(), n, width), saved, make_view(y.data(), n, width));
    return y;
  }
  /// dx from dy after a forward of x (parameter gradients accumulate into grads).
  std::vector<T> backward(std::span<const T> x, std::span<const T> dy) {
    const index_t n = static_cast<index_t>(x.size()) / width;
    std::vector<T> dx(x.size());
    m.backward(params.data(), grads.data(), make_view(x.data(), n, width), saved, scratch, make_view(dy.data(), n, width),
               make_view(dx.data(), n, width));
    return dx;
  }
  /// The routing of the last forward of n rows: chosen experts and their slots, flattened.
  [[nodiscard]] std::vector<std::int32_t> routing(index_t n) const {
    std::vector<std::int32_t> r;
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < P::top_k; ++j) {
        r.push_back(saved.gate.experts(t, j));
        r.push_back(saved.slot(t, j));
      }
    return r;
  }
};

/// max |a - b| / max |b| (the error of a against the reference b, relative to its peak).
template <class A>
double rel_max_error(const std::vector<A>& a, const std::vector<double>& b) {
  double worst = 0, peak = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
    peak = std::max(peak, std::abs(b[i]));
  }
  return peak > 0 ? worst / peak : worst;
}

/// Random values in [lo, hi) written into a tensor of the flat buffer.
template <class T>
void randomize_tensor(std::span<T> params, const ParamInfo& info, Philox& rng, double lo, double hi) {
  for (std::size_t i = 0; i < info.numel; ++i) params[info.offset + i] = static_cast<T>(lo + (hi - lo) * rng.uniform_double());
}

}  // namespace reason::test
