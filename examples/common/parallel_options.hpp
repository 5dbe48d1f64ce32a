// examples/common/parallel_options.hpp — how the examples run as several processes: the --dp and
// --zero flags (and --tp, --ep, --pp where a program offers them), MPI's lifetime, which rank prints
// and writes, one exit status for every rank, and the data-parallel policy their trainers get.
//
//   mpirun -np N sft --dp N [--zero 0|1|2] ...        (r1 the same)
//   mpirun -np N sft --tp N | --ep N | --pp N ...     (r1 the same; the model split: common/model_split.hpp)
//   --dp N     data parallel over N ranks (default 1): every rank holds the whole model and trains
//              on its share of each step's batch; the global batch stays what --batch (r1:
//              --sft-batch, --prompts) says and must divide by N. Gradients are summed over the
//              ranks and every rank takes the same step (parallel::DataParallel), so a run on N
//              ranks is the one-process run up to floating-point rounding. N must equal the number
//              of processes mpirun started.
//   --zero S   with --dp >= 2: ZeRO stage 1 shards the AdamW state over the ranks, stage 2 also the
//              accumulated gradients (parallel::Zero); 0 (default) replicates both.
//   --tp N, --ep N, --pp N   the model split over N ranks: tensor parallel (heads and FFN width),
//              expert parallel (an MoE model's experts; each rank trains on its share of the batch,
//              which must divide by N, like --dp's) or pipeline parallel (consecutive layers per
//              rank). A program offers the flags of the splits it runs (add_parallel_options'
//              model_splits: sft and r1 all three).
// One split at a time: at most one of --dp, --tp, --ep, --pp above 1 (Ranks refuses several, naming
// them), and its N must equal the number of processes (the messages name the flag in use).
// When MPI starts: only when one of them is above 1 or when an MPI launcher started the process
// (mpirun sets OMPI_COMM_WORLD_SIZE; Hydra PMI_SIZE; PMIx PMIX_RANK). A plain run never touches MPI
// and trains exactly as before; `mpirun -np 2 sft` without --dp 2 (or another split) is refused
// rather than run as two copies writing the same files; `sft --dp 2` without mpirun is refused (a
// world of 1). --dp 1 trains with the one-process trainer (train::SingleProcess), under mpirun -np 1
// or not.
// Output: rank 0 prints (the other ranks' stdout goes to /dev/null; their stderr stays) and writes
// metrics, reports and checkpoints (the trainers' save_checkpoint: every rank calls, rank 0 writes).
// Exit status, the same on every rank: an option error every rank detects alike (OptionError) is
// reported once, by rank 0, and every rank returns 1 after MPI_Finalize; any other exception ends
// the whole job at once with MPI_Abort (status 1), naming the rank, rather than leaving the other
// ranks waiting in a collective for it.
// Builds without MPI (no reason::mpi target) run one process; there --dp (--tp, ...) > 1 is refused.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include "reason/core/error.hpp"
#include "reason/train/token_batch.hpp"
#include "reason/train/train_buffers.hpp"

#if REASON_WITH_MPI
#include "reason/parallel/data_parallel.hpp"
#include "reason/parallel/mpi_communicator.hpp"
#include "reason/parallel/mpi_session.hpp"
#include "reason/parallel/zero.hpp"
#endif

namespace examples {

/// The ways a run is spread over processes, one at a time: data parallel (--dp; also a run of one
/// process) or the model split over the ranks (--tp, --ep, --pp).
enum class Split { data, tensor, expert, pipeline };

/// How the run is spread over processes.
struct ParallelOptions {
  int dp = 1;    // data-parallel ranks (= the MPI world size)
  int zero = 0;  // with dp >= 2: ZeRO stage 0 (replicated), 1 (optimizer state sharded), 2 (+ gradients)
  int tp = 1;    // tensor-parallel ranks: attention heads and FFN width split over them
  int ep = 1;    // expert-parallel ranks: an MoE model's routed experts spread over them
  int pp = 1;    // pipeline stages: consecutive layers on each rank

  /// The split in use: the one whose flag is above 1 (data parallel when none is; Ranks refuses several).
  [[nodiscard]] Split split() const {
    return tp > 1 ? Split::tensor : ep > 1 ? Split::expert : pp > 1 ? Split::pipeline : Split::data;
  }
  /// The split's flag ("--dp", "--tp", "--ep", "--pp"), its ranks, and its kind ("data", "tensor",
  /// "expert", "pipeline").
  [[nodiscard]] const char* flag() const { return flag(split()); }
  [[nodiscard]] int ranks() const { return ranks(split()); }
  [[nodiscard]] const char* kind() const { return kinds[index(split())]; }
  /// Ranks that each train on their own share of a step's batch: --dp's or --ep's (tensor-parallel
  /// ranks and pipeline stages all see the whole batch).
  [[nodiscard]] int data_ranks() const { return dp * ep; }

  [[nodiscard]] static const char* flag(Split s) { return flags[index(s)]; }
  [[nodiscard]] int ranks(Split s) const { return this->*member(s); }
  [[nodiscard]] int& ranks(Split s) { return this->*member(s); }

 private:
  static int ParallelOptions::*member(Split s) {
    switch (s) {
      case Split::tensor: return &ParallelOptions::tp;
      case Split::expert: return &ParallelOptions::ep;
      case Split::pipeline: return &ParallelOptions::pp;
      case Split::data: break;
    }
    return &ParallelOptions::dp;
  }
  static constexpr const char* flags[] = {"--dp", "--tp", "--ep", "--pp"};
  static constexpr const char* kinds[] = {"data", "tensor", "expert", "pipeline"};
  static constexpr int index(Split s) { return static_cast<int>(s); }
};

/// --dp and --zero, and the flags of the model splits in `model_splits`: those the program runs
/// (sft: all three); the others stay 1 and are not offered.
inline void add_parallel_options(CLI::App& app, ParallelOptions& o, std::initializer_list<Split> model_splits = {}) {
  app.add_option("--dp", o.dp,
                 "data-parallel ranks: start the run with `mpirun -np N` and pass --dp N (the global batch is split "
                 "over the ranks)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--zero", o.zero,
                 "with --dp >= 2: ZeRO stage 1 shards the optimizer state over the ranks, 2 also the gradients")
      ->check(CLI::IsMember({0, 1, 2}))
      ->capture_default_str();
  static constexpr const char* help[] = {
      nullptr,
      "tensor-parallel ranks: `mpirun -np N` with --tp N splits attention heads and FFN width over them (dense "
      "models, multi_head / sliding_window / top_k attention); every rank trains on the whole batch",
      "expert-parallel ranks: `mpirun -np N` with --ep N spreads an MoE model's routed experts over them; each rank "
      "trains on its share of the batch",
      "pipeline stages: `mpirun -np N` with --pp N puts consecutive layers on each rank (dense models); each step's "
      "micro-batches run in the 1F1B schedule"};
  for (Split s : model_splits)
    if (s != Split::data)  // (--dp is above)
      app.add_option(ParallelOptions::flag(s), o.ranks(s), help[static_cast<int>(s)])
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
}

/// An error every rank raises alike, before any collective (an option check): rank 0 reports it
/// and every rank exits with status 1, without MPI_Abort.
struct OptionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void option_error(const Args&... args) {
  throw OptionError(reason::detail::concat(args...));
}

/// Whether an MPI launcher started this process (Open MPI, MPICH's Hydra, a PMIx launcher).
[[nodiscard]] inline bool under_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (const char* e = std::getenv(v); e != nullptr && *e != '\0') return true;
  return false;
}

/// Rows [rank b, (rank + 1) b) of each micro-batch `global` draws, b = its rows / ranks: a rank's
/// share of a step's batch (the same padded length as the whole batch, so the data are exactly
/// the one-process run's).
[[nodiscard]] inline reason::train::BatchSource batch_share(reason::train::BatchSource global, int rank, int ranks) {
  if (ranks == 1) return global;
  return [global = std::move(global), rank, ranks](std::int64_t step, int micro, reason::train::TokenBatch& b) {
    reason::train::TokenBatch all;
    global(step, micro, all);
    const reason::index_t rows = all.batch / ranks;
    b.resize(rows, all.seq);
    const auto first = static_cast<std::ptrdiff_t>(rank * rows * all.seq), count = static_cast<std::ptrdiff_t>(rows * all.seq);
    std::copy_n(all.tokens.begin() + first, count, b.tokens.begin());
    std::copy_n(all.targets.begin() + first, count, b.targets.begin());
  };
}

#if REASON_WITH_MPI
/// The buffers of MpiDataParallel: parallel::DataParallel's or parallel::Zero's (stage 1 or 2),
/// chosen at run time, behind the one interface the trainers use. Host models only.
template <class Net, class T, class Opt>
class MpiDataParallelBuffers {
  using Comm = reason::parallel::MpiCommunicator;
  using Replicated = reason::parallel::DataParallelBuffers<reason::train::train_buffers_t<Net, T, Opt>, Comm>;
  using Zero1 = reason::parallel::ZeroBuffers<T, Opt, reason::parallel::ZeroStage::optimizer_state, Comm>;
  using Zero2 = reason::parallel::ZeroBuffers<T, Opt, reason::parallel::ZeroStage::gradients, Comm>;
  using Any = std::variant<Replicated, Zero1, Zero2>;

 public:
  MpiDataParallelBuffers(const Net& net, std::span<const T> initial, bool with_reference, Comm& comm, int zero)
      : b_(make(net, initial, with_reference, comm, zero)) {}

  [[nodiscard]] T* params() { return visit([](auto& b) { return b.params(); }); }
  [[nodiscard]] const T* params() const { return visit([](const auto& b) { return b.params(); }); }
  [[nodiscard]] T* grads() { return visit([](auto& b) { return b.grads(); }); }
  [[nodiscard]] const T* reference() const { return visit([](const auto& b) { return b.reference(); }); }
  void zero_grads() { visit([](auto& b) { b.zero_grads(); }); }
  void after_backward() {
    if (Zero2* z = std::get_if<Zero2>(&b_)) z->after_backward();
  }
  double clip_grad_norm(double max_norm, double unscale = 1.0) {
    return visit([&](auto& b) { return b.clip_grad_norm(max_norm, unscale); });
  }
  void step(const Opt& opt, double lr, std::int64_t t) { visit([&](auto& b) { b.step(opt, lr, t); }); }
  void reset_reference() { visit([](auto& b) { b.reset_reference(); }); }
  void sum_across_ranks(std::span<double> values) { visit([&](auto& b) { b.sum_across_ranks(values); }); }
  [[nodiscard]] int rank() const { return visit([](const auto& b) { return b.rank(); }); }

  [[nodiscard]] std::span<T> host_params() { return visit([](auto& b) { return std::span<T>(b.host_params()); }); }
  [[nodiscard]] std::span<const T> host_params() const {
    return visit([](const auto& b) { return std::span<const T>(b.host_params()); });
  }
  [[nodiscard]] std::span<T> host_grads() { return visit([](auto& b) { return std::span<T>(b.host_grads()); }); }
  [[nodiscard]] std::span<const T> host_grads() const {
    return visit([](const auto& b) { return std::span<const T>(b.host_grads()); });
  }
  [[nodiscard]] std::span<T> host_reference() { return visit([](auto& b) { return std::span<T>(b.host_reference()); }); }
  [[nodiscard]] std::span<const T> host_reference() const {
    return visit([](const auto& b) { return std::span<const T>(b.host_reference()); });
  }
  [[nodiscard]] std::span<T> host_state() { return visit([](auto& b) { return std::span<T>(b.host_state()); }); }
  [[nodiscard]] std::span<const T> host_state() const {
    return visit([](const auto& b) { return std::span<const T>(b.host_state()); });
  }
  void to_host() const { visit([](const auto& b) { b.to_host(); }); }
  void from_host() { visit([](auto& b) { b.from_host(); }); }
  /// Bytes of optimizer state this rank holds.
  [[nodiscard]] std::size_t optimizer_state_bytes() const {
    return visit([](const auto& b) { return b.optimizer_state_bytes(); });
  }

 private:
  static Any make(const Net& net, std::span<const T> initial, bool with_reference, Comm& comm, int zero) {
    using reason::parallel::default_bucket_bytes;
    if (zero == 1) return Any(std::in_place_type<Zero1>, net.layout(), initial, with_reference, comm);
    if (zero == 2) return Any(std::in_place_type<Zero2>, net.layout(), initial, with_reference, comm);
    REASON_CHECK(zero == 0, "MpiDataParallel: ZeRO stage ", zero, " (0, 1 or 2)");
    using Base = reason::train::train_buffers_t<Net, T, Opt>;
    return Any(std::in_place_type<Replicated>, reason::train::make_train_buffers<Base>(net, initial, with_reference),
               comm, default_bucket_bytes);
  }
  template <class F>
  decltype(auto) visit(F&& f) {
    return std::visit(std::forward<F>(f), b_);
  }
  template <class F>
  decltype(auto) visit(F&& f) const {
    return std::visit(std::forward<F>(f), b_);
  }

  Any b_;
};

/// The policy of a data-parallel run over MPI's world: train::Trainer<Net, Opt, MpiDataParallel>,
/// rl::GrpoTrainer<..., MpiDataParallel>, or make_buffers for a loop of one's own.
struct MpiDataParallel {
  reason::parallel::MpiCommunicator* comm = nullptr;
  int zero = 0;

  template <class Net, class T, class Opt>
  using buffers = MpiDataParallelBuffers<Net, T, Opt>;

  template <class Opt, class Net, class T>
  buffers<Net, T, Opt> make_buffers(const Net& net, std::span<const T> initial, bool with_reference) const {
    static_assert(!requires { typename Net::template train_buffers<Opt>; },
                  "examples::MpiDataParallel: host models only (a CUDA model's data parallelism needs NCCL)");
    REASON_CHECK(comm != nullptr, "examples::MpiDataParallel: no communicator");
    return buffers<Net, T, Opt>(net, initial, with_reference, *comm, zero);
  }
};
#endif

/// The processes of one run (one, or the MPI world), created at the top of main after the flags
/// are parsed and alive until the end. See the file comment.
class Ranks {
 public:
  Ranks(const ParallelOptions& o, const char* program) : options_(o), program_(program) {
#if REASON_WITH_MPI
    if (o.ranks() > 1 || under_mpi_launcher()) {  // (ranks() > 1: any of --dp, --tp, --ep, --pp is)
      session_.emplace();
      world_.emplace(reason::parallel::MpiCommunicator::world());
      rank_ = world_->rank();
      size_ = world_->size();
    }
#else
    if (under_mpi_launcher()) launched_ = launcher_size();
#endif
    if (rank_ != 0) (void)std::freopen("/dev/null", "w", stdout);  // rank 0 prints
  }
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  /// Whether this process writes (and prints): rank 0.
  [[nodiscard]] bool writer() const { return rank_ == 0; }
  [[nodiscard]] const ParallelOptions& options() const { return options_; }

  /// `global` rows split over the ranks that each train on their own data (--dp's, --ep's; under
  /// --tp and --pp every rank has all of them): this rank's count; an OptionError naming `flag` when
  /// they do not divide.
  [[nodiscard]] reason::index_t share(reason::index_t global, const char* flag) const {
    const int n = options_.data_ranks();
    if (global % n != 0)
      option_error(program_, ": ", flag, " ", global, " does not split over ", options_.flag(), " ", n,
                   " ranks (choose a multiple of ", n, ")");
    return global / n;
  }

  /// True on every rank when `flag` is true on any (an all-reduce when there are several ranks).
  [[nodiscard]] bool any(bool flag) {
#if REASON_WITH_MPI
    if (size_ > 1) {
      std::int32_t v = flag ? 1 : 0;
      world_->all_reduce(std::span<std::int32_t>(&v, 1), reason::parallel::ReduceOp::max);
      return v != 0;
    }
#endif
    return flag;
  }

#if REASON_WITH_MPI
  /// The trainers' policy of a data-parallel run (size() > 1 and --dp; a model split's:
  /// examples/common/model_split.hpp).
  [[nodiscard]] MpiDataParallel policy() { return MpiDataParallel{&world(), options_.zero}; }
  /// MPI's world (size() > 1, or under a launcher).
  [[nodiscard]] reason::parallel::MpiCommunicator& world() {
    REASON_CHECK(world_.has_value(), program_, ": MPI did not start (one process)");
    return *world_;
  }
#endif

  /// Runs body(*this) after the option checks and returns its exit status, the same on every rank:
  /// see the file comment.
  template <class Body>
  int run(Body&& body) {
    try {
      check();
      return body(*this);
    } catch (const OptionError& e) {
      if (writer()) std::fprintf(stderr, "%s\n", e.what());
      return 1;
    } catch (const std::exception& e) {
      if (size_ == 1) {
        std::fprintf(stderr, "%s: error: %s\n", program_, e.what());
        return 1;
      }
      std::fprintf(stderr, "%s: error on rank %d of %d: %s\n%s: rank %d ends every rank (MPI_Abort)\n", program_, rank_,
                   size_, e.what(), program_, rank_);
      std::fflush(stderr);
      std::fflush(stdout);
#if REASON_WITH_MPI
      world_->abort(1);
#endif
      return 1;
    }
  }

 private:
  /// The options against the processes there are (the same verdict on every rank).
  void check() const {
    // One split at a time (the library's model splits, and these examples, take one kind per run).
    std::string given;  // "--dp 2 and --tp 2"
    int splits = 0;
    for (Split s : {Split::data, Split::tensor, Split::expert, Split::pipeline}) {
      if (options_.ranks(s) == 1) continue;
      given += (splits++ == 0 ? "" : " and ") + std::string(ParallelOptions::flag(s)) + " " +
               std::to_string(options_.ranks(s));
    }
    if (splits > 1)
      option_error(program_, ": ", given, " given together; a run is split one way at a time: keep one of them");
    const char* flag = options_.flag();  // the split in use (--dp when none is)
    const int n = options_.ranks();
#if REASON_WITH_MPI
    if (n != size_) {
      if (size_ == 1)
        option_error(program_, ": ", flag, " ", n, " needs ", n, " processes; start it with `mpirun -np ", n, " ",
                     program_, " ", flag, " ", n, " ...`");
      option_error(program_, ": started as ", size_, " processes but ", flag, " is ", n, "; pass ", flag, " ", size_,
                   " (", options_.kind(), " parallel over every process)");
    }
#else
    if (n > 1 || launched_ > 1)
      option_error(program_, ": ", n > 1 ? std::string(flag) + " > 1" : std::string("a run under mpirun"),
                   " needs MPI, and this build has none (install libopenmpi-dev openmpi-bin and configure again)");
#endif
    if (options_.zero != 0 && options_.dp < 2)
      option_error(program_, ": --zero ", options_.zero, " shards over data-parallel ranks; it needs --dp 2 or more");
  }

#if !REASON_WITH_MPI
  static int launcher_size() {  // (a PMIx launcher that names no size: taken as one process)
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
      if (const char* e = std::getenv(v); e != nullptr && *e != '\0') return std::atoi(e);
    return 1;
  }
  int launched_ = 1;
#endif

  ParallelOptions options_;
  const char* program_;
  int rank_ = 0, size_ = 1;
#if REASON_WITH_MPI
  std::optional<reason::parallel::MpiSession> session_;  // MPI_Finalize after world_ is released
  std::optional<reason::parallel::MpiCommunicator> world_;
#endif
};

}  // namespace examples
