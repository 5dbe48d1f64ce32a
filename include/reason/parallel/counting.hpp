// reason/parallel/counting.hpp — CountingCommunicator<C>: any communicator, with a tally of the calls
// it made and the bytes they moved, per kind of collective.
//
// Design rule: a parallelism policy is designed around how many collectives a step makes and how big
// they are (one all-reduce per gradient bucket, one all-gather per ZeRO shard, ...). The wrapper
// makes that a number a test can assert ("3 all-reduces of 4 MiB each") instead of a property one
// reads off a profile. It forwards every call to the wrapped communicator and counts it once it has
// returned (a call that threw is not counted).
//   CountingCommunicator counted(MpiCommunicator::world());   // owns the communicator
//   CountingCommunicator view(comm);                          // counts on top of `comm` (a reference)
// Bytes are the operation's size S as nccl-tests defines it (doc/PERFORMANCE.md there): the reduced
// buffer for all_reduce, the whole input for reduce_scatter, the whole output for all_gather, the
// buffer for broadcast and all_to_all; for all_to_all_v the elements this rank sends, for send and
// send_recv the bytes sent, for recv the bytes received; 0 for barrier.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "reason/parallel/communicator.hpp"

namespace reason::parallel {

enum class Collective {
  all_reduce,
  reduce_scatter,
  all_gather,
  broadcast,
  all_to_all,
  all_to_all_v,
  send,
  recv,
  send_recv,
  barrier,
};
inline constexpr std::size_t collective_kinds = 10;

[[nodiscard]] constexpr const char* name(Collective c) {
  constexpr const char* names[collective_kinds] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast",
                                                   "all_to_all", "all_to_all_v",   "send",       "recv",
                                                   "send_recv",  "barrier"};
  return names[static_cast<std::size_t>(c)];
}

/// Calls made and bytes moved by one kind of collective.
struct Tally {
  std::int64_t calls = 0;
  std::int64_t bytes = 0;
  friend bool operator==(const Tally&, const Tally&) = default;
};

/// C: a communicator type (the wrapper owns it) or a reference to one (the wrapper uses it).
template <class C>
class CountingCommunicator : public CommunicatorBase<CountingCommunicator<C>> {
  using Inner = std::remove_cvref_t<C>;
  static_assert(Communicator<Inner>, "CountingCommunicator<C>: C must satisfy parallel::Communicator");

 public:
  static constexpr Memory memory = Inner::memory;

  explicit CountingCommunicator(C comm) : comm_(std::forward<C>(comm)) {}

  [[nodiscard]] int rank() const { return comm_.rank(); }
  [[nodiscard]] int size() const { return comm_.size(); }
  void barrier() {
    comm_.barrier();
    count(Collective::barrier, 0);
  }
  void synchronize() { comm_.synchronize(); }

  [[nodiscard]] Tally tally(Collective c) const { return tallies_[static_cast<std::size_t>(c)]; }
  /// All kinds together.
  [[nodiscard]] Tally total() const {
    Tally t;
    for (const Tally& k : tallies_) {
      t.calls += k.calls;
      t.bytes += k.bytes;
    }
    return t;
  }
  void reset() { tallies_ = {}; }
  /// "all_reduce: 3 calls, 12288 bytes; barrier: 1 call, 0 bytes" (kinds with calls only).
  [[nodiscard]] std::string report() const {
    std::string s;
    for (std::size_t k = 0; k < collective_kinds; ++k) {
      const Tally& t = tallies_[k];
      if (t.calls == 0) continue;
      if (!s.empty()) s += "; ";
      s += std::string(name(static_cast<Collective>(k))) + ": " + std::to_string(t.calls) +
           (t.calls == 1 ? " call, " : " calls, ") + std::to_string(t.bytes) + " bytes";
    }
    return s.empty() ? "no calls" : s;
  }

  [[nodiscard]] Inner& inner() { return comm_; }
  [[nodiscard]] const Inner& inner() const { return comm_; }

  /// A device communicator's extras (NcclCommunicator), forwarded: its stream, and the reduction
  /// of host values staged through the device (counted as an all-reduce).
  template <class Stream>
    requires requires(Inner& c, Stream s) { c.set_stream(s); }
  void set_stream(Stream s) {
    comm_.set_stream(s);
  }
  void all_reduce_host(std::span<double> values, ReduceOp op)
    requires requires(Inner& c, std::span<double> v, ReduceOp o) { c.all_reduce_host(v, o); }
  {
    comm_.all_reduce_host(values, op);
    count(Collective::all_reduce, values.size_bytes());
  }

 private:
  friend struct detail::Hooks;

  void count(Collective c, std::size_t bytes) {
    Tally& t = tallies_[static_cast<std::size_t>(c)];
    ++t.calls;
    t.bytes += static_cast<std::int64_t>(bytes);
  }

  template <class T>
  void all_reduce_impl(std::span<const T> in, std::span<T> out, ReduceOp op) {
    if (in.data() == out.data()) {
      comm_.all_reduce(out, op);
    } else {
      comm_.all_reduce(in, out, op);
    }
    count(Collective::all_reduce, out.size_bytes());
  }
  template <class T>
  void reduce_scatter_impl(std::span<const T> in, std::span<T> out, ReduceOp op) {
    comm_.reduce_scatter(in, out, op);
    count(Collective::reduce_scatter, in.size_bytes());
  }
  template <class T>
  void all_gather_impl(std::span<const T> in, std::span<T> out) {
    comm_.all_gather(in, out);
    count(Collective::all_gather, out.size_bytes());
  }
  template <class T>
  void broadcast_impl(std::span<T> data, int root) {
    comm_.broadcast(data, root);
    count(Collective::broadcast, data.size_bytes());
  }
  template <class T>
  void all_to_all_impl(std::span<const T> in, std::span<T> out) {
    comm_.all_to_all(in, out);
    count(Collective::all_to_all, in.size_bytes());
  }
  template <class T>
  void all_to_all_v_impl(std::span<const T> in, std::span<const std::int64_t> send_counts,
                         std::span<const std::int64_t> send_displs, std::span<T> out,
                         std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
    comm_.all_to_all_v(in, send_counts, send_displs, out, recv_counts, recv_displs);
    std::int64_t sent = 0;
    for (const std::int64_t c : send_counts) sent += c;
    count(Collective::all_to_all_v, static_cast<std::size_t>(sent) * sizeof(T));
  }
  template <class T>
  void send_impl(std::span<const T> in, int peer) {
    comm_.send(in, peer);
    count(Collective::send, in.size_bytes());
  }
  template <class T>
  void recv_impl(std::span<T> out, int peer) {
    comm_.recv(out, peer);
    count(Collective::recv, out.size_bytes());
  }
  template <class T>
  void send_recv_impl(std::span<const T> in, int dst, std::span<T> out, int src) {
    comm_.send_recv(in, dst, out, src);
    count(Collective::send_recv, in.size_bytes());
  }

  C comm_;
  std::array<Tally, collective_kinds> tallies_{};
};

/// An lvalue is counted on top of (CountingCommunicator<T&>), an rvalue is owned (<T>).
template <class T>
CountingCommunicator(T&&) -> CountingCommunicator<T>;

}  // namespace reason::parallel
