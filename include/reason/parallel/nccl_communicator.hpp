// reason/parallel/nccl_communicator.hpp — the Communicator over NCCL, on device memory and a stream.
//
// Design rule: each collective is NCCL's own call (ncclAllReduce, ncclReduceScatter, ncclAllGather,
// ncclBroadcast); all_to_all and all_to_all_v are ncclSend/ncclRecv pairs in one group (the NCCL
// user guide's "all-to-all" recipe; this rank's own block is a device-to-device copy), send/recv are
// ncclSend/ncclRecv in a group. Calls are enqueued on stream() and return before they complete:
// synchronize() waits for them and reports an asynchronous NCCL error. Buffers are device memory of
// device(); the spans' sizes are checked on the host like every backend's (checks.hpp). Every NCCL
// call is checked: a failure is a reason::Error with the call, the collective, the rank and the
// sizes, ncclGetErrorString and ncclGetLastError's detail.
// Construction:
//   NcclCommunicator::one_rank(device)    one process, one GPU, no MPI (ncclCommInitAll with 1 device)
//   NcclCommunicator::from_mpi(host, device)   rank r of host.size(): rank 0's ncclUniqueId is
//                                         broadcast over the host communicator (MpiCommunicator in
//                                         practice; any Memory::host Communicator works), then
//                                         ncclCommInitRank. Failures before the NCCL init (no GPU,
//                                         no unique id) are agreed on over `host`, so every rank throws
//                                         instead of one rank waiting in ncclCommInitRank forever.
// barrier() is an all-reduce of one int on the device followed by synchronize() (NCCL has none).
// Needs the CUDA toolkit and NCCL (nccl.h): link reason::nccl. Host code only: no kernels.
// Source: NCCL user guide (docs.nvidia.com/deeplearning/nccl), "Using NCCL" and "API".
#pragma once

#if !__has_include(<nccl.h>)
#error "reason/parallel/nccl_communicator.hpp needs NCCL (nccl.h): link reason::nccl"
#endif

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "reason/core/cuda_check.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/error.hpp"
#include "reason/parallel/communicator.hpp"

namespace reason::parallel {

namespace detail {

template <class... Context>
[[noreturn]] void nccl_fail(const char* call, ncclResult_t code, ncclComm_t comm, const char* file, int line,
                            const Context&... context) {
  const char* last = ncclGetLastError(comm);
  const bool said_more = last != nullptr && *last != '\0';
  fail(call, " failed", context..., ": ", ncclGetErrorString(code), said_more ? " (" : "", said_more ? last : "",
       said_more ? ")" : "", " at ", file, ":", line);
}

template <class T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return ncclInt32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return ncclInt64;
  else {
    static_assert(std::is_same_v<T, std::byte>, "nccl_type<T>: T is not a parallel::Element");
    return ncclUint8;
  }
}

inline ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

}  // namespace detail

}  // namespace reason::parallel

/// REASON_NCCL_CHECK(comm, call, context...): evaluates an NCCL call once; unless it returned
/// ncclSuccess, throws reason::Error "<call> failed<context>: <NCCL's text> (<last error>) at <file>:<line>".
#define REASON_NCCL_CHECK(comm, call, ...)                                                                 \
  do {                                                                                                     \
    const ncclResult_t reason_nccl_code_ = (call);                                                         \
    if (reason_nccl_code_ != ncclSuccess) [[unlikely]]                                                     \
      ::reason::parallel::detail::nccl_fail(#call, reason_nccl_code_, (comm), __FILE__, __LINE__ __VA_OPT__(, ) \
                                                __VA_ARGS__);                                              \
  } while (0)

namespace reason::parallel {

class NcclCommunicator : public CommunicatorBase<NcclCommunicator> {
 public:
  static constexpr Memory memory = Memory::device;

  /// One rank on GPU `device`, no other process involved.
  [[nodiscard]] static NcclCommunicator one_rank(int device = 0) {
    gpu::require_device(device);
    ncclComm_t comm = nullptr;
    REASON_NCCL_CHECK(nullptr, ncclCommInitAll(&comm, 1, &device), " in one_rank (device ", device, ")");
    return NcclCommunicator(comm, device);
  }

  /// Rank host.rank() of host.size() on GPU `device`; every rank of `host` calls it.
  template <Communicator Host>
  [[nodiscard]] static NcclCommunicator from_mpi(Host& host, int device) {
    static_assert(Host::memory == Memory::host,
                  "NcclCommunicator::from_mpi: the unique id travels over a host communicator");
    const detail::Site s{"from_mpi", host.rank(), host.size()};
    std::string failure;  // this rank's reason not to go on, "" if none
    try {
      gpu::require_device(device);
    } catch (const Error& e) {
      failure = e.what();
    }
    struct Packet {
      std::int32_t status;
      ncclUniqueId id;
    } packet{};
    if (host.rank() == 0 && failure.empty()) {
      const ncclResult_t code = ncclGetUniqueId(&packet.id);
      packet.status = static_cast<std::int32_t>(code);
      if (code != ncclSuccess) failure = std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(code);
    }
    std::int32_t failed_ranks = failure.empty() ? 0 : 1;
    host.all_reduce(std::span<std::int32_t>(&failed_ranks, 1), ReduceOp::sum);
    if (!failure.empty()) fail(s, " (device ", device, "): ", failure);
    REASON_CHECK(failed_ranks == 0, s, " (device ", device, "): ", failed_ranks,
                 " other rank(s) could not set up NCCL; see their messages");
    host.broadcast(std::span<std::byte>(reinterpret_cast<std::byte*>(&packet), sizeof packet), 0);
    ncclComm_t comm = nullptr;
    REASON_NCCL_CHECK(nullptr, ncclCommInitRank(&comm, host.size(), packet.id, host.rank()), " in ", s, " (device ",
                      device, ")");
    return NcclCommunicator(comm, device);
  }

  NcclCommunicator(NcclCommunicator&&) noexcept = default;
  NcclCommunicator& operator=(NcclCommunicator&&) noexcept = default;

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] int device() const { return device_; }
  [[nodiscard]] ncclComm_t native() const { return comm_; }
  /// The stream calls are enqueued on: the communicator's own until set_stream.
  [[nodiscard]] cudaStream_t stream() const { return stream_; }
  void set_stream(cudaStream_t stream) { stream_ = stream; }

  /// Waits for this rank's calls so far; an asynchronous NCCL error (a peer failed) is thrown here.
  void synchronize() {
    REASON_CUDA_CHECK(cudaStreamSynchronize(stream_));
    ncclResult_t async = ncclSuccess;
    REASON_NCCL_CHECK(comm_, ncclCommGetAsyncError(comm_, &async), " in synchronize on rank ", rank_, " of ", size_);
    if (async != ncclSuccess)
      detail::nccl_fail("ncclCommGetAsyncError", async, comm_, __FILE__, __LINE__, " (an earlier call) on rank ",
                        rank_, " of ", size_);
  }
  void barrier() {
    all_reduce(std::span<std::int32_t>(scratch_.data(), 1), ReduceOp::sum);
    synchronize();
  }
  /// A reduction of a few host values (a data-parallel step's token count and loss): staged through
  /// device memory on stream(), reduced, copied back; returns once `values` hold the result.
  void all_reduce_host(std::span<double> values, ReduceOp op) {
    if (host_stage_.size() < values.size()) host_stage_ = gpu::DeviceBuffer<double>(values.size(), "NCCL host-value stage");
    const std::span<double> stage(host_stage_.data(), values.size());
    REASON_CUDA_CHECK(cudaMemcpyAsync(stage.data(), values.data(), values.size_bytes(), cudaMemcpyHostToDevice, stream_));
    all_reduce(stage, op);
    REASON_CUDA_CHECK(cudaMemcpyAsync(values.data(), stage.data(), values.size_bytes(), cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }

 private:
  friend struct detail::Hooks;

  /// Owns an ncclComm_t: destroyed with the communicator, or when construction fails part way.
  class CommHandle {
   public:
    explicit CommHandle(ncclComm_t comm) : comm_(comm) {}
    CommHandle(CommHandle&& o) noexcept : comm_(std::exchange(o.comm_, nullptr)) {}
    CommHandle& operator=(CommHandle&& o) noexcept {
      if (this != &o) {
        release();
        comm_ = std::exchange(o.comm_, nullptr);
      }
      return *this;
    }
    ~CommHandle() { release(); }
    [[nodiscard]] ncclComm_t get() const { return comm_; }

   private:
    void release() {
      if (comm_ == nullptr) return;
      const ncclResult_t code = ncclCommDestroy(comm_);
      if (code != ncclSuccess) std::fprintf(stderr, "reason: ncclCommDestroy failed: %s\n", ncclGetErrorString(code));
      comm_ = nullptr;
    }
    ncclComm_t comm_;
  };

  NcclCommunicator(ncclComm_t comm, int device)
      : handle_(comm), comm_(comm), device_(device), scratch_(1, "NCCL barrier word") {
    REASON_NCCL_CHECK(comm_, ncclCommUserRank(comm_, &rank_));
    REASON_NCCL_CHECK(comm_, ncclCommCount(comm_, &size_));
    stream_ = own_stream_.get();
  }

  /// ncclGroupStart ... ncclGroupEnd; a group left by an exception is still ended.
  class Group {
   public:
    Group(ncclComm_t comm, const detail::Site& s) : comm_(comm), site_(s) {
      REASON_NCCL_CHECK(comm_, ncclGroupStart(), " in ", site_);
    }
    Group(const Group&) = delete;
    Group& operator=(const Group&) = delete;
    ~Group() {
      if (open_) (void)ncclGroupEnd();
    }
    void end() {
      open_ = false;
      REASON_NCCL_CHECK(comm_, ncclGroupEnd(), " in ", site_);
    }

   private:
    ncclComm_t comm_;
    detail::Site site_;
    bool open_ = true;
  };

  [[nodiscard]] detail::Site site(const char* collective) const { return {collective, rank_, size_}; }

  template <class T>
  void all_reduce_impl(std::span<const T> in, std::span<T> out, ReduceOp op) {
    REASON_NCCL_CHECK(comm_,
                      ncclAllReduce(in.data(), out.data(), in.size(), detail::nccl_type<T>(), detail::nccl_op(op),
                                    comm_, stream_),
                      " in ", site("all_reduce"), " (", in.size(), " elements, ", name(op), ")");
  }
  template <class T>
  void reduce_scatter_impl(std::span<const T> in, std::span<T> out, ReduceOp op) {
    REASON_NCCL_CHECK(comm_,
                      ncclReduceScatter(in.data(), out.data(), out.size(), detail::nccl_type<T>(), detail::nccl_op(op),
                                        comm_, stream_),
                      " in ", site("reduce_scatter"), " (", in.size(), " elements in, ", out.size(), " out, ", name(op),
                      ")");
  }
  template <class T>
  void all_gather_impl(std::span<const T> in, std::span<T> out) {
    REASON_NCCL_CHECK(comm_, ncclAllGather(in.data(), out.data(), in.size(), detail::nccl_type<T>(), comm_, stream_),
                      " in ", site("all_gather"), " (", in.size(), " elements per rank)");
  }
  template <class T>
  void broadcast_impl(std::span<T> data, int root) {
    REASON_NCCL_CHECK(comm_,
                      ncclBroadcast(data.data(), data.data(), data.size(), detail::nccl_type<T>(), root, comm_,
                                    stream_),
                      " in ", site("broadcast"), " (", data.size(), " elements from root ", root, ")");
  }

  /// This rank's own block: a copy on the stream, ordered with the group's transfers.
  template <class T>
  void copy_own_block(const T* from, T* to, std::size_t count) {
    if (count == 0) return;
    REASON_CUDA_CHECK(cudaMemcpyAsync(to, from, count * sizeof(T), cudaMemcpyDeviceToDevice, stream_));
  }

  template <class T>
  void all_to_all_impl(std::span<const T> in, std::span<T> out) {
    const auto s = site("all_to_all");
    const std::size_t block = in.size() / static_cast<std::size_t>(size_);
    const std::size_t me = static_cast<std::size_t>(rank_);
    copy_own_block(in.data() + me * block, out.data() + me * block, block);
    if (block == 0 || size_ == 1) return;
    Group group(comm_, s);
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      const std::size_t at = static_cast<std::size_t>(p) * block;
      REASON_NCCL_CHECK(comm_, ncclSend(in.data() + at, block, detail::nccl_type<T>(), p, comm_, stream_), " in ", s,
                        " (", block, " elements to rank ", p, ")");
      REASON_NCCL_CHECK(comm_, ncclRecv(out.data() + at, block, detail::nccl_type<T>(), p, comm_, stream_), " in ", s,
                        " (", block, " elements from rank ", p, ")");
    }
    group.end();
  }

  template <class T>
  void all_to_all_v_impl(std::span<const T> in, std::span<const std::int64_t> send_counts,
                         std::span<const std::int64_t> send_displs, std::span<T> out,
                         std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
    const auto s = site("all_to_all_v");
    const auto me = static_cast<std::size_t>(rank_);
    REASON_CHECK(send_counts[me] == recv_counts[me], s, ": sends ", send_counts[me],
                 " elements to itself but expects to receive ", recv_counts[me]);
    copy_own_block(in.data() + send_displs[me], out.data() + recv_displs[me],
                   static_cast<std::size_t>(send_counts[me]));
    if (size_ == 1) return;
    Group group(comm_, s);
    for (int p = 0; p < size_; ++p) {
      const auto j = static_cast<std::size_t>(p);
      if (p == rank_) continue;
      if (send_counts[j] > 0)
        REASON_NCCL_CHECK(comm_,
                          ncclSend(in.data() + send_displs[j], static_cast<std::size_t>(send_counts[j]),
                                   detail::nccl_type<T>(), p, comm_, stream_),
                          " in ", s, " (", send_counts[j], " elements to rank ", p, ")");
      if (recv_counts[j] > 0)
        REASON_NCCL_CHECK(comm_,
                          ncclRecv(out.data() + recv_displs[j], static_cast<std::size_t>(recv_counts[j]),
                                   detail::nccl_type<T>(), p, comm_, stream_),
                          " in ", s, " (", recv_counts[j], " elements from rank ", p, ")");
    }
    group.end();
  }

  template <class T>
  void send_impl(std::span<const T> in, int peer) {
    const auto s = site("send");
    Group group(comm_, s);
    REASON_NCCL_CHECK(comm_, ncclSend(in.data(), in.size(), detail::nccl_type<T>(), peer, comm_, stream_), " in ", s,
                      " (", in.size(), " elements to rank ", peer, ")");
    group.end();
  }
  template <class T>
  void recv_impl(std::span<T> out, int peer) {
    const auto s = site("recv");
    Group group(comm_, s);
    REASON_NCCL_CHECK(comm_, ncclRecv(out.data(), out.size(), detail::nccl_type<T>(), peer, comm_, stream_), " in ", s,
                      " (", out.size(), " elements from rank ", peer, ")");
    group.end();
  }
  template <class T>
  void send_recv_impl(std::span<const T> in, int dst, std::span<T> out, int src) {
    const auto s = site("send_recv");
    Group group(comm_, s);
    REASON_NCCL_CHECK(comm_, ncclSend(in.data(), in.size(), detail::nccl_type<T>(), dst, comm_, stream_), " in ", s,
                      " (", in.size(), " elements to rank ", dst, ")");
    REASON_NCCL_CHECK(comm_, ncclRecv(out.data(), out.size(), detail::nccl_type<T>(), src, comm_, stream_), " in ", s,
                      " (", out.size(), " elements from rank ", src, ")");
    group.end();
  }

  CommHandle handle_;
  ncclComm_t comm_ = nullptr;  // handle_.get(), for brevity in the calls
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  gpu::Stream own_stream_;
  cudaStream_t stream_ = nullptr;
  gpu::DeviceBuffer<std::int32_t> scratch_;
  gpu::DeviceBuffer<double> host_stage_;
};

static_assert(Communicator<NcclCommunicator>, "NcclCommunicator must satisfy parallel::Communicator");

}  // namespace reason::parallel
