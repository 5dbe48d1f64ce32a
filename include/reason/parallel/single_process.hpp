// reason/parallel/single_process.hpp — the communicator of a process that is alone: rank 0 of 1.
//
// Design rule: every collective over one rank is the identity, so each call is a copy from `in` to
// `out` (none when they are the same buffer) after the same checks every backend runs
// (checks.hpp). A policy written against the Communicator concept therefore runs unchanged, and at
// no cost, without MPI or NCCL; this header needs only the standard library (part of reason::reason).
// Point to point has no peer here: send/recv name it as an error. Host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "reason/core/error.hpp"
#include "reason/parallel/communicator.hpp"

namespace reason::parallel {

class SingleProcess : public CommunicatorBase<SingleProcess> {
 public:
  static constexpr Memory memory = Memory::host;

  [[nodiscard]] int rank() const { return 0; }
  [[nodiscard]] int size() const { return 1; }
  void barrier() {}
  void synchronize() {}

 private:
  friend struct detail::Hooks;

  template <class T>
  static void copy(std::span<const T> in, T* out) {
    if (!in.empty() && in.data() != out) std::memcpy(out, in.data(), in.size_bytes());
  }

  template <class T>
  void all_reduce_impl(std::span<const T> in, std::span<T> out, ReduceOp) {
    copy(in, out.data());
  }
  template <class T>
  void reduce_scatter_impl(std::span<const T> in, std::span<T> out, ReduceOp) {
    copy(in, out.data());
  }
  template <class T>
  void all_gather_impl(std::span<const T> in, std::span<T> out) {
    copy(in, out.data());
  }
  template <class T>
  void broadcast_impl(std::span<T>, int) {}
  template <class T>
  void all_to_all_impl(std::span<const T> in, std::span<T> out) {
    copy(in, out.data());
  }
  template <class T>
  void all_to_all_v_impl(std::span<const T> in, std::span<const std::int64_t> send_counts,
                         std::span<const std::int64_t> send_displs, std::span<T> out,
                         std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
    REASON_CHECK(send_counts[0] == recv_counts[0], "all_to_all_v on rank 0 of 1: sends ", send_counts[0],
                 " elements to itself but expects to receive ", recv_counts[0]);
    copy(in.subspan(static_cast<std::size_t>(send_displs[0]), static_cast<std::size_t>(send_counts[0])),
         out.data() + recv_displs[0]);
  }
  // Unreachable: the checks refuse every peer of a one-rank communicator (there is none).
  template <class T>
  void send_impl(std::span<const T>, int) {
    fail("send on rank 0 of 1: a single process has no peer");
  }
  template <class T>
  void recv_impl(std::span<T>, int) {
    fail("recv on rank 0 of 1: a single process has no peer");
  }
  template <class T>
  void send_recv_impl(std::span<const T>, int, std::span<T>, int) {
    fail("send_recv on rank 0 of 1: a single process has no peer");
  }
};

static_assert(Communicator<SingleProcess>, "SingleProcess must satisfy parallel::Communicator");

}  // namespace reason::parallel
