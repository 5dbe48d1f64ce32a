// reason/parallel/checks.hpp — the argument checks every communicator runs before a collective.
//
// Design rule (core/error.hpp's, for collectives): a call whose sizes cannot work throws
// reason::Error on the calling rank *before* anything is sent, with a message that names the
// collective, the rank and the sizes:
//   "all_gather on rank 1 of 2: out has 10 elements, expected 2 x 6 = 12"
// The checks see only this rank's arguments, so they cost no communication; a mistake made the same
// way on every rank (the usual kind: a wrong size computed by the same code) throws on every rank,
// and no rank is left waiting inside a collective the others never entered. CommunicatorBase
// (communicator.hpp) runs them for every backend, so all backends say the same thing.
// Overlap rules follow MPI 4.0 §6.1 (no aliasing except the MPI_IN_PLACE forms) and NCCL's in-place
// definitions ("In-place Operations" in the NCCL user guide).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <span>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"

namespace reason::parallel::detail {

/// Where a call was made: streams as "<collective> on rank <r> of <n>", how every message begins.
struct Site {
  const char* collective;
  int rank;
  int size;
};
inline std::ostream& operator<<(std::ostream& os, const Site& s) {
  return os << s.collective << " on rank " << s.rank << " of " << s.size;
}

/// Whether two element ranges share a byte (empty ranges share none).
template <class A, class B>
[[nodiscard]] bool overlaps(std::span<A> a, std::span<B> b) {
  if (a.empty() || b.empty()) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data()), b0 = reinterpret_cast<std::uintptr_t>(b.data());
  return a0 < b0 + b.size_bytes() && b0 < a0 + a.size_bytes();
}

inline void check_peer(const Site& s, const char* what, int peer) {
  REASON_CHECK(peer >= 0 && peer < s.size, s, ": ", what, " ", peer, " is not a rank (0..", s.size - 1, ")");
  REASON_CHECK(peer != s.rank, s, ": ", what, " ", peer, " is this rank (a rank does not send to itself)");
}

template <class T>
void check_all_reduce(const Site& s, std::span<const T> in, std::span<T> out) {
  REASON_CHECK(in.size() == out.size(), s, ": in has ", in.size(), " elements, out has ", out.size(),
               " (they must be equal)");
  REASON_CHECK(in.data() == out.data() || !overlaps(in, out), s,
               ": in and out overlap without being the same buffer (in place)");
}

template <class T>
void check_reduce_scatter(const Site& s, std::span<const T> in, std::span<T> out) {
  const std::size_t n = static_cast<std::size_t>(s.size);
  REASON_CHECK(in.size() == n * out.size(), s, ": in has ", in.size(), " elements, expected ", n, " x ", out.size(),
               " = ", n * out.size());
  REASON_CHECK(out.data() == in.data() + static_cast<std::size_t>(s.rank) * out.size() || !overlaps(in, out), s,
               ": out overlaps in without being this rank's block of it (in place)");
}

template <class T>
void check_all_gather(const Site& s, std::span<const T> in, std::span<T> out) {
  const std::size_t n = static_cast<std::size_t>(s.size);
  REASON_CHECK(out.size() == n * in.size(), s, ": out has ", out.size(), " elements, expected ", n, " x ", in.size(),
               " = ", n * in.size());
  REASON_CHECK(in.data() == out.data() + static_cast<std::size_t>(s.rank) * in.size() || !overlaps(in, out), s,
               ": in overlaps out without being this rank's block of it (in place)");
}

inline void check_root(const Site& s, int root) {
  REASON_CHECK(root >= 0 && root < s.size, s, ": root ", root, " is not a rank (0..", s.size - 1, ")");
}

template <class T>
void check_all_to_all(const Site& s, std::span<const T> in, std::span<T> out) {
  REASON_CHECK(in.size() == out.size(), s, ": in has ", in.size(), " elements, out has ", out.size(),
               " (they must be equal)");
  REASON_CHECK(in.size() % static_cast<std::size_t>(s.size) == 0, s, ": in has ", in.size(),
               " elements, not a multiple of ", s.size, " (one equal block per rank)");
  REASON_CHECK(!overlaps(in, out), s, ": in and out overlap");
}

/// One side of an all_to_all_v: `counts` and `displs` (elements) describe blocks of a buffer of
/// `extent` elements, one block per rank.
inline void check_blocks(const Site& s, const char* side, const char* buffer, std::span<const std::int64_t> counts,
                         std::span<const std::int64_t> displs, std::size_t extent) {
  const std::size_t n = static_cast<std::size_t>(s.size);
  REASON_CHECK(counts.size() == n, s, ": ", side, "_counts has ", counts.size(), " entries, expected ", n,
               " (one per rank)");
  REASON_CHECK(displs.size() == n, s, ": ", side, "_displs has ", displs.size(), " entries, expected ", n,
               " (one per rank)");
  const auto size = static_cast<std::int64_t>(extent);
  for (std::size_t j = 0; j < n; ++j) {
    const std::int64_t c = counts[j], d = displs[j];
    REASON_CHECK(c >= 0, s, ": ", side, "_counts[", j, "] is ", c, " (counts must be >= 0)");
    REASON_CHECK(d >= 0, s, ": ", side, "_displs[", j, "] is ", d, " (displacements must be >= 0)");
    REASON_CHECK(d <= size && c <= size - d, s, ": ", side, " block ", j, " (displacement ", d, ", count ", c,
                 ") ends at ", d + c, ", past ", buffer, "'s ", size, " elements");
  }
}

template <class T>
void check_all_to_all_v(const Site& s, std::span<const T> in, std::span<const std::int64_t> send_counts,
                        std::span<const std::int64_t> send_displs, std::span<T> out,
                        std::span<const std::int64_t> recv_counts, std::span<const std::int64_t> recv_displs) {
  check_blocks(s, "send", "in", send_counts, send_displs, in.size());
  check_blocks(s, "recv", "out", recv_counts, recv_displs, out.size());
  REASON_CHECK(!overlaps(in, out), s, ": in and out overlap");
  // Received blocks are written concurrently: no two may share an element (sent ones may).
  std::vector<std::pair<std::int64_t, std::size_t>> starts;  // (displacement, rank), non-empty blocks
  for (std::size_t j = 0; j < recv_counts.size(); ++j)
    if (recv_counts[j] > 0) starts.emplace_back(recv_displs[j], j);
  std::sort(starts.begin(), starts.end());
  for (std::size_t k = 1; k < starts.size(); ++k) {
    const std::size_t a = starts[k - 1].second, b = starts[k].second;
    REASON_CHECK(recv_displs[a] + recv_counts[a] <= recv_displs[b], s, ": recv blocks ", std::min(a, b), " and ",
                 std::max(a, b), " overlap in out");
  }
}

/// Displacements of blocks packed one after another: the exclusive prefix sums of `counts`.
[[nodiscard]] inline std::vector<std::int64_t> packed_displacements(std::span<const std::int64_t> counts) {
  std::vector<std::int64_t> d(counts.size());
  std::int64_t at = 0;
  for (std::size_t j = 0; j < counts.size(); ++j) {
    d[j] = at;
    at += counts[j];
  }
  return d;
}

template <class T>
void check_send_recv(const Site& s, std::span<const T> in, int dst, std::span<T> out, int src) {
  check_peer(s, "destination", dst);
  check_peer(s, "source", src);
  REASON_CHECK(!overlaps(in, out), s, ": in and out overlap");
}

}  // namespace reason::parallel::detail
