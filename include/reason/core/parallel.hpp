// reason/core/parallel.hpp — a small persistent thread pool and a static parallel_for.
//
// Design rule: parallel work is split into fixed, contiguous chunks decided by (n, grain,
// threads) alone, and each index is computed by exactly one thread with no shared
// accumulators, so results are bit-identical to the serial run whatever the thread count.
// BLAS (OpenBLAS) keeps its own threads for GEMMs; this pool covers everything else.
// The thread count comes from REASON_NUM_THREADS, else std::thread::hardware_concurrency().
#pragma once

#include <algorithm>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace reason {

class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    const int wanted = std::max(1, threads);
    // A thread that cannot be started (limits in a container, memory) leaves a smaller pool
    // rather than a half-built one whose started workers would never be joined.
    for (int t = 1; t < wanted; ++t) {
      try {
        workers_.emplace_back([this, t] { worker(t); });
      } catch (const std::system_error&) {
        break;
      }
    }
    threads_ = static_cast<int>(workers_.size()) + 1;
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  [[nodiscard]] int threads() const { return threads_; }

  /// Runs task(t) for t in [0, threads) — t == 0 on the calling thread — and waits for all.
  /// The first exception thrown by any task is rethrown here.
  void run(const std::function<void(int)>& task) {
    if (threads_ == 1 || in_task()) {  // nested calls run serially instead of deadlocking
      for (int t = 0; t < threads_; ++t) task(t);
      return;
    }
    struct Mark {
      Mark() { in_task() = true; }
      ~Mark() { in_task() = false; }
    };
    std::unique_lock job_lock(job_mu_);  // one job at a time
    {
      std::lock_guard lock(mu_);
      task_ = &task;
      pending_ = threads_ - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr mine;
    try {
      Mark mark;
      task(0);
    } catch (...) {
      mine = std::current_exception();
    }
    std::unique_lock lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

  /// The process-wide pool.
  static ThreadPool& global() {
    static ThreadPool pool(default_threads());
    return pool;
  }

  /// REASON_NUM_THREADS if set (a positive integer, at most 4x the hardware threads), else the
  /// hardware threads. A malformed value is an error, not silently ignored.
  static int default_threads() {
    const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (const char* env = std::getenv("REASON_NUM_THREADS"); env && *env) {
      int n = 0;
      const char* end = env + std::strlen(env);
      auto [p, ec] = std::from_chars(env, end, n);
      if (ec != std::errc{} || p != end || n < 1) {
        throw std::invalid_argument(std::string("REASON_NUM_THREADS='") + env + "': expected a positive integer");
      }
      return std::min(n, 4 * hardware);
    }
    return hardware;
  }

 private:
  static bool& in_task() {
    thread_local bool flag = false;
    return flag;
  }

  void worker(int t) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* task = nullptr;
      {
        std::unique_lock lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        task = task_;
      }
      std::exception_ptr err;
      try {
        in_task() = true;
        (*task)(t);
        in_task() = false;
      } catch (...) {
        in_task() = false;
        err = std::current_exception();
      }
      {
        std::lock_guard lock(mu_);
        if (err && !error_) error_ = err;
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex job_mu_, mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

/// Calls body(begin, end) over [0, n) split into at most `threads` contiguous chunks of at
/// least `grain` indices. Serial when n is small, so tiny calls pay no synchronisation.
template <class Body>
void parallel_for(std::int64_t n, std::int64_t grain, Body&& body) {
  if (n <= 0) return;
  ThreadPool& pool = ThreadPool::global();
  const std::int64_t max_chunks = std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, grain));
  const std::int64_t chunks = std::min<std::int64_t>(pool.threads(), max_chunks);
  if (chunks <= 1) {
    body(std::int64_t{0}, n);
    return;
  }
  pool.run([&](int t) {
    if (t >= chunks) return;
    const std::int64_t begin = n * t / chunks, end = n * (t + 1) / chunks;
    body(begin, end);
  });
}

}  // namespace reason
