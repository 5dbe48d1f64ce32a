// bench/bench_attention.cpp — the host attention kernels (kernels/attention.hpp), forward and backward.
//
// q, k and v are strided [B, T, heads, D] views of one fused qkv buffer [B, T, H + 2 Hkv, D], as
// the MultiHead policy lays them out, and the forward saves the probabilities [B, H, T, T] the
// backward reads. Cases: the example models (B 32, T 64, D 32), then T, D, H and grouping varied.
// Napkin math per (batch, query head) with P scored pairs (T (T + 1) / 2 causal, T^2 otherwise):
//   forward  4 P D FLOPs (q.k and p.v, 2 D each);
//   backward 8 P D FLOPs (dout.v, dq, dk, dv, 2 D each): twice the forward;
//   bytes    forward reads q, k, v and writes out and probs; backward reads q, k, v, probs and dout,
//            writes dq, dk, dv (each once: the compulsory traffic). The exp of the softmax is not counted.
// Work is split over (batch, head) by reason's thread pool: real time.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench_common.hpp"
#include "reason/kernels/attention.hpp"

using namespace reason;

namespace {

struct Case {
  index_t B, T, H, Hkv, D;
  bool causal = true;
};

std::vector<Case> cases() {
  return {
      {32, 64, 4, 4, 32},  {32, 64, 4, 2, 32},         // SFT default model (MHA, and the example's 2 kv heads)
      {32, 64, 8, 8, 32},  {32, 64, 8, 4, 32},         // width 256, 8 heads
      {8, 64, 8, 8, 64},   {8, 128, 8, 8, 64},  {8, 256, 8, 8, 64},  // sequence length
      {8, 256, 8, 4, 64},  {8, 256, 8, 8, 32},  {8, 256, 4, 4, 64},  // grouping, head dim, heads
      {16, 128, 4, 2, 64}, {32, 128, 8, 8, 32},
      {8, 64, 4, 4, 32},                                // small (the smoke test)
      {8, 256, 8, 8, 64, false},                        // no mask: twice the pairs
  };
}

struct Buffers {
  std::vector<float> qkv, probs, out, dout, dqkv;
  View<const float, 4> q, k, v;
  View<float, 4> dq, dk, dv;
};

Buffers make_buffers(const Case& c) {
  Buffers b;
  const index_t w = c.H + 2 * c.Hkv;  // heads per token in the fused buffer
  b.qkv = bench::random_floats(static_cast<std::size_t>(c.B * c.T * w * c.D), 1);
  b.dqkv.assign(b.qkv.size(), 0.0f);
  b.probs.assign(static_cast<std::size_t>(c.B * c.H * c.T * c.T), 0.0f);
  b.out.assign(static_cast<std::size_t>(c.B * c.T * c.H * c.D), 0.0f);
  b.dout = bench::random_floats(b.out.size(), 2);
  auto split = [&](float* base, index_t h0, index_t heads) {  // [B, T, heads, D] view of the fused buffer
    return View<float, 4>(base + h0 * c.D, {c.B, c.T, heads, c.D}, {c.T * w * c.D, w * c.D, c.D, 1});
  };
  b.q = split(b.qkv.data(), 0, c.H);
  b.k = split(b.qkv.data(), c.H, c.Hkv);
  b.v = split(b.qkv.data(), c.H + c.Hkv, c.Hkv);
  b.dq = split(b.dqkv.data(), 0, c.H);
  b.dk = split(b.dqkv.data(), c.H, c.Hkv);
  b.dv = split(b.dqkv.data(), c.H + c.Hkv, c.Hkv);
  return b;
}

double scored_pairs(const Case& c) {
  const double t = double(c.T);
  return double(c.B) * double(c.H) * (c.causal ? t * (t + 1) / 2 : t * t);
}

void run_forward(benchmark::State& state, const Case& c) {
  Buffers b = make_buffers(c);
  const View<float, 4> probs = make_view(b.probs.data(), c.B, c.H, c.T, c.T), out = make_view(b.out.data(), c.B, c.T, c.H, c.D);
  for (auto _ : state) {
    kernels::attention_forward<float>(b.q, b.k, b.v, c.causal, probs, out);
    benchmark::ClobberMemory();
  }
  const double qkv = double(b.qkv.size()), o = double(b.out.size()), p = double(b.probs.size());
  bench::set_roofline(state, 4.0 * scored_pairs(c) * double(c.D), 4.0 * (qkv + o + p));
}

void run_backward(benchmark::State& state, const Case& c) {
  Buffers b = make_buffers(c);
  const View<float, 4> probs = make_view(b.probs.data(), c.B, c.H, c.T, c.T), out = make_view(b.out.data(), c.B, c.T, c.H, c.D);
  kernels::attention_forward<float>(b.q, b.k, b.v, c.causal, probs, out);  // the probabilities the backward reads
  const View<const float, 4> dout = make_view(static_cast<const float*>(b.dout.data()), c.B, c.T, c.H, c.D);
  for (auto _ : state) {
    kernels::attention_backward<float>(b.q, b.k, b.v, probs, dout, b.dq, b.dk, b.dv);
    benchmark::ClobberMemory();
  }
  const double qkv = double(b.qkv.size()), o = double(b.out.size()), p = double(b.probs.size());
  bench::set_roofline(state, 8.0 * scored_pairs(c) * double(c.D), 4.0 * (2 * qkv + o + p));
}

}  // namespace

int main(int argc, char** argv) {
  for (const Case& c : cases()) {
    const std::string shape = "/B:" + std::to_string(c.B) + "/T:" + std::to_string(c.T) + "/H:" + std::to_string(c.H) +
                              "/Hkv:" + std::to_string(c.Hkv) + "/D:" + std::to_string(c.D) +
                              (c.causal ? "/causal" : "/full");
    benchmark::RegisterBenchmark(("attention_forward" + shape).c_str(), run_forward, c)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("attention_backward" + shape).c_str(), run_backward, c)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
