// reason/rl/grpo_trainer.hpp — the GRPO training loop, composed at compile time.
//
// Shao et al. 2024, DeepSeekMath, Algorithm 1 (iterative GRPO), and DeepSeek-R1 (DeepSeek-AI
// 2025, §2.2) which runs it with rule rewards only. One step of the loop:
//   (a) sample a batch of questions; for each, G outputs {o_i} ~ pi_theta_old(. | q)  (infer::rollout)
//   (b) compute the reward r_i of each output with the reward function            (reward::score_batch)
//   (c) compute the group-relative advantage A_i = (r_i - mean r) / std r         (rl::grpo_advantages)
//   (d) record log pi_theta_old and log pi_ref of every sampled token, once       (rl::TokenLogProbs)
//   (e) for iteration = 1 .. mu: update pi_theta by maximising the GRPO objective (rl::Grpo<C>::Batch)
// The reference is frozen for the run; Algorithm 1 resets it to the policy at the start of each
// outer iteration, which is reset_reference(). DAPO's dynamic sampling (Yu et al. 2025, §3.2)
// drops the groups whose rewards are all equal — their advantages are zero, so they carry no
// policy gradient and only dilute the batch; here they are dropped (not resampled) and the
// dropped fraction is reported. A step in which every group is dropped updates nothing.
//
// Design rule: the algorithm is a type assembled from policies, the run is numbers.
//   using Trainer = rl::GrpoTrainer<Net,                                   // the policy model
//                                   optim::AdamW,                          // optimizer
//                                   rl::Grpo<rl::GrpoConfig{}>,            // loss (GRPO, DAPO, Dr. GRPO)
//                                   infer::Temperature,                    // sampler
//                                   reward::Weighted<reward::Weights{0.8f, 0.2f}, reward::Accuracy, reward::Format>>;
// Each slot is checked by one static_assert that names it. GrpoTrainerConfig holds the run-time
// numbers (prompts per step, G, beta, mu, schedule, ...). Like train::Trainer, the trainer owns
// flat buffers — parameters, gradients, optimizer state, and a frozen copy of the reference
// parameters (train::train_buffers_t<Net, T, Opt>: on the host, or on the GPU for a CUDA model,
// so the same loop trains gpu::DenseTransformer) — plus its position (step, optimizer updates),
// and prompts come from a function of the step, so the position is the data state. Randomness is counter-based: step s samples row r
// from Philox(key = rollout_seed(seed, s), stream = r), so a run is a function of its seed.
//
// Gradient accumulation: each optimisation pass runs the kept rows in micro-batches of
// `micro_batch` rows; every micro-batch's objective is given the whole step's normaliser
// (Normaliser{sequences = kept rows, tokens = kept completion tokens, max_length =
// max_new_tokens}), so the accumulated gradient equals that of one pass over all rows. logp_old
// and logp_ref are recorded with the same micro-batches as the training passes, so on the first
// pass the ratio pi_theta / pi_old is exactly 1 (identical GEMM shapes, identical kernels).
//
// Saving and restoring a run is rl/grpo_checkpoint.hpp (rl::save_checkpoint, rl::load_checkpoint),
// kept apart because it needs io/safetensors.hpp, which belongs to the reason::io component
// (nlohmann-json). Every bit of the state is exposed for it (params(), reference_params(),
// optimizer_state(), step(), updates(), set_position(); the numbers in config() and optimizer();
// for a CUDA model those spans are host mirrors, filled by to_host() and uploaded by from_host()),
// and a resume from it is bit-identical to never stopping.
//
// Parallelism: the last slot, Par, is a parallelism policy of train::Trainer's kind
// (train/train_buffers.hpp): train::SingleProcess (the default: one process, the loop above),
// parallel::DataParallel<C> or parallel::Zero<Stage, C>, one trainer per rank, every rank calling
// run_step in step. Data parallel GRPO (DeepSeekMath's setup at scale: each worker samples its own
// questions' groups):
//   - the prompt source still gives the whole step's prompts_per_step questions (a pure function of
//     the step, the same on every rank); rank r of n takes the contiguous block [r P/n, (r+1) P/n)
//     (P must divide by n) and samples, scores and trains its own groups — group-relative
//     advantages never need another rank's rewards;
//   - sampling stays a function of the step's global rows: global row q (prompt q / G of the
//     step) draws from Philox(rollout_seed(seed, s), stream = q) on whichever rank holds it
//     (detail::RowOffset shifts a rank's local rows to their global streams), so ranks draw
//     different samples and a run on n ranks samples what one process would — the same run up to
//     floating-point rounding, for any n;
//   - the loss normaliser is global: the kept rows and completion tokens of the step, summed over
//     the ranks (one all-reduce of the step's scalars, which also carries the reward, length and
//     component sums, so every statistic reported is a mean over every rank's rows), so the
//     gradients summed by the policy's clip are the gradient of the one-process objective;
//   - every rank takes the same optimizer step and keeps the same frozen reference (replicated;
//     ZeRO shards only optimizer state and gradients); the pass statistics and the logp gap are
//     summed or maxed over the ranks in one more all-reduce after the passes.
// Per step that is 1 all-reduce of scalars, the policy's gradient collectives per pass (DataParallel:
// one all-reduce per bucket; ZeRO: its reduce-scatter(s), norm all-reduce and all-gather) and 1
// all-reduce of the pass statistics; a step that keeps no row anywhere makes only the first.
// micro_batch and rollout_batch count this rank's rows. A rank whose groups were all dropped
// (dynamic sampling) still joins every collective; under ZeRO-2 every rank runs as many
// micro-batches as the busiest one (empty ones contribute zero). Checkpoints: every rank calls
// rl::save_checkpoint, rank 0 writes (checkpoint_writer()).
// Tensor parallelism (parallel::TensorParallel, the Net built with model::Sharding{.tensor}; Megatron):
// every rank holds its share of the policy and the reference and works on all of the step's rows.
// The split model's logits are bit-equal on every rank (the row-parallel sums are all-reduced), so
// every rank samples the same completions, scores the same rewards and trains on the same rows; the
// model's collectives sum the activations, the buffers the partial gradients. ranks() stays 1 (no
// rank has rows of its own); rank 0 writes the checkpoint, gathered into the unsplit layout.
// Expert parallelism (parallel::ExpertParallel, an MoE Net built with model::Sharding{.expert}; GShard):
// every rank holds experts / ep of each MoE layer and everything else whole, and takes its share of
// the step's questions as under data parallelism (the same global streams, global normaliser and
// summed statistics). Every forward and decode step of the model is a collective of the ranks (their
// experts serve each other's tokens), so they run in step: the rollouts decode in lockstep until
// every rank's rows are done (infer/lockstep.hpp), and a rank with fewer kept rows (dynamic sampling)
// runs forwards of zero sequences for the micro-batches it lacks, serving its experts to the others.
// Pipeline parallelism (parallel::Pipeline, the Net built with model::Sharding{.pipeline}): every
// stage works on all of the step's rows, like tensor parallelism. A decode step passes through the
// stages and every stage gets the last one's logits (Transformer::decode_step), so every stage samples
// the same completions and scores the same rewards; logp_old and logp_ref are recorded by forwards
// through the stages (parallel::PipelineBuffers::run_forwards, the last stage's objective keeping
// them), and each pass runs its micro-batches in the 1F1B schedule (run_1f1b) with the GRPO objective
// on the last stage, whose pass statistics are then summed over the stages (one all-reduce per step).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/model/config.hpp"
#include "reason/optim/concepts.hpp"
#include "reason/reward/accuracy.hpp"
#include "reason/reward/concept.hpp"
#include "reason/reward/score_batch.hpp"
#include "reason/reward/weighted.hpp"
#include "reason/rl/advantages.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/policy_loss.hpp"
#include "reason/rl/token_logp.hpp"
#include "reason/train/balance_experts.hpp"
#include "reason/train/clip.hpp"
#include "reason/train/loss_scale.hpp"
#include "reason/train/schedule.hpp"
#include "reason/train/train_buffers.hpp"

namespace reason::rl {

/// The run-time numbers of a GRPO run.
struct GrpoTrainerConfig {
  index_t prompts_per_step = 8;      // questions per step (the prompt source must return this many)
  index_t group_size = 8;            // G: completions sampled per question
  index_t max_new_tokens = 64;       // completion tokens per row at most (also Dr. GRPO's L_max)
  double beta = 0.04;                // KL penalty to the reference (DeepSeekMath 0.04; DAPO 0)
  train::CosineSchedule schedule{};  // learning rate per step
  int mu = 1;                        // optimisation passes per rollout batch (Algorithm 1's mu)
  double max_grad_norm = 1.0;        // global-norm clipping; <= 0 disables
  bool dynamic_sampling = false;     // DAPO: drop groups whose rewards are all equal
  std::uint64_t seed = 1;            // rollouts of step s use Philox key rollout_seed(seed, s)
  int advantage_sign = 1;            // +1; -1 trains against the reward (a control experiment)
  GroupScale advantage_scale = GroupScale::std;  // GroupScale::none for Dr. GRPO
  index_t micro_batch = 0;           // rows per training pass; 0: all kept rows in one
  index_t rollout_batch = 0;         // rows per decode state; 0: all rows in one
  train::LossScaleConfig loss_scale{};  // dynamic loss scaling (by default: when the precision asks for it)

  void validate() const {
    REASON_CHECK(prompts_per_step >= 1 && group_size >= 1 && max_new_tokens >= 1, "GrpoTrainerConfig: prompts_per_step = ",
                 prompts_per_step, ", group_size = ", group_size, ", max_new_tokens = ", max_new_tokens,
                 "; all must be >= 1");
    REASON_CHECK(mu >= 1, "GrpoTrainerConfig: mu = ", mu, "; expected >= 1 optimisation pass per rollout batch");
    REASON_CHECK(beta >= 0 && std::isfinite(beta), "GrpoTrainerConfig: beta = ", beta, "; expected a finite value >= 0");
    REASON_CHECK(advantage_sign == 1 || advantage_sign == -1, "GrpoTrainerConfig: advantage_sign = ", advantage_sign,
                 "; expected +1 or -1");
    REASON_CHECK(micro_batch >= 0 && rollout_batch >= 0, "GrpoTrainerConfig: micro_batch = ", micro_batch,
                 ", rollout_batch = ", rollout_batch, "; expected >= 0 (0: all rows)");
    schedule.validate();
    loss_scale.validate();
  }
};

/// The Philox key of step s's rollouts: the first value of Philox(seed, stream 2^62 + s).
[[nodiscard]] inline std::uint64_t rollout_seed(std::uint64_t seed, std::int64_t step) {
  Philox g(seed, (std::uint64_t{1} << 62) + static_cast<std::uint64_t>(step));
  return g.next_u64();
}

/// One optimisation pass over the step's kept rows.
struct GrpoPassStats {
  double loss = 0;           // the aggregated GRPO loss
  double mean_ratio = 1;     // pi_theta / pi_old over completion tokens
  double clip_fraction = 0;  // share of tokens whose surrogate was clipped
  double kl = 0;             // mean k3 estimate of KL(pi_theta || pi_ref) (0 when beta = 0)
  double entropy = 0;        // mean entropy of pi_theta(. | prefix)
  double grad_norm = 0;      // before clipping (unscaled; NaN when skipped)
  index_t tokens = 0;        // completion tokens trained on
  double loss_scale = 1;     // S the pass's gradients were computed with (1 without loss scaling)
  bool skipped = false;      // loss scaling found non-finite gradients: no update was made
};

/// The mean of one component of the reward over the step's completions.
struct RewardComponent {
  const char* name = "";
  double mean = 0;
};

/// What one GRPO step did.
struct GrpoStepStats {
  std::int64_t step = 0;               // the step just completed (0-based)
  index_t rows = 0;                    // completions sampled (prompts x G)
  index_t trained_rows = 0;            // rows kept for the update
  double reward_mean = 0, reward_std = 0;  // over every sampled completion (population std)
  std::optional<double> accuracy;      // mean of the reward::Accuracy component, when there is one
  std::vector<RewardComponent> components;  // each component's mean (one entry for a plain reward)
  double zero_variance_fraction = 0;   // groups whose rewards are all equal (dropped under dynamic sampling)
  double completion_length = 0;        // mean completion tokens over every sampled row
  double eos_fraction = 0;             // rows that stopped on <eos>
  double lr = 0;
  double rollout_logp_gap = 0;         // max |log p_rollout - log p_old| over the trained tokens: decode vs training
  bool updated = false;                // false when no row was kept: the parameters did not move
  // Means over the mu passes (passes[i] has each):
  double loss = 0, mean_ratio = 1, clip_fraction = 0, kl = 0, entropy = 0, grad_norm = 0;
  std::vector<GrpoPassStats> passes;
  struct Seconds {
    double rollout = 0, score = 0, logp = 0, update = 0, total = 0;
  } seconds;
};

namespace detail {

template <class N>
struct ParamType {
  using type = float;
};
template <class N>
  requires requires { typename N::T; }
struct ParamType<N> {
  using type = typename N::T;
};

template <class R>
struct WeightedTraits : std::false_type {};
template <reward::Weights W, class... Rs>
struct WeightedTraits<reward::Weighted<W, Rs...>> : std::true_type {};

/// Sampler S on a rank's share of a rollout: local row r is global row first_row + r, and draws
/// exactly what row first_row + r of the whole rollout would (Philox is counter-based: the
/// stream is moved, the offset kept), so where a row is sampled does not change its completion.
template <class S>
struct RowOffset {
  static constexpr int draws_per_token = S::draws_per_token;
  const S* inner = nullptr;
  index_t first_row = 0;

  template <class E>
  infer::TokenDraw sample(std::span<const E> logits, Philox& rng, infer::SampleScratch& ws, index_t row = 0) const {
    Philox global(rng.seed(), rng.stream() + static_cast<std::uint64_t>(first_row), rng.offset());
    const infer::TokenDraw d = inner->sample(logits, global, ws, first_row + row);
    rng.skip(global.offset() - rng.offset());
    return d;
  }
};

}  // namespace detail

/// A policy model the trainer can sample from and train: Transformer's interface.
template <class N>
concept GrpoPolicyModel = requires {
  typename N::T;
  typename N::DecodeState;
} && requires(N& net, const N& cnet, const typename N::T* p, typename N::T* g, View<const std::int32_t, 2> tokens,
              TokenLogProbs<typename N::T>& rec, typename N::DecodeState& state, View<const std::int32_t, 1> feed,
              View<typename N::T, 2> logits) {
  { cnet.make_decode_state(index_t{1}, index_t{1}) } -> std::same_as<typename N::DecodeState>;
  cnet.decode_step(p, feed, index_t{0}, state, logits);
  { cnet.config() } -> std::convertible_to<const model::Config&>;
  { cnet.num_params() } -> std::convertible_to<std::size_t>;
  { cnet.layout() } -> std::convertible_to<const ParamLayout&>;
  net.reserve(index_t{1}, index_t{1});
  { net.forward_objective(p, g, tokens, rec) } -> std::convertible_to<double>;
  net.backward(p, g);
};

/// A GRPO-family loss: Grpo<GrpoConfig{...}>, whose Batch<T> is a forward_objective.
template <class L, class T>
concept GrpoLoss = requires {
  typename L::template Batch<T>;
  { L::config } -> std::convertible_to<GrpoConfig>;
} && std::constructible_from<typename L::template Batch<T>, const RolloutBatch<T>&, GrpoCoefficients> &&
    requires(const typename L::template Batch<T>& b) {
      { b.stats() } -> std::same_as<PolicyStats>;
    };

template <class Net, class Opt, class Loss, class Sampler, class Reward, class Par = train::SingleProcess>
class GrpoTrainer {
  static_assert(GrpoPolicyModel<Net>,
                "rl::GrpoTrainer<Net, Opt, Loss, Sampler, Reward>: Net (slot 1) must be a policy model with "
                "decode_step, forward_objective and backward (e.g. model::Transformer<...>)");
  static_assert(optim::Optimizer<Opt>,
                "rl::GrpoTrainer<Net, Opt, Loss, Sampler, Reward>: Opt (slot 2) must be an optimizer policy "
                "(e.g. optim::AdamW)");
  static_assert(GrpoLoss<Loss, typename detail::ParamType<Net>::type>,
                "rl::GrpoTrainer<Net, Opt, Loss, Sampler, Reward>: Loss (slot 3) must be a GRPO loss policy "
                "(e.g. rl::Grpo<rl::GrpoConfig{}>)");
  static_assert(infer::Sampler<Sampler>,
                "rl::GrpoTrainer<Net, Opt, Loss, Sampler, Reward>: Sampler (slot 4) must be a sampler policy "
                "(e.g. infer::Temperature)");
  static_assert(reward::Reward<Reward>,
                "rl::GrpoTrainer<Net, Opt, Loss, Sampler, Reward>: Reward (slot 5) must be a reward policy "
                "(e.g. reward::Weighted<reward::Weights{0.8f, 0.2f}, reward::Accuracy, reward::Format>)");

 public:
  using T = typename detail::ParamType<Net>::type;  // Net::T (float when slot 1 is wrong, so one error shows)
  /// Parameters, gradients, optimizer state and reference: on the host, or the CUDA model's device
  /// buffers, as the parallelism policy makes them.
  using Buffers = typename Par::template buffers<Net, T, Opt>;
  /// The questions of step s (prompts_per_step of them); a pure function of s, like train::BatchSource.
  /// Under a distributed policy every rank gets all of them and keeps its share.
  using PromptSource = std::function<std::vector<data::Problem>(std::int64_t step)>;

  /// Starts from `initial_params` (e.g. an SFT checkpoint's), which also become the reference.
  /// Under a distributed policy every rank constructs its trainer (a collective: the parameters
  /// are broadcast from rank 0 and the ranks counted).
  GrpoTrainer(Net& net, std::span<const T> initial_params, Opt optimizer, Sampler sampler, Reward reward,
              GrpoTrainerConfig config, const Par& parallel = {})
      : net_(net),
        opt_(std::move(optimizer)),
        sampler_(std::move(sampler)),
        reward_(std::move(reward)),
        cfg_((config.validate(), config)),
        buf_(make_buffers(net, initial_params, parallel)),
        scaler_(cfg_.loss_scale, train::loss_scaling_enabled<typename train::PrecisionOf<Net>::type>(cfg_.loss_scale)) {
    REASON_CHECK(net_.config().vocab_size == data::Tokenizer::vocab_size, "GrpoTrainer: the model's vocabulary has ",
                 net_.config().vocab_size, " tokens but prompts and completions use data::Tokenizer's ",
                 data::Tokenizer::vocab_size);
    if constexpr (requires { net.sharding(); }) forwards_in_step_ = net.sharding().expert != nullptr;
    if constexpr (distributed) {
      double ranks = 1;
      buf_.sum_across_ranks(std::span<double>(&ranks, 1));
      ranks_ = static_cast<int>(ranks);
      rank_ = buf_.rank();
      REASON_CHECK(cfg_.prompts_per_step % ranks_ == 0, "GrpoTrainer: prompts_per_step = ", cfg_.prompts_per_step,
                   " does not split over ", ranks_, " ranks (each rank samples an equal share of the step's questions)");
    }
  }

  [[nodiscard]] const GrpoTrainerConfig& config() const { return cfg_; }
  [[nodiscard]] Net& net() const { return net_; }
  [[nodiscard]] const Opt& optimizer() const { return opt_; }
  [[nodiscard]] const Sampler& sampler() const { return sampler_; }
  [[nodiscard]] const Reward& reward() const { return reward_; }
  /// The loss scale and its bookkeeping (scale() == 1 and never skipping when scaling is off).
  [[nodiscard]] const train::DynamicLossScaler& loss_scaler() const { return scaler_; }
  /// Restores the scaler's state (used by the checkpoint loader).
  void set_loss_scale_state(double scale, std::int64_t good_steps, std::int64_t skipped) {
    scaler_.set_state(scale, good_steps, skipped, "GrpoTrainer");
  }
  /// The buffers as host spans (for a CUDA model: mirrors, valid after to_host(), uploaded by from_host()).
  [[nodiscard]] std::span<T> params() { return buf_.host_params(); }
  [[nodiscard]] std::span<const T> params() const { return buf_.host_params(); }
  [[nodiscard]] std::span<T> reference_params() { return buf_.host_reference(); }
  [[nodiscard]] std::span<const T> reference_params() const { return buf_.host_reference(); }
  [[nodiscard]] std::span<T> optimizer_state() { return buf_.host_state(); }
  [[nodiscard]] std::span<const T> optimizer_state() const { return buf_.host_state(); }
  void to_host() const { buf_.to_host(); }
  void from_host() { buf_.from_host(); }
  /// The parameters the model reads (device memory for a CUDA model).
  [[nodiscard]] const T* model_params() const { return buf_.params(); }
  /// The next step to run (0-based) and the optimizer updates made so far (AdamW's t).
  [[nodiscard]] std::int64_t step() const { return step_; }
  [[nodiscard]] std::int64_t updates() const { return updates_; }
  /// The buffers themselves (a parallelism policy's report: e.g. optimizer_state_bytes()).
  [[nodiscard]] const Buffers& buffers() const { return buf_; }
  /// This process's rank and the number of ranks (0 and 1 for one process).
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int ranks() const { return ranks_; }
  /// Whether this process writes checkpoints: under a parallelism policy (data parallel, or tensor
  /// parallel, whose ranks all train on the same rows) only rank 0 does.
  [[nodiscard]] bool checkpoint_writer() const {
    if constexpr (requires { buf_.rank(); })
      return buf_.rank() == 0;
    else
      return true;
  }

  /// Restores the position (a checkpoint loader sets the buffers through the spans above).
  void set_position(std::int64_t step, std::int64_t updates) {
    REASON_CHECK(step >= 0 && updates >= 0, "GrpoTrainer: position step ", step, ", updates ", updates, " is negative");
    step_ = step;
    updates_ = updates;
  }
  /// pi_ref <- pi_theta (DeepSeekMath Algorithm 1, line 2: the start of an outer iteration).
  void reset_reference() { buf_.reset_reference(); }

  /// Runs step step() on the questions source(step()) and returns what it did. Under a
  /// distributed policy every rank calls it, and every rank returns the same statistics (over all
  /// ranks' rows; the timings are this rank's).
  GrpoStepStats run_step(const PromptSource& source) {
    using Clock = std::chrono::steady_clock;
    auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    const auto t_start = Clock::now();
    GrpoStepStats s;
    s.step = step_;
    const index_t G = cfg_.group_size;
    const index_t P = cfg_.prompts_per_step / ranks_;  // this rank's questions: [first, first + P) of the step's
    const index_t first = static_cast<index_t>(rank_) * P;

    // (a) rollouts: G samples of each question's prompt, from the current parameters.
    const std::vector<data::Problem> all = source(step_);
    REASON_CHECK(static_cast<index_t>(all.size()) == cfg_.prompts_per_step, "GrpoTrainer: the prompt source gave ",
                 all.size(), " problems for step ", step_, ", expected prompts_per_step = ", cfg_.prompts_per_step);
    const std::span<const data::Problem> problems =
        std::span<const data::Problem>(all).subspan(static_cast<std::size_t>(first), static_cast<std::size_t>(P));
    std::vector<std::vector<std::int32_t>> prompts;
    for (const data::Problem& p : problems) prompts.push_back(data::prompt_tokens(p));
    infer::RolloutConfig rc;
    rc.samples_per_prompt = G;
    rc.max_new_tokens = cfg_.max_new_tokens;
    rc.eos = data::Tokenizer::eos;
    rc.seed = rollout_seed(cfg_.seed, step_);
    rc.max_batch = cfg_.rollout_batch;
    const infer::Rollouts ro = sample(std::span<const std::vector<std::int32_t>>(prompts), rc, first * G);
    const index_t rows = ro.size();
    const auto t_rollout = Clock::now();

    // (b) decode and score against each row's problem.
    std::vector<std::string> texts(static_cast<std::size_t>(rows));
    std::vector<data::Problem> samples(static_cast<std::size_t>(rows));
    double length = 0, eos = 0;
    for (index_t r = 0; r < rows; ++r) {
      const infer::Completion& c = ro.rows[static_cast<std::size_t>(r)];
      texts[static_cast<std::size_t>(r)] = data::Tokenizer::decode(c.tokens);
      samples[static_cast<std::size_t>(r)] = problems[static_cast<std::size_t>(c.prompt)];
      length += static_cast<double>(c.tokens.size());
      eos += c.stopped_on_eos;
    }
    std::vector<float> rewards(static_cast<std::size_t>(rows));
    reward::score_batch(reward_, std::span<const std::string>(texts), std::span<const data::Problem>(samples),
                        std::span<float>(rewards));
    const std::span<const float> rw(rewards);
    const auto t_score = Clock::now();

    // (c) group-relative advantages (each rank holds whole groups); DAPO drops the groups with all-equal rewards.
    std::vector<float> adv(static_cast<std::size_t>(rows));
    if (cfg_.advantage_scale == GroupScale::std) grpo_advantages<GroupScale::std>(rw, G, std::span<float>(adv));
    else grpo_advantages<GroupScale::none>(rw, G, std::span<float>(adv));
    for (float& a : adv) a *= static_cast<float>(cfg_.advantage_sign);
    const std::vector<index_t> uniform = uniform_groups(rw, G);
    std::vector<index_t> keep;
    for (index_t g = 0, u = 0; g < P; ++g) {
      const bool is_uniform = u < static_cast<index_t>(uniform.size()) && uniform[static_cast<std::size_t>(u)] == g;
      u += is_uniform;
      if (cfg_.dynamic_sampling && is_uniform) continue;
      for (index_t i = 0; i < G; ++i) keep.push_back(g * G + i);
    }
    const auto R = static_cast<index_t>(keep.size());  // this rank's kept rows
    index_t kept_tokens = 0;
    for (index_t r : keep) kept_tokens += static_cast<index_t>(ro.rows[static_cast<std::size_t>(r)].tokens.size());
    const index_t mb = cfg_.micro_batch > 0 ? std::min(cfg_.micro_batch, R) : R;
    const index_t micro = R > 0 ? (R + mb - 1) / mb : 0;  // this rank's micro-batches per pass

    // The step's sums over every rank's rows (one all-reduce under a distributed policy): rows,
    // reward sum, the reward's squared deviations from this rank's mean and sum^2 / rows (which
    // combine into the global variance), length, <eos>, uniform groups, kept rows and tokens,
    // each reward component's sum, and each rank's micro-batch count in its own slot.
    const std::vector<double> component = component_sums(texts, samples);
    const std::size_t at_components = 9, at_micro = at_components + component.size();
    std::vector<double> sums(at_micro + static_cast<std::size_t>(ranks_), 0.0);
    {
      const double n = static_cast<double>(rows), reward_sum = sum_of(rw);
      sums[0] = n;
      sums[1] = reward_sum;
      sums[2] = squared_deviations(rw, reward_sum / n);
      sums[3] = reward_sum * reward_sum / n;
      sums[4] = length;
      sums[5] = eos;
      sums[6] = static_cast<double>(uniform.size());
      sums[7] = static_cast<double>(R);
      sums[8] = static_cast<double>(kept_tokens);
      std::copy(component.begin(), component.end(), sums.begin() + static_cast<std::ptrdiff_t>(at_components));
      sums[at_micro + static_cast<std::size_t>(rank_)] = static_cast<double>(micro);
    }
    if constexpr (distributed) buf_.sum_across_ranks(std::span<double>(sums));
    const double all_rows = sums[0];
    s.rows = static_cast<index_t>(all_rows);
    s.reward_mean = sums[1] / all_rows;
    // sum of squared deviations from the global mean: each rank's own, plus rows_k (mean_k - mean)^2
    // summed, = sum_k sum_k^2 / rows_k - sum^2 / rows (exactly 0 for one rank).
    s.reward_std = std::sqrt(std::max(0.0, sums[2] + (sums[3] - sums[1] * sums[1] / all_rows)) / all_rows);
    s.completion_length = sums[4] / all_rows;
    s.eos_fraction = sums[5] / all_rows;
    s.zero_variance_fraction = sums[6] / static_cast<double>(cfg_.prompts_per_step);
    set_components(std::span<const double>(sums).subspan(at_components, component.size()), all_rows, s);
    const auto all_kept = static_cast<index_t>(sums[7]);
    const double all_tokens = sums[8];
    index_t micro_steps = 0;  // micro-batches per pass of the busiest rank: every rank runs as many
    for (int k = 0; k < ranks_; ++k)
      micro_steps = std::max(micro_steps, static_cast<index_t>(sums[at_micro + static_cast<std::size_t>(k)]));
    s.trained_rows = all_kept;
    s.lr = cfg_.schedule.lr(step_);

    // (d) the padded batch [R, L] of prompt + completion and its completion mask; logp_old, logp_ref.
    if (all_kept > 0) {
      build_batch(prompts, ro, keep, adv);
      const index_t L = seq_;
      if (mb > reserved_batch_ || L > reserved_seq_ || reserved_batch_ == 0) {  // (a rank without rows reserves one)
        reserved_batch_ = std::max({reserved_batch_, mb, index_t{1}});
        reserved_seq_ = std::max({reserved_seq_, L, index_t{1}});
        net_.reserve(reserved_batch_, reserved_seq_);
      }
      logp_old_.assign(static_cast<std::size_t>(R * L), T(0));
      logp_ref_.assign(cfg_.beta != 0 ? static_cast<std::size_t>(R * L) : 0, T(0));
      // Micro-batch m is rows [m mb, m mb + rows_in(m)) of this rank's kept rows.
      const auto rows_in = [&](index_t m) { return std::min(mb, R - m * mb); };
      const auto micro_batch = [&](index_t m) {
        const index_t r0 = m * mb, n = rows_in(m);
        return RolloutBatch<T>{rows_view(tokens_.data(), r0, n), rows_view(mask_.data(), r0, n),
                               rows_view(logp_old_.data(), r0, n),
                               cfg_.beta != 0 ? rows_view(logp_ref_.data(), r0, n) : View<const T, 2>{},
                               std::span<const T>(advantages_).subspan(static_cast<std::size_t>(r0),
                                                                       static_cast<std::size_t>(n))};
      };
      if constexpr (pipelined) {  // the micro-batches through the stages; the last stage's objective records
        auto record = [&](const T* params, std::vector<T>& out) {
          buf_.run_forwards(
              net_, static_cast<int>(micro), [&](int m) { return rows_in(m) * seq_; },
              [&](int m, View<const T, 2> input) { record_logps(params, m * mb, rows_in(m), out, input); });
        };
        record(buf_.params(), logp_old_);
        if (cfg_.beta != 0) record(buf_.reference(), logp_ref_);
      } else {
        // Expert parallel: every rank runs as many forwards as the busiest (serve_experts when out of rows).
        for (index_t m = 0; m < (forwards_in_step_ ? micro_steps : micro); ++m) {
          if (m * mb >= R) {
            serve_experts(buf_.params(), nullptr);
            if (cfg_.beta != 0) serve_experts(buf_.reference(), nullptr);
            continue;
          }
          record_logps(buf_.params(), m * mb, rows_in(m), logp_old_);
          if (cfg_.beta != 0) record_logps(buf_.reference(), m * mb, rows_in(m), logp_ref_);
        }
      }
      // (a pipeline: log p_old is the last stage's; the others report 0, and the gap is summed over the stages)
      double gap = 0;
      if constexpr (pipelined) {
        if (net_.last_stage()) gap = rollout_gap(prompts, ro, keep);
      } else {
        gap = rollout_gap(prompts, ro, keep);
      }
      const auto t_logp = Clock::now();
      s.seconds.logp = seconds(t_score, t_logp);

      // (e) mu optimisation passes over the kept rows, accumulated over micro-batches; the
      // normaliser counts every rank's kept rows and tokens.
      const Normaliser norm{static_cast<double>(all_kept), all_tokens, static_cast<double>(cfg_.max_new_tokens)};
      const GrpoCoefficients coef{cfg_.beta, norm};
      // Per pass: loss, tokens, and the token-weighted ratio, clip, KL and entropy sums; then each
      // rank's logp gap in its own slot (summed over the ranks at the end of the step).
      constexpr std::size_t per_pass = 6;
      const auto at_gap = per_pass * static_cast<std::size_t>(cfg_.mu);
      std::vector<double> pass_sums(at_gap + static_cast<std::size_t>(ranks_), 0.0);
      pass_sums[at_gap + static_cast<std::size_t>(rank_)] = gap;
      for (int pass = 0; pass < cfg_.mu; ++pass) {
        buf_.zero_grads();
        GrpoPassStats p;
        p.loss_scale = scaler_.scale();
        double loss = 0, ratio = 0, clipped = 0, kl = 0, entropy = 0;
        index_t tokens = 0;
        auto add = [&](const PolicyStats& ps) {
          const auto k = static_cast<double>(ps.tokens);
          loss += ps.loss;
          tokens += ps.tokens;
          ratio += ps.mean_ratio * k;
          clipped += ps.clip_fraction * k;
          kl += ps.mean_kl * k;
          entropy += ps.mean_entropy * k;
        };
        if constexpr (pipelined) {  // the pass in the 1F1B schedule; the objective on the last stage
          buf_.run_1f1b(
              net_, static_cast<int>(micro), [&](int m) { return rows_in(m) * seq_; },
              [&](int m, View<const T, 2> input) {
                const RolloutBatch<T> batch = micro_batch(m);
                typename Loss::template Batch<T> objective(batch, coef);
                train::ScaledObjective<typename Loss::template Batch<T>> scaled{objective, p.loss_scale};
                net_.stage_forward_objective(buf_.params(), buf_.grads(), batch.tokens, scaled, input);
                add(objective.stats());  // (zero before the last stage)
              },
              [&](int, View<const T, 2> output_grad) { net_.stage_backward(buf_.params(), buf_.grads(), output_grad); });
        } else {
          for (index_t m = 0; m < micro_steps; ++m) {
            if (m * mb < R) {
              const index_t n = rows_in(m);
              const RolloutBatch<T> batch = micro_batch(m);
              typename Loss::template Batch<T> objective(batch, coef);
              train::ScaledObjective<typename Loss::template Batch<T>> scaled{objective, p.loss_scale};
              if constexpr (routed)  // an MoE model's aux loss: this micro-batch's share of the rows
                net_.forward_objective(buf_.params(), buf_.grads(), batch.tokens, scaled,
                                       p.loss_scale * static_cast<double>(n) / static_cast<double>(all_kept));
              else
                net_.forward_objective(buf_.params(), buf_.grads(), batch.tokens, scaled);
              net_.backward(buf_.params(), buf_.grads());
              add(objective.stats());
            } else if (forwards_in_step_) {
              serve_experts(buf_.params(), buf_.grads());
            }
            // ZeRO-2: every micro-batch's gradient into the shards (a collective: a rank with fewer
            // rows joins with zero gradients)
            if constexpr (requires { buf_.after_backward(); }) buf_.after_backward();
          }
        }
        if (const std::optional<double> grad_norm = scaler_.unscale_and_clip(buf_, cfg_.max_grad_norm)) {
          p.grad_norm = *grad_norm;
          buf_.step(opt_, s.lr, ++updates_);
        } else {  // AdamW's t (updates_) counts the updates made: a skipped pass made none
          p.skipped = true;
          p.grad_norm = std::numeric_limits<double>::quiet_NaN();
        }
        train::balance_experts(net_, buf_);  // an MoE model's gates, on every rank's load
        const double here[per_pass] = {loss, static_cast<double>(tokens), ratio, clipped, kl, entropy};
        std::copy_n(here, per_pass, pass_sums.begin() + static_cast<std::ptrdiff_t>(per_pass * static_cast<std::size_t>(pass)));
        s.passes.push_back(p);
      }
      if constexpr (distributed) buf_.sum_across_ranks(std::span<double>(pass_sums));
      if constexpr (pipelined) buf_.sum_over_group(std::span<double>(pass_sums));  // the last stage's, to every stage
      s.rollout_logp_gap = pass_sums[at_gap];
      for (int k = 1; k < ranks_; ++k)
        s.rollout_logp_gap = std::max(s.rollout_logp_gap, pass_sums[at_gap + static_cast<std::size_t>(k)]);
      for (std::size_t i = 0; i < s.passes.size(); ++i) {
        GrpoPassStats& p = s.passes[i];
        const double* v = pass_sums.data() + per_pass * i;
        p.loss = v[0];
        p.tokens = static_cast<index_t>(v[1]);
        if (p.tokens > 0) {
          const auto k = v[1];
          p.mean_ratio = v[2] / k;
          p.clip_fraction = v[3] / k;
          p.kl = v[4] / k;
          p.entropy = v[5] / k;
        }
      }
      s.updated = true;
      const double m = static_cast<double>(s.passes.size());
      s.mean_ratio = 0;
      for (const GrpoPassStats& p : s.passes) {
        s.loss += p.loss / m;
        s.mean_ratio += p.mean_ratio / m;
        s.clip_fraction += p.clip_fraction / m;
        s.kl += p.kl / m;
        s.entropy += p.entropy / m;
        s.grad_norm += p.grad_norm / m;
      }
      s.seconds.update = seconds(t_logp, Clock::now());
    }
    ++step_;
    s.seconds.rollout = seconds(t_start, t_rollout);
    s.seconds.score = seconds(t_rollout, t_score);
    s.seconds.total = seconds(t_start, Clock::now());
    return s;
  }

 private:
  /// A policy whose buffers sum the step's scalars over ranks (parallel::DataParallel, parallel::Zero).
  static constexpr bool distributed = requires(Buffers& b, std::span<double> v) { b.sum_across_ranks(v); };
  /// A pipeline stage's buffers (parallel::Pipeline): the passes run in their 1F1B schedule.
  static constexpr bool pipelined = requires { Buffers::pipelined; };
  /// An MoE model: its gates balance after each update, and its aux loss is weighted per micro-batch.
  static constexpr bool routed = train::BalancesExperts<Net, T>;

  static Buffers make_buffers(const Net& net, std::span<const T> initial, const Par& parallel) {
    REASON_CHECK(initial.size() == net.num_params(), "GrpoTrainer: ", initial.size(),
                 " initial parameters for a model of ", net.num_params());
    return parallel.template make_buffers<Opt>(net, initial, /*with_reference=*/true);
  }

  /// The rollout of this rank's prompts; under a distributed policy its rows draw from the
  /// streams of their global rows (first_row on).
  infer::Rollouts sample(std::span<const std::vector<std::int32_t>> prompts, const infer::RolloutConfig& rc,
                         index_t first_row) {
    if constexpr (distributed)
      return infer::rollout(net_, buf_.params(), prompts, detail::RowOffset<Sampler>{&sampler_, first_row}, rc);
    else
      return infer::rollout(net_, buf_.params(), prompts, sampler_, rc);
  }

  static double sum_of(std::span<const float> v) {
    double s = 0;
    for (float x : v) s += static_cast<double>(x);
    return s;
  }
  static double squared_deviations(std::span<const float> v, double mean) {
    double s = 0;
    for (float x : v) s += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean);
    return s;
  }

  template <class E>
  View<const E, 2> rows_view(const E* data, index_t r0, index_t n) const {
    return make_view(data + r0 * seq_, n, seq_);
  }

  /// tokens_ [R, L] (padded with <pad>), mask_ [R, L], advantages_ [R] of the kept rows.
  void build_batch(const std::vector<std::vector<std::int32_t>>& prompts, const infer::Rollouts& ro,
                   const std::vector<index_t>& keep, const std::vector<float>& adv) {
    const auto R = static_cast<index_t>(keep.size());
    seq_ = 0;
    for (index_t r : keep) {
      const infer::Completion& c = ro.rows[static_cast<std::size_t>(r)];
      seq_ = std::max(seq_, static_cast<index_t>(prompts[static_cast<std::size_t>(c.prompt)].size() + c.tokens.size()));
    }
    tokens_.assign(static_cast<std::size_t>(R * seq_), data::Tokenizer::pad);
    mask_.assign(static_cast<std::size_t>(R * seq_), 0);
    advantages_.resize(static_cast<std::size_t>(R));
    completion_tokens_ = 0;
    for (index_t b = 0; b < R; ++b) {
      const infer::Completion& c = ro.rows[static_cast<std::size_t>(keep[static_cast<std::size_t>(b)])];
      const auto& p = prompts[static_cast<std::size_t>(c.prompt)];
      std::int32_t* row = tokens_.data() + b * seq_;
      std::copy(p.begin(), p.end(), row);
      std::copy(c.tokens.begin(), c.tokens.end(), row + p.size());
      // position t predicts token t + 1: the completion's tokens are predicted from P - 1 .. P + n - 2
      const auto P = static_cast<index_t>(p.size()), n = static_cast<index_t>(c.tokens.size());
      for (index_t t = P - 1; t < P + n - 1; ++t) mask_[static_cast<std::size_t>(b * seq_ + t)] = 1;
      completion_tokens_ += n;
      advantages_[static_cast<std::size_t>(b)] = static_cast<T>(adv[static_cast<std::size_t>(keep[static_cast<std::size_t>(b)])]);
    }
  }

  /// out[r0 .. r0 + n) rows <- log pi(sampled token) under `params`, no gradients. A pipeline stage
  /// runs its part of the forward from `input` (the previous stage's output); the last one records.
  void record_logps(const T* params, index_t r0, index_t n, std::vector<T>& out, View<const T, 2> input = {}) {
    TokenLogProbs<T> rec(rows_view(tokens_.data(), r0, n), rows_view(mask_.data(), r0, n),
                         make_view(out.data() + r0 * seq_, n, seq_));
    if constexpr (pipelined)
      net_.stage_forward_objective(params, nullptr, rows_view(tokens_.data(), r0, n), rec, input);
    else
      net_.forward_objective(params, nullptr, rows_view(tokens_.data(), r0, n), rec);
  }

  /// Expert parallel, this rank out of rows in a forward the others run: a forward of zero
  /// sequences (and with grads its backward), which serves this rank's experts to their rows.
  void serve_experts(const T* params, T* grads) {
    static constexpr std::int32_t none = 0;
    const auto no_rows = make_view(&none, 0, 1);
    const auto unused = [](index_t, View<T, 2>) { return 0.0; };  // (no logits: never called)
    if constexpr (routed)
      net_.forward_objective(params, grads, no_rows, unused, 0.0);
    else
      net_.forward_objective(params, grads, no_rows, unused);
    if (grads != nullptr) net_.backward(params, grads);
  }

  /// max |log p recorded while sampling - log p_old recomputed by the training forward|: the
  /// decode path and the training path must give the same distribution, to rounding.
  double rollout_gap(const std::vector<std::vector<std::int32_t>>& prompts, const infer::Rollouts& ro,
                     const std::vector<index_t>& keep) const {
    double gap = 0;
    for (std::size_t b = 0; b < keep.size(); ++b) {
      const infer::Completion& c = ro.rows[static_cast<std::size_t>(keep[b])];
      const auto P = static_cast<index_t>(prompts[static_cast<std::size_t>(c.prompt)].size());
      for (std::size_t j = 0; j < c.logps.size(); ++j) {
        const auto t = static_cast<std::size_t>(static_cast<index_t>(b) * seq_ + P - 1 + static_cast<index_t>(j));
        gap = std::max(gap, std::abs(c.logps[j] - static_cast<double>(logp_old_[t])));
      }
    }
    return gap;
  }

  /// The sum over this rank's rows of each component of a reward::Weighted (none for a plain reward).
  std::vector<double> component_sums(const std::vector<std::string>& texts, const std::vector<data::Problem>& samples) const {
    std::vector<double> sums;
    if constexpr (detail::WeightedTraits<Reward>::value) {
      auto sum_of_part = [&](const auto& r) {
        double sum = 0;
        for (std::size_t i = 0; i < texts.size(); ++i) sum += static_cast<double>(r.score(texts[i], samples[i]));
        return sum;
      };
      std::apply([&](const auto&... parts) { (sums.push_back(sum_of_part(parts)), ...); }, reward_.rewards);
    }
    return sums;
  }

  /// The mean of each component of a reward::Weighted (or of the reward itself), and accuracy,
  /// from the components' sums over `rows` rows.
  void set_components(std::span<const double> sums, double rows, GrpoStepStats& s) const {
    if constexpr (detail::WeightedTraits<Reward>::value) {
      std::size_t i = 0;
      std::apply(
          [&](const auto&... parts) {
            (
                [&](const auto& part) {
                  using Part = std::remove_cvref_t<decltype(part)>;
                  const double m = sums[i++] / rows;
                  s.components.push_back({Part::name, m});
                  if constexpr (std::same_as<Part, reward::Accuracy>) s.accuracy = m;
                }(parts),
                ...);
          },
          reward_.rewards);
    } else {
      s.components.push_back({Reward::name, s.reward_mean});
      if constexpr (std::same_as<Reward, reward::Accuracy>) s.accuracy = s.reward_mean;
    }
  }

  Net& net_;
  Opt opt_;
  Sampler sampler_;
  Reward reward_;
  GrpoTrainerConfig cfg_;
  Buffers buf_;
  train::DynamicLossScaler scaler_;
  int rank_ = 0, ranks_ = 1;
  bool forwards_in_step_ = false;  // expert parallel: every forward is a collective of the ranks
  std::int64_t step_ = 0, updates_ = 0;
  index_t reserved_batch_ = 0, reserved_seq_ = 0;
  // The current step's batch: [R, seq_] tokens, mask, logp_old, logp_ref; [R] advantages.
  index_t seq_ = 0, completion_tokens_ = 0;
  std::vector<std::int32_t> tokens_;
  std::vector<std::uint8_t> mask_;
  std::vector<T> logp_old_, logp_ref_, advantages_;
};

}  // namespace reason::rl
