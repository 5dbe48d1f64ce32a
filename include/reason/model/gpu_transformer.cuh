// reason/model/gpu_transformer.cuh — the definitions of gpu::DenseTransformer (model/gpu_transformer.hpp).
//
// Include this in exactly one CUDA translation unit of a program and instantiate the models it
// uses there (`template class reason::gpu::DenseTransformer<32, reason::precision::Bf16>;`).
//
// The forward is the host model's list of module calls on device kernels, with the residual adds
// fused into the next norm (gpu::add_rmsnorm_forward: residual += branch, then normalise):
//   x0 = embed(tokens); h1 = norm(x0)
//   per layer l:  qkv = h1 Wqkv^T; RoPE on q, k; ctx = flash_attention(q, k, v) (lse saved)
//                 mid = ctx Wo^T;  mid += x_l, h2 = norm(mid)
//                 gate_up = h2 Wgu^T; act = silu(g) u; x_{l+1} = act Wd^T;  x_{l+1} += mid, h1 = norm(x_{l+1})
//   (the last layer's norm is the final norm) and the fused LM head + cross-entropy, chunk by chunk.
// Backward is the same list reversed (model::Transformer::backward). Activations are views into one
// device allocation carved like the host arena; the saved set is the host's, except that attention
// keeps its log-sum-exp [B, H, T] instead of the [B, H, T, T] probabilities (FlashAttention-2
// recomputes them in the backward).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "reason/core/arena.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/kernels/attention.cuh"
#include "reason/kernels/convert.cuh"
#include "reason/kernels/cross_entropy.cuh"
#include "reason/kernels/embedding.cuh"
#include "reason/kernels/gemm.cuh"
#include "reason/kernels/residual.cuh"
#include "reason/kernels/rmsnorm.cuh"
#include "reason/kernels/rope.cuh"
#include "reason/kernels/swiglu.cuh"
#include "reason/model/gpu_transformer.hpp"

namespace reason::gpu {

namespace detail {

/// The device storage type of a precision policy's compute type.
template <class P>
struct ComputeStorage {
  using type = float;
};
template <>
struct ComputeStorage<precision::Bf16> {
  using type = __nv_bfloat16;
};
template <>
struct ComputeStorage<precision::Fp16> {
  using type = __half;
};

/// Throws naming the first token id of host `tokens` outside [0, vocab).
inline void check_token_ids(const char* fn, const std::int32_t* tokens, index_t n, index_t vocab) {
  for (index_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab) [[unlikely]]
      fail(fn, ": token id ", tokens[i], " at position ", i, " is outside the vocabulary [0, ", vocab, ")");
}

}  // namespace detail

template <int HeadDim, class Precision>
struct DenseTransformer<HeadDim, Precision>::Impl {
  using A = typename detail::ComputeStorage<Precision>::type;
  static constexpr index_t D = HeadDim;

  struct LayerActs {
    View<A, 2> in;       // [N, C] the residual stream entering the layer (the previous layer's out)
    View<A, 2> h1;       // [N, C] attn_norm(in)
    View<float, 1> rstd1;
    View<A, 2> qkv;      // [N, (H + 2 Hkv) D], q and k after RoPE
    View<float, 3> lse;  // [B, H, T]
    View<A, 2> ctx;      // [N, H D]
    View<A, 2> mid;      // [N, C] in + attn
    View<A, 2> h2;       // [N, C] ffn_norm(mid)
    View<float, 1> rstd2;
    View<A, 2> gate_up;  // [N, 2F]
    View<A, 2> act;      // [N, F]
  };
  struct Acts {
    std::vector<LayerActs> layers;
    View<A, 2> last;  // [N, C] the residual stream after the last layer
    View<A, 2> final_h;
    View<float, 1> final_rstd;
    View<A, 2> dfinal, loss_scratch, dres, dh, dtmp, dqkv, dctx, dgate_up, dact;
    View<float, 2> logits32;  // [loss_chunk_rows, V] fp32 logits (fp32: the loss scratch itself)
  };

  explicit Impl(const model::Config& c) : rope(c.max_seq_len, HeadDim, c.rope_theta) {}

  /// The activations of `batch` sequences of `seq` tokens carved from `a` (a measuring arena sizes them).
  static Acts carve(Arena& a, const model::Config& c, index_t batch, index_t seq);
  /// Embedding, blocks and final norm for host tokens [B, T] (and targets, when given, uploaded
  /// beside them), filling the activations up to final_h. Returns the compute weights it used.
  const A* run_trunk(const model::Config& c, const model::DenseLayout& dl, const float* params,
                     View<const std::int32_t, 2> tokens, const View<const std::int32_t, 2>* targets);

  Stream stream;
  CublasLtGemm gemm;
  CrossEntropyWorkspace ce;
  FlashAttentionWorkspace fa;
  DeviceRopeTable rope;
  Compute compute = Compute::fp32;
  DeviceBuffer<A> weights;                 // the 16-bit compute copy (Bf16, Fp16; empty in Fp32)
  DeviceBuffer<std::byte> memory;          // activations
  DeviceBuffer<std::int32_t> ids;          // [3, cap]: tokens, targets, positions
  std::vector<float> host_logits;          // forward_objective's chunk on the host
  const A* objective_weights = nullptr;    // the compute weights of forward_objective's trunk
  index_t cap_batch = 0, cap_seq = 0;
  Acts acts;
  index_t batch = 0, seq = 0;  // of the last forward
  bool pending_backward = false;
  index_t positions_seq = 0, positions_n = 0;  // the shape whose positions are on the device
};

template <int HeadDim, class Precision>
struct DenseTransformer<HeadDim, Precision>::DecodeState::Memory {
  using A = typename Impl::A;
  DeviceBuffer<A> cache;           // per layer: k [B, S, Hkv, D], then v [B, S, Hkv, D]
  DeviceBuffer<std::byte> scratch;
  View<A, 2> x, h, y, qkv, ctx, gate_up, act;
  View<float, 2> logits;           // [B, V] fp32
  DeviceBuffer<std::int32_t> ids;  // [B] tokens, then [1] the position
  DeviceBuffer<A> weights;         // Bf16, Fp16: the compute copy taken at position 0
  const float* weights_of = nullptr;
};

// ---- construction ------------------------------------------------------------------------------

template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>::DenseTransformer(const model::Config& config)
    : config_(config), dense_(model::dense_layout(config, HeadDim)) {
  (void)require_device(0);
  impl_ = std::make_unique<Impl>(config_);
  if constexpr (!std::is_same_v<typename Impl::A, float>)
    impl_->weights = DeviceBuffer<typename Impl::A>(dense_.layout.size(), "16-bit compute weights");
}
template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>::~DenseTransformer() = default;
template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>::DenseTransformer(DenseTransformer&&) noexcept = default;
template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>& DenseTransformer<HeadDim, Precision>::operator=(DenseTransformer&&) noexcept =
    default;

template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>::DecodeState::DecodeState() = default;
template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>::DecodeState::~DecodeState() = default;
template <int HeadDim, class Precision>
DenseTransformer<HeadDim, Precision>::DecodeState::DecodeState(DecodeState&&) noexcept = default;
template <int HeadDim, class Precision>
typename DenseTransformer<HeadDim, Precision>::DecodeState&
DenseTransformer<HeadDim, Precision>::DecodeState::operator=(DecodeState&&) noexcept = default;

template <int HeadDim, class Precision>
cudaStream_t DenseTransformer<HeadDim, Precision>::stream() const {
  return impl_->stream.get();
}

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::set_tf32(bool allow) {
  REASON_CHECK(!allow || (std::is_same_v<Precision, precision::Fp32>),
               "gpu::DenseTransformer::set_tf32: tf32 applies to the fp32 precision (this model computes in ",
               Precision::name, ")");
  impl_->compute = allow ? Compute::tf32 : Compute::fp32;
}

// ---- the pieces every pass uses -----------------------------------------------------------------

namespace detail {

/// y [rows, out] = x [rows, in] W^T with W [out, in] (row-major, contiguous).
template <class A>
void linear_forward(CublasLtGemm& gemm, Compute compute, const A* w, index_t out, index_t in, View<const A, 2> x,
                    View<A, 2> y, cudaStream_t stream) {
  gemm.run<A, A>(Trans::N, Trans::T, x.shape[0], out, in, 1.0f, x.data, x.stride[0], w, in, 0.0f, y.data, y.stride[0],
                 compute, Epilogue::none, nullptr, stream);
}
/// dx [rows, in] = dy W (overwritten), dW [out, in] (fp32) += dy^T x.
template <class A>
void linear_backward(CublasLtGemm& gemm, Compute compute, const A* w, float* dw, index_t out, index_t in,
                     View<const A, 2> x, View<const A, 2> dy, View<A, 2> dx, cudaStream_t stream) {
  gemm.run<A, float>(Trans::T, Trans::N, out, in, x.shape[0], 1.0f, dy.data, dy.stride[0], x.data, x.stride[0], 1.0f,
                     dw, in, compute, Epilogue::none, nullptr, stream);
  gemm.run<A, A>(Trans::N, Trans::N, x.shape[0], in, out, 1.0f, dy.data, dy.stride[0], w, in, 0.0f, dx.data,
                 dx.stride[0], compute, Epilogue::none, nullptr, stream);
}

/// Columns [first D, (first + count) D) of a [N, *] buffer as [N, count, D].
template <class A>
View<A, 3> heads3(View<A, 2> buf, index_t first, index_t count, index_t d) {
  return View<A, 3>(buf.data + first * d, {buf.shape[0], count, d}, {buf.stride[0], d, 1});
}
/// The same columns as [B, T, count, D].
template <class A>
View<A, 4> heads4(View<A, 2> buf, index_t batch, index_t seq, index_t first, index_t count, index_t d) {
  return View<A, 4>(buf.data + first * d, {batch, seq, count, d}, {seq * buf.stride[0], buf.stride[0], d, 1});
}

}  // namespace detail

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::reserve(index_t batch, index_t seq) {
  REASON_CHECK(batch > 0 && seq > 0 && seq <= config_.max_seq_len, "gpu::DenseTransformer::reserve: batch = ", batch,
               ", seq = ", seq, "; expected batch > 0 and 0 < seq <= max_seq_len = ", config_.max_seq_len);
  Impl& m = *impl_;
  const model::Config& c = config_;
  const index_t n = batch * seq;
  const std::size_t bytes = Arena::measure([&](Arena& a) { (void)Impl::carve(a, c, batch, seq); });
  m.pending_backward = false;
  m.acts = {};
  m.memory = DeviceBuffer<std::byte>(bytes, "gpu::DenseTransformer activations");
  m.ids = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(3 * n), "gpu::DenseTransformer token ids");
  m.cap_batch = batch;
  m.cap_seq = seq;
  m.positions_n = 0;
}

template <int HeadDim, class Precision>
std::size_t DenseTransformer<HeadDim, Precision>::activation_bytes() const {
  return impl_->memory.size();
}

namespace detail {

/// The compute-type weights for `params` (fp32 master, device): the params themselves in fp32,
/// else a fresh bf16 / fp16 copy (rounded to nearest even) in `copy`.
template <class A>
const A* compute_weights(const float* params, std::size_t n, DeviceBuffer<A>& copy, cudaStream_t stream) {
  if constexpr (std::is_same_v<A, float>) {
    (void)n, (void)copy, (void)stream;
    return params;
  } else {
    to_storage(params, copy.data(), n, stream);
    return copy.data();
  }
}

}  // namespace detail

template <int HeadDim, class Precision>
auto DenseTransformer<HeadDim, Precision>::Impl::carve(Arena& a, const model::Config& c, index_t batch, index_t seq)
    -> Acts {
  const index_t n = batch * seq, C = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, F = c.intermediate_size;
  const index_t qkvw = (H + 2 * Hkv) * D;
  Acts s;
  View<A, 2> prev = a.view<A>("in", n, C);
  for (index_t l = 0; l < c.num_layers; ++l) {
    LayerActs L;
    L.in = prev;
    L.h1 = a.view<A>("h1", n, C);
    L.rstd1 = a.view<float>("rstd1", n);
    L.qkv = a.view<A>("qkv", n, qkvw);
    L.lse = a.view<float>("lse", batch, H, seq);
    L.ctx = a.view<A>("ctx", n, H * D);
    L.mid = a.view<A>("mid", n, C);
    L.h2 = a.view<A>("h2", n, C);
    L.rstd2 = a.view<float>("rstd2", n);
    L.gate_up = a.view<A>("gate_up", n, 2 * F);
    L.act = a.view<A>("act", n, F);
    prev = a.view<A>("out", n, C);
    s.layers.push_back(L);
  }
  s.last = prev;
  s.final_h = a.view<A>("final_h", n, C);
  s.final_rstd = a.view<float>("final_rstd", n);
  s.dfinal = a.view<A>("dfinal", n, C);
  s.loss_scratch = a.view<A>("loss_scratch", std::min(n, loss_chunk_rows), c.vocab_size);
  if constexpr (std::is_same_v<A, float>)
    s.logits32 = s.loss_scratch;
  else
    s.logits32 = a.view<float>("logits32", std::min(n, loss_chunk_rows), c.vocab_size);
  s.dres = a.view<A>("dres", n, C);
  s.dh = a.view<A>("dh", n, C);
  s.dtmp = a.view<A>("dtmp", n, C);
  s.dqkv = a.view<A>("dqkv", n, qkvw);
  s.dctx = a.view<A>("dctx", n, H * D);
  s.dgate_up = a.view<A>("dgate_up", n, 2 * F);
  s.dact = a.view<A>("dact", n, F);
  return s;
}

template <int HeadDim, class Precision>
auto DenseTransformer<HeadDim, Precision>::Impl::run_trunk(const model::Config& c, const model::DenseLayout& dl,
                                                           const float* params, View<const std::int32_t, 2> tokens,
                                                           const View<const std::int32_t, 2>* targets) -> const A* {
  const index_t rows = tokens.shape[0], cols = tokens.shape[1], n = rows * cols;
  REASON_CHECK(rows > 0 && cols > 0, "gpu::DenseTransformer: tokens: shape ", shape_string(tokens.shape),
               ", expected at least one sequence of at least one token");
  REASON_CHECK(tokens.is_contiguous(), "gpu::DenseTransformer: tokens must be contiguous [B, T] (host memory)");
  REASON_CHECK(cols <= c.max_seq_len, "gpu::DenseTransformer: sequence length ", cols, " exceeds max_seq_len = ",
               c.max_seq_len);
  REASON_CHECK(memory.size() > 0, "gpu::DenseTransformer: call reserve(batch, seq) before the first forward");
  REASON_CHECK(cols <= cap_seq && rows <= cap_batch, "gpu::DenseTransformer: tokens [", rows, ", ", cols,
               "] exceed the reserved [", cap_batch, ", ", cap_seq, "]");
  REASON_CHECK(params != nullptr, "gpu::DenseTransformer: params is a null pointer");
  detail::check_token_ids("gpu::DenseTransformer: tokens", tokens.data, n, c.vocab_size);
  if (targets != nullptr) {
    expect_shape(*targets, "gpu::DenseTransformer: targets", tokens.shape);
    REASON_CHECK(targets->is_contiguous(), "gpu::DenseTransformer: targets must be contiguous [B, T] (host memory)");
  }
  const cudaStream_t s = stream.get();
  pending_backward = false;
  Arena arena(memory.data(), memory.size());  // sized by reserve() for the largest shape
  acts = carve(arena, c, rows, cols);
  batch = rows;
  seq = cols;

  // Ids on the device: tokens [n], targets [n], positions [n] (t for row b T + t).
  std::int32_t* id = ids.data();
  REASON_CUDA_CHECK(cudaMemcpyAsync(id, tokens.data, sizeof(std::int32_t) * n, cudaMemcpyHostToDevice, s));
  if (targets != nullptr)
    REASON_CUDA_CHECK(cudaMemcpyAsync(id + n, targets->data, sizeof(std::int32_t) * n, cudaMemcpyHostToDevice, s));
  if (positions_n != n || positions_seq != seq) {
    std::vector<std::int32_t> p(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) p[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % seq);
    // (an asynchronous copy from pageable memory is staged before the call returns: p may go)
    REASON_CUDA_CHECK(cudaMemcpyAsync(id + 2 * n, p.data(), sizeof(std::int32_t) * n, cudaMemcpyHostToDevice, s));
    positions_n = n;
    positions_seq = seq;
  }
  const A* w = detail::compute_weights<A>(params, dl.layout.size(), weights, s);
  const View<const std::int32_t, 1> tok(id, {n}, {1}), pos(id + 2 * n, {n}, {1});
  const index_t C = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, F = c.intermediate_size;
  const index_t qkvw = (H + 2 * Hkv) * D;
  const float eps = static_cast<float>(c.norm_eps);
  auto wvec = [&](std::size_t off) { return View<const A, 1>(w + off, {C}, {1}); };

  Acts& a = acts;
  embedding_forward<A>(tok, View<const A, 2>(w + dl.embed, {c.vocab_size, C}, {C, 1}), a.layers[0].in, s);
  rmsnorm_forward<A>(a.layers[0].in, wvec(dl.layers[0].attn_norm), eps, a.layers[0].h1, a.layers[0].rstd1, s);
  for (index_t l = 0; l < c.num_layers; ++l) {
    const model::DenseLayerOffsets& o = dl.layers[static_cast<std::size_t>(l)];
    LayerActs& L = a.layers[static_cast<std::size_t>(l)];
    detail::linear_forward<A>(gemm, compute, w + o.qkv, qkvw, C, L.h1, L.qkv, s);
    rope_forward<A>(rope, pos, detail::heads3(L.qkv, 0, H, D), s);
    rope_forward<A>(rope, pos, detail::heads3(L.qkv, H, Hkv, D), s);
    flash_attention_forward<A>(detail::heads4(L.qkv, batch, seq, 0, H, D), detail::heads4(L.qkv, batch, seq, H, Hkv, D),
                               detail::heads4(L.qkv, batch, seq, H + Hkv, Hkv, D), true,
                               detail::heads4(L.ctx, batch, seq, 0, H, D), L.lse, s);
    detail::linear_forward<A>(gemm, compute, w + o.o, C, H * D, L.ctx, L.mid, s);
    add_rmsnorm_forward<A>(L.mid, L.in, wvec(o.ffn_norm), eps, L.h2, L.rstd2, s);  // mid += in; h2 = norm(mid)
    detail::linear_forward<A>(gemm, compute, w + o.gate_up, 2 * F, C, L.h2, L.gate_up, s);
    swiglu_forward<A>(L.gate_up.slice(1, 0, F), L.gate_up.slice(1, F, 2 * F), L.act, s);
    const bool last = l + 1 == c.num_layers;
    LayerActs* next = last ? nullptr : &a.layers[static_cast<std::size_t>(l + 1)];
    View<A, 2> out = last ? a.last : next->in;
    detail::linear_forward<A>(gemm, compute, w + o.down, C, F, L.act, out, s);
    // out += mid, then the next norm: the next layer's attn_norm, or the final norm
    if (last)
      add_rmsnorm_forward<A>(out, L.mid, wvec(dl.final_norm), eps, a.final_h, a.final_rstd, s);
    else
      add_rmsnorm_forward<A>(out, L.mid, wvec(dl.layers[static_cast<std::size_t>(l + 1)].attn_norm), eps, next->h1,
                             next->rstd1, s);
  }
  return w;
}

template <int HeadDim, class Precision>
model::LossResult DenseTransformer<HeadDim, Precision>::loss(const T* params, View<const std::int32_t, 2> tokens,
                                                             View<const std::int32_t, 2> targets) {
  using A = typename Impl::A;
  Impl& m = *impl_;
  const A* w = m.run_trunk(config_, dense_, params, tokens, &targets);
  const index_t n = tokens.shape[0] * tokens.shape[1], C = config_.hidden_size, V = config_.vocab_size;
  const auto r = lm_head_cross_entropy<A, float, A>(
      m.gemm, m.ce, m.acts.final_h, View<const A, 2>(w + dense_.lm_head, {V, C}, {C, 1}),
      View<const std::int32_t, 1>(m.ids.data() + n, {n}, {1}), 1.0f, m.acts.loss_scratch, View<A, 2>{}, View<float, 2>{},
      m.stream.get(), m.compute);
  return {r.loss_sum, r.count};
}

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::logits(const T* params, View<const std::int32_t, 2> tokens, View<T, 2> out) {
  using A = typename Impl::A;
  Impl& m = *impl_;
  const index_t n = tokens.shape[0] * tokens.shape[1], C = config_.hidden_size, V = config_.vocab_size;
  expect_shape(out, "gpu::DenseTransformer::logits: out", {n, V});
  REASON_CHECK(out.is_contiguous(), "gpu::DenseTransformer::logits: out must be contiguous host memory [B T, V]");
  const A* w = m.run_trunk(config_, dense_, params, tokens, nullptr);
  // fp32 logits in chunks of loss_chunk_rows rows through the device chunk, then to the host.
  const index_t R = m.acts.logits32.shape[0];
  for (index_t r0 = 0; r0 < n; r0 += R) {
    const index_t rows = std::min(R, n - r0);
    m.gemm.template run<A, float>(Trans::N, Trans::T, rows, V, C, 1.0f, m.acts.final_h.data + r0 * C, C,
                                  w + dense_.lm_head, C, 0.0f, m.acts.logits32.data, V, m.compute, Epilogue::none,
                                  nullptr, m.stream.get());
    REASON_CUDA_CHECK(cudaMemcpyAsync(out.data + r0 * V, m.acts.logits32.data, sizeof(float) * rows * V,
                                      cudaMemcpyDeviceToHost, m.stream.get()));
  }
  m.stream.synchronize();
}

template <int HeadDim, class Precision>
index_t DenseTransformer<HeadDim, Precision>::objective_begin(const T* params, View<const std::int32_t, 2> tokens) {
  Impl& m = *impl_;
  m.objective_weights = m.run_trunk(config_, dense_, params, tokens, nullptr);
  const index_t n = tokens.shape[0] * tokens.shape[1];
  m.host_logits.resize(static_cast<std::size_t>(m.acts.logits32.shape[0] * config_.vocab_size));
  return n;
}

template <int HeadDim, class Precision>
auto DenseTransformer<HeadDim, Precision>::objective_logits(index_t first_row, index_t rows) -> View<T, 2> {
  using A = typename Impl::A;
  Impl& m = *impl_;
  const index_t C = config_.hidden_size, V = config_.vocab_size;
  const View<float, 2> dev = m.acts.logits32.slice(0, 0, rows);
  m.gemm.template run<A, float>(Trans::N, Trans::T, rows, V, C, 1.0f, m.acts.final_h.data + first_row * C, C,
                                m.objective_weights + dense_.lm_head, C, 0.0f, dev.data, V, m.compute, Epilogue::none,
                                nullptr, m.stream.get());
  REASON_CUDA_CHECK(cudaMemcpyAsync(m.host_logits.data(), dev.data, sizeof(float) * rows * V, cudaMemcpyDeviceToHost,
                                    m.stream.get()));
  m.stream.synchronize();
  return View<T, 2>(m.host_logits.data(), {rows, V}, {V, 1});
}

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::objective_backward(T* grads, index_t first_row, View<const T, 2> dlogits) {
  using A = typename Impl::A;
  Impl& m = *impl_;
  const index_t rows = dlogits.shape[0], C = config_.hidden_size, V = config_.vocab_size;
  const cudaStream_t s = m.stream.get();
  // (an asynchronous copy from pageable memory is staged before the call returns: the chunk may be reused)
  REASON_CUDA_CHECK(cudaMemcpyAsync(m.acts.logits32.data, dlogits.data, sizeof(float) * rows * V,
                                    cudaMemcpyHostToDevice, s));
  View<A, 2> dy = m.acts.loss_scratch.slice(0, 0, rows);
  // The objective's fp32 gradient rounded once to the compute type; in fp16 (whose trainer scales
  // the objective's loss) a value beyond 65504 becomes Inf, never clamped: it reaches the fp32
  // gradients below and the trainer sees a non-finite norm.
  if constexpr (!std::is_same_v<A, float>)
    to_storage(m.acts.logits32.data, dy.data, static_cast<std::size_t>(rows * V), s);
  // d(final_h) rows = dlogits W_lm (overwritten), dW_lm += dlogits^T final_h rows.
  detail::linear_backward<A>(m.gemm, m.compute, m.objective_weights + dense_.lm_head, grads + dense_.lm_head, V, C,
                             View<const A, 2>(m.acts.final_h.slice(0, first_row, first_row + rows)), View<const A, 2>(dy),
                             m.acts.dfinal.slice(0, first_row, first_row + rows), s);
}

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::objective_end(bool with_grads) {
  impl_->pending_backward = with_grads;
}

template <int HeadDim, class Precision>
model::LossResult DenseTransformer<HeadDim, Precision>::forward(const T* params, T* grads,
                                                                View<const std::int32_t, 2> tokens,
                                                                View<const std::int32_t, 2> targets, T grad_scale) {
  using A = typename Impl::A;
  REASON_CHECK(grads != nullptr, "gpu::DenseTransformer::forward: grads is null (use loss() for evaluation)");
  Impl& m = *impl_;
  const A* w = m.run_trunk(config_, dense_, params, tokens, &targets);
  const index_t n = tokens.shape[0] * tokens.shape[1], C = config_.hidden_size, V = config_.vocab_size;
  // The seed gradient: grad_scale (under fp16 loss scaling, the loss scale times 1 / tokens) times
  // softmax - onehot, formed in fp32 and rounded to A once into loss_scratch by the cross-entropy
  // kernel; an fp16 overflow is stored as Inf and reaches dW_lm and dfinal (kernels/cross_entropy.cuh).
  const auto r = lm_head_cross_entropy<A, float, A>(
      m.gemm, m.ce, m.acts.final_h, View<const A, 2>(w + dense_.lm_head, {V, C}, {C, 1}),
      View<const std::int32_t, 1>(m.ids.data() + n, {n}, {1}), grad_scale, m.acts.loss_scratch, m.acts.dfinal,
      View<float, 2>(grads + dense_.lm_head, {V, C}, {C, 1}), m.stream.get(), m.compute);
  m.pending_backward = true;
  return {r.loss_sum, r.count};
}

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::backward(const T* params, T* grads) {
  using A = typename Impl::A;
  constexpr index_t D = HeadDim;
  Impl& m = *impl_;
  REASON_CHECK(m.pending_backward, "gpu::DenseTransformer::backward: no forward() with gradients to go back through");
  REASON_CHECK(grads != nullptr, "gpu::DenseTransformer::backward: grads is a null pointer");
  m.pending_backward = false;
  const model::Config& c = config_;
  const model::DenseLayout& dl = dense_;
  const cudaStream_t s = m.stream.get();
  const index_t batch = m.batch, seq = m.seq, n = batch * seq;
  const index_t C = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, F = c.intermediate_size;
  const index_t qkvw = (H + 2 * Hkv) * D;
  // The compute weights of the forward: params in fp32; in bf16 / fp16 the copy the forward made (still
  // valid: nothing else writes it between a forward and its backward).
  const A* w = std::is_same_v<A, float> ? reinterpret_cast<const A*>(params) : m.weights.data();
  auto wvec = [&](std::size_t off) { return View<const A, 1>(w + off, {C}, {1}); };
  auto gvec = [&](std::size_t off) { return View<float, 1>(grads + off, {C}, {1}); };
  typename Impl::Acts& a = m.acts;
  const View<const std::int32_t, 1> tok(m.ids.data(), {n}, {1}), pos(m.ids.data() + 2 * n, {n}, {1});

  rmsnorm_backward<A, float>(a.last, wvec(dl.final_norm), a.final_rstd, a.dfinal, a.dres, gvec(dl.final_norm), s);
  for (index_t l = c.num_layers - 1; l >= 0; --l) {
    const model::DenseLayerOffsets& o = dl.layers[static_cast<std::size_t>(l)];
    const typename Impl::LayerActs& L = a.layers[static_cast<std::size_t>(l)];
    // FFN branch: down, SwiGLU, gate_up, then its norm; d(mid) = d(out) + d(through the branch).
    detail::linear_backward<A>(m.gemm, m.compute, w + o.down, grads + o.down, C, F, L.act, a.dres, a.dact, s);
    swiglu_backward<A>(L.gate_up.slice(1, 0, F), L.gate_up.slice(1, F, 2 * F), a.dact, a.dgate_up.slice(1, 0, F),
                       a.dgate_up.slice(1, F, 2 * F), s);
    detail::linear_backward<A>(m.gemm, m.compute, w + o.gate_up, grads + o.gate_up, 2 * F, C, L.h2, a.dgate_up, a.dh, s);
    rmsnorm_backward<A, float>(L.mid, wvec(o.ffn_norm), L.rstd2, a.dh, a.dtmp, gvec(o.ffn_norm), s);
    accumulate<A>(a.dres, a.dtmp, s);
    // Attention branch: o, attention, RoPE, qkv, then its norm; d(in) = d(mid) + d(through the branch).
    detail::linear_backward<A>(m.gemm, m.compute, w + o.o, grads + o.o, C, H * D, L.ctx, a.dres, a.dctx, s);
    flash_attention_backward<A>(m.fa, detail::heads4(L.qkv, batch, seq, 0, H, D),
                                detail::heads4(L.qkv, batch, seq, H, Hkv, D),
                                detail::heads4(L.qkv, batch, seq, H + Hkv, Hkv, D),
                                detail::heads4(L.ctx, batch, seq, 0, H, D), L.lse,
                                detail::heads4(a.dctx, batch, seq, 0, H, D), true,
                                detail::heads4(a.dqkv, batch, seq, 0, H, D), detail::heads4(a.dqkv, batch, seq, H, Hkv, D),
                                detail::heads4(a.dqkv, batch, seq, H + Hkv, Hkv, D), s);
    rope_backward<A>(m.rope, pos, detail::heads3(a.dqkv, 0, H, D), s);
    rope_backward<A>(m.rope, pos, detail::heads3(a.dqkv, H, Hkv, D), s);
    detail::linear_backward<A>(m.gemm, m.compute, w + o.qkv, grads + o.qkv, qkvw, C, L.h1, a.dqkv, a.dh, s);
    rmsnorm_backward<A, float>(L.in, wvec(o.attn_norm), L.rstd1, a.dh, a.dtmp, gvec(o.attn_norm), s);
    accumulate<A>(a.dres, a.dtmp, s);
  }
  embedding_backward<A, float>(tok, a.dres, View<float, 2>(grads + dl.embed, {c.vocab_size, C}, {C, 1}), s);
}

// ---- decoding ---------------------------------------------------------------------------------

template <int HeadDim, class Precision>
typename DenseTransformer<HeadDim, Precision>::DecodeState DenseTransformer<HeadDim, Precision>::make_decode_state(
    index_t batch, index_t max_seq) const {
  using A = typename Impl::A;
  REASON_CHECK(batch > 0 && max_seq > 0 && max_seq <= config_.max_seq_len,
               "gpu::DenseTransformer::make_decode_state: batch = ", batch, ", max_seq = ", max_seq,
               "; expected > 0 and max_seq <= max_seq_len = ", config_.max_seq_len);
  const model::Config& c = config_;
  const index_t C = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, F = c.intermediate_size, V = c.vocab_size;
  const index_t qkvw = (H + 2 * Hkv) * HeadDim;
  DecodeState st;
  st.batch_ = batch;
  st.max_seq_ = max_seq;
  st.memory_ = std::make_unique<typename DecodeState::Memory>();
  auto& mem = *st.memory_;
  const std::size_t per_layer = static_cast<std::size_t>(2 * batch * max_seq * Hkv * HeadDim);
  mem.cache = DeviceBuffer<A>(per_layer * static_cast<std::size_t>(c.num_layers), "gpu::DenseTransformer KV cache");
  st.cache_bytes_ = mem.cache.size() * sizeof(A);
  auto carve = [&](Arena& a) {
    mem.x = a.view<A>("decode.x", batch, C);
    mem.h = a.view<A>("decode.h", batch, C);
    mem.y = a.view<A>("decode.y", batch, C);
    mem.qkv = a.view<A>("decode.qkv", batch, qkvw);
    mem.ctx = a.view<A>("decode.ctx", batch, H * HeadDim);
    mem.gate_up = a.view<A>("decode.gate_up", batch, 2 * F);
    mem.act = a.view<A>("decode.act", batch, F);
    mem.logits = a.view<float>("decode.logits", batch, V);
  };
  const std::size_t bytes = Arena::measure(carve);
  mem.scratch = DeviceBuffer<std::byte>(bytes, "gpu::DenseTransformer decode scratch");
  Arena arena(mem.scratch.data(), bytes);
  carve(arena);
  mem.ids = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(batch + 1), "decode ids");
  if constexpr (!std::is_same_v<A, float>)
    mem.weights = DeviceBuffer<A>(dense_.layout.size(), "gpu::DenseTransformer decode weights");
  return st;
}

template <int HeadDim, class Precision>
void DenseTransformer<HeadDim, Precision>::decode_step(const T* params, View<const std::int32_t, 1> tokens, index_t pos,
                                                       DecodeState& st, View<T, 2> logits) const {
  using A = typename Impl::A;
  constexpr index_t D = HeadDim;
  const model::Config& c = config_;
  const model::DenseLayout& dl = dense_;
  REASON_CHECK(st.memory_ != nullptr, "gpu::DenseTransformer::decode_step: the DecodeState is empty (moved from, or "
                                      "not made by make_decode_state)");
  const index_t batch = st.batch_, C = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, F = c.intermediate_size,
                V = c.vocab_size, S = st.max_seq_;
  expect_shape(tokens, "gpu::DenseTransformer::decode_step: tokens", {batch});
  expect_shape(logits, "gpu::DenseTransformer::decode_step: logits", {batch, V});
  REASON_CHECK(tokens.is_contiguous() && logits.is_contiguous(),
               "gpu::DenseTransformer::decode_step: tokens and logits must be contiguous host memory");
  REASON_CHECK(pos >= 0 && pos < S, "gpu::DenseTransformer::decode_step: position ", pos, " outside [0, ", S, ")");
  REASON_CHECK(pos <= st.next_pos_, "gpu::DenseTransformer::decode_step: position ", pos,
               " skips ahead of the next position ", st.next_pos_,
               " (positions before it were never fed; the cache has no keys there)");
  REASON_CHECK(st.memory_->x.shape[1] == C && st.memory_->logits.shape[1] == V,
               "gpu::DenseTransformer::decode_step: the DecodeState was made by a model of another shape");
  detail::check_token_ids("gpu::DenseTransformer::decode_step: tokens", tokens.data, batch, V);
  st.next_pos_ = pos + 1;
  auto& mem = *st.memory_;
  Impl& m = *impl_;
  const cudaStream_t s = m.stream.get();
  const index_t qkvw = (H + 2 * Hkv) * D;

  // The compute weights: fp32 params as they are; in bf16 / fp16 a copy taken when a sequence starts
  // (position 0) or the parameters moved to another buffer.
  const A* w = nullptr;
  if constexpr (std::is_same_v<A, float>) {
    w = params;
  } else {
    if (pos == 0 || mem.weights_of != params) {
      to_storage(params, mem.weights.data(), dl.layout.size(), s);
      mem.weights_of = params;
    }
    w = mem.weights.data();
  }
  const std::int32_t pos32 = static_cast<std::int32_t>(pos);
  REASON_CUDA_CHECK(cudaMemcpyAsync(mem.ids.data(), tokens.data, sizeof(std::int32_t) * batch, cudaMemcpyHostToDevice, s));
  REASON_CUDA_CHECK(cudaMemcpyAsync(mem.ids.data() + batch, &pos32, sizeof pos32, cudaMemcpyHostToDevice, s));
  const View<const std::int32_t, 1> tok(mem.ids.data(), {batch}, {1});
  const View<const std::int32_t, 1> pv(mem.ids.data() + batch, {batch}, {0});  // every row at `pos`
  auto wvec = [&](std::size_t off) { return View<const A, 1>(w + off, {C}, {1}); };
  const float eps = static_cast<float>(c.norm_eps);

  embedding_forward<A>(tok, View<const A, 2>(w + dl.embed, {V, C}, {C, 1}), mem.x, s);
  const std::size_t half = static_cast<std::size_t>(batch * S * Hkv * D);
  for (index_t l = 0; l < c.num_layers; ++l) {
    const model::DenseLayerOffsets& o = dl.layers[static_cast<std::size_t>(l)];
    A* kc = mem.cache.data() + static_cast<std::size_t>(l) * 2 * half;
    A* vc = kc + half;
    rmsnorm_forward<A>(mem.x, wvec(o.attn_norm), eps, mem.h, View<float, 1>{}, s);
    detail::linear_forward<A>(m.gemm, m.compute, w + o.qkv, qkvw, C, mem.h, mem.qkv, s);
    rope_forward<A>(m.rope, pv, detail::heads3(mem.qkv, 0, H, D), s);
    rope_forward<A>(m.rope, pv, detail::heads3(mem.qkv, H, Hkv, D), s);
    // Append this position's k and v: row b of qkv to cache[b, pos].
    const std::size_t kv_bytes = sizeof(A) * static_cast<std::size_t>(Hkv * D);
    const std::size_t cache_pitch = sizeof(A) * static_cast<std::size_t>(S * Hkv * D);
    const std::size_t qkv_pitch = sizeof(A) * static_cast<std::size_t>(mem.qkv.stride[0]);
    REASON_CUDA_CHECK(cudaMemcpy2DAsync(kc + pos * Hkv * D, cache_pitch, mem.qkv.data + H * D, qkv_pitch, kv_bytes,
                                        static_cast<std::size_t>(batch), cudaMemcpyDeviceToDevice, s));
    REASON_CUDA_CHECK(cudaMemcpy2DAsync(vc + pos * Hkv * D, cache_pitch, mem.qkv.data + (H + Hkv) * D, qkv_pitch, kv_bytes,
                                        static_cast<std::size_t>(batch), cudaMemcpyDeviceToDevice, s));
    const View<const A, 3> q(mem.qkv.data, {batch, H, D}, {mem.qkv.stride[0], D, 1});
    const View<const A, 4> kcache(kc, {batch, S, Hkv, D}, {S * Hkv * D, Hkv * D, D, 1});
    const View<const A, 4> vcache(vc, {batch, S, Hkv, D}, {S * Hkv * D, Hkv * D, D, 1});
    attention_decode<A>(q, kcache, vcache, pos + 1, View<A, 3>(mem.ctx.data, {batch, H, D}, {H * D, D, 1}), s);
    detail::linear_forward<A>(m.gemm, m.compute, w + o.o, C, H * D, mem.ctx, mem.y, s);
    accumulate<A>(mem.x, mem.y, s);
    rmsnorm_forward<A>(mem.x, wvec(o.ffn_norm), eps, mem.h, View<float, 1>{}, s);
    detail::linear_forward<A>(m.gemm, m.compute, w + o.gate_up, 2 * F, C, mem.h, mem.gate_up, s);
    swiglu_forward<A>(mem.gate_up.slice(1, 0, F), mem.gate_up.slice(1, F, 2 * F), mem.act, s);
    detail::linear_forward<A>(m.gemm, m.compute, w + o.down, C, F, mem.act, mem.y, s);
    accumulate<A>(mem.x, mem.y, s);
  }
  rmsnorm_forward<A>(mem.x, wvec(dl.final_norm), eps, mem.h, View<float, 1>{}, s);
  m.gemm.template run<A, float>(Trans::N, Trans::T, batch, V, C, 1.0f, mem.h.data, C, w + dl.lm_head, C, 0.0f, mem.logits.data, V,
                       m.compute, Epilogue::none, nullptr, s);
  REASON_CUDA_CHECK(
      cudaMemcpyAsync(logits.data, mem.logits.data, sizeof(float) * batch * V, cudaMemcpyDeviceToHost, s));
  REASON_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace reason::gpu
