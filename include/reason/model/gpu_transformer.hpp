// reason/model/gpu_transformer.hpp — the dense decoder on a CUDA GPU: the class as host code sees it.
//
//   gpu::DenseTransformer<HeadDim, precision::Fp32 | precision::Bf16 | precision::Fp16>
//
// The same model as model::Transformer<attention::MultiHead<Shape{.head_dim = HeadDim}>,
// ffn::SwiGLU, norm::RMSNorm, linear::Dense> — pre-norm blocks x += attn(norm(x)); x += ffn(norm(x)),
// GQA with RoPE, causal, a final norm and an untied LM head trained with the fused softmax
// cross-entropy — with the same parameter layout (model/dense_layout.hpp), the same member
// functions and the same contracts, on device memory:
//   * params and grads are device pointers (fp32, laid out by layout()); gradients accumulate (+=);
//   * tokens, targets and logits are host views (small next to the work; the model copies them);
//   * forward() / forward_objective() / backward() / loss() / logits() / make_decode_state() /
//     decode_step() as on the host, so the training loops (gpu::Trainer, rl::GrpoTrainer over
//     train_buffers<Opt>), infer::rollout, rl::evaluate and the checkpoint code work unchanged.
// Precision: Fp32 computes in fp32 (cuBLASLt fp32 GEMMs; set_tf32(true) allows tf32 tensor cores).
// Bf16 and Fp16 keep fp32 master weights and fp32 gradients; each forward casts the weights to the
// 16-bit type (a copy made per forward, and per decode state at position 0, so the compute weights
// can never be stale), stores activations in it and accumulates every GEMM and reduction in fp32;
// weight gradients are written by the GEMMs straight into the fp32 gradient buffer. Fp16 asks the
// trainer for loss scaling (precision::Fp16::loss_scaling): forward()'s grad_scale then carries the
// loss scale, the seed gradient dlogits is formed in fp32 with it and rounded to fp16 once, and an
// fp16 overflow anywhere in the backward is an Inf that reaches the fp32 gradients (never clamped),
// so the trainer sees a non-finite gradient norm and skips the step.
//
// Why a class of its own and not model::Transformer with a backend parameter: nvcc (13.0) cannot
// emit host code for templates whose arguments are class-type constants (attention::Shape{...},
// moe::GateConfig{...}), so a CUDA translation unit cannot name the host model's policies. This
// header declares the class with host types only; its definitions are in gpu_transformer.cuh,
// which exactly one CUDA translation unit of the program includes and instantiates:
//
//   // model_cuda.cu
//   #include "reason/model/gpu_transformer.cuh"
//   template class reason::gpu::DenseTransformer<32, reason::precision::Bf16>;
//
// Every other translation unit (plain C++) includes this header and uses the class.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>

#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/config.hpp"
#include "reason/model/dense_layout.hpp"
#include "reason/model/loss_result.hpp"
#include "reason/model/metadata.hpp"
#include "reason/precision/precision.hpp"
#include "reason/train/gpu_train_buffers.hpp"

namespace reason::gpu {

template <int HeadDim, class Precision = precision::Fp32>
class DenseTransformer {
  static_assert(HeadDim == 32 || HeadDim == 64 || HeadDim == 128,
                "gpu::DenseTransformer<HeadDim, Precision>: the CUDA attention kernels are built for head_dim 32, 64 and 128");
  static_assert(std::is_same_v<Precision, precision::Fp32> || std::is_same_v<Precision, precision::Bf16> ||
                    std::is_same_v<Precision, precision::Fp16>,
                "gpu::DenseTransformer<HeadDim, Precision>: Precision is precision::Fp32, precision::Bf16 or "
                "precision::Fp16");

 public:
  using T = float;  // parameters, gradients, logits: fp32 in every precision
  using precision_policy = Precision;
  using ffn_policy = ffn::SwiGLU;  // the feed-forward it computes (for code written against the host model)
  static constexpr int head_dim = HeadDim;
  static constexpr bool routed = false;
  static constexpr bool on_device = true;
  static constexpr index_t loss_chunk_rows = 256;  // rows of logits alive at once in the fused loss and objectives
  /// The flat buffers a training loop keeps for this model: on the device (train/train_buffers.hpp).
  template <class Opt>
  using train_buffers = TrainBuffers<Opt>;

  /// Builds the model on the current CUDA device (gpu::require_device checks it first).
  explicit DenseTransformer(const model::Config& config);
  ~DenseTransformer();
  DenseTransformer(DenseTransformer&&) noexcept;
  DenseTransformer& operator=(DenseTransformer&&) noexcept;
  DenseTransformer(const DenseTransformer&) = delete;
  DenseTransformer& operator=(const DenseTransformer&) = delete;

  [[nodiscard]] const model::Config& config() const { return config_; }
  [[nodiscard]] const ParamLayout& layout() const { return dense_.layout; }
  [[nodiscard]] const model::DenseLayout& dense_layout() const { return dense_; }
  [[nodiscard]] std::size_t num_params() const { return dense_.layout.size(); }
  static std::string attention_signature() { return "multi_head"; }
  static std::string ffn_signature() { return "swiglu"; }
  /// What a checkpoint records: the host model's metadata (model/metadata.hpp), so files move between backends.
  [[nodiscard]] std::map<std::string, std::string> model_metadata() const {
    return model::model_metadata(config_, head_dim, attention_signature(), ffn_signature());
  }
  void expect_model_metadata(const std::map<std::string, std::string>& meta, const std::string& what) const {
    model::expect_model_metadata(config_, head_dim, attention_signature(), ffn_signature(), meta, what);
  }

  /// The stream every call of this model runs on (calls return when their results are needed on
  /// the host: losses, logits; forward/backward may still be running on it).
  [[nodiscard]] cudaStream_t stream() const;
  /// Fp32 only: let the GEMMs use tf32 tensor cores (10-bit mantissa products, fp32 sums).
  void set_tf32(bool allow);

  /// Sizes the device activation memory for up to `batch` sequences of up to `seq` tokens.
  void reserve(index_t batch, index_t seq);
  [[nodiscard]] std::size_t activation_bytes() const;

  /// Mean next-token loss over targets >= 0; no gradients. tokens, targets: host [B, T].
  model::LossResult loss(const T* params, View<const std::int32_t, 2> tokens, View<const std::int32_t, 2> targets);
  /// Next-token logits into host out [B T, V].
  void logits(const T* params, View<const std::int32_t, 2> tokens, View<T, 2> out);
  /// Forward for training (see model::Transformer::forward): the summed loss; grad_scale *
  /// d(loss)/d(lm_head) already accumulated into grads. Call backward() next. Under loss scaling
  /// grad_scale includes the loss scale (fp16: an overflow becomes Inf in the gradients).
  model::LossResult forward(const T* params, T* grads, View<const std::int32_t, 2> tokens,
                            View<const std::int32_t, 2> targets, T grad_scale);
  /// Forward with a caller-defined objective on the logits (model::Transformer::forward_objective's
  /// contract): `objective(first_row, logits)` sees host logits [R, V] of rows [first_row,
  /// first_row + R) of the [B T, V] matrix, overwrites them with d(its loss)/d(logits) and returns
  /// the loss it added. With grads, d(lm_head) accumulates and backward() may follow; with grads
  /// null it only evaluates. The objectives are host code (rl::Grpo, rl::Distill,
  /// rl::TokenLogProbs), so each chunk of loss_chunk_rows rows crosses to the host and its gradient
  /// comes back: 4 V bytes per row each way and one synchronisation per chunk. That is small next
  /// to the forward at the examples' vocabulary; a large one wants the objective as a kernel.
  template <class Objective>
  double forward_objective(const T* params, T* grads, View<const std::int32_t, 2> tokens, Objective&& objective) {
    const index_t n = objective_begin(params, tokens);
    double loss = 0;
    for (index_t r0 = 0; r0 < n; r0 += loss_chunk_rows) {
      const View<T, 2> chunk = objective_logits(r0, std::min(loss_chunk_rows, n - r0));
      loss += objective(r0, chunk);
      if (grads != nullptr) objective_backward(grads, r0, chunk);
    }
    objective_end(grads != nullptr);
    return loss;
  }
  /// Backward through the blocks from the last forward(); parameter gradients accumulate.
  void backward(const T* params, T* grads);

  /// The KV caches ([B, S, Hkv, D] k and v per layer, compute type) and per-step scratch of
  /// `batch` sequences of up to `max_seq` tokens, on the device.
  class DecodeState {
   public:
    DecodeState();
    ~DecodeState();
    DecodeState(DecodeState&&) noexcept;
    DecodeState& operator=(DecodeState&&) noexcept;
    [[nodiscard]] index_t batch() const { return batch_; }
    [[nodiscard]] index_t max_seq() const { return max_seq_; }
    [[nodiscard]] std::size_t cache_bytes() const { return cache_bytes_; }

    struct Memory;  // defined in gpu_transformer.cuh (public only because nvcc's generated host code names it)

   private:
    friend class DenseTransformer;
    index_t batch_ = 0, max_seq_ = 0, next_pos_ = 0;
    std::size_t cache_bytes_ = 0;
    std::unique_ptr<Memory> memory_;
  };
  [[nodiscard]] DecodeState make_decode_state(index_t batch, index_t max_seq) const;
  /// Feeds host tokens [B] at position `pos` (in order 0, 1, 2, ... per state; pos < the next
  /// position rewinds) and writes the next-token logits into host logits [B, V].
  void decode_step(const T* params, View<const std::int32_t, 1> tokens, index_t pos, DecodeState& st,
                   View<T, 2> logits) const;

  struct Impl;  // defined in gpu_transformer.cuh (public only because nvcc's generated host code names it)

 private:
  // forward_objective's steps: the trunk (returns B T); chunk rows' logits on the host; their
  // gradient (the chunk, overwritten by the objective) back through the LM head; the end.
  index_t objective_begin(const T* params, View<const std::int32_t, 2> tokens);
  View<T, 2> objective_logits(index_t first_row, index_t rows);
  void objective_backward(T* grads, index_t first_row, View<const T, 2> dlogits);
  void objective_end(bool with_grads);

  model::Config config_;
  model::DenseLayout dense_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace reason::gpu
