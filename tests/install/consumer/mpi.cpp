// The MPI component from outside: a session, the world communicator, an all-reduce; and the
// single-process communicator, which needs no component at all.
#include <reason/parallel/mpi_communicator.hpp>
#include <reason/parallel/single_process.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  reason::parallel::MpiSession session(&argc, &argv);
  auto world = reason::parallel::MpiCommunicator::world();
  std::vector<double> x{1.0, 2.0};
  world.all_reduce(x, reason::parallel::ReduceOp::sum);
  reason::parallel::SingleProcess alone;
  alone.all_reduce(x, reason::parallel::ReduceOp::max);
  std::printf("consumer_mpi: rank %d of %d, %g %g\n", world.rank(), world.size(), x[0], x[1]);
  return x[0] == world.size() ? 0 : 1;
}
