// examples/common/router_metrics.hpp — an MoE model's router statistics in the examples' metrics.
//
// After each optimizer step the examples take the model's router statistics (Net::take_router_stats():
// one moe::RouterStats per MoE layer, summed over the step's training forwards) and add to the step's
// metrics line
//   "router": [{"layer": l, "load": [...], "max_over_mean": x, "dropped_fraction": y, "aux_loss": z}, ...],
//   "router_max_over_mean": the largest max_over_mean of the layers (one number to plot)
// where `layer` is the model's layer index (first_dense_layers + i), `load` counts the (token, expert)
// assignments the gate chose for each expert in the step (before capacity; padding positions
// included: the model routes every row), max_over_mean is the busiest expert's load over the mean (1:
// even), dropped_fraction the share of assignments over capacity, and aux_loss the mean over the
// step's forwards of the balancing loss (alpha included; 0 without one). Dense models add nothing.
// When every rank trains on its own tokens (--dp, --ep) the step's statistics are summed over the
// ranks first (sum_router_stats), so rank 0's line describes the whole batch, as one process's does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/io/jsonl.hpp"
#include "reason/moe/router_stats.hpp"

namespace examples {

/// Router statistics summed over a window of steps (a progress interval, the end of a run).
class RouterWindow {
 public:
  /// One step's statistics (or a part of a step's, when `whole_step` is false).
  void add(const std::vector<reason::moe::RouterStats>& step, bool whole_step = true) {
    if (layers_.size() < step.size()) layers_.resize(step.size());
    for (std::size_t i = 0; i < step.size(); ++i)
      if (!step[i].load.empty()) layers_[i].add(step[i]);
    steps_ += whole_step ? 1 : 0;
  }
  [[nodiscard]] bool empty() const { return layers_.empty() || layers_.front().load.empty(); }
  [[nodiscard]] std::int64_t steps() const { return steps_; }
  void clear() {
    layers_.clear();
    steps_ = 0;
  }
  /// The largest max_over_mean of the layers (0 when empty).
  [[nodiscard]] double max_over_mean() const {
    double m = 0;
    for (const auto& l : layers_) m = std::max(m, l.max_over_mean());
    return m;
  }
  [[nodiscard]] double dropped_fraction() const {
    double total = 0, kept = 0;
    for (const auto& l : layers_) {
      total += l.assignments();
      kept += l.kept_assignments();
    }
    return total == 0 ? 0 : (total - kept) / total;
  }
  /// "router over the last 50 steps: load max/mean 1.234 (worst of 3 MoE layers), dropped 0.00%, aux loss 0.0101"
  /// (the aux loss: the largest layer's mean per forward).
  [[nodiscard]] std::string summary() const {
    double aux = 0;
    for (const auto& l : layers_) aux = std::max(aux, l.mean_aux_loss());
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "router over the last %lld steps: load max/mean %.3f (worst of %zu MoE layer%s), dropped %.2f%%, "
                  "aux loss %.4g",
                  static_cast<long long>(steps_), max_over_mean(), layers_.size(), layers_.size() == 1 ? "" : "s",
                  100 * dropped_fraction(), aux);
    return buf;
  }
  [[nodiscard]] const std::vector<reason::moe::RouterStats>& layers() const { return layers_; }

 private:
  std::vector<reason::moe::RouterStats> layers_;
  std::int64_t steps_ = 0;
};

/// Adds "router" (per MoE layer; `first_layer`: the model layer of the first one) and
/// "router_max_over_mean" to a metrics line.
inline void add_router_fields(reason::io::Json& row, const std::vector<reason::moe::RouterStats>& stats,
                              std::int64_t first_layer) {
  reason::io::Json layers = reason::io::Json::array();
  double worst = 0;
  for (std::size_t i = 0; i < stats.size(); ++i) {
    const reason::moe::RouterStats& s = stats[i];
    std::vector<std::int64_t> load;  // assignment counts are whole numbers: written as integers
    for (double l : s.load) load.push_back(static_cast<std::int64_t>(l));
    layers.push_back({{"layer", first_layer + static_cast<std::int64_t>(i)},
                      {"load", load},
                      {"max_over_mean", s.max_over_mean()},
                      {"dropped_fraction", s.dropped_fraction()},
                      {"aux_loss", s.mean_aux_loss()}});
    worst = std::max(worst, s.max_over_mean());
  }
  row["router"] = std::move(layers);
  row["router_max_over_mean"] = worst;
}

/// Sums a step's router statistics over the ranks that each trained on their own tokens (data or
/// expert parallel), so that they describe the whole batch: every rank calls it with the statistics
/// of the same MoE layers, `experts` wide (a layer no forward touched is empty; it stays so unless
/// another rank's is not). sum(std::span<double>) is the all-reduce (sum) over the ranks. Loads and
/// kept counts add up to the whole batch's; aux_loss and forwards add up too, so mean_aux_loss() is
/// the mean over every rank's forwards.
template <class Sum>
void sum_router_stats(std::vector<reason::moe::RouterStats>& stats, std::size_t experts, Sum&& sum) {
  const std::size_t per_layer = 2 * experts + 2;  // load, kept, aux_loss, forwards
  std::vector<double> flat(stats.size() * per_layer, 0.0);
  for (std::size_t i = 0; i < stats.size(); ++i) {
    const reason::moe::RouterStats& s = stats[i];
    if (s.load.empty()) continue;
    REASON_CHECK(s.load.size() == experts && s.kept.size() == experts, "sum_router_stats: layer ", i, " has ",
                 s.load.size(), " experts, expected ", experts);
    double* f = flat.data() + i * per_layer;
    std::copy(s.load.begin(), s.load.end(), f);
    std::copy(s.kept.begin(), s.kept.end(), f + experts);
    f[2 * experts] = s.aux_loss;
    f[2 * experts + 1] = static_cast<double>(s.forwards);  // (exact: far below 2^53)
  }
  sum(std::span<double>(flat));
  for (std::size_t i = 0; i < stats.size(); ++i) {
    const double* f = flat.data() + i * per_layer;
    reason::moe::RouterStats& s = stats[i];
    s.forwards = static_cast<std::int64_t>(f[2 * experts + 1]);
    if (s.forwards == 0) continue;  // no rank ran this layer's router
    s.load.assign(f, f + experts);
    s.kept.assign(f + experts, f + 2 * experts);
    s.aux_loss = f[2 * experts];
  }
}

/// Router statistics as a JSON string and back, exactly (integers and shortest round-trip doubles):
/// what a checkpoint written mid-step keeps of the step's micro-batches so far, so that the resumed
/// step reports the whole step.
inline std::string router_stats_to_string(const std::vector<reason::moe::RouterStats>& stats) {
  reason::io::Json layers = reason::io::Json::array();
  for (const reason::moe::RouterStats& s : stats)
    layers.push_back({{"load", s.load}, {"kept", s.kept}, {"aux_loss", s.aux_loss}, {"forwards", s.forwards}});
  return layers.dump();
}
inline std::vector<reason::moe::RouterStats> router_stats_from_string(const std::string& text) {
  std::vector<reason::moe::RouterStats> out;
  for (const reason::io::Json& l : reason::io::Json::parse(text)) {
    reason::moe::RouterStats s;
    s.load = l.at("load").get<std::vector<double>>();
    s.kept = l.at("kept").get<std::vector<double>>();
    s.aux_loss = l.at("aux_loss").get<double>();
    s.forwards = l.at("forwards").get<std::int64_t>();
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace examples
