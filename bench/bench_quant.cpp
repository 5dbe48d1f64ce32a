// bench/bench_quant.cpp — the host quantized products next to the fp32 GEMM at the same shapes.
//
// Each case computes y [M, N] = x [M, K] W [N, K]^T with float x, as a quantized linear layer's
// forward does (the weights quantized once beforehand, activations, where the scheme quantizes
// them, quantized inside the timed call):
//   fp32            reason::kernels::gemm<float> (OpenBLAS under REASON_WITH_CBLAS, split across reason's pool);
//   int8_sym        quant::Int8Symmetric: per-channel weights, per-token activations, int32 accumulation;
//   int8_asym       quant::Int8Asymmetric: the same with zero points and their row-sum corrections;
//   int4_g<G>[_sym] quant::Int4Group<G>: weight-only, groups of G, unpacked inside the product;
//   fp8_e4m3/e5m2   quant::Fp8Block: 1 x 128 activation tiles, 128 x 128 weight blocks, promotion every 128.
// Shapes: `decode` (M = 1) and `batch16` (M = 16) against a 2048 x 2048 weight, where the weight
// bytes dominate; `prefill` (M = 512) against the width-256 model's gate_up projection [1536, 256].
// Counters: OP/s = 2 M N K per iteration (multiply-adds, integer or float); bytes/s = the compulsory
// traffic 4 M K (x) + weight_bytes + 4 M N (y); weight_bytes = every byte of the packed weights
// (codes, scales, zero points, row sums); bits_per_weight = 8 weight_bytes / (N K). Real time:
// everything runs on reason's thread pool.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench_common.hpp"
#include "reason/kernels/gemm.hpp"
#include "reason/quant/quant.hpp"

using namespace reason;

namespace {

struct Shape {
  const char* label;
  index_t M, N, K;
};

constexpr Shape kShapes[] = {
    {"decode", 1, 2048, 2048},
    {"batch16", 16, 2048, 2048},
    {"prefill", 512, 1536, 256},
};

void set_counters(benchmark::State& state, const Shape& s, std::size_t weight_bytes) {
  const double M = double(s.M), N = double(s.N), K = double(s.K);
  state.counters["OP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.counters["bytes/s"] = benchmark::Counter(4.0 * M * K + double(weight_bytes) + 4.0 * M * N,
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
  state.counters["weight_bytes"] = double(weight_bytes);
  state.counters["bits_per_weight"] = 8.0 * double(weight_bytes) / (N * K);
}

void run_fp32(benchmark::State& state, Shape s) {
  const std::vector<float> x = bench::random_floats(std::size_t(s.M * s.K), 1), w = bench::random_floats(std::size_t(s.N * s.K), 2);
  std::vector<float> y(std::size_t(s.M * s.N));
  const View<const float, 2> xv = make_view(x.data(), s.M, s.K), wv = make_view(w.data(), s.N, s.K);
  const View<float, 2> yv = make_view(y.data(), s.M, s.N);
  for (auto _ : state) {
    kernels::gemm<float>(kernels::Trans::N, kernels::Trans::T, 1.0f, xv, wv, 0.0f, yv);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, w.size() * sizeof(float));
}

template <quant::Quantizer Q>
void run_quantized(benchmark::State& state, Shape s) {
  const std::vector<float> x = bench::random_floats(std::size_t(s.M * s.K), 1), w = bench::random_floats(std::size_t(s.N * s.K), 2);
  std::vector<float> y(std::size_t(s.M * s.N));
  const View<const float, 2> xv = make_view(x.data(), s.M, s.K);
  const View<float, 2> yv = make_view(y.data(), s.M, s.N);
  const typename Q::Packed packed = Q::quantize(make_view(w.data(), s.N, s.K), "w");
  for (auto _ : state) {
    Q::matmul(xv, packed, yv);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, packed.bytes());
}

template <quant::Quantizer Q>
void register_quantized(const char* scheme) {
  for (const Shape& s : kShapes) {
    const std::string name = std::string("quant_matmul/") + scheme + "/" + s.label + "/M:" + std::to_string(s.M) +
                             "/N:" + std::to_string(s.N) + "/K:" + std::to_string(s.K);
    benchmark::RegisterBenchmark(name.c_str(), run_quantized<Q>, s)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (const Shape& s : kShapes) {
    const std::string name = std::string("quant_matmul/fp32/") + s.label + "/M:" + std::to_string(s.M) +
                             "/N:" + std::to_string(s.N) + "/K:" + std::to_string(s.K);
    benchmark::RegisterBenchmark(name.c_str(), run_fp32, s)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
  register_quantized<quant::Int8Symmetric>("int8_sym");
  register_quantized<quant::Int8Asymmetric>("int8_asym");
  register_quantized<quant::Int4Group<32>>("int4_g32");
  register_quantized<quant::Int4Group<128>>("int4_g128");
  register_quantized<quant::Int4Group<128, quant::Symmetry::symmetric>>("int4_g128_sym");
  register_quantized<quant::Fp8E4M3Block>("fp8_e4m3");
  register_quantized<quant::Fp8E5M2Block>("fp8_e5m2");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
