// examples/attention_swap — the same SFT trainer built with each attention policy, side by side.
//
// The experiment the policy design exists for: one template (sft::Run<Net>, the SFT example's own
// run from examples/sft/sft_run.hpp) instantiated for every variant of examples/common/
// attention_choice.hpp — multi_head (GQA), sliding_window (32 positions), top_k (16 keys),
// hierarchical (full + window, learned gates) and mla (latent attention) — each trained from the
// same seed on the same batches and curriculum for --steps steps, then evaluated by greedy
// decoding of the same held-out problems. The table compares held-out exact-match accuracy (± its
// binomial standard error), training speed (target tokens/s), decoding speed (generated tokens/s
// of batched greedy decoding with the KV cache) and the decode cache per token (one sequence of
// --seq tokens, every layer).
//
// Outputs in --out: attention_swap.json (the table; rewritten atomically after each variant),
// heldout.jsonl, and per variant <variant>/metrics.jsonl, <variant>/eval.jsonl and
// <variant>/checkpoint.safetensors (the trained model).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/attention_choice.hpp"
#include "reason/io/atomic_file.hpp"
#include "sft/sft_run.hpp"

using namespace reason;
namespace fs = std::filesystem;

namespace {

/// One variant's line of the table.
struct Row {
  std::string attention, signature, detail;
  std::size_t params = 0;
  int head_dim = 0;
  std::size_t cache_bytes = 0;  // one sequence of max_seq_len tokens, every layer
  index_t seq = 0;
  sft::Trained trained{};
  sft::Evaluation eval{};
  [[nodiscard]] double cache_bytes_per_token() const { return static_cast<double>(cache_bytes) / static_cast<double>(seq); }
};

template <class Variant>
Row run_variant(const sft::Options& o, const sft::Data& data, const fs::path& out) {
  using Net = sft::NetWith<typename Variant::type>;
  std::printf("\n== %s: %s\n", Variant::name, Variant::detail);
  const fs::path dir = out / Variant::name;
  fs::create_directories(dir);
  fs::remove(dir / "metrics.jsonl");
  io::JsonlWriter metrics(dir / "metrics.jsonl");
  sft::Run<Net> run(o);
  run.print_model();
  Row r{.attention = Variant::name,
        .signature = Net::attention_signature(),
        .detail = Variant::detail,
        .params = run.net().num_params(),
        .head_dim = Net::head_dim,
        .cache_bytes = run.cache_bytes_per_sequence(),
        .seq = o.seq};
  r.trained = run.train(data, &metrics, dir / "checkpoint.safetensors",
                        {{"example", "attention_swap"}, {"data.eval_per_level", std::to_string(o.eval_per_level)}});
  r.eval = run.evaluate(data.held_out);
  sft::report(r.eval, dir, metrics, Variant::name);
  return r;
}

void print_table(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  std::printf("\n%-15s %8s %4s  %14s ", "attention", "params", "D", "accuracy ± SE");
  for (const auto& [level, sc] : rows.front().eval.levels) std::printf("  L%d ", level);
  std::printf(" %6s %11s %12s %13s %8s %7s\n", "loss", "train tok/s", "decode tok/s", "cache B/token", "train s",
              "eval s");
  for (const Row& r : rows) {
    std::printf("%-15s %8zu %4d  %6.1f%% ± %4.1f ", r.attention.c_str(), r.params, r.head_dim,
                100 * r.eval.all.accuracy(), 100 * r.eval.all.standard_error());
    for (const auto& [level, sc] : r.eval.levels) std::printf(" %3.0f%%", 100 * sc.accuracy());
    std::printf(" %6.3f %11.0f %12.0f %13.0f %8.0f %7.1f\n", r.trained.final_loss, r.trained.target_tokens_per_s,
                r.eval.tokens_per_second(), r.cache_bytes_per_token(), r.trained.seconds, r.eval.seconds);
  }
  std::printf("accuracy: greedy exact match on the held-out problems (L<n>: per level); loss: mean of the last 50 "
              "steps;\ntrain tok/s: target tokens per second of training; decode tok/s: generated tokens per second "
              "of batched greedy decoding;\ncache B/token: the decode cache of one %lld-token sequence, all layers, "
              "divided by %lld\n",
              static_cast<long long>(rows.front().seq), static_cast<long long>(rows.front().seq));
}

io::Json table_json(const sft::Options& o, const sft::Data& data, const std::vector<Row>& rows) {
  io::Json variants = io::Json::array();
  for (const Row& r : rows) {
    io::Json levels = io::Json::object();
    for (const auto& [level, sc] : r.eval.levels) levels[std::to_string(level)] = sc.accuracy();
    variants.push_back({{"attention", r.attention},
                        {"signature", r.signature},
                        {"detail", r.detail},
                        {"params", r.params},
                        {"head_dim", r.head_dim},
                        {"accuracy", r.eval.all.accuracy()},
                        {"accuracy_se", r.eval.all.standard_error()},
                        {"accuracy_by_level", levels},
                        {"format_rate", r.eval.all.format_rate()},
                        {"final_loss", r.trained.final_loss},
                        {"train_seconds", r.trained.seconds},
                        {"train_target_tokens_per_s", r.trained.target_tokens_per_s},
                        {"eval_seconds", r.eval.seconds},
                        {"generated_tokens", r.eval.generated},
                        {"decode_tokens_per_s", r.eval.tokens_per_second()},
                        {"cache_bytes_per_sequence", r.cache_bytes},
                        {"cache_bytes_per_token", r.cache_bytes_per_token()}});
  }
  return {{"example", "attention_swap"},
          {"model", {{"width", o.width}, {"layers", o.layers}, {"heads", o.heads}, {"kv_heads", o.kv_heads},
                     {"ffn", o.ffn}, {"seq", o.seq}}},
          {"training", {{"steps", o.steps}, {"batch", o.batch}, {"micro_batches", o.micro_batches}, {"lr", o.lr},
                        {"min_lr", o.min_lr}, {"warmup", o.warmup}, {"seed", o.seed}}},
          {"held_out_problems", data.held_out.size()},
          {"variants", variants}};
}

}  // namespace

int main(int argc, char** argv) try {
  sft::Options o;
  o.steps = 1000;           // a short budget per variant: the whole comparison in about 10 minutes on 2 cores
  o.checkpoint_every = 0;   // only the final model of each variant
  o.out = "attention_swap_out";
  std::vector<std::string> all_names;
  std::apply([&](auto... v) { (all_names.emplace_back(decltype(v)::name), ...); }, examples::AllVariants{});
  std::vector<std::string> selected = all_names;

  CLI::App app{"reason attention swap: the SFT example's trainer built with each attention policy, compared on "
               "held-out accuracy, speed and decode cache"};
  sft::add_options(app, o);
  app.add_option("--out", o.out, "output directory (attention_swap.json, one folder per variant)")->capture_default_str();
  app.add_option("--variants", selected, "attention variants to run, comma-separated (default: all five)")
      ->delimiter(',')
      ->check(CLI::IsMember(all_names))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  fs::create_directories(o.out);
  const auto t0 = std::chrono::steady_clock::now();
  const sft::Data data(o);
  data::write_problems_jsonl(fs::path(o.out) / "heldout.jsonl", data.held_out.problems);
  std::printf("attention swap: %zu variants, each the SFT example's trainer from seed %llu on the same batches\n",
              selected.size(), static_cast<unsigned long long>(o.seed));
  sft::print_training(o, data);

  const fs::path json_path = fs::path(o.out) / "attention_swap.json";
  std::vector<Row> rows;
  auto run_if_selected = [&]<class Variant>() {
    if (std::find(selected.begin(), selected.end(), Variant::name) == selected.end()) return;
    rows.push_back(run_variant<Variant>(o, data, o.out));
    io::write_file_atomic(json_path, table_json(o, data, rows).dump(2) + "\n");  // a valid table after each variant
  };
  std::apply([&](auto... v) { (run_if_selected.template operator()<decltype(v)>(), ...); }, examples::AllVariants{});

  print_table(rows);
  std::printf("total time %.0f s; table in %s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), json_path.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "attention_swap: error: %s\n", e.what());
  return 1;
}
