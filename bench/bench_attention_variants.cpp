// bench/bench_attention_variants.cpp — the attention policies side by side, as a model layer runs them.
//
// One attention MODULE (projections, RoPE and the pattern: what a Transformer layer calls), float,
// batch 1, width 512, 8 query heads, at sequence lengths 512, 2048 and 8192 on the host:
//   mha_kv8                  attention::MultiHead<Shape{.head_dim = 64}>, kv heads 8 (MHA)
//   gqa_kv2                  the same, kv heads 2 (GQA)
//   mqa_kv1                  the same, kv heads 1 (MQA)
//   window256_kv2            attention::SlidingWindow<S, 256>, kv heads 2
//   topk64_kv2               attention::TopK<S, 64>, kv heads 2
//   hier_full_window256_kv2  attention::Hierarchical<MultiHead<S>, SlidingWindow<S, 256>>, kv heads 2
//   mla_q192_kv128           attention::Mla, DeepSeek-V2-Lite-like proportions scaled to width 512:
//                            q_lora_rank 192, kv_lora_rank 128, qk_nope 64, qk_rope 32, v_head_dim 64
// Benchmarks:
//   attention_module_forward/<variant>/T:<T>   Module::forward (saving what backward reads);
//   attention_module_fwd_bwd/<variant>/T:<T>   Module::forward then Module::backward (dx and the
//                                              parameter gradients);
//   kv_cache/<variant>/T:8192                  no work: the decode cache of one layer, from the
//                                              module's cache_elems(8192), as counters.
// Napkin math, per iteration (N = T tokens):
//   projections  2 x (matrix parameters) x N forward, x3 forward + backward (dx and dW);
//   attention    2 (Dk + Dv) FLOPs per scored query-key pair forward (q.k and p.v; 4 D for Dk = Dv = D),
//                twice that backward; pairs per head T (T + 1) / 2 causal, sum_t min(t + 1, W) in the
//                window, both for the hierarchical mix. Top-k: the host kernel scores every causal key
//                (the selection needs all scores), then sums p.v over them with zeros for the dropped
//                ones, and the backward walks the full probability rows: all causal pairs are counted,
//                so its FLOP/s compares with MHA's, not with the 64 keys a query keeps.
//   bytes        compulsory traffic: forward reads params and x, writes y and what it saves (the
//                probabilities dominate: H T^2 floats for full attention, H T W for the window);
//                backward reads params, dy and the saved tensors, reads and writes the gradients,
//                writes dx and its scratch.
// Counters: FLOP/s, bytes/s, tokens/s, and cache_bytes_per_token = the decode cache of one layer per
// token at max_seq = T (cache_elems(T) * sizeof(float) / T): constant for a growing cache, shrinking
// with T for the window's ring buffer.
// Iterations are fixed (10 / 3 / 1 at T 512 / 2048 / 8192): full causal attention at T 8192 is about
// 70 GFLOP forward, seconds on two cores. Each benchmark builds its own module and arena and frees
// them at the end (only one variant is alive at a time: the saved probabilities of full attention
// at T 8192 take H T^2 x 4 bytes = 2 GiB); every byte of the arena is touched before timing, and
// below T 8192 one untimed pass runs first. Real time: the kernels run on reason's pool.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "reason/attention/hierarchical.hpp"
#include "reason/attention/mla.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/attention/sliding_window.hpp"
#include "reason/attention/top_k.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/linear/dense.hpp"

using namespace reason;

namespace {

constexpr index_t kWidth = 512, kHeads = 8, kHeadDim = 64, kWindow = 256, kTopK = 64;
constexpr index_t kSeqs[] = {512, 2048, 8192};

using Mha = attention::MultiHead<attention::Shape{.head_dim = 64}>;
using Window = attention::SlidingWindow<attention::Shape{.head_dim = 64}, 256>;
using TopK = attention::TopK<attention::Shape{.head_dim = 64}, 64>;
using Hier = attention::Hierarchical<attention::MultiHead<attention::Shape{.head_dim = 64}>,
                                     attention::SlidingWindow<attention::Shape{.head_dim = 64}, 256>>;
using Mla = attention::Mla<attention::MlaShape{
    .q_lora_rank = 192, .kv_lora_rank = 128, .qk_nope_head_dim = 64, .qk_rope_head_dim = 32, .v_head_dim = 64}>;

/// Which query-key pairs a pattern scores (for the FLOP count).
enum class Pairs { causal, window, causal_and_window };

struct Variant {
  const char* name;
  index_t kv_heads;
  Pairs pairs;
  index_t dk = kHeadDim, dv = kHeadDim;  // per-head query/key and value widths
};

/// Scored pairs per (sequence, head) for T tokens.
double pairs_per_head(Pairs p, index_t T) {
  const double t = double(T), w = double(kWindow);
  const double causal = t * (t + 1) / 2;
  const double window = T <= kWindow ? causal : w * (w + 1) / 2 + (t - w) * w;
  switch (p) {
    case Pairs::causal: return causal;
    case Pairs::window: return window;
    case Pairs::causal_and_window: return causal + window;
  }
  return 0;
}

attention::Dims dims_of(const Variant& v, index_t T) {
  return {.width = kWidth, .heads = kHeads, .kv_heads = v.kv_heads, .max_seq = T};
}

/// One attention module of policy A on its own, as a model layer holds it: parameters, gradients,
/// an input, positions 0..T-1, and an arena with what forward saves (and backward's scratch).
template <class A>
struct Rig {
  using Module = typename A::template Module<float, linear::Dense>;
  ParamLayout layout;
  Module m;
  std::vector<float> params, grads, x, y, dy, dx;
  std::vector<std::int32_t> pos;
  Arena arena;
  typename Module::Saved saved;
  typename Module::Scratch scratch;
  double saved_bytes = 0, scratch_bytes = 0;
  index_t T;

  Rig(const Variant& v, index_t seq, bool backward) : T(seq) {
    m = Module(layout, "attn", dims_of(v, T));
    params.resize(layout.size());
    layout.initialize(std::span<float>(params), 1);
    x = bench::random_floats(std::size_t(T * kWidth), 2);
    y.assign(x.size(), 0.0f);
    for (index_t t = 0; t < T; ++t) pos.push_back(static_cast<std::int32_t>(t));
    Arena measure;
    (void)m.carve(measure, 1, T);
    saved_bytes = double(measure.peak());
    if (backward) {
      (void)m.carve_scratch(measure, 1, T);
      scratch_bytes = double(measure.peak()) - saved_bytes;
      grads.assign(params.size(), 0.0f);
      dy = bench::random_floats(x.size(), 3);
      dx.assign(x.size(), 0.0f);
    }
    arena.reserve(measure.peak());
    std::byte* all = arena.allocate<std::byte>(measure.peak(), "first touch");
    std::memset(all, 0, measure.peak());  // first touch of every page, outside the timed loop
    arena.reset();
    saved = m.carve(arena, 1, T);
    if (backward) scratch = m.carve_scratch(arena, 1, T);
  }

  View<const float, 2> in(const std::vector<float>& v) const { return make_view(v.data(), T, kWidth); }
  View<const std::int32_t, 1> positions() const { return make_view(pos.data(), T); }
  void forward() { m.forward(params.data(), 1, in(x), positions(), saved, make_view(y.data(), T, kWidth)); }
  void backward() {
    m.backward(params.data(), grads.data(), 1, in(x), positions(), saved, scratch, in(dy),
               make_view(dx.data(), T, kWidth));
  }

  /// Parameters that take part in matrix products (the projections; not the norms or the gates).
  double matrix_params() const {
    double n = 0;
    for (const auto& p : layout.params())
      if (p.shape.size() == 2 && p.name.ends_with(".weight")) n += double(p.numel);
    return n;
  }
};

/// FLOPs of one forward: the projections and the scored pairs.
template <class A>
double forward_flops(const Rig<A>& r, const Variant& v) {
  const double proj = 2.0 * r.matrix_params() * double(r.T);
  const double attn = 2.0 * double(v.dk + v.dv) * double(kHeads) * pairs_per_head(v.pairs, r.T);
  return proj + attn;
}

template <class A>
void counters(benchmark::State& state, const Rig<A>& r, double flops, double bytes) {
  bench::set_roofline(state, flops, bytes);
  state.counters["tokens/s"] = benchmark::Counter(double(r.T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["cache_bytes_per_token"] = double(r.m.cache_elems(r.T)) * double(sizeof(float)) / double(r.T);
  state.counters["params"] = double(r.params.size());
}

template <class A>
void run_forward(benchmark::State& state, const Variant& v, index_t T) {
  Rig<A> r(v, T, false);
  if (T < 8192) r.forward();  // warm-up (the pool, BLAS); at 8192 a pass costs seconds and the arena is touched
  for (auto _ : state) {
    r.forward();
    benchmark::ClobberMemory();
  }
  const double io = double(sizeof(float)) * (double(r.params.size()) + 2.0 * double(r.x.size()));
  counters(state, r, forward_flops(r, v), io + r.saved_bytes);
}

template <class A>
void run_fwd_bwd(benchmark::State& state, const Variant& v, index_t T) {
  Rig<A> r(v, T, true);
  if (T < 8192) {
    r.forward();
    r.backward();
  }
  for (auto _ : state) {
    r.forward();
    r.backward();
    benchmark::ClobberMemory();
  }
  const double f = sizeof(float), P = double(r.params.size()), X = double(r.x.size());
  const double fwd_bytes = f * (P + 2 * X) + r.saved_bytes;
  const double bwd_bytes = f * (P + 2 * P + 2 * X) + r.saved_bytes + r.scratch_bytes;
  counters(state, r, 3.0 * forward_flops(r, v), fwd_bytes + bwd_bytes);
}

/// The decode cache of one layer at max_seq = T: no timed work, only counters.
template <class A>
void run_cache(benchmark::State& state, const Variant& v, index_t T) {
  ParamLayout layout;
  const typename A::template Module<float, linear::Dense> m(layout, "attn", dims_of(v, T));
  ParamLayout mha_layout;
  const Mha::Module<float, linear::Dense> mha(mha_layout, "attn", dims_of({"mha", kHeads, Pairs::causal}, T));
  for (auto _ : state) benchmark::DoNotOptimize(m.cache_elems(T));
  const double per_token = double(m.cache_elems(T)) * double(sizeof(float)) / double(T);
  state.counters["cache_bytes_per_token"] = per_token;
  state.counters["cache_elems_per_token"] = double(m.cache_elems(T)) / double(T);
  state.counters["vs_mha"] = per_token / (double(mha.cache_elems(T)) * double(sizeof(float)) / double(T));
  state.counters["cache_MiB_per_layer"] = double(m.cache_elems(T)) * double(sizeof(float)) / (1024.0 * 1024.0);
}

struct Entry {
  Variant v;
  void (*forward)(benchmark::State&, const Variant&, index_t);
  void (*fwd_bwd)(benchmark::State&, const Variant&, index_t);
  void (*cache)(benchmark::State&, const Variant&, index_t);
};

template <class A>
Entry entry(Variant v) {
  return {v, run_forward<A>, run_fwd_bwd<A>, run_cache<A>};
}

std::vector<Entry> entries() {
  return {
      entry<Mha>({"mha_kv8", 8, Pairs::causal}),
      entry<Mha>({"gqa_kv2", 2, Pairs::causal}),
      entry<Mha>({"mqa_kv1", 1, Pairs::causal}),
      entry<Window>({"window256_kv2", 2, Pairs::window}),
      entry<TopK>({"topk64_kv2", 2, Pairs::causal}),
      entry<Hier>({"hier_full_window256_kv2", 2, Pairs::causal_and_window}),
      entry<Mla>({"mla_q192_kv128", 1, Pairs::causal, Mla::head_dim, 64}),  // Dk = 64 + 32, Dv = 64; kv_heads ignored
  };
}

static_assert(Window::pattern::window == kWindow && TopK::pattern::top_k == kTopK);

}  // namespace

int main(int argc, char** argv) {
  const std::vector<Entry> all = entries();
  for (const index_t T : kSeqs) {
    const benchmark::IterationCount iters = T <= 512 ? 10 : T <= 2048 ? 3 : 1;
    for (const Entry& e : all) {
      const std::string suffix = std::string("/") + e.v.name + "/T:" + std::to_string(T);
      benchmark::RegisterBenchmark(("attention_module_forward" + suffix).c_str(), e.forward, e.v, T)
          ->UseRealTime()
          ->Iterations(iters)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("attention_module_fwd_bwd" + suffix).c_str(), e.fwd_bwd, e.v, T)
          ->UseRealTime()
          ->Iterations(iters)
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (const Entry& e : all)
    benchmark::RegisterBenchmark((std::string("kv_cache/") + e.v.name + "/T:8192").c_str(), e.cache, e.v, index_t{8192})
        ->Iterations(1);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
