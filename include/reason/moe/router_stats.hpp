// reason/moe/router_stats.hpp — what the router did: load per expert, drops, the aux loss.
//
// One RouterStats per MoE layer, summed over the forwards it covers (the model sums its training
// forwards since the caller last took them). "load" counts the (token, expert) assignments the gate
// chose, before capacity; "kept" those that capacity let through.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "reason/core/error.hpp"

namespace reason::moe {

struct RouterStats {
  std::vector<double> load;  // [E] assignments chosen per expert
  std::vector<double> kept;  // [E] of them within capacity
  double aux_loss = 0;       // summed over forwards (alpha included; 0 without an aux loss)
  std::int64_t forwards = 0;

  [[nodiscard]] double assignments() const { return std::accumulate(load.begin(), load.end(), 0.0); }
  [[nodiscard]] double kept_assignments() const { return std::accumulate(kept.begin(), kept.end(), 0.0); }
  /// max_i load_i / mean load: 1 is perfectly balanced, E means one expert takes everything.
  [[nodiscard]] double max_over_mean() const {
    const double total = assignments();
    if (load.empty() || total == 0) return 0;
    return *std::max_element(load.begin(), load.end()) * static_cast<double>(load.size()) / total;
  }
  /// Share of the assignments dropped by capacity.
  [[nodiscard]] double dropped_fraction() const {
    const double total = assignments();
    return total == 0 ? 0 : (total - kept_assignments()) / total;
  }
  [[nodiscard]] double mean_aux_loss() const { return forwards ? aux_loss / static_cast<double>(forwards) : 0; }

  void add(const RouterStats& o) {
    if (load.empty()) {
      load.assign(o.load.size(), 0);
      kept.assign(o.kept.size(), 0);
    }
    REASON_CHECK(o.load.size() == load.size() && o.kept.size() == kept.size(), "RouterStats::add: ", o.load.size(),
                 " experts added to ", load.size());
    for (std::size_t i = 0; i < load.size(); ++i) {
      load[i] += o.load[i];
      kept[i] += o.kept[i];
    }
    aux_loss += o.aux_loss;
    forwards += o.forwards;
  }
};

}  // namespace reason::moe
