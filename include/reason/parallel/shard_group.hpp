// reason/parallel/shard_group.hpp — ShardGroupOf<C, T>: a model::ShardGroup<T> over any communicator.
//
// What a tensor- or expert-parallel model calls in its forward and backward (model/sharding.hpp),
// forwarded to the communicator's checked collectives, so their errors name the collective, the
// rank and the sizes, and a CountingCommunicator counts them:
//
//   parallel::MpiCommunicator comm = parallel::MpiCommunicator::world();
//   parallel::ShardGroupOf<parallel::MpiCommunicator, float> group(comm);
//   Net net(config, model::Sharding<float>{.tensor = &group});
//
// Host communicators only: the host Transformer's activations are host memory.
#pragma once

#include <cstdint>
#include <span>

#include "reason/model/sharding.hpp"
#include "reason/parallel/communicator.hpp"

namespace reason::parallel {

template <Communicator C, class T>
class ShardGroupOf final : public model::ShardGroup<T> {
  static_assert(C::memory == Memory::host,
                "parallel::ShardGroupOf<C, T>: the host model's activations are host memory; a device communicator "
                "(NCCL) cannot reduce them");

 public:
  explicit ShardGroupOf(C& comm) : comm_(&comm) {}

  [[nodiscard]] int rank() const override { return comm_->rank(); }
  [[nodiscard]] int size() const override { return comm_->size(); }
  void all_reduce_sum(std::span<T> data) override { comm_->all_reduce(data, ReduceOp::sum); }
  void all_to_all_v(std::span<const T> in, std::span<const std::int64_t> send_counts, std::span<T> out,
                    std::span<const std::int64_t> recv_counts) override {
    comm_->all_to_all_v(in, send_counts, out, recv_counts);
  }
  void all_to_all(std::span<const std::int64_t> in, std::span<std::int64_t> out) override { comm_->all_to_all(in, out); }
  void send(std::span<const T> data, int peer) override { comm_->send(data, peer); }
  void recv(std::span<T> data, int peer) override { comm_->recv(data, peer); }
  void send_recv(std::span<const T> in, int dst, std::span<T> out, int src) override { comm_->send_recv(in, dst, out, src); }
  [[nodiscard]] C& communicator() const { return *comm_; }

 private:
  C* comm_;
};

}  // namespace reason::parallel
