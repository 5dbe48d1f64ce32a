// examples/common/model_split.hpp — the examples' model split over MPI's world (--tp, --ep, --pp;
// examples/common/parallel_options.hpp): what a build can split, the trainer's policy for the run
// and the model::Sharding its model is built with, and a line about each rank's share.
//
//   check_model_split<Net>(o.parallel, config, "sft");     // OptionError: what cannot split, with numbers
//   return run_split<Net>(ranks, [&]<class Par>(const Par& par, model::Sharding<float> sharding) {
//     Net net(config, sharding);                            // this rank's share of the model
//     train::Trainer<Net, Opt, Par> trainer(net, opt, tc, par);
//     ...
//   });
//
// One split at a time, over every process (the library's Transformer splits one way per model):
//   --tp N  parallel::TensorParallel: each rank holds num_heads / N query heads and ffn / N FFN
//           units (KV heads split, or replicated when kv_heads < N); dense models whose attention
//           has q/k/v heads (multi_head, sliding_window, top_k). Every rank trains on the whole batch.
//   --ep N  parallel::ExpertParallel: an MoE model's routed experts, experts / N per rank, the rest
//           replicated; every rank trains on its own share of the batch (data parallel otherwise).
//   --pp N  parallel::Pipeline: rank s holds layers [s L / N, (s + 1) L / N), the first also the
//           embedding, the last the final norm and LM head; dense models, at least N layers. Every
//           stage draws every micro-batch; a decode step passes through the stages (r1's GRPO).
// The trainers' checkpoints of a split model gather it into the unsplit layout (every rank calls,
// rank 0 writes), so one process resumes them, and any split loads them.
#pragma once

#include <cstddef>
#include <string>

#include "common/parallel_options.hpp"
#include "reason/core/error.hpp"
#include "reason/model/config.hpp"
#include "reason/model/sharding.hpp"
#include "reason/train/train_buffers.hpp"

#if REASON_WITH_MPI
#include "reason/parallel/model_parallel.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/pipeline.hpp"
#include "reason/parallel/shard_group.hpp"
#endif

namespace examples {

/// Whether model type Net can be split that way at all (the numbers are check_model_split's).
template <class Net>
[[nodiscard]] constexpr bool can_split(Split s) {
  switch (s) {
    case Split::tensor:  // dense FFNs, and attention with q/k/v heads (model::Transformer's own check)
      return !Net::routed && requires { typename Net::attention_policy::pattern; };
    case Split::expert:
      return Net::routed;
    case Split::pipeline:
      return !Net::routed;
    case Split::data:
      break;
  }
  return true;
}

/// Refuses, with an OptionError every rank raises alike (before any collective), a split the model
/// cannot make: the wrong kind of model for it, or numbers that do not divide over its ranks (named
/// by the examples' model flags, --heads, --kv-heads, --ffn, --layers, which sft and r1 share).
template <class Net>
void check_model_split(const ParallelOptions& o, const reason::model::Config& c, const char* program) {
  const Split s = o.split();
  const int n = o.ranks();
  if (s == Split::data || n == 1) return;
  const char* flag = o.flag();
  const char* ffn = Net::ffn_policy::name;
  const char* attention = Net::attention_policy::name;
  switch (s) {
    case Split::tensor:
      if (Net::routed)
        option_error(program, ": ", flag, " ", n, ": tensor parallelism splits dense feed-forward layers, and this "
                     "build's FFN is ", ffn, " (a mixture of experts): expert parallelism spreads its experts (sft "
                     "--ep), or build with REASON_EXAMPLE_FFN=dense");
      if (!can_split<Net>(Split::tensor))
        option_error(program, ": ", flag, " ", n, ": tensor parallelism splits the heads of multi_head, "
                     "sliding_window and top_k attention; this build's attention is ", attention,
                     " (REASON_EXAMPLE_ATTENTION)");
      if (c.num_heads % n != 0)
        option_error(program, ": ", flag, " ", n, ": --heads ", c.num_heads, " does not split over ", n,
                     " ranks (choose a multiple of ", n, ")");
      if (c.num_kv_heads % n != 0 && n % c.num_kv_heads != 0)
        option_error(program, ": ", flag, " ", n, ": --kv-heads ", c.num_kv_heads, " neither splits over ", n,
                     " ranks nor replicates evenly over them (choose a multiple or a divisor of ", n, ")");
      if (c.intermediate_size % n != 0)
        option_error(program, ": ", flag, " ", n, ": --ffn ", c.intermediate_size, " does not split over ", n,
                     " ranks (choose a multiple of ", n, ")");
      return;
    case Split::expert:
      if constexpr (!Net::routed)
        option_error(program, ": ", flag, " ", n, ": expert parallelism spreads an MoE model's experts, and this "
                     "build's FFN is ", ffn, " (dense): build with REASON_EXAMPLE_FFN=moe (the targets sft_moe and r1_moe), "
                     "or split a dense model with --tp or --pp");
      else if (Net::ffn_policy::experts % n != 0)
        option_error(program, ": ", flag, " ", n, ": the ", Net::ffn_policy::experts,
                     " routed experts of each MoE layer do not split over ", n, " ranks (choose a divisor of ",
                     Net::ffn_policy::experts, ")");
      return;
    case Split::pipeline:
      if (Net::routed)
        option_error(program, ": ", flag, " ", n, ": pipeline parallelism of an MoE model is not supported (its "
                     "router statistics and balancing are per model, not per stage); this build's FFN is ", ffn,
                     ": expert parallelism spreads its experts (--ep)");
      if (c.num_layers < n)
        option_error(program, ": ", flag, " ", n, ": --layers ", c.num_layers, " cannot fill ", n,
                     " pipeline stages (each needs at least one layer)");
      return;
    case Split::data:
      break;
  }
}

/// "tensor parallel: 2 ranks; rank 0 holds 123456 of 234567 parameter bytes, optimizer state 246912
/// bytes" (expert: also the experts on each rank; pipeline: the layers of the stage), measured from
/// the trainer's buffers `b` of this rank's share `net`.
template <class Net, class Buffers>
[[nodiscard]] std::string split_summary(const Net& net, const Buffers& b) {
  const auto& sh = net.sharding();
  const auto str = [](auto v) { return std::to_string(v); };
  std::string line;
  int rank = 0;
  if (sh.tensor != nullptr) {
    line = "tensor parallel: " + str(sh.tensor_size()) + " ranks";
    rank = sh.tensor_rank();
  } else if (sh.expert != nullptr) {
    line = "expert parallel: " + str(sh.expert_size()) + " ranks";
    if constexpr (Net::routed)
      line += ", " + str(Net::ffn_policy::experts / sh.expert_size()) + " of the " + str(Net::ffn_policy::experts) +
              " routed experts of each MoE layer on each";
    rank = sh.expert_rank();
  } else {
    line = "pipeline parallel: " + str(sh.pipeline_size()) + " stages";
    rank = sh.pipeline_rank();
  }
  line += "; rank " + str(rank) + " holds ";
  if (sh.pipeline != nullptr)
    line += "layers " + str(net.first_layer()) + "-" + str(net.first_layer() + net.local_layers() - 1) + " of " +
            str(net.config().num_layers) + (net.first_stage() ? " and the embedding" : "") +
            (net.last_stage() ? " and the final norm and LM head" : "") + ", ";
  const std::size_t full_bytes = net.full_layout().size() * sizeof(typename Net::T);
  return line + str(b.parameter_bytes()) + " of " + str(full_bytes) + " parameter bytes, optimizer state " +
         str(b.optimizer_state_bytes()) + " bytes";
}

/// Runs body(policy, sharding) with the trainers' parallelism policy of this run and the
/// model::Sharding to build its model with, and returns body's exit status:
///   one process   train::SingleProcess{}, no sharding
///   --dp N        Ranks::policy() (MpiDataParallel, ZeRO per --zero), no sharding
///   --tp N        parallel::TensorParallel over the world, Sharding{.tensor = the world's group}
///   --ep N        parallel::ExpertParallel,                 Sharding{.expert = ...}
///   --pp N        parallel::Pipeline,                       Sharding{.pipeline = ...}
/// Only the splits Net can make are compiled (check_model_split refuses the others first).
template <class Net, class Body>
int run_split(Ranks& ranks, Body&& body) {
  using T = typename Net::T;
  using Sharding = reason::model::Sharding<T>;
  if (ranks.size() == 1) return body(reason::train::SingleProcess{}, Sharding{});
#if REASON_WITH_MPI
  using Comm = reason::parallel::MpiCommunicator;
  Comm& world = ranks.world();
  reason::parallel::ShardGroupOf<Comm, T> group(world);  // the model calls it until body returns
  switch (ranks.options().split()) {
    case Split::data:
      return body(ranks.policy(), Sharding{});
    case Split::tensor:
      if constexpr (can_split<Net>(Split::tensor))
        return body(reason::parallel::TensorParallel<Comm>(world), Sharding{.tensor = &group});
      break;
    case Split::expert:
      if constexpr (can_split<Net>(Split::expert))
        return body(reason::parallel::ExpertParallel<Comm>(world), Sharding{.expert = &group});
      break;
    case Split::pipeline:
      if constexpr (can_split<Net>(Split::pipeline))
        return body(reason::parallel::Pipeline<Comm>(world), Sharding{.pipeline = &group});
      break;
  }
  reason::fail("examples::run_split: this model cannot be split with ", ranks.options().flag(),
               " (check_model_split refuses it first)");
#else
  reason::fail("examples::run_split: several ranks without MPI");
#endif
}

}  // namespace examples
