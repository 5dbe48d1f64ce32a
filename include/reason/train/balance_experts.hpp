// reason/train/balance_experts.hpp — an MoE model's gates balancing after an optimizer step, over
// every rank's tokens.
//
// Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2; moe::BiasBalance) moves each expert's bias by
// the sign of its load against the mean, so every replica of a gate must see the same load or the
// replicas drift apart. The model gathers the load of its own training forwards
// (Transformer::pending_expert_load); when each rank trained on its own share of the batch — the
// buffers can sum over the ranks: data parallelism, ZeRO, expert parallelism — the load is summed
// over the ranks here, before the model balances, so every rank moves its biases exactly as one
// process on the whole batch would. The trainers (train::Trainer, rl::GrpoTrainer) call this after
// every optimizer step; a loop of one's own does the same.
#pragma once

#include <span>
#include <vector>

namespace reason::train {

/// Whether `Net` has gates that balance (an MoE Transformer).
template <class Net, class T>
concept BalancesExperts = requires(Net& net, T* params) { net.balance_experts(params); };

/// After the optimizer step: sums the step's expert load over the ranks when each trained on its own
/// tokens (Buffers::sum_across_ranks, a collective every rank calls), then lets the gates balance.
/// Nothing for a model without balancing gates.
template <class Net, class Buffers>
void balance_experts(Net& net, Buffers& buffers) {
  if constexpr (BalancesExperts<Net, typename Net::T>) {
    if constexpr (requires(std::span<double> v) { buffers.sum_across_ranks(v); }) {
      const std::span<const double> own = net.pending_expert_load();
      std::vector<double> load(own.begin(), own.end());
      buffers.sum_across_ranks(std::span<double>(load));
      net.set_pending_expert_load(load);
    }
    net.balance_experts(buffers.params());
  }
}

}  // namespace reason::train
