// reason/parallel/zero.hpp — ZeRO stages 1 and 2: data parallelism whose optimizer state (stage 1)
// and accumulated gradients (stage 2) are sharded over the ranks.
//
// Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", SC 2020,
// §5.1-5.2. The flat buffer of n elements is cut into `size` equal shards of c = ceil(n / size)
// (the last padded with zeros), rank r owning elements [r c, r c + c). Per optimizer step:
//   stage 1  after the step's last backward, one reduce_scatter of the full gradient buffer gives
//            each rank the summed gradient of its shard;
//   stage 2  after *every* micro-batch's backward, a reduce_scatter moves that micro-batch's
//            gradient into the rank's shard accumulator and the full buffer is zeroed: what
//            persists between micro-batches is 1/size of the gradients (the model still writes its
//            backward into one full-size buffer, which is scratch here);
//   both     the global gradient norm from each shard's sum of squares (one all_reduce of a double),
//            the clip and the optimizer step on the shard only (optimizer state: slots x c per
//            rank; ParamLayout::slice gives an element-wise optimizer the shard's tensors with their
//            weight-decay flags), then one all_gather of the parameter shards.
// So per step: 1 (stage 1) or micro_batches (stage 2) reduce_scatters of n_pad elements, one
// all_reduce of one double, one all_gather of n_pad elements, and the trainer's two scalar
// all_reduces (token count, loss) — what tests/parallel count.
// Against one process on the whole batch the result differs by the order of the sums only.
// Checkpoints: to_host() gathers the state shards into the host mirror (so rank 0 can write the
// usual file) and from_host() takes this rank's shard back; take them between steps.
// Host memory only (the GPU's sharded step is for later).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/kernels/reduce.hpp"
#include "reason/parallel/communicator.hpp"
#include "reason/parallel/data_parallel.hpp"
#include "reason/train/clip.hpp"

namespace reason::parallel {

/// Which ZeRO stage: 1 shards the optimizer state, 2 also the accumulated gradients.
enum class ZeroStage { optimizer_state = 1, gradients = 2 };

template <class T, class Opt, ZeroStage Stage, Communicator C>
class ZeroBuffers {
  static_assert(C::memory == Memory::host, "parallel::Zero<Stage, C>: host buffers and a host communicator (MPI)");

 public:
  ZeroBuffers(const ParamLayout& layout, std::span<const T> initial, bool with_reference, C& comm)
      : comm_(&comm), n_(layout.size()) {
    REASON_CHECK(initial.size() == n_, "parallel::Zero: ", initial.size(), " initial parameters for a layout of ", n_);
    const auto ranks = static_cast<std::size_t>(comm.size());
    shard_ = (n_ + ranks - 1) / ranks;
    first_ = static_cast<std::size_t>(comm.rank()) * shard_;
    owned_ = first_ < n_ ? std::min(shard_, n_ - first_) : 0;
    shard_layout_ = layout.slice(std::min(first_, n_), owned_);
    params_.assign(shard_ * ranks, T(0));
    std::copy(initial.begin(), initial.end(), params_.begin());
    comm_->broadcast(std::span<T>(params_), 0);  // replicas start equal
    if (with_reference) reference_.assign(params_.begin(), params_.begin() + static_cast<std::ptrdiff_t>(n_));
    grads_.assign(params_.size(), T(0));
    grad_shard_.assign(shard_, T(0));
    state_.assign(static_cast<std::size_t>(Opt::state_slots) * owned_, T(0));
  }

  [[nodiscard]] T* params() { return params_.data(); }
  [[nodiscard]] const T* params() const { return params_.data(); }
  [[nodiscard]] T* grads() { return grads_.data(); }
  [[nodiscard]] const T* reference() const { return reference_.data(); }

  void zero_grads() {
    std::fill(grads_.begin(), grads_.end(), T(0));
    std::fill(grad_shard_.begin(), grad_shard_.end(), T(0));
  }
  /// Stage 2: this micro-batch's gradient, summed over the ranks, into the shard accumulator.
  void after_backward() {
    if constexpr (Stage == ZeroStage::gradients) {
      scatter_.resize(shard_);
      comm_->reduce_scatter(std::span<const T>(grads_), std::span<T>(scatter_), ReduceOp::sum);
      for (std::size_t i = 0; i < shard_; ++i) grad_shard_[i] += scatter_[i];
      std::fill(grads_.begin(), grads_.end(), T(0));
    }
  }
  /// Stage 1: reduce-scatters the step's gradients; both: the global norm, and the clip of the shard.
  double clip_grad_norm(double max_norm, double unscale = 1.0) {
    if constexpr (Stage == ZeroStage::optimizer_state)
      comm_->reduce_scatter(std::span<const T>(grads_), std::span<T>(grad_shard_), ReduceOp::sum);
    double sq = kernels::sum_squares<T>(std::span<const T>(grad_shard_));
    comm_->all_reduce(std::span<double>(&sq, 1), ReduceOp::sum);
    const double norm = std::sqrt(sq) * unscale;
    const double factor = train::clip_factor(norm, max_norm, unscale);
    if (factor != 1.0) kernels::scale<T>(std::span<T>(grad_shard_), static_cast<T>(factor));
    return norm;
  }
  /// The optimizer step on this rank's shard, then the all-gather of every rank's new parameters.
  void step(const Opt& opt, double lr, std::int64_t t) {
    opt.step(shard_layout_, std::span<T>(params_).subspan(first_, owned_),
             std::span<const T>(grad_shard_).first(owned_), std::span<T>(state_), lr, t);
    comm_->all_gather(std::span<const T>(params_).subspan(first_, shard_), std::span<T>(params_));
  }
  void reset_reference() {
    REASON_CHECK(!reference_.empty() || n_ == 0, "parallel::Zero::reset_reference: made without a reference");
    std::copy(params_.begin(), params_.begin() + static_cast<std::ptrdiff_t>(n_), reference_.begin());
  }
  void sum_across_ranks(std::span<double> values) { comm_->all_reduce(values, ReduceOp::sum); }
  [[nodiscard]] int rank() const { return comm_->rank(); }

  [[nodiscard]] std::span<T> host_params() { return std::span<T>(params_).first(n_); }
  [[nodiscard]] std::span<const T> host_params() const { return std::span<const T>(params_).first(n_); }
  /// The full gradient buffer (this rank's own; under stage 2 zero between micro-batches).
  [[nodiscard]] std::span<T> host_grads() { return std::span<T>(grads_).first(n_); }
  [[nodiscard]] std::span<const T> host_grads() const { return std::span<const T>(grads_).first(n_); }
  [[nodiscard]] std::span<T> host_reference() { return reference_; }
  [[nodiscard]] std::span<const T> host_reference() const { return reference_; }
  /// The whole optimizer state, for checkpoints: valid after to_host(), which gathers it (a
  /// collective: every rank calls it); from_host() takes this rank's shard back. The full-size
  /// mirror is allocated on first use only, so a run that never checkpoints never holds it.
  [[nodiscard]] std::span<T> host_state() { return mirror(); }
  [[nodiscard]] std::span<const T> host_state() const { return mirror(); }
  void to_host() const {
    mirror();
    std::vector<T> padded(shard_), gathered(shard_ * static_cast<std::size_t>(comm_->size()));
    for (int s = 0; s < Opt::state_slots; ++s) {
      std::fill(padded.begin(), padded.end(), T(0));
      std::copy_n(state_.begin() + static_cast<std::ptrdiff_t>(s * owned_), owned_, padded.begin());
      comm_->all_gather(std::span<const T>(padded), std::span<T>(gathered));
      std::copy_n(gathered.begin(), n_, host_state_.begin() + static_cast<std::ptrdiff_t>(s * n_));
    }
  }
  void from_host() {
    mirror();
    for (int s = 0; s < Opt::state_slots; ++s)
      std::copy_n(host_state_.begin() + static_cast<std::ptrdiff_t>(s * n_ + first_), owned_,
                  state_.begin() + static_cast<std::ptrdiff_t>(s * owned_));
  }

  /// Bytes this rank holds in optimizer state (its shard; measured from the buffer, excluding the
  /// checkpoint mirror) and in gradients that persist between micro-batches (stage 2: the shard).
  [[nodiscard]] std::size_t optimizer_state_bytes() const { return state_.size() * sizeof(T); }
  [[nodiscard]] std::size_t accumulated_gradient_bytes() const {
    return (Stage == ZeroStage::gradients ? grad_shard_.size() : grads_.size()) * sizeof(T);
  }
  [[nodiscard]] std::size_t shard_elements() const { return shard_; }

 private:
  std::span<T> mirror() const {
    if (host_state_.empty()) host_state_.assign(static_cast<std::size_t>(Opt::state_slots) * n_, T(0));
    return host_state_;
  }

  C* comm_;
  std::size_t n_, shard_ = 0, first_ = 0, owned_ = 0;
  ParamLayout shard_layout_;
  std::vector<T> params_, grads_, grad_shard_, scatter_, reference_, state_;
  mutable std::vector<T> host_state_;
};

/// The policy: `Trainer<Net, Opt, Zero<ZeroStage::gradients, C>>` with `Zero<...>{comm}`.
template <ZeroStage Stage, Communicator C>
struct Zero {
  C* comm = nullptr;

  explicit Zero(C& c) : comm(&c) {}

  template <class Net, class T, class Opt>
  using buffers = ZeroBuffers<T, Opt, Stage, C>;

  template <class Opt, class Net, class T>
  buffers<Net, T, Opt> make_buffers(const Net& net, std::span<const T> initial, bool with_reference) const {
    REASON_CHECK(comm != nullptr, "parallel::Zero: no communicator");
    static_assert(!requires { typename Net::template train_buffers<Opt>; },
                  "parallel::Zero: the sharded optimizer step runs on the host; a CUDA model trains with "
                  "parallel::DataParallel");
    return buffers<Net, T, Opt>(net.layout(), initial, with_reference, *comm);
  }
};

}  // namespace reason::parallel
