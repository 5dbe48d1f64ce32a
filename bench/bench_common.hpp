// bench/bench_common.hpp — what the benchmarks share: filled buffers and roofline counters.
//
// Design rule (STYLE.md, "napkin math"): every timed figure carries the work it did, as
// FLOP/s and bytes/s counters (rates over real time, since the work runs on several threads),
// so a reader can put it against the machine's peak compute and memory bandwidth. The bytes
// are the compulsory traffic (each operand read once, each result written once), a lower
// bound on what the code moves. No figure is asserted on; benchmarks measure, tests check.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "reason/core/philox.hpp"

namespace reason::bench {

/// n floats uniform in [-1, 1), from Philox(seed) so every run times the same numbers.
inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed) {
  Philox rng(seed, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = 2.0f * rng.uniform() - 1.0f;
  return v;
}

/// FLOP/s and bytes/s counters for `flops` and `bytes` of work per iteration.
inline void set_roofline(benchmark::State& state, double flops, double bytes) {
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
}

}  // namespace reason::bench
