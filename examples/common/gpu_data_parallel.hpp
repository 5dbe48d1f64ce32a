// examples/common/gpu_data_parallel.hpp — `mpirun -np N sft --device cuda --dp N` (r1 the same): data
// parallel over GPUs, one GPU per rank, the gradients all-reduced by NCCL on the model's stream
// (parallel::DataParallel<parallel::NcclCommunicator>), NCCL's unique id broadcast over MPI's world.
//
// Rank r drives GPU l, its index among the ranks on its node: Open MPI's OMPI_COMM_WORLD_LOCAL_RANK,
// MPICH's MPI_LOCALRANKID or Slurm's SLURM_LOCALID (else the world rank, for one node). So N ranks on
// a node need N GPUs there: NCCL refuses two ranks on one GPU, and a missing GPU is reported by every
// rank before NCCL starts (NcclCommunicator::from_mpi agrees on failures over MPI). ZeRO and the model
// splits are host-only; the examples refuse them with --device cuda.
// Compiled where the example links reason::nccl and reason::mpi (a CUDA build with NCCL and MPI).
#pragma once

#include <cstdlib>

#include "common/parallel_options.hpp"

#if REASON_WITH_NCCL && REASON_WITH_MPI
#include "reason/parallel/data_parallel.hpp"
#include "reason/parallel/nccl_communicator.hpp"
#endif

namespace examples {

/// --device cuda over `ranks` processes: one GPU per rank, data parallel over NCCL, is all the
/// examples run there. An OptionError (every rank alike) for a model split, ZeRO, or a build without
/// NCCL.
inline void check_gpu_parallel(const ParallelOptions& p, int ranks, const char* program) {
  if (ranks == 1) return;
  if (p.split() != Split::data)
    option_error(program, ": ", p.flag(), " ", p.ranks(), " with --device cuda: ", p.kind(),
                 " parallelism runs on the CPU (MPI); on GPUs the examples run data parallel (--dp N over NCCL)");
  if (p.zero != 0)
    option_error(program, ": --zero ", p.zero, " with --device cuda: ZeRO runs on the CPU; --dp N on GPUs replicates "
                 "the optimizer state");
#if !(REASON_WITH_NCCL && REASON_WITH_MPI)
  option_error(program, ": --dp ", p.dp, " with --device cuda needs NCCL, and this build has none (reason::nccl: nccl.h "
               "and libnccl at configure time)");
#endif
}

#if REASON_WITH_NCCL && REASON_WITH_MPI

/// This rank's index among the ranks on its node, as the launcher says (the world rank if none does).
[[nodiscard]] inline int node_local_rank(int world_rank) {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* e = std::getenv(v); e != nullptr && *e != '\0') return std::atoi(e);
  return world_rank;
}

/// The NCCL communicator of a GPU data-parallel run (alive as long as the trainers that use it) and
/// the trainers' policy over it.
class NcclDataParallel {
 public:
  using Comm = reason::parallel::NcclCommunicator;
  using Policy = reason::parallel::DataParallel<Comm>;

  /// Every rank calls it (a collective over MPI's world); the rank's GPU becomes the current device.
  explicit NcclDataParallel(Ranks& ranks) : comm_(Comm::from_mpi(ranks.world(), node_local_rank(ranks.rank()))) {}
  NcclDataParallel(const NcclDataParallel&) = delete;
  NcclDataParallel& operator=(const NcclDataParallel&) = delete;

  [[nodiscard]] Policy policy() { return Policy(comm_); }
  [[nodiscard]] int device() const { return comm_.device(); }

 private:
  Comm comm_;
};

#endif

}  // namespace examples
