// reason/parallel/mpi_session.hpp — MPI's lifetime in a process, as an object: MPI_Init_thread in
// the constructor, MPI_Finalize in the destructor.
//
// Design rule: create one MpiSession at the top of main, before any MpiCommunicator, and let it go
// out of scope last. A session that finds MPI already initialised (by another library, or by an
// outer session) neither initialises nor finalises it. The thread level asked for is checked:
// `funneled` (the default) lets a process run threads as long as only the main thread calls MPI,
// which is how reason's thread pool and OpenBLAS use threads. MPI cannot be initialised again
// after MPI_Finalize (MPI 4.0 §11.2.1), so a second session after the first one ended is an error.
#pragma once

#include <cstdio>

#include "reason/parallel/mpi_check.hpp"

namespace reason::parallel {

enum class ThreadLevel : int {
  single = MPI_THREAD_SINGLE,          // one thread in the process
  funneled = MPI_THREAD_FUNNELED,      // threads, but only the main thread calls MPI
  serialized = MPI_THREAD_SERIALIZED,  // any thread calls MPI, one at a time
  multiple = MPI_THREAD_MULTIPLE,      // any thread, concurrently
};

[[nodiscard]] constexpr const char* name(ThreadLevel t) {
  switch (t) {
    case ThreadLevel::single: return "single";
    case ThreadLevel::funneled: return "funneled";
    case ThreadLevel::serialized: return "serialized";
    case ThreadLevel::multiple: return "multiple";
  }
  return "unknown";
}

class MpiSession {
 public:
  /// Initialises MPI unless it already is; argc/argv may be null (MPI-2 and later allow it).
  explicit MpiSession(int* argc = nullptr, char*** argv = nullptr, ThreadLevel required = ThreadLevel::funneled) {
    int initialized = 0, finalized = 0;
    REASON_MPI_CHECK(MPI_Initialized(&initialized));
    REASON_MPI_CHECK(MPI_Finalized(&finalized));
    REASON_CHECK(!finalized, "MpiSession: MPI was already finalised in this process, and cannot be initialised again");
    int provided = 0;
    if (initialized) {
      REASON_MPI_CHECK(MPI_Query_thread(&provided));
    } else {
      REASON_MPI_CHECK(MPI_Init_thread(argc, argv, static_cast<int>(required), &provided));
      owns_ = true;
    }
    provided_ = static_cast<ThreadLevel>(provided);
    if (provided < static_cast<int>(required)) {
      finalize();
      fail("MpiSession: asked MPI for thread level '", name(required), "', it provides '", name(provided_), "'");
    }
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession() { finalize(); }

  /// The thread level MPI provides.
  [[nodiscard]] ThreadLevel thread_level() const { return provided_; }
  /// Whether this session initialised MPI (and so finalises it).
  [[nodiscard]] bool owns() const { return owns_; }

 private:
  void finalize() {
    if (!owns_) return;
    owns_ = false;
    int finalized = 0;
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) {
      const int code = MPI_Finalize();
      if (code != MPI_SUCCESS)
        std::fprintf(stderr, "reason: MPI_Finalize failed: %s\n", detail::mpi_error_string(code).c_str());
    }
  }

  bool owns_ = false;
  ThreadLevel provided_ = ThreadLevel::single;
};

}  // namespace reason::parallel
