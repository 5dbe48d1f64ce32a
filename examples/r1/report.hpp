// examples/r1/report.hpp — the final table and chart.svg (drawn from metrics.jsonl, so a run
// resumed or started at a later stage charts everything logged in the output directory).
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace r1 {

template <class Net, class StudentNet, class Par, class StudentPar>
void Pipeline<Net, StudentNet, Par, StudentPar>::print_table() const {
  if (!ranks_.writer()) return;
  std::string levels;
  for (int l : o_.eval_levels) levels += (levels.empty() ? "" : ",") + std::to_string(l);
  const std::string ffn = Net::routed ? std::string("; ffn ") + FfnChoice::name + " (the student: dense)" : "";
  if (!evals_.empty()) {
    std::printf("\nheld-out evaluation (%zu problems of level %s; pass@k from n = %lld samples at temperature %.2g; "
                "attention %s%s)\n",
                held_out_.size(), levels.c_str(), static_cast<long long>(o_.eval_samples), static_cast<double>(o_.temperature),
                Net::attention_signature().c_str(), ffn.c_str());
    std::printf("  %-8s %9s  %16s", "model", "params", "greedy accuracy");
    if (!evals_.empty())
      for (const auto& [k, v] : evals_.front().report.pass_at_k) std::printf("  pass@%-3lld", static_cast<long long>(k));
    std::printf("  %7s  %11s  by level\n", "format", "mean tokens");
    for (const Evaluated& e : evals_) {
      const rl::EvalReport& r = e.report;
      std::printf("  %-8s %9zu  %8.1f%% ± %4.1f", e.model.c_str(), e.params, 100 * r.accuracy, 100 * r.accuracy_se);
      for (const auto& [k, v] : r.pass_at_k) std::printf("  %7.1f%%", 100 * v);
      std::printf("  %6.1f%%  %11.1f ", 100 * r.format_rate, r.mean_tokens);
      for (const auto& [level, lv] : r.levels) std::printf(" %3.0f%%", 100 * lv.accuracy());
      std::printf("\n");
    }
  }
  const Evaluated* sft = nullptr;
  const Evaluated* grpo = nullptr;
  for (const Evaluated& e : evals_) {
    if (e.model == "sft") sft = &e;
    if (e.model == "grpo") grpo = &e;
  }
  if (sft && grpo) {
    const double d = grpo->report.accuracy - sft->report.accuracy;
    const double paired = rl::paired_difference_se(sft->report.rows, grpo->report.rows);
    std::printf("GRPO - SFT: %+.1f points greedy accuracy = %.1f standard errors of the held-out estimate (%.1f paired)\n",
                100 * d, d / std::max(1e-12, sft->report.accuracy_se), d / std::max(1e-12, paired));
  }
  if (!quantized_.empty()) {
    const QuantizedEval& fp32 = quantized_.front();
    std::printf("\nthe policy's linear layers in each weight format (greedy, on the CPU):\n");
    std::printf("  %-9s %16s  %8s  %12s  %8s  %10s\n", "format", "greedy accuracy", "vs fp32", "model bytes",
                "vs fp32", "tokens/s");
    for (const QuantizedEval& q : quantized_)
      std::printf("  %-9s %8.1f%% ± %4.1f  %+7.1f   %12zu  %7.2fx  %10.0f\n", q.format.c_str(), 100 * q.report.accuracy,
                  100 * q.report.accuracy_se, 100 * (q.report.accuracy - fp32.report.accuracy), q.bytes,
                  static_cast<double>(q.bytes) / static_cast<double>(fp32.bytes), q.tokens_per_s);
  }
  for (const std::string& note : router_notes_) std::printf("%s\n", note.c_str());  // MoE builds: final balance
  std::printf("total time %.0f s; outputs in %s (metrics.jsonl, chart.svg, *.safetensors)\n", seconds_, out_.c_str());
}

template <class Net, class StudentNet, class Par, class StudentPar>
void Pipeline<Net, StudentNet, Par, StudentPar>::draw_chart() {
  if (!metrics_) return;  // rank 0 draws
  metrics_->sync();
  std::map<std::string, Series> s;  // "stage/key" -> series
  auto series = [&](const std::string& stage, const std::string& key, const std::string& name, int smooth) -> Series& {
    Series& sr = s[stage + "/" + key];
    sr.name = name;
    sr.smooth = smooth;
    return sr;
  };
  const std::vector<io::Json> rows = io::read_jsonl(out_ / "metrics.jsonl");
  const std::vector<std::pair<std::string, std::vector<std::string>>> keys{
      {"sft", {"loss", "router_max_over_mean"}},
      {"grpo",
       {"reward_mean", "accuracy", "reward_format", "kl", "clip_fraction", "completion_length", "entropy",
        "zero_variance_fraction", "router_max_over_mean"}},
      {"distill", {"loss", "teacher_correct"}}};
  for (const io::Json& row : rows) {
    if (!row.contains("stage") || !row.contains("step")) continue;
    const std::string stage = row["stage"].get<std::string>();
    for (const auto& [st, ks] : keys) {
      if (st != stage) continue;
      for (const std::string& k : ks) {
        if (!row.contains(k) || !row[k].is_number()) continue;
        Series& sr = series(stage, k, k, stage == "grpo" ? 10 : 1);
        sr.x.push_back(row["step"].get<double>());
        sr.y.push_back(row[k].get<double>());
      }
    }
  }
  auto get = [&](const std::string& k) { return s.contains(k) ? s[k] : Series{}; };
  std::vector<Panel> panels{
      {"SFT: cross-entropy", {get("sft/loss")}},
      {"GRPO: mean reward (0.8 acc + 0.2 format)", {get("grpo/reward_mean")}},
      {"GRPO: accuracy and format of samples", {get("grpo/accuracy"), get("grpo/reward_format")}},
      {"GRPO: KL to the SFT reference (k3)", {get("grpo/kl")}},
      {"GRPO: clipped token fraction", {get("grpo/clip_fraction")}},
      {"GRPO: completion length (tokens)", {get("grpo/completion_length")}},
      {"GRPO: policy entropy (nats/token)", {get("grpo/entropy")}},
      {"GRPO: groups with zero reward variance", {get("grpo/zero_variance_fraction")}},
      {"Distillation: loss; teacher-correct share", {get("distill/loss"), get("distill/teacher_correct")}},
  };
  if (Net::routed) {  // MoE builds: the busiest expert's load over the mean, worst MoE layer (1: even)
    panels.push_back({"SFT: router load max/mean", {get("sft/router_max_over_mean")}});
    panels.push_back({"GRPO: router load max/mean", {get("grpo/router_max_over_mean")}});
  }
  write_svg_chart(out_ / "chart.svg", "reason R1 pipeline — " + out_.string(), panels, 3);
}

}  // namespace r1
