// reason/train/train_buffers.hpp — the flat buffers a training loop owns, on the host.
//
// Parameters, gradients, optimizer state (and, for RL, a frozen reference copy of the
// parameters), with the handful of operations a loop performs on them: zero the gradients, clip
// them to a global norm, take an optimizer step, copy the parameters into the reference. A loop
// written against this interface runs unchanged on a CUDA model, whose buffers are
// gpu::TrainBuffers (train/gpu_train_buffers.hpp, the same member functions on device memory):
//
//   params() / grads() / reference()      what the model reads and writes (host or device pointers)
//   zero_grads(), clip_grad_norm(max, unscale), step(opt, lr, t), reset_reference()
//   host_params() / host_grads() / host_reference() / host_state()
//                                         host spans for checkpoints; on a device they are mirrors,
//                                         valid after to_host(), uploaded by from_host()
//
// Which one a model trains with is train_buffers_t<Net, Opt>: Net::train_buffers<Opt> when the
// model names one (a CUDA model), HostTrainBuffers otherwise. A trainer's parallelism policy
// (SingleProcess below, parallel::DataParallel, parallel::Zero) makes them, or buffers of its own
// that add the collectives: a policy is `buffers<Net, T, Opt>` and `make_buffers<Opt>(net, initial,
// with_reference)`, and its buffers may add sum_across_ranks(values) (the step's scalars summed
// over the ranks) and after_backward() (called after every micro-batch's backward).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/train/clip.hpp"

namespace reason::train {

template <class T, class Opt>
class HostTrainBuffers {
 public:
  /// Parameters from `initial` (layout.size() values), gradients and optimizer state zero; with
  /// `with_reference`, a reference copy of the initial parameters.
  HostTrainBuffers(const ParamLayout& layout, std::span<const T> initial, bool with_reference)
      : layout_(&layout) {
    const std::size_t n = layout.size();
    REASON_CHECK(initial.size() == n, "HostTrainBuffers: ", initial.size(), " initial parameters for a layout of ", n);
    params_.assign(initial.begin(), initial.end());
    if (with_reference) reference_ = params_;
    grads_.assign(n, T(0));
    state_.assign(n * static_cast<std::size_t>(Opt::state_slots), T(0));
  }

  [[nodiscard]] T* params() { return params_.data(); }
  [[nodiscard]] const T* params() const { return params_.data(); }
  [[nodiscard]] T* grads() { return grads_.data(); }
  [[nodiscard]] const T* reference() const { return reference_.data(); }

  void zero_grads() { std::fill(grads_.begin(), grads_.end(), T(0)); }
  /// Multiplies the gradients by `unscale` (1/S under loss scaling) and scales them to a global L2
  /// norm of at most max_norm (<= 0: never); the unscaled norm before clipping.
  double clip_grad_norm(double max_norm, double unscale = 1.0) {
    return train::clip_grad_norm<T>(std::span<T>(grads_), max_norm, unscale);
  }
  void step(const Opt& opt, double lr, std::int64_t t) {
    opt.step(*layout_, std::span<T>(params_), std::span<const T>(grads_), std::span<T>(state_), lr, t);
  }
  /// reference <- params.
  void reset_reference() {
    REASON_CHECK(!reference_.empty() || params_.empty(), "HostTrainBuffers::reset_reference: made without a reference");
    reference_ = params_;
  }

  [[nodiscard]] std::span<T> host_params() { return params_; }
  [[nodiscard]] std::span<const T> host_params() const { return params_; }
  [[nodiscard]] std::span<T> host_grads() { return grads_; }
  [[nodiscard]] std::span<const T> host_grads() const { return grads_; }
  [[nodiscard]] std::span<T> host_reference() { return reference_; }
  [[nodiscard]] std::span<const T> host_reference() const { return reference_; }
  [[nodiscard]] std::span<T> host_state() { return state_; }
  [[nodiscard]] std::span<const T> host_state() const { return state_; }
  void to_host() const {}  // the buffers are the host's
  void from_host() {}

 private:
  const ParamLayout* layout_;
  std::vector<T> params_, grads_, reference_, state_;
};

namespace detail {
template <class Net, class T, class Opt>
struct TrainBuffersOf {
  using type = HostTrainBuffers<T, Opt>;
};
template <class Net, class T, class Opt>
  requires requires { typename Net::template train_buffers<Opt>; }
struct TrainBuffersOf<Net, T, Opt> {
  using type = typename Net::template train_buffers<Opt>;
};
}  // namespace detail

/// The buffers a loop trains `Net` with: the model's own (a CUDA model's device buffers) or the host's.
template <class Net, class T, class Opt>
using train_buffers_t = typename detail::TrainBuffersOf<Net, T, Opt>::type;

/// layout.initialize(seed) into a fresh vector: a run's starting parameters.
template <class T>
std::vector<T> initialized_params(const ParamLayout& layout, std::uint64_t seed) {
  std::vector<T> p(layout.size());
  layout.initialize(std::span<T>(p), seed);
  return p;
}

/// A run's starting parameters for `net`: its own initial_params(seed) when it has one (a split
/// model's share of the unsplit model's initialisation, model/transformer.hpp), else
/// initialized_params(net.layout(), seed).
template <class T, class Net>
std::vector<T> initial_params(const Net& net, std::uint64_t seed) {
  if constexpr (requires { { net.initial_params(seed) } -> std::same_as<std::vector<T>>; })
    return net.initial_params(seed);
  else
    return initialized_params<T>(net.layout(), seed);
}

/// Makes them: a model with a stream() gets its buffers on that stream, so their work is ordered with its own.
template <class Buffers, class Net, class T>
Buffers make_train_buffers(const Net& net, std::span<const T> initial, bool with_reference) {
  if constexpr (requires { Buffers(net.layout(), initial, with_reference, net.stream()); })
    return Buffers(net.layout(), initial, with_reference, net.stream());
  else
    return Buffers(net.layout(), initial, with_reference);
}

/// Whether a policy's buffers hold one rank's share of a split model (parallel/model_parallel.hpp:
/// tensor, expert, pipeline parallelism), so that the unsplit model's values must be gathered
/// (checkpoints, evaluation) and scattered.
template <class Buffers>
concept SplitModelBuffers = requires { Buffers::model_parallel; };

/// The parallelism policy of one process: a trainer's buffers are the model's own. (The others,
/// parallel::DataParallel and parallel::Zero, make buffers that talk to the other ranks.)
struct SingleProcess {
  template <class Net, class T, class Opt>
  using buffers = train_buffers_t<Net, T, Opt>;

  template <class Opt, class Net, class T>
  buffers<Net, T, Opt> make_buffers(const Net& net, std::span<const T> initial, bool with_reference) const {
    return make_train_buffers<buffers<Net, T, Opt>>(net, initial, with_reference);
  }
};

}  // namespace reason::train
