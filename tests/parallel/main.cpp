// The communicators (include/reason/parallel/) under mpiexec with 1, 2 and 4 ranks (CTest
// parallel/comm_np<N>): every collective against its definition on fresh random data, for the MPI
// communicator, its split sub-communicators, the counting wrapper and the single-process one; a ring
// of point-to-point messages; the counters; and the errors — each size error must throw the same text
// on every rank before any rank enters a collective (the next case's agreement would hang otherwise),
// and MPI's own errors must come back as reason::Error with MPI's text.
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "parallel/collectives.hpp"
#include "parallel/harness.hpp"
#include "parallel/reference.hpp"
#include "reason/parallel/counting.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"
#include "reason/parallel/single_process.hpp"

using namespace reason;
using namespace reason::parallel;
using reason::test::MpiHarness;

static_assert(Communicator<CountingCommunicator<MpiCommunicator&>>);
static_assert(Communicator<CountingCommunicator<SingleProcess>>);

namespace {

std::string where(const char* collective, int rank, int size) {
  return std::string(collective) + " on rank " + std::to_string(rank) + " of " + std::to_string(size);
}

void single_process(MpiHarness& h) {
  SingleProcess one;
  h.check(one.rank() == 0 && one.size() == 1, "SingleProcess is rank 0 of 1");
  test::check_collectives(h, one, 1, "SingleProcess");
  one.barrier();
  std::vector<float> x(3), y(4);
  h.expect_error([&] { one.broadcast(std::span<float>(x), 1); },
                 "broadcast on rank 0 of 1: root 1 is not a rank (0..0)");
  h.expect_error([&] { one.send(std::span<const float>(x), 0); },
                 "send on rank 0 of 1: peer 0 is this rank (a rank does not send to itself)");
  h.expect_error([&] { one.send_recv(std::span<const float>(x), 0, std::span<float>(y), 0); },
                 "send_recv on rank 0 of 1: destination 0 is this rank (a rank does not send to itself)");
  const std::vector<std::int64_t> two{2}, three{3}, zero{0};
  h.expect_error([&] { one.all_to_all_v(std::span<const float>(x), two, zero, std::span<float>(y), three, zero); },
                 "all_to_all_v on rank 0 of 1: sends 2 elements to itself but expects to receive 3");
}

void mpi_world(MpiHarness& h) {
  MpiCommunicator world = MpiCommunicator::world();
  h.check(world.rank() == h.rank() && world.size() == h.size(), "world() has the job's ranks");
  test::check_collectives(h, world, 2, "world");
  world.barrier();
}

void mpi_split(MpiHarness& h) {
  MpiCommunicator world = MpiCommunicator::world();
  const int n = world.size(), r = world.rank();
  // Two groups by parity, ranked in reverse order of the world rank (key = -rank).
  MpiCommunicator sub = world.split(r % 2, -r);
  const int group_size = (n - r % 2 + 1) / 2;
  int expected_rank = 0;
  for (int q = r + 2; q < n; q += 2) ++expected_rank;  // ranks of the same parity above r come first
  h.check(sub.size() == group_size, "split: group of " + std::to_string(sub.size()) + " ranks, expected " +
                                        std::to_string(group_size));
  h.check(sub.rank() == expected_rank,
          "split: sub-rank " + std::to_string(sub.rank()) + ", expected " + std::to_string(expected_rank));
  // Which world ranks are in this group, in sub-rank order: an all_gather says so.
  std::vector<std::int32_t> members(static_cast<std::size_t>(sub.size()));
  const std::int32_t me = r;
  sub.all_gather(std::span<const std::int32_t>(&me, 1), members);
  for (std::size_t k = 0; k < members.size(); ++k) {
    const int want = (n - 1 - (n - 1 - r % 2) % 2) - 2 * static_cast<int>(k);  // highest of this parity first
    h.check(members[k] == want, "split: sub-rank " + std::to_string(k) + " is world rank " +
                                    std::to_string(members[k]) + ", expected " + std::to_string(want));
  }
  // The groups' traffic stays in the group: each checks every collective on data of its own salt.
  test::check_collectives(h, sub, 3 + static_cast<std::uint64_t>(r % 2), "split(color " + std::to_string(r % 2) + ")");
  // A split of a split, and one colour for all (the world again, ordered by key).
  MpiCommunicator all = world.split(0, r);
  h.check(all.size() == n && all.rank() == r, "split(0, rank) is the world again");
  MpiCommunicator single = sub.split(sub.rank(), 0);
  h.check(single.size() == 1 && single.rank() == 0, "a split into singletons has one rank each");
  test::check_reductions(h, single, 5, "singleton split");
  h.expect_error([&] { (void)world.split(-1, 0); }, "split on rank " + std::to_string(r) + " of " +
                                                        std::to_string(n) + ": color -1 is negative");
}

void point_to_point(MpiHarness& h) {
  MpiCommunicator world = MpiCommunicator::world();
  const int n = world.size(), r = world.rank();
  const std::uint64_t seed = h.seed();
  if (n == 1) {
    std::vector<float> x(4);
    h.expect_error([&] { world.send(std::span<const float>(x), 0); },
                   "send on rank 0 of 1: peer 0 is this rank (a rank does not send to itself)");
    h.expect_error([&] { world.recv(std::span<float>(x), 0); },
                   "recv on rank 0 of 1: peer 0 is this rank (a rank does not send to itself)");
    return;
  }
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  auto length = [](int rank) { return static_cast<std::size_t>(100 + 7 * rank); };  // uneven lengths
  auto expect_from = [&](int from, std::uint64_t salt, std::span<const float> got, const std::string& what) {
    std::vector<test::Ref<float>> want(length(from));
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = test::datum<float>(seed, salt, from, i);
    test::expect_equal<float>(h, got, want, what);
  };
  // A ring of blocking send/recv: even ranks send first, odd ranks receive first.
  const std::vector<float> mine = test::data<float>(seed, 60, r, length(r));
  std::vector<float> got(length(prev));
  if (r % 2 == 0) {
    world.send(mine, next);
    world.recv(got, prev);
  } else {
    world.recv(got, prev);
    world.send(mine, next);
  }
  expect_from(prev, 60, got, "send/recv ring: the message from rank " + std::to_string(prev));
  // send_recv: the ring both ways, in one call each.
  std::vector<float> from_prev(length(prev)), from_next(length(next));
  world.send_recv(mine, next, from_prev, prev);
  expect_from(prev, 60, from_prev, "send_recv forward: from rank " + std::to_string(prev));
  world.send_recv(mine, prev, from_next, next);
  expect_from(next, 60, from_next, "send_recv backward: from rank " + std::to_string(next));
  // int64 and bytes travel too.
  const std::vector<std::int64_t> big = test::data<std::int64_t>(seed, 61, r, 3);
  std::vector<std::int64_t> big_got(3);
  world.send_recv(big, next, big_got, prev);
  const std::vector<std::int64_t> big_want = test::data<std::int64_t>(seed, 61, prev, 3);
  h.check(big_got == big_want, "send_recv of int64 values beyond 32 bits");
}

void counters(MpiHarness& h) {
  MpiCommunicator world = MpiCommunicator::world();
  const int n = world.size(), r = world.rank();
  const auto un = static_cast<std::int64_t>(n);
  CountingCommunicator counted(world);  // counts on top of `world`
  static_assert(std::is_same_v<decltype(counted), CountingCommunicator<MpiCommunicator&>>);
  h.check(counted.report() == "no calls", "a new counter reports no calls, not \"" + counted.report() + "\"");

  // "One all-reduce per bucket": three buckets of 1024 floats.
  std::vector<float> bucket(1024, 1.0f);
  for (int b = 0; b < 3; ++b) counted.all_reduce(bucket, ReduceOp::sum);
  h.check(counted.tally(Collective::all_reduce) == Tally{3, 3 * 4096},
          "three all-reduces of 4096 bytes: " + counted.report());
  std::vector<std::int64_t> shard(10, r), gathered(static_cast<std::size_t>(10 * n));
  counted.all_gather(shard, gathered);
  h.check(counted.tally(Collective::all_gather) == Tally{1, 80 * un},
          "all_gather counts its output: " + counted.report());
  std::vector<double> full(static_cast<std::size_t>(16 * n), 1.0), part(16);
  counted.reduce_scatter(full, part, ReduceOp::sum);
  h.check(counted.tally(Collective::reduce_scatter) == Tally{1, 128 * un},
          "reduce_scatter counts its input: " + counted.report());
  std::vector<std::byte> bytes(100);
  counted.broadcast(std::span<std::byte>(bytes), 0);
  h.check(counted.tally(Collective::broadcast) == Tally{1, 100}, "broadcast counts its buffer: " + counted.report());
  std::vector<float> a2a(static_cast<std::size_t>(4 * n)), a2a_out(a2a.size());
  counted.all_to_all(a2a, a2a_out);
  h.check(counted.tally(Collective::all_to_all) == Tally{1, 16 * un},
          "all_to_all counts its buffer: " + counted.report());
  // Rank r sends j + 1 elements to rank j, so it receives r + 1 from each.
  std::vector<std::int64_t> sc(static_cast<std::size_t>(n)), rc(static_cast<std::size_t>(n), r + 1);
  std::int64_t sent = 0;
  for (int j = 0; j < n; ++j) sent += sc[static_cast<std::size_t>(j)] = j + 1;
  std::vector<float> v_in(static_cast<std::size_t>(sent)), v_out(static_cast<std::size_t>((r + 1) * n));
  counted.all_to_all_v(v_in, sc, v_out, rc);
  h.check(counted.tally(Collective::all_to_all_v) == Tally{1, 4 * sent},
          "all_to_all_v counts what this rank sends: " + counted.report());
  counted.barrier();
  h.check(counted.tally(Collective::barrier) == Tally{1, 0}, "a barrier is a call of no bytes: " + counted.report());
  h.check(counted.total().calls == 9, "nine calls in all: " + counted.report());

  // A call that throws is not counted.
  std::vector<std::int64_t> wrong(static_cast<std::size_t>(10 * n + 1));
  h.expect_error_containing([&] { counted.all_gather(shard, wrong); }, "all_gather on rank");
  h.check(counted.tally(Collective::all_gather).calls == 1, "a failed all_gather is not counted");

  counted.reset();
  h.check(counted.total() == Tally{}, "reset clears every tally");
  std::vector<float> two(2);
  counted.all_reduce(two, ReduceOp::max);
  h.check(counted.report() == "all_reduce: 1 call, 8 bytes", "report after reset: \"" + counted.report() + "\"");

  // Owning: a counter that holds its own communicator (here a duplicate of the world).
  CountingCommunicator owned(world.split(0, r));
  static_assert(std::is_same_v<decltype(owned), CountingCommunicator<MpiCommunicator>>);
  test::check_collectives(h, owned, 7, "CountingCommunicator<MpiCommunicator>");
  h.check(owned.tally(Collective::all_reduce).calls > 0 && owned.tally(Collective::all_to_all_v).calls > 0,
          "the owning counter counted the collectives it forwarded: " + owned.report());
  CountingCommunicator<SingleProcess> alone(SingleProcess{});
  test::check_reductions(h, alone, 8, "CountingCommunicator<SingleProcess>");
}

void errors(MpiHarness& h) {
  MpiCommunicator world = MpiCommunicator::world();
  const int n = world.size(), r = world.rank();
  const auto ns = std::to_string(n), rs = std::to_string(r);
  const auto un = static_cast<std::size_t>(n);
  auto site = [&](const char* c) { return where(c, r, n); };

  std::vector<float> six(6), ten(10), five(5), four(4);
  h.expect_error([&] { world.all_gather(six, ten); },
                 site("all_gather") + ": out has 10 elements, expected " + ns + " x 6 = " + std::to_string(6 * n));
  h.expect_error([&] { world.all_reduce(five, four, ReduceOp::sum); },
                 site("all_reduce") + ": in has 5 elements, out has 4 (they must be equal)");
  std::vector<double> rs_in(3 * un + 1), rs_out(3);
  h.expect_error([&] { world.reduce_scatter(rs_in, rs_out, ReduceOp::max); },
                 site("reduce_scatter") + ": in has " + std::to_string(3 * n + 1) + " elements, expected " + ns +
                     " x 3 = " + std::to_string(3 * n));
  h.expect_error([&] { world.broadcast(std::span<float>(ten), n); },
                 site("broadcast") + ": root " + ns + " is not a rank (0.." + std::to_string(n - 1) + ")");
  h.expect_error([&] { world.broadcast(std::span<float>(ten), -1); },
                 site("broadcast") + ": root -1 is not a rank (0.." + std::to_string(n - 1) + ")");
  std::vector<float> seven(7), eight(8);
  h.expect_error([&] { world.all_to_all(seven, eight); },
                 site("all_to_all") + ": in has 7 elements, out has 8 (they must be equal)");
  if (n > 1) {
    std::vector<float> odd(2 * un + 1), odd_out(2 * un + 1);
    h.expect_error([&] { world.all_to_all(odd, odd_out); },
                   site("all_to_all") + ": in has " + std::to_string(2 * n + 1) + " elements, not a multiple of " + ns +
                       " (one equal block per rank)");
  }

  // all_to_all_v: counts per rank, signs, extents, overlapping receive blocks.
  std::vector<float> v_in(4 * un), v_out(4 * un);
  std::vector<std::int64_t> ones(un, 1), packed(un), extra(un + 1, 0);
  for (std::size_t j = 0; j < un; ++j) packed[j] = static_cast<std::int64_t>(j);
  h.expect_error([&] { world.all_to_all_v(v_in, extra, packed, v_out, ones, packed); },
                 site("all_to_all_v") + ": send_counts has " + std::to_string(n + 1) + " entries, expected " + ns +
                     " (one per rank)");
  std::vector<std::int64_t> negative = ones;
  negative[0] = -1;
  h.expect_error([&] { world.all_to_all_v(v_in, ones, packed, v_out, negative, packed); },
                 site("all_to_all_v") + ": recv_counts[0] is -1 (counts must be >= 0)");
  std::vector<std::int64_t> past = packed;
  past[un - 1] = static_cast<std::int64_t>(4 * un);  // block n-1 starts at the end of in
  h.expect_error([&] { world.all_to_all_v(v_in, ones, past, v_out, ones, packed); },
                 site("all_to_all_v") + ": send block " + std::to_string(n - 1) + " (displacement " +
                     std::to_string(4 * n) + ", count 1) ends at " + std::to_string(4 * n + 1) + ", past in's " +
                     std::to_string(4 * n) + " elements");
  if (n > 1) {
    std::vector<std::int64_t> twos(un, 2), zeros(un, 0);
    h.expect_error([&] { world.all_to_all_v(v_in, ones, packed, v_out, twos, zeros); },
                   site("all_to_all_v") + ": recv blocks 0 and 1 overlap in out");
  }

  // Peers.
  h.expect_error([&] { world.send(std::span<const float>(six), n); },
                 site("send") + ": peer " + ns + " is not a rank (0.." + std::to_string(n - 1) + ")");
  h.expect_error([&] { world.recv(std::span<float>(six), r); },
                 site("recv") + ": peer " + rs + " is this rank (a rank does not send to itself)");
  h.expect_error([&] { world.send_recv(std::span<const float>(six), (r + 1) % n, std::span<float>(ten), -2); },
                 n == 1 ? site("send_recv") + ": destination 0 is this rank (a rank does not send to itself)"
                        : site("send_recv") + ": source -2 is not a rank (0.." + std::to_string(n - 1) + ")");

  // Overlaps that are not the in-place forms.
  std::vector<float> buf(4 * un + 16);
  const std::span<float> all(buf);
  h.expect_error([&] { world.all_reduce(std::span<const float>(all.first(10)), all.subspan(5, 10), ReduceOp::sum); },
                 site("all_reduce") + ": in and out overlap without being the same buffer (in place)");
  h.expect_error([&] { world.all_gather(std::span<const float>(all.subspan(1, 4)), all.subspan(0, 4 * un)); },
                 site("all_gather") + ": in overlaps out without being this rank's block of it (in place)");

  // More elements than an MPI count holds: refused before MPI sees them (2 GiB reserved, never touched).
  const std::size_t huge = std::size_t{INT_MAX} + 1;
  std::unique_ptr<std::byte[]> reserved(new std::byte[huge]);
  h.expect_error([&] { world.broadcast(std::span<std::byte>(reserved.get(), huge), 0); },
                 site("broadcast") + ": data is 2147483648 elements, more than an MPI count holds (2147483647); "
                                     "split the call");
  reserved.reset();

  // Nobody entered a collective above: the communicator is in step and works.
  std::vector<std::int64_t> one{1};
  world.all_reduce(std::span<std::int64_t>(one), ReduceOp::sum);
  h.check(one[0] == n, "after the errors, an all_reduce still sums over every rank");
}

void mpi_errors(MpiHarness& h) {
  MpiCommunicator world = MpiCommunicator::world();
  const int n = world.size(), r = world.rank();
  if (n < 2) return;  // MPI's own errors need a message between two ranks
  const std::string ns = std::to_string(n);
  std::vector<float> eight(8, 1.0f), four(4, 1.0f);
  // A message longer than the receive buffer: MPI says MPI_ERR_TRUNCATE (errors return, not abort).
  if (r == 0) world.send(eight, 1);
  if (r == 1)
    h.expect_error_containing([&] { world.recv(std::span<float>(four), 0); },
                              " failed in recv on rank 1 of " + ns + " (4 elements from rank 0): MPI_ERR_TRUNCATE");
  // A shorter one is no MPI error, but it is one here.
  if (r == 0) world.send(four, 1);
  if (r == 1)
    h.expect_error([&] { world.recv(std::span<float>(eight), 0); },
                   "recv on rank 1 of " + ns + ": received 4 elements from rank 0, expected 8");
  world.barrier();
}

void session(MpiHarness& h) {
  MpiSession inner;  // MPI is already up: this one neither initialises nor finalises it
  h.check(!inner.owns(), "a second MpiSession does not own MPI");
  h.check(static_cast<int>(inner.thread_level()) >= static_cast<int>(ThreadLevel::funneled),
          std::string("thread level 'funneled' or better, got '") + name(inner.thread_level()) + "'");
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession session_(&argc, &argv);
  int status = 0;
  {
    MpiHarness h;
    h.run("single process: every collective is a copy", single_process);
    h.run("mpi: every collective against its definition", mpi_world);
    h.run("mpi: split sub-communicators", mpi_split);
    h.run("mpi: send/recv ring and send_recv", point_to_point);
    h.run("counting: calls and bytes per collective", counters);
    h.run("errors: sizes, roots, peers, overlaps, counts on every rank", errors);
    h.run("errors: MPI's own errors come back with MPI's text", mpi_errors);
    h.run("session: a nested MpiSession leaves MPI alone", session);
    status = h.finish();
  }
  return status;
}
