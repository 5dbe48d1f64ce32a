// reason/parallel/pipeline.hpp — pipeline parallelism: the layers split into consecutive stages, one
// per rank, and each step's micro-batches run through them in the 1F1B schedule.
//
// A stage is a Transformer built with model::Sharding{.pipeline = group} (model/transformer.hpp): stage
// s of S holds layers [s L / S, (s + 1) L / S), the first also the embedding, the last also the final
// norm, the LM head and the loss. `train::Trainer<Net, Opt, parallel::Pipeline<C>>` then runs each
// step's micro-batches in the one-forward-one-backward schedule of PipeDream-Flush (Narayanan et al.,
// "Memory-Efficient Pipeline-Parallel DNN Training", ICML 2021) as Megatron-LM implements it
// (Narayanan et al., SC 2021, §2.2.1, non-interleaved): stage s first runs min(S - s - 1, M) warm-up
// forwards, then alternates one forward and one backward, then drains the remaining backwards. So at
// most S - s micro-batches are in flight on stage s (the Transformer keeps that many activation
// slots), against M for GPipe's all-forwards-then-all-backwards. Between neighbours the activations
// [B T, C] go forward and their gradients back; in the steady state a stage's send and its receive
// are one send_recv, which pairs with the neighbour's, so no blocking send waits on another.
// Every stage draws every micro-batch (the first needs the tokens, the last the targets, all of them
// the shapes); the loss, known on the last stage, is summed over the stages once per step. The
// gradients of one step are the single-process ones (the same sums, stage by stage), so one step
// equals one process on the whole batch within fp32 tolerance; the optimizer steps per stage over
// its own layers (the gradient norm summed over the stages: ModelParallelBuffers).
// Bubble: (S - 1) / (M + S - 1) of the step is idle on each stage; more micro-batches shrink it.
// rl::GrpoTrainer runs its passes through run_1f1b too, and its log-probabilities through run_forwards.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <span>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/parallel/model_parallel.hpp"

namespace reason::parallel {

/// The 1F1B schedule of one stage, as the sequence of its micro-batch passes: a forward (m >= 0) or a
/// backward (-1 - m). What run_1f1b runs (its last_order(); tests/parallel check both).
[[nodiscard]] inline std::vector<int> one_f_one_b_order(int stages, int stage, int micro_batches) {
  REASON_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, "parallel::one_f_one_b_order: stage ",
               stage, " of ", stages, " with ", micro_batches, " micro-batches");
  const int warmup = std::min(stages - stage - 1, micro_batches), remaining = micro_batches - warmup;
  std::vector<int> order;
  for (int i = 0; i < warmup; ++i) order.push_back(i);
  for (int i = 0; i < remaining; ++i) {
    order.push_back(warmup + i);
    order.push_back(-1 - i);
  }
  for (int i = remaining; i < micro_batches; ++i) order.push_back(-1 - i);
  return order;
}

/// ModelParallelBuffers of one pipeline stage, which also run the step's schedule.
template <class Base, class C>
class PipelineBuffers : public ModelParallelBuffers<Base, C, false> {
  using Parent = ModelParallelBuffers<Base, C, false>;

 public:
  using T = typename Parent::T;
  static constexpr bool pipelined = true;  // train::Trainer runs whole steps through run_1f1b

  using Parent::Parent;

  /// One step's micro-batches through this stage in the 1F1B schedule. rows(m): the micro-batch's
  /// B T; forward(m, input) runs Net::stage_forward (input empty on the first stage); backward(m,
  /// output_grad) runs Net::stage_backward (output_grad empty on the last). The activations and their
  /// gradients move between the stages here.
  template <class Net, class Forward, class Backward>
  void run_1f1b(Net& net, int micro_batches, const std::function<index_t(int)>& rows, Forward&& forward,
                Backward&& backward) {
    C& comm = this->communicator();
    const int stages = comm.size(), s = comm.rank(), M = micro_batches;
    const index_t width = net.config().hidden_size;
    const int warmup = std::min(stages - s - 1, M), remaining = M - warmup;
    const int slots = std::min(stages - s, M);
    if (net.activation_slots() < slots) net.set_activation_slots(slots);
    const bool first = s == 0, last = s == stages - 1;

    auto input_view = [&](int m) -> View<const T, 2> {
      return first ? View<const T, 2>{} : make_view(static_cast<const T*>(input_.data()), rows(m), width);
    };
    auto grad_view = [&](int m) -> View<const T, 2> {
      return last ? View<const T, 2>{} : make_view(static_cast<const T*>(output_grad_.data()), rows(m), width);
    };
    order_.clear();
    auto fwd = [&](int m) {
      net.use_activation_slot(m % slots);
      forward(m, input_view(m));
      order_.push_back(m);
    };
    auto bwd = [&](int m) {
      net.use_activation_slot(m % slots);
      backward(m, grad_view(m));
      order_.push_back(-1 - m);
    };
    auto out = [&] { return flat(net.stage_output()); };
    auto din = [&] { return flat(net.stage_input_grad()); };
    auto sized = [&](std::vector<T>& buf, int m) -> std::span<T> {
      buf.resize(static_cast<std::size_t>(rows(m) * width));
      return std::span<T>(buf);
    };

    for (int i = 0; i < warmup; ++i) {
      if (!first) comm.recv(sized(input_, i), s - 1);
      fwd(i);
      if (!last) comm.send(out(), s + 1);
    }
    if (remaining > 0 && !first) comm.recv(sized(input_, warmup), s - 1);
    for (int i = 0; i < remaining; ++i) {
      fwd(warmup + i);
      if (!last) comm.send_recv(out(), s + 1, sized(output_grad_, i), s + 1);  // forward out, gradient of i in
      bwd(i);
      if (first) continue;
      if (i == remaining - 1)
        comm.send(din(), s - 1);
      else
        comm.send_recv(din(), s - 1, sized(input_, warmup + i + 1), s - 1);  // gradient out, next input in
    }
    for (int i = remaining; i < M; ++i) {
      if (!last) comm.recv(sized(output_grad_, i), s + 1);
      bwd(i);
      if (!first) comm.send(din(), s - 1);
    }
  }

  /// Forwards only, without gradients (evaluating micro-batches, e.g. GRPO's log-probabilities):
  /// each micro-batch through the stages in turn, forward(m, input) running Net::stage_forward_objective
  /// (or another stage forward; input empty on the first stage), its output sent on. A stage works on
  /// micro-batch m + 1 while the next one works on m.
  template <class Net, class Forward>
  void run_forwards(Net& net, int micro_batches, const std::function<index_t(int)>& rows, Forward&& forward) {
    C& comm = this->communicator();
    const int stages = comm.size(), s = comm.rank();
    const index_t width = net.config().hidden_size;
    for (int m = 0; m < micro_batches; ++m) {
      View<const T, 2> input{};
      if (s > 0) {
        input_.resize(static_cast<std::size_t>(rows(m) * width));
        comm.recv(std::span<T>(input_), s - 1);
        input = make_view(static_cast<const T*>(input_.data()), rows(m), width);
      }
      forward(m, input);
      if (s < stages - 1) comm.send(flat(net.stage_output()), s + 1);
    }
  }

  /// The passes the last run_1f1b made, in one_f_one_b_order's form.
  [[nodiscard]] const std::vector<int>& last_order() const { return order_; }

 private:
  static std::span<const T> flat(View<const T, 2> v) {
    REASON_CHECK(v.is_contiguous(), "parallel::Pipeline: a stage's activations must be contiguous");
    return std::span<const T>(v.data, static_cast<std::size_t>(v.size(0) * v.size(1)));
  }

  std::vector<T> input_, output_grad_;  // what this stage receives: an input, an output's gradient
  std::vector<int> order_;
};

/// The policy: `Trainer<Net, Opt, Pipeline<C>>` with `Pipeline<C>{comm}`, for a Net built with
/// model::Sharding{.pipeline = ShardGroupOf<C, T>(comm)}. Every stage draws every micro-batch.
template <Communicator C>
struct Pipeline : SplitPolicy<C, Split::pipeline, PipelineBuffers> {
  using SplitPolicy<C, Split::pipeline, PipelineBuffers>::SplitPolicy;
};

}  // namespace reason::parallel
