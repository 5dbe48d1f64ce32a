// bench/cuda/bench_cuda_attention.cu — flash attention forward and backward on the GPU
// (kernels/attention.cuh), bf16, causal, in GPU time (CUDA events; cuda_bench_common.hpp).
//
//   flash_attention_fwd/bf16/B:/T:/H:/Hkv:/D:/causal   gpu::flash_attention_forward: q, k, v ->
//                                                      out [B, T, H, D] and lse [B, H, T] (fp32, kept
//                                                      for the backward, as training runs it);
//   flash_attention_bwd/bf16/B:/T:/H:/Hkv:/D:/causal   gpu::flash_attention_backward: q, k, v, out,
//                                                      lse, dout -> dq, dk, dv (out and lse from one
//                                                      untimed forward).
// Shapes: 16k tokens per call, B x T = 16 x 1024, 4 x 4096, 1 x 16384, at H 16 of D 128 and H 32 of
// D 64 (model width 2048 either way), Hkv = H; q, k, v, out and the gradients are separate
// contiguous [B, T, H, D] buffers (PyTorch's side of bench/torch_side_by_side.py has the same
// memory layout: [B, T, H, D] tensors passed to SDPA transposed).
// FLOPs as FlashAttention reports them: forward 4 B H T^2 D, halved when causal; backward 2.5x
// the forward. Bytes (compulsory): forward reads q, k, v and writes out (2 bytes each) and lse (4);
// backward reads q, k, v, out, dout, lse and writes dq, dk, dv.
// Its own executable, separate from bench_cuda_kernels: a fault in the attention kernels (a sticky
// CUDA error ends every later case of the process) does not cost the other figures.
// Exit status 77 with require_device's message when there is no GPU.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "cuda/cuda_bench_common.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/attention.cuh"

using namespace reason;
using bf16_t = __nv_bfloat16;

namespace {

struct AttnShape {
  index_t B, T, H, D;
};

double forward_flops(const AttnShape& s) {
  return 4.0 * double(s.B) * double(s.H) * double(s.T) * double(s.T) * double(s.D) / 2.0;  // causal
}

void run_attention(benchmark::State& state, AttnShape s, bool backward) {
  bench::guarded(state, [&] {
    const index_t Hkv = s.H;
    const auto qn = static_cast<std::size_t>(s.B * s.T * s.H * s.D);
    const auto kn = static_cast<std::size_t>(s.B * s.T * Hkv * s.D);
    const auto ln = static_cast<std::size_t>(s.B * s.H * s.T);
    gpu::Stream stream;
    gpu::DeviceBuffer<bf16_t> q(qn, "q"), k(kn, "k"), v(kn, "v"), out(qn, "out");
    gpu::DeviceBuffer<float> lse(ln, "lse");
    bench::fill_uniform(q, 31, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(k, 32, -1.0f, 1.0f, stream.get());
    bench::fill_uniform(v, 33, -1.0f, 1.0f, stream.get());
    const View<const bf16_t, 4> qv = make_view(static_cast<const bf16_t*>(q.data()), s.B, s.T, s.H, s.D);
    const View<const bf16_t, 4> kv = make_view(static_cast<const bf16_t*>(k.data()), s.B, s.T, Hkv, s.D);
    const View<const bf16_t, 4> vv = make_view(static_cast<const bf16_t*>(v.data()), s.B, s.T, Hkv, s.D);
    const View<bf16_t, 4> ov = make_view(out.data(), s.B, s.T, s.H, s.D);
    const View<float, 3> lv = make_view(lse.data(), s.B, s.H, s.T);
    const double fwd = forward_flops(s);
    const double io = 2.0 * double(qn), kvio = 2.0 * double(kn), lio = 4.0 * double(ln);
    if (!backward) {
      bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) {
        gpu::flash_attention_forward<bf16_t>(qv, kv, vv, /*causal=*/true, ov, lv, st);
      });
      bench::set_roofline(state, fwd, 2.0 * io + 2.0 * kvio + lio);
      return;
    }
    gpu::DeviceBuffer<bf16_t> dout(qn, "dout"), dq(qn, "dq"), dk(kn, "dk"), dv(kn, "dv");
    bench::fill_uniform(dout, 34, -1.0f, 1.0f, stream.get());
    gpu::flash_attention_forward<bf16_t>(qv, kv, vv, true, ov, lv, stream.get());
    gpu::FlashAttentionWorkspace ws;
    const View<const bf16_t, 4> outc = ov, doutc = make_view(static_cast<const bf16_t*>(dout.data()), s.B, s.T, s.H, s.D);
    const View<const float, 3> lc = lv;
    const View<bf16_t, 4> dqv = make_view(dq.data(), s.B, s.T, s.H, s.D);
    const View<bf16_t, 4> dkv = make_view(dk.data(), s.B, s.T, Hkv, s.D);
    const View<bf16_t, 4> dvv = make_view(dv.data(), s.B, s.T, Hkv, s.D);
    bench::time_on_gpu(state, stream.get(), [&](cudaStream_t st) {
      gpu::flash_attention_backward<bf16_t>(ws, qv, kv, vv, outc, lc, doutc, /*causal=*/true, dqv, dkv, dvv, st);
    });
    // read q, k, v, out, dout, lse; write dq, dk, dv
    bench::set_roofline(state, 2.5 * fwd, 3.0 * io + 2.0 * kvio + lio + io + 2.0 * kvio);
  });
}

void register_cases() {
  const index_t tokens = 16384;
  constexpr std::pair<index_t, index_t> heads[] = {{16, 128}, {32, 64}};  // (H, D)
  for (bool backward : {false, true})
    for (index_t T : {1024, 4096, 16384})
      for (const auto& [H, D] : heads) {
        const AttnShape s{tokens / T, T, H, D};
        const std::string name = std::string(backward ? "flash_attention_bwd" : "flash_attention_fwd") +
                                 "/bf16/B:" + std::to_string(s.B) + "/T:" + std::to_string(T) + "/H:" +
                                 std::to_string(H) + "/Hkv:" + std::to_string(H) + "/D:" + std::to_string(D) +
                                 "/causal";
        benchmark::RegisterBenchmark(name.c_str(), run_attention, s, backward)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::gpu_bench_main(argc, argv, "bench_cuda_attention", register_cases);
}
