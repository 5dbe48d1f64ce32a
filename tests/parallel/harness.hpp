// tests/parallel/harness.hpp — a small test runner for a program started under mpiexec.
//
// Why not doctest: CTest cannot discover cases inside an mpiexec run, and a doctest REQUIRE that
// fails on one rank only would leave the other ranks waiting in the next collective. Here every rank
// runs the same cases in the same order; a failed check is recorded and the case goes on (so the
// ranks stay in step); at the end of each case the ranks agree on the number of failures over the
// harness's own communicator. An exception nobody expected ends the whole job at once
// (MPI_Abort), with the rank and the message, instead of a hang. Exit status, the same on every
// rank: 0 all passed, 1 a check failed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <utility>

#include "reason/core/error.hpp"
#include "reason/parallel/mpi_communicator.hpp"

namespace reason::test {

class MpiHarness {
 public:
  MpiHarness() : comm_(parallel::MpiCommunicator::world()) {
    // Fresh data each run; REASON_TEST_SEED=<n> repeats a run.
    std::uint64_t seed = 0;
    if (const char* env = std::getenv("REASON_TEST_SEED"); env && *env) {
      seed = std::stoull(env);
    } else {
      seed = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
    }
    comm_.broadcast(std::span<std::int64_t>(reinterpret_cast<std::int64_t*>(&seed), 1), 0);
    seed_ = seed;
    if (rank() == 0)
      std::printf("parallel tests on %d rank(s), seed %llu (REASON_TEST_SEED=%llu repeats it)\n", comm_.size(),
                  static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_));
  }

  [[nodiscard]] int rank() const { return comm_.rank(); }
  [[nodiscard]] int size() const { return comm_.size(); }
  [[nodiscard]] std::uint64_t seed() const { return seed_; }

  /// Records a failure on this rank unless `ok`.
  void check(bool ok, const std::string& what) {
    if (ok) return;
    ++case_failures_;
    std::fprintf(stderr, "rank %d: FAILED in '%s': %s\n", rank(), case_.c_str(), what.c_str());
  }

  /// f must throw reason::Error whose message is exactly `message`.
  template <class F>
  void expect_error(F&& f, const std::string& message) {
    check_thrown(std::forward<F>(f), message, true);
  }
  /// f must throw reason::Error whose message contains `needle`.
  template <class F>
  void expect_error_containing(F&& f, const std::string& needle) {
    check_thrown(std::forward<F>(f), needle, false);
  }

  /// Runs one case on every rank; see the file comment.
  void run(const char* name, const std::function<void(MpiHarness&)>& body) {
    case_ = name;
    case_failures_ = 0;
    try {
      body(*this);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d: case '%s' threw: %s\nrank %d: ending every rank (MPI_Abort)\n", rank(), name,
                   e.what(), rank());
      std::fflush(stderr);
      comm_.abort(2);
    }
    std::int64_t failures = case_failures_;
    comm_.all_reduce(std::span<std::int64_t>(&failures, 1), parallel::ReduceOp::sum);
    total_failures_ += failures;
    ++cases_;
    if (rank() == 0) std::printf("%-64s %s\n", name, failures == 0 ? "ok" : "FAILED");
  }

  /// The exit status every rank returns.
  [[nodiscard]] int finish() {
    if (rank() == 0)
      std::printf("%d case(s), %lld failed check(s) over all ranks\n", cases_, static_cast<long long>(total_failures_));
    std::fflush(stdout);
    return total_failures_ == 0 ? 0 : 1;
  }

 private:
  template <class F>
  void check_thrown(F&& f, const std::string& text, bool exact) {
    try {
      f();
    } catch (const Error& e) {
      const std::string what = e.what();
      const bool ok = exact ? what == text : what.find(text) != std::string::npos;
      check(ok, std::string("error message was\n    \"") + what + "\"\n  expected " + (exact ? "" : "it to contain ") +
                    "\n    \"" + text + "\"");
      return;
    }
    check(false, "no error thrown; expected \"" + text + "\"");
  }

  parallel::MpiCommunicator comm_;  // the harness's own: its agreement never mixes with a test's traffic
  std::uint64_t seed_ = 0;
  std::string case_;
  std::int64_t case_failures_ = 0;
  std::int64_t total_failures_ = 0;
  int cases_ = 0;
};

}  // namespace reason::test
