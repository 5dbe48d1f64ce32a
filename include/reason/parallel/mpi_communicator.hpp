// reason/parallel/mpi_communicator.hpp — the Communicator over MPI (Open MPI), on host memory.
//
// Design rule: each collective is the one MPI call that defines it (MPI_Allreduce,
// MPI_Reduce_scatter_block, MPI_Allgather, MPI_Bcast, MPI_Alltoall, MPI_Alltoallv; MPI_Send,
// MPI_Recv, MPI_Sendrecv, MPI_Barrier), so MPI's tuned algorithms and shared-memory transport do the
// work and nothing is re-implemented. A communicator owns its own MPI_Comm: world() duplicates
// MPI_COMM_WORLD (its messages never match the program's other MPI traffic) and split(color, key)
// makes the sub-communicators tensor- and data-parallel groups need. Each sets MPI_ERRORS_RETURN,
// and every call's return code is checked (mpi_check.hpp): a failure is a reason::Error naming the
// call, the collective, the rank and the sizes, with MPI_Error_string's text. Counts above INT_MAX
// are refused, not wrapped. Calls block until done; synchronize() has nothing to wait for.
// The in-place forms map to MPI_IN_PLACE (all_reduce, all_gather); an in-place reduce_scatter, whose
// MPI form has another layout, goes through a scratch buffer of out.size() elements that the
// communicator keeps (a fresh allocation per call costs page faults at every call for large ones).
// Source: MPI 4.0 standard, chapters 3 (point to point), 6 (collectives), 7 (communicators).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "reason/parallel/communicator.hpp"
#include "reason/parallel/mpi_check.hpp"
#include "reason/parallel/mpi_session.hpp"

namespace reason::parallel {

class MpiCommunicator : public CommunicatorBase<MpiCommunicator> {
 public:
  static constexpr Memory memory = Memory::host;

  /// A communicator over every process of the job (a duplicate of MPI_COMM_WORLD).
  [[nodiscard]] static MpiCommunicator world() { return duplicate(MPI_COMM_WORLD); }
  /// A communicator over the processes of `comm`, with its own context (MPI_Comm_dup; collective).
  [[nodiscard]] static MpiCommunicator duplicate(MPI_Comm comm) {
    int initialized = 0;
    REASON_MPI_CHECK(MPI_Initialized(&initialized));
    REASON_CHECK(initialized, "MpiCommunicator: MPI is not initialised; create a parallel::MpiSession first");
    MPI_Comm dup = MPI_COMM_NULL;
    REASON_MPI_CHECK(MPI_Comm_dup(comm, &dup));
    return MpiCommunicator(dup);
  }

  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  MpiCommunicator(MpiCommunicator&& o) noexcept
      : comm_(std::exchange(o.comm_, MPI_COMM_NULL)),
        rank_(o.rank_),
        size_(o.size_),
        scratch_(std::move(o.scratch_)) {}
  MpiCommunicator& operator=(MpiCommunicator&& o) noexcept {
    if (this != &o) {
      release();
      comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
      rank_ = o.rank_;
      size_ = o.size_;
      scratch_ = std::move(o.scratch_);
    }
    return *this;
  }
  ~MpiCommunicator() { release(); }

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] MPI_Comm native() const { return comm_; }

  /// The ranks with the same `color` (>= 0) form a new communicator, ranked by `key` (ties by this
  /// communicator's rank). Collective: every rank calls it (MPI_Comm_split).
  [[nodiscard]] MpiCommunicator split(int color, int key) const {
    REASON_CHECK(color >= 0, "split on rank ", rank_, " of ", size_, ": color ", color, " is negative");
    MPI_Comm sub = MPI_COMM_NULL;
    REASON_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub), " in split on rank ", rank_, " of ", size_,
                     " (color ", color, ", key ", key, ")");
    return MpiCommunicator(sub);
  }

  void barrier() { REASON_MPI_CHECK(MPI_Barrier(comm_), " in barrier on rank ", rank_, " of ", size_); }
  void synchronize() {}

  /// Ends every process of this communicator (MPI_Abort): for a failure one rank cannot recover from
  /// while the others wait for it.
  [[noreturn]] void abort(int code) const {
    MPI_Abort(comm_, code);
    std::abort();
  }

 private:
  friend struct detail::Hooks;
  static constexpr int point_to_point_tag = 0x7e50;

  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    int code = MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    if (code == MPI_SUCCESS) code = MPI_Comm_rank(comm_, &rank_);
    if (code == MPI_SUCCESS) code = MPI_Comm_size(comm_, &size_);
    if (code != MPI_SUCCESS) {
      release();
      detail::mpi_fail("MPI_Comm_set_errhandler/MPI_Comm_rank/MPI_Comm_size", code, __FILE__, __LINE__);
    }
  }

  void release() {
    if (comm_ == MPI_COMM_NULL) return;
    int finalized = 0;
    // After MPI_Finalize every communicator is gone already; freeing then would be an error.
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) (void)MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }

  [[nodiscard]] detail::Site site(const char* collective) const { return {collective, rank_, size_}; }

  template <class T>
  void all_reduce_impl(std::span<const T> in, std::span<T> out, ReduceOp op) {
    const auto s = site("all_reduce");
    const int n = detail::mpi_count(s, "in", in.size());
    const void* send = in.data() == out.data() ? MPI_IN_PLACE : static_cast<const void*>(in.data());
    REASON_MPI_CHECK(MPI_Allreduce(send, out.data(), n, detail::mpi_type<T>(), detail::mpi_op(op), comm_), " in ", s,
                     " (", n, " elements, ", name(op), ")");
  }

  template <class T>
  void reduce_scatter_impl(std::span<const T> in, std::span<T> out, ReduceOp op) {
    const auto s = site("reduce_scatter");
    (void)detail::mpi_count(s, "in", in.size());
    const int n = detail::mpi_count(s, "out", out.size());
    if (!out.empty() && out.data() == in.data() + static_cast<std::size_t>(rank_) * out.size()) {
      // MPI's in-place form keeps the result at the front of the buffer instead: go through scratch.
      if (scratch_.size() < out.size_bytes()) scratch_.resize(out.size_bytes());
      REASON_MPI_CHECK(MPI_Reduce_scatter_block(in.data(), scratch_.data(), n, detail::mpi_type<T>(),
                                                detail::mpi_op(op), comm_),
                       " in ", s, " (", in.size(), " elements in, ", n, " out, in place, ", name(op), ")");
      std::memcpy(out.data(), scratch_.data(), out.size_bytes());
      return;
    }
    REASON_MPI_CHECK(MPI_Reduce_scatter_block(in.data(), out.data(), n, detail::mpi_type<T>(), detail::mpi_op(op),
                                              comm_),
                     " in ", s, " (", in.size(), " elements in, ", n, " out, ", name(op), ")");
  }

  template <class T>
  void all_gather_impl(std::span<const T> in, std::span<T> out) {
    const auto s = site("all_gather");
    (void)detail::mpi_count(s, "out", out.size());
    const int n = detail::mpi_count(s, "in", in.size());
    const bool in_place = !in.empty() && in.data() == out.data() + static_cast<std::size_t>(rank_) * in.size();
    const void* send = in_place ? MPI_IN_PLACE : static_cast<const void*>(in.data());
    REASON_MPI_CHECK(MPI_Allgather(send, n, detail::mpi_type<T>(), out.data(), n, detail::mpi_type<T>(), comm_), " in ",
                     s, " (", n, " elements per rank)");
  }

  template <class T>
  void broadcast_impl(std::span<T> data, int root) {
    const auto s = site("broadcast");
    const int n = detail::mpi_count(s, "data", data.size());
    REASON_MPI_CHECK(MPI_Bcast(data.data(), n, detail::mpi_type<T>(), root, comm_), " in ", s, " (", n,
                     " elements from root ", root, ")");
  }

  template <class T>
  void all_to_all_impl(std::span<const T> in, std::span<T> out) {
    const auto s = site("all_to_all");
    const int block = detail::mpi_count(s, "a block", in.size() / static_cast<std::size_t>(size_));
    REASON_MPI_CHECK(MPI_Alltoall(in.data(), block, detail::mpi_type<T>(), out.data(), block, detail::mpi_type<T>(),
                                  comm_),
                     " in ", s, " (", block, " elements per block)");
  }

  template <class T>
  void all_to_all_v_impl(std::span<const T> in, std::span<const std::int64_t> send_counts,
                         std::span<const std::int64_t> send_displs, std::span<T> out,
                         std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
    const auto s = site("all_to_all_v");
    const std::size_t n = static_cast<std::size_t>(size_);
    std::vector<int> sc(n), sd(n), rc(n), rd(n);
    for (std::size_t j = 0; j < n; ++j) {
      sc[j] = detail::mpi_count(s, "a send count", send_counts[j]);
      sd[j] = detail::mpi_count(s, "a send displacement", send_displs[j]);
      rc[j] = detail::mpi_count(s, "a receive count", recv_counts[j]);
      rd[j] = detail::mpi_count(s, "a receive displacement", recv_displs[j]);
    }
    REASON_MPI_CHECK(MPI_Alltoallv(in.data(), sc.data(), sd.data(), detail::mpi_type<T>(), out.data(), rc.data(),
                                   rd.data(), detail::mpi_type<T>(), comm_),
                     " in ", s, " (", in.size(), " elements in, ", out.size(), " out)");
  }

  template <class T>
  void send_impl(std::span<const T> in, int peer) {
    const auto s = site("send");
    const int n = detail::mpi_count(s, "in", in.size());
    REASON_MPI_CHECK(MPI_Send(in.data(), n, detail::mpi_type<T>(), peer, point_to_point_tag, comm_), " in ", s, " (",
                     n, " elements to rank ", peer, ")");
  }

  template <class T>
  void recv_impl(std::span<T> out, int peer) {
    const auto s = site("recv");
    const int n = detail::mpi_count(s, "out", out.size());
    MPI_Status status;
    REASON_MPI_CHECK(MPI_Recv(out.data(), n, detail::mpi_type<T>(), peer, point_to_point_tag, comm_, &status), " in ",
                     s, " (", n, " elements from rank ", peer, ")");
    expect_received<T>(s, status, n, peer);
  }

  template <class T>
  void send_recv_impl(std::span<const T> in, int dst, std::span<T> out, int src) {
    const auto s = site("send_recv");
    const int ns = detail::mpi_count(s, "in", in.size());
    const int nr = detail::mpi_count(s, "out", out.size());
    MPI_Status status;
    REASON_MPI_CHECK(MPI_Sendrecv(in.data(), ns, detail::mpi_type<T>(), dst, point_to_point_tag, out.data(), nr,
                                  detail::mpi_type<T>(), src, point_to_point_tag, comm_, &status),
                     " in ", s, " (", ns, " elements to rank ", dst, ", ", nr, " from rank ", src, ")");
    expect_received<T>(s, status, nr, src);
  }

  /// A message shorter than the buffer is not an MPI error; here it is (a longer one is MPI's).
  template <class T>
  void expect_received(const detail::Site& s, const MPI_Status& status, int expected, int peer) const {
    int got = 0;
    REASON_MPI_CHECK(MPI_Get_count(&status, detail::mpi_type<T>(), &got), " in ", s);
    REASON_CHECK(got == expected, s, ": received ", got, " elements from rank ", peer, ", expected ", expected);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::vector<std::byte> scratch_;  // an in-place reduce_scatter's result, kept between calls
};

static_assert(Communicator<MpiCommunicator>, "MpiCommunicator must satisfy parallel::Communicator");

}  // namespace reason::parallel
