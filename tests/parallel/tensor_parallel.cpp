// Tensor parallelism (Megatron) under mpirun (-np 1, 2, 4): a model split over the ranks' heads and
// FFN width computes what the unsplit model computes — the loss, every gradient, the decoded logits
// — and a tensor-parallel trainer's losses and parameters after a few steps equal one process's,
// within fp32 tolerance (the row-parallel products sum their partial outputs in another order); at
// one rank the split path runs through the group and is bit-identical. Each rank holds 1/tp of the
// split tensors (measured from its layout and buffers; KV heads replicated at 4 ranks, where
// kv_heads = 2 < tp), and a step makes the design's collectives: one all-reduce per attention and
// per FFN block in forward and in backward, the replicated KV heads' gradient sum, the norm.
//
// Every rank runs every case in step under the MPI harness (harness.hpp).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/counting.hpp"
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

using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;
using Comm = parallel::MpiCommunicator;
using Counting = parallel::CountingCommunicator<Comm&>;
using Group = parallel::ShardGroupOf<Counting, float>;
using TP = parallel::TensorParallel<Counting>;
using parallel::Collective;
using parallel::Tally;

constexpr int micro_batches = 2;
constexpr std::int64_t steps = 3;


/// Forward and backward of one batch: the loss, every gradient (the replicated KV heads' parts
/// summed by the buffers), the norm, and the all-reduces of one forward and one backward.
void check_gradients(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = test::small_model_config();
  train::TrainConfig tc = test::small_train(1, 1, 1, h.seed());
  const auto source = test::counting_source(h.seed() + 1, tc, cfg.vocab_size);
  train::TokenBatch b;
  source(0, 0, b);
  const float scale = 1.0f / static_cast<float>(b.target_count());

  Net full(cfg);
  std::vector<float> params = full.initial_params(tc.seed), grads(params.size(), 0.0f);
  full.reserve(tc.batch, tc.seq);
  const auto ref = full.forward(params.data(), grads.data(), b.tokens_view(), b.targets_view(), scale);
  full.backward(params.data(), grads.data());
  const double ref_norm = train::clip_grad_norm<float>(std::span<float>(grads), 0.0);

  Counting counted(world);
  Group group(counted);
  Net net(cfg, model::Sharding<float>{.tensor = &group});
  auto buf = TP(counted).make_buffers<optim::AdamW>(net, std::span<const float>(net.initial_params(tc.seed)), false);
  net.reserve(tc.batch, tc.seq);
  counted.reset();
  const auto r = net.forward(buf.params(), buf.grads(), b.tokens_view(), b.targets_view(), scale);
  const std::int64_t forward_reduces = counted.tally(Collective::all_reduce).calls;
  net.backward(buf.params(), buf.grads());
  const std::int64_t backward_reduces = counted.tally(Collective::all_reduce).calls - forward_reduces;
  const double norm = buf.clip_grad_norm(0.0);

  const bool one = world.size() == 1;
  const double tol_loss = one ? 0.0 : 1e-6 * ref.loss_sum;
  h.check(std::abs(r.loss_sum - ref.loss_sum) <= tol_loss && r.count == ref.count,
          "loss sum " + sci(r.loss_sum) + ", unsplit " + sci(ref.loss_sum));
  // (The norm sums its squares run by run, in another order even at one rank.)
  h.check(std::abs(norm - ref_norm) <= (one ? 1e-12 : 1e-5) * ref_norm, "gradient norm " + sci(norm) + ", unsplit " + sci(ref_norm));
  std::vector<float> expected(net.layout().size());
  net.shard_plan().scatter(std::span<const float>(grads), std::span<float>(expected));
  const double diff = max_abs_diff(buf.host_grads(), expected), gmax = max_abs(expected);
  h.check(diff <= (one ? 0.0 : 1e-5 * gmax), "gradients differ from the unsplit model's by " + sci(diff) + " (max |g| " + sci(gmax) + ")");
  // One all-reduce per attention block and per FFN block, each way; none at all in between.
  const std::int64_t blocks = 2 * cfg.num_layers;
  h.check(forward_reduces == blocks && backward_reduces == blocks,
          "forward made " + std::to_string(forward_reduces) + " all-reduces and backward " + std::to_string(backward_reduces) +
              ", expected " + std::to_string(blocks) + " each");
  const auto rows = static_cast<std::int64_t>(tc.batch * tc.seq);
  h.check(counted.tally(Collective::all_reduce).bytes >=
              2 * blocks * rows * cfg.hidden_size * static_cast<std::int64_t>(sizeof(float)),
          counted.report());
  if (world.rank() == 0)
    std::printf("tensor parallel, %d ranks: loss within %.1e, gradients within %.1e of the unsplit model's (max |g| %.3f)\n",
                world.size(), std::abs(r.loss_sum - ref.loss_sum), diff, gmax);
}

/// Training: the same batch on every rank, 3 steps of 2 micro-batches, against one process.
void check_training(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = test::small_model_config();
  const train::TrainConfig tc = test::small_train(steps, micro_batches, 1, h.seed());
  const auto source = test::counting_source(h.seed() + 2, tc, cfg.vocab_size);

  Net full(cfg);
  train::Trainer<Net, optim::AdamW> ref(full, optim::AdamW{}, tc);
  std::vector<double> ref_losses;
  while (!ref.done()) ref_losses.push_back(ref.run_step(source).loss);

  Counting counted(world);
  Group group(counted);
  Net net(cfg, model::Sharding<float>{.tensor = &group});
  train::Trainer<Net, optim::AdamW, TP> t(net, optim::AdamW{}, tc, TP(counted));
  counted.reset();
  const bool one = world.size() == 1;
  for (std::int64_t s = 0; s < steps; ++s) {
    const double loss = t.run_step(source).loss, want = ref_losses[static_cast<std::size_t>(s)];
    h.check(std::abs(loss - want) <= (one ? 1e-9 : 1e-5) * want,
            "step " + std::to_string(s) + ": loss " + sci(loss) + ", one process " + sci(want));
  }
  const Tally steps_tally = counted.tally(Collective::all_reduce);  // before gather_full's own all-reduce
  const std::vector<float> gathered = t.buffers().gather_full();
  const double diff = max_abs_diff(gathered, ref.params()), scale = max_abs(ref.params());
  // (At one rank the norm's sum of squares runs in another order, so the clip factor may differ in its last bit.)
  h.check(diff <= (one ? 1e-6 : 2e-5) * scale,
          "parameters differ from one process's by " + sci(diff) + " (max |p| " + sci(scale) + ")");

  // The replicas of every replicated value are equal bit for bit (their gradients were).
  std::vector<float> mine(t.params().begin(), t.params().end()), first = mine;
  world.broadcast(std::span<float>(first), 0);
  std::vector<float> rank0_full(gathered.size(), 0.0f);
  bool replicas_equal = true;
  net.shard_plan().for_each_run([&](std::size_t lo, std::size_t, std::size_t n, const model::ShardPiece& p,
                                    const model::ShardEntry&) {
    if (p.holders == world.size())
      replicas_equal = replicas_equal && std::equal(mine.begin() + lo, mine.begin() + lo + n, first.begin() + lo);
  });
  h.check(replicas_equal, "a replicated parameter differs from rank 0's");

  // Per step: 2 blocks x layers x micro-batches each way, the KV sum (4 ranks: kv_heads = 2 < tp, one
  // bucket of 2 layers x the unsplit qkv), the norm; no other collective (every rank has the batch).
  const std::int64_t blocks = 2 * cfg.num_layers * micro_batches * 2;
  const std::int64_t kv_sums = t.buffers().partial_gradient_elements() > 0 ? 1 : 0;
  const std::string report = counted.report();
  h.check(steps_tally.calls == steps * (blocks + kv_sums + 1),
          std::to_string(steps_tally.calls) + " all-reduces in " + std::to_string(steps) + " steps, expected " +
              std::to_string(steps * (blocks + kv_sums + 1)));
  h.check(world.size() < 4 || kv_sums == 1, "4 ranks, 2 KV heads: expected the replicated KV heads' gradient sum");
  for (Collective c : {Collective::reduce_scatter, Collective::all_gather, Collective::broadcast, Collective::all_to_all,
                       Collective::all_to_all_v, Collective::send, Collective::recv, Collective::send_recv})
    h.check(counted.tally(c).calls == 0, report);
  if (world.rank() == 0)
    std::printf("tensor parallel training, %d ranks: parameters within %.2e of one process's (max |p| %.3f); "
                "%lld all-reduces (%lld bytes) in %lld steps\n",
                world.size(), diff, scale, static_cast<long long>(steps_tally.calls), static_cast<long long>(steps_tally.bytes),
                static_cast<long long>(steps));
}

/// Each rank's share, measured: 1/tp of qkv's query rows and of o, gate_up and down; KV rows
/// 1/tp of them while kv_heads >= tp, one head's otherwise; the optimizer state follows the parameters.
void check_shares(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = test::small_model_config();
  Counting counted(world);
  Group group(counted);
  Net net(cfg, model::Sharding<float>{.tensor = &group});
  const train::TrainConfig tc = test::small_train(1, 1, 1, h.seed());
  train::Trainer<Net, optim::AdamW, TP> t(net, optim::AdamW{}, tc, TP(counted));
  const index_t tp = world.size(), D = Net::head_dim, C = cfg.hidden_size;
  const index_t kv_local = std::max<index_t>(1, cfg.num_kv_heads / tp);
  for (const ParamInfo& p : net.layout().params()) {
    const ParamInfo& f = net.full_layout().find(p.name);
    std::size_t want = f.numel;
    if (p.name.ends_with(".attn.qkv.weight"))
      want = static_cast<std::size_t>((cfg.num_heads / tp + 2 * kv_local) * D * C);
    else if (p.name.ends_with(".attn.o.weight") || p.name.ends_with(".ffn.gate_up.weight") || p.name.ends_with(".ffn.down.weight"))
      want = f.numel / static_cast<std::size_t>(tp);
    h.check(p.numel == want, p.name + ": " + std::to_string(p.numel) + " elements on this rank, expected " + std::to_string(want));
  }
  h.check(t.buffers().parameter_bytes() == net.layout().size() * sizeof(float) &&
              t.buffers().optimizer_state_bytes() == 2 * net.layout().size() * sizeof(float),
          "the buffers hold " + std::to_string(t.buffers().parameter_bytes()) + " parameter and " +
              std::to_string(t.buffers().optimizer_state_bytes()) + " state bytes for a share of " +
              std::to_string(net.layout().size()) + " parameters");
  if (world.rank() == 0)
    std::printf("tensor parallel, %d ranks: %zu of %zu parameters on rank 0 (%zu state bytes)\n", world.size(),
                net.layout().size(), net.full_layout().size(), t.buffers().optimizer_state_bytes());
}

/// Greedy decoding with the KV cache: the split model's logits are the unsplit model's.
void check_decode(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = test::small_model_config();
  Net full(cfg);
  const std::vector<float> params = full.initial_params(h.seed());
  Counting counted(world);
  Group group(counted);
  Net net(cfg, model::Sharding<float>{.tensor = &group});
  std::vector<float> local(net.layout().size());
  net.shard_plan().scatter(std::span<const float>(params), std::span<float>(local));
  const index_t batch = 3, positions = 6;
  auto st_full = full.make_decode_state(batch, positions);
  auto st = net.make_decode_state(batch, positions);
  std::vector<float> a(static_cast<std::size_t>(batch * cfg.vocab_size)), b(a.size());
  std::vector<std::int32_t> tokens = {1, 5, 9};
  double worst = 0;
  for (index_t pos = 0; pos < positions; ++pos) {
    full.decode_step(params.data(), make_view(const_cast<const std::int32_t*>(tokens.data()), batch), pos, st_full,
                     make_view(a.data(), batch, cfg.vocab_size));
    net.decode_step(local.data(), make_view(const_cast<const std::int32_t*>(tokens.data()), batch), pos, st,
                    make_view(b.data(), batch, cfg.vocab_size));
    worst = std::max(worst, max_abs_diff(a, b));
    for (index_t i = 0; i < batch; ++i)  // feed the unsplit model's argmax to both
      tokens[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(
          std::max_element(a.begin() + i * cfg.vocab_size, a.begin() + (i + 1) * cfg.vocab_size) - (a.begin() + i * cfg.vocab_size));
  }
  h.check(worst <= (world.size() == 1 ? 0.0 : 1e-5 * std::max(1.0, max_abs(a))), "decoded logits differ by " + sci(worst));
  h.check(counted.tally(Collective::all_reduce).calls == positions * 2 * cfg.num_layers, counted.report());
}

/// Splits that do not divide are refused, naming the numbers.
void check_errors(test::MpiHarness& h, Comm& world) {
  Counting counted(world);
  Group group(counted);
  model::Config cfg = test::small_model_config();
  if (world.size() > 1) {
    cfg.intermediate_size = 49;
    h.expect_error_containing([&] { Net net(cfg, model::Sharding<float>{.tensor = &group}); },
                              "intermediate_size = 49 is not a multiple of " + std::to_string(world.size()));
    cfg = test::small_model_config();
    cfg.num_heads = 6;
    cfg.num_kv_heads = 6;
    if (6 % world.size() != 0)
      h.expect_error_containing([&] { Net net(cfg, model::Sharding<float>{.tensor = &group}); },
                                "num_heads = 6 is not a multiple of " + std::to_string(world.size()));
  }
  // A trainer whose model is not split that way is refused.
  Net whole(test::small_model_config());
  h.expect_error_containing(
      [&] { train::Trainer<Net, optim::AdamW, TP> t(whole, optim::AdamW{}, test::small_train(1, 1, 1, 1), TP(counted)); },
      "the model is not split that way");
}

/// A checkpoint of the split run: the unsplit model's file, which a split run and one process resume.
void check_checkpoint(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = test::small_model_config();
  const train::TrainConfig tc = test::small_train(steps, micro_batches, 1, h.seed());
  const auto source = test::counting_source(h.seed() + 4, tc, cfg.vocab_size);
  Counting counted(world);
  Group group(counted);
  test::check_whole_batch_checkpoint<Net, TP>(h, world, "tensor", cfg, tc, model::Sharding<float>{.tensor = &group}, counted, source);
}

}  // namespace

int main(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);
  test::MpiHarness h;
  Comm world = Comm::world();
  h.run("a split forward and backward equal the unsplit model's", [&](test::MpiHarness& t) { check_gradients(t, world); });
  h.run("tensor-parallel training equals one process; its collectives", [&](test::MpiHarness& t) { check_training(t, world); });
  h.run("each rank holds its share of the split tensors", [&](test::MpiHarness& t) { check_shares(t, world); });
  h.run("split decoding with the KV cache equals the unsplit model's", [&](test::MpiHarness& t) { check_decode(t, world); });
  h.run("a checkpoint of the split run resumes split and in one process", [&](test::MpiHarness& t) { check_checkpoint(t, world); });
  h.run("splits that do not divide are refused", [&](test::MpiHarness& t) { check_errors(t, world); });
  return h.finish();
}
