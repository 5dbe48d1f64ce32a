// examples/r1/distill_stage.hpp — stage 4: distil the RL model into a smaller student.
//
// DeepSeek-R1 §2.4 fine-tunes small models on samples curated from R1 (correct answers only).
// Here each step draws fresh training problems, the teacher answers them greedily, the correct
// answers are kept, and the student learns them with the loss of Hinton et al. 2015:
//   alpha tau^2 KL(softmax(teacher / tau) || softmax(student / tau)) + (1 - alpha) CE(student, teacher's token)
// on every completion position (rl::Distill). alpha = 0 is R1's plain SFT on teacher samples.
// The step's data is a pure function of (seed, step) and the teacher, as in the other stages.
// The teacher is the build's policy model (an MoE model with REASON_EXAMPLE_FFN=moe; its forwards
// here are inference only: no router statistics, no balancing); the student is always a dense
// SwiGLU model (StudentNet), as R1 distils into dense models.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace r1 {

template <class Net, class StudentNet, class Par, class StudentPar>
std::vector<float> Pipeline<Net, StudentNet, Par, StudentPar>::run_distill(const model::Config& tc, const model::Config& sc,
                                                const std::vector<float>& teacher) {
  // This loop runs its own optimizer step and no balance_experts(): a routed student would need
  // snet.balance_experts(params) after opt.step (train::Trainer and rl::GrpoTrainer do it themselves).
  static_assert(!StudentNet::routed, "r1 distill: the student is dense; a routed one needs balance_experts after each step");
  Net tnet(tc);
  StudentNet snet(sc);
  const std::string teacher_active =
      Net::routed ? ", " + std::to_string(examples::active_params(tnet)) + " active per token" : std::string();
  std::printf("\n== stage 4: distillation into a student of %zu parameters (teacher %zu%s), %lld steps, alpha %.2f\n",
              snet.num_params(), tnet.num_params(), teacher_active.c_str(), static_cast<long long>(o_.distill_steps),
              o_.distill_alpha);
  // The student's parameters, gradients and AdamW state: on the host, or on the GPU for a CUDA
  // model (train/train_buffers.hpp), as the parallelism policy makes them; the teacher's
  // parameters where the teacher reads them.
  using Buffers = typename StudentPar::template buffers<StudentNet, float, Optimizer>;
  std::vector<float> init(snet.num_params());
  snet.layout().initialize(std::span<float>(init), o_.seed + 1);
  Buffers student = student_par_.template make_buffers<Optimizer>(snet, std::span<const float>(init), /*with_reference=*/false);
  const examples::ModelParams<Net> teacher_params(tnet, teacher);
  const Optimizer opt{.config = {.weight_decay = 0.05}};
  const train::CosineSchedule schedule{.peak_lr = o_.sft_lr,
                                       .min_lr = o_.sft_lr / 30,
                                       .warmup_steps = std::min<std::int64_t>(100, std::max<std::int64_t>(1, o_.distill_steps / 10)),
                                       .total_steps = o_.distill_steps};
  const data::Curriculum curriculum = sft_curriculum(o_.distill_steps);
  const reward::Accuracy accuracy{};
  const std::int32_t eos = data::Tokenizer::eos;
  // Data parallel: rank r answers and learns problems [r share, (r + 1) share) of each step's sft_batch.
  const index_t share = o_.sft_batch / ranks_.size(), first = static_cast<index_t>(ranks_.rank()) * share;
  index_t reserved_b = 0, reserved_l = 0;
  std::vector<std::int32_t> tokens, targets;
  std::vector<float> teacher_logits;
  const auto t0 = std::chrono::steady_clock::now();
  double window_loss = 0, window_kept = 0;
  int window = 0;

  for (std::int64_t step = 0; step < o_.distill_steps; ++step) {
    // The teacher answers the step's problems greedily; its correct answers are the data.
    Philox rng(o_.seed, detail::distill_streams + static_cast<std::uint64_t>(step));
    std::vector<data::Problem> problems;
    std::vector<std::vector<std::int32_t>> prompts;
    for (index_t i = 0; i < o_.sft_batch; ++i) {
      data::Problem p = sampler_.sample(curriculum.level_for(step, rng), rng);  // every rank draws them all, in order
      if (i < first || i >= first + share) continue;
      problems.push_back(std::move(p));
      prompts.push_back(data::prompt_tokens(problems.back()));
    }
    infer::RolloutConfig rc;
    rc.max_new_tokens = tc.max_seq_len;
    rc.eos = eos;
    const infer::Rollouts answers =
        infer::rollout(tnet, teacher_params.get(), std::span<const std::vector<std::int32_t>>(prompts), infer::Greedy{}, rc);
    std::vector<std::vector<std::int32_t>> kept;
    std::vector<index_t> prompt_len;
    for (const infer::Completion& c : answers.rows) {
      const auto i = static_cast<std::size_t>(c.prompt);
      if (!c.stopped_on_eos || accuracy.score(data::Tokenizer::decode(c.tokens), problems[i]) < 1.0f) continue;
      kept.push_back(infer::full_sequence(std::span<const std::vector<std::int32_t>>(prompts), c));
      prompt_len.push_back(static_cast<index_t>(prompts[i].size()));
    }
    const auto B = static_cast<index_t>(kept.size());
    index_t L = 0, target_rows = 0;
    for (std::size_t b = 0; b < kept.size(); ++b) {
      L = std::max<index_t>(L, static_cast<index_t>(kept[b].size()));
      target_rows += static_cast<index_t>(kept[b].size()) - prompt_len[b];
    }
    // The step's kept answers and target rows over every rank: the loss normaliser.
    double counts[2] = {static_cast<double>(B), static_cast<double>(target_rows)};
    if constexpr (distributed) student.sum_across_ranks(std::span<double>(counts));
    if (counts[0] == 0) {  // nothing correct to learn from this step (on any rank): logged, no update
      log({{"stage", "distill"}, {"step", step + 1}, {"teacher_correct", 0.0}, {"skipped", true},
           {"elapsed_s", detail::seconds_since(t0)}});
      continue;
    }
    tokens.assign(static_cast<std::size_t>(B * L), data::Tokenizer::pad);
    targets.assign(static_cast<std::size_t>(B * L), -1);
    for (index_t b = 0; b < B; ++b) {
      const auto& seq = kept[static_cast<std::size_t>(b)];
      std::copy(seq.begin(), seq.end(), tokens.begin() + b * L);
      // position t predicts token t + 1: targets on the completion (the answer and its <eos>) only
      for (index_t t = prompt_len[static_cast<std::size_t>(b)] - 1; t + 1 < static_cast<index_t>(seq.size()); ++t)
        targets[static_cast<std::size_t>(b * L + t)] = seq[static_cast<std::size_t>(t + 1)];
    }
    if (B > reserved_b || L > reserved_l) {
      reserved_b = std::max(reserved_b, B);
      reserved_l = std::max(reserved_l, L);
      tnet.reserve(reserved_b, reserved_l);
      snet.reserve(reserved_b, reserved_l);
    }

    student.zero_grads();
    rl::DistillStats st;
    if (B > 0) {  // (a rank whose answers were all wrong joins the gradient sum with zeros)
      const View<const std::int32_t, 2> tok = make_view(static_cast<const std::int32_t*>(tokens.data()), B, L);
      teacher_logits.resize(static_cast<std::size_t>(B * L * tc.vocab_size));
      tnet.logits(teacher_params.get(), tok, make_view(teacher_logits.data(), B * L, tc.vocab_size));
      StudentLoss::Batch<float> objective(
          make_view(static_cast<const float*>(teacher_logits.data()), B * L, tc.vocab_size),
          make_view(static_cast<const std::int32_t*>(targets.data()), B * L),
          rl::DistillCoefficients{.alpha = o_.distill_alpha, .temperature = 1.0, .count = distributed ? counts[1] : 0.0});
      snet.forward_objective(student.params(), student.grads(), tok, objective);
      snet.backward(student.params(), student.grads());
      st = objective.stats();
    }
    if constexpr (requires { student.after_backward(); }) student.after_backward();  // ZeRO-2
    const double grad_norm = student.clip_grad_norm(1.0);
    REASON_CHECK(std::isfinite(grad_norm), "r1 distill: step ", step, ": the gradient norm is ", grad_norm);
    const double lr = schedule.lr(step);
    student.step(opt, lr, step + 1);
    if constexpr (distributed) {  // the loss (already over the global count) and the per-row means, over every rank
      double v[3] = {st.loss, st.mean_kl * static_cast<double>(st.rows), st.mean_ce * static_cast<double>(st.rows)};
      student.sum_across_ranks(std::span<double>(v));
      st.loss = v[0];
      st.mean_kl = v[1] / counts[1];
      st.mean_ce = v[2] / counts[1];
    }

    const double kept_fraction = counts[0] / static_cast<double>(o_.sft_batch);
    log({{"stage", "distill"}, {"step", step + 1}, {"loss", st.loss}, {"kl", st.mean_kl}, {"ce", st.mean_ce},
         {"teacher_correct", kept_fraction}, {"grad_norm", grad_norm}, {"lr", lr},
         {"elapsed_s", detail::seconds_since(t0)}});
    window_loss += st.loss;
    window_kept += kept_fraction;
    ++window;
    if ((step + 1) % o_.log_every == 0 || step + 1 == o_.distill_steps) {
      std::printf("distill step %5lld/%lld  loss %.4f  teacher correct %.2f  (%.2f s/step)\n",
                  static_cast<long long>(step + 1), static_cast<long long>(o_.distill_steps), window_loss / window,
                  window_kept / window, detail::seconds_since(t0) / static_cast<double>(step + 1));
      std::fflush(stdout);
      window_loss = window_kept = 0;
      window = 0;
    }
  }
  student.to_host();  // (ZeRO: gathers the state shards; every rank)
  const std::vector<float> params(student.host_params().begin(), student.host_params().end());
  if (ranks_.writer())
    detail::save_weights(out_ / "student.safetensors", snet, std::span<const float>(params),
                       {{"example", "r1"}, {"stage", "distill"}, {"distill.steps", std::to_string(o_.distill_steps)}});
  std::printf("distillation done in %.0f s; weights %s\n", detail::seconds_since(t0), (out_ / "student.safetensors").c_str());
  draw_chart();
  return params;
}

}  // namespace r1
