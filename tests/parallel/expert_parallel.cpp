// Expert parallelism under mpirun (-np 1, 2, 4): an MoE Transformer whose routed experts are spread
// over the ranks (moe/moe.hpp, model::Sharding{.expert}) against one process on the whole batch.
//   - one layer alone: rank r holds experts [r E/ep, (r + 1) E/ep) under their global names, and they
//     receive exactly the rows the whole layer keeps for them;
//   - forward and backward: rank r's tokens are rows [r B/ep, (r + 1) B/ep) of one batch; the loss
//     summed over the ranks, the logits, the router load and the gradients (each rank's placed at
//     its unsplit positions by the shard plan, the replicated tensors' parts summed) equal one
//     process's; decoding likewise; the collectives of a forward and a backward are counted;
//   - ranks without rows: a forward of zero sequences still serves the rank's experts; generation
//     (rollouts, greedy) runs in lockstep over ranks with different numbers of prompts;
//   - training: Trainer<Net, AdamW, ExpertParallel<...>> for 3 steps of 2 micro-batches, each rank on
//     its share of the batch, against one process's Trainer on the whole batch: the losses, the
//     gathered parameters, the balancing biases (exactly), and the collectives of a step;
//   - data parallelism of the same model (DataParallel: every rank all of it, its share of the batch)
//     equals one process too, balancing biases exactly (the trainer sums the expert load over the ranks);
//   - each rank holds 1/ep of the experts' parameters and optimizer state (layouts and buffers);
//   - experts that do not divide over the ranks are refused with the numbers (6 experts at 4 ranks).
// At one rank the split model runs through a one-rank group and equals the unsplit one bit for bit.
//
// Tolerances (ep > 1): the ranks' parts of a replicated tensor's gradient (router, shared experts,
// attention, norms, embedding, LM head) are summed in another order than one process's GEMM over
// the whole batch, and the loss sum likewise; everything else is the same arithmetic on the same
// rows (each expert's rows reach it in the order one process has them). So differences are a few
// fp32 roundings of the largest terms: |dg| <= 1e-5 max|g|, |d loss| <= 1e-6 |loss| (float32 eps
// is 1.2e-7; a sum of B T terms loses up to ~log2(B T) ulps). After 3 AdamW steps the parameters
// are within 2e-5 max|p|, as the data-parallel tests require (train_parallel.cpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/linear/dense.hpp"
#include "reason/model/sharding.hpp"
#include "reason/model/transformer.hpp"
#include "reason/moe/moe.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/counting.hpp"
#include "reason/parallel/data_parallel.hpp"
#include "reason/parallel/model_parallel.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"
#include "reason/parallel/shard_group.hpp"
#include "reason/train/trainer.hpp"
#include "parallel/fixtures.hpp"
#include "parallel/harness.hpp"
#include "parallel/split_checkpoint.hpp"
#include "support/training_fixtures.hpp"

using namespace reason;
using test::max_abs;
using test::max_abs_diff;
using test::sci;

namespace {

using Attn = attention::MultiHead<attention::Shape{.head_dim = 8}>;
// DeepSeek-V3's recipe (examples/common/ffn_choice.hpp, `moe`): sigmoid top-2 of 8 experts, one shared
// expert, aux-loss-free bias balancing (gamma 0.01, so three steps move the biases visibly), no drops.
using Gate = moe::SigmoidTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::NoDrop, moe::BiasBalance<0.01f>>;
using Ffn = moe::MoE<Gate, ffn::SwiGLU, moe::Shared<1>>;
using Net = model::Transformer<Attn, Ffn>;
// Six experts: not a multiple of 4 ranks.
using Gate6 = moe::SigmoidTopK<moe::GateConfig{.experts = 6, .top_k = 2}, moe::NoDrop, moe::BiasBalance<0.01f>>;
using Net6 = model::Transformer<Attn, moe::MoE<Gate6, ffn::SwiGLU, moe::Shared<1>>>;

using Comm = parallel::MpiCommunicator;
using Counting = parallel::CountingCommunicator<Comm&>;
using Group = parallel::ShardGroupOf<Counting, float>;
using parallel::Collective;
using parallel::Tally;

constexpr index_t rows_per_rank = 2;  // sequences per rank and micro-batch
constexpr int micro_batches = 2;
constexpr std::int64_t steps = 3;
constexpr std::size_t bucket_bytes = 16 << 10;
constexpr int moe_layers = 2;

/// The shared small model with three layers: one dense, then two MoE layers of 8 experts 16 wide.
model::Config moe_config() {
  model::Config c = test::small_model_config();
  c.num_layers = 3;
  c.first_dense_layers = 1;
  c.moe_intermediate_size = 16;
  return c;
}

train::TrainConfig train_config(index_t batch) {
  train::TrainConfig tc = test::small_train(steps, micro_batches, 1, 5);
  tc.batch = batch;
  return tc;
}

bool bit_equal(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

bool is_expert(const ParamInfo& p) { return p.name.find(".experts.") != std::string::npos; }
bool is_bias(const ParamInfo& p) { return p.name.find(".e_score_correction_bias") != std::string::npos; }

/// Starting parameters of the unsplit model, with balancing biases that take part in the routing.
std::vector<float> full_params(const ParamLayout& full, std::uint64_t seed) {
  std::vector<float> p(full.size());
  full.initialize(std::span<float>(p), seed);
  for (const ParamInfo& info : full.params())
    if (is_bias(info))
      for (std::size_t i = 0; i < info.numel; ++i) p[info.offset + i] = 0.02f * (static_cast<float>(i) - 3.5f);
  return p;
}

/// A [B, T] batch of random tokens with about a quarter of the targets masked, the same on every rank.
struct Data {
  std::vector<std::int32_t> tokens, targets;
};
Data random_batch(index_t batch, index_t seq, index_t vocab, std::uint64_t seed) {
  Philox rng(seed, 11);
  Data d;
  for (index_t i = 0; i < batch * seq; ++i) {
    d.tokens.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
    d.targets.push_back(rng.below(4) == 0 ? -1 : static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
  }
  return d;
}

/// Every rank's values placed at their unsplit positions and summed over the ranks: the unsplit
/// model's gradient (an expert's tensor is on one rank; a replicated tensor's parts add up).
std::vector<float> gather_sum(Comm& world, const model::ShardPlan& plan, std::span<const float> local) {
  std::vector<float> full(plan.full_layout().size(), 0.0f);
  plan.place(local, std::span<float>(full));
  world.all_reduce(std::span<float>(full), parallel::ReduceOp::sum);
  return full;
}

// ---- one MoE layer alone -------------------------------------------------------------------------

/// The module under a group: which experts a rank holds, and that each rank's experts receive exactly
/// the rows the whole layer keeps for them, from every rank's tokens.
void check_layer(test::MpiHarness& h, Comm& world) {
  using Module = Ffn::Module<float, linear::Dense>;
  const int ep = world.size(), rank = world.rank(), per_rank = Ffn::experts / ep;
  const index_t c = 32, n = 16, total = n * ep;
  const ffn::Dims d{.width = c, .hidden = 0, .init_std = 0.5, .out_std = 0.1, .expert_hidden = 16};
  parallel::ShardGroupOf<Comm, float> group(world);
  ParamLayout whole_layout, layout;
  const Module whole(whole_layout, "moe", d), mine(layout, "moe", d, &group);
  h.check(mine.first_expert() == rank * per_rank && mine.local_experts() == per_rank && mine.expert_group() == &group,
          "rank " + std::to_string(rank) + " holds experts [" + std::to_string(mine.first_expert()) + ", +" +
              std::to_string(mine.local_experts()) + ")");
  std::size_t expert_elems = 0;
  for (const ParamInfo& p : whole_layout.params()) expert_elems += is_expert(p) ? p.numel : 0;
  h.check(layout.size() == whole_layout.size() - expert_elems + expert_elems / static_cast<std::size_t>(ep) &&
              layout.find("moe.experts." + std::to_string(rank * per_rank) + ".down.weight").numel > 0,
          "the local experts keep their global names; the gate and shared experts are whole");
  (void)mine.expert(rank * per_rank);
  if (ep > 1) h.expect_error_containing([&] { (void)mine.expert((rank + 1) % ep * per_rank); }, "this rank holds experts");

  // The whole layer's parameters, and this rank's by name.
  std::vector<float> full(whole_layout.size()), local(layout.size());
  whole_layout.initialize(std::span<float>(full), h.seed() + 3);
  for (const ParamInfo& p : layout.params())
    std::copy_n(full.begin() + static_cast<std::ptrdiff_t>(whole_layout.find(p.name).offset), p.numel,
                local.begin() + static_cast<std::ptrdiff_t>(p.offset));
  std::vector<float> x(static_cast<std::size_t>(total * c));
  Philox rng(h.seed(), 17);
  for (float& v : x) v = 2.0f * rng.uniform() - 1.0f;

  Arena whole_arena(Arena::measure([&](Arena& a) { (void)whole.carve(a, total); }));
  Arena arena(Arena::measure([&](Arena& a) { (void)mine.carve(a, n); }));
  const auto ws = whole.carve(whole_arena, total);
  const auto s = mine.carve(arena, n);
  std::vector<float> y_whole(x.size()), y(static_cast<std::size_t>(n * c));
  whole.forward(full.data(), make_view(static_cast<const float*>(x.data()), total, c), ws, make_view(y_whole.data(), total, c));
  mine.forward(local.data(), make_view(static_cast<const float*>(x.data()) + rank * n * c, n, c), s, make_view(y.data(), n, c));
  const auto want = std::span<const float>(y_whole).subspan(static_cast<std::size_t>(rank * n * c), y.size());
  const double diff = max_abs_diff(y, want);
  h.check(ep == 1 ? bit_equal(y, want) : diff <= 1e-5 * max_abs(want), "the layer's output differs by " + sci(diff));

  double wanted = 0;  // the rows the whole layer keeps for this rank's experts
  const moe::RouterStats all = whole.stats(ws);
  for (int e = mine.first_expert(); e < mine.first_expert() + per_rank; ++e) wanted += all.kept[static_cast<std::size_t>(e)];
  h.check(static_cast<double>(mine.received_rows()) == wanted,
          "received " + std::to_string(mine.received_rows()) + " rows, the whole layer keeps " + sci(wanted) + " for them");
  std::int64_t bytes[2] = {static_cast<std::int64_t>(mine.exchange_bytes()), mine.received_rows()};
  std::int64_t most[2] = {bytes[0], bytes[1]};
  world.all_reduce(std::span<std::int64_t>(most), parallel::ReduceOp::max);
  if (rank == 0)
    std::printf("one layer, %d rank(s): %d experts a rank; rank 0 received %lld of the %lld kept rows (the most: %lld), "
                "its exchange buffers %lld bytes (the most: %lld)\n",
                ep, per_rank, static_cast<long long>(bytes[1]), static_cast<long long>(total * Gate::top_k),
                static_cast<long long>(most[1]), static_cast<long long>(bytes[0]), static_cast<long long>(most[0]));
}

// ---- forward and backward of a whole model -------------------------------------------------------

void check_forward_backward(test::MpiHarness& h, Comm& world) {
  const int ep = world.size(), rank = world.rank();
  const bool one = ep == 1;  // one rank: bit for bit
  const model::Config mc = moe_config();
  const index_t seq = 12, batch = rows_per_rank * ep, n_local = rows_per_rank * seq;
  const index_t vocab = mc.vocab_size;

  Net ref(mc);
  Counting counted(world);
  Group group(counted);
  Net net(mc, model::Sharding<float>{.expert = &group});
  h.check(net.sharded() && net.full_layout().size() == ref.layout().size(), "the split model's full layout is the unsplit one");

  const std::vector<float> full = full_params(ref.layout(), h.seed());
  std::vector<float> local(net.layout().size());
  net.shard_plan().scatter(std::span<const float>(full), std::span<float>(local));
  const Data d = random_batch(batch, seq, vocab, h.seed());
  index_t targets = 0;
  for (std::int32_t t : d.targets) targets += t >= 0;
  const float scale = 1.0f / static_cast<float>(targets);

  // One process on the whole batch.
  ref.reserve(batch, seq);
  std::vector<float> ref_grads(full.size(), 0.0f);
  const auto r = ref.forward(full.data(), ref_grads.data(), make_view(d.tokens.data(), batch, seq),
                             make_view(d.targets.data(), batch, seq), scale);
  ref.backward(full.data(), ref_grads.data());
  const auto ref_stats = ref.take_router_stats();

  // This rank on its rows, the collectives counted.
  const auto first = static_cast<std::size_t>(rank * n_local);
  net.reserve(rows_per_rank, seq);
  std::vector<float> grads(local.size(), 0.0f);
  counted.reset();
  const auto mine = net.forward(local.data(), grads.data(), make_view(d.tokens.data() + first, rows_per_rank, seq),
                                make_view(d.targets.data() + first, rows_per_rank, seq), scale);
  const Tally fwd_a2a = counted.tally(Collective::all_to_all), fwd_a2av = counted.tally(Collective::all_to_all_v);
  net.backward(local.data(), grads.data());
  const Tally both_a2av = counted.tally(Collective::all_to_all_v);
  const std::string report = counted.report();
  // Per MoE layer: forward = 1 all_to_all (counts) + 2 all_to_all_v (dispatch, combine); backward =
  // 2 all_to_all_v (d outputs there, d inputs back); nothing else.
  h.check(fwd_a2a.calls == moe_layers && fwd_a2av.calls == 2 * moe_layers, "forward: " + report);
  h.check(counted.tally(Collective::all_to_all).calls == moe_layers &&
              counted.tally(Collective::all_to_all_v).calls == 4 * moe_layers && counted.total().calls == 5 * moe_layers,
          "forward + backward: " + report);
  // The counts travel as int64 blocks of E/ep per rank: E int64 per layer.
  h.check(fwd_a2a.bytes == moe_layers * Ffn::experts * static_cast<std::int64_t>(sizeof(std::int64_t)), report);

  // The loss over every rank's tokens.
  double sums[2] = {mine.loss_sum, static_cast<double>(mine.count)};
  world.all_reduce(std::span<double>(sums), parallel::ReduceOp::sum);
  const double loss_diff = std::abs(sums[0] - r.loss_sum);
  h.check(sums[1] == static_cast<double>(r.count), "target count " + std::to_string(sums[1]) + ", one process " +
                                                      std::to_string(r.count));
  h.check(one ? sums[0] == r.loss_sum : loss_diff <= 1e-6 * std::abs(r.loss_sum),
          "loss sum " + sci(sums[0]) + ", one process " + sci(r.loss_sum));

  // The router load: each rank's own, summing to one process's.
  const auto stats = net.take_router_stats();
  for (int l = 0; l < moe_layers; ++l) {
    std::vector<double> load = stats[static_cast<std::size_t>(l)].load;
    h.check(stats[static_cast<std::size_t>(l)].assignments() == static_cast<double>(n_local * Gate::top_k),
            "layer " + std::to_string(l) + ": a rank's stats count its own tokens' assignments");
    world.all_reduce(std::span<double>(load), parallel::ReduceOp::sum);
    h.check(load == ref_stats[static_cast<std::size_t>(l)].load, "layer " + std::to_string(l) + ": summed load differs");
  }

  // The gradients, assembled.
  const std::vector<float> g = gather_sum(world, net.shard_plan(), grads);
  const double gdiff = max_abs_diff(g, ref_grads), gscale = max_abs(ref_grads);
  h.check(one ? bit_equal(g, ref_grads) : gdiff <= 1e-5 * gscale,
          "gradients differ from one process's by " + sci(gdiff) + " (max |g| " + sci(gscale) + ")");
  double expert_diff = 0;  // the experts' own gradients: complete on their rank
  for (const ParamInfo& p : ref.layout().params())
    if (is_expert(p))
      expert_diff = std::max(expert_diff, max_abs_diff(std::span<const float>(g).subspan(p.offset, p.numel),
                                                       std::span<const float>(ref_grads).subspan(p.offset, p.numel)));

  // Logits (an evaluation forward: no drops, the same exchange).
  std::vector<float> ref_logits(static_cast<std::size_t>(batch * seq * vocab));
  std::vector<float> logits(static_cast<std::size_t>(n_local * vocab));
  ref.logits(full.data(), make_view(d.tokens.data(), batch, seq), make_view(ref_logits.data(), batch * seq, vocab));
  counted.reset();
  net.logits(local.data(), make_view(d.tokens.data() + first, rows_per_rank, seq), make_view(logits.data(), n_local, vocab));
  h.check(counted.tally(Collective::all_to_all_v).calls == 2 * moe_layers, "logits: " + counted.report());
  const auto ref_mine = std::span<const float>(ref_logits).subspan(first * static_cast<std::size_t>(vocab), logits.size());
  const double ldiff = max_abs_diff(logits, ref_mine), lscale = max_abs(ref_mine);
  h.check(one ? bit_equal(logits, ref_mine) : ldiff <= 1e-5 * lscale,
          "logits differ by " + sci(ldiff) + " (max |logit| " + sci(lscale) + ")");

  double diffs[3] = {gdiff, ldiff, expert_diff};
  world.all_reduce(std::span<double>(diffs), parallel::ReduceOp::max);
  if (rank == 0)
    std::printf("forward/backward, %d rank(s): loss sum %+.3e off (of %.4f); gradients %.3e off (max |g| %.3e; experts' "
                "own %.3e); logits %.3e off (max %.3f); per MoE layer, forward + backward: %lld all_to_all, "
                "%lld all_to_all_v\n",
                ep, sums[0] - r.loss_sum, r.loss_sum, diffs[0], gscale, diffs[2], diffs[1], lscale,
                static_cast<long long>(fwd_a2a.calls / moe_layers),
                static_cast<long long>(both_a2av.calls / moe_layers));
}

/// Rank 0 has no rows (an expert-parallel rank whose share of a step is empty, e.g. all its GRPO groups
/// dropped): its forward and backward of zero sequences still serve its experts to the other ranks'
/// tokens, so they equal one process on the other ranks' rows; rank 0's loss is 0, its gradients
/// only its experts' (from the rows it received) and nothing from its own. At one rank: nothing to
/// compute, loss 0 and zero gradients, the same collectives.
void check_rank_without_rows(test::MpiHarness& h, Comm& world) {
  const int ep = world.size(), rank = world.rank();
  const model::Config mc = moe_config();
  const index_t seq = 10, vocab = mc.vocab_size;
  const index_t mine_rows = rank == 0 ? 0 : rows_per_rank, batch = rows_per_rank * (ep - 1);
  Counting counted(world);
  Group group(counted);
  Net net(mc, model::Sharding<float>{.expert = &group});
  Net ref(mc);
  const std::vector<float> full = full_params(ref.layout(), h.seed() + 5);
  std::vector<float> local(net.layout().size());
  net.shard_plan().scatter(std::span<const float>(full), std::span<float>(local));
  const Data d = random_batch(std::max<index_t>(batch, 1), seq, vocab, h.seed() + 6);
  const auto first = static_cast<std::size_t>(std::max(rank - 1, 0) * rows_per_rank * seq);
  const float scale = 0.01f;

  net.reserve(rows_per_rank, seq);
  std::vector<float> grads(local.size(), 0.0f);
  counted.reset();
  const auto mine = net.forward(local.data(), grads.data(), make_view(d.tokens.data() + first, mine_rows, seq),
                                make_view(d.targets.data() + first, mine_rows, seq), scale);
  net.backward(local.data(), grads.data());
  h.check(counted.tally(Collective::all_to_all).calls == moe_layers &&
              counted.tally(Collective::all_to_all_v).calls == 4 * moe_layers,
          "a rank without rows joins every exchange: " + counted.report());
  if (rank == 0) {
    h.check(mine.count == 0 && mine.loss_sum == 0.0, "no rows, no loss: " + sci(mine.loss_sum));
    bool only_experts = true;  // its replicated tensors' gradients are its own tokens' (none)
    for (const ParamInfo& p : net.layout().params())
      if (!is_expert(p))
        only_experts = only_experts && max_abs(std::span<const float>(grads).subspan(p.offset, p.numel)) == 0.0;
    h.check(only_experts, "a rank without rows has gradients outside its experts");
  }
  const std::vector<float> g = gather_sum(world, net.shard_plan(), grads);
  double sums[2] = {mine.loss_sum, static_cast<double>(mine.count)};
  world.all_reduce(std::span<double>(sums), parallel::ReduceOp::sum);
  if (ep == 1) {
    h.check(sums[1] == 0 && max_abs(g) == 0.0, "one rank without rows: no loss, no gradients");
    return;
  }
  ref.reserve(batch, seq);
  std::vector<float> ref_grads(full.size(), 0.0f);
  const auto r = ref.forward(full.data(), ref_grads.data(), make_view(d.tokens.data(), batch, seq),
                             make_view(d.targets.data(), batch, seq), scale);
  ref.backward(full.data(), ref_grads.data());
  const double gdiff = max_abs_diff(g, ref_grads), gscale = max_abs(ref_grads);
  h.check(sums[1] == static_cast<double>(r.count) && std::abs(sums[0] - r.loss_sum) <= 1e-6 * std::abs(r.loss_sum),
          "loss sum " + sci(sums[0]) + ", one process on the other ranks' rows " + sci(r.loss_sum));
  h.check(gdiff <= 1e-5 * gscale, "gradients differ from one process's by " + sci(gdiff) + " (max |g| " + sci(gscale) + ")");

  // Logits too (an evaluation forward): rank 0 asks for none.
  std::vector<float> logits(static_cast<std::size_t>(std::max<index_t>(mine_rows * seq, 1) * vocab));
  std::vector<float> ref_logits(static_cast<std::size_t>(batch * seq * vocab));
  ref.logits(full.data(), make_view(d.tokens.data(), batch, seq), make_view(ref_logits.data(), batch * seq, vocab));
  net.logits(local.data(), make_view(d.tokens.data() + first, mine_rows, seq), make_view(logits.data(), mine_rows * seq, vocab));
  if (rank > 0) {
    const auto want = std::span<const float>(ref_logits).subspan(first * static_cast<std::size_t>(vocab), logits.size());
    h.check(max_abs_diff(logits, want) <= 1e-5 * max_abs(want), "logits differ by " + sci(max_abs_diff(logits, want)));
  }
  if (rank == 0) std::printf("rank 0 without rows, %d ranks: gradients %.3e off (max |g| %.3e)\n", ep, gdiff, gscale);
}

/// The same with gates whose aux loss is batch-wise (Switch) or per sequence: a rank without rows has
/// no aux loss (rather than 0/0, or a refusal that would leave the other ranks waiting in the
/// exchange), counts no router statistics, and every rank's gradients are finite.
template <class AuxGate>
void check_rank_without_rows_aux_loss(test::MpiHarness& h, Comm& world, const char* name) {
  using AuxNet = model::Transformer<Attn, moe::MoE<AuxGate, ffn::SwiGLU, moe::Shared<1>>>;
  const model::Config mc = moe_config();
  const index_t seq = 6, rows = world.rank() == 0 ? 0 : rows_per_rank;
  parallel::ShardGroupOf<Comm, float> group(world);
  AuxNet net(mc, model::Sharding<float>{.expert = &group});
  const std::vector<float> params = net.initial_params(h.seed() + 8);
  const Data d = random_batch(rows_per_rank, seq, mc.vocab_size, h.seed() + 9);
  net.reserve(rows_per_rank, seq);
  std::vector<float> grads(params.size(), 0.0f);
  const auto r = net.forward(params.data(), grads.data(), make_view(d.tokens.data(), rows, seq),
                             make_view(d.targets.data(), rows, seq), 0.01f);
  net.backward(params.data(), grads.data());
  bool finite = std::isfinite(r.loss_sum);
  for (float g : grads) finite = finite && std::isfinite(g);
  for (const moe::RouterStats& st : net.take_router_stats())
    finite = finite && std::isfinite(st.aux_loss) && (rows > 0 || st.assignments() == 0.0);
  h.check(finite, std::string(name) + ": rank " + std::to_string(world.rank()) + " (" + std::to_string(rows) +
                      " rows): non-finite loss, gradients or router statistics, or statistics of no tokens");
}

// ---- decoding ------------------------------------------------------------------------------------

void check_decoding(test::MpiHarness& h, Comm& world) {
  const int ep = world.size(), rank = world.rank();
  const bool one = ep == 1;
  const model::Config mc = moe_config();
  const index_t vocab = mc.vocab_size, positions = 6;
  // One sequence per rank: with 2 of 8 experts chosen per token, some ranks' experts get no row
  // in a step (zero counts), and every rank still takes part in each exchange.
  const index_t per_rank = 1, batch = per_rank * ep;
  Net ref(mc);
  Counting counted(world);
  Group group(counted);
  Net net(mc, model::Sharding<float>{.expert = &group});
  const std::vector<float> full = full_params(ref.layout(), h.seed() + 1);
  std::vector<float> local(net.layout().size());
  net.shard_plan().scatter(std::span<const float>(full), std::span<float>(local));
  const Data d = random_batch(batch, positions, vocab, h.seed() + 2);

  auto ref_state = ref.make_decode_state(batch, positions);
  auto state = net.make_decode_state(per_rank, positions);
  std::vector<float> ref_logits(static_cast<std::size_t>(batch * vocab)), logits(static_cast<std::size_t>(per_rank * vocab));
  std::vector<std::int32_t> step_tokens(static_cast<std::size_t>(batch));
  double worst = 0, scale = 0;
  bool equal = true;
  counted.reset();
  for (index_t pos = 0; pos < positions; ++pos) {
    for (index_t b = 0; b < batch; ++b)
      step_tokens[static_cast<std::size_t>(b)] = d.tokens[static_cast<std::size_t>(b * positions + pos)];
    ref.decode_step(full.data(), make_view(static_cast<const std::int32_t*>(step_tokens.data()), batch), pos, ref_state,
                    make_view(ref_logits.data(), batch, vocab));
    net.decode_step(local.data(), make_view(static_cast<const std::int32_t*>(step_tokens.data()) + rank * per_rank, per_rank),
                    pos, state, make_view(logits.data(), per_rank, vocab));
    const auto ref_mine =
        std::span<const float>(ref_logits).subspan(static_cast<std::size_t>(rank * per_rank * vocab), logits.size());
    worst = std::max(worst, max_abs_diff(logits, ref_mine));
    scale = std::max(scale, max_abs(ref_mine));
    equal = equal && bit_equal(logits, ref_mine);
  }
  h.check(one ? equal : worst <= 1e-5 * scale, "decoded logits differ by " + sci(worst) + " (max " + sci(scale) + ")");
  h.check(counted.tally(Collective::all_to_all).calls == positions * moe_layers &&
              counted.tally(Collective::all_to_all_v).calls == 2 * positions * moe_layers,
          "decoding: " + counted.report());
  world.all_reduce(std::span<double>(&worst, 1), parallel::ReduceOp::max);
  if (rank == 0)
    std::printf("decoding, %d rank(s), %lld sequence(s) each: logits %.3e off over %lld positions; %s\n", ep,
                static_cast<long long>(per_rank), worst, static_cast<long long>(positions), counted.report().c_str());
}

/// Generation in lockstep (infer/lockstep.hpp): the ranks hold different numbers of prompts (rank 0
/// none at ep > 1, rank r r + 1 of them otherwise, of different lengths and limits), so they finish
/// at different steps and rollout's chunks of 2 rows differ in number; every rank decodes its own,
/// joining the others' decode steps until all are done. Greedy rollouts and generate_greedy equal one
/// process's on all the prompts, and every rank makes the same collectives.
void check_lockstep_generation(test::MpiHarness& h, Comm& world) {
  const int ep = world.size(), rank = world.rank();
  const model::Config mc = moe_config();
  auto prompts_of = [&](int r) { return r == 0 && ep > 1 ? 0 : r + 1; };
  std::vector<std::vector<std::int32_t>> all;
  index_t first = 0;  // this rank's first prompt in `all`
  Philox rng(h.seed(), 23);
  for (int r = 0; r < ep; ++r) {
    if (r == rank) first = static_cast<index_t>(all.size());
    for (int i = 0; i < prompts_of(r); ++i) {
      std::vector<std::int32_t> p(2 + rng.below(5));
      for (std::int32_t& t : p) t = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(mc.vocab_size)));
      all.push_back(std::move(p));
    }
  }
  const auto mine = std::span<const std::vector<std::int32_t>>(all).subspan(static_cast<std::size_t>(first),
                                                                            static_cast<std::size_t>(prompts_of(rank)));
  Net ref(mc);
  Counting counted(world);
  Group group(counted);
  Net net(mc, model::Sharding<float>{.expert = &group});
  const std::vector<float> full = full_params(ref.layout(), h.seed() + 7);
  std::vector<float> local(net.layout().size());
  net.shard_plan().scatter(std::span<const float>(full), std::span<float>(local));

  infer::RolloutConfig rc;
  rc.samples_per_prompt = 2;
  rc.max_new_tokens = 3 + rank;  // the ranks stop at different lengths (no eos: every row runs to its limit)
  rc.max_batch = 2;
  counted.reset();
  const infer::Rollouts got = infer::rollout(net, local.data(), mine, infer::Greedy{}, rc);
  const Tally rollout_a2a = counted.tally(Collective::all_to_all);
  bool same = got.size() == static_cast<index_t>(mine.size()) * rc.samples_per_prompt;
  if (!mine.empty()) {
    const infer::Rollouts want = infer::rollout(ref, full.data(), mine, infer::Greedy{}, rc);
    for (index_t r = 0; same && r < got.size(); ++r)
      same = got.rows[static_cast<std::size_t>(r)].tokens == want.rows[static_cast<std::size_t>(r)].tokens &&
             static_cast<index_t>(got.rows[static_cast<std::size_t>(r)].tokens.size()) == rc.max_new_tokens;
  }
  h.check(same, "rank " + std::to_string(rank) + ": the lockstep rollout differs from one process's");

  counted.reset();
  const index_t max_len = 8 + rank;
  const auto greedy = infer::generate_greedy(net, local.data(), mine, max_len, -1);
  const Tally greedy_a2a = counted.tally(Collective::all_to_all);
  if (!mine.empty()) h.check(greedy == infer::generate_greedy(ref, full.data(), mine, max_len, -1),
                             "rank " + std::to_string(rank) + ": lockstep generate_greedy differs from one process's");

  // Every rank the same exchanges: as many decode steps as the busiest rank.
  std::int64_t calls[2] = {rollout_a2a.calls, greedy_a2a.calls}, most[2] = {calls[0], calls[1]},
               least[2] = {-calls[0], -calls[1]};
  world.all_reduce(std::span<std::int64_t>(most), parallel::ReduceOp::max);
  world.all_reduce(std::span<std::int64_t>(least), parallel::ReduceOp::max);
  h.check(most[0] == -least[0] && most[1] == -least[1] && calls[0] > 0,
          "the ranks made different numbers of exchanges: " + std::to_string(calls[0]) + ", " + std::to_string(calls[1]));
  if (rank == 0)
    std::printf("lockstep generation, %d rank(s), %d prompt(s) on the last: %lld decode steps of the rollout, %lld of "
                "generate_greedy on every rank\n",
                ep, prompts_of(ep - 1), static_cast<long long>(calls[0] / moe_layers),
                static_cast<long long>(calls[1] / moe_layers));
}

// ---- training ------------------------------------------------------------------------------------

struct Reference {
  std::vector<double> losses;
  std::vector<float> params;
};

/// One process's Trainer on the whole batch (every rank computes it: the model is tiny).
Reference single_process(int ranks) {
  Net net(moe_config());
  const auto tc = train_config(rows_per_rank * ranks);
  train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, tc);
  const auto source = test::counting_source(3, tc, 16);
  Reference r;
  while (!t.done()) r.losses.push_back(t.run_step(source).loss);
  r.params.assign(t.params().begin(), t.params().end());
  return r;
}

void check_training(test::MpiHarness& h, Comm& world, const Reference& ref) {
  using Policy = parallel::ExpertParallel<Counting>;
  const int ep = world.size(), rank = world.rank();
  const bool one = ep == 1;
  Counting counted(world);
  Group group(counted);
  Net net(moe_config(), model::Sharding<float>{.expert = &group});
  const auto tc_global = train_config(rows_per_rank * ep);
  train::Trainer<Net, optim::AdamW, Policy> t(net, optim::AdamW{}, train_config(rows_per_rank), Policy(counted, bucket_bytes));
  const auto source = test::share(test::counting_source(3, tc_global, 16), rank, rows_per_rank);
  counted.reset();  // the buffers' set-up check is not a step
  double worst_loss = 0;
  for (std::int64_t s = 0; s < steps; ++s) {
    const train::StepStats st = t.run_step(source);
    const double want = ref.losses[static_cast<std::size_t>(s)];
    worst_loss = std::max(worst_loss, std::abs(st.loss - want) / want);
    // (At one rank the buffers' norm sums its squares run by run: the clip factor may differ in its last bit.)
    h.check(std::abs(st.loss - want) <= (one ? 1e-9 : 1e-5) * want,
            "step " + std::to_string(s) + ": loss " + sci(st.loss) + ", one process " + sci(want));
  }
  const Tally a2a = counted.tally(Collective::all_to_all), a2av = counted.tally(Collective::all_to_all_v),
              ar = counted.tally(Collective::all_reduce);
  const std::int64_t all_calls = counted.total().calls;
  const std::string report = counted.report();

  const std::vector<float> full = t.buffers().gather_full();
  const double diff = max_abs_diff(full, ref.params), scale = max_abs(ref.params);
  h.check(diff <= (one ? 1e-6 : 2e-5) * scale,
          "gathered parameters differ from one process's by " + sci(diff) + " (max |p| " + sci(scale) + ")");
  h.check(test::balancing_biases_match(net.full_layout(), full, ref.params),
          "the balancing biases moved differently from one process's (or not at all)");

  // Collectives per step. Per MoE layer and micro-batch: 1 all_to_all, 4 all_to_all_v. All-reduces:
  // the replicated tensors' partial gradients in buckets (none at one rank: nothing is partial), the
  // gradient norm, the step's token count and its loss (the trainer's scalars), and the expert load
  // before the gates balance (train::balance_experts).
  std::size_t replicated = 0;
  for (const ParamInfo& p : net.full_layout().params())
    if (!is_expert(p)) replicated += p.numel;
  const std::size_t staged = one ? 0 : replicated;
  const auto buckets = static_cast<std::int64_t>((staged * sizeof(float) + bucket_bytes - 1) / bucket_bytes);
  h.check(t.buffers().partial_gradient_elements() == staged,
          "partial gradient elements " + std::to_string(t.buffers().partial_gradient_elements()) + ", expected " +
              std::to_string(staged));
  h.check(a2a.calls == steps * micro_batches * moe_layers, report);
  h.check(a2av.calls == steps * micro_batches * moe_layers * 4, report);
  h.check(ar.calls == steps * (buckets + 4), report);
  h.check(all_calls == a2a.calls + a2av.calls + ar.calls, "only all_to_all, all_to_all_v, all_reduce: " + report);
  double worst[2] = {worst_loss, diff};
  world.all_reduce(std::span<double>(worst), parallel::ReduceOp::max);
  if (rank == 0)
    std::printf("training, %d rank(s): losses within %.3e (relative), parameters within %.3e (max |p| %.3f), biases "
                "equal; per step: %lld all_to_all, %lld all_to_all_v, %lld all_reduce (%lld buckets of %zu partial "
                "gradient elements + norm + 2 scalars + load)\n",
                ep, worst[0], worst[1], scale, static_cast<long long>(a2a.calls / steps),
                static_cast<long long>(a2av.calls / steps), static_cast<long long>(ar.calls / steps),
                static_cast<long long>(buckets), staged);
}

/// Data parallelism of the same MoE model (every rank holds all of it and trains on its share): the
/// gates balance on the load summed over the ranks (train::balance_experts), so the replicas' biases
/// move exactly as one process's and the run equals one process on the whole batch. A mutation check
/// (each rank balancing on its own load) fails here at 2 and 4 ranks: the biases differ.
void check_data_parallel(test::MpiHarness& h, Comm& world, const Reference& ref) {
  using Policy = parallel::DataParallel<Counting>;
  const int ranks = world.size(), rank = world.rank();
  const bool one = ranks == 1;
  Counting counted(world);
  Net net(moe_config());
  const auto tc_global = train_config(rows_per_rank * ranks);
  train::Trainer<Net, optim::AdamW, Policy> t(net, optim::AdamW{}, train_config(rows_per_rank), Policy(counted, bucket_bytes));
  const auto source = test::share(test::counting_source(3, tc_global, 16), rank, rows_per_rank);
  counted.reset();  // (the initial broadcast is not a step)
  double worst_loss = 0;
  for (std::int64_t s = 0; s < steps; ++s) {
    const double loss = t.run_step(source).loss, want = ref.losses[static_cast<std::size_t>(s)];
    worst_loss = std::max(worst_loss, std::abs(loss - want) / want);
    h.check(std::abs(loss - want) <= (one ? 1e-9 : 1e-5) * want,
            "step " + std::to_string(s) + ": loss " + sci(loss) + ", one process " + sci(want));
  }
  const std::span<const float> p = t.params();
  const double diff = max_abs_diff(p, ref.params), scale = max_abs(ref.params);
  h.check(diff <= (one ? 1e-6 : 2e-5) * scale,
          "parameters differ from one process's by " + sci(diff) + " (max |p| " + sci(scale) + ")");
  h.check(test::balancing_biases_match(net.layout(), p, ref.params),
          "data parallel: the balancing biases moved differently from one process's (or not at all)");
  // Per step: the gradient buckets (the norm is then each rank's own), the step's token count, its
  // loss and the summed expert load.
  const std::size_t n = net.layout().size();
  const auto buckets = static_cast<std::int64_t>((n * sizeof(float) + bucket_bytes - 1) / bucket_bytes);
  const Tally ar = counted.tally(Collective::all_reduce);
  h.check(ar.calls == steps * (buckets + 3) && counted.total().calls == ar.calls,
          "data parallel: " + std::to_string(buckets) + " buckets + token count + loss + load per step expected; " +
              counted.report());
  double worst[2] = {worst_loss, diff};
  world.all_reduce(std::span<double>(worst), parallel::ReduceOp::max);
  if (rank == 0)
    std::printf("data-parallel MoE training, %d rank(s): losses within %.3e (relative), parameters within %.3e, "
                "biases equal; %lld all-reduces per step\n",
                ranks, worst[0], worst[1], static_cast<long long>(ar.calls / steps));
}

// ---- memory --------------------------------------------------------------------------------------

void check_shares(test::MpiHarness& h, Comm& world) {
  using Policy = parallel::ExpertParallel<Comm>;
  const int ep = world.size();
  parallel::ShardGroupOf<Comm, float> group(world);
  Net net(moe_config(), model::Sharding<float>{.expert = &group});
  train::Trainer<Net, optim::AdamW, Policy> t(net, optim::AdamW{}, train_config(rows_per_rank), Policy(world));
  std::size_t full_experts = 0, replicated = 0, local_experts = 0, local_other = 0;
  for (const ParamInfo& p : net.full_layout().params()) (is_expert(p) ? full_experts : replicated) += p.numel * sizeof(float);
  for (const ParamInfo& p : net.layout().params()) (is_expert(p) ? local_experts : local_other) += p.numel * sizeof(float);
  std::int64_t total = static_cast<std::int64_t>(local_experts);
  world.all_reduce(std::span<std::int64_t>(&total, 1), parallel::ReduceOp::sum);
  const auto ranks = static_cast<std::size_t>(ep);
  h.check(local_experts * ranks == full_experts && static_cast<std::size_t>(total) == full_experts,
          "expert parameter bytes " + std::to_string(local_experts) + " on this rank, " + std::to_string(total) +
              " over all, the unsplit model's " + std::to_string(full_experts));
  h.check(local_other == replicated, "the replicated tensors are whole on every rank");
  const std::size_t params = t.buffers().parameter_bytes(), state = t.buffers().optimizer_state_bytes();
  h.check(params == replicated + full_experts / ranks, "parameter buffer " + std::to_string(params) + " bytes");
  // AdamW keeps two slots per parameter: the experts' state is 2 x their bytes / ep on each rank.
  h.check(state == 2 * params && state - 2 * replicated == 2 * full_experts / ranks,
          "optimizer state " + std::to_string(state) + " bytes");
  if (world.rank() == 0)
    std::printf("shares, %d rank(s): expert parameters %zu of %zu bytes per rank (1/%d), optimizer state of the experts "
                "%zu of %zu bytes; whole buffers per rank: parameters %zu bytes, optimizer state %zu bytes (replicated "
                "%zu bytes)\n",
                ep, local_experts, full_experts, ep, 2 * local_experts, 2 * full_experts, params, state, replicated);
}

// ---- errors --------------------------------------------------------------------------------------

void check_errors(test::MpiHarness& h, Comm& world) {
  const std::string four = "moe::MoE 'layers.1.ffn': expert parallelism over 4 ranks needs the experts to divide "
                           "evenly among them; experts = 6 is not a multiple of 4";
  parallel::ShardGroupOf<Comm, float> group(world);
  if (6 % world.size() != 0) {  // 4 ranks: the error, on every rank, before any collective
    h.expect_error([&] { Net6 net(moe_config(), model::Sharding<float>{.expert = &group}); }, four);
  } else {  // 1 and 2 ranks: 6 and 3 experts a rank
    Net6 net(moe_config(), model::Sharding<float>{.expert = &group});
    std::size_t experts = 0;
    for (const ParamInfo& p : net.layout().params())
      experts += is_expert(p) && p.name.find(".gate_up.") != std::string::npos;
    h.check(experts == static_cast<std::size_t>(2 * 6 / world.size()),
            std::to_string(experts) + " expert gate_up tensors over 2 MoE layers on this rank");
  }
}

/// A checkpoint of the expert-parallel run: the unsplit model's file, recording the global batch,
/// which an EP run resumes bit for bit and one process on the whole batch within fp32 tolerance.
void check_checkpoint(test::MpiHarness& h, Comm& world) {
  using Policy = parallel::ExpertParallel<Counting>;
  const int ep = world.size();
  const auto tc_global = train_config(rows_per_rank * ep), tc = train_config(rows_per_rank);
  const auto global = test::counting_source(h.seed(), tc_global, 16);
  Counting counted(world);
  Group group(counted);
  std::vector<std::unique_ptr<Net>> nets;
  std::vector<std::unique_ptr<train::Trainer<Net, optim::AdamW, Policy>>> split;
  std::vector<std::unique_ptr<train::Trainer<Net, optim::AdamW>>> single;
  test::check_split_checkpoint<train::Trainer<Net, optim::AdamW, Policy>, train::Trainer<Net, optim::AdamW>>(
      h, world, "expert",
      [&]() -> auto& {
        nets.push_back(std::make_unique<Net>(moe_config(), model::Sharding<float>{.expert = &group}));
        return *split.emplace_back(
            std::make_unique<train::Trainer<Net, optim::AdamW, Policy>>(*nets.back(), optim::AdamW{}, tc, Policy(counted, bucket_bytes)));
      },
      [&]() -> auto& {
        nets.push_back(std::make_unique<Net>(moe_config()));
        return *single.emplace_back(std::make_unique<train::Trainer<Net, optim::AdamW>>(*nets.back(), optim::AdamW{}, tc_global));
      },
      test::share(global, world.rank(), rows_per_rank), global);
}

}  // namespace

int main(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);
  test::MpiHarness h;
  Comm world = Comm::world();
  h.run("an EP layer holds its experts and receives the rows kept for them", [&](test::MpiHarness& t) { check_layer(t, world); });
  h.run("EP forward and backward equal one process on the whole batch; their collectives",
        [&](test::MpiHarness& t) { check_forward_backward(t, world); });
  h.run("an EP rank without rows still serves its experts (forward, backward, logits)",
        [&](test::MpiHarness& t) { check_rank_without_rows(t, world); });
  h.run("an EP rank without rows under a Switch or per-sequence aux loss: no loss of its own, finite", [&](test::MpiHarness& t) {
    using Switch = moe::SoftmaxTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::NoDrop, moe::SwitchLoss<0.01f>>;
    using Sequence = moe::SoftmaxTopK<moe::GateConfig{.experts = 8, .top_k = 2}, moe::NoDrop, moe::SequenceLoss<0.01f>>;
    check_rank_without_rows_aux_loss<Switch>(t, world, "switch loss");
    check_rank_without_rows_aux_loss<Sequence>(t, world, "sequence loss");
  });
  h.run("EP decoding equals one process's", [&](test::MpiHarness& t) { check_decoding(t, world); });
  h.run("EP generation runs in lockstep over ranks with different prompts, and equals one process's",
        [&](test::MpiHarness& t) { check_lockstep_generation(t, world); });
  const Reference ref = single_process(world.size());
  h.run("EP training equals one process; its collectives per step",
        [&](test::MpiHarness& t) { check_training(t, world, ref); });
  h.run("data-parallel MoE training equals one process (the gates balance on every rank's load)",
        [&](test::MpiHarness& t) { check_data_parallel(t, world, ref); });
  h.run("EP ranks hold 1/ep of the experts' parameters and optimizer state",
        [&](test::MpiHarness& t) { check_shares(t, world); });
  h.run("a checkpoint of the EP run resumes split and in one process", [&](test::MpiHarness& t) { check_checkpoint(t, world); });
  h.run("EP refuses experts that do not divide over the ranks", [&](test::MpiHarness& t) { check_errors(t, world); });
  return h.finish();
}
