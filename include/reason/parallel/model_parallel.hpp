// reason/parallel/model_parallel.hpp — the trainer's side of tensor and expert parallelism.
//
// A tensor- or expert-parallel model (model/sharding.hpp) holds only its share of the parameters and
// does its forward and backward collectives itself. What is left for the trainer's buffers is the
// step, and its ShardPlan (model/shard_plan.hpp) says how:
//   - gradients that are a part on each holder (`partial` pieces: under tensor parallelism a KV head
//     replicated over tp / kv_heads ranks, each of which backpropagated only its own query heads;
//     under expert parallelism every replicated tensor — router, shared experts, attention, norms —
//     since every rank trained on its own tokens) are summed over their holders after the step's
//     last backward: placed at their unsplit-model positions in one staging buffer, all-reduced in
//     buckets, and read back;
//   - the global gradient norm counts each value once: every run of the plan adds its sum of squares
//     divided by its number of holders, and one all-reduce of a double sums the ranks;
//   - the optimizer steps over the local buffers only (the optimizer state is 1/tp of the split
//     tensors', 1/ep of the experts'), and replicas stay equal because their gradients are.
// Megatron-LM's tensor parallelism (Shoeybi et al. 2019) and GShard's expert parallelism (Lepikhin et
// al. 2021), with data parallelism over the expert-parallel ranks (each its own share of the batch:
// the buffers then sum the step's scalars over the ranks too, like DataParallel).
// Checkpoints: save_checkpoint gathers the parameters and the optimizer state into the unsplit
// model's layout (gather_full; every rank calls it, rank 0 writes), so the file is the one a single
// process writes and any split — or none — loads it (each rank scatters its share). Taken between
// steps: mid-step, some gradients are still each rank's part.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/kernels/reduce.hpp"
#include "reason/model/shard_plan.hpp"
#include "reason/parallel/buffers_over.hpp"
#include "reason/parallel/communicator.hpp"
#include "reason/parallel/data_parallel.hpp"
#include "reason/train/clip.hpp"
#include "reason/train/train_buffers.hpp"

namespace reason::parallel {

/// `Base` (the model's train_buffers_t) of one rank of a split model. OwnData: every rank trains on
/// its own share of the batch (expert parallelism), so the step's scalars are summed over the ranks.
template <class Base, Communicator C, bool OwnData>
class ModelParallelBuffers : public BuffersOver<Base> {
  static_assert(C::memory == Memory::host,
                "parallel::TensorParallel / ExpertParallel / Pipeline: host buffers and a host communicator (MPI)");
  using BuffersOver<Base>::base_;

 public:
  using T = typename BuffersOver<Base>::T;
  static constexpr bool model_parallel = true;  // a share of the model: checkpoints gather it (train/checkpoint.hpp)

  ModelParallelBuffers(Base base, const model::ShardPlan& plan, C& comm, std::size_t bucket_bytes)
      : BuffersOver<Base>(std::move(base)), plan_(&plan), comm_(&comm), bucket_elems_(std::max<std::size_t>(1, bucket_bytes / sizeof(T))) {
    REASON_CHECK(plan.local_layout().size() == base_.host_params().size(), "parallel: the shard plan covers ",
                 plan.local_layout().size(), " parameters, the buffers hold ", base_.host_params().size());
    // The staging buffer: the unsplit-model tensors with a partial piece, each at its own offset.
    std::vector<std::size_t> stage_base(plan.full_layout().params().size(), npos);
    for (const model::ShardEntry& e : plan.entries())
      for (const model::ShardPiece& p : e.pieces)
        if (p.partial && p.holders > 1 && stage_base[e.full] == npos) {
          stage_base[e.full] = stage_size_;
          stage_size_ += plan.full_layout().params()[e.full].numel;
        }
    // The same stage size on every rank is what makes one bucketed all-reduce possible.
    std::int64_t sizes[2] = {static_cast<std::int64_t>(stage_size_), -static_cast<std::int64_t>(stage_size_)};
    comm_->all_reduce(std::span<std::int64_t>(sizes), ReduceOp::max);
    REASON_CHECK(sizes[0] == -sizes[1], "parallel: rank ", comm_->rank(), " stages ", stage_size_,
                 " partial-gradient elements, another rank ", sizes[0] == static_cast<std::int64_t>(stage_size_) ? -sizes[1] : sizes[0],
                 "; every rank must be built with the same model and split");
    plan.for_each_run([&](std::size_t lo, std::size_t fo, std::size_t n, const model::ShardPiece& p,
                          const model::ShardEntry& e) {
      const bool partial = p.partial && p.holders > 1;  // at its unsplit position in the stage
      const std::size_t stage = partial ? stage_base[e.full] + (fo - plan.full_layout().params()[e.full].offset) : 0;
      runs_.push_back({lo, stage, n, p.holders, partial});
    });
  }

  /// Sums the partial gradients over their holders, then clips to the global norm of the unsplit model.
  double clip_grad_norm(double max_norm, double unscale = 1.0) {
    std::span<T> g = base_.host_grads();
    if (stage_size_ > 0) {
      stage_.assign(stage_size_, T(0));
      for (const Run& r : runs_)
        if (r.partial) std::copy_n(g.data() + r.local, r.length, stage_.data() + r.stage);
      for (std::size_t at = 0; at < stage_size_; at += bucket_elems_)
        comm_->all_reduce(std::span<T>(stage_.data() + at, std::min(bucket_elems_, stage_size_ - at)), ReduceOp::sum);
      for (const Run& r : runs_)
        if (r.partial) std::copy_n(stage_.data() + r.stage, r.length, g.data() + r.local);
    }
    double sq = 0;
    for (const Run& r : runs_)
      sq += kernels::sum_squares<T>(std::span<const T>(g.data() + r.local, r.length)) / static_cast<double>(r.holders);
    comm_->all_reduce(std::span<double>(&sq, 1), ReduceOp::sum);
    const double norm = std::sqrt(sq) * unscale;
    const double factor = train::clip_factor(norm, max_norm, unscale);
    if (factor != 1.0) kernels::scale<T>(g, static_cast<T>(factor));
    return norm;
  }
  /// Expert parallelism: the step's scalars summed over the ranks (each trained on its own tokens).
  void sum_across_ranks(std::span<double> values)
    requires OwnData
  {
    sum_over_group(values);
  }
  [[nodiscard]] int rank() const { return comm_->rank(); }
  /// Sums `values` over the group in place, whatever the policy (a pipeline's loss, known on its last stage).
  void sum_over_group(std::span<double> values) { comm_->all_reduce(values, ReduceOp::sum); }
  [[nodiscard]] C& communicator() const { return *comm_; }

  /// The unsplit model's parameters, assembled from every rank's share (a collective; every rank
  /// gets them, bit for bit).
  [[nodiscard]] std::vector<T> gather_full() const { return gather_full(base_.host_params()); }
  /// Any buffer laid out like the parameters (an optimizer state slot), likewise: the first of each
  /// value's holders places it in a zeroed full buffer, and the buffers are summed.
  [[nodiscard]] std::vector<T> gather_full(std::span<const T> local) const {
    REASON_CHECK(local.size() == plan_->local_layout().size(), "parallel: gather_full of ", local.size(),
                 " values, the rank's share has ", plan_->local_layout().size());
    std::vector<T> full(plan_->full_layout().size(), T(0));
    const int rank = comm_->rank();
    plan_->for_each_run([&](std::size_t lo, std::size_t fo, std::size_t n, const model::ShardPiece& p,
                            const model::ShardEntry&) {
      if (rank % p.holders == 0) std::copy_n(local.data() + lo, n, full.data() + fo);
    });
    comm_->all_reduce(std::span<T>(full), ReduceOp::sum);
    return full;
  }
  [[nodiscard]] const model::ShardPlan& shard_plan() const { return *plan_; }

  /// Bytes this rank holds in parameters and in optimizer state (measured from the buffers).
  [[nodiscard]] std::size_t parameter_bytes() const { return base_.host_params().size() * sizeof(T); }
  [[nodiscard]] std::size_t optimizer_state_bytes() const { return base_.host_state().size() * sizeof(T); }
  /// Elements all-reduced per step to sum the partial gradients.
  [[nodiscard]] std::size_t partial_gradient_elements() const { return stage_size_; }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  struct Run {
    std::size_t local, stage, length;
    int holders;
    bool partial;
  };

  const model::ShardPlan* plan_;
  C* comm_;
  std::size_t bucket_elems_;
  std::vector<Run> runs_;
  std::size_t stage_size_ = 0;
  std::vector<T> stage_;
};

/// Which member of model::Sharding a split-model policy needs.
enum class Split { tensor, expert, pipeline };

/// The policy of a split model: `buffers` (BuffersOf<the model's own buffers, C>) made after
/// checking that the model is split that way over a group like `comm`.
template <Communicator C, Split S, template <class, class> class BuffersOf>
struct SplitPolicy {
  C* comm = nullptr;
  std::size_t bucket_bytes = default_bucket_bytes;  // the partial-gradient sum's all-reduce buckets

  explicit SplitPolicy(C& c, std::size_t bucket = default_bucket_bytes) : comm(&c), bucket_bytes(bucket) {}

  template <class Net, class T, class Opt>
  using buffers = BuffersOf<train::train_buffers_t<Net, T, Opt>, C>;

  template <class Opt, class Net, class T>
  buffers<Net, T, Opt> make_buffers(const Net& net, std::span<const T> initial, bool with_reference) const {
    constexpr const char* policy = S == Split::tensor ? "TensorParallel" : S == Split::expert ? "ExpertParallel" : "Pipeline";
    constexpr const char* field = S == Split::tensor ? "tensor" : S == Split::expert ? "expert" : "pipeline";
    REASON_CHECK(comm != nullptr, "parallel::", policy, ": no communicator");
    const auto& sh = net.sharding();
    const auto* group = S == Split::tensor ? sh.tensor : S == Split::expert ? sh.expert : sh.pipeline;
    REASON_CHECK(group != nullptr, "parallel::", policy, ": the model is not split that way (build it with model::Sharding{.",
                 field, " = group})");
    REASON_CHECK(group->size() == comm->size() && group->rank() == comm->rank(), "parallel::", policy,
                 ": the model is split over ", group->size(), " ranks (this one ", group->rank(),
                 "), the trainer's communicator has ", comm->size(), " (this one ", comm->rank(), ")");
    using Base = train::train_buffers_t<Net, T, Opt>;
    return buffers<Net, T, Opt>(train::make_train_buffers<Base>(net, initial, with_reference), net.shard_plan(), *comm,
                                bucket_bytes);
  }
};

template <class Base, class C>
using TensorParallelBuffers = ModelParallelBuffers<Base, C, false>;
template <class Base, class C>
using ExpertParallelBuffers = ModelParallelBuffers<Base, C, true>;

/// Tensor parallelism: `Trainer<Net, Opt, TensorParallel<C>>` with `TensorParallel<C>{comm}`, for a
/// Net built with model::Sharding{.tensor = ShardGroupOf<C, T>(comm)}. Every rank trains on the same batch.
template <Communicator C>
struct TensorParallel : SplitPolicy<C, Split::tensor, TensorParallelBuffers> {
  using SplitPolicy<C, Split::tensor, TensorParallelBuffers>::SplitPolicy;
};

/// Expert parallelism: `Trainer<Net, Opt, ExpertParallel<C>>` with `ExpertParallel<C>{comm}`, for an MoE
/// Net built with model::Sharding{.expert = ShardGroupOf<C, T>(comm)}. Every rank trains on its own
/// share of each step's batch.
template <Communicator C>
struct ExpertParallel : SplitPolicy<C, Split::expert, ExpertParallelBuffers> {
  using SplitPolicy<C, Split::expert, ExpertParallelBuffers>::SplitPolicy;
};

}  // namespace reason::parallel
