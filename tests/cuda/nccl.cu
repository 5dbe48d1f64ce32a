// The NCCL communicator (parallel/nccl_communicator.hpp) as a one-rank communicator on one GPU:
// built by one_rank(device) (no MPI) and by from_mpi over a SingleProcess host communicator (the
// unique-id path, broadcast over one rank). Over one rank every collective is the identity, so each
// result must equal its input bit for bit, through NCCL's own calls, the grouped send/recv of
// all_to_all(_v), the stream, barrier and the counting wrapper. The size checks must throw the same
// text as on the host. Without a GPU: the "no CUDA device" errors of one_rank and from_mpi are checked
// (from_mpi must fail on every rank before NCCL is entered), then exit 77 (skipped).
// Exit status: 0 pass, 1 a check failed, 77 no GPU, 2 an unexpected error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/philox.hpp"
#include "reason/parallel/counting.hpp"
#include "reason/parallel/nccl_communicator.hpp"
#include "reason/parallel/single_process.hpp"

using namespace reason;
using namespace reason::parallel;

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what.c_str());
    ++failures;
  }
}
template <class F>
void expect_error(F&& f, const std::string& needle, const std::string& what) {
  const std::string wrong = test::error_mismatch(f, needle);
  if (!wrong.empty()) {
    std::printf("FAILED: %s: %s\n", what.c_str(), wrong.c_str());
    ++failures;
  }
}

template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t stream) {
  Philox rng(2024, stream);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(static_cast<std::int32_t>(rng.next_u32() % 2001) - 1000) / T{8};
  return v;
}

template <class T>
std::vector<T> to_host(const gpu::DeviceBuffer<T>& d, NcclCommunicator& comm) {
  comm.synchronize();
  std::vector<T> h(d.size());
  d.copy_to(h);
  return h;
}

/// Over one rank each collective returns its input: checked for one element type.
template <class T>
void identities(NcclCommunicator& comm, const char* type) {
  const std::string tag = std::string(" (") + type + ")";
  const std::size_t n = 1000;
  const std::vector<T> x = random_values<T>(n, sizeof(T));
  gpu::DeviceBuffer<T> in(n, "in"), out(n, "out");
  in.copy_from(x);
  for (const ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
    out.zero();
    comm.all_reduce(std::span<const T>(in.data(), n), std::span<T>(out.data(), n), op);
    expect(to_host(out, comm) == x, std::string("all_reduce ") + name(op) + tag);
    gpu::DeviceBuffer<T> inout(n, "inout");
    inout.copy_from(x);
    comm.all_reduce(std::span<T>(inout.data(), n), op);
    expect(to_host(inout, comm) == x, std::string("all_reduce in place ") + name(op) + tag);
    out.zero();
    comm.reduce_scatter(std::span<const T>(in.data(), n), std::span<T>(out.data(), n), op);
    expect(to_host(out, comm) == x, std::string("reduce_scatter ") + name(op) + tag);
  }
  out.zero();
  comm.all_gather(std::span<const T>(in.data(), n), std::span<T>(out.data(), n));
  expect(to_host(out, comm) == x, "all_gather" + tag);
  comm.broadcast(std::span<T>(in.data(), n), 0);
  expect(to_host(in, comm) == x, "broadcast" + tag);
  out.zero();
  comm.all_to_all(std::span<const T>(in.data(), n), std::span<T>(out.data(), n));
  expect(to_host(out, comm) == x, "all_to_all" + tag);
  // all_to_all_v: elements [3, 3 + 500) of in land at [7, 507) of out; the rest of out stays zero.
  const std::vector<std::int64_t> count{500}, send_at{3}, recv_at{7};
  out.zero();
  comm.all_to_all_v(std::span<const T>(in.data(), n), count, send_at, std::span<T>(out.data(), n), count, recv_at);
  std::vector<T> want(n, T{});
  for (std::size_t i = 0; i < 500; ++i) want[7 + i] = x[3 + i];
  expect(to_host(out, comm) == want, "all_to_all_v with displacements" + tag);
}

}  // namespace

int main() {
  try {
    SingleProcess host;
    if (!test::gpu_present()) {
      expect_error([] { (void)NcclCommunicator::one_rank(0); }, "no CUDA device is present", "one_rank without a GPU");
      expect_error([&] { (void)NcclCommunicator::from_mpi(host, 0); },
                   "from_mpi on rank 0 of 1 (device 0): CUDA was asked for, but no CUDA device is present",
                   "from_mpi without a GPU");
      return test::exit_status_without_gpu(failures);
    }
    int version = 0;
    REASON_NCCL_CHECK(nullptr, ncclGetVersion(&version));
    NcclCommunicator comm = NcclCommunicator::one_rank(0);
    expect(comm.rank() == 0 && comm.size() == 1 && comm.device() == 0, "one_rank(0) is rank 0 of 1 on device 0");
    identities<float>(comm, "float");
    identities<double>(comm, "double");
    identities<std::int32_t>(comm, "int32");
    identities<std::int64_t>(comm, "int64");
    comm.barrier();

    // The unique-id path: rank 0 of a one-rank host communicator makes the id, "broadcasts" it.
    NcclCommunicator bootstrapped = NcclCommunicator::from_mpi(host, 0);
    expect(bootstrapped.rank() == 0 && bootstrapped.size() == 1, "from_mpi over SingleProcess is rank 0 of 1");
    identities<float>(bootstrapped, "float, from_mpi");

    // Another stream, and the counting wrapper around a device communicator.
    gpu::Stream other;
    comm.set_stream(other.get());
    expect(comm.stream() == other.get(), "set_stream");
    CountingCommunicator counted(comm);
    gpu::DeviceBuffer<float> grads(4096, "grads");
    grads.zero();
    for (int b = 0; b < 4; ++b) counted.all_reduce(std::span<float>(grads.data() + b * 1024, 1024), ReduceOp::sum);
    counted.synchronize();
    expect(counted.tally(Collective::all_reduce) == Tally{4, 4 * 4096},
           "four all-reduces of 4 KiB: " + counted.report());

    // Size checks: the same text as every backend, before NCCL is called.
    const std::span<float> g(grads.data(), grads.size());
    expect_error([&] { comm.all_gather(std::span<const float>(g.first(6)), g.subspan(100, 10)); },
                 "all_gather on rank 0 of 1: out has 10 elements, expected 1 x 6 = 6", "all_gather size");
    expect_error([&] { comm.send(std::span<const float>(grads.data(), 4), 0); },
                 "send on rank 0 of 1: peer 0 is this rank", "send to itself");
    expect_error([&] { comm.broadcast(std::span<float>(grads.data(), 4), 1); },
                 "broadcast on rank 0 of 1: root 1 is not a rank (0..0)", "broadcast root");
    comm.synchronize();

    std::printf("%s (NCCL %d)\n", failures ? "FAILED" : "passed", version);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
