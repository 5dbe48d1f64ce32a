// Data-parallel GRPO under mpirun (-np 1, 2, 4): rank r samples, scores and trains its share of
// every step's questions (rl/grpo_trainer.hpp), and the run equals one process on the whole step —
// the same completions (a row draws from its global Philox stream on whichever rank holds it), the
// same rewards and statistics (global means), losses and parameters within fp32 tolerance (the
// normaliser is global, the gradients are summed). The collectives of a step are counted: one
// all-reduce of the step's scalars, the policy's gradient collectives per pass, one all-reduce of
// the pass statistics. Under DAPO's dynamic sampling with ZeRO-2 a rank whose groups were all
// dropped still joins every collective; a checkpoint written by rank 0 resumes bit for bit, and on
// one process too. An MoE policy trains data parallel to one process's run as well, its balancing
// biases exactly (the expert load is summed over the ranks before the gates balance). Tensor-parallel
// GRPO (each rank a share of the model, all the rows) equals one process too, and its checkpoint is
// the unsplit model's. Expert-parallel GRPO of the MoE policy (each rank a share of the experts and
// of the questions; rollouts decoded in lockstep; under dynamic sampling ranks without rows serve
// their experts) equals one process as well, and so does pipeline-parallel GRPO (decode steps through
// the stages, the last one's logits to all; passes in the 1F1B schedule).
//
// Every rank runs every case in step under the MPI harness (harness.hpp).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "reason/infer/sampler.hpp"
#include "reason/moe/moe.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/counting.hpp"
#include "reason/parallel/data_parallel.hpp"
#include "reason/parallel/model_parallel.hpp"
#include "reason/parallel/shard_group.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"
#include "reason/parallel/pipeline.hpp"
#include "reason/parallel/zero.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/grpo_checkpoint.hpp"
#include "reason/rl/grpo_trainer.hpp"
#include "parallel/fixtures.hpp"
#include "parallel/harness.hpp"
#include "rl/tiny_policy.hpp"

using namespace reason;
using test::max_abs;
using test::max_abs_diff;

namespace {

using Net = test::TinyNet;
using Comm = parallel::MpiCommunicator;
using Counting = parallel::CountingCommunicator<Comm&>;
using parallel::Collective;
using test::ContainsTarget;
using GrpoLoss = rl::Grpo<rl::GrpoConfig{}>;
using DapoLoss = rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f, .aggregation = rl::Aggregation::token_mean}>;

// An MoE policy of the same size: DeepSeek-V3's sigmoid top-2 of 8 experts with a shared one and
// aux-loss-free bias balancing (gamma 0.01: the biases move visibly in a few passes), no drops.
using MoeGate = moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::NoDrop, moe::BiasBalance<0.01f>>;
using MoeNet = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>,
                                  moe::MoE<MoeGate, ffn::SwiGLU, moe::Shared<1>>>;

template <class Loss, class Par = train::SingleProcess, class Reward = ContainsTarget, class N = Net>
using Trainer = rl::GrpoTrainer<N, optim::AdamW, Loss, infer::Temperature, Reward, Par>;

/// The tiny policy's config; for the MoE policy its second layer routes over 8 experts 16 wide.
template <class N>
model::Config policy_config() {
  model::Config c = test::tiny_policy_config();
  if constexpr (N::routed) {
    c.first_dense_layers = 1;
    c.moe_intermediate_size = 16;
  }
  return c;
}

template <class N>
std::vector<float> initial_params(const N& net) {
  std::vector<float> p(net.num_params());
  net.layout().initialize(std::span<float>(p), 3);
  return p;
}

constexpr int steps = 3;
constexpr index_t prompts = 8;  // splits over 1, 2 and 4 ranks

/// The same score for everything: every group is uniform (dropped under dynamic sampling).
struct Constant {
  static constexpr const char* name = "constant";
  [[nodiscard]] float score(std::string_view, const data::Problem&) const { return 0.5f; }
};

rl::GrpoTrainerConfig base_config() {
  rl::GrpoTrainerConfig c;
  c.prompts_per_step = prompts;
  c.group_size = 4;
  c.max_new_tokens = 4;
  c.beta = 0.05;
  c.schedule = {.peak_lr = 1e-3, .min_lr = 1e-3, .warmup_steps = 0, .total_steps = 1000};
  c.mu = 2;
  c.micro_batch = 3;  // rows per training pass on each rank: uneven micro-batches
  c.max_grad_norm = 1.0;
  c.seed = 11;
  return c;
}

/// Every step's questions; with `half_dropped` the second half has an empty target set, so its
/// groups all score 0 and dynamic sampling drops them (the ranks holding them keep nothing).
std::vector<data::Problem> questions(std::int64_t step, bool half_dropped) {
  std::vector<data::Problem> q = test::target_prompts(static_cast<std::uint64_t>(step), prompts);
  if (half_dropped)
    for (index_t i = prompts / 2; i < prompts; ++i) q[static_cast<std::size_t>(i)].answer.clear();
  return q;
}

optim::AdamW optimizer() { return optim::AdamW{.config = {.weight_decay = 0.0}}; }

struct Run {
  std::vector<rl::GrpoStepStats> stats;
  std::vector<float> params;
};

/// `n` steps of `t` on the questions of `half_dropped`.
template <class Tr>
Run run(Tr& t, int n, bool half_dropped) {
  Run r;
  const typename Tr::PromptSource source = [=](std::int64_t s) { return questions(s, half_dropped); };
  for (int i = 0; i < n; ++i) r.stats.push_back(t.run_step(source));
  r.params.assign(t.params().begin(), t.params().end());
  return r;
}

/// One process on the whole step (every rank computes it: the model is tiny).
template <class Loss, class Reward = ContainsTarget, class N = Net>
Run single_process(const rl::GrpoTrainerConfig& cfg, bool half_dropped, int n = steps,
                   const model::Config& mc = policy_config<N>()) {
  N net(mc);
  const std::vector<float> init = initial_params(net);
  Trainer<Loss, train::SingleProcess, Reward, N> t(net, std::span<const float>(init), optimizer(),
                                                   infer::Temperature{1.0f}, Reward{}, cfg);
  return run(t, n, half_dropped);
}

/// The data-parallel run's statistics and parameters against one process's; the parameters within
/// param_tol max|p| (AdamW divides by sqrt(v), so a weight whose gradient is near zero turns the
/// different order of the ranks' sums into a visible part of lr: train_parallel.cpp allows 2e-5).
void compare(test::MpiHarness& h, const Run& dp, const Run& ref, const char* name, int ranks, double param_tol = 1e-5) {
  auto close = [](double a, double b, double tol) { return std::abs(a - b) <= tol * std::max(1.0, std::abs(b)); };
  double worst_loss = 0;
  for (std::size_t i = 0; i < ref.stats.size(); ++i) {
    const rl::GrpoStepStats &a = dp.stats[i], &b = ref.stats[i];
    const std::string at = std::string(name) + " step " + std::to_string(i) + ": ";
    // The same completions: the counts and rewards are equal (the sums' order differs by rank only).
    h.check(a.rows == b.rows && a.trained_rows == b.trained_rows && a.updated == b.updated,
            at + "rows " + std::to_string(a.rows) + "/" + std::to_string(a.trained_rows) + ", one process " +
                std::to_string(b.rows) + "/" + std::to_string(b.trained_rows));
    h.check(close(a.reward_mean, b.reward_mean, 1e-12) && close(a.reward_std, b.reward_std, 1e-9) &&
                close(a.completion_length, b.completion_length, 1e-12) && close(a.eos_fraction, b.eos_fraction, 1e-12) &&
                close(a.zero_variance_fraction, b.zero_variance_fraction, 1e-12),
            at + "reward " + std::to_string(a.reward_mean) + " ± " + std::to_string(a.reward_std) + ", one process " +
                std::to_string(b.reward_mean) + " ± " + std::to_string(b.reward_std));
    h.check(a.passes.size() == b.passes.size(), at + "pass count differs");
    for (std::size_t p = 0; p < std::min(a.passes.size(), b.passes.size()); ++p) {
      const rl::GrpoPassStats &x = a.passes[p], &y = b.passes[p];
      worst_loss = std::max(worst_loss, std::abs(x.loss - y.loss));
      h.check(x.tokens == y.tokens && close(x.loss, y.loss, 1e-5) && close(x.kl, y.kl, 1e-4) &&
                  close(x.entropy, y.entropy, 1e-5) && close(x.mean_ratio, y.mean_ratio, 1e-5) &&
                  close(x.grad_norm, y.grad_norm, 1e-4),
              at + "pass " + std::to_string(p) + ": loss " + std::to_string(x.loss) + ", kl " + std::to_string(x.kl) +
                  ", grad norm " + std::to_string(x.grad_norm) + "; one process " + std::to_string(y.loss) + ", " +
                  std::to_string(y.kl) + ", " + std::to_string(y.grad_norm));
    }
    h.check(close(a.rollout_logp_gap, b.rollout_logp_gap, 1e-3) || a.rollout_logp_gap < 1e-4,
            at + "logp gap " + std::to_string(a.rollout_logp_gap) + ", one process " + std::to_string(b.rollout_logp_gap));
  }
  const double diff = max_abs_diff(dp.params, ref.params), scale = max_abs(ref.params);
  h.check(diff <= param_tol * scale, std::string(name) + ": parameters differ from one process's by " + std::to_string(diff) +
                                    " (max |p| " + std::to_string(scale) + ")");
  if (h.rank() == 0)
    std::printf("%s, %d ranks: losses within %.2e, parameters within %.2e of one process's (max |p| %.3f)\n", name,
                ranks, worst_loss, diff, scale);
}

/// Collectives per step of a step that updated: A (the step's scalars) + the policy's per pass + D
/// (the pass statistics).
void check_data_parallel(test::MpiHarness& h, Comm& world) {
  const rl::GrpoTrainerConfig cfg = base_config();
  const Run ref = single_process<GrpoLoss>(cfg, false);
  Counting counted(world);
  const std::size_t bucket = 16 << 10;
  using DP = parallel::DataParallel<Counting>;
  Net net(test::tiny_policy_config());
  const std::vector<float> init = test::initial_params(net, 3);
  Trainer<GrpoLoss, DP> t(net, std::span<const float>(init), optimizer(), infer::Temperature{1.0f}, ContainsTarget{}, cfg,
                          DP(counted, bucket));
  h.check(t.ranks() == world.size() && t.rank() == world.rank() && t.checkpoint_writer() == (world.rank() == 0),
          "ranks " + std::to_string(t.ranks()) + ", rank " + std::to_string(t.rank()));
  counted.reset();  // the initial broadcast and the rank count are set-up, not a step
  const Run dp = run(t, steps, false);
  compare(h, dp, ref, "data parallel GRPO", world.size());

  const std::size_t n = net.layout().size();
  const auto buckets = static_cast<std::int64_t>((n * sizeof(float) + bucket - 1) / bucket);
  const std::string report = counted.report();
  h.check(counted.tally(Collective::all_reduce).calls == steps * (2 + cfg.mu * buckets),
          "expected " + std::to_string(2 + cfg.mu * buckets) + " all-reduces per step: " + report);
  h.check(counted.total().calls == counted.tally(Collective::all_reduce).calls, "only all-reduces expected: " + report);
  // The step's scalars: 9 sums, no reward components, one micro-batch count per rank; the pass
  // statistics: 6 per pass and one logp gap per rank; the gradients: n floats per pass.
  const auto ranks = static_cast<std::int64_t>(world.size());
  const std::int64_t scalar_bytes = (9 + ranks) * 8 + (6 * cfg.mu + ranks) * 8;
  h.check(counted.tally(Collective::all_reduce).bytes ==
              steps * (scalar_bytes + cfg.mu * static_cast<std::int64_t>(n * sizeof(float))),
          "all-reduce bytes: " + report);
  if (world.rank() == 0)
    std::printf("data parallel GRPO, %d ranks: %s over %d steps (%lld gradient buckets of %zu bytes, mu = %d)\n",
                world.size(), report.c_str(), steps, static_cast<long long>(buckets), bucket, cfg.mu);
}

/// Data-parallel GRPO of an MoE policy: every rank's gates balance on the expert load of every
/// rank's rows after each pass (train::balance_experts), so the replicas' biases move as one
/// process's and the run equals one process; one more all-reduce per pass (the load).
void check_data_parallel_moe(test::MpiHarness& h, Comm& world) {
  const rl::GrpoTrainerConfig cfg = base_config();
  const Run ref = single_process<GrpoLoss, ContainsTarget, MoeNet>(cfg, false);
  Counting counted(world);
  using DP = parallel::DataParallel<Counting>;
  MoeNet net(policy_config<MoeNet>());
  const std::vector<float> init = initial_params(net);
  Trainer<GrpoLoss, DP, ContainsTarget, MoeNet> t(net, std::span<const float>(init), optimizer(), infer::Temperature{1.0f},
                                                 ContainsTarget{}, cfg, DP(counted));
  counted.reset();
  const Run dp = run(t, steps, false);
  compare(h, dp, ref, "data parallel GRPO, MoE policy", world.size(), 2e-5);  // (8.8e-6 at 2 ranks: layers.0.ffn.down)
  h.check(test::balancing_biases_match(net.layout(), dp.params, ref.params),
          "the balancing biases moved differently from one process's (or not at all)");
  const auto buckets = static_cast<std::int64_t>(
      (net.layout().size() * sizeof(float) + parallel::default_bucket_bytes - 1) / parallel::default_bucket_bytes);
  h.check(counted.tally(Collective::all_reduce).calls == steps * (2 + cfg.mu * (buckets + 1)),
          "expected the load's all-reduce after each pass: " + counted.report());
}

/// One process (every rank alone) resumes the split run's checkpoint at `path` (written after one
/// step) and goes on like the one-process run `ref` of the policy `mc`, within fp32 tolerance.
void check_resumes_on_one_process(test::MpiHarness& h, const std::filesystem::path& path, const model::Config& mc,
                                  const rl::GrpoTrainerConfig& cfg, const Run& ref, const std::string& what) {
  Net net(mc);
  Trainer<GrpoLoss> alone(net, std::span<const float>(net.initial_params(3)), optimizer(), infer::Temperature{1.0f},
                          ContainsTarget{}, cfg);
  rl::load_checkpoint(path, alone);
  const Run rest = run(alone, steps - 1, false);
  const double diff = max_abs_diff(rest.params, ref.params);
  h.check(diff <= 2e-5 * max_abs(ref.params),
          "one process resumed from the " + what + " checkpoint differs by " + std::to_string(diff));
}

/// Tensor-parallel GRPO: every rank holds its share of the policy (heads and FFN units; KV heads
/// replicated at 4 ranks) and works on all the rows. The rollouts are the one-process ones (the split
/// model's logits are bit-equal on every rank), the gathered parameters within fp32 tolerance of one
/// process's, and the ranks' replicated tensors bit-equal. Its checkpoint is the unsplit model's:
/// a split run resumes bit for bit, one process within tolerance.
void check_tensor_parallel(test::MpiHarness& h, Comm& world) {
  using Group = parallel::ShardGroupOf<Counting, float>;
  using TP = parallel::TensorParallel<Counting>;
  const rl::GrpoTrainerConfig cfg = base_config();
  const Run ref = single_process<GrpoLoss>(cfg, false);
  Counting counted(world);
  Group group(counted);
  auto make = [&](Net& net) {
    return Trainer<GrpoLoss, TP>(net, std::span<const float>(net.initial_params(3)), optimizer(),
                                 infer::Temperature{1.0f}, ContainsTarget{}, cfg, TP(counted));
  };
  Net net(test::tiny_policy_config(), model::Sharding<float>{.tensor = &group});
  auto t = make(net);
  h.check(t.ranks() == 1 && t.checkpoint_writer() == (world.rank() == 0), "tensor parallel: every rank trains on every row");
  Run tp = run(t, steps, false);
  const std::vector<float> local = tp.params;
  tp.params = t.buffers().gather_full();
  compare(h, tp, ref, "tensor parallel GRPO", world.size());
  // The tensors every rank holds whole (embedding, norms, LM head) are bit-equal over the ranks.
  std::vector<float> whole_hi, whole_lo;
  net.shard_plan().for_each_run([&](std::size_t lo, std::size_t, std::size_t n, const model::ShardPiece& p,
                                    const model::ShardEntry&) {
    if (p.holders == world.size()) whole_hi.insert(whole_hi.end(), local.begin() + lo, local.begin() + lo + n);
  });
  whole_lo = whole_hi;
  for (float& v : whole_lo) v = -v;
  world.all_reduce(std::span<float>(whole_hi), parallel::ReduceOp::max);
  world.all_reduce(std::span<float>(whole_lo), parallel::ReduceOp::max);
  bool replicas_equal = !whole_hi.empty();
  for (std::size_t i = 0; i < whole_hi.size(); ++i) replicas_equal = replicas_equal && whole_hi[i] == -whole_lo[i];
  h.check(replicas_equal, "tensor parallel: the replicated tensors differ between the ranks");
  h.check(net.layout().size() < Net(test::tiny_policy_config()).layout().size() || world.size() == 1,
          "tensor parallel: a rank holds part of the model");

  // The checkpoint after one step, resumed split (bit for bit) and on one process (within tolerance).
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "reason_grpo_parallel_ckpt";
  const std::filesystem::path path = dir / ("tp_np" + std::to_string(world.size()) + ".safetensors");
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  Net net2(test::tiny_policy_config(), model::Sharding<float>{.tensor = &group});
  auto first = make(net2);
  (void)run(first, 1, false);
  rl::save_checkpoint(path, first);
  world.barrier();
  Net net3(test::tiny_policy_config(), model::Sharding<float>{.tensor = &group});
  auto resumed = make(net3);
  rl::load_checkpoint(path, resumed);
  const Run rest = run(resumed, steps - 1, false);
  h.check(max_abs_diff(rest.params, local) == 0.0, "a resumed tensor-parallel run differs from the uninterrupted one");
  check_resumes_on_one_process(h, path, test::tiny_policy_config(), cfg, ref, "tensor-parallel");
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(path);
}

/// Expert-parallel GRPO of the MoE policy: rank r holds 8 / ep of each MoE layer's experts, samples
/// and trains its share of the questions (as data parallel), and every forward and decode step is an
/// exchange of the ranks' tokens. The rollouts decode in lockstep (each rank as many decode steps as
/// the busiest), and under DAPO's dynamic sampling the ranks whose groups were all dropped run forwards
/// of zero sequences, serving their experts to the others' rows. Both equal one process: statistics,
/// losses, gathered parameters, balancing biases (exactly); every rank makes the same collectives.
template <class Loss>
void check_expert_parallel(test::MpiHarness& h, Comm& world, bool dynamic_sampling) {
  using Group = parallel::ShardGroupOf<Counting, float>;
  using EP = parallel::ExpertParallel<Counting>;
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.dynamic_sampling = dynamic_sampling;
  cfg.rollout_batch = 3;  // rows per decode state: 3 chunks of a rank's 2 x 4 rows at 4 ranks, 11 at 1
  const Run ref = single_process<Loss, ContainsTarget, MoeNet>(cfg, dynamic_sampling);
  Counting counted(world);
  Group group(counted);
  MoeNet net(policy_config<MoeNet>(), model::Sharding<float>{.expert = &group});
  Trainer<Loss, EP, ContainsTarget, MoeNet> t(net, std::span<const float>(net.initial_params(3)), optimizer(),
                                               infer::Temperature{1.0f}, ContainsTarget{}, cfg, EP(counted));
  h.check(t.ranks() == world.size() && t.checkpoint_writer() == (world.rank() == 0),
          "expert parallel: every rank samples its share of the questions");
  counted.reset();
  Run ep = run(t, steps, dynamic_sampling);
  ep.params = t.buffers().gather_full();
  const std::string name = dynamic_sampling ? "expert parallel DAPO (half the questions dropped)" : "expert parallel GRPO";
  compare(h, ep, ref, name.c_str(), world.size(), 2e-5);
  h.check(test::balancing_biases_match(net.full_layout(), ep.params, ref.params),
          name + ": the balancing biases moved differently from one process's (or not at all)");
  if (dynamic_sampling)
    for (const rl::GrpoStepStats& s : ep.stats)
      h.check(s.updated && s.trained_rows > 0 && s.trained_rows <= prompts / 2 * cfg.group_size,
              "the second half of the questions is dropped: " + std::to_string(s.trained_rows) + " rows kept");
  // The same collectives on every rank (else some rank would wait in one forever).
  std::int64_t calls[3] = {counted.tally(Collective::all_to_all).calls, counted.tally(Collective::all_to_all_v).calls,
                           counted.tally(Collective::all_reduce).calls};
  std::int64_t most[3] = {calls[0], calls[1], calls[2]}, least[3] = {-calls[0], -calls[1], -calls[2]};
  world.all_reduce(std::span<std::int64_t>(most), parallel::ReduceOp::max);
  world.all_reduce(std::span<std::int64_t>(least), parallel::ReduceOp::max);
  h.check(most[0] == -least[0] && most[1] == -least[1] && most[2] == -least[2] && calls[0] > 0,
          name + ": the ranks made different collectives: " + counted.report());
  if (world.rank() == 0) std::printf("%s, %d ranks: %s over %d steps\n", name.c_str(), world.size(), counted.report().c_str(), steps);
}

/// Pipeline-parallel GRPO of a 4-layer policy: stage s holds layers [s 4 / S, (s + 1) 4 / S) and every
/// stage works on all the rows. Each decode step passes through the stages and every stage gets the
/// last one's logits, so every stage samples one process's completions; the log-probabilities are
/// recorded by forwards through the stages and each pass runs in the 1F1B schedule (the 32 rows in
/// micro-batches of 3: ten of them, then one of 2). Statistics, losses and gathered parameters equal one process's; the
/// checkpoint is the unsplit model's and one process resumes it.
void check_pipeline(test::MpiHarness& h, Comm& world) {
  using PP = parallel::Pipeline<Counting>;
  using Group = parallel::ShardGroupOf<Counting, float>;
  const rl::GrpoTrainerConfig cfg = base_config();
  model::Config mc = test::tiny_policy_config();
  mc.num_layers = 4;
  const Run ref = single_process<GrpoLoss>(cfg, false, steps, mc);
  Counting counted(world);
  Group group(counted);
  Net net(mc, model::Sharding<float>{.pipeline = &group});
  Trainer<GrpoLoss, PP> t(net, std::span<const float>(net.initial_params(3)), optimizer(), infer::Temperature{1.0f},
                          ContainsTarget{}, cfg, PP(counted));
  h.check(t.ranks() == 1 && t.checkpoint_writer() == (world.rank() == 0), "pipeline: every stage works on every row");
  h.check(net.local_layers() == 4 / world.size(), "stage " + std::to_string(world.rank()) + " holds " +
                                                     std::to_string(net.local_layers()) + " layers");
  counted.reset();
  Run pp = run(t, steps, false);
  pp.params = t.buffers().gather_full();
  compare(h, pp, ref, "pipeline parallel GRPO", world.size());
  if (world.rank() == 0) std::printf("pipeline parallel GRPO, %d stages: %s over %d steps\n", world.size(),
                                     counted.report().c_str(), steps);

  // The gathered checkpoint after one step, resumed on one process: one process's run from there.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "reason_grpo_parallel_ckpt";
  const std::filesystem::path path = dir / ("pp_np" + std::to_string(world.size()) + ".safetensors");
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  Net net2(mc, model::Sharding<float>{.pipeline = &group});
  Trainer<GrpoLoss, PP> first(net2, std::span<const float>(net2.initial_params(3)), optimizer(), infer::Temperature{1.0f},
                              ContainsTarget{}, cfg, PP(counted));
  (void)run(first, 1, false);
  rl::save_checkpoint(path, first);
  world.barrier();
  check_resumes_on_one_process(h, path, mc, cfg, ref, "pipeline");
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(path);
}

/// DAPO (token-mean loss, dynamic sampling) with ZeRO-2: the ranks holding the second half of the
/// questions keep no group, yet join every reduce-scatter (as many micro-batches as the busiest
/// rank); a step where every group is uniform makes only the scalars' all-reduce.
void check_zero_dynamic_sampling(test::MpiHarness& h, Comm& world) {
  rl::GrpoTrainerConfig cfg = base_config();
  cfg.dynamic_sampling = true;
  const Run ref = single_process<DapoLoss>(cfg, true);
  Counting counted(world);
  using Z2 = parallel::Zero<parallel::ZeroStage::gradients, Counting>;
  Net net(test::tiny_policy_config());
  const std::vector<float> init = test::initial_params(net, 3);
  Trainer<DapoLoss, Z2> t(net, std::span<const float>(init), optimizer(), infer::Temperature{1.0f}, ContainsTarget{}, cfg,
                          Z2(counted));
  counted.reset();
  const Run dp = run(t, steps, true);
  compare(h, dp, ref, "ZeRO-2 DAPO", world.size());
  std::int64_t updates = 0, most_kept_rows = 0;
  for (const rl::GrpoStepStats& s : dp.stats) {
    updates += s.updated;
    most_kept_rows = std::max<std::int64_t>(most_kept_rows, s.trained_rows);
  }
  h.check(updates == steps, "every step keeps some group: " + std::to_string(updates) + " updates");
  const std::string report = counted.report();
  const std::int64_t passes = updates * cfg.mu;
  h.check(counted.tally(Collective::all_reduce).calls == 2 * updates + passes, "all-reduces: " + report);
  h.check(counted.tally(Collective::all_gather).calls == passes, "all-gathers: " + report);
  // Every rank joins as many reduce-scatters as the busiest rank has micro-batches: at least one per pass.
  const std::int64_t rs = counted.tally(Collective::reduce_scatter).calls;
  h.check(rs >= passes && rs % cfg.mu == 0, "reduce-scatters: " + report);
  std::int64_t rs_max = rs, rs_min = rs;
  world.all_reduce(std::span<std::int64_t>(&rs_max, 1), parallel::ReduceOp::max);
  rs_min = -rs_min;
  world.all_reduce(std::span<std::int64_t>(&rs_min, 1), parallel::ReduceOp::max);
  h.check(rs_max == -rs_min, "ranks made different numbers of reduce-scatters");
  if (world.rank() == 0)
    std::printf("ZeRO-2 DAPO, %d ranks (questions %lld-%lld drop out): %s over %d steps\n", world.size(),
                static_cast<long long>(prompts / 2), static_cast<long long>(prompts - 1), report.c_str(), steps);

  // A constant reward: every group everywhere is uniform, nothing is trained, one all-reduce.
  using DP = parallel::DataParallel<Counting>;
  Net net2(test::tiny_policy_config());
  Trainer<DapoLoss, DP, Constant> idle(net2, std::span<const float>(init), optimizer(), infer::Temperature{1.0f},
                                       Constant{}, cfg, DP(counted));
  counted.reset();
  const Run none = run(idle, 2, false);
  for (const rl::GrpoStepStats& s : none.stats)
    h.check(!s.updated && s.trained_rows == 0 && s.zero_variance_fraction == 1.0 && s.rows == prompts * cfg.group_size,
            "a constant reward trained " + std::to_string(s.trained_rows) + " rows");
  h.check(none.params == init, "a constant reward moved the parameters");
  h.check(counted.total().calls == 2 && counted.tally(Collective::all_reduce).calls == 2,
          "a step without update: " + counted.report());
}

/// Stop after one step, save (every rank calls, rank 0 writes), resume on every rank: the same run.
/// The file also resumes on one process, which then continues like the one-process run.
void check_checkpoint(test::MpiHarness& h, Comm& world) {
  using DP = parallel::DataParallel<Comm>;
  const rl::GrpoTrainerConfig cfg = base_config();
  Net net(test::tiny_policy_config());
  const std::vector<float> init = test::initial_params(net, 3);
  Trainer<GrpoLoss, DP> full(net, std::span<const float>(init), optimizer(), infer::Temperature{1.0f}, ContainsTarget{},
                             cfg, DP(world));
  const Run uninterrupted = run(full, steps, false);

  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "reason_grpo_parallel_ckpt";
  const std::filesystem::path path = dir / ("np" + std::to_string(world.size()) + ".safetensors");
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  Net net2(test::tiny_policy_config());
  Trainer<GrpoLoss, DP> first(net2, std::span<const float>(init), optimizer(), infer::Temperature{1.0f}, ContainsTarget{},
                              cfg, DP(world));
  (void)run(first, 1, false);
  rl::save_checkpoint(path, first, {{"note", "grpo_parallel"}});
  world.barrier();
  Net net3(test::tiny_policy_config());
  Trainer<GrpoLoss, DP> resumed(net3, std::span<const float>(init), optimizer(), infer::Temperature{1.0f},
                                ContainsTarget{}, cfg, DP(world));
  rl::load_checkpoint(path, resumed);
  h.check(resumed.step() == 1 && resumed.updates() == cfg.mu, "resumed at step " + std::to_string(resumed.step()));
  const Run rest = run(resumed, steps - 1, false);
  h.check(max_abs_diff(rest.params, uninterrupted.params) == 0.0, "a resumed data-parallel run differs from the uninterrupted one");

  // The same file on one process (every rank alone): the one-process run from step 1 on.
  Net net4(test::tiny_policy_config());
  Trainer<GrpoLoss> alone(net4, std::span<const float>(init), optimizer(), infer::Temperature{1.0f}, ContainsTarget{}, cfg);
  rl::load_checkpoint(path, alone);
  const Run alone_rest = run(alone, steps - 1, false);
  const Run ref = single_process<GrpoLoss>(cfg, false);
  const double diff = max_abs_diff(alone_rest.params, ref.params);
  h.check(diff <= 1e-5 * max_abs(ref.params), "resumed on one process: parameters differ from the one-process run by " +
                                                  std::to_string(diff));
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(path);
}

}  // namespace

int main(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);
  test::MpiHarness h;
  Comm world = Comm::world();
  h.run("data-parallel GRPO equals one process; its collectives",
        [&](test::MpiHarness& t) { check_data_parallel(t, world); });
  h.run("data-parallel GRPO of an MoE policy equals one process (the gates balance on every rank's load)",
        [&](test::MpiHarness& t) { check_data_parallel_moe(t, world); });
  h.run("tensor-parallel GRPO equals one process; its checkpoint resumes split and on one process",
        [&](test::MpiHarness& t) { check_tensor_parallel(t, world); });
  h.run("ZeRO-2 DAPO with ranks that keep no group equals one process",
        [&](test::MpiHarness& t) { check_zero_dynamic_sampling(t, world); });
  h.run("a data-parallel GRPO checkpoint resumes bit for bit, and on one process",
        [&](test::MpiHarness& t) { check_checkpoint(t, world); });
  h.run("expert-parallel GRPO of an MoE policy equals one process (lockstep decoding)",
        [&](test::MpiHarness& t) { check_expert_parallel<GrpoLoss>(t, world, false); });
  h.run("expert-parallel DAPO with ranks that keep no group equals one process (they serve their experts)",
        [&](test::MpiHarness& t) { check_expert_parallel<DapoLoss>(t, world, true); });
  h.run("pipeline-parallel GRPO equals one process (decoding through the stages, passes in 1F1B)",
        [&](test::MpiHarness& t) { check_pipeline(t, world); });
  h.run("prompts that do not split over the ranks are refused on every rank", [&](test::MpiHarness& t) {
    if (world.size() == 1) return;
    rl::GrpoTrainerConfig cfg = base_config();
    cfg.prompts_per_step = world.size() + 1;
    using DP = parallel::DataParallel<Comm>;
    Net net(test::tiny_policy_config());
    const std::vector<float> init = test::initial_params(net, 3);
    t.expect_error_containing(
        [&] {
          Trainer<GrpoLoss, DP> bad(net, std::span<const float>(init), optimizer(), infer::Temperature{1.0f},
                                    ContainsTarget{}, cfg, DP(world));
        },
        "GrpoTrainer: prompts_per_step = " + std::to_string(world.size() + 1) + " does not split over " +
            std::to_string(world.size()) + " ranks");
  });
  return h.finish();
}
