// bench/cuda/bench_cuda_quant.cu — the quantized products on the GPU (kernels/quant_*.cuh) next to
// cuBLASLt's fp32 and bf16 GEMMs at the same shapes, in GPU time (CUDA events; cuda_bench_common.hpp).
//
// Each case computes y [M, N] = x [M, K] W [N, K]^T with y in fp32, as a linear layer's forward:
//   fp32               gpu::CublasLtGemm, fp32 x and W (full fp32 products);
//   bf16               gpu::CublasLtGemm, bf16 x and W, fp32 accumulation and output;
//   int8_sym/asym      gpu::quant::matmul for quant::Int8Symmetric / Int8Asymmetric: x quantized per
//                      token on the device, cuBLASLt IMMA int32 accumulation, our epilogue;
//   int4_g32/g128[_sym] quant::Int4Group: our GEMV-shaped kernel (M <= 16) or tiled kernel;
//   fp8_e4m3           quant::Fp8E4M3Block: x quantized to 1 x 128 tiles, then cuBLASLt's
//                      block-scaled fp8 GEMM where its rules hold (M a multiple of 4), else ours;
//   fp8_e5m2           quant::Fp8E5M2Block: always our kernel (cuBLAS has no E5M2 x E5M2 fp8);
//   *_own              the same product with WorkspaceOptions::use_cublaslt = false (our fallback).
// The label says which path ran (cublaslt / own_kernel). Weights are quantized once on the host
// beforehand (and cached across the cases of one (N, K)); activations are quantized inside the
// timed work, with synchronous_checks off (no stream synchronisation per call).
// Shapes: decode M = 1, batched M = 16 and 64, prefill M = 2048; N = K = 2048 and 4096.
// Counters (bench_common.hpp's napkin math): OP/s = 2 M N K per iteration (multiply-adds, integer
// or float); bytes/s = the compulsory traffic of every kernel the case launches (each operand read
// once and each result written once per kernel: activation quantization reads x and writes codes
// and scales; the product reads codes, scales, zero points and row sums and writes y or the int32
// accumulators; the int8 epilogue reads those and writes y); weight_bytes = every byte of the
// stored weights (codes, scales, zero points, row sums); bits_per_weight = 8 weight_bytes / (N K).
// Exit status 77 with require_device's message when there is no GPU.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cuda_bench_common.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/kernels/gemm.cuh"
#include "reason/kernels/quant_fp8.cuh"
#include "reason/kernels/quant_int4.cuh"
#include "reason/kernels/quant_int8.cuh"
#include "reason/quant/quant.hpp"

using namespace reason;
namespace hq = reason::quant;
namespace gq = reason::gpu::quant;
using bf16_t = __nv_bfloat16;

namespace {

struct Shape {
  const char* regime;
  index_t M, N, K;
};

std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (index_t nk : {2048, 4096}) {
    s.push_back({"decode", 1, nk, nk});
    s.push_back({"batch", 16, nk, nk});
    s.push_back({"batch", 64, nk, nk});
    s.push_back({"prefill", 2048, nk, nk});
  }
  return s;
}

std::string case_name(const char* scheme, const Shape& s) {
  return std::string("quant_gemm/") + scheme + "/" + s.regime + "/M:" + std::to_string(s.M) +
         "/N:" + std::to_string(s.N) + "/K:" + std::to_string(s.K);
}

void set_counters(benchmark::State& state, const Shape& s, double bytes, double weight_bytes) {
  const double M = double(s.M), N = double(s.N), K = double(s.K);
  state.counters["OP/s"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["bytes/s"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1024);
  state.counters["weight_bytes"] = weight_bytes;
  state.counters["bits_per_weight"] = 8.0 * weight_bytes / (N * K);
}

// ---- cuBLASLt dense baselines -----------------------------------------------------------------

template <class In>
void run_dense(benchmark::State& state, Shape s) {
  bench::guarded(state, [&] {
    const auto M = static_cast<std::size_t>(s.M), N = static_cast<std::size_t>(s.N), K = static_cast<std::size_t>(s.K);
    gpu::Stream stream;
    gpu::DeviceBuffer<In> x(M * K, "x"), w(N * K, "W");
    gpu::DeviceBuffer<float> y(M * N, "y");
    bench::fill_uniform(x, 1, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(w, 2, -1.0f, 1.0f, stream.get());
    gpu::CublasLtGemm gemm;
    bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) {
      gemm.run<In, float>(gpu::Trans::N, gpu::Trans::T, s.M, s.N, s.K, 1.0f, x.data(), s.K, w.data(), s.K, 0.0f,
                          y.data(), s.N, gpu::Compute::fp32, gpu::Epilogue::none, nullptr, st);
    });
    const double in = double(sizeof(In));
    state.SetLabel("cublaslt");
    set_counters(state, s, in * double(M * K + N * K) + 4.0 * double(M * N), in * double(N * K));
  });
}

// ---- quantized products -----------------------------------------------------------------------

/// Q's packing of a fixed random W [N, K], made once per (N, K).
template <class Q>
const typename Q::Packed& packed_weights(index_t N, index_t K) {
  static std::map<std::pair<index_t, index_t>, typename Q::Packed> cache;
  auto it = cache.find({N, K});
  if (it == cache.end()) {
    const std::vector<float> w = bench::random_floats(static_cast<std::size_t>(N * K), 2);
    it = cache.emplace(std::make_pair(N, K), Q::quantize(make_view(w.data(), N, K), "W")).first;
  }
  return it->second;
}

/// The compulsory bytes of the kernels a Q product launches, beyond the weights (see the header).
template <class Q>
double activation_bytes(const Shape& s) {
  const double M = double(s.M), N = double(s.N), K = double(s.K), cb = double((s.K + 127) / 128);
  if constexpr (std::is_same_v<typename Q::Packed, hq::Int8Matrix>) {
    // quantize: x read, codes + scale + zero point + row sum written; product: codes read, int32
    // accumulators written; epilogue: accumulators read, y written, both operands' per-row numbers read.
    return 4.0 * M * K + (M * K + 12.0 * M) + M * K + 4.0 * M * N + 8.0 * M * N + 12.0 * (M + N);
  } else if constexpr (Q::bits == 4) {
    return 4.0 * M * K + 4.0 * M * N;  // weight-only: x read, y written
  } else {
    // fp8: quantize: x read, codes + tile scales written; product: codes + tile scales read, y written.
    return 4.0 * M * K + 2.0 * (M * K + 4.0 * M * cb) + 4.0 * M * N;
  }
}

template <class Q>
void run_quantized(benchmark::State& state, Shape s, bool use_cublaslt) {
  bench::guarded(state, [&] {
    const auto M = static_cast<std::size_t>(s.M), N = static_cast<std::size_t>(s.N), K = static_cast<std::size_t>(s.K);
    const typename Q::Packed& packed = packed_weights<Q>(s.N, s.K);
    const gq::DevicePacked<Q> w = gq::upload<Q>(packed);
    gpu::Stream stream;
    gpu::DeviceBuffer<float> x(M * K, "x"), y(M * N, "y");
    bench::fill_uniform(x, 1, -1.0f, 1.0f, stream.get());
    gq::Workspace ws(gq::WorkspaceOptions{.synchronous_checks = false, .use_cublaslt = use_cublaslt});
    const View<const float, 2> xv(x.data(), {s.M, s.K});
    const View<float, 2> yv(y.data(), {s.M, s.N});
    gq::MatmulPath path = gq::MatmulPath::own_kernel;
    bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) { path = gq::matmul(ws, xv, w, yv, st); });
    ws.check_finite("bench_cuda_quant", "x", stream.get());
    state.SetLabel(gq::path_name(path));
    set_counters(state, s, activation_bytes<Q>(s) + double(packed.bytes()), double(packed.bytes()));
  });
}

template <class Q>
void register_quantized(const char* scheme, bool own_too) {
  for (const Shape& s : shapes()) {
    benchmark::RegisterBenchmark(case_name(scheme, s).c_str(), run_quantized<Q>, s, true)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    if (own_too)
      benchmark::RegisterBenchmark(case_name((std::string(scheme) + "_own").c_str(), s).c_str(), run_quantized<Q>, s,
                                   false)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
  }
}

void register_cases() {
  for (const Shape& s : shapes()) {
    benchmark::RegisterBenchmark(case_name("fp32", s).c_str(), run_dense<float>, s)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(case_name("bf16", s).c_str(), run_dense<bf16_t>, s)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  register_quantized<hq::Int8Symmetric>("int8_sym", true);
  register_quantized<hq::Int8Asymmetric>("int8_asym", false);
  register_quantized<hq::Int4Group<32>>("int4_g32", false);
  register_quantized<hq::Int4Group<128>>("int4_g128", false);
  register_quantized<hq::Int4Group<128, hq::Symmetry::symmetric>>("int4_g128_sym", false);
  register_quantized<hq::Fp8E4M3Block>("fp8_e4m3", true);
  register_quantized<hq::Fp8E5M2Block>("fp8_e5m2", false);
}

}  // namespace

int main(int argc, char** argv) { return bench::gpu_bench_main(argc, argv, "bench_cuda_quant", register_cases); }
