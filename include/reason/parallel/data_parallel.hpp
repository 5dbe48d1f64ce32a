// reason/parallel/data_parallel.hpp — data parallelism: every rank holds the whole model, trains on
// its own share of each step's batch, and the gradients are summed across ranks before the step.
//
// Design rule: a parallelism policy of train::Trainer chooses the trainer's buffers (the flat
// parameters, gradients and optimizer state, train/train_buffers.hpp); the loop itself does not
// change. DataParallel<C>'s buffers are the model's own (host or device) with two additions:
//   sum_across_ranks(values)  the step's scalars: its target-token count before the first
//                             backward (so every rank scales its loss by 1 / the *global* count and
//                             the summed gradient is the gradient of the global mean loss), and the
//                             loss sum and count after the last one — one all-reduce each;
//   clip_grad_norm            first sums the gradients over the ranks, in buckets of bucket_bytes
//                             (one all-reduce per bucket, in place, after the step's last
//                             micro-batch), then clips as one process does.
// Every rank then takes the same optimizer step on the same summed gradients, so the replicas stay
// equal without moving parameters. Against one process training on the whole batch the result
// differs only by the order of the sums (floating-point tolerance; tests/parallel check it).
// The initial parameters are broadcast from rank 0, so replicas start equal even if a caller's
// initialisation differed.
// (Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020:
// gradient bucketing; buckets are all-reduced after backward here, not overlapped with it.)
// Checkpoints: the replicas are equal, so rank 0 writes; a checkpoint is taken between steps (the
// gradients accumulated mid-step are each rank's own and are not gathered).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

#include "reason/core/error.hpp"
#include "reason/parallel/buffers_over.hpp"
#include "reason/parallel/communicator.hpp"
#include "reason/train/train_buffers.hpp"

namespace reason::parallel {

/// Gradient bucket size. PyTorch DDP uses 25 MiB; 4 MiB here, because Open MPI's host all-reduce
/// falls off a cliff above 16 MiB per call on the 2-core CI machine (its temporaries are allocated
/// and page-faulted per call: bench/README.md, "Collectives").
inline constexpr std::size_t default_bucket_bytes = std::size_t{4} << 20;

/// `Base` (train_buffers_t of the model) with the gradient all-reduce of data parallelism.
/// With a device communicator (NCCL) the buffers must be a CUDA model's device buffers, and the
/// communicator runs on the model's stream (DataParallel::make_buffers sets it), so its collectives
/// are ordered with the model's kernels; the step's scalars are staged through device memory.
template <class Base, Communicator C>
class DataParallelBuffers : public BuffersOver<Base> {
  using BuffersOver<Base>::base_;

 public:
  using T = typename BuffersOver<Base>::T;

  DataParallelBuffers(Base base, C& comm, std::size_t bucket_bytes)
      : BuffersOver<Base>(std::move(base)), comm_(&comm), bucket_elems_(std::max<std::size_t>(1, bucket_bytes / sizeof(T))) {
    if constexpr (C::memory == Memory::device) {
      comm_->broadcast(std::span<T>(base_.params(), base_.host_params().size()), 0);  // on the device, in place
      comm_->synchronize();
    } else {
      std::span<T> p = base_.host_params();
      comm_->broadcast(p, 0);
      base_.from_host();
    }
  }

  /// Sums the gradients over the ranks (one all-reduce per bucket), then clips like one process.
  double clip_grad_norm(double max_norm, double unscale = 1.0) {
    const std::size_t n = base_.host_grads().size();
    for (std::size_t at = 0; at < n; at += bucket_elems_)
      comm_->all_reduce(std::span<T>(base_.grads() + at, std::min(bucket_elems_, n - at)), ReduceOp::sum);
    return base_.clip_grad_norm(max_norm, unscale);
  }
  /// Sums `values` over the ranks in place (the step's token count, loss sum and count).
  void sum_across_ranks(std::span<double> values) {
    if constexpr (C::memory == Memory::device)
      comm_->all_reduce_host(values, ReduceOp::sum);
    else
      comm_->all_reduce(values, ReduceOp::sum);
  }
  [[nodiscard]] int rank() const { return comm_->rank(); }

  /// Bytes this rank holds in optimizer state (all of it: data parallelism replicates it).
  [[nodiscard]] std::size_t optimizer_state_bytes() const { return base_.host_state().size() * sizeof(T); }

 private:
  C* comm_;
  std::size_t bucket_elems_;
};

/// The policy: `Trainer<Net, Opt, DataParallel<C>>` with `DataParallel<C>{comm}`.
template <Communicator C>
struct DataParallel {
  C* comm = nullptr;
  std::size_t bucket_bytes = default_bucket_bytes;

  explicit DataParallel(C& c, std::size_t bucket = default_bucket_bytes) : comm(&c), bucket_bytes(bucket) {}

  template <class Net, class T, class Opt>
  using buffers = DataParallelBuffers<train::train_buffers_t<Net, T, Opt>, C>;

  template <class Opt, class Net, class T>
  buffers<Net, T, Opt> make_buffers(const Net& net, std::span<const T> initial, bool with_reference) const {
    REASON_CHECK(comm != nullptr, "parallel::DataParallel: no communicator");
    if constexpr (C::memory == Memory::device) {
      static_assert(requires { net.stream(); },
                    "parallel::DataParallel<C>: a device communicator (NCCL) reduces a CUDA model's device buffers; "
                    "this model's buffers are on the host (use an MPI communicator)");
      comm->set_stream(net.stream());  // the collectives in order with the model's kernels
    }
    using Base = train::train_buffers_t<Net, T, Opt>;
    return buffers<Net, T, Opt>(train::make_train_buffers<Base>(net, initial, with_reference), *comm, bucket_bytes);
  }
};

}  // namespace reason::parallel
