// bench/bench_gemm.cpp — the host GEMM at the shapes a training step of the example models runs.
//
// Four ways to compute the same C = op(A) op(B) (+ C), side by side:
//   reason    reason::kernels::gemm<float>: single-threaded OpenBLAS calls, C split in row (or
//             column) blocks across reason's thread pool (what every layer of the library calls);
//   cblas     cblas_sgemm called directly on the whole problem with OpenBLAS's own threads, one per
//             core (what a user would otherwise write);
//   cblas_1t  the same call on one OpenBLAS thread (the per-block work of `reason`, unsplit);
//   blocked   reason::kernels::detail::gemm_blocked, the cache-blocked fallback used without CBLAS.
// Shapes: each linear layer y = x W^T of the example models gives three GEMMs per step —
// forward (NT: [M, out] = [M, in] [out, in]^T), input gradient (NN: dx = dy W) and weight
// gradient (TN, beta = 1: dW += dy^T x, where the token count becomes the inner dimension) —
// with M = batch x seq tokens (32 x 64 = 2048 for the SFT default, 4096 for a batch of 64), plus
// square problems for reference. Counters: FLOP/s = 2 M N K per iteration; bytes/s = 4 (MK + KN + MN)
// (+ MN when C is also read, beta = 1). All real time: every variant but cblas_1t is threaded.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "bench_common.hpp"
#include "reason/kernels/gemm.hpp"

using namespace reason;
using kernels::Trans;

namespace {

struct Case {
  std::string label;  // which GEMM of which model this is
  Trans ta, tb;
  index_t M, N, K;
  float beta;
};

enum class Impl { reason, cblas, cblas_1t, blocked };
constexpr const char* impl_name(Impl i) {
  switch (i) {
    case Impl::reason: return "reason";
    case Impl::cblas: return "cblas";
    case Impl::cblas_1t: return "cblas_1t";
    case Impl::blocked: return "blocked";
  }
  return "?";
}

/// The three GEMMs of a linear layer in -> out over `tokens` rows: forward, input and weight gradient.
void add_linear(std::vector<Case>& cases, const std::string& name, index_t tokens, index_t in, index_t out,
                bool backward = true) {
  cases.push_back({name + "_fwd", Trans::N, Trans::T, tokens, out, in, 0.0f});
  if (!backward) return;
  cases.push_back({name + "_dx", Trans::N, Trans::N, tokens, in, out, 0.0f});
  cases.push_back({name + "_dw", Trans::T, Trans::N, out, in, tokens, 1.0f});
}

std::vector<Case> cases() {
  std::vector<Case> c;
  // SFT default: width 128, 4 heads of 32 (MHA), SwiGLU 384, vocab 262; 32 x 64 tokens.
  add_linear(c, "w128_qkv", 2048, 128, 384);
  add_linear(c, "w128_o", 2048, 128, 128);
  add_linear(c, "w128_gate_up", 2048, 128, 768);
  add_linear(c, "w128_down", 2048, 384, 128);
  add_linear(c, "w128_lm_head", 2048, 128, 262);
  // Width 256, 8 heads, SwiGLU 768, on 4096 tokens (batch 64 x 64).
  add_linear(c, "w256_qkv", 4096, 256, 768, false);
  add_linear(c, "w256_gate_up", 4096, 256, 1536, false);
  add_linear(c, "w256_down", 4096, 768, 256);
  add_linear(c, "w256_ffn_in_512", 4096, 256, 512, false);
  for (index_t n : {256, 512, 1024}) c.push_back({"square", Trans::N, Trans::N, n, n, n, 0.0f});
  return c;
}

void run_gemm(benchmark::State& state, Impl impl, const Case& c) {
  const index_t a_rows = c.ta == Trans::N ? c.M : c.K, a_cols = c.ta == Trans::N ? c.K : c.M;
  const index_t b_rows = c.tb == Trans::N ? c.K : c.N, b_cols = c.tb == Trans::N ? c.N : c.K;
  const std::vector<float> a = bench::random_floats(static_cast<std::size_t>(c.M * c.K), 1);
  const std::vector<float> b = bench::random_floats(static_cast<std::size_t>(c.K * c.N), 2);
  std::vector<float> cm(static_cast<std::size_t>(c.M * c.N), 0.0f);
  const View<const float, 2> A = make_view(a.data(), a_rows, a_cols), B = make_view(b.data(), b_rows, b_cols);
  const View<float, 2> C = make_view(cm.data(), c.M, c.N);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // reason::kernels::gemm sets OpenBLAS to one thread on first use; the direct calls choose their own
  // count and put it back to one afterwards.
  if (impl == Impl::reason) kernels::gemm<float>(c.ta, c.tb, 1.0f, A, B, c.beta, C);  // warm-up, sets 1 thread
  if (impl == Impl::cblas) openblas_set_num_threads(cores);
  if (impl == Impl::cblas_1t) openblas_set_num_threads(1);
  const auto ca = c.ta == Trans::N ? CblasNoTrans : CblasTrans, cb = c.tb == Trans::N ? CblasNoTrans : CblasTrans;
  for (auto _ : state) {
    switch (impl) {
      case Impl::reason: kernels::gemm<float>(c.ta, c.tb, 1.0f, A, B, c.beta, C); break;
      case Impl::cblas:
      case Impl::cblas_1t:
        cblas_sgemm(CblasRowMajor, ca, cb, int(c.M), int(c.N), int(c.K), 1.0f, a.data(), int(a_cols), b.data(),
                    int(b_cols), c.beta, cm.data(), int(c.N));
        break;
      case Impl::blocked: kernels::detail::gemm_blocked<float>(c.ta, c.tb, 1.0f, A, B, c.beta, C); break;
    }
    benchmark::DoNotOptimize(cm.data());
    benchmark::ClobberMemory();
  }
  openblas_set_num_threads(1);
  const double M = double(c.M), N = double(c.N), K = double(c.K);
  bench::set_roofline(state, 2.0 * M * N * K, 4.0 * (M * K + K * N + M * N * (c.beta != 0.0f ? 2.0 : 1.0)));
  state.counters["threads"] = impl == Impl::cblas_1t ? 1 : (impl == Impl::cblas ? cores : ThreadPool::global().threads());
}

}  // namespace

int main(int argc, char** argv) {
  for (const Case& c : cases()) {
    for (Impl impl : {Impl::reason, Impl::cblas, Impl::cblas_1t, Impl::blocked}) {
      const std::string name = std::string("gemm/") + impl_name(impl) + "/" + c.label + "/M:" + std::to_string(c.M) +
                               "/N:" + std::to_string(c.N) + "/K:" + std::to_string(c.K) + "/" +
                               (c.ta == Trans::N ? "N" : "T") + (c.tb == Trans::N ? "N" : "T");
      benchmark::RegisterBenchmark(name.c_str(), run_gemm, impl, c)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
