// bench/bench_moe.cpp — the mixture-of-experts feed-forward layer against the dense FFN of equal
// active parameters, as a model layer runs them.
//
// One feed-forward MODULE (what a Transformer layer calls; float, width C = 512, linear::Dense,
// OpenBLAS GEMMs), on N = 512, 2048 and 8192 tokens on the host:
//   e8k2           moe::MoE<SigmoidTopK<GateConfig{.experts = 8, .top_k = 2}>, ffn::SwiGLU>,
//                  expert_hidden 256, no shared expert (Mixtral-like, coarse experts)
//   e8k2_cap1.25   the same with moe::Capacity<1.25f> (assignments over capacity are dropped)
//   e8k2_softmax   the same with moe::SoftmaxTopK (no balancing bias)
//   e64k6_s2       moe::MoE<SigmoidTopK<GateConfig{.experts = 64, .top_k = 6}>, ffn::SwiGLU,
//                  moe::Shared<2>>, expert_hidden 128 (DeepSeekMoE-like, fine-grained)
//   dense_f512     ffn::SwiGLU, hidden 512 = (2 + 0) x 256: e8k2's active parameters
//   dense_f1024    ffn::SwiGLU, hidden 1024 = (6 + 2) x 128: e64k6_s2's active parameters
// Benchmarks:
//   ffn_forward/<variant>/N:<N>     Module::forward (saving what backward reads);
//   ffn_fwd_bwd/<variant>/N:<N>     Module::forward then Module::backward (dx and the parameter
//                                   gradients; the aux loss is off, the default gates have none);
//   moe_route_fwd/<variant>/N:<N>   the forward's work outside the experts: the gate (router GEMM,
//                                   sigmoid / softmax, top-k selection, combine weights), dispatch
//                                   (permutation and offsets), gather of the expert inputs, and
//                                   combine (zero y, add the weighted expert outputs back);
//   moe_gate_fwd/<variant>/N:<N>    the gate's forward alone (router GEMM, activation, top-k, weights):
//                                   route minus gate = dispatch + gather + combine;
//   moe_route_bwd/<variant>/N:<N>   the backward's: combine backward (dys and dweights), scatter-add
//                                   of the experts' dx, the gate's backward (both router GEMMs).
// Napkin math, per iteration (kept = the assignments the capacity keeps, N k without drops):
//   forward FLOPs  router 2 N C E; each kept assignment runs its expert's gate_up [2F, C] and down
//                  [C, F] on one row: 2 C (2F) + 2 F C = 6 C F; the shared experts (one FFN of
//                  hidden Fs = shared x F) 6 C Fs per token; the dense FFN 6 C F_dense per token.
//                  The elementwise work (activation, SwiGLU, gather, combine) is not counted.
//   fwd+bwd FLOPs  3x forward (backward: dx and dW for every GEMM, the router's too).
//   bytes          compulsory traffic, as bench_attention_variants: forward reads the parameters it
//                  touches (router, the experts that got rows, shared) and x, writes y and what it
//                  saves; backward reads those parameters, dy and the saved tensors, reads and writes
//                  their gradients, writes dx and its scratch.
//   route          FLOPs 2 N C E forward (4 N C E backward); bytes: the router weight, x, xs and ys
//                  (kept rows), y (backward: x, dy, dx, ys, dys, dxs, the router weight and its gradient).
//   gate           FLOPs 2 N C E; bytes: the router weight, x, the scores [N, E], experts and weights.
// Counters: FLOP/s, bytes/s, tokens/s; active_params (per token: router + k experts + shared, or
// the dense FFN's), touched_params (all the experts that got at least one row: what a forward
// reads), kept_frac (kept / (N k)), max_load (the busiest expert's assignments over the mean N k / E,
// before capacity: 1 is perfect balance).
// Iterations are fixed (12 / 4 / 1 at N 512 / 2048 / 8192, 4x that for the route and gate parts).
// Every byte of the arena is touched before timing and one untimed pass runs first. Inputs are
// standard normal, parameters from ParamLayout::initialize; no balancing step runs, so the routing
// is the same every iteration.
// Real time: the GEMMs run on reason's pool.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/kernels/moe_dispatch.hpp"
#include "reason/linear/dense.hpp"
#include "reason/moe/capacity.hpp"
#include "reason/moe/gate.hpp"
#include "reason/moe/moe.hpp"

using namespace reason;

namespace {

constexpr index_t kWidth = 512;
constexpr index_t kTokens[] = {512, 2048, 8192};

using E8 = moe::MoE<moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 2}>, ffn::SwiGLU>;
using E8Cap = moe::MoE<moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::Capacity<1.25f>>, ffn::SwiGLU>;
using E8Softmax = moe::MoE<moe::SoftmaxTopK<moe::GateConfig{.experts = 8, .top_k = 2}>, ffn::SwiGLU>;
using E64 = moe::MoE<moe::SigmoidTopK<moe::GateConfig{.experts = 64, .top_k = 6}>, ffn::SwiGLU, moe::Shared<2>>;
using Dense = ffn::SwiGLU;

template <class F>
concept Routed = requires { F::routed; };

/// n floats, standard normal, from Philox(seed) so every run times the same numbers.
std::vector<float> normal_floats(std::size_t n, std::uint64_t seed) {
  Philox rng(seed, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal());
  return v;
}

struct Variant {
  const char* name;
  index_t hidden;  // the expert's F (MoE) or the dense FFN's F
};

/// One feed-forward module of policy F on its own, as a model layer holds it: parameters,
/// gradients, an input, and an arena with what forward saves (and backward's scratch).
template <class F>
struct Rig {
  using Module = typename F::template Module<float, linear::Dense>;
  ParamLayout layout;
  Module m;
  std::vector<float> params, grads, x, y, dy, dx;
  Arena arena;
  typename Module::Saved saved;
  typename Module::Scratch scratch;
  double saved_bytes = 0, scratch_bytes = 0;
  index_t N, hidden;

  Rig(const Variant& v, index_t tokens, bool backward) : N(tokens), hidden(v.hidden) {
    ffn::Dims d{.width = kWidth, .hidden = v.hidden};
    if constexpr (Routed<F>) d.expert_hidden = v.hidden;
    m = Module(layout, "ffn", d);
    params.resize(layout.size());
    layout.initialize(std::span<float>(params), 1);
    x = normal_floats(std::size_t(N * kWidth), 2);
    y.assign(x.size(), 0.0f);
    Arena measure;
    (void)m.carve(measure, N);
    saved_bytes = double(measure.peak());
    if (backward) {
      (void)m.carve_scratch(measure, N);
      scratch_bytes = double(measure.peak()) - saved_bytes;
    }
    grads.assign(params.size(), 0.0f);  // the route backward needs them even without `backward`
    dy = normal_floats(x.size(), 3);
    dx.assign(x.size(), 0.0f);
    arena.reserve(measure.peak());
    std::byte* all = arena.allocate<std::byte>(measure.peak(), "first touch");
    std::memset(all, 0, measure.peak());  // first touch of every page, outside the timed loop
    arena.reset();
    saved = m.carve(arena, N);
    if (backward) scratch = m.carve_scratch(arena, N);
  }

  View<const float, 2> in(const std::vector<float>& v) const { return make_view(v.data(), N, kWidth); }
  View<float, 2> out(std::vector<float>& v) const { return make_view(v.data(), N, kWidth); }
  void forward() { m.forward(params.data(), in(x), saved, out(y)); }
  void backward() { m.backward(params.data(), grads.data(), in(x), saved, scratch, in(dy), out(dx)); }

  /// Assignments kept by the last forward (0 for the dense FFN).
  double kept() const {
    if constexpr (Routed<F>) {
      return double(saved.offsets(F::experts));
    } else {
      return 0;
    }
  }
  /// Parameters of one expert (MoE) or of the whole FFN (dense): gate_up [2F, C] + down [C, F].
  double ffn_params(index_t f) const { return 3.0 * double(kWidth) * double(f); }
  /// Parameters a token uses: router + k experts + shared, or the dense FFN.
  double active_params() const {
    if constexpr (Routed<F>) {
      return double(F::experts) * kWidth + (F::top_k + F::shared_experts) * ffn_params(hidden);
    } else {
      return ffn_params(hidden);
    }
  }
  /// Parameters the last forward read: router, every expert that got a row, shared.
  double touched_params() const {
    if constexpr (Routed<F>) {
      int active = 0;
      for (int e = 0; e < F::experts; ++e) active += saved.offsets(e + 1) > saved.offsets(e);
      return double(F::experts) * kWidth + (active + F::shared_experts) * ffn_params(hidden);
    } else {
      return ffn_params(hidden);
    }
  }
  /// FLOPs of one forward (after one has run: the kept count comes from it).
  double forward_flops() const {
    const double C = double(kWidth), n = double(N);
    if constexpr (Routed<F>) {
      return 2.0 * n * C * F::experts + 6.0 * C * double(hidden) * kept() +
             6.0 * C * double(hidden) * F::shared_experts * n;
    } else {
      return 6.0 * C * double(hidden) * n;
    }
  }
};

template <class F>
void counters(benchmark::State& state, const Rig<F>& r, double flops, double bytes) {
  bench::set_roofline(state, flops, bytes);
  state.counters["tokens/s"] = benchmark::Counter(double(r.N), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["active_params"] = r.active_params();
  state.counters["touched_params"] = r.touched_params();
  if constexpr (Routed<F>) {
    state.counters["kept_frac"] = r.kept() / (double(r.N) * F::top_k);
    int most = 0;
    for (int e = 0; e < F::experts; ++e) most = std::max(most, int(r.saved.load(e)));
    state.counters["max_load"] = double(most) * F::experts / (double(r.N) * F::top_k);
  }
}

template <class F>
void run_forward(benchmark::State& state, const Variant& v, index_t N) {
  Rig<F> r(v, N, false);
  r.forward();  // warm-up (the pool, BLAS, the routing)
  for (auto _ : state) {
    r.forward();
    benchmark::ClobberMemory();
  }
  const double io = double(sizeof(float)) * (r.touched_params() + 2.0 * double(r.x.size()));
  counters(state, r, r.forward_flops(), io + r.saved_bytes);
}

template <class F>
void run_fwd_bwd(benchmark::State& state, const Variant& v, index_t N) {
  Rig<F> r(v, N, true);
  r.forward();
  r.backward();
  for (auto _ : state) {
    r.forward();
    r.backward();
    benchmark::ClobberMemory();
  }
  const double f = sizeof(float), P = r.touched_params(), X = double(r.x.size());
  const double fwd_bytes = f * (P + 2 * X) + r.saved_bytes;
  const double bwd_bytes = f * (P + 2 * P + 2 * X) + r.saved_bytes + r.scratch_bytes;
  counters(state, r, 3.0 * r.forward_flops(), fwd_bytes + bwd_bytes);
}

/// The forward's routing work alone: MoE::Module::forward without the experts (and without the
/// shared expert: y is zeroed instead, as the layer does when it has none).
template <class F>
void route_forward(Rig<F>& r) {
  using Cap = typename F::capacity_policy;
  const auto& s = r.saved;
  const index_t n = r.N;
  (void)r.m.gate().forward(r.params.data(), r.in(r.x), s.gate, n);
  const auto d = kernels::moe_dispatch<float>(s.gate.experts, s.gate.weights, F::experts,
                                              Cap::slots(n, F::top_k, F::experts), Cap::order, s.perm, s.offsets,
                                              s.slot, s.load);
  kernels::moe_gather<float>(r.in(r.x), s.perm, d.kept, s.xs);
  std::fill(r.y.begin(), r.y.end(), 0.0f);
  kernels::moe_combine<float>(s.ys, s.slot, s.gate.weights, r.out(r.y));
}

/// The backward's routing work alone: combine backward, scatter-add of the experts' dx (into a
/// zeroed dx, as without shared experts), the gate's backward.
template <class F>
void route_backward(Rig<F>& r) {
  const auto& s = r.saved;
  const auto& sc = r.scratch;
  kernels::moe_combine_backward<float>(s.ys, s.slot, s.gate.weights, r.in(r.dy), sc.dys, sc.dweights);
  std::fill(r.dx.begin(), r.dx.end(), 0.0f);
  kernels::moe_scatter_add<float>(sc.dxs, s.slot, r.out(r.dx));
  r.m.gate().backward(r.params.data(), r.grads.data(), r.in(r.x), s.gate, sc.gate, sc.dweights, 0.0, r.N, r.out(r.dx));
}

template <class F>
void run_route_fwd(benchmark::State& state, const Variant& v, index_t N) {
  if constexpr (Routed<F>) {
    Rig<F> r(v, N, false);
    r.forward();
    route_forward(r);
    for (auto _ : state) {
      route_forward(r);
      benchmark::ClobberMemory();
    }
    const double f = sizeof(float), X = double(r.x.size()), rows = r.kept() * double(kWidth);
    counters(state, r, 2.0 * double(N) * kWidth * F::experts, f * (double(F::experts) * kWidth + 2 * X + 2 * rows));
  }
}

template <class F>
void run_gate_fwd(benchmark::State& state, const Variant& v, index_t N) {
  if constexpr (Routed<F>) {
    Rig<F> r(v, N, false);
    r.forward();
    for (auto _ : state) {
      benchmark::DoNotOptimize(r.m.gate().forward(r.params.data(), r.in(r.x), r.saved.gate, N));
      benchmark::ClobberMemory();
    }
    const double f = sizeof(float), X = double(r.x.size()), NE = double(N) * F::experts;
    counters(state, r, 2.0 * NE * kWidth, f * (double(F::experts) * kWidth + X + NE + 2.0 * N * F::top_k));
  }
}

template <class F>
void run_route_bwd(benchmark::State& state, const Variant& v, index_t N) {
  if constexpr (Routed<F>) {
    Rig<F> r(v, N, true);
    r.forward();
    r.backward();  // fills the experts' dxs that the scatter-add reads
    route_backward(r);
    for (auto _ : state) {
      route_backward(r);
      benchmark::ClobberMemory();
    }
    const double f = sizeof(float), X = double(r.x.size()), rows = r.kept() * double(kWidth);
    counters(state, r, 4.0 * double(N) * kWidth * F::experts, f * (3.0 * F::experts * kWidth + 3 * X + 3 * rows));
  }
}

struct Entry {
  Variant v;
  bool routed;
  void (*forward)(benchmark::State&, const Variant&, index_t);
  void (*fwd_bwd)(benchmark::State&, const Variant&, index_t);
  void (*route_fwd)(benchmark::State&, const Variant&, index_t);
  void (*gate_fwd)(benchmark::State&, const Variant&, index_t);
  void (*route_bwd)(benchmark::State&, const Variant&, index_t);
};

template <class F>
Entry entry(Variant v) {
  return {v, Routed<F>, run_forward<F>, run_fwd_bwd<F>, run_route_fwd<F>, run_gate_fwd<F>, run_route_bwd<F>};
}

std::vector<Entry> entries() {
  return {
      entry<E8>({"e8k2", 256}),
      entry<E8Cap>({"e8k2_cap1.25", 256}),
      entry<E8Softmax>({"e8k2_softmax", 256}),
      entry<Dense>({"dense_f512", (E8::top_k + E8::shared_experts) * 256}),
      entry<E64>({"e64k6_s2", 128}),
      entry<Dense>({"dense_f1024", (E64::top_k + E64::shared_experts) * 128}),
  };
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<Entry> all = entries();
  for (const index_t N : kTokens) {
    const benchmark::IterationCount iters = N <= 512 ? 12 : N <= 2048 ? 4 : 1;
    for (const Entry& e : all) {
      const std::string suffix = std::string("/") + e.v.name + "/N:" + std::to_string(N);
      const auto add = [&](const std::string& what, auto fn, benchmark::IterationCount n) {
        benchmark::RegisterBenchmark((what + suffix).c_str(), fn, e.v, N)
            ->UseRealTime()
            ->Iterations(n)
            ->Unit(benchmark::kMillisecond);
      };
      add("ffn_forward", e.forward, iters);
      add("ffn_fwd_bwd", e.fwd_bwd, iters);
      if (e.routed) {
        add("moe_route_fwd", e.route_fwd, 4 * iters);
        add("moe_gate_fwd", e.gate_fwd, 4 * iters);
        add("moe_route_bwd", e.route_bwd, 4 * iters);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
