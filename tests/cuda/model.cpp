// gpu::DenseTransformer and gpu::Trainer against the host model on the same parameters and tokens.
//
//   forward / backward   fp32 on the GPU against the host model in float64 (the same parameters
//                        widened): the loss within 2e-5 relative, every parameter tensor's gradient
//                        within 2e-4 of the tensor's largest reference entry (cuBLASLt fp32 GEMMs and
//                        fp32 attention sum in another order than the host; the bound is ~100x the
//                        observed float rounding of a depth-2 model, far below any real error, which
//                        shows up at O(1)). bf16: the loss within 2e-2 relative, each tensor's
//                        gradient with cosine similarity >= 0.99 and relative L2 error <= 0.08 (bf16
//                        activations carry 8 significant bits; errors of a few 2^-8 per product
//                        accumulate through the layers). fp16 (11 significant bits, 8x finer, held
//                        to about 4x tighter): loss within 5e-3, cosine >= 0.998, relative L2 <=
//                        0.02; its seed gradient is scaled by 2^10 (as a loss-scaled trainer does,
//                        keeping small activation gradients above fp16's underflow) and the
//                        gradients divided by 2^10 again (exact: a power of two).
//   forward_objective    a caller's objective on the logits (here one whose gradient depends on them,
//                        over two chunks of rows): loss and gradients against the host model in
//                        float64 with the tolerances above (fp16: the objective scaled by 2^10, loss
//                        and gradients divided back); with grads null it only evaluates.
//   training             5 AdamW steps, GPU against the host trainer in fp32 on the same batches:
//                        every step's loss within 1e-4 relative (fp32), 2e-2 (bf16) or 5e-3 (fp16,
//                        with the trainer's default loss scaling).
//   GRPO                 rl::GrpoTrainer on the GPU model (its buffers on the device) against the
//                        host model, 3 steps in fp32: the same completions (reward, length), losses
//                        within 1e-4, parameter updates within 1e-2 relative L2 (AdamW divides by
//                        sqrt(v), which magnifies rounding in near-zero gradients); a GPU checkpoint
//                        loads into a host trainer bit for bit and resumes bit-identically.
//   decoding             decode_step's logits at every position against logits() of the whole
//                        sequence: 1e-4 (fp32), 5e-2 (bf16) and 1e-2 (fp16) of the logits' scale; greedy
//                        generation through infer::generate_greedy runs unchanged on the GPU model.
//   checkpoints          a GPU run saved mid-accumulation and loaded into a host trainer and a new GPU
//                        trainer: the same parameters bit for bit, and the resumed GPU run equals
//                        the uninterrupted one bit for bit.
//   errors               token ids out of range, backward without forward, shapes beyond reserve().
// Exit status: 0 pass, 1 a check failed, 77 no GPU (CTest: skipped), 2 an unexpected error.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/model/gpu_transformer.hpp"
#include "reason/model/transformer.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/grpo_checkpoint.hpp"
#include "reason/rl/grpo_trainer.hpp"
#include "reason/train/checkpoint.hpp"
#include "reason/train/gpu_trainer.hpp"
#include "reason/train/trainer.hpp"
#if REASON_TEST_WITH_NCCL
#include "reason/parallel/counting.hpp"
#include "reason/parallel/data_parallel.hpp"
#include "reason/parallel/nccl_communicator.hpp"
#endif
#include "cuda/cuda_test_util.hpp"
#include "rl/tiny_policy.hpp"

using namespace reason;

namespace {

int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

constexpr int D = 32;
template <class P>
using HostNet = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = D}>, ffn::SwiGLU, norm::RMSNorm,
                                   linear::Dense, P>;
template <class P>
using GpuNet = gpu::DenseTransformer<D, P>;

/// What the GPU model in precision P is held to against the host (see the header comment).
struct Tolerance {
  const char* name;
  bool sixteen_bit;     // per-tensor gradients by cosine and relative L2 (else by max error / max)
  double loss;          // relative loss difference (gradients and objective cases)
  double grad_max;      // fp32: per tensor max |error| / max |reference|
  double cosine, l2;    // 16-bit: per tensor cosine similarity (at least) and relative L2 error (at most)
  double train_loss;    // relative loss difference per training step
  double decode;        // decode vs forward logits, relative to the logits' scale
  double seed_scale;    // the seed gradient is multiplied by this (a power of two), gradients divided back
};
template <class P>
constexpr Tolerance tolerance() {
  if constexpr (std::is_same_v<P, precision::Bf16>)
    return {"bf16", true, 2e-2, 0, 0.99, 0.08, 2e-2, 5e-2, 1};
  else if constexpr (std::is_same_v<P, precision::Fp16>)
    return {"fp16", true, 5e-3, 0, 0.998, 0.02, 5e-3, 1e-2, 1024};
  else
    return {"fp32", false, 2e-5, 2e-4, 0, 0, 1e-4, 1e-4, 1};
}

model::Config small_config() {
  return {.vocab_size = 67, .hidden_size = 64, .num_layers = 2, .num_heads = 4, .num_kv_heads = 2,
          .intermediate_size = 96, .max_seq_len = 48};
}

/// Tokens and next-token targets [B, T] from Philox, with some targets ignored (-1).
struct Batch {
  index_t b, t;
  std::vector<std::int32_t> tokens, targets;
};
Batch make_batch(index_t b, index_t t, index_t vocab, std::uint64_t seed) {
  Batch r{b, t, {}, {}};
  Philox rng(seed, 0);
  for (index_t i = 0; i < b * t; ++i) r.tokens.push_back(static_cast<std::int32_t>(rng.next_u32() % vocab));
  for (index_t i = 0; i < b * t; ++i)
    r.targets.push_back(i % 7 == 3 ? -1 : static_cast<std::int32_t>(rng.next_u32() % vocab));
  return r;
}

/// A device copy of host floats (copied synchronously).
struct DeviceFloats {
  gpu::DeviceBuffer<float> buf;
  explicit DeviceFloats(const std::vector<float>& h) : buf(h.size(), "test buffer") { buf.copy_from(std::span<const float>(h)); }
  /// The values once the work queued on `stream` (the model's) is done.
  std::vector<float> get(cudaStream_t stream) const {
    std::vector<float> h(buf.size());
    buf.copy_to(std::span<float>(h), stream);
    REASON_CUDA_CHECK(cudaStreamSynchronize(stream));
    return h;
  }
};

/// Per tensor: max |a - ref| / max |ref|, cosine similarity and relative L2 error.
struct TensorError {
  std::string name;
  double rel_max = 0, cosine = 1, rel_l2 = 0;
};
std::vector<TensorError> tensor_errors(const ParamLayout& layout, const std::vector<float>& a,
                                       const std::vector<double>& ref) {
  std::vector<TensorError> out;
  for (const ParamInfo& p : layout.params()) {
    double max_ref = 0, max_diff = 0, dot = 0, na = 0, nr = 0, diff2 = 0;
    for (std::size_t i = p.offset; i < p.offset + p.numel; ++i) {
      const double x = a[i], r = ref[i];
      max_ref = std::max(max_ref, std::fabs(r));
      max_diff = std::max(max_diff, std::fabs(x - r));
      dot += x * r;
      na += x * x;
      nr += r * r;
      diff2 += (x - r) * (x - r);
    }
    TensorError e{p.name, max_ref > 0 ? max_diff / max_ref : max_diff,
                  (na > 0 && nr > 0) ? dot / std::sqrt(na * nr) : (na == nr ? 1.0 : 0.0),
                  nr > 0 ? std::sqrt(diff2 / nr) : std::sqrt(diff2)};
    out.push_back(e);
  }
  return out;
}

/// Every gradient tensor of the GPU against the float64 host: fp32 max error / max <= 2e-4; bf16
/// and fp16 by cosine and relative L2 (Tolerance).
void check_gradients(const ParamLayout& layout, const std::vector<float>& g, const std::vector<double>& gd,
                     const Tolerance& tol, const std::string& what) {
  double worst_rel = 0, worst_cos = 1, worst_l2 = 0;
  for (const TensorError& e : tensor_errors(layout, g, gd)) {
    worst_rel = std::max(worst_rel, e.rel_max);
    worst_cos = std::min(worst_cos, e.cosine);
    worst_l2 = std::max(worst_l2, e.rel_l2);
    const bool ok = tol.sixteen_bit ? (e.cosine >= tol.cosine && e.rel_l2 <= tol.l2) : e.rel_max <= tol.grad_max;
    if (!ok)
      std::printf("  %s: max err / max %.2e, cosine %.6f, rel L2 %.2e\n", e.name.c_str(), e.rel_max, e.cosine, e.rel_l2);
    check(ok, what + " of " + e.name);
  }
  std::printf("  %s %ss: worst max-err/max %.2e, worst cosine %.6f, worst rel L2 %.2e\n", tol.name, what.c_str(),
              worst_rel, worst_cos, worst_l2);
}

/// Forward + backward on both backends; compares loss and every gradient tensor.
template <class P>
void gradients_case() {
  constexpr Tolerance tol = tolerance<P>();
  const model::Config c = small_config();
  const Batch b = make_batch(3, 37, c.vocab_size, std::is_same_v<P, precision::Fp32> ? 7 : 11);
  HostNet<precision::Fp64> host(c);
  std::vector<float> pf(host.num_params());
  host.layout().initialize(std::span<float>(pf), 1234);
  for (float& x : pf) x *= 3.0f;  // larger weights: sharper attention, gradients of every size
  std::vector<double> pd(pf.begin(), pf.end()), gd(pf.size(), 0.0);
  host.reserve(b.b, b.t);
  const double scale = 1.0 / 100.0;
  const auto hr = host.forward(pd.data(), gd.data(), make_view(b.tokens.data(), b.b, b.t),
                               make_view(b.targets.data(), b.b, b.t), scale);
  host.backward(pd.data(), gd.data());

  GpuNet<P> net(c);
  net.reserve(b.b, b.t);
  DeviceFloats params(pf), grads(std::vector<float>(pf.size(), 0.0f));
  const auto gr = net.forward(params.buf.data(), grads.buf.data(), make_view(b.tokens.data(), b.b, b.t),
                              make_view(b.targets.data(), b.b, b.t), static_cast<float>(scale * tol.seed_scale));
  net.backward(params.buf.data(), grads.buf.data());
  std::vector<float> g = grads.get(net.stream());
  for (float& x : g) x = static_cast<float>(x / tol.seed_scale);  // exact: a power of two
  const double loss_rel = std::fabs(gr.loss_sum - hr.loss_sum) / std::fabs(hr.loss_sum);
  std::printf("%s gradients: loss %.9g (host %.9g), relative error %.2e\n", tol.name, gr.loss_sum, hr.loss_sum,
              loss_rel);
  check(gr.count == hr.count, "target count");
  check(loss_rel <= tol.loss, std::string(tol.name) + " loss within tolerance");
  check_gradients(net.layout(), g, gd, tol, "gradient");
}

/// An objective whose gradient depends on the logits z: loss = sum a z + b z^2 / 2 over every
/// row and token (coefficients per row of the whole [B T, V] matrix, so chunk offsets matter).
/// `scale` multiplies the loss and the gradient (a loss-scaled objective).
template <class T>
struct QuadraticObjective {
  const std::vector<double>* a;
  const std::vector<double>* b;
  index_t vocab;
  double scale = 1;
  double operator()(index_t first_row, View<T, 2> z) const {
    double loss = 0;
    for (index_t r = 0; r < z.shape[0]; ++r)
      for (index_t v = 0; v < vocab; ++v) {
        const auto i = static_cast<std::size_t>((first_row + r) * vocab + v);
        const double x = static_cast<double>(z.row(r)[v]);
        loss += scale * ((*a)[i] * x + 0.5 * (*b)[i] * x * x);
        z.row(r)[v] = static_cast<T>(scale * ((*a)[i] + (*b)[i] * x));
      }
    return loss;
  }
};

/// forward_objective + backward on both backends (320 rows: two chunks of loss_chunk_rows).
template <class P>
void objective_case() {
  constexpr Tolerance tol = tolerance<P>();
  const model::Config c = small_config();
  const Batch b = make_batch(8, 40, c.vocab_size, std::is_same_v<P, precision::Fp32> ? 17 : 21);
  const auto rows = static_cast<std::size_t>(b.b * b.t * c.vocab_size);
  std::vector<double> ca(rows), cb(rows);
  Philox rng(5, 9);
  for (std::size_t i = 0; i < rows; ++i) {
    ca[i] = 1e-3 * rng.normal();
    cb[i] = 1e-3 * (1.0 + rng.normal());
  }
  HostNet<precision::Fp64> host(c);
  std::vector<float> pf(host.num_params());
  host.layout().initialize(std::span<float>(pf), 4321);
  for (float& x : pf) x *= 3.0f;
  std::vector<double> pd(pf.begin(), pf.end()), gd(pf.size(), 0.0);
  host.reserve(b.b, b.t);
  const auto tokens = make_view(b.tokens.data(), b.b, b.t);
  const double hl = host.forward_objective(pd.data(), gd.data(), tokens, QuadraticObjective<double>{&ca, &cb, c.vocab_size});
  host.backward(pd.data(), gd.data());

  GpuNet<P> net(c);
  net.reserve(b.b, b.t);
  DeviceFloats params(pf), grads(std::vector<float>(pf.size(), 0.0f));
  const QuadraticObjective<float> objective{&ca, &cb, c.vocab_size, tol.seed_scale};
  const double eval_only = net.forward_objective(params.buf.data(), nullptr, tokens, objective);
  check(test::error_mismatch([&] { net.backward(params.buf.data(), grads.buf.data()); }, "no forward()").empty(),
        "forward_objective without grads leaves nothing to go back through");
  const double gl = net.forward_objective(params.buf.data(), grads.buf.data(), tokens, objective);
  net.backward(params.buf.data(), grads.buf.data());
  std::vector<float> g = grads.get(net.stream());
  for (float& x : g) x = static_cast<float>(x / tol.seed_scale);  // exact: a power of two
  const double rel = std::fabs(gl / tol.seed_scale - hl) / std::fabs(hl);
  std::printf("%s forward_objective: loss %.9g (host %.9g), relative error %.2e\n", tol.name, gl / tol.seed_scale,
              hl, rel);
  check(gl == eval_only, "the objective's loss does not depend on whether gradients are taken");
  check(rel <= tol.loss, std::string(tol.name) + " objective loss within tolerance");
  check_gradients(net.layout(), g, gd, tol, "objective gradient");
}

/// A BatchSource of fixed random batches, a pure function of (step, micro).
train::BatchSource source_for(const model::Config& c, index_t batch, index_t seq) {
  return [c, batch, seq](std::int64_t step, int micro, train::TokenBatch& out) {
    const Batch b = make_batch(batch, seq, c.vocab_size, 1000 + static_cast<std::uint64_t>(step) * 10 +
                                                            static_cast<std::uint64_t>(micro));
    out.batch = batch;
    out.seq = seq;
    out.tokens = b.tokens;
    out.targets = b.targets;
  };
}

train::TrainConfig train_config() {
  train::TrainConfig tc;
  tc.total_steps = 5;
  tc.micro_batches = 2;
  tc.batch = 4;
  tc.seq = 33;
  tc.max_grad_norm = 1.0;
  tc.schedule = {.peak_lr = 3e-3, .min_lr = 1e-4, .warmup_steps = 2, .total_steps = 5};
  tc.seed = 99;
  return tc;
}

template <class P>
void training_case() {
  constexpr Tolerance tol = tolerance<P>();
  const model::Config c = small_config();
  const train::TrainConfig tc = train_config();
  const auto source = source_for(c, tc.batch, tc.seq);
  HostNet<precision::Fp32> host(c);
  train::Trainer<HostNet<precision::Fp32>, optim::AdamW> ht(host, optim::AdamW{}, tc);
  GpuNet<P> net(c);
  gpu::Trainer<GpuNet<P>> gt(net, optim::AdamW{}, tc);
  double worst = 0;
  for (int s = 0; s < tc.total_steps; ++s) {
    const auto hs = ht.run_step(source);
    const auto gs = gt.run_step(source);
    const double rel = std::fabs(gs.loss - hs.loss) / std::fabs(hs.loss);
    worst = std::max(worst, rel);
    std::printf("  step %d: loss host %.7f gpu %.7f (rel %.2e), grad norm host %.6f gpu %.6f\n", s, hs.loss, gs.loss,
                rel, hs.grad_norm, gs.grad_norm);
    check(gs.tokens == hs.tokens, "step target tokens");
  }
  std::printf("%s training: worst relative loss difference over %lld steps %.2e\n", tol.name,
              static_cast<long long>(tc.total_steps), worst);
  check(worst <= tol.train_loss, std::string(tol.name) + " training losses within tolerance");
}

#if REASON_TEST_WITH_NCCL
/// Data parallelism over NCCL on one GPU (a one-rank communicator): the gradient buckets and the step's
/// scalars go through NCCL on the model's stream, and the run is bit-identical to the plain GPU
/// trainer's (a one-rank all-reduce is a copy); the collectives are the design's (buckets + 2 per step).
void data_parallel_nccl_case() {
  using Net = GpuNet<precision::Fp32>;
  using Nccl = parallel::NcclCommunicator;
  using Counted = parallel::CountingCommunicator<Nccl&>;
  const model::Config c = small_config();
  const train::TrainConfig tc = train_config();
  const auto source = source_for(c, tc.batch, tc.seq);
  Net plain_net(c), dp_net(c);
  gpu::Trainer<Net> plain(plain_net, optim::AdamW{}, tc);
  Nccl nccl = Nccl::one_rank(0);
  Counted counted(nccl);
  const std::size_t bucket = 64 << 10;
  using DP = parallel::DataParallel<Counted>;
  train::Trainer<Net, optim::AdamW, DP> dp(dp_net, optim::AdamW{}, tc, DP(counted, bucket));
  counted.reset();
  for (int s = 0; s < tc.total_steps; ++s) {
    const auto a = plain.run_step(source), b = dp.run_step(source);
    check(a.loss == b.loss && a.grad_norm == b.grad_norm, "NCCL data parallel step " + std::to_string(s) + ": loss " +
                                                              std::to_string(b.loss) + ", plain " + std::to_string(a.loss));
  }
  plain.to_host();
  dp.to_host();
  check(std::equal(plain.params().begin(), plain.params().end(), dp.params().begin()),
        "NCCL data parallel on one rank: parameters bit for bit");
  const auto n = static_cast<std::int64_t>(plain.params().size() * sizeof(float));
  const std::int64_t per_step = (n + static_cast<std::int64_t>(bucket) - 1) / static_cast<std::int64_t>(bucket) + 2;
  check(counted.tally(parallel::Collective::all_reduce).calls == per_step * tc.total_steps,
        "NCCL data parallel collectives: " + counted.report());
  std::printf("NCCL data parallel (one rank): %s over %lld steps\n", counted.report().c_str(),
              static_cast<long long>(tc.total_steps));
}
#endif

/// Dynamic loss scaling on the fp16 model with a real overflow: at S = 2^40 the seed gradient
/// (p - y) / tokens * S exceeds fp16's 65504, so the step's gradients hold Infs: the step is skipped
/// (parameters and optimizer state bit-identical), S halves, and so on until a step fits, after
/// which training proceeds and its losses track an fp32 host run on the same batches.
void loss_scaling_case() {
  const model::Config c = small_config();
  train::TrainConfig tc = train_config();
  tc.total_steps = 40;
  tc.schedule = {.peak_lr = 3e-3, .min_lr = 3e-3, .warmup_steps = 0, .total_steps = 40};
  tc.loss_scale.initial_scale = 1099511627776.0;  // 2^40
  tc.loss_scale.max_scale = 1099511627776.0;
  const auto source = source_for(c, tc.batch, tc.seq);
  GpuNet<precision::Fp16> net(c);
  gpu::Trainer<GpuNet<precision::Fp16>> gt(net, optim::AdamW{}, tc);
  check(gt.loss_scaler().enabled(), "fp16: loss scaling is on by default");
  gt.to_host();
  const std::vector<float> p0(gt.params().begin(), gt.params().end());
  const std::vector<float> s0(gt.optimizer_state().begin(), gt.optimizer_state().end());
  const train::StepStats first = gt.run_step(source);
  check(first.skipped && first.loss_scale == 1099511627776.0, "fp16 at S = 2^40: the first step overflows and is skipped");
  gt.to_host();
  check(std::memcmp(p0.data(), gt.params().data(), p0.size() * sizeof(float)) == 0 &&
            std::memcmp(s0.data(), gt.optimizer_state().data(), s0.size() * sizeof(float)) == 0,
        "a skipped step leaves the parameters and the optimizer state bit for bit");
  check(gt.loss_scaler().scale() == 549755813888.0, "the scale halves after an overflow");
  std::int64_t skipped = 1;
  train::StepStats s = first;
  while (s.skipped && !gt.done()) {
    s = gt.run_step(source);
    skipped += s.skipped;
  }
  check(!s.skipped, "a small enough scale stops the overflows");
  std::printf("fp16 loss scaling: %lld steps skipped from S = 2^40; the first good step at S = 2^%.0f (grad norm %.4f)\n",
              static_cast<long long>(skipped), std::log2(s.loss_scale), s.grad_norm);
  check(skipped >= 10, "fp16 overflows at least down to S = 2^30 (the seed gradient alone exceeds 65504 above that)");
  check(gt.loss_scaler().skipped_steps() == skipped, "the scaler counts the skipped steps");
  check(std::isfinite(s.grad_norm) && s.grad_norm > 0, "the first good step has a finite gradient norm");
}

template <class P>
void decode_case() {
  constexpr Tolerance tol = tolerance<P>();
  const model::Config c = small_config();
  const index_t B = 3, T = 21, V = c.vocab_size;
  const Batch b = make_batch(B, T, V, 5);
  GpuNet<P> net(c);
  std::vector<float> pf(net.num_params());
  net.layout().initialize(std::span<float>(pf), 77);
  for (float& x : pf) x *= 3.0f;
  DeviceFloats params(pf);
  net.reserve(B, T);
  std::vector<float> full(static_cast<std::size_t>(B * T * V));
  net.logits(params.buf.data(), make_view(b.tokens.data(), B, T), make_view(full.data(), B * T, V));
  auto st = net.make_decode_state(B, T);
  std::vector<float> step(static_cast<std::size_t>(B * V));
  std::vector<std::int32_t> feed(static_cast<std::size_t>(B));
  double worst = 0, scale = 0;
  for (float x : full) scale = std::max(scale, static_cast<double>(std::fabs(x)));
  for (index_t t = 0; t < T; ++t) {
    for (index_t i = 0; i < B; ++i) feed[static_cast<std::size_t>(i)] = b.tokens[static_cast<std::size_t>(i * T + t)];
    net.decode_step(params.buf.data(), make_view(static_cast<const std::int32_t*>(feed.data()), B), t, st,
                    make_view(step.data(), B, V));
    for (index_t i = 0; i < B; ++i)
      for (index_t v = 0; v < V; ++v)
        worst = std::max(worst, static_cast<double>(std::fabs(step[static_cast<std::size_t>(i * V + v)] -
                                                               full[static_cast<std::size_t>((i * T + t) * V + v)])));
  }
  std::printf("%s decode vs forward: worst logit difference %.2e (logit scale %.2f)\n", tol.name, worst, scale);
  check(worst <= tol.decode * std::max(1.0, scale), std::string(tol.name) + " decode_step equals the forward's logits");
  const std::vector<std::vector<std::int32_t>> prompts{{1, 2, 3}, {4}, {5, 6}};
  const auto out = infer::generate_greedy(net, static_cast<const float*>(params.buf.data()),
                                          std::span<const std::vector<std::int32_t>>(prompts), 20, 0);
  check(out.size() == 3, "generate_greedy on the GPU model");
}

void checkpoint_case() {
  const model::Config c = small_config();
  train::TrainConfig tc = train_config();
  const auto source = source_for(c, tc.batch, tc.seq);
  const auto dir = std::filesystem::temp_directory_path() / "reason_cuda_model_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "mid.safetensors";
  using Net = GpuNet<precision::Fp32>;
  Net net_a(c);
  gpu::Trainer<Net> a(net_a, optim::AdamW{}, tc);
  a.run_step(source);
  a.run_step(source);
  (void)a.run_micro(source);  // mid-accumulation
  train::save_checkpoint(path, a);
  while (!a.done()) a.run_step(source);
  a.to_host();
  const std::vector<float> final_a(a.params().begin(), a.params().end());

  Net net_b(c);
  gpu::Trainer<Net> b(net_b, optim::AdamW{}, tc);
  train::load_checkpoint(path, b);
  check(b.step() == 2 && b.micro() == 1, "position restored");
  while (!b.done()) b.run_step(source);
  b.to_host();
  check(std::equal(final_a.begin(), final_a.end(), b.params().begin()), "resumed GPU run equals the uninterrupted one");

  HostNet<precision::Fp32> host(c);
  train::Trainer<HostNet<precision::Fp32>, optim::AdamW> h(host, optim::AdamW{}, tc);
  train::load_checkpoint(path, h);
  Net net_c(c);
  gpu::Trainer<Net> g(net_c, optim::AdamW{}, tc);
  train::load_checkpoint(path, g);
  g.to_host();
  check(std::equal(h.params().begin(), h.params().end(), g.params().begin()) &&
            std::equal(h.grads().begin(), h.grads().end(), g.grads().begin()),
        "a GPU checkpoint loads into the host trainer bit for bit");
  std::filesystem::remove_all(dir);
}

/// rl::GrpoTrainer on the host model and on the GPU model (fp32) from the same parameters.
void grpo_case() {
  const model::Config c{.vocab_size = data::Tokenizer::vocab_size, .hidden_size = 64, .num_layers = 2, .num_heads = 2,
                        .num_kv_heads = 1, .intermediate_size = 96, .max_seq_len = 24, .init_std = 0.2};
  rl::GrpoTrainerConfig cfg;
  cfg.prompts_per_step = 4;
  cfg.group_size = 4;
  cfg.max_new_tokens = 4;
  cfg.beta = 0.04;
  cfg.mu = 2;
  cfg.micro_batch = 6;  // three micro-batches of a step's 16 rows
  cfg.schedule = {.peak_lr = 1e-2, .min_lr = 1e-2, .warmup_steps = 0, .total_steps = 100};
  cfg.seed = 21;
  using Loss = rl::Grpo<rl::GrpoConfig{}>;
  using HostGrpo = rl::GrpoTrainer<HostNet<precision::Fp32>, optim::AdamW, Loss, infer::Temperature, test::ContainsTarget>;
  using Net = GpuNet<precision::Fp32>;
  using GpuGrpo = rl::GrpoTrainer<Net, optim::AdamW, Loss, infer::Temperature, test::ContainsTarget>;
  HostNet<precision::Fp32> host(c);
  std::vector<float> init(host.num_params());
  host.layout().initialize(std::span<float>(init), 8);
  const optim::AdamW opt{.config = {.weight_decay = 0.0}};
  HostGrpo ht(host, std::span<const float>(init), opt, infer::Temperature{1.0f}, test::ContainsTarget{}, cfg);
  Net net(c);
  GpuGrpo gt(net, std::span<const float>(init), opt, infer::Temperature{1.0f}, test::ContainsTarget{}, cfg);
  auto source = [&](std::int64_t s) { return test::target_prompts(static_cast<std::uint64_t>(s), cfg.prompts_per_step); };
  double worst_loss = 0;
  for (int s = 0; s < 3; ++s) {
    const rl::GrpoStepStats hs = ht.run_step(source), gs = gt.run_step(source);
    const double dl = std::fabs(gs.loss - hs.loss) / std::max(1.0, std::fabs(hs.loss));
    worst_loss = std::max(worst_loss, dl);
    std::printf("  grpo step %d: reward host %.4f gpu %.4f, length %.3f / %.3f, loss %.7f / %.7f, kl %.3e / %.3e, "
                "rollout gap %.1e\n", s, hs.reward_mean, gs.reward_mean, hs.completion_length, gs.completion_length,
                hs.loss, gs.loss, hs.kl, gs.kl, gs.rollout_logp_gap);
    check(gs.reward_mean == hs.reward_mean && gs.completion_length == hs.completion_length,
          "GRPO on the GPU samples the host's completions");
    check(gs.rollout_logp_gap <= 1e-4, "GPU decode and training forward give the same log-probabilities");
  }
  check(worst_loss <= 1e-4, "GRPO losses within 1e-4");
  gt.to_host();
  double diff2 = 0, step2 = 0;
  for (std::size_t i = 0; i < init.size(); ++i) {
    const double dh = static_cast<double>(ht.params()[i]) - init[i], dg = static_cast<double>(gt.params()[i]) - init[i];
    diff2 += (dg - dh) * (dg - dh);
    step2 += dh * dh;
  }
  const double rel = std::sqrt(diff2 / step2);
  std::printf("fp32 GRPO: worst loss difference %.2e, parameter updates relative L2 %.2e\n", worst_loss, rel);
  check(step2 > 0 && rel <= 1e-2, "GRPO parameter updates within 1e-2 relative L2");

  // A GPU checkpoint loads into the host trainer bit for bit and resumes bit-identically on the GPU.
  const auto dir = std::filesystem::temp_directory_path() / "reason_cuda_grpo_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "grpo.safetensors";
  rl::save_checkpoint(path, gt);
  HostNet<precision::Fp32> host2(c);
  HostGrpo loaded(host2, std::span<const float>(init), opt, infer::Temperature{1.0f}, test::ContainsTarget{}, cfg);
  (void)rl::load_checkpoint(path, loaded);
  check(std::equal(gt.params().begin(), gt.params().end(), loaded.params().begin()) &&
            std::equal(gt.reference_params().begin(), gt.reference_params().end(), loaded.reference_params().begin()) &&
            std::equal(gt.optimizer_state().begin(), gt.optimizer_state().end(), loaded.optimizer_state().begin()) &&
            loaded.step() == 3,
        "a GPU GRPO checkpoint loads into the host trainer bit for bit");
  Net net2(c);
  GpuGrpo resumed(net2, std::span<const float>(init), opt, infer::Temperature{1.0f}, test::ContainsTarget{}, cfg);
  (void)rl::load_checkpoint(path, resumed);
  (void)gt.run_step(source);
  (void)resumed.run_step(source);
  gt.to_host();
  resumed.to_host();
  check(std::equal(gt.params().begin(), gt.params().end(), resumed.params().begin()),
        "a resumed GPU GRPO run equals the uninterrupted one bit for bit");
  std::filesystem::remove_all(dir);
}

void error_case() {
  const model::Config c = small_config();
  GpuNet<precision::Fp32> net(c);
  DeviceFloats params(std::vector<float>(net.num_params(), 0.01f)), grads(std::vector<float>(net.num_params(), 0.0f));
  net.reserve(2, 8);
  std::vector<std::int32_t> tok(16, 1), tgt(16, 2);
  tok[5] = 67;
  check(test::error_mismatch([&] { (void)net.loss(params.buf.data(), make_view(tok.data(), 2, 8), make_view(tgt.data(), 2, 8)); },
                             "token id 67 at position 5")
            .empty(),
        "an out-of-range token is named");
  tok[5] = 1;
  check(test::error_mismatch([&] { net.backward(params.buf.data(), grads.buf.data()); }, "no forward()").empty(),
        "backward without forward");
  std::vector<std::int32_t> big(3 * 8, 1);
  check(test::error_mismatch([&] { (void)net.loss(params.buf.data(), make_view(big.data(), 3, 8), make_view(big.data(), 3, 8)); },
                             "exceed the reserved")
            .empty(),
        "a batch beyond reserve()");
}

}  // namespace

int main() {
  try {
    if (const int rc = test::exit_status_without_gpu(); rc >= 0) return rc;
    gradients_case<precision::Fp32>();
    gradients_case<precision::Bf16>();
    gradients_case<precision::Fp16>();
    objective_case<precision::Fp32>();
    objective_case<precision::Bf16>();
    objective_case<precision::Fp16>();
    grpo_case();
    training_case<precision::Fp32>();
    training_case<precision::Bf16>();
    training_case<precision::Fp16>();
    loss_scaling_case();
#if REASON_TEST_WITH_NCCL
    data_parallel_nccl_case();
#endif
    decode_case<precision::Fp32>();
    decode_case<precision::Bf16>();
    decode_case<precision::Fp16>();
    checkpoint_case();
    error_case();
  } catch (const std::exception& e) {
    std::printf("unexpected error: %s\n", e.what());
    return 2;
  }
  std::printf(failures ? "%d check(s) FAILED\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
