// tests/parallel/split_checkpoint.hpp — the checkpoint case every split-model policy shares.
//
// A split run saves after its first step (every rank gathers its share into the unsplit layout,
// rank 0 writes); a fresh split run that loads the file finishes bit-identical to the uninterrupted
// one, and one process that loads it — the file is a single-process checkpoint — finishes within
// fp32 tolerance of it (its sums run in another order).
#pragma once

#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "reason/model/config.hpp"
#include "reason/model/sharding.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/train/checkpoint.hpp"
#include "parallel/harness.hpp"

namespace reason::test {

/// make_split(): a split trainer of the run (its model built by the caller and kept alive), trained on
/// split_source (the rank's share of the batch, or all of it); make_single(): the same run in one
/// process on single_source, the whole batch (a checkpoint records the global batch). `name` keeps
/// the files of policies apart.
template <class SplitTrainer, class SingleTrainer>
void check_split_checkpoint(MpiHarness& h, parallel::MpiCommunicator& world, const char* name,
                            const std::function<SplitTrainer&()>& make_split,
                            const std::function<SingleTrainer&()>& make_single, const train::BatchSource& split_source,
                            const train::BatchSource& single_source) {
  const train::BatchSource& source = split_source;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "reason_split_ckpt";
  const std::filesystem::path path = dir / (std::string(name) + "_np" + std::to_string(world.size()) + ".safetensors");
  if (world.rank() == 0) std::filesystem::create_directories(dir);

  SplitTrainer& whole = make_split();
  (void)whole.run_step(source);
  train::save_checkpoint(path, whole);
  world.barrier();
  while (!whole.done()) (void)whole.run_step(source);
  const auto want = whole.buffers().gather_full();

  SplitTrainer& resumed = make_split();
  train::load_checkpoint(path, resumed);
  h.check(resumed.step() == 1, "the resumed split run stands at step " + std::to_string(resumed.step()));
  while (!resumed.done()) (void)resumed.run_step(source);
  const auto got = resumed.buffers().gather_full();
  h.check(got == want, std::string(name) + ": a split run resumed from its checkpoint differs from the uninterrupted one");

  {
    SingleTrainer& single = make_single();
    train::load_checkpoint(path, single);
    while (!single.done()) (void)single.run_step(single_source);
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      diff = std::max(diff, std::abs(double(want[i]) - double(single.params()[i])));
      scale = std::max(scale, std::abs(double(want[i])));
    }
    h.check(diff <= 2e-5 * scale, std::string(name) + ": one process resumed from the split checkpoint differs by " +
                                      std::to_string(diff) + " (max |p| " + std::to_string(scale) + ")");
  }
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(path);
}

/// The case for a policy whose ranks all train on the whole batch (tensor, pipeline): the split model
/// built with `sharding` and trained with Policy(comm), one process on the same batches.
template <class Net, class Policy, class Comm>
void check_whole_batch_checkpoint(MpiHarness& h, parallel::MpiCommunicator& world, const char* name,
                                  const model::Config& cfg, const train::TrainConfig& tc,
                                  const model::Sharding<float>& sharding, Comm& comm, const train::BatchSource& source) {
  using Split = train::Trainer<Net, optim::AdamW, Policy>;
  using Single = train::Trainer<Net, optim::AdamW>;
  std::vector<std::unique_ptr<Net>> nets;  // each trainer's model, alive as long as the trainers
  std::vector<std::unique_ptr<Split>> split;
  std::vector<std::unique_ptr<Single>> single;
  check_split_checkpoint<Split, Single>(
      h, world, name,
      [&]() -> Split& {
        nets.push_back(std::make_unique<Net>(cfg, sharding));
        return *split.emplace_back(std::make_unique<Split>(*nets.back(), optim::AdamW{}, tc, Policy(comm)));
      },
      [&]() -> Single& {
        nets.push_back(std::make_unique<Net>(cfg));
        return *single.emplace_back(std::make_unique<Single>(*nets.back(), optim::AdamW{}, tc));
      },
      source, source);
}

}  // namespace reason::test
