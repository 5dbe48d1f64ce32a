// bench/bench_collectives.cpp — collective bandwidth of parallel::MpiCommunicator, run under mpiexec.
//
//   mpiexec -n 2 bench_collectives [Google Benchmark flags]
//
// Cases all_reduce, all_gather, reduce_scatter, broadcast, all_to_all on float buffers, named
// `<collective>/float/bytes:<S>` for S = 4 KiB .. 64 MiB (x4 steps), where S is the operation's size
// as nccl-tests defines it (doc/PERFORMANCE.md in NVIDIA/nccl-tests): the reduced buffer
// (all_reduce), the whole gathered output (all_gather), the whole input (reduce_scatter), the buffer
// (broadcast, all_to_all). Timing follows nccl-tests: a barrier, then `calls` back-to-back calls
// timed together, the time per call averaged over the ranks; one benchmark iteration is one such
// batch, and the reported time is per call. Counters, in GB/s (1e9 bytes/s, as nccl-tests):
//   algbw = S / time
//   busbw = algbw x factor(n): all_reduce 2(n-1)/n, all_gather and reduce_scatter (n-1)/n,
//           broadcast 1, all_to_all (n-1)/n — the bandwidth a rank's link would need for the
//           collective at that speed, comparable across rank counts and with the hardware's peak.
// Lockstep: every rank must run the same benchmarks with the same number of calls, or a collective
// waits forever. So the iteration count is fixed at registration (Google Benchmark's adaptive
// count, decided from each rank's own clock, could differ between ranks), the number of calls per
// iteration is a function of S alone, and random interleaving (a per-rank shuffle) is refused.
// Only rank 0 reports; the other ranks run with a reporter that prints nothing and never write
// --benchmark_out.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"

using namespace reason;
using parallel::MpiCommunicator;
using parallel::ReduceOp;

namespace {

MpiCommunicator* g_comm = nullptr;  // set in main, before any benchmark runs

enum class Op { all_reduce, all_gather, reduce_scatter, broadcast, all_to_all };

constexpr int iterations = 5;                                // timed batches per case, on every rank
constexpr std::int64_t min_bytes = 4 << 10, max_bytes = 64 << 20;

/// Calls per batch: about 256 MiB of S per batch, between 2 and 1000 calls (a function of S only).
std::int64_t calls_per_batch(std::int64_t bytes) {
  return std::clamp<std::int64_t>((std::int64_t{256} << 20) / bytes, 2, 1000);
}

/// nccl-tests' bus bandwidth factor for n ranks.
double bus_factor(Op op, int n) {
  const double dn = n;
  switch (op) {
    case Op::all_reduce: return 2.0 * (dn - 1.0) / dn;
    case Op::broadcast: return 1.0;
    default: return (dn - 1.0) / dn;  // all_gather, reduce_scatter, all_to_all
  }
}

void collective(benchmark::State& state, Op op) {
  MpiCommunicator& comm = *g_comm;
  const int n = comm.size();
  const auto un = static_cast<std::size_t>(n);
  // S in elements, a multiple of n so that blocks are whole.
  const std::size_t count = static_cast<std::size_t>(state.range(0)) / sizeof(float) / un * un;
  const std::size_t block = count / un;
  const std::vector<float> in = bench::random_floats(count, 1 + static_cast<std::uint64_t>(comm.rank()));
  std::vector<float> out(count);
  const std::span<const float> in_all(in), in_block = in_all.first(block);
  const std::span<float> out_all(out), out_block = out_all.first(block);
  std::vector<float> buf = in;  // broadcast's buffer
  auto call = [&] {
    switch (op) {
      case Op::all_reduce: comm.all_reduce(in_all, out_all, ReduceOp::sum); break;
      case Op::all_gather: comm.all_gather(in_block, out_all); break;
      case Op::reduce_scatter: comm.reduce_scatter(in_all, out_block, ReduceOp::sum); break;
      case Op::broadcast: comm.broadcast(std::span<float>(buf), 0); break;
      case Op::all_to_all: comm.all_to_all(in_all, out_all); break;
    }
  };
  const std::int64_t calls = calls_per_batch(state.range(0));
  call();  // warm-up: first touch of the buffers, MPI's connections
  double total = 0;
  for (auto _ : state) {
    comm.barrier();
    const double t0 = MPI_Wtime();
    for (std::int64_t k = 0; k < calls; ++k) call();
    double per_call = (MPI_Wtime() - t0) / static_cast<double>(calls);
    comm.all_reduce(std::span<double>(&per_call, 1), ReduceOp::sum);  // untimed (manual time)
    per_call /= n;
    state.SetIterationTime(per_call);
    total += per_call;
  }
  const double bytes = static_cast<double>(count * sizeof(float));
  const double algbw = bytes / (total / static_cast<double>(state.iterations())) / 1e9;
  state.counters["algbw_GB/s"] = algbw;
  state.counters["busbw_GB/s"] = algbw * bus_factor(op, n);
  state.counters["S_bytes"] = bytes;
  state.counters["calls"] = static_cast<double>(calls);
  state.counters["ranks"] = n;
}

/// A reporter that prints nothing: the ranks other than 0.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);
  try {
    MpiCommunicator comm = MpiCommunicator::world();
    g_comm = &comm;
    // Every rank sees the same flags; only rank 0 keeps --benchmark_out (one file, one writer).
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
      if (std::strstr(argv[i], "--benchmark_enable_random_interleaving") == argv[i]) {
        if (comm.rank() == 0)
          std::fprintf(stderr, "bench_collectives: --benchmark_enable_random_interleaving would run the cases in a "
                               "different order on each rank (and wait forever); not supported\n");
        return 1;
      }
      if (comm.rank() != 0 && std::strstr(argv[i], "--benchmark_out") == argv[i]) continue;
      args.push_back(argv[i]);
    }
    int args_count = static_cast<int>(args.size());
    benchmark::Initialize(&args_count, args.data());
    if (benchmark::ReportUnrecognizedArguments(args_count, args.data())) return 1;

    const std::pair<const char*, Op> ops[] = {{"all_reduce", Op::all_reduce},
                                              {"all_gather", Op::all_gather},
                                              {"reduce_scatter", Op::reduce_scatter},
                                              {"broadcast", Op::broadcast},
                                              {"all_to_all", Op::all_to_all}};
    for (const auto& [label, op] : ops) {
      benchmark::RegisterBenchmark((std::string(label) + "/float").c_str(), collective, op)
          ->ArgName("bytes")
          ->RangeMultiplier(4)
          ->Range(min_bytes, max_bytes)
          ->Iterations(iterations)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
    if (comm.rank() == 0) {
      std::printf("bench_collectives: %d rank(s), MPI communicator (float)\n", comm.size());
      benchmark::RunSpecifiedBenchmarks();
    } else {
      Silent silent;
      benchmark::RunSpecifiedBenchmarks(&silent);
    }
    benchmark::Shutdown();
    comm.barrier();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_collectives: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  return 0;
}
