// Pipeline parallelism under mpirun (-np 1, 2, 4): a 4-layer model split into one stage per rank,
// trained with each step's micro-batches in the 1F1B schedule, has the losses and parameters of one
// process on the whole batch within fp32 tolerance. Each stage holds only its layers (the first the
// embedding, the last the final norm and LM head; measured from the layouts and buffers) and keeps
// min(stages - stage, micro-batches) activation slots; a step moves each micro-batch's activations
// forward and their gradients back once per stage boundary, plus two all-reduces (the norm, the loss).
// Decoding passes each step through the stages and gives every stage one process's logits. The
// schedule itself is checked as a sequence: every micro-batch forward once, backward once after
// it, never more in flight than 1F1B allows.
//
// Every rank runs every case in step under the MPI harness (harness.hpp).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/counting.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"
#include "reason/parallel/pipeline.hpp"
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
using PP = parallel::Pipeline<Counting>;
using parallel::Collective;
using parallel::Tally;

constexpr int micro_batches = 5;  // more than the 4 stages: warm-up, steady state and drain all run
constexpr std::int64_t steps = 3;

model::Config four_layers() {
  model::Config c = test::small_model_config();
  c.num_layers = 4;
  return c;
}


/// The schedule as a sequence, for every pipeline shape up to 4 stages and 7 micro-batches.
void check_schedule(test::MpiHarness& h) {
  for (int stages = 1; stages <= 4; ++stages)
    for (int stage = 0; stage < stages; ++stage)
      for (int m = 1; m <= 7; ++m) {
        const std::vector<int> order = parallel::one_f_one_b_order(stages, stage, m);
        std::vector<int> forwarded(static_cast<std::size_t>(m), 0), backwarded(static_cast<std::size_t>(m), 0);
        int in_flight = 0, most = 0;
        bool in_order = true;
        for (int op : order) {
          if (op >= 0) {
            ++forwarded[static_cast<std::size_t>(op)];
            most = std::max(most, ++in_flight);
          } else {
            const auto i = static_cast<std::size_t>(-1 - op);
            in_order = in_order && forwarded[i] == 1;
            ++backwarded[i];
            --in_flight;
          }
        }
        const std::string where = "stage " + std::to_string(stage) + " of " + std::to_string(stages) + ", " +
                                  std::to_string(m) + " micro-batches";
        h.check(std::all_of(forwarded.begin(), forwarded.end(), [](int c) { return c == 1; }) &&
                    std::all_of(backwarded.begin(), backwarded.end(), [](int c) { return c == 1; }) && in_order,
                where + ": not every micro-batch forward once and then backward once");
        h.check(most == std::min(stages - stage, m),
                where + ": " + std::to_string(most) + " in flight, 1F1B keeps " + std::to_string(std::min(stages - stage, m)));
      }
}

/// Training against one process on the whole batch; the step's messages; each stage's share.
void check_training(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = four_layers();
  const train::TrainConfig tc = test::small_train(steps, micro_batches, 1, h.seed());
  const auto source = test::counting_source(h.seed() + 3, tc, cfg.vocab_size);

  Net full(cfg);
  train::Trainer<Net, optim::AdamW> ref(full, optim::AdamW{}, tc);
  std::vector<double> ref_losses;
  while (!ref.done()) ref_losses.push_back(ref.run_step(source).loss);

  Counting counted(world);
  Group group(counted);
  Net net(cfg, model::Sharding<float>{.pipeline = &group});
  train::Trainer<Net, optim::AdamW, PP> t(net, optim::AdamW{}, tc, PP(counted));
  counted.reset();
  const int stages = world.size(), stage = world.rank();
  for (std::int64_t s = 0; s < steps; ++s) {
    const double loss = t.run_step(source).loss, want = ref_losses[static_cast<std::size_t>(s)];
    h.check(std::abs(loss - want) <= 1e-5 * want, "step " + std::to_string(s) + ": loss " + sci(loss) + ", one process " + sci(want));
  }
  // Each boundary carries every micro-batch's activations forward and their gradients back, once.
  const bool first = stage == 0, last = stage == stages - 1;
  const auto message = static_cast<std::int64_t>(tc.batch * tc.seq * cfg.hidden_size * sizeof(float));
  const std::int64_t sent = counted.tally(Collective::send).bytes + counted.tally(Collective::send_recv).bytes;
  const std::int64_t want_sent = steps * micro_batches * message * ((last ? 0 : 1) + (first ? 0 : 1));
  const std::int64_t received = counted.tally(Collective::recv).bytes +
                                (counted.tally(Collective::send_recv).calls > 0 ? counted.tally(Collective::send_recv).bytes : 0);
  const std::string report = counted.report();
  h.check(sent == want_sent, "sent " + std::to_string(sent) + " bytes, expected " + std::to_string(want_sent) + ": " + report);
  h.check(received == want_sent, "received " + std::to_string(received) + " bytes, expected " + std::to_string(want_sent) + ": " + report);
  h.check(counted.tally(Collective::all_reduce).calls == 2 * steps, "all-reduces: " + report + " (expected the norm and the loss per step)");
  const Tally steps_reduce = counted.tally(Collective::all_reduce);

  const std::vector<float> gathered = t.buffers().gather_full();
  const double diff = max_abs_diff(gathered, ref.params()), scale = max_abs(ref.params());
  h.check(diff <= 2e-5 * scale, "parameters differ from one process's by " + sci(diff) + " (max |p| " + sci(scale) + ")");

  // This stage's layers and nothing else; 1F1B's activation slots.
  const index_t l0 = stage * cfg.num_layers / stages, l1 = (stage + 1) * cfg.num_layers / stages;
  h.check(net.first_layer() == l0 && net.local_layers() == l1 - l0,
          "stage " + std::to_string(stage) + " runs layers [" + std::to_string(net.first_layer()) + ", +" +
              std::to_string(net.local_layers()) + "), expected [" + std::to_string(l0) + ", " + std::to_string(l1) + ")");
  std::size_t want_params = 0;
  for (const ParamInfo& p : net.full_layout().params()) {
    const bool here = p.name.starts_with("layers.") ? [&] {
      const index_t l = std::stoll(p.name.substr(7));
      return l >= l0 && l < l1;
    }()
                                                    : (p.name == "embed.weight" ? first : last);
    if (here) want_params += p.numel;
  }
  h.check(net.layout().size() == want_params && t.buffers().parameter_bytes() == want_params * sizeof(float) &&
              t.buffers().optimizer_state_bytes() == 2 * want_params * sizeof(float),
          "stage holds " + std::to_string(net.layout().size()) + " parameters, expected " + std::to_string(want_params));
  std::int64_t total = static_cast<std::int64_t>(net.layout().size());
  world.all_reduce(std::span<std::int64_t>(&total, 1), parallel::ReduceOp::sum);
  h.check(static_cast<std::size_t>(total) == net.full_layout().size(), "the stages hold " + std::to_string(total) +
                                                                           " parameters together, the model " +
                                                                           std::to_string(net.full_layout().size()));
  h.check(t.buffers().last_order() == parallel::one_f_one_b_order(stages, stage, micro_batches),
          "the trainer's step did not run the 1F1B order");
  h.check(net.activation_slots() == std::min(stages - stage, micro_batches),
          "activation slots " + std::to_string(net.activation_slots()));
  if (world.rank() == 0)
    std::printf("pipeline, %d stages x %d micro-batches: parameters within %.2e of one process's (max |p| %.3f); stage 0 "
                "holds %zu of %zu parameters; %lld all-reduces and %s in %lld steps\n",
                stages, micro_batches, diff, scale, net.layout().size(), net.full_layout().size(),
                static_cast<long long>(steps_reduce.calls), report.c_str(), static_cast<long long>(steps));
}

/// Decoding through the stages: each stage's DecodeState holds its own layers' caches, every decode
/// step sends the hidden state [B, C] once per stage boundary and broadcasts the last stage's logits
/// (one all-reduce); every stage's logits are bit-equal to each other's and equal one process's
/// (the same arithmetic, layer by layer: bit for bit).
void check_decoding(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = four_layers();
  Counting counted(world);
  Group group(counted);
  Net ref(cfg);
  Net net(cfg, model::Sharding<float>{.pipeline = &group});
  const std::vector<float> full = ref.initial_params(h.seed() + 9);
  const std::vector<float> local = net.initial_params(h.seed() + 9);
  const index_t batch = 3, positions = 5, vocab = cfg.vocab_size;
  auto ref_state = ref.make_decode_state(batch, positions);
  auto state = net.make_decode_state(batch, positions);
  h.check(state.cache_bytes() * static_cast<std::size_t>(cfg.num_layers) ==
              ref_state.cache_bytes() * static_cast<std::size_t>(net.local_layers()),
          "a stage's decode state holds its own layers' caches");
  Philox rng(h.seed(), 31);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch));
  std::vector<float> want(static_cast<std::size_t>(batch * vocab)), got(want.size());
  bool equal = true;
  counted.reset();
  for (index_t pos = 0; pos < positions; ++pos) {
    for (std::int32_t& t : tokens) t = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab)));
    const auto tv = make_view(static_cast<const std::int32_t*>(tokens.data()), batch);
    ref.decode_step(full.data(), tv, pos, ref_state, make_view(want.data(), batch, vocab));
    net.decode_step(local.data(), tv, pos, state, make_view(got.data(), batch, vocab));
    equal = equal && got == want;
  }
  h.check(equal, "stage " + std::to_string(world.rank()) + ": decoded logits differ from one process's");
  const int stages = world.size();
  const std::int64_t boundaries = world.rank() < stages - 1 ? 1 : 0, from_before = world.rank() > 0 ? 1 : 0;
  h.check(counted.tally(Collective::send).calls == positions * boundaries &&
              counted.tally(Collective::recv).calls == positions * from_before &&
              counted.tally(Collective::all_reduce).calls == (stages > 1 ? positions : 0),
          "decoding: " + counted.report());
  if (world.rank() == 0)
    std::printf("decoding through %d stage(s): %lld positions of %lld sequences, logits bit-equal to one process's; "
                "stage 0: %s\n", stages, static_cast<long long>(positions), static_cast<long long>(batch),
                counted.report().c_str());
}

/// Whole-model calls on a stage and pipelines longer than the model are refused.
void check_errors(test::MpiHarness& h, Comm& world) {
  Counting counted(world);
  Group group(counted);
  Net net(four_layers(), model::Sharding<float>{.pipeline = &group});
  if (world.size() > 1) {
    net.reserve(1, 4);
    std::vector<std::int32_t> tokens(4, 1);
    std::vector<float> params(net.layout().size(), 0.0f);
    const View<const std::int32_t, 2> tv(tokens.data(), {1, 4}, {4, 1});
    h.expect_error_containing([&] { (void)net.loss(params.data(), tv, tv); }, "needs the whole model; this pipeline stage");
    model::Config one_layer = four_layers();
    one_layer.num_layers = 1;
    h.expect_error_containing([&] { Net n(one_layer, model::Sharding<float>{.pipeline = &group}); },
                              "stages needs at least as many layers; num_layers = 1");
  }
}

/// A checkpoint of the split run: the unsplit model's file, which a split run and one process resume.
void check_checkpoint(test::MpiHarness& h, Comm& world) {
  const model::Config cfg = four_layers();
  const train::TrainConfig tc = test::small_train(steps, micro_batches, 1, h.seed());
  const auto source = test::counting_source(h.seed() + 4, tc, cfg.vocab_size);
  Counting counted(world);
  Group group(counted);
  test::check_whole_batch_checkpoint<Net, PP>(h, world, "pipeline", cfg, tc, model::Sharding<float>{.pipeline = &group}, counted, source);
}

}  // namespace

int main(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);
  test::MpiHarness h;
  Comm world = Comm::world();
  h.run("the 1F1B schedule", [&](test::MpiHarness& t) { check_schedule(t); });
  h.run("pipelined training equals one process; its messages; each stage's share",
        [&](test::MpiHarness& t) { check_training(t, world); });
  h.run("a checkpoint of the pipeline resumes split and in one process", [&](test::MpiHarness& t) { check_checkpoint(t, world); });
  h.run("decoding passes through the stages and gives every stage one process's logits",
        [&](test::MpiHarness& t) { check_decoding(t, world); });
  h.run("whole-model calls on a stage are refused", [&](test::MpiHarness& t) { check_errors(t, world); });
  return h.finish();
}
