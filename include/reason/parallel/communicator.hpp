// reason/parallel/communicator.hpp — the Communicator concept: the collectives that parallelism
// policies (data, ZeRO, tensor, expert, pipeline) are written against.
//
// Design rule: one interface, real engines behind it — NCCL on GPUs (nccl_communicator.hpp), MPI on
// CPUs and for bootstrapping NCCL (mpi_communicator.hpp), one process alone (single_process.hpp);
// no home-made transport. A backend derives from CommunicatorBase<Self>, which
//   - gives it the public overloads of every collective for every element type, as plain functions,
//     so a std::vector<float> or a std::span<float> binds without a template argument;
//   - checks each call's sizes on the calling rank before anything is sent (checks.hpp: the message
//     names the collective, the rank and the sizes), so a size error made the same way on every rank
//     throws on every rank and leaves no rank waiting inside a collective;
//   - then calls the backend's private hooks (`all_reduce_impl`, ...) through detail::Hooks.
// What only communication could reveal (ranks passing different sizes) is the backend's to report:
// MPI does for a receive that is too short or too long, NCCL does not.
//
// Definitions (MPI 4.0, chapter 6 "Collective Communication"; the NCCL user guide, "Collective
// Operations" and "Point-to-point communication"); n = size(), r = rank(), op is sum or max:
//   all_reduce(in, out, op)      out[i] = op over the ranks of in[i];  all_reduce(inout, op) in place
//   reduce_scatter(in, out, op)  in holds n blocks of out.size(); out = block r of the reduction
//   all_gather(in, out)          out = the n ranks' `in`, in rank order
//   broadcast(data, root)        data = root's data
//   all_to_all(in, out)          n equal blocks: in's block j goes to rank j, out's block i came from rank i
//   all_to_all_v(in, send_counts, send_displs, out, recv_counts, recv_displs)
//                                the same with a count and a displacement (in elements) per rank;
//                                all_to_all_v(in, send_counts, out, recv_counts) packs the blocks
//   send(in, peer), recv(out, peer), send_recv(in, dst, out, src)     point to point, no tags;
//                                send_recv is the deadlock-free step of a ring or a pipeline
//   barrier()                    returns once every rank has entered it
//   synchronize()                this rank's calls so far have completed (a no-op on the host)
// Buffers of one call do not overlap, except in the in-place forms: all_reduce with in == out,
// all_gather with `in` at this rank's block of `out`, reduce_scatter with `out` at this rank's block
// of `in` (the ZeRO shard layouts). Memory::host communicators take host memory and return when the
// call is done; Memory::device ones take device memory and only enqueue the call on their stream.
// Element types: float, double, int32, int64; std::byte too for the calls that only move data.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/parallel/checks.hpp"

namespace reason::parallel {

enum class ReduceOp { sum, max };
/// Where a communicator's buffers live.
enum class Memory { host, device };

[[nodiscard]] constexpr const char* name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "max"; }

/// Element types a reduction is defined on.
template <class T>
concept ReduceElement = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, std::int32_t> ||
                        std::same_as<T, std::int64_t>;
/// Element types any collective moves.
template <class T>
concept Element = ReduceElement<T> || std::same_as<T, std::byte>;

template <class C>
concept Communicator = requires(C& c, const C& cc, std::span<const float> in, std::span<float> out,
                                std::span<const std::byte> bytes_in, std::span<std::byte> bytes_out,
                                std::span<const std::int64_t> counts, int peer, ReduceOp op) {
  { C::memory } -> std::convertible_to<Memory>;
  { cc.rank() } -> std::same_as<int>;
  { cc.size() } -> std::same_as<int>;
  c.all_reduce(in, out, op);
  c.all_reduce(out, op);
  c.reduce_scatter(in, out, op);
  c.all_gather(bytes_in, bytes_out);
  c.broadcast(bytes_out, peer);
  c.all_to_all(in, out);
  c.all_to_all_v(in, counts, counts, out, counts, counts);
  c.send(bytes_in, peer);
  c.recv(bytes_out, peer);
  c.send_recv(in, peer, out, peer);
  c.barrier();
  c.synchronize();
};

namespace detail {

/// The one door to a backend's private hooks (each backend declares `friend struct detail::Hooks;`).
struct Hooks {
  template <class D, class T>
  static void all_reduce(D& d, std::span<const T> in, std::span<T> out, ReduceOp op) {
    d.all_reduce_impl(in, out, op);
  }
  template <class D, class T>
  static void reduce_scatter(D& d, std::span<const T> in, std::span<T> out, ReduceOp op) {
    d.reduce_scatter_impl(in, out, op);
  }
  template <class D, class T>
  static void all_gather(D& d, std::span<const T> in, std::span<T> out) {
    d.all_gather_impl(in, out);
  }
  template <class D, class T>
  static void broadcast(D& d, std::span<T> data, int root) {
    d.broadcast_impl(data, root);
  }
  template <class D, class T>
  static void all_to_all(D& d, std::span<const T> in, std::span<T> out) {
    d.all_to_all_impl(in, out);
  }
  template <class D, class T>
  static void all_to_all_v(D& d, std::span<const T> in, std::span<const std::int64_t> sc,
                           std::span<const std::int64_t> sd, std::span<T> out, std::span<const std::int64_t> rc,
                           std::span<const std::int64_t> rd) {
    d.all_to_all_v_impl(in, sc, sd, out, rc, rd);
  }
  template <class D, class T>
  static void send(D& d, std::span<const T> in, int peer) {
    d.send_impl(in, peer);
  }
  template <class D, class T>
  static void recv(D& d, std::span<T> out, int peer) {
    d.recv_impl(out, peer);
  }
  template <class D, class T>
  static void send_recv(D& d, std::span<const T> in, int dst, std::span<T> out, int src) {
    d.send_recv_impl(in, dst, out, src);
  }
};

/// The data-moving collectives for one element type T, checked, then handed to D's hooks.
template <class D, class T>
class MoveOverloads {
 public:
  void all_gather(std::span<const T> in, std::span<T> out) {
    D& d = self();
    check_all_gather(Site{"all_gather", d.rank(), d.size()}, in, out);
    Hooks::all_gather(d, in, out);
  }
  void broadcast(std::span<T> data, int root) {
    D& d = self();
    check_root(Site{"broadcast", d.rank(), d.size()}, root);
    Hooks::broadcast(d, data, root);
  }
  void all_to_all(std::span<const T> in, std::span<T> out) {
    D& d = self();
    check_all_to_all(Site{"all_to_all", d.rank(), d.size()}, in, out);
    Hooks::all_to_all(d, in, out);
  }
  void all_to_all_v(std::span<const T> in, std::span<const std::int64_t> send_counts,
                    std::span<const std::int64_t> send_displs, std::span<T> out,
                    std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
    D& d = self();
    check_all_to_all_v(Site{"all_to_all_v", d.rank(), d.size()}, in, send_counts, send_displs, out, recv_counts,
                       recv_displs);
    Hooks::all_to_all_v(d, in, send_counts, send_displs, out, recv_counts, recv_displs);
  }
  /// all_to_all_v with each side's blocks packed in rank order.
  void all_to_all_v(std::span<const T> in, std::span<const std::int64_t> send_counts, std::span<T> out,
                    std::span<const std::int64_t> recv_counts) {
    const std::vector<std::int64_t> sd = packed_displacements(send_counts), rd = packed_displacements(recv_counts);
    all_to_all_v(in, send_counts, sd, out, recv_counts, rd);
  }
  void send(std::span<const T> in, int peer) {
    D& d = self();
    check_peer(Site{"send", d.rank(), d.size()}, "peer", peer);
    Hooks::send(d, in, peer);
  }
  void recv(std::span<T> out, int peer) {
    D& d = self();
    check_peer(Site{"recv", d.rank(), d.size()}, "peer", peer);
    Hooks::recv(d, out, peer);
  }
  void send_recv(std::span<const T> in, int dst, std::span<T> out, int src) {
    D& d = self();
    check_send_recv(Site{"send_recv", d.rank(), d.size()}, in, dst, out, src);
    Hooks::send_recv(d, in, dst, out, src);
  }

 private:
  D& self() { return static_cast<D&>(*this); }
};

/// The reductions for one element type T.
template <class D, class T>
class ReduceOverloads {
 public:
  void all_reduce(std::span<const T> in, std::span<T> out, ReduceOp op) {
    D& d = self();
    check_all_reduce(Site{"all_reduce", d.rank(), d.size()}, in, out);
    Hooks::all_reduce(d, in, out, op);
  }
  void all_reduce(std::span<T> inout, ReduceOp op) { all_reduce(std::span<const T>(inout), inout, op); }
  void reduce_scatter(std::span<const T> in, std::span<T> out, ReduceOp op) {
    D& d = self();
    check_reduce_scatter(Site{"reduce_scatter", d.rank(), d.size()}, in, out);
    Hooks::reduce_scatter(d, in, out, op);
  }

 private:
  D& self() { return static_cast<D&>(*this); }
};

template <class D, class... Ts>
class MoveSet : public MoveOverloads<D, Ts>... {
 public:
  using MoveOverloads<D, Ts>::all_gather...;
  using MoveOverloads<D, Ts>::broadcast...;
  using MoveOverloads<D, Ts>::all_to_all...;
  using MoveOverloads<D, Ts>::all_to_all_v...;
  using MoveOverloads<D, Ts>::send...;
  using MoveOverloads<D, Ts>::recv...;
  using MoveOverloads<D, Ts>::send_recv...;
};

template <class D, class... Ts>
class ReduceSet : public ReduceOverloads<D, Ts>... {
 public:
  using ReduceOverloads<D, Ts>::all_reduce...;
  using ReduceOverloads<D, Ts>::reduce_scatter...;
};

}  // namespace detail

/// Base of every backend D: the typed, checked public collectives. D provides rank(), size(),
/// barrier(), synchronize(), `static constexpr Memory memory`, and the private hooks
///   template <class T> void all_reduce_impl(std::span<const T> in, std::span<T> out, ReduceOp)
///   (in.data() == out.data(): in place), reduce_scatter_impl, all_gather_impl, broadcast_impl,
///   all_to_all_impl, all_to_all_v_impl, send_impl, recv_impl, send_recv_impl
/// with the public calls' parameters, already checked.
template <class D>
class CommunicatorBase : public detail::MoveSet<D, float, double, std::int32_t, std::int64_t, std::byte>,
                         public detail::ReduceSet<D, float, double, std::int32_t, std::int64_t> {};

}  // namespace reason::parallel
