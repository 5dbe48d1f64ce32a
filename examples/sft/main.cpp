// examples/sft — the SFT cold start of an R1-style pipeline, on the CPU.
//
// A small decoder-only transformer learns to answer generated arithmetic problems in the
// R1 template `<think>worked steps</think><answer>N</answer><eos>` from worked solutions
// (DeepSeek-AI, "DeepSeek-R1", 2025, §2.3.1: cold-start data). Training follows a curriculum
// (single operations -> multi-step -> mixed); at the end every held-out problem (disjoint from
// training by construction) is answered by greedy decoding with the KV cache, and exact-match
// accuracy is reported per difficulty level.
//
// Outputs in --out: metrics.jsonl (one line per step, then one per level of the evaluation),
// heldout.jsonl (the evaluation problems), checkpoint.safetensors (resume with --resume; its
// tensors under their layout names are also the trained weights), eval.jsonl (every held-out
// completion).
// Ctrl-C stops after the current micro-batch and writes a checkpoint to resume from.
#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"
#include "reason/data/problem_json.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/sft_source.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/io/jsonl.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/progress.hpp"
#include "reason/train/trainer.hpp"

using namespace reason;

using Attention = attention::MultiHead<attention::Shape{.head_dim = 32}>;  // MHA/GQA with RoPE, D = 32
using Net = model::Transformer<Attention,         // attention policy
                               ffn::SwiGLU,       // feed-forward policy
                               norm::RMSNorm,     // norm policy
                               linear::Dense,     // linear-layer policy
                               precision::Fp32>;  // number types
using Optimizer = optim::AdamW;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct Options {
  // model
  index_t width = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 384, seq = 96;
  // training
  std::int64_t steps = 3200;
  int micro_batches = 1;
  index_t batch = 32;
  double lr = 3e-3, min_lr = 1e-4, weight_decay = 0.05, clip = 1.0;
  std::int64_t warmup = 150;
  std::uint64_t seed = 1234;
  // evaluation and output
  int eval_per_level = 128;
  std::string out = "sft_out";
  std::string resume;
  std::string eval_jsonl;  // evaluate on these problems instead of generated ones
  std::int64_t checkpoint_every = 200;
  std::int64_t stop_after = -1;  // simulate an interruption: checkpoint and exit after this many steps
  std::int64_t log_every = 50;
};

struct LevelScore {
  int total = 0, correct = 0, formatted = 0;
  double tokens = 0;
};

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  CLI::App app{"reason SFT example: a small transformer learns verifiable arithmetic in <think>/<answer> form"};
  app.add_option("--width", o.width, "model width (hidden size)")->capture_default_str();
  app.add_option("--layers", o.layers, "transformer blocks")->capture_default_str();
  app.add_option("--heads", o.heads, "query heads (head_dim is 32)")->capture_default_str();
  app.add_option("--kv-heads", o.kv_heads, "key/value heads (GQA)")->capture_default_str();
  app.add_option("--ffn", o.ffn, "SwiGLU hidden width")->capture_default_str();
  app.add_option("--seq", o.seq, "maximum sequence length")->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str();
  app.add_option("--micro-batches", o.micro_batches, "micro-batches accumulated per step")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "final learning rate of the cosine schedule")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warmup steps")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app.add_option("--clip", o.clip, "global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of data, held-out set and initialisation")->capture_default_str();
  app.add_option("--eval-per-level", o.eval_per_level, "held-out problems per difficulty level")->capture_default_str();
  app.add_option("--out", o.out, "output directory")->capture_default_str();
  app.add_option("--resume", o.resume, "checkpoint to resume from");
  app.add_option("--eval-jsonl", o.eval_jsonl,
                 "held-out problems (JSONL: question, answer, difficulty, trace) instead of generated ones; "
                 "training never draws them");
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")->capture_default_str();
  app.add_option("--stop-after", o.stop_after, "checkpoint and exit after this many steps (simulated interruption)");
  app.add_option("--log-every", o.log_every, "steps between progress lines when not on a terminal")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  namespace fs = std::filesystem;
  fs::create_directories(o.out);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  const model::Config mc{.vocab_size = data::Tokenizer::vocab_size,
                         .hidden_size = o.width,
                         .num_layers = o.layers,
                         .num_heads = o.heads,
                         .num_kv_heads = o.kv_heads,
                         .intermediate_size = o.ffn,
                         .max_seq_len = o.seq};
  Net net(mc);

  train::TrainConfig tc;
  tc.total_steps = o.steps;
  tc.micro_batches = o.micro_batches;
  tc.batch = o.batch;
  tc.seq = o.seq;
  tc.max_grad_norm = o.clip;
  tc.schedule = {.peak_lr = o.lr, .min_lr = o.min_lr, .warmup_steps = o.warmup, .total_steps = o.steps};
  tc.seed = o.seed;
  train::Trainer<Net, Optimizer> trainer(net, Optimizer{.config = {.weight_decay = o.weight_decay}}, tc);

  // Data: a held-out set first, then training problems that avoid it, drawn per (step, micro)
  // from a counter-based stream so the batches are a pure function of the position in the run.
  const data::HeldOut held_out = o.eval_jsonl.empty()
                                     ? data::make_held_out(o.seed, o.eval_per_level)
                                     : data::HeldOut::from_problems(data::read_problems_jsonl(o.eval_jsonl));
  data::write_problems_jsonl(fs::path(o.out) / "heldout.jsonl", held_out.problems);
  const data::TrainingSampler sampler(held_out);
  const data::Curriculum curriculum = data::Curriculum::standard(o.steps);
  const train::BatchSource source = data::sft_source(
      sampler, curriculum, {.seed = o.seed, .batch = o.batch, .micro_batches = o.micro_batches, .max_seq = o.seq});

  const fs::path ckpt = fs::path(o.out) / "checkpoint.safetensors";
  // The held-out set decides which problems training avoids: part of the run's identity.
  const io::SafetensorsMetadata extra{{"example", "sft"},
                                      {"data.eval_per_level", std::to_string(o.eval_per_level)},
                                      {"data.eval_jsonl", o.eval_jsonl}};
  if (!o.resume.empty()) {
    const auto meta = train::load_checkpoint(o.resume, trainer);
    for (const auto& [key, value] : extra) {
      const auto it = meta.find(key);
      REASON_CHECK(it != meta.end() && it->second == value, "sft: '", o.resume, "' was written with ", key, " = '",
                   it == meta.end() ? std::string("(missing)") : it->second, "', this run has '", value, "'");
    }
    std::printf("resumed from %s at step %lld (micro-batch %d)\n", o.resume.c_str(),
                static_cast<long long>(trainer.step()), trainer.micro());
  }

  std::printf("model: %lld layers, width %lld, %lld heads (%lld kv), head_dim %d, ffn %lld, vocab %lld: %zu parameters\n",
              static_cast<long long>(mc.num_layers), static_cast<long long>(mc.hidden_size),
              static_cast<long long>(mc.num_heads), static_cast<long long>(mc.num_kv_heads), Net::head_dim,
              static_cast<long long>(mc.intermediate_size), static_cast<long long>(mc.vocab_size), net.num_params());
  std::printf("training: %lld steps x %d x %lld sequences, AdamW lr %.1e cosine to %.1e after %lld warmup steps\n",
              static_cast<long long>(o.steps), o.micro_batches, static_cast<long long>(o.batch), o.lr, o.min_lr,
              static_cast<long long>(o.warmup));
  std::printf("held-out: %zu problems (%s), disjoint from training\n", held_out.size(),
              o.eval_jsonl.empty() ? "generated" : o.eval_jsonl.c_str());

  const fs::path metrics_path = fs::path(o.out) / "metrics.jsonl";
  if (o.resume.empty()) fs::remove(metrics_path);  // a fresh run starts a fresh log; a resumed one appends
  io::JsonlWriter metrics(metrics_path);
  train::Progress progress(o.steps, o.log_every);
  progress.restart(trainer.step());
  while (!trainer.done()) {
    std::optional<train::StepStats> s = trainer.run_micro(source);
    if (!s) {
      if (g_stop) break;
      continue;
    }
    const std::string stage = curriculum.stage(s->step).name;
    progress.step(s->step, s->loss, s->lr, s->tokens, stage);
    metrics.write({{"step", s->step + 1},
                   {"loss", s->loss},
                   {"lr", s->lr},
                   {"grad_norm", s->grad_norm},
                   {"target_tokens", s->tokens},
                   {"target_tokens_per_s", progress.tokens_per_second()},
                   {"elapsed_s", progress.elapsed()},
                   {"stage", stage}});
    const bool interrupt = g_stop || (o.stop_after >= 0 && trainer.step() >= o.stop_after);
    if (interrupt || (o.checkpoint_every > 0 && trainer.step() % o.checkpoint_every == 0)) {
      train::save_checkpoint(ckpt, trainer, extra);
    }
    if (interrupt) break;
  }
  if (!trainer.done()) {
    train::save_checkpoint(ckpt, trainer, extra);
    progress.line("stopped at step " + std::to_string(trainer.step()) + " (micro-batch " +
                  std::to_string(trainer.micro()) + "); resume with --resume " + ckpt.string());
    return 0;
  }
  train::save_checkpoint(ckpt, trainer, extra);

  // Evaluation: greedy decoding of every held-out problem, exact match of the <answer>.
  const auto t_eval = std::chrono::steady_clock::now();
  std::map<int, LevelScore> scores;
  std::vector<io::Json> rows;
  const std::size_t eval_batch = 128;
  std::int64_t generated = 0;
  for (std::size_t first = 0; first < held_out.problems.size(); first += eval_batch) {
    const std::size_t last = std::min(held_out.problems.size(), first + eval_batch);
    std::vector<std::vector<std::int32_t>> prompts;
    for (std::size_t i = first; i < last; ++i) prompts.push_back(data::prompt_tokens(held_out.problems[i]));
    const auto completions = infer::generate_greedy(net, trainer.params().data(), std::span(prompts), o.seq,
                                                    data::Tokenizer::eos);
    for (std::size_t i = first; i < last; ++i) {
      const data::Problem& p = held_out.problems[i];
      const auto& c = completions[i - first];
      generated += static_cast<std::int64_t>(c.size());
      const std::string text = "<think>" + data::Tokenizer::decode(c);
      const auto parsed = data::parse_completion(text);
      const bool correct = parsed && parsed->answer == p.answer;
      LevelScore& sc = scores[p.difficulty];
      ++sc.total;
      sc.correct += correct;
      sc.formatted += parsed.has_value();
      sc.tokens += static_cast<double>(c.size());
      rows.push_back({{"question", p.question}, {"answer", p.answer}, {"difficulty", p.difficulty},
                      {"completion", io::utf8_sanitized(text)}, {"correct", correct}});
    }
  }
  io::write_jsonl(fs::path(o.out) / "eval.jsonl", rows);
  const double eval_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_eval).count();

  std::printf("\nheld-out exact-match accuracy (greedy, %zu problems, %.1f s, %.0f generated tokens/s)\n",
              held_out.size(), eval_s, static_cast<double>(generated) / std::max(eval_s, 1e-9));
  std::printf("  level  problems  correct  accuracy  format-ok  mean tokens\n");
  int all_total = 0, all_correct = 0;
  for (const auto& [level, sc] : scores) {
    const double acc = 100.0 * sc.correct / std::max(1, sc.total);
    std::printf("  %5d  %8d  %7d  %7.1f%%  %8.1f%%  %11.1f\n", level, sc.total, sc.correct, acc,
                100.0 * sc.formatted / std::max(1, sc.total), sc.tokens / std::max(1, sc.total));
    metrics.write({{"eval_level", level},
                   {"problems", sc.total},
                   {"accuracy", acc / 100.0},
                   {"format_ok", static_cast<double>(sc.formatted) / std::max(1, sc.total)},
                   {"mean_response_tokens", sc.tokens / std::max(1, sc.total)}});
    all_total += sc.total;
    all_correct += sc.correct;
  }
  std::printf("  all    %8d  %7d  %7.1f%%\n", all_total, all_correct, 100.0 * all_correct / std::max(1, all_total));
  std::printf("total time %.1f s\n", progress.elapsed() + 0.0);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "sft: error: %s\n", e.what());
  return 1;
}
