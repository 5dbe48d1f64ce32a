// bench/cuda/cuda_bench_common.hpp — what the GPU benchmarks share: device-filled inputs, timing with
// CUDA events, and a main() that says plainly when there is no GPU.
//
// Timing rule: a case's figure is GPU time, not host time. Each benchmark iteration records a
// gpu::Event, enqueues `inner` repetitions of the work on one stream, records a second event and
// reports (elapsed / inner) through state.SetIterationTime; the case is registered with
// ->UseManualTime(), so Google Benchmark's iteration count, the reported time and every rate
// counter (bench::set_roofline's FLOP/s and bytes/s: kIsIterationInvariantRate divides by the
// manual time when there is one) all use the GPU's clock. `inner` is chosen once per case after a
// warm-up so that one timed span is at least ~1 ms (so sub-10-µs kernels are timed back to back,
// as a training step runs them, not one launch gap each); the counter "inner" records it.
// Inputs are filled on the device from a counter-based hash (never zeros: METHOD.md), so the
// host never holds the 0.5–2 GB some cases need.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>

#include "bench_common.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"

namespace reason::bench {

namespace detail {
__device__ __forceinline__ std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <class T>
__global__ void fill_uniform_kernel(T* p, std::size_t n, std::uint64_t seed, float lo, float hi) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::uint64_t h = splitmix64(seed * 0xD1B54A32D192ED03ull + i);
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // 24 bits: [0, 1)
    const float x = lo + (hi - lo) * u;
    if constexpr (std::is_same_v<T, float>)
      p[i] = x;
    else
      p[i] = __float2bfloat16_rn(x);
  }
}
}  // namespace detail

/// p[0, n) uniform in [lo, hi) (float or __nv_bfloat16), from a hash of (seed, index): every run
/// times the same numbers. Asynchronous on `stream`.
template <class T>
void fill_uniform(T* p, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t stream) {
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, 65536));
  detail::fill_uniform_kernel<T><<<blocks, 256, 0, stream>>>(p, n, seed, lo, hi);
  REASON_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void fill_uniform(gpu::DeviceBuffer<T>& b, std::uint64_t seed, float lo, float hi, cudaStream_t stream) {
  fill_uniform(b.data(), b.size(), seed, lo, hi, stream);
}

/// A bytes/s counter alone, for memory-bound cases with no FLOPs worth counting.
inline void set_bandwidth(benchmark::State& state, double bytes) {
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
}

/// Times `work(stream)` on the GPU for every benchmark iteration (see the header comment).
/// `work` enqueues one repetition of the measured operation on the stream it is given.
template <class Work>
void time_on_gpu(benchmark::State& state, cudaStream_t stream, Work&& work, double min_span_ms = 1.0) {
  gpu::Event start, stop;
  work(stream);  // warm-up: plans, workspaces, module load
  REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
  start.record(stream);
  work(stream);
  stop.record(stream);
  const double once_ms = std::max(1e-4, static_cast<double>(stop.elapsed_ms_since(start)));
  const int inner = static_cast<int>(std::clamp(std::ceil(min_span_ms / once_ms), 1.0, 1000.0));
  for (auto _ : state) {
    start.record(stream);
    for (int r = 0; r < inner; ++r) work(stream);
    stop.record(stream);
    state.SetIterationTime(static_cast<double>(stop.elapsed_ms_since(start)) * 1e-3 / inner);
  }
  REASON_CUDA_CHECK(cudaGetLastError());
  state.counters["inner"] = inner;
}

/// Runs a case body; a reason::Error (or any std::exception) becomes a skipped case with its message
/// (Google Benchmark would otherwise terminate the program on the first throw).
template <class Body>
void guarded(benchmark::State& state, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

/// main() of a GPU benchmark: flags, then the device check (exit 77 with require_device's message
/// when there is no usable GPU, as the CUDA tests do; `--benchmark_list_tests` works without one),
/// the device and CUDA versions into the JSON context, then the cases `register_cases` registers.
template <class Register>
int gpu_bench_main(int argc, char** argv, const char* program, Register&& register_cases) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--benchmark_list_tests", 22) == 0 && std::strstr(argv[i], "=false") == nullptr)
      listing = true;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    if (!listing) {
      const gpu::DeviceInfo dev = gpu::require_device(0);
      int runtime = 0, driver = 0;
      REASON_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
      REASON_CUDA_CHECK(cudaDriverGetVersion(&driver));
      benchmark::AddCustomContext("gpu", dev.name);
      benchmark::AddCustomContext("gpu_compute_capability", std::to_string(dev.major) + "." + std::to_string(dev.minor));
      benchmark::AddCustomContext("gpu_multiprocessors", std::to_string(dev.multiprocessors));
      benchmark::AddCustomContext("gpu_memory_bytes", std::to_string(dev.memory_bytes));
      benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
      benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
      benchmark::AddCustomContext("cuda_architectures", gpu::compiled_architectures());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 77;  // no usable GPU: nothing here can run (CTest: skipped)
  }
  try {
    register_cases();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace reason::bench
