// Data parallelism and ZeRO stages 1 and 2 under mpirun (-np 1, 2, 4): every policy's losses and
// parameters after a few steps equal one process training on the whole batch, within fp32
// tolerance; the collectives of a step are the policy's design, counted by the communicator; each
// rank holds only its share of the optimizer state under ZeRO, measured from its buffers; a ZeRO
// checkpoint gathers the state, and a run resumed from it continues like the uninterrupted one.
//
// Every rank runs every case in step under the MPI harness (harness.hpp: failures agreed over the
// ranks, an unexpected exception aborts the job rather than hanging it).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/counting.hpp"
#include "reason/parallel/data_parallel.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"
#include "reason/parallel/zero.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/trainer.hpp"
#include "parallel/fixtures.hpp"
#include "parallel/harness.hpp"
#include "support/training_fixtures.hpp"

using namespace reason;
using test::max_abs;
using test::max_abs_diff;
using test::sci;

namespace {

using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;
using Comm = parallel::MpiCommunicator;
using Counting = parallel::CountingCommunicator<Comm&>;
using parallel::Collective;

model::Config small_config() { return test::small_model_config(); }

constexpr index_t rows_per_rank = 2;
constexpr int micro_batches = 2;
constexpr std::int64_t steps = 3;

train::TrainConfig config(index_t batch) {
  train::TrainConfig tc = test::small_train(steps, micro_batches, 1, 5);
  tc.batch = batch;
  return tc;
}


struct Reference {
  std::vector<double> losses;
  std::vector<float> params, state;
};

/// One process on the whole batch (every rank computes it: the model is tiny).
Reference single_process(int ranks) {
  Net net(small_config());
  const auto tc = config(rows_per_rank * ranks);
  train::Trainer<Net, optim::AdamW> t(net, optim::AdamW{}, tc);
  const auto source = test::counting_source(3, tc, 16);
  Reference r;
  while (!t.done()) r.losses.push_back(t.run_step(source).loss);
  r.params.assign(t.params().begin(), t.params().end());
  r.state.assign(t.optimizer_state().begin(), t.optimizer_state().end());
  return r;
}

/// What one step of each policy sends: (reduce_scatter, all_gather, all_reduce) calls.
struct Design {
  std::int64_t reduce_scatters, all_gathers, all_reduces;
};

template <class Policy>
void check_policy(test::MpiHarness& h, const char* name, Comm& world, const Reference& ref, Design design,
                  std::size_t bucket_bytes) {
  const int ranks = world.size();
  Counting counted(world);
  Net net(small_config());
  const auto tc_global = config(rows_per_rank * ranks);
  const auto tc = config(rows_per_rank);
  Policy policy = [&] {
    if constexpr (std::is_same_v<Policy, parallel::DataParallel<Counting>>)
      return Policy(counted, bucket_bytes);
    else
      return Policy(counted);
  }();
  train::Trainer<Net, optim::AdamW, Policy> t(net, optim::AdamW{}, tc, policy);
  const auto source = test::share(test::counting_source(3, tc_global, 16), world.rank(), rows_per_rank);
  counted.reset();  // the initial broadcast is set-up, not a step
  for (std::int64_t s = 0; s < steps; ++s) {
    const train::StepStats st = t.run_step(source);
    h.check(std::abs(st.loss - ref.losses[static_cast<std::size_t>(s)]) <= 1e-5 * ref.losses[static_cast<std::size_t>(s)],
           "step " + std::to_string(s) + ": loss " + std::to_string(st.loss) + ", one process " +
               std::to_string(ref.losses[static_cast<std::size_t>(s)]));
  }
  const double diff = max_abs_diff(t.params(), ref.params), scale = max_abs(ref.params);
  h.check(diff <= 2e-5 * scale, "parameters differ from one process's by " + std::to_string(diff) + " (max |p| " +
                                   std::to_string(scale) + ")");

  const auto per_step = [&](Collective c) { return counted.tally(c).calls / steps; };
  const std::string report = counted.report();
  h.check(per_step(Collective::reduce_scatter) == design.reduce_scatters, report);
  h.check(per_step(Collective::all_gather) == design.all_gathers, report);
  h.check(per_step(Collective::all_reduce) == design.all_reduces, report);
  h.check(counted.tally(Collective::broadcast).calls == 0 && counted.tally(Collective::all_to_all).calls == 0, report);
  if (world.rank() == 0)
    std::printf("%s, %d ranks: parameters within %.2e of one process's (max |p| %.3f); %s over %lld steps\n", name,
                ranks, diff, scale, report.c_str(), static_cast<long long>(steps));
}

/// The optimizer state each rank holds, measured from its buffers, and their sum over the ranks.
template <class Buffers>
void check_state_share(test::MpiHarness& h, const char* name, Comm& world, const Buffers& b, std::size_t n,
                       bool sharded) {
  const std::size_t full = 2 * n * sizeof(float);  // AdamW: two slots
  const std::size_t mine = b.optimizer_state_bytes();
  std::int64_t total = static_cast<std::int64_t>(mine), largest = total;
  world.all_reduce(std::span<std::int64_t>(&total, 1), parallel::ReduceOp::sum);
  world.all_reduce(std::span<std::int64_t>(&largest, 1), parallel::ReduceOp::max);
  const auto ranks = static_cast<std::size_t>(world.size());
  if (sharded) {
    h.check(static_cast<std::size_t>(total) == full, "state bytes summed over ranks " + std::to_string(total) +
                                                        ", expected the whole state " + std::to_string(full));
    h.check(static_cast<std::size_t>(largest) <= 2 * sizeof(float) * ((n + ranks - 1) / ranks),
           "largest rank's state " + std::to_string(largest) + " bytes, more than 1/" + std::to_string(ranks));
  } else {
    h.check(mine == full, "data parallelism replicates the state: " + std::to_string(mine) + " bytes, expected " +
                             std::to_string(full));
  }
  if (world.rank() == 0)
    std::printf("%s, %zu ranks: optimizer state %zu bytes on rank 0 (whole state %zu bytes)\n", name, ranks, mine, full);
}

void check_zero_checkpoint(test::MpiHarness& h, Comm& world, const Reference& ref) {
  using Policy = parallel::Zero<parallel::ZeroStage::gradients, Comm>;
  const int ranks = world.size();
  const auto tc_global = config(rows_per_rank * ranks);
  const auto tc = config(rows_per_rank);
  const auto source = test::share(test::counting_source(3, tc_global, 16), world.rank(), rows_per_rank);
  Net net(small_config());
  train::Trainer<Net, optim::AdamW, Policy> full(net, optim::AdamW{}, tc, Policy(world));
  while (!full.done()) (void)full.run_step(source);
  check_state_share(h, "ZeRO-2", world, full.buffers(), net.layout().size(), true);

  // The gathered state equals one process's (so a checkpoint holds the usual state).
  full.to_host();
  const double sdiff = max_abs_diff(full.optimizer_state(), ref.state);
  h.check(sdiff <= 1e-5 * max_abs(ref.state) + 1e-12, "gathered optimizer state differs by " + std::to_string(sdiff));

  // Stop after step 1, save from rank 0, resume on every rank in a fresh trainer.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "reason_parallel_ckpt";
  std::filesystem::path path = dir / ("np" + std::to_string(ranks) + ".safetensors");
  Net net2(small_config());
  train::Trainer<Net, optim::AdamW, Policy> first(net2, optim::AdamW{}, tc, Policy(world));
  (void)first.run_step(source);
  if (world.rank() == 0) std::filesystem::create_directories(dir);
  train::save_checkpoint(path, first);  // every rank gathers the state shards; rank 0 writes
  world.barrier();
  Net net3(small_config());
  train::Trainer<Net, optim::AdamW, Policy> resumed(net3, optim::AdamW{}, tc, Policy(world));
  train::load_checkpoint(path, resumed);
  while (!resumed.done()) (void)resumed.run_step(source);
  h.check(max_abs_diff(resumed.params(), full.params()) == 0.0, "a resumed ZeRO run differs from the uninterrupted one");

  // The file records the global batch: one process on the whole batch takes it up and finishes like
  // the one-process run.
  Net net4(small_config());
  train::Trainer<Net, optim::AdamW> alone(net4, optim::AdamW{}, tc_global);
  train::load_checkpoint(path, alone);
  while (!alone.done()) (void)alone.run_step(test::counting_source(3, tc_global, 16));
  const double diff = max_abs_diff(alone.params(), ref.params);
  h.check(diff <= 2e-5 * max_abs(ref.params), "one process resumed from the ZeRO checkpoint differs from the one-process "
                                              "run by " + std::to_string(diff));
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(path);

  // Mid-step each rank holds only its own tokens' gradients: saving there is refused (at one rank it is a
  // one-process checkpoint).
  if (ranks > 1 && micro_batches > 1) {
    Net net5(small_config());
    train::Trainer<Net, optim::AdamW, Policy> mid(net5, optim::AdamW{}, tc, Policy(world));
    (void)mid.run_micro(source);
    h.expect_error_containing([&] { train::save_checkpoint(path, mid); }, "a checkpoint is taken between steps");
  }
}

}  // namespace

int main(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);
  test::MpiHarness h;
  Comm world = Comm::world();
  const int ranks = world.size();
  const Reference ref = single_process(ranks);
  const std::size_t n = Net(small_config()).layout().size();
  // Data parallel with 16 KiB buckets: ceil(n floats / 4096) gradient all-reduces, plus the step's
  // token count and loss.
  const std::size_t bucket = 16 << 10;
  const auto buckets = static_cast<std::int64_t>((n * sizeof(float) + bucket - 1) / bucket);
  h.run("data parallel equals one process; its collectives", [&](test::MpiHarness& t) {
    check_policy<parallel::DataParallel<Counting>>(t, "data parallel", world, ref, {0, 0, buckets + 2}, bucket);
  });
  h.run("data parallel replicates the optimizer state", [&](test::MpiHarness& t) {
    Net net(small_config());
    using DP = parallel::DataParallel<Comm>;
    train::Trainer<Net, optim::AdamW, DP> tr(net, optim::AdamW{}, config(rows_per_rank), DP(world));
    check_state_share(t, "data parallel", world, tr.buffers(), n, false);
  });
  // ZeRO-1: one reduce-scatter and one all-gather; all-reduces: tokens, norm, loss.
  h.run("ZeRO-1 equals one process; its collectives", [&](test::MpiHarness& t) {
    check_policy<parallel::Zero<parallel::ZeroStage::optimizer_state, Counting>>(t, "ZeRO-1", world, ref, {1, 1, 3}, 0);
  });
  // ZeRO-2: a reduce-scatter per micro-batch.
  h.run("ZeRO-2 equals one process; its collectives", [&](test::MpiHarness& t) {
    check_policy<parallel::Zero<parallel::ZeroStage::gradients, Counting>>(t, "ZeRO-2", world, ref,
                                                                            {micro_batches, 1, 3}, 0);
  });
  h.run("ZeRO-2 shards the state; its checkpoint resumes bit for bit, and on one process",
        [&](test::MpiHarness& t) { check_zero_checkpoint(t, world, ref); });
  return h.finish();
}
