// bench/cuda/bench_cuda_kernels.cu — the CUDA backend's GEMM with fused epilogues and its AdamW
// update, in GPU time (CUDA events; cuda_bench_common.hpp), with roofline counters.
//
//   gemm/bf16/fused/<epilogue>/M:/N:/K:     gpu::CublasLtGemm, y[M, N] = epi(x[M, K] W[N, K]^T + b[N]),
//                                            bf16 in and out, fp32 accumulation, the epilogue (none,
//                                            bias, relu_bias, gelu_bias: cuBLASLt's tanh GELU) fused;
//   gemm/bf16/unfused/<epilogue>/M:/N:/K:   the same result as a plain GEMM, then a separate
//                                            element-wise kernel y = act(y + b) (one extra read and
//                                            write of y): what the fusion saves.
//   Shapes: GPT-2 small's linear layers on 8192 tokens ((N, K) = (3072, 768) c_fc, (768, 3072)
//   c_proj, (2304, 768) c_attn) and the examples' small models on 2048 tokens ((384, 128),
//   (128, 384), (256, 128)). FLOPs 2MNK (the epilogue is not counted); bytes 2 (MK + NK + MN + N):
//   the op's compulsory traffic, the same for the fused and the unfused form, so the unfused
//   form's bytes/s is lower by exactly its extra pass.
//
//   adamw/grad:<fp32|bf16>/acc:<double|float>/N:   gpu::adamw_step (fp32 params and moments) over
//                                            one 124M-element tensor (decayed, [124, 1000000]);
//                                            bytes = compulsory traffic: read p, g, m, v, write p,
//                                            m, v: 28 bytes per element with fp32 gradients, 26
//                                            with bf16. No FLOP counter (memory bound).
//   copy/d2d/bytes:                          cudaMemcpyAsync device to device of 14 x 124M bytes,
//                                            counted read + write (28 x 124M): the bandwidth
//                                            ceiling the AdamW figures are to be read against.
// Exit status 77 with require_device's message when there is no GPU.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cuda/cuda_bench_common.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/kernels/adamw.cuh"
#include "reason/kernels/gemm.cuh"

using namespace reason;
using bf16_t = __nv_bfloat16;

namespace {

// ---- GEMM -------------------------------------------------------------------------------------

struct GemmShape {
  index_t M, N, K;
};
constexpr GemmShape gemm_shapes[] = {
    {8192, 3072, 768}, {8192, 768, 3072}, {8192, 2304, 768},  // GPT-2 small: c_fc, c_proj, c_attn
    {2048, 384, 128},  {2048, 128, 384},  {2048, 256, 128},   // the examples' width-128 model
};

const char* epilogue_name(gpu::Epilogue e) {
  switch (e) {
    case gpu::Epilogue::none: return "none";
    case gpu::Epilogue::bias: return "bias";
    case gpu::Epilogue::relu_bias: return "relu_bias";
    case gpu::Epilogue::gelu_bias: return "gelu_bias";
  }
  return "?";
}

/// The unfused epilogue: y[r, c] = act(y[r, c] + b[c]) in place, bf16 storage, fp32 math, 8
/// elements (16 bytes) a thread (N % 8 == 0 here). GELU is the tanh form cuBLASLt uses.
template <gpu::Epilogue E>
__global__ void __launch_bounds__(256) bias_act_kernel(bf16_t* __restrict__ y, const bf16_t* __restrict__ b,
                                                       std::size_t vecs, int n_vecs_per_row) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= vecs) return;
  const int col = static_cast<int>(i % static_cast<std::size_t>(n_vecs_per_row)) * 8;
  uint4 yv = reinterpret_cast<uint4*>(y)[i];
  const uint4 bv = *reinterpret_cast<const uint4*>(b + col);
  auto* yh = reinterpret_cast<__nv_bfloat162*>(&yv);
  const auto* bh = reinterpret_cast<const __nv_bfloat162*>(&bv);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float2 v = __bfloat1622float2(yh[k]);
    const float2 bb = __bfloat1622float2(bh[k]);
    v.x += bb.x;
    v.y += bb.y;
    if constexpr (E == gpu::Epilogue::relu_bias) {
      v.x = fmaxf(v.x, 0.0f);
      v.y = fmaxf(v.y, 0.0f);
    } else if constexpr (E == gpu::Epilogue::gelu_bias) {
      constexpr float c = 0.7978845608028654f;  // sqrt(2 / pi)
      v.x = 0.5f * v.x * (1.0f + tanhf(c * (v.x + 0.044715f * v.x * v.x * v.x)));
      v.y = 0.5f * v.y * (1.0f + tanhf(c * (v.y + 0.044715f * v.y * v.y * v.y)));
    }
    yh[k] = __float22bfloat162_rn(v);
  }
  reinterpret_cast<uint4*>(y)[i] = yv;
}

void bias_act(gpu::Epilogue e, bf16_t* y, const bf16_t* b, index_t M, index_t N, cudaStream_t stream) {
  REASON_CHECK(N % 8 == 0, "bench bias_act: N = ", N, " must be a multiple of 8");
  const std::size_t vecs = static_cast<std::size_t>(M) * static_cast<std::size_t>(N) / 8;
  const auto blocks = static_cast<unsigned>((vecs + 255) / 256);
  const int per_row = static_cast<int>(N / 8);
  switch (e) {
    case gpu::Epilogue::bias: bias_act_kernel<gpu::Epilogue::bias><<<blocks, 256, 0, stream>>>(y, b, vecs, per_row); break;
    case gpu::Epilogue::relu_bias:
      bias_act_kernel<gpu::Epilogue::relu_bias><<<blocks, 256, 0, stream>>>(y, b, vecs, per_row);
      break;
    case gpu::Epilogue::gelu_bias:
      bias_act_kernel<gpu::Epilogue::gelu_bias><<<blocks, 256, 0, stream>>>(y, b, vecs, per_row);
      break;
    case gpu::Epilogue::none: return;
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

void run_gemm(benchmark::State& state, GemmShape s, gpu::Epilogue epi, bool fused) {
  bench::guarded(state, [&] {
    const auto M = static_cast<std::size_t>(s.M), N = static_cast<std::size_t>(s.N), K = static_cast<std::size_t>(s.K);
    gpu::Stream stream;
    gpu::DeviceBuffer<bf16_t> x(M * K, "x"), w(N * K, "W"), b(N, "bias"), y(M * N, "y");
    bench::fill_uniform(x, 1, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(w, 2, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(b, 3, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(y, 4, -1.0f, 1.0f, stream.get());
    gpu::CublasLtGemm gemm;
    const gpu::Epilogue in_gemm = fused ? epi : gpu::Epilogue::none;
    bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) {
      gemm.run<bf16_t, bf16_t>(gpu::Trans::N, gpu::Trans::T, s.M, s.N, s.K, 1.0f, x.data(), s.K, w.data(), s.K, 0.0f, y.data(),
                               s.N, gpu::Compute::fp32, in_gemm, in_gemm == gpu::Epilogue::none ? nullptr : b.data(),
                               st);
      if (!fused) bias_act(epi, y.data(), b.data(), s.M, s.N, st);
    });
    const double m = double(s.M), n = double(s.N), k = double(s.K);
    bench::set_roofline(state, 2.0 * m * n * k,
                        2.0 * (m * k + n * k + m * n + (epi == gpu::Epilogue::none ? 0.0 : n)));
  });
}

// ---- AdamW and the copy ceiling -----------------------------------------------------------------

constexpr std::size_t adamw_n = 124'000'000;  // GPT-2 small's ~124M parameters

template <class G, class Acc>
void run_adamw(benchmark::State& state) {
  bench::guarded(state, [&] {
    ParamLayout layout;
    layout.add("weight", {124, static_cast<index_t>(adamw_n / 124)}, Init::normal, 0.02);  // 2-D: decayed
    const std::size_t n = layout.size();
    gpu::Stream stream;
    gpu::DeviceBuffer<float> p(n, "params"), m(n, "exp_avg"), v(n, "exp_avg_sq");
    gpu::DeviceBuffer<G> g(n, "grads");
    bench::fill_uniform(p, 11, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(g, 12, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(m, 13, -0.1f, 0.1f, stream.get());
    bench::fill_uniform(v, 14, 0.0f, 0.01f, stream.get());
    const optim::AdamW::Config config{};  // beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1
    std::int64_t t = 0;
    bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) {
      gpu::adamw_step<G, Acc>(layout, std::span<float>(p.data(), n), std::span<const G>(g.data(), n),
                              std::span<float>(m.data(), n), std::span<float>(v.data(), n), config, 1e-4, ++t, st);
    });
    bench::set_bandwidth(state, double(n) * (4.0 * 6 + double(sizeof(G))));
  });
}

void run_copy(benchmark::State& state, std::size_t bytes) {
  bench::guarded(state, [&] {
    gpu::Stream stream;
    gpu::DeviceBuffer<std::byte> src(bytes, "copy source"), dst(bytes, "copy destination");
    bench::fill_uniform(reinterpret_cast<float*>(src.data()), bytes / 4, 21, -1.0f, 1.0f, stream.get());
    bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) {
      REASON_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, st));
    });
    bench::set_bandwidth(state, 2.0 * double(bytes));
  });
}

void register_cases() {
  for (const GemmShape& s : gemm_shapes) {
    const std::string shape =
        "/M:" + std::to_string(s.M) + "/N:" + std::to_string(s.N) + "/K:" + std::to_string(s.K);
    for (gpu::Epilogue e : {gpu::Epilogue::none, gpu::Epilogue::bias, gpu::Epilogue::relu_bias, gpu::Epilogue::gelu_bias})
      for (bool fused : {true, false}) {
        if (!fused && e == gpu::Epilogue::none) continue;  // nothing to fuse
        const std::string name =
            std::string("gemm/bf16/") + (fused ? "fused/" : "unfused/") + epilogue_name(e) + shape;
        benchmark::RegisterBenchmark(name.c_str(), run_gemm, s, e, fused)->UseManualTime()->Unit(benchmark::kMicrosecond);
      }
  }
  const std::string n = "/N:" + std::to_string(adamw_n);
  benchmark::RegisterBenchmark(("adamw/grad:fp32/acc:double" + n).c_str(), run_adamw<float, double>)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("adamw/grad:fp32/acc:float" + n).c_str(), run_adamw<float, float>)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("adamw/grad:bf16/acc:double" + n).c_str(), run_adamw<bf16_t, double>)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("adamw/grad:bf16/acc:float" + n).c_str(), run_adamw<bf16_t, float>)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  const std::size_t copy_bytes = adamw_n * 14;  // read + write = AdamW's 28 bytes per element (fp32 grads)
  benchmark::RegisterBenchmark(("copy/d2d/bytes:" + std::to_string(copy_bytes)).c_str(), run_copy, copy_bytes)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) { return bench::gpu_bench_main(argc, argv, "bench_cuda_kernels", register_cases); }
