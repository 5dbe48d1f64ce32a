// tests/parallel/collectives.hpp — every collective of a host communicator against its definition.
//
// check_collectives(h, comm, salt, label) runs on every rank of `comm` (which may be a split of the
// world, a SingleProcess, or a CountingCommunicator around either) over fresh random data: each
// reduction for float/double/int32/int64 with sum and max, out of place and in place; the
// data-moving calls for float/int64/byte; sizes including 0 and 1; broadcast from every root;
// all_to_all_v with uneven counts, zero-length blocks and gaps between blocks (which must be left
// untouched), in both its explicit and its packed form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "parallel/reference.hpp"
#include "reason/parallel/communicator.hpp"

namespace reason::test {

using parallel::ReduceOp;

template <class C>
void check_reductions(MpiHarness& h, C& c, std::uint64_t salt, const std::string& label) {
  const int n = c.size(), r = c.rank();
  const std::uint64_t seed = h.seed();
  for_types<float, double, std::int32_t, std::int64_t>([&]<class T>(std::type_identity<T>) {
    for (const ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
      const std::string tag = std::string(type_name<T>()) + " " + parallel::name(op) + " on " + label;
      // all_reduce, out of place and in place
      for (const std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{4099}}) {
        const std::vector<T> in = data<T>(seed, salt, r, len);
        std::vector<Ref<T>> want(len);
        for (std::size_t i = 0; i < len; ++i) want[i] = reduce_ref<T>(seed, salt, n, i, op);
        std::vector<T> out(len, T{});
        c.all_reduce(in, out, op);
        expect_equal<T>(h, out, want, "all_reduce " + tag + " (" + std::to_string(len) + " elements)");
        std::vector<T> inout = in;
        c.all_reduce(inout, op);
        expect_equal<T>(h, inout, want, "all_reduce in place " + tag + " (" + std::to_string(len) + " elements)");
      }
      // reduce_scatter: block r of the reduction of n blocks
      for (const std::size_t block : {std::size_t{0}, std::size_t{1}, std::size_t{257}}) {
        const std::vector<T> in = data<T>(seed, salt + 1, r, block * static_cast<std::size_t>(n));
        std::vector<Ref<T>> want(block);
        for (std::size_t i = 0; i < block; ++i)
          want[i] = reduce_ref<T>(seed, salt + 1, n, static_cast<std::size_t>(r) * block + i, op);
        std::vector<T> out(block, T{});
        c.reduce_scatter(in, out, op);
        expect_equal<T>(h, out, want, "reduce_scatter " + tag + " (blocks of " + std::to_string(block) + ")");
        std::vector<T> buf = in;  // in place: out is this rank's block of in
        const std::span<T> mine = std::span<T>(buf).subspan(static_cast<std::size_t>(r) * block, block);
        c.reduce_scatter(std::span<const T>(buf), mine, op);
        expect_equal<T>(h, std::span<const T>(mine), want,
                        "reduce_scatter in place " + tag + " (blocks of " + std::to_string(block) + ")");
      }
    }
  });
}

template <class C>
void check_all_to_all_v(MpiHarness& h, C& c, std::uint64_t salt, const std::string& label);

template <class C>
void check_movement(MpiHarness& h, C& c, std::uint64_t salt, const std::string& label) {
  const int n = c.size(), r = c.rank();
  const auto un = static_cast<std::size_t>(n), ur = static_cast<std::size_t>(r);
  const std::uint64_t seed = h.seed();
  for_types<float, std::int64_t, std::byte>([&]<class T>(std::type_identity<T>) {
    const std::string tag = std::string(type_name<T>()) + " on " + label;
    for (const std::size_t block : {std::size_t{0}, std::size_t{1}, std::size_t{333}}) {
      const std::string sized = tag + " (blocks of " + std::to_string(block) + ")";
      // all_gather: rank i's data at block i
      std::vector<Ref<T>> gathered(block * un);
      for (int i = 0; i < n; ++i)
        for (std::size_t k = 0; k < block; ++k)
          gathered[static_cast<std::size_t>(i) * block + k] = static_cast<Ref<T>>(datum<T>(seed, salt + 2, i, k));
      const std::vector<T> in = data<T>(seed, salt + 2, r, block);
      std::vector<T> out(block * un, T{});
      c.all_gather(in, out);
      expect_equal<T>(h, out, gathered, "all_gather " + sized);
      std::vector<T> buf = data<T>(seed, salt + 99, r, block * un);  // in place: others' blocks are garbage
      std::copy(in.begin(), in.end(), buf.begin() + static_cast<std::ptrdiff_t>(ur * block));
      c.all_gather(std::span<const T>(buf).subspan(ur * block, block), buf);
      expect_equal<T>(h, buf, gathered, "all_gather in place " + sized);

      // all_to_all: out's block i is rank i's block r
      std::vector<Ref<T>> exchanged(block * un);
      for (int i = 0; i < n; ++i)
        for (std::size_t k = 0; k < block; ++k)
          exchanged[static_cast<std::size_t>(i) * block + k] =
              static_cast<Ref<T>>(datum<T>(seed, salt + 3, i, ur * block + k));
      const std::vector<T> send = data<T>(seed, salt + 3, r, block * un);
      std::vector<T> recv(block * un, T{});
      c.all_to_all(send, recv);
      expect_equal<T>(h, recv, exchanged, "all_to_all " + sized);
    }
    // broadcast from every root; the others start with garbage
    for (int root = 0; root < n; ++root) {
      for (const std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{1000}}) {
        std::vector<T> buf = data<T>(seed, r == root ? salt + 4 : salt + 98, r, len);
        std::vector<Ref<T>> want(len);
        for (std::size_t i = 0; i < len; ++i) want[i] = static_cast<Ref<T>>(datum<T>(seed, salt + 4, root, i));
        c.broadcast(std::span<T>(buf), root);
        expect_equal<T>(h, buf, want,
                        "broadcast " + tag + " from root " + std::to_string(root) + " (" + std::to_string(len) + ")");
      }
    }
  });
  check_all_to_all_v(h, c, salt + 5, label);
}

/// Elements rank i sends to rank j: uneven, with zero-length blocks.
inline std::int64_t v_count(int i, int j, std::uint64_t salt) {
  return static_cast<std::int64_t>((3 * i + 5 * j + static_cast<int>(salt % 7)) % 4) * 3;
}

template <class C>
void check_all_to_all_v(MpiHarness& h, C& c, std::uint64_t salt, const std::string& label) {
  const int n = c.size(), r = c.rank();
  const auto un = static_cast<std::size_t>(n);
  const std::uint64_t seed = h.seed();
  // Rank i's send layout: block j at 1 + sum over k < j of (count(i, k) + 2), so there are gaps.
  auto send_layout = [&](int i, std::vector<std::int64_t>& counts, std::vector<std::int64_t>& displs) {
    counts.assign(un, 0);
    displs.assign(un, 0);
    std::int64_t at = 1;
    for (int j = 0; j < n; ++j) {
      counts[static_cast<std::size_t>(j)] = v_count(i, j, salt);
      displs[static_cast<std::size_t>(j)] = at;
      at += counts[static_cast<std::size_t>(j)] + 2;
    }
    return static_cast<std::size_t>(at);
  };
  for_types<float, std::int64_t, std::byte>([&]<class T>(std::type_identity<T>) {
    std::vector<std::int64_t> sc, sd;
    const std::size_t in_extent = send_layout(r, sc, sd);
    const std::vector<T> in = data<T>(seed, salt, r, in_extent);
    // This rank receives block i (from rank i) at sum over k < i of (count(k, r) + 3).
    std::vector<std::int64_t> rc(un), rd(un);
    std::int64_t at = 0;
    for (int i = 0; i < n; ++i) {
      rc[static_cast<std::size_t>(i)] = v_count(i, r, salt);
      rd[static_cast<std::size_t>(i)] = at;
      at += rc[static_cast<std::size_t>(i)] + 3;
    }
    const T sentinel = static_cast<T>(datum<T>(seed, salt + 97, r, 0));
    std::vector<T> out(static_cast<std::size_t>(at), sentinel);
    std::vector<Ref<T>> want(out.size(), static_cast<Ref<T>>(sentinel));
    std::vector<Ref<T>> packed_want;
    for (int i = 0; i < n; ++i) {
      std::vector<std::int64_t> isc, isd;
      (void)send_layout(i, isc, isd);
      const auto mine = static_cast<std::size_t>(isd[static_cast<std::size_t>(r)]);
      for (std::int64_t k = 0; k < rc[static_cast<std::size_t>(i)]; ++k) {
        const auto x = static_cast<Ref<T>>(datum<T>(seed, salt, i, mine + static_cast<std::size_t>(k)));
        want[static_cast<std::size_t>(rd[static_cast<std::size_t>(i)] + k)] = x;
        packed_want.push_back(x);
      }
    }
    const std::string tag = std::string(type_name<T>()) + " on " + label;
    c.all_to_all_v(in, sc, sd, out, rc, rd);
    expect_equal<T>(h, out, want, "all_to_all_v " + tag + " (uneven blocks with gaps)");

    // Packed: send blocks back to back, received back to back.
    std::vector<T> packed_in;
    for (int j = 0; j < n; ++j)
      for (std::int64_t k = 0; k < sc[static_cast<std::size_t>(j)]; ++k)
        packed_in.push_back(in[static_cast<std::size_t>(sd[static_cast<std::size_t>(j)] + k)]);
    std::vector<T> packed_out(packed_want.size(), T{});
    c.all_to_all_v(packed_in, sc, packed_out, rc);
    expect_equal<T>(h, packed_out, packed_want, "all_to_all_v packed " + tag);
  });
}

template <class C>
void check_collectives(MpiHarness& h, C& c, std::uint64_t salt, const std::string& label) {
  check_reductions(h, c, salt * 16, label);
  check_movement(h, c, salt * 16 + 8, label);
}

}  // namespace reason::test
