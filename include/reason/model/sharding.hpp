// reason/model/sharding.hpp — how one rank's share of a model-parallel Transformer talks to the others.
//
// Data parallelism and ZeRO leave the model whole and act on the trainer's buffers; tensor and expert
// parallelism split the model itself, so its forward and backward call collectives in the middle of
// a layer. The model sees those collectives through ShardGroup<T>, a small interface that
// parallel::ShardGroupOf<C, T> implements over any Communicator (MPI, NCCL, single process, and
// the counting wrapper the tests use). A virtual call per collective costs nothing next to the
// collective; it keeps the communicator type out of every model and module type, so the same
// compiled model runs unsplit, tensor parallel or expert parallel by what it is built with:
//
//   model::Sharding<float> s{.tensor = &tp_group};   // Megatron: heads and FFN width split
//   Net net(config, s);                                // this rank's share of the model
//
// Which parameters a rank holds, and how they map onto the unsplit model's, is the model's
// ShardPlan (model/shard_plan.hpp).
#pragma once

#include <cstdint>
#include <span>

namespace reason::model {

/// The collectives a split model calls inside forward and backward; every rank of the group calls
/// each one in the same order with matching sizes.
template <class T>
class ShardGroup {
 public:
  virtual ~ShardGroup() = default;
  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int size() const = 0;
  /// data = the sum over the group of every rank's data, in place (a row-parallel layer's
  /// partial outputs; a column-parallel layer's partial input gradients).
  virtual void all_reduce_sum(std::span<T> data) = 0;
  /// Rows exchanged between the ranks: `in` holds size() packed blocks, block j (send_counts[j]
  /// elements) for rank j; `out` receives block i (recv_counts[i] elements) from rank i, packed.
  virtual void all_to_all_v(std::span<const T> in, std::span<const std::int64_t> send_counts, std::span<T> out,
                            std::span<const std::int64_t> recv_counts) = 0;
  /// size() equal blocks of counts: in's block j goes to rank j, out's block i came from rank i.
  virtual void all_to_all(std::span<const std::int64_t> in, std::span<std::int64_t> out) = 0;
  /// Point to point (a pipeline's activations and their gradients between neighbouring stages).
  virtual void send(std::span<const T> data, int peer) = 0;
  virtual void recv(std::span<T> data, int peer) = 0;
  /// Sends to `dst` and receives from `src` at once: the deadlock-free step of a pipeline's steady state.
  virtual void send_recv(std::span<const T> in, int dst, std::span<T> out, int src) = 0;
};

/// The groups a Transformer is split over; null: not split that way.
template <class T>
struct Sharding {
  ShardGroup<T>* tensor = nullptr;  // attention heads and FFN width split over its ranks (tensor parallelism)
  ShardGroup<T>* expert = nullptr;  // routed experts spread over its ranks (expert parallelism)
  ShardGroup<T>* pipeline = nullptr;  // layers split into consecutive stages, one per rank (pipeline parallelism)

  [[nodiscard]] int tensor_size() const { return tensor ? tensor->size() : 1; }
  [[nodiscard]] int tensor_rank() const { return tensor ? tensor->rank() : 0; }
  [[nodiscard]] int expert_size() const { return expert ? expert->size() : 1; }
  [[nodiscard]] int expert_rank() const { return expert ? expert->rank() : 0; }
  [[nodiscard]] int pipeline_size() const { return pipeline ? pipeline->size() : 1; }
  [[nodiscard]] int pipeline_rank() const { return pipeline ? pipeline->rank() : 0; }
};

}  // namespace reason::model
