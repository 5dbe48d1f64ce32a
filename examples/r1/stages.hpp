// examples/r1/stages.hpp — the bodies of the four stages (included by pipeline.hpp).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace r1 {

namespace detail {

// Philox streams of the stages' data, apart from each other and from the held-out set's (1..4).
inline constexpr std::uint64_t sft_streams = 1ull << 32, grpo_streams = 2ull << 32, distill_streams = 3ull << 32;
inline constexpr const char* weights_format = "reason.weights/1";

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

inline std::string format_of(const io::SafetensorsFile& f) {
  const auto it = f.metadata().find("format");
  return it == f.metadata().end() ? std::string("(none)") : it->second;
}

/// The parameters of `mc`'s model (a Net, or the dense StudentNet) stored under their layout names in `path`.
template <class N>
std::vector<float> load_weights(const std::filesystem::path& path, const model::Config& mc) {
  N net(mc);
  std::vector<float> params(net.num_params());
  (void)train::load_params(path, net, std::span<float>(params));
  return params;
}

/// A plain weights file: the parameters under their layout names and the model config.
template <class N>
void save_weights(const std::filesystem::path& path, const N& net, std::span<const float> params,
                  const io::SafetensorsMetadata& extra) {
  io::SafetensorsMetadata meta;
  for (const auto& [k, v] : net.model_metadata()) meta[k] = v;  // the config, the attention and FFN policies
  meta["format"] = weights_format;
  for (const auto& [k, v] : extra) meta[k] = v;
  std::vector<io::SafetensorsEntry> entries;
  for (const ParamInfo& p : net.layout().params())
    entries.push_back(io::safetensors_entry<float>(p.name, params.subspan(p.offset, p.numel), p.shape));
  io::write_safetensors(path, entries, meta);
}

/// MoE builds: a progress-line figure of a step's router statistics ("" for a dense model).
inline std::string load_text(const examples::RouterWindow& w) {
  if (w.empty()) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, "  load max/mean %.2f", w.max_over_mean());
  return buf;
}

}  // namespace detail

template <class Net, class StudentNet, class Par, class StudentPar>
int Pipeline<Net, StudentNet, Par, StudentPar>::run() {
  const auto t0 = std::chrono::steady_clock::now();
  const Stage from = stage_of(o_.from), until = stage_of(o_.until);
  REASON_CHECK(from <= until, "r1: --from ", o_.from, " comes after --until ", o_.until);
  model::Config mc = policy_config(o_.teacher, o_.seq);
  std::vector<float> policy;
  std::string resume;
  bool dense_model = false;  // an MoE build given a (dense) student's weights: only --from eval takes them
  if (!o_.checkpoint.empty()) {
    const io::SafetensorsFile file = io::SafetensorsFile::open(o_.checkpoint);
    const std::string kind = detail::format_of(file);
    mc = model::Config::from_metadata({file.metadata().begin(), file.metadata().end()}, Net::head_dim);  // the checkpoint's model, not the flags'
    const bool own = (from == Stage::sft && kind == train::checkpoint_format) ||
                     (from == Stage::grpo && kind == rl::grpo_checkpoint_format);
    REASON_CHECK(from != Stage::sft || own, "r1: --from sft resumes an SFT checkpoint (format ", train::checkpoint_format,
                 "); '", o_.checkpoint, "' has format ", kind);
    const auto ffn = file.metadata().find("ffn");  // absent in files from before MoE models: dense
    dense_model = Net::routed && (ffn == file.metadata().end() || ffn->second == StudentNet::ffn_signature());
    REASON_CHECK(!dense_model || from == Stage::eval, "r1: '", o_.checkpoint, "' is a dense model (",
                 StudentNet::ffn_signature(), "), the policy of this build is ", Net::ffn_signature(),
                 "; only --from eval takes a dense model (a distilled student)");
    if (own) resume = o_.checkpoint;
    else if (dense_model) policy = detail::load_weights<StudentNet>(o_.checkpoint, mc);
    else policy = detail::load_weights<Net>(o_.checkpoint, mc);
    std::printf("starting at stage %s from %s (%s, %s)\n", o_.from.c_str(), o_.checkpoint.c_str(), kind.c_str(),
                own ? "resuming" : "as the initial model");
  } else {
    REASON_CHECK(from == Stage::sft, "r1: --from ", o_.from, " needs --checkpoint (a model from an earlier stage)");
  }
  std::printf("policy: %lld layers, width %lld, %lld heads (%lld kv), ffn %lld, seq %lld; held-out: %zu problems\n",
              static_cast<long long>(mc.num_layers), static_cast<long long>(mc.hidden_size),
              static_cast<long long>(mc.num_heads), static_cast<long long>(mc.num_kv_heads),
              static_cast<long long>(mc.intermediate_size), static_cast<long long>(mc.max_seq_len), held_out_.size());
  if constexpr (requires { Net::on_device; })
    std::printf("device: cuda (gpu::DenseTransformer, %s)\n", Net::precision_policy::name);
  else
    std::printf("device: cpu (fp32)\n");
  std::printf("attention: %s (built with REASON_EXAMPLE_ATTENTION=%s: %s), head_dim %d\n",
              Net::attention_signature().c_str(), AttentionChoice::name, AttentionChoice::detail, Net::head_dim);
  std::printf("%s (built with REASON_EXAMPLE_FFN=%s)\n",
              (dense_model ? examples::ffn_description<StudentNet>(mc) : examples::ffn_description<Net>(mc)).c_str(),
              FfnChoice::name);
  if (Net::routed && !dense_model) {
    const Net net(mc);
    std::printf("policy parameters: %zu in all, %zu active per token\n", net.num_params(), examples::active_params(net));
  }

  if constexpr (split) {
    if (sharding_.expert != nullptr)
      std::printf("expert parallel: %d ranks; each holds %d of the %d routed experts of each MoE layer in SFT and "
                  "GRPO and trains on its share of every step's batch (GRPO: of its questions, decoded in lockstep); "
                  "the student trains data parallel; rank 0 evaluates\n",
                  ranks_.size(), examples::routed_experts<Net>() / ranks_.size(), examples::routed_experts<Net>());
    else if (sharding_.pipeline != nullptr)
      std::printf("pipeline parallel: %d stages of the policy's %lld layers in SFT and GRPO, each working on every "
                  "row (decoding passes each step through the stages; training in the 1F1B schedule); the student "
                  "trains data parallel; rank 0 evaluates\n",
                  ranks_.size(), static_cast<long long>(mc.num_layers));
    else
      std::printf("tensor parallel: %d ranks; each holds its share of the policy's heads and FFN units in SFT and "
                  "GRPO and works on every row; the student trains data parallel; rank 0 evaluates\n",
                  ranks_.size());
  } else if (ranks_.size() > 1)
    std::printf("data parallel: %d ranks (%s); each trains on its share of every step's batch, rank 0 evaluates\n",
                ranks_.size(),
                o_.parallel.zero == 0 ? "ZeRO off" : (o_.parallel.zero == 1 ? "ZeRO-1" : "ZeRO-2"));

  // The evaluations and stage 5 run on rank 0 (the others go on to the next training stage and
  // wait for it there).
  const bool evaluates = ranks_.writer();
  if (runs(Stage::sft)) {
    policy = run_sft(mc, resume);
    resume.clear();
    if (evaluates) evals_.push_back(run_eval("sft", mc, policy));
  }
  if (runs(Stage::grpo)) {
    if (from == Stage::grpo && !resume.empty()) policy = detail::load_weights<Net>(resume, mc);
    else if (from == Stage::grpo && evaluates) evals_.push_back(run_eval("sft", mc, policy));  // the baseline of this run
    policy = run_grpo(mc, policy, resume);
    if (evaluates) evals_.push_back(run_eval("grpo", mc, policy));
  }
  if (from == Stage::eval && evaluates)
    evals_.push_back(dense_model ? run_eval<StudentNet>("model", mc, policy) : run_eval("model", mc, policy));
  if (runs(Stage::distill)) {
    const model::Config sc = config_of(o_.student, mc.max_seq_len);  // dense, whatever the policy's FFN
    const std::vector<float> student = run_distill(mc, sc, policy);
    if (evaluates) evals_.push_back(run_eval<StudentNet>("student", sc, student));
  }
  if (runs(Stage::quantize) && evaluates) {
    if (dense_model)
      std::printf("\n== stage 5: quantized inference: skipped ('%s' is a dense student; stage 5 quantizes the policy)\n",
                  o_.checkpoint.c_str());
    else
      run_quantize(mc, policy);
  }
  seconds_ = detail::seconds_since(t0);
  print_table();
  draw_chart();
  return 0;
}

// Stage 1: SFT cold start (train::Trainer on worked traces, curriculum of levels).
template <class Net, class StudentNet, class Par, class StudentPar>
std::vector<float> Pipeline<Net, StudentNet, Par, StudentPar>::run_sft(const model::Config& mc, const std::string& resume) {
  std::printf("\n== stage 1: SFT cold start, %lld steps x %lld sequences\n", static_cast<long long>(o_.sft_steps),
              static_cast<long long>(o_.sft_batch));
  Net net = policy_net(mc);
  const int data_ranks = o_.parallel.data_ranks();  // (tensor parallel: 1, every rank has every row)
  train::TrainConfig tc;
  tc.total_steps = o_.sft_steps;
  tc.batch = o_.sft_batch / data_ranks;  // this rank's share of the step's sequences
  tc.seq = mc.max_seq_len;
  tc.max_grad_norm = 1.0;
  tc.schedule = {.peak_lr = o_.sft_lr,
                 .min_lr = o_.sft_lr / 30,
                 .warmup_steps = std::min<std::int64_t>(150, std::max<std::int64_t>(1, o_.sft_steps / 10)),
                 .total_steps = o_.sft_steps};
  tc.seed = o_.seed;
  train::Trainer<Net, Optimizer, Par> trainer(net, Optimizer{.config = {.weight_decay = 0.05}}, tc, par_);
  const data::Curriculum curriculum = sft_curriculum(o_.sft_steps);
  const train::BatchSource source = examples::batch_share(
      data::sft_source(sampler_, curriculum,
                       {.seed = o_.seed, .batch = o_.sft_batch, .max_seq = mc.max_seq_len,
                        .stream_base = detail::sft_streams, .flawed_fraction = o_.flawed}),
      ranks_.rank(), data_ranks);
  const io::SafetensorsMetadata extra{{"example", "r1"}, {"stage", "sft"},
                                      {"data.eval_per_level", std::to_string(o_.eval_per_level)},
                                      {"data.flawed", std::to_string(o_.flawed)}};
  if (!resume.empty()) {
    const auto meta = train::load_checkpoint(resume, trainer);
    for (const auto& [key, value] : extra)
      REASON_CHECK(meta.contains(key) && meta.at(key) == value, "r1: '", resume, "' was written with another ", key);
    std::printf("resumed SFT at step %lld\n", static_cast<long long>(trainer.step()));
  }
  const std::filesystem::path ckpt = out_ / "sft.safetensors";
  train::Progress progress(o_.sft_steps, o_.log_every);
  progress.restart(trainer.step());
  examples::RouterWindow tail;  // MoE builds: the router statistics of the last 50 steps
  while (!trainer.done()) {
    const train::StepStats s = trainer.run_step(source);  // (an MoE model's gates balance after the update)
    const std::string stage = curriculum.stage(s.step).name;
    std::vector<moe::RouterStats> router;
    examples::RouterWindow step_router;
    if constexpr (Net::routed) {
      router = router_stats(net);
      step_router.add(router);
      if (s.step + 50 >= o_.sft_steps) tail.add(router);
    }
    progress.step(s.step, s.loss, s.lr, s.tokens, stage + detail::load_text(step_router));
    io::Json row{{"stage", "sft"}, {"step", s.step + 1}, {"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                 {"tokens", s.tokens}, {"curriculum", stage}, {"elapsed_s", progress.elapsed()}};
    if constexpr (Net::routed) examples::add_router_fields(row, router, mc.first_dense_layers);
    if (trainer.loss_scaler().enabled()) {  // fp16: the loss scale and whether the step overflowed
      row["loss_scale"] = s.loss_scale;
      row["skipped"] = s.skipped;
    }
    log(row);
    if (trainer.step() % 250 == 0 || trainer.done()) train::save_checkpoint(ckpt, trainer, extra);
  }
  std::printf("SFT done in %.0f s; checkpoint %s\n", progress.elapsed(), ckpt.c_str());
  if (!tail.empty()) {
    router_notes_.push_back("sft: " + tail.summary());
    std::printf("%s\n", router_notes_.back().c_str());
  }
  draw_chart();
  return whole_weights(trainer);
}

// Stage 2: GRPO against the SFT model as the frozen reference.
template <class Net, class StudentNet, class Par, class StudentPar>
std::vector<float> Pipeline<Net, StudentNet, Par, StudentPar>::run_grpo(const model::Config& mc, const std::vector<float>& init,
                                             const std::string& resume) {
  std::printf("\n== stage 2: GRPO, %lld steps x %lld questions x G = %lld, lr %.1e, beta %.3g\n",
              static_cast<long long>(o_.grpo_steps), static_cast<long long>(o_.prompts),
              static_cast<long long>(o_.group_size), o_.grpo_lr, o_.beta);
  Net net = policy_net(mc);
  rl::GrpoTrainerConfig gc;
  gc.prompts_per_step = o_.prompts;
  gc.group_size = o_.group_size;
  gc.max_new_tokens = mc.max_seq_len;  // the rollout also stops at max_seq_len
  gc.beta = o_.beta;
  gc.schedule = {.peak_lr = o_.grpo_lr, .min_lr = o_.grpo_lr, .warmup_steps = 10, .total_steps = o_.grpo_steps};
  gc.mu = o_.mu;
  gc.advantage_sign = o_.advantage_sign;
  gc.seed = o_.seed;
  std::vector<float> start = init;  // the unsplit weights; a split policy takes this rank's share
  if constexpr (split) {
    start.resize(net.num_params());
    net.shard_plan().scatter(std::span<const float>(init), std::span<float>(start));
  }
  // (data and expert parallel: each rank samples and trains on its share of the questions; tensor
  // and pipeline parallel: every rank all of them, on its share of the model)
  Policy policy(net, start, Optimizer{.config = {.weight_decay = 0.0}}, infer::Temperature{o_.temperature}, R1Reward{},
                gc, par_);
  const io::SafetensorsMetadata extra{{"example", "r1"}, {"stage", "grpo"},
                                      {"data.eval_per_level", std::to_string(o_.eval_per_level)},
                                      {"grpo.levels", std::to_string(o_.grpo_levels[0]) + "," + std::to_string(o_.grpo_levels[1]) +
                                                          "," + std::to_string(o_.grpo_levels[2]) + "," +
                                                          std::to_string(o_.grpo_levels[3])}};
  if (!resume.empty()) {
    const auto meta = rl::load_checkpoint(resume, policy);
    for (const auto& [key, value] : extra)
      REASON_CHECK(meta.contains(key) && meta.at(key) == value, "r1: '", resume, "' was written with another ", key);
    std::printf("resumed GRPO at step %lld\n", static_cast<long long>(policy.step()));
  }
  const data::Curriculum levels(std::max<std::int64_t>(1, o_.grpo_steps),
                                {{"grpo", 1.0, {o_.grpo_levels[0], o_.grpo_levels[1], o_.grpo_levels[2], o_.grpo_levels[3]}}});
  const typename Policy::PromptSource source = [&](std::int64_t step) {
    Philox rng(o_.seed, detail::grpo_streams + static_cast<std::uint64_t>(step));
    std::vector<data::Problem> ps;
    for (index_t i = 0; i < o_.prompts; ++i) ps.push_back(sampler_.sample(levels.level_for(step, rng), rng));
    return ps;
  };
  const std::filesystem::path ckpt = out_ / "grpo.safetensors";
  const auto t0 = std::chrono::steady_clock::now();
  double window_reward = 0, window_acc = 0, max_gap = 0;
  int window = 0;
  examples::RouterWindow window_router, tail;  // MoE builds: per progress line; the last 50 steps
  while (policy.step() < o_.grpo_steps) {
    const rl::GrpoStepStats s = policy.run_step(source);  // (an MoE model's gates balance after each update)
    io::Json row{{"stage", "grpo"},
                 {"step", s.step + 1},
                 {"reward_mean", s.reward_mean},
                 {"reward_std", s.reward_std},
                 {"accuracy", s.accuracy.value_or(0.0)},
                 {"kl", s.kl},
                 {"clip_fraction", s.clip_fraction},
                 {"completion_length", s.completion_length},
                 {"entropy", s.entropy},
                 {"zero_variance_fraction", s.zero_variance_fraction},
                 {"loss", s.loss},
                 {"grad_norm", s.grad_norm},
                 {"lr", s.lr},
                 {"rollout_logp_gap", s.rollout_logp_gap},
                 {"seconds", s.seconds.total},
                 {"elapsed_s", detail::seconds_since(t0)}};
    for (const rl::RewardComponent& c : s.components) row[std::string("reward_") + c.name] = c.mean;
    if (policy.loss_scaler().enabled()) {  // fp16: the passes' loss scale, and how many overflowed
      int skipped = 0;
      for (const rl::GrpoPassStats& p : s.passes) skipped += p.skipped;
      row["loss_scale"] = s.passes.empty() ? policy.loss_scaler().scale() : s.passes.back().loss_scale;
      row["skipped_passes"] = skipped;
    }
    if constexpr (Net::routed) {  // the router over the step's training forwards (none if no update)
      const std::vector<moe::RouterStats> router = router_stats(net);
      examples::add_router_fields(row, router, mc.first_dense_layers);
      window_router.add(router);
      if (s.step + 50 >= o_.grpo_steps) tail.add(router);
    }
    log(row);
    max_gap = std::max(max_gap, s.rollout_logp_gap);
    window_reward += s.reward_mean;
    window_acc += s.accuracy.value_or(0.0);
    ++window;
    if (policy.step() % o_.log_every == 0 || policy.step() == o_.grpo_steps) {
      std::printf("grpo step %5lld/%lld  reward %.3f  accuracy %.3f  kl %.4f  clip %.3f  length %.1f  entropy %.3f  "
                  "(%.1f s/step)%s\n",
                  static_cast<long long>(policy.step()), static_cast<long long>(o_.grpo_steps), window_reward / window,
                  window_acc / window, s.kl, s.clip_fraction, s.completion_length, s.entropy,
                  detail::seconds_since(t0) / static_cast<double>(std::max<std::int64_t>(1, s.step + 1)),
                  detail::load_text(window_router).c_str());
      std::fflush(stdout);
      window_reward = window_acc = 0;
      window = 0;
      window_router.clear();
    }
    if (policy.step() % 50 == 0 || policy.step() == o_.grpo_steps) rl::save_checkpoint(ckpt, policy, extra);
  }
  std::printf("GRPO done in %.0f s; checkpoint %s\n", detail::seconds_since(t0), ckpt.c_str());
  std::printf("largest |log p_rollout - log p_train| over the sampled tokens of the run: %.2e\n", max_gap);
  if (!tail.empty()) {
    router_notes_.push_back("grpo: " + tail.summary());
    std::printf("%s\n", router_notes_.back().c_str());
  }
  draw_chart();
  return whole_weights(policy);
}

// Stage 3: evaluation on the held-out set (of the policy, a Net, or of the dense student).
template <class Net, class StudentNet, class Par, class StudentPar>
template <class EvalNet>
Evaluated Pipeline<Net, StudentNet, Par, StudentPar>::run_eval(const std::string& name, const model::Config& mc, const std::vector<float>& params) {
  EvalNet net(mc);
  rl::EvalConfig ec;
  ec.max_new_tokens = mc.max_seq_len;
  ec.samples = o_.eval_samples;
  ec.ks.clear();
  for (std::int64_t k : {1, 4})
    if (k < o_.eval_samples) ec.ks.push_back(k);
  ec.temperature = o_.temperature;
  ec.seed = o_.seed;
  const examples::ModelParams<EvalNet> weights(net, params);  // (a GPU model reads a device copy)
  Evaluated e{name, net.num_params(), rl::evaluate(net, weights.get(), std::span<const data::Problem>(held_out_.problems), ec)};
  const rl::EvalReport& r = e.report;
  std::vector<io::Json> rows;
  for (std::size_t i = 0; i < r.rows.size(); ++i) {
    const data::Problem& p = held_out_.problems[i];
    rows.push_back({{"question", p.question}, {"answer", p.answer}, {"difficulty", p.difficulty},
                    {"completion", io::utf8_sanitized(r.rows[i].completion)}, {"correct", r.rows[i].correct},
                    {"sampled_correct", r.rows[i].sampled_correct}});
  }
  io::write_jsonl(out_ / ("eval_" + name + ".jsonl"), rows);
  io::Json line{{"stage", "eval"},      {"model", name},           {"params", e.params},
                {"attention", AttentionChoice::name},
                {"problems", r.problems}, {"accuracy", r.accuracy}, {"accuracy_se", r.accuracy_se},
                {"format_rate", r.format_rate}, {"mean_tokens", r.mean_tokens}, {"samples", r.samples},
                {"sampled_accuracy", r.sampled_accuracy}, {"seconds", r.seconds}};
  for (const auto& [k, v] : r.pass_at_k) line["pass@" + std::to_string(k)] = v;
  for (const auto& [level, lv] : r.levels) line["accuracy_level_" + std::to_string(level)] = lv.accuracy();
  if constexpr (Net::routed) line["ffn"] = EvalNet::routed ? FfnChoice::name : "dense";  // (dense builds: as before)
  log(line);
  std::printf("eval %-8s greedy accuracy %.1f%% ± %.1f  format %.1f%%  length %.1f", name.c_str(), 100 * r.accuracy,
              100 * r.accuracy_se, 100 * r.format_rate, r.mean_tokens);
  for (const auto& [k, v] : r.pass_at_k) std::printf("  pass@%lld %.1f%%", static_cast<long long>(k), 100 * v);
  std::printf("  levels");
  for (const auto& [level, lv] : r.levels) std::printf(" %d:%.0f%%", level, 100 * lv.accuracy());
  std::printf("  (%.0f s)\n", r.seconds);
  std::fflush(stdout);
  return e;
}

}  // namespace r1

#include "distill_stage.hpp"
#include "quantize_stage.hpp"
#include "report.hpp"
