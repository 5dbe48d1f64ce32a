// reason/model/transformer.hpp — a decoder-only transformer composed from policies at compile time.
//
//   using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 32}>,  // attention
//                                  ffn::SwiGLU,                                             // feed-forward
//                                  norm::RMSNorm,                                           // norm
//                                  linear::Dense,                                           // linear layers
//                                  precision::Fp32>;                                        // number types
//
// Pre-norm blocks (GPT-2 / Llama): x += attn(norm1(x)); x += ffn(norm2(x)); then a final norm
// and an untied LM head, trained with softmax cross-entropy on next tokens. With a routed FFN
// (moe::MoE<...>) the first Config::first_dense_layers layers keep Ffn::dense_policy and the rest
// are MoE layers; the model then also gathers router statistics and balances the experts
// (take_router_stats, balance_experts).
//
// Design rules (llm.c): no graph and no tape. forward() is the list of module calls in layer
// order and backward() the same list reversed, each written out. Parameters and their
// gradients are flat buffers owned by the caller, laid out by `layout()`; activations that
// backward needs are views into one arena, sized up front by `reserve(batch, seq)`.
// Parameter gradients accumulate (+=) so micro-batches add up; activation gradients overwrite.
// The LM head and the loss are fused (kernels/cross_entropy.hpp): forward forms d(final
// hidden) and accumulates d(lm_head) while each chunk of logits is live, so the [N, V] logits
// never exist whole; backward continues from there.
//
// Model parallelism (model/sharding.hpp): built with Sharding{.tensor = group}, the model is one
// rank's share of a Megatron tensor-parallel split (Shoeybi et al. 2019, §3): each rank holds
// num_heads / tp query heads and intermediate_size / tp FFN units. qkv and gate_up are
// column-parallel (this rank's output rows), o and down row-parallel (its input columns), so each
// attention and FFN block's output is a partial sum, all-reduced once in forward; in backward the
// block's input gradient is likewise partial and all-reduced once. KV heads are split when
// kv_heads >= tp and replicated where kv_heads < tp (each kv head on tp / kv_heads ranks, whose
// partial gradients the trainer's buffers sum). Norms, the embedding and the LM head are
// replicated: every rank computes them whole, on identical inputs. Built with
// Sharding{.expert = group}, an MoE model's routed experts are spread over the group's ranks
// (moe/moe.hpp) and everything else is replicated; each rank runs its own sequences, the forwards
// and backwards of the group in step — a rank with no sequences in one still serves its experts
// (a forward of [0, T] tokens), and decoding goes on while any rank decodes (any_rank_decoding).
// Built with Sharding{.pipeline = group}, it is one stage of a pipeline: a consecutive run of layers,
// driven through stage_forward (stage_forward_objective) and stage_backward by parallel::Pipeline's
// 1F1B schedule; decode_step passes each step through the stages and gives every stage the logits.
// Every way, layout() is this rank's share
// and shard_plan() maps it onto full_layout(), the unsplit model's.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "reason/core/arena.hpp"
#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/cross_entropy.hpp"
#include "reason/kernels/embedding.hpp"
#include "reason/kernels/gemm.hpp"
#include "reason/kernels/lm_head.hpp"
#include "reason/kernels/residual.hpp"
#include "reason/model/concepts.hpp"
#include "reason/model/config.hpp"
#include "reason/model/loss_result.hpp"
#include "reason/model/metadata.hpp"
#include "reason/model/shard_plan.hpp"
#include "reason/model/sharding.hpp"
#include "reason/moe/router_stats.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/precision/precision.hpp"

namespace reason::model {

namespace detail {
template <class F, bool Routed>
struct DenseFfnOf {
  using type = F;
};
template <class F>
struct DenseFfnOf<F, true> {
  using type = typename F::dense_policy;
};
}  // namespace detail

template <class Attn, class Ffn, class Norm = norm::RMSNorm, class Linear = linear::Dense,
          class Precision = precision::Fp32>
class Transformer {
  static_assert(AttentionPolicy<Attn>,
                "model::Transformer<Attn, Ffn, Norm, Linear, Precision>: Attn must be an attention policy "
                "(e.g. attention::MultiHead<attention::Shape{.head_dim = 64}>)");
  static_assert(FfnPolicy<Ffn>,
                "model::Transformer<Attn, Ffn, Norm, Linear, Precision>: Ffn must be a feed-forward policy (e.g. ffn::SwiGLU)");
  static_assert(NormPolicy<Norm>,
                "model::Transformer<Attn, Ffn, Norm, Linear, Precision>: Norm must be a norm policy (e.g. norm::RMSNorm)");
  static_assert(LinearPolicy<Linear>,
                "model::Transformer<Attn, Ffn, Norm, Linear, Precision>: Linear must be a linear-layer policy (e.g. linear::Dense)");
  static_assert(!requires { Attn::shape; } || Attn::shape.causal,
                "model::Transformer: a decoder-only language model needs causal attention (Shape{.causal = true})");
  static_assert(precision::PrecisionPolicy<Precision>,
                "model::Transformer<Attn, Ffn, Norm, Linear, Precision>: Precision must be a precision policy "
                "(precision::Fp32 or precision::Fp64)");
  static_assert(std::is_same_v<typename Precision::param_t, typename Precision::compute_t>,
                "model::Transformer: the host backend computes in the parameter type (precision::Fp32 or "
                "precision::Fp64); mixed precision (precision::Bf16, precision::Fp16) is the CUDA backend's, "
                "gpu::DenseTransformer");

 public:
  using T = typename Precision::param_t;
  using precision_policy = Precision;
  using attention_policy = Attn;
  using ffn_policy = Ffn;
  /// Whether the FFN is routed (moe::MoE): its layers after Config::first_dense_layers are MoE
  /// layers, the ones before use Ffn::dense_policy with Config::intermediate_size.
  static constexpr bool routed = RoutedFfnPolicy<Ffn>;
  using DenseFfn = typename detail::DenseFfnOf<Ffn, routed>::type;
  static constexpr int head_dim = Attn::head_dim;
  static constexpr index_t loss_chunk_rows = 64;  // rows of logits alive at once in the fused loss

  /// The whole model, or with `sharding` this rank's share of it (see the top of this file).
  explicit Transformer(const Config& config, Sharding<T> sharding = {}) : config_(config), sharding_(sharding) {
    config_.validate(head_dim);
    const Config& c = config_;
    if constexpr (!routed) {
      REASON_CHECK(c.first_dense_layers == 0, "model::Config: first_dense_layers = ", c.first_dense_layers,
                   " applies to MoE models; this model's feed-forward policy (", Ffn::name, ") is dense in every layer");
    } else {
      REASON_CHECK(c.moe_intermediate_size > 0, "model::Config: moe_intermediate_size = ", c.moe_intermediate_size,
                   "; an MoE model (", Ffn::signature(), ") needs its routed experts' width > 0");
    }
    check_sharding();
    if (sharded()) {
      ParamLayout full;
      (void)declare(full, Sharding<T>{});  // the unsplit model's layout; the modules are discarded
      layers_ = declare(layout_, sharding_);
      plan_ = ShardPlan(full, layout_, plan_entries(full));
    } else {
      layers_ = declare(layout_, sharding_);
    }
    if constexpr (routed) {
      moe_layers_ = c.num_layers - c.first_dense_layers;
      pending_load_.assign(static_cast<std::size_t>(moe_layers_ * Ffn::experts), 0.0);
      router_stats_.resize(static_cast<std::size_t>(moe_layers_));
    }
  }

  [[nodiscard]] const Config& config() const { return config_; }
  /// The attention policy with its compile-time numbers ("sliding_window(W=256)"): a checkpoint
  /// records it, so weights trained with one variant do not load silently into another.
  static std::string attention_signature() {
    if constexpr (requires { Attn::signature(); }) return Attn::signature();
    return Attn::name;
  }
  /// The feed-forward policy with its numbers ("moe(sigmoid_top_k(E=8, k=2), ...)"), likewise.
  static std::string ffn_signature() {
    if constexpr (requires { Ffn::signature(); }) return Ffn::signature();
    return Ffn::name;
  }
  /// What a checkpoint records about the model (model/metadata.hpp).
  [[nodiscard]] std::map<std::string, std::string> model_metadata() const {
    return model::model_metadata(config_, head_dim, attention_signature(), ffn_signature());
  }
  /// Throws unless checkpoint metadata `meta` describes this model (model/metadata.hpp).
  void expect_model_metadata(const std::map<std::string, std::string>& meta, const std::string& what) const {
    model::expect_model_metadata(config_, head_dim, attention_signature(), ffn_signature(), meta, what);
  }
  /// This rank's parameters (all of them unless the model is sharded).
  [[nodiscard]] const ParamLayout& layout() const { return layout_; }
  [[nodiscard]] std::size_t num_params() const { return layout_.size(); }

  /// Whether this is one rank's share of a tensor-, expert- or pipeline-parallel model.
  [[nodiscard]] bool sharded() const {
    return sharding_.tensor != nullptr || sharding_.expert != nullptr || sharding_.pipeline != nullptr;
  }
  [[nodiscard]] const Sharding<T>& sharding() const { return sharding_; }
  /// The unsplit model's layout (layout() itself when not sharded).
  [[nodiscard]] const ParamLayout& full_layout() const { return sharded() ? plan_.full_layout() : layout_; }
  /// How layout() maps onto full_layout(); sharded models only.
  [[nodiscard]] const ShardPlan& shard_plan() const {
    REASON_CHECK(sharded(), "Transformer::shard_plan: the model is not sharded");
    return plan_;
  }
  /// A run's starting parameters for this rank: full_layout().initialize(seed), and this rank's
  /// share of them, so a split run starts where the unsplit one does.
  [[nodiscard]] std::vector<T> initial_params(std::uint64_t seed) const {
    std::vector<T> full(full_layout().size());
    full_layout().initialize(std::span<T>(full), seed);
    if (!sharded()) return full;
    std::vector<T> local(layout_.size());
    plan_.scatter(std::span<const T>(full), std::span<T>(local));
    return local;
  }

  /// Sizes the activation arena for up to `batch` sequences of up to `seq` tokens.
  void reserve(index_t batch, index_t seq) {
    REASON_CHECK(batch > 0 && seq > 0 && seq <= config_.max_seq_len, "Transformer::reserve: batch = ", batch,
                 ", seq = ", seq, "; expected batch > 0 and 0 < seq <= max_seq_len = ", config_.max_seq_len);
    const std::size_t bytes = Arena::measure([&](Arena& a) { (void)carve(a, batch, seq); });
    for (Slot& slot : slots_) {
      slot.pending_backward = false;  // the buffer may move: earlier activation views are invalid now
      slot.acts = {};
      slot.arena.reserve(bytes);
    }
    reserved_ = {batch, seq};
  }
  /// Bytes of one set of activations (a pipeline stage keeps activation_slots() of them).
  [[nodiscard]] std::size_t activation_bytes() const { return cur().arena.capacity(); }

  /// Mean next-token loss over targets >= 0; no gradients. tokens, targets [B, T].
  LossResult loss(const T* params, View<const std::int32_t, 2> tokens, View<const std::int32_t, 2> targets) {
    return run_forward(params, nullptr, tokens, targets, T(0));
  }

  /// Next-token logits [B T, V] for every position of tokens [B, T] (row b T + t).
  void logits(const T* params, View<const std::int32_t, 2> tokens, View<T, 2> out) {
    const index_t n = tokens.size(0) * tokens.size(1);
    expect_shape(out, "Transformer::logits: out", {n, config_.vocab_size});
    run_trunk(params, tokens, false);
    if (n == 0) return;
    kernels::gemm<T>(kernels::Trans::N, kernels::Trans::T, T(1), cur().acts.final_h,
                     matrix_at(params, lm_head_, config_.vocab_size, config_.hidden_size), T(0), out);
  }

  /// Forward for training: returns the summed loss and, since the LM head and loss are fused,
  /// already accumulates grad_scale * d(loss)/d(lm_head) into grads. Call backward() next.
  /// grad_scale is usually 1 / (target tokens in the whole optimizer step).
  LossResult forward(const T* params, T* grads, View<const std::int32_t, 2> tokens, View<const std::int32_t, 2> targets,
                     T grad_scale) {
    REASON_CHECK(grads != nullptr, "Transformer::forward: grads is null (use loss() for evaluation)");
    const LossResult r = run_forward(params, grads, tokens, targets, grad_scale);
    // The aux loss is a mean over this forward's tokens; weighting it by their share of the step
    // (grad_scale = 1 / the step's target tokens) makes micro-batches add up like the main loss.
    note_training_forward(static_cast<double>(grad_scale) * static_cast<double>(tokens.size(0) * tokens.size(1)));
    return r;
  }

  /// Backward through the blocks from the last forward(); parameter gradients accumulate.
  void backward(const T* params, T* grads) {
    expect_no_pipeline("Transformer::backward");
    run_backward(params, grads, {});
  }
  // ---- pipeline stages (Sharding::pipeline; parallel::Pipeline runs them in a 1F1B schedule) ----------

  /// Whether this rank holds the embedding (the first stage) and the final norm and LM head (the
  /// last); both without a pipeline.
  [[nodiscard]] bool first_stage() const { return sharding_.pipeline_rank() == 0; }
  [[nodiscard]] bool last_stage() const { return sharding_.pipeline_rank() == sharding_.pipeline_size() - 1; }
  /// The layers this rank runs: [first_layer(), first_layer() + local_layers()).
  [[nodiscard]] index_t first_layer() const { return first_layer_; }
  [[nodiscard]] index_t local_layers() const { return static_cast<index_t>(layers_.size()); }

  /// A pipeline stage's forward of one micro-batch with gradients: the first stage embeds `tokens`,
  /// the others start from `input` [B T, C] (the previous stage's output); the last stage ends in
  /// the fused LM head and loss (as forward()) and returns the summed loss, the others return
  /// nothing and leave their output in stage_output(). tokens and targets [B, T] on every stage
  /// (they size the activations; the last stage needs the targets).
  LossResult stage_forward(const T* params, T* grads, View<const std::int32_t, 2> tokens,
                           View<const std::int32_t, 2> targets, T grad_scale, View<const T, 2> input) {
    REASON_CHECK(grads != nullptr, "Transformer::stage_forward: grads is null");
    const View<const T, 2>* in = first_stage() ? nullptr : &input;
    if (last_stage()) return run_forward(params, grads, tokens, targets, grad_scale, in, true);
    run_trunk(params, tokens, true, in, true);
    cur().pending_backward = true;
    return {};
  }
  /// stage_forward with a caller-defined objective on the last stage's logits (forward_objective's;
  /// RL losses): grads null evaluates only (no backward follows). Returns the objective's loss on
  /// the last stage, 0 on the others.
  template <class Objective>
  double stage_forward_objective(const T* params, T* grads, View<const std::int32_t, 2> tokens, Objective&& objective,
                                 View<const T, 2> input) {
    const View<const T, 2>* in = first_stage() ? nullptr : &input;
    run_trunk(params, tokens, grads != nullptr, in, true);
    if (last_stage()) return objective_head(params, grads, objective);
    cur().pending_backward = grads != nullptr;
    return 0.0;
  }
  /// This stage's output [B T, C] of the last stage_forward (what the next stage receives).
  [[nodiscard]] View<const T, 2> stage_output() const { return cur().acts.layers.back().out; }
  /// The backward of the last stage_forward in the current slot: the last stage from its loss,
  /// the others from `output_grad` = d(loss)/d(stage_output()) (sent back by the next stage).
  /// Parameter gradients accumulate; d(loss)/d(input) is then stage_input_grad().
  void stage_backward(const T* params, T* grads, View<const T, 2> output_grad) {
    run_backward(params, grads, output_grad);
  }
  /// d(loss)/d(this stage's input) [B T, C] of the last stage_backward (what the previous stage receives).
  [[nodiscard]] View<const T, 2> stage_input_grad() const { return cur().acts.dres; }

  /// Keeps `n` sets of activations (one per micro-batch in flight on a pipeline stage), each of
  /// reserve()'s size; use_activation_slot(k) picks the one forward and backward use.
  void set_activation_slots(int n) {
    REASON_CHECK(n >= 1, "Transformer::set_activation_slots: n = ", n, ", expected >= 1");
    slots_.resize(static_cast<std::size_t>(n));
    slot_ = 0;
    if (reserved_.first > 0) reserve(reserved_.first, reserved_.second);
  }
  void use_activation_slot(int k) {
    REASON_CHECK(k >= 0 && static_cast<std::size_t>(k) < slots_.size(), "Transformer::use_activation_slot: slot ", k,
                 " of ", slots_.size());
    slot_ = static_cast<std::size_t>(k);
  }
  [[nodiscard]] int activation_slots() const { return static_cast<int>(slots_.size()); }

  /// Forward with a caller-defined objective on the logits (RL and distillation losses):
  /// `objective(first_row, logits)` sees the logits of rows [first_row, first_row + R) of the
  /// [B T, V] matrix (row b T + t: the prediction after token t of sequence b), overwrites them
  /// with the gradient of its loss, and returns the loss it added (kernels/lm_head.hpp). With
  /// grads, d(lm_head) accumulates and backward() may follow; with grads null it only evaluates.
  /// An MoE model's aux loss enters the gradient with weight `aux_weight` (this forward's share
  /// of the step; its value is reported in take_router_stats(), not in the returned loss).
  template <class Objective>
  double forward_objective(const T* params, T* grads, View<const std::int32_t, 2> tokens, Objective&& objective,
                           double aux_weight = 1.0) {
    run_trunk(params, tokens, grads != nullptr);
    const double loss = objective_head(params, grads, objective);
    if (grads != nullptr) note_training_forward(aux_weight);
    return loss;
  }

  /// MoE models: the router statistics of each MoE layer (layers first_dense_layers and up),
  /// summed over the training forwards (forward(), forward_objective() with gradients) since the
  /// last call, which resets them.
  std::vector<moe::RouterStats> take_router_stats()
    requires routed
  {
    return std::exchange(router_stats_, std::vector<moe::RouterStats>(static_cast<std::size_t>(moe_layers_)));
  }
  /// MoE models, after each optimizer step: every MoE layer's gate balances its experts on the
  /// load of the step's training forwards (moe::BiasBalance moves the bias buffer in `params`;
  /// other gates do nothing), then the step's load starts again from zero. When each rank trained
  /// on its own tokens (data or expert parallelism), the caller first sums the load over the ranks
  /// (train::balance_experts does, for the trainers).
  void balance_experts(T* params)
    requires routed
  {
    const std::size_t e = static_cast<std::size_t>(Ffn::experts);
    for (index_t i = 0; i < moe_layers_; ++i) {
      const Layer& m = layers_[static_cast<std::size_t>(config_.first_dense_layers + i)];
      m.ffn.balance(params, std::span<const double>(pending_load_).subspan(static_cast<std::size_t>(i) * e, e));
    }
    std::fill(pending_load_.begin(), pending_load_.end(), 0.0);
  }
  /// The load gathered for the next balance_experts ([MoE layers x E], what a checkpoint taken
  /// mid-accumulation keeps) and its restoration.
  [[nodiscard]] std::span<const double> pending_expert_load() const
    requires routed
  {
    return pending_load_;
  }
  void set_pending_expert_load(std::span<const double> load)
    requires routed
  {
    REASON_CHECK(load.size() == pending_load_.size(), "Transformer::set_pending_expert_load: ", load.size(),
                 " values, expected ", pending_load_.size(), " (", moe_layers_, " MoE layers x ", Ffn::experts, " experts)");
    std::copy(load.begin(), load.end(), pending_load_.begin());
  }

  /// The final hidden states [B T, C] (after the final norm) of the last forward — what a
  /// value or reward head reads.
  [[nodiscard]] View<const T, 2> final_hidden() const { return cur().acts.final_h; }
  /// d(loss)/d(final hidden) [B T, C] of the last forward with gradients: a head on the hidden
  /// states adds its gradient here before backward().
  [[nodiscard]] View<T, 2> hidden_grad() {
    REASON_CHECK(cur().pending_backward, "Transformer::hidden_grad: no forward() with gradients to add to");
    return cur().acts.dfinal;
  }
  /// Forward to the final hidden states only, for heads other than the LM head (value, reward).
  /// With `train`, d(final hidden) starts at zero for the head to fill through hidden_grad().
  /// An MoE model's aux loss enters the gradient with weight `aux_weight`, as in forward_objective.
  View<const T, 2> forward_hidden(const T* params, View<const std::int32_t, 2> tokens, bool train,
                                  double aux_weight = 1.0) {
    run_trunk(params, tokens, train);
    if (train) {
      for (index_t r = 0; r < cur().acts.dfinal.size(0); ++r)
        std::fill(cur().acts.dfinal.row(r), cur().acts.dfinal.row(r) + cur().acts.dfinal.size(1), T(0));
      note_training_forward(aux_weight);
    }
    cur().pending_backward = train;
    return cur().acts.final_h;
  }

  // ---- decoding with a KV cache ---------------------------------------------------------------

  /// Memory for decoding `batch` sequences of up to `max_seq` tokens: every layer's KV cache
  /// (in the attention policy's layout) plus per-step scratch.
  class DecodeState {
   public:
    [[nodiscard]] index_t batch() const { return batch_; }
    [[nodiscard]] index_t max_seq() const { return max_seq_; }
    [[nodiscard]] std::size_t cache_bytes() const { return cache_elems_ * sizeof(T); }

   private:
    friend class Transformer;
    index_t batch_ = 0, max_seq_ = 0;
    index_t next_pos_ = 0;  // positions are fed in order; pos < next_pos_ rewinds (rewrites the cache from there)
    std::size_t cache_elems_ = 0;
    std::vector<T> memory_;
    std::vector<typename Attn::template Module<T, Linear>::Cache> caches_;
    View<T, 2> x_, h_, y_;  // [B, C]
    View<T, 1> rstd_;       // [B]
    typename Ffn::template Module<T, Linear>::Saved ffn_;
    typename DenseFfn::template Module<T, Linear>::Saved dense_;
    T* attn_scratch_ = nullptr;
    Arena arena_;
  };

  /// On a pipeline stage: the caches of this stage's layers (decode_step below).
  [[nodiscard]] DecodeState make_decode_state(index_t batch, index_t max_seq) const {
    REASON_CHECK(batch > 0 && max_seq > 0 && max_seq <= config_.max_seq_len, "Transformer::make_decode_state: batch = ",
                 batch, ", max_seq = ", max_seq, "; expected > 0 and max_seq <= max_seq_len = ", config_.max_seq_len);
    DecodeState st;
    st.batch_ = batch;
    st.max_seq_ = max_seq;
    const index_t per_layer = batch * layers_[0].attn.cache_elems(max_seq);
    st.cache_elems_ = static_cast<std::size_t>(per_layer * local_layers());
    st.memory_.assign(st.cache_elems_, T(0));
    for (index_t l = 0; l < local_layers(); ++l)
      st.caches_.push_back(layers_[l].attn.cache_at(st.memory_.data() + l * per_layer, batch, max_seq));
    auto carve_scratch = [&](Arena& arena) {
      const index_t c = config_.hidden_size;
      st.x_ = arena.view<T>("decode.x", batch, c);
      st.h_ = arena.view<T>("decode.h", batch, c);
      st.y_ = arena.view<T>("decode.y", batch, c);
      st.rstd_ = arena.view<T>("decode.rstd", batch);
      if (const Layer* m = first_layer(true)) {
        st.ffn_ = m->ffn.carve(arena, batch);
        if constexpr (routed) st.ffn_.drop_over_capacity = false;  // generation keeps every token
      }
      if (const Layer* m = first_layer(false)) st.dense_ = m->dense.carve(arena, batch);
      st.attn_scratch_ = arena.allocate<T>(static_cast<std::size_t>(layers_[0].attn.decode_scratch_elems(batch)), "decode.attn");
    };
    st.arena_.reserve(Arena::measure(carve_scratch));
    carve_scratch(st.arena_);
    return st;
  }

  /// Expert parallel: every decode_step is a collective of the expert group (each rank's experts
  /// serve every rank's tokens), so a decode loop goes on while any rank of the group has rows to
  /// decode, the finished ones joining (infer/lockstep.hpp). Whether any has, `here` saying whether
  /// this rank has: one all-reduce of one value over the group. Without expert parallelism: `here`.
  [[nodiscard]] bool any_rank_decoding(bool here) const {
    if (sharding_.expert == nullptr) return here;
    T flag = here ? T(1) : T(0);
    sharding_.expert->all_reduce_sum(std::span<T>(&flag, 1));
    return flag > T(0);
  }

  /// Feeds tokens [B] at position `pos` (every sequence at the same position) and writes the
  /// next-token logits [B, V]. Positions must be fed in order 0, 1, 2, ... per state.
  /// On a pipeline stage it is a collective of the stages: the first embeds the tokens, each runs
  /// its layers on what the previous one sends ([B, C]) and sends its output on, and the last
  /// stage's logits are broadcast, so every stage gets them bit for bit and samples what the others
  /// sample (no stage decodes alone; the pipeline runs one step at a time, without overlap).
  void decode_step(const T* params, View<const std::int32_t, 1> tokens, index_t pos, DecodeState& st,
                   View<T, 2> logits) const {
    expect_shape(tokens, "decode_step: tokens", {st.batch_});
    expect_shape(logits, "decode_step: logits", {st.batch_, config_.vocab_size});
    REASON_CHECK(pos >= 0 && pos < st.max_seq_, "decode_step: position ", pos, " outside [0, ", st.max_seq_, ")");
    REASON_CHECK(pos <= st.next_pos_, "decode_step: position ", pos, " skips ahead of the next position ", st.next_pos_,
                 " (positions before it were never fed; the cache has no keys there)");
    REASON_CHECK(static_cast<index_t>(st.caches_.size()) == local_layers() && st.x_.size(1) == config_.hidden_size,
                 "decode_step: the DecodeState was made by a model of another shape (", st.caches_.size(), " layers, width ",
                 st.x_.size(1), "; this model: ", local_layers(), ", ", config_.hidden_size, ")");
    const index_t history = layers_[0].attn.cache_history();
    REASON_CHECK(history == 0 || pos + 1 >= st.next_pos_,  // a ring buffer has overwritten what an earlier position sees
                 "decode_step: position ", pos, " rewinds past what the cache keeps (", history,
                 " positions, the last of them ", st.next_pos_ - 1, "; only the last position may be fed again)");
    st.next_pos_ = pos + 1;
    const index_t c = config_.hidden_size;
    ShardGroup<T>* stages = sharding_.pipeline;
    const int stage = sharding_.pipeline_rank();
    auto flat = [](View<T, 2> v) { return std::span<T>(v.data, static_cast<std::size_t>(v.size(0) * v.size(1))); };
    if (first_stage())
      kernels::embedding_forward<T>(tokens, matrix_at(params, embed_, config_.vocab_size, c), st.x_);
    else
      stages->recv(flat(st.x_), stage - 1);
    for (index_t l = 0; l < local_layers(); ++l) {
      const Layer& m = layers_[l];
      m.attn_norm.forward(params, st.x_, st.h_, st.rstd_);
      m.attn.decode(params, st.h_, pos, st.caches_[l], st.attn_scratch_, st.y_);
      sum_partial(st.y_);
      kernels::accumulate<T>(st.x_, st.y_);
      m.ffn_norm.forward(params, st.x_, st.h_, st.rstd_);
      if (m.routed)
        m.ffn.forward(params, st.h_, st.ffn_, st.y_);
      else
        m.dense.forward(params, st.h_, st.dense_, st.y_);
      if (!m.routed) sum_partial(st.y_);
      kernels::accumulate<T>(st.x_, st.y_);
    }
    if (!last_stage()) {
      stages->send(flat(st.x_), stage + 1);
      for (index_t b = 0; b < st.batch_; ++b) std::fill_n(logits.row(b), config_.vocab_size, T(0));
    } else {
      final_norm_.forward(params, st.x_, st.h_, st.rstd_);
      kernels::gemm<T>(kernels::Trans::N, kernels::Trans::T, T(1), st.h_,
                       matrix_at(params, lm_head_, config_.vocab_size, c), T(0), logits);
    }
    // The last stage's logits to every stage: a sum in which the others add zeros (exact).
    if (stages != nullptr && stages->size() > 1) {
      REASON_CHECK(logits.is_contiguous(), "decode_step: a pipeline stage's logits must be contiguous");
      stages->all_reduce_sum(flat(logits));
    }
  }

 private:
  using NormModule = typename Norm::template Module<T>;
  using AttnModule = typename Attn::template Module<T, Linear>;
  using FfnModule = typename Ffn::template Module<T, Linear>;
  using DenseModule = typename DenseFfn::template Module<T, Linear>;

  struct Layer {
    NormModule attn_norm;
    AttnModule attn;
    NormModule ffn_norm;
    bool routed = false;  // ffn (an MoE layer) or dense
    FfnModule ffn;
    DenseModule dense;
  };

  /// One layer's saved activations; shapes with N = B T rows.
  struct LayerActs {
    View<T, 2> in;     // [N, C] residual stream entering the layer
    View<T, 2> h1;     // [N, C] attn_norm(in)
    View<T, 1> rstd1;  // [N]
    typename AttnModule::Saved attn;
    View<T, 2> mid;    // [N, C] in + attn(h1)
    View<T, 2> h2;     // [N, C] ffn_norm(mid)
    View<T, 1> rstd2;  // [N]
    typename FfnModule::Saved ffn;     // routed layers
    typename DenseModule::Saved dense; // dense layers
    View<T, 2> out;    // [N, C] mid + ffn(h2): the next layer's `in`
  };

  struct Activations {
    View<const std::int32_t, 1> tokens;  // [N] the forward's tokens (the caller keeps them alive)
    View<std::int32_t, 1> positions;     // [N] t for row b T + t
    std::vector<LayerActs> layers;
    View<T, 2> final_h;                  // [N, C] norm(out of the last layer)
    View<T, 1> final_rstd;               // [N]
    View<T, 2> dfinal;                   // [N, C] d(loss)/d(final_h), formed by the fused loss
    View<T, 2> loss_scratch;             // [chunk, V]
    View<T, 2> dres, dh, dtmp;           // [N, C] backward temporaries
    typename AttnModule::Scratch attn_scratch;
    typename FfnModule::Scratch ffn_scratch;
    typename DenseModule::Scratch dense_scratch;
  };

  Activations carve(Arena& arena, index_t batch, index_t seq) const {
    const index_t n = batch * seq, c = config_.hidden_size;
    Activations a;
    a.positions = arena.view<std::int32_t>("positions", n);
    View<T, 2> prev = arena.view<T>("embedding", n, c);
    for (index_t l = 0; l < local_layers(); ++l) {
      const Layer& m = layers_[l];
      LayerActs s;
      s.in = prev;
      s.h1 = arena.view<T>("h1", n, c);
      s.rstd1 = arena.view<T>("rstd1", n);
      s.attn = m.attn.carve(arena, batch, seq);
      s.mid = arena.view<T>("mid", n, c);
      s.h2 = arena.view<T>("h2", n, c);
      s.rstd2 = arena.view<T>("rstd2", n);
      if (!m.routed)
        s.dense = m.dense.carve(arena, n);
      else if constexpr (routed)
        s.ffn = m.ffn.carve(arena, n, seq);
      s.out = arena.view<T>("out", n, c);
      prev = s.out;
      a.layers.push_back(s);
    }
    a.final_h = arena.view<T>("final_h", n, c);
    a.final_rstd = arena.view<T>("final_rstd", n);
    a.dfinal = arena.view<T>("dfinal", n, c);
    a.loss_scratch = arena.view<T>("loss_scratch", std::min(n, loss_chunk_rows), config_.vocab_size);
    a.dres = arena.view<T>("dres", n, c);
    a.dh = arena.view<T>("dh", n, c);
    a.dtmp = arena.view<T>("dtmp", n, c);
    a.attn_scratch = layers_[0].attn.carve_scratch(arena, batch, seq);
    if (const Layer* m = first_layer(true)) a.ffn_scratch = m->ffn.carve_scratch(arena, n);
    if (const Layer* m = first_layer(false)) a.dense_scratch = m->dense.carve_scratch(arena, n);
    return a;
  }

  /// Embedding, blocks and final norm for tokens [B, T]: fills the activations up to final_h.
  /// `training`: a forward whose backward follows; only then do MoE layers drop assignments over
  /// capacity (evaluation and decoding keep every token, as Switch and GShard evaluate).
  /// A pipeline stage after the first starts from *input [B T, C] instead of the embedding (stage:
  /// the call comes from the stage API; any other forward of a pipeline stage is refused).
  void run_trunk(const T* params, View<const std::int32_t, 2> tokens, bool training,
                 const View<const T, 2>* input = nullptr, bool stage = false) {
    if (!stage) expect_no_pipeline("Transformer: a forward");
    const index_t batch = tokens.size(0), seq = tokens.size(1), n = batch * seq, c = config_.hidden_size;
    // Expert parallel: a rank may have no sequences in a forward the others run; it still takes
    // part in every exchange, its experts computing on the rows the other ranks send.
    REASON_CHECK(seq > 0 && (batch > 0 || sharding_.expert != nullptr), "Transformer: tokens: shape ",
                 shape_string(tokens.shape), ", expected at least one sequence of at least one token (zero sequences ",
                 "only on a rank of an expert-parallel model)");
    REASON_CHECK(tokens.is_contiguous() || batch == 0, "Transformer: tokens must be contiguous [B, T]");
    REASON_CHECK(seq <= config_.max_seq_len, "Transformer: sequence length ", seq, " exceeds max_seq_len = ", config_.max_seq_len);
    REASON_CHECK(cur().arena.capacity() > 0, "Transformer: call reserve(batch, seq) before the first forward");
    cur().pending_backward = false;
    cur().arena.reset();
    cur().acts = carve(cur().arena, batch, seq);
    Activations& a = cur().acts;
    if constexpr (routed)
      for (index_t l = config_.first_dense_layers; l < config_.num_layers; ++l) a.layers[l].ffn.drop_over_capacity = training;
    cur().batch = batch;
    a.tokens = make_view(tokens.data, n);
    for (index_t i = 0; i < n; ++i) a.positions(i) = static_cast<std::int32_t>(i % seq);

    if (n == 0) {  // expert parallel, no rows here: only the MoE layers' exchanges, in layer order
      if constexpr (routed)
        for (index_t l = 0; l < local_layers(); ++l)
          if (layers_[l].routed) layers_[l].ffn.forward(params, a.layers[l].h2, a.layers[l].ffn, a.layers[l].out);
      return;
    }
    if (input == nullptr) {
      kernels::embedding_forward<T>(a.tokens, matrix_at(params, embed_, config_.vocab_size, c), a.layers[0].in);
    } else {
      expect_shape(*input, "Transformer::stage_forward: input", {n, c});
      for (index_t r = 0; r < n; ++r) std::copy_n(input->row(r), c, a.layers[0].in.row(r));
    }
    for (index_t l = 0; l < local_layers(); ++l) {
      const Layer& m = layers_[l];
      LayerActs& s = a.layers[l];
      m.attn_norm.forward(params, s.in, s.h1, s.rstd1);
      m.attn.forward(params, batch, s.h1, a.positions, s.attn, s.mid);
      sum_partial(s.mid);  // tensor parallel: o is row-parallel
      kernels::accumulate<T>(s.mid, s.in);
      m.ffn_norm.forward(params, s.mid, s.h2, s.rstd2);
      if (m.routed)
        m.ffn.forward(params, s.h2, s.ffn, s.out);
      else
        m.dense.forward(params, s.h2, s.dense, s.out);
      if (!m.routed) sum_partial(s.out);  // down is row-parallel
      kernels::accumulate<T>(s.out, s.mid);
    }
    if (last_stage()) final_norm_.forward(params, a.layers.back().out, a.final_h, a.final_rstd);
  }

  LossResult run_forward(const T* params, T* grads, View<const std::int32_t, 2> tokens,
                         View<const std::int32_t, 2> targets, T grad_scale, const View<const T, 2>* input = nullptr,
                         bool stage = false) {
    expect_shape(targets, "Transformer: targets", tokens.shape);
    REASON_CHECK(targets.is_contiguous(), "Transformer: targets must be contiguous [B, T]");
    run_trunk(params, tokens, grads != nullptr, input, stage);
    const index_t n = tokens.size(0) * tokens.size(1), c = config_.hidden_size;
    if (n == 0) {  // expert parallel, no rows here (run_trunk)
      cur().pending_backward = grads != nullptr;
      return {};
    }
    const Activations& a = cur().acts;
    const auto head = matrix_at(params, lm_head_, config_.vocab_size, c);
    const auto r = kernels::lm_head_cross_entropy<T>(
        a.final_h, head, make_view(targets.data, n), grad_scale, a.loss_scratch, grads ? a.dfinal : View<T, 2>{},
        grads ? matrix_at(grads, lm_head_, config_.vocab_size, c) : View<T, 2>{});
    cur().pending_backward = grads != nullptr;
    return {r.loss_sum, r.count};
  }

  /// Backward from the last forward with gradients: from its loss, or on a pipeline stage before the
  /// last from `output_grad` = d(loss)/d(this stage's output); leaves d(input) in acts.dres.
  void run_backward(const T* params, T* grads, View<const T, 2> output_grad) {
    REASON_CHECK(cur().pending_backward, "Transformer::backward: no forward() with gradients to go back through");
    cur().pending_backward = false;
    const Activations& a = cur().acts;
    const index_t batch = cur().batch;
    View<T, 2> dres = a.dres, dh = a.dh, dtmp = a.dtmp;
    if (batch == 0) {  // expert parallel, no rows here: the MoE layers' exchanges, last layer first
      if constexpr (routed)
        for (index_t l = local_layers() - 1; l >= 0; --l)
          if (layers_[l].routed) layers_[l].ffn.backward(params, grads, a.layers[l].h2, a.layers[l].ffn, a.ffn_scratch, dres, dh);
      return;
    }
    if (last_stage()) {
      final_norm_.backward(params, grads, a.layers.back().out, a.final_rstd, a.dfinal, dres);
    } else {
      expect_shape(output_grad, "Transformer::stage_backward: output_grad", {dres.size(0), dres.size(1)});
      for (index_t r = 0; r < dres.size(0); ++r) std::copy_n(output_grad.row(r), dres.size(1), dres.row(r));
    }
    for (index_t l = local_layers() - 1; l >= 0; --l) {
      const Layer& m = layers_[l];
      const LayerActs& s = a.layers[l];
      if (m.routed)
        m.ffn.backward(params, grads, s.h2, s.ffn, a.ffn_scratch, dres, dh);
      else
        m.dense.backward(params, grads, s.h2, s.dense, a.dense_scratch, dres, dh);
      if (!m.routed) sum_partial(dh);  // gate_up is column-parallel: each rank's d(h2) is a part
      m.ffn_norm.backward(params, grads, s.mid, s.rstd2, dh, dtmp);
      kernels::accumulate<T>(dres, dtmp);  // d(mid) = d(out) + d(through the ffn branch)
      m.attn.backward(params, grads, batch, s.h1, a.positions, s.attn, a.attn_scratch, dres, dh);
      sum_partial(dh);  // qkv is column-parallel
      m.attn_norm.backward(params, grads, s.in, s.rstd1, dh, dtmp);
      kernels::accumulate<T>(dres, dtmp);  // d(in) = d(mid) + d(through the attention branch)
    }
    if (first_stage())
      kernels::embedding_backward<T>(a.tokens, dres, matrix_at(grads, embed_, config_.vocab_size, config_.hidden_size));
  }

  /// Declares the layers into `layout` (this rank's share under `sh`), in checkpoint order.
  std::vector<Layer> declare(ParamLayout& layout, const Sharding<T>& sh) {
    const Config& c = config_;
    const index_t tp = sh.tensor_size();
    const double out_std = c.init_std / std::sqrt(2.0 * static_cast<double>(c.num_layers));  // GPT-2 residual scaling
    // A pipeline stage s of S runs layers [s L / S, (s + 1) L / S); the first also embeds, the last
    // also holds the final norm and the LM head.
    const index_t stages = sh.pipeline_size(), stage = sh.pipeline_rank();
    const index_t l0 = stage * c.num_layers / stages, l1 = (stage + 1) * c.num_layers / stages;
    first_layer_ = l0;
    if (stage == 0) embed_ = layout.add("embed.weight", {c.vocab_size, c.hidden_size}, Init::normal, c.init_std);
    const attention::Dims ad{c.hidden_size, c.num_heads / tp, std::max<index_t>(1, c.num_kv_heads / tp),
                             c.max_seq_len, c.rope_theta, c.init_std, out_std};
    const ffn::Dims fd{c.hidden_size, c.intermediate_size / tp, c.init_std, out_std, c.moe_intermediate_size};
    std::vector<Layer> layers;
    for (index_t l = l0; l < l1; ++l) {
      const std::string p = "layers." + std::to_string(l);
      Layer layer;
      layer.attn_norm = NormModule(layout, p + ".attn_norm", c.hidden_size, c.norm_eps);
      layer.attn = AttnModule(layout, p + ".attn", ad);
      layer.ffn_norm = NormModule(layout, p + ".ffn_norm", c.hidden_size, c.norm_eps);
      layer.routed = routed && l >= c.first_dense_layers;
      if (!layer.routed)
        layer.dense = DenseModule(layout, p + ".ffn", fd);
      else if constexpr (expert_parallel_ready)
        layer.ffn = sh.expert ? FfnModule(layout, p + ".ffn", fd, sh.expert) : FfnModule(layout, p + ".ffn", fd);
      else
        layer.ffn = FfnModule(layout, p + ".ffn", fd);
      layers.push_back(std::move(layer));
    }
    if (stage == stages - 1) {
      final_norm_ = NormModule(layout, "norm", c.hidden_size, c.norm_eps);
      lm_head_ = layout.add("lm_head.weight", {c.vocab_size, c.hidden_size}, Init::normal, c.init_std);
    }
    return layers;
  }

  /// Whether the routed FFN can spread its experts over a group (moe::MoE can).
  static constexpr bool expert_parallel_ready =
      std::is_constructible_v<FfnModule, ParamLayout&, std::string, const ffn::Dims&, ShardGroup<T>*>;

  /// Refuses a split the model cannot make, naming what does not divide.
  void check_sharding() const {
    const Config& c = config_;
    REASON_CHECK((sharding_.tensor != nullptr) + (sharding_.expert != nullptr) + (sharding_.pipeline != nullptr) <= 1,
                 "Transformer: tensor, expert and pipeline parallelism are one at a time here; build with one of them");
    if (sharding_.pipeline != nullptr) {
      REASON_CHECK(!routed, "Transformer: pipeline parallelism of an MoE model (", ffn_signature(),
                   ") is not supported yet: its router statistics and balancing are per model, not per stage");
      REASON_CHECK(c.num_layers >= sharding_.pipeline_size(), "Transformer: a pipeline of ", sharding_.pipeline_size(),
                   " stages needs at least as many layers; num_layers = ", c.num_layers);
    }
    if (sharding_.tensor != nullptr) {
      const index_t tp = sharding_.tensor_size();
      REASON_CHECK(!routed, "Transformer: tensor parallelism splits dense FFNs; an MoE model (", ffn_signature(),
                   ") spreads its experts with expert parallelism (Sharding::expert)");
      REASON_CHECK(requires { typename Attn::pattern; },
                   "Transformer: tensor parallelism splits the q/k/v attention policies' heads (multi_head, "
                   "sliding_window, top_k); ", attention_signature(), " is not one of them");
      REASON_CHECK(c.num_heads % tp == 0, "Transformer: tensor parallelism over ", tp, " ranks: num_heads = ", c.num_heads,
                   " is not a multiple of ", tp);
      REASON_CHECK(c.num_kv_heads % tp == 0 || tp % c.num_kv_heads == 0, "Transformer: tensor parallelism over ", tp,
                   " ranks: num_kv_heads = ", c.num_kv_heads, " neither divides into ", tp,
                   " ranks nor replicates evenly over them");
      REASON_CHECK(c.intermediate_size % tp == 0, "Transformer: tensor parallelism over ", tp,
                   " ranks: intermediate_size = ", c.intermediate_size, " is not a multiple of ", tp);
    }
    if (sharding_.expert != nullptr) {
      REASON_CHECK(routed, "Transformer: expert parallelism spreads an MoE model's experts; this model's FFN (",
                   ffn_signature(), ") has none");
      REASON_CHECK(expert_parallel_ready, "Transformer: the routed FFN (", ffn_signature(),
                   ") cannot spread its experts over ranks");
    }
  }

  /// The plan of this rank's share: tensors of the full shape are replicated (under expert
  /// parallelism an expert "....experts.<i>...." is this rank's alone and everything else is
  /// replicated with each rank's gradient a part: every rank trains on its own tokens); under
  /// tensor parallelism the four split projections map by rows or columns.
  std::vector<ShardEntry> plan_entries(const ParamLayout& full_layout) const {
    const Config& c = config_;
    const int tp = sharding_.tensor_size(), r = sharding_.tensor_rank(), ep = sharding_.expert_size();
    const index_t D = head_dim, hl = c.num_heads / tp, kvl = std::max<index_t>(1, c.num_kv_heads / tp);
    const index_t kv0 = c.num_kv_heads >= tp ? r * kvl : (r * c.num_kv_heads) / tp;  // first kv head this rank holds
    const int kv_holders = c.num_kv_heads >= tp ? 1 : tp / static_cast<int>(c.num_kv_heads);
    const index_t fl = c.intermediate_size / tp;
    auto ends_with = [](const std::string& s, const char* suffix) {
      const std::string t(suffix);
      return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
    };
    std::vector<ShardEntry> out;
    const auto& full = full_layout.params();
    for (std::size_t i = 0; i < layout_.params().size(); ++i) {
      const ParamInfo& p = layout_.params()[i];
      std::size_t f = full.size();
      for (std::size_t j = 0; j < full.size(); ++j)
        if (full[j].name == p.name) f = j;
      REASON_CHECK(f < full.size(), "Transformer: the sharded model's '", p.name, "' is not in the unsplit model");
      ShardEntry e{i, f, 0, {}};
      if (full[f].shape == p.shape) {
        const bool expert_own = ep > 1 && p.name.find(".experts.") != std::string::npos;
        e.pieces.push_back({0, 0, ShardPlan::matrix_shape(p).first, expert_own ? 1 : tp * ep, ep > 1 && !expert_own});
      } else if (ends_with(p.name, ".attn.qkv.weight")) {
        e.pieces = {{0, r * hl * D, hl * D, 1, false},
                    {hl * D, (c.num_heads + kv0) * D, kvl * D, kv_holders, kv_holders > 1},
                    {(hl + kvl) * D, (c.num_heads + c.num_kv_heads + kv0) * D, kvl * D, kv_holders, kv_holders > 1}};
      } else if (ends_with(p.name, ".attn.o.weight")) {
        e.dim = 1;
        e.pieces = {{0, r * hl * D, hl * D, 1, false}};
      } else if (ends_with(p.name, ".ffn.gate_up.weight")) {
        e.pieces = {{0, r * fl, fl, 1, false}, {fl, c.intermediate_size + r * fl, fl, 1, false}};
      } else if (ends_with(p.name, ".ffn.down.weight")) {
        e.dim = 1;
        e.pieces = {{0, r * fl, fl, 1, false}};
      } else {
        fail("Transformer: tensor parallelism has no rule for '", p.name, "' ", shape_string(p.shape), " (unsplit ",
             shape_string(full[f].shape), ")");
      }
      out.push_back(std::move(e));
    }
    return out;
  }

  /// Refuses a whole-model call (`what`) on a pipeline stage, which holds only some layers.
  void expect_no_pipeline(const char* what) const {
    REASON_CHECK(sharding_.pipeline == nullptr, what, " needs the whole model; this pipeline stage ",
                 sharding_.pipeline_rank(), " of ", sharding_.pipeline_size(), " holds layers [", first_layer_, ", ",
                 first_layer_ + local_layers(), ") and runs through stage_forward/stage_backward (parallel::Pipeline)");
  }

  /// The LM head with `objective` on the logits of the last run_trunk (kernels/lm_head.hpp); with
  /// grads, d(final hidden) for backward and d(lm_head). Zero rows (an expert-parallel rank without
  /// sequences): nothing.
  template <class Objective>
  double objective_head(const T* params, T* grads, Objective& objective) {
    const index_t c = config_.hidden_size;
    const Activations& a = cur().acts;
    cur().pending_backward = grads != nullptr;
    if (a.final_h.size(0) == 0) return 0.0;
    return kernels::lm_head_objective<T>(
        a.final_h, matrix_at(params, lm_head_, config_.vocab_size, c), a.loss_scratch,
        grads ? a.dfinal : View<T, 2>{}, grads ? matrix_at(grads, lm_head_, config_.vocab_size, c) : View<T, 2>{},
        objective);
  }

  /// Tensor parallel: the sum over the group of a row-parallel product's partial rows, in place.
  void sum_partial(View<T, 2> x) const {
    if (sharding_.tensor == nullptr) return;
    REASON_CHECK(x.is_contiguous(), "Transformer: a tensor-parallel partial sum needs contiguous rows");
    sharding_.tensor->all_reduce_sum(std::span<T>(x.data, static_cast<std::size_t>(x.size(0) * x.size(1))));
  }

  /// The first routed (or dense) layer, whose shapes every such layer shares; null if none.
  const Layer* first_layer(bool routed_layer) const {
    for (const Layer& m : layers_)
      if (m.routed == routed_layer) return &m;
    return nullptr;
  }

  /// After a training forward: each MoE layer weights its aux loss gradient and adds its
  /// router statistics to the reported ones and its load to the step's.
  void note_training_forward(double aux_weight) {
    if (cur().batch == 0) return;  // an expert-parallel rank serving the others: nothing of its own to count
    if constexpr (routed) {
      for (index_t i = 0; i < moe_layers_; ++i) {
        const index_t l = config_.first_dense_layers + i;
        const auto& saved = cur().acts.layers[static_cast<std::size_t>(l)].ffn;
        FfnModule::set_aux_weight(saved, aux_weight);
        const moe::RouterStats st = layers_[static_cast<std::size_t>(l)].ffn.stats(saved);
        router_stats_[static_cast<std::size_t>(i)].add(st);
        for (int e = 0; e < Ffn::experts; ++e) pending_load_[static_cast<std::size_t>(i * Ffn::experts + e)] += st.load[e];
      }
    }
  }

  Config config_;
  Sharding<T> sharding_;
  ParamLayout layout_;
  ShardPlan plan_;  // this rank's share of the unsplit model (sharded models only)
  std::size_t embed_ = 0, lm_head_ = 0;
  std::vector<Layer> layers_;
  NormModule final_norm_;
  /// One forward's activations: the arena and its views, the forward's batch, whether a backward
  /// may follow. A pipeline stage keeps one per micro-batch in flight (set_activation_slots).
  struct Slot {
    Arena arena;
    Activations acts;
    index_t batch = 0;
    bool pending_backward = false;
  };
  std::vector<Slot> slots_ = std::vector<Slot>(1);
  std::size_t slot_ = 0;  // the slot forward and backward use
  std::pair<index_t, index_t> reserved_{0, 0};  // reserve()'s batch and seq, for new slots
  index_t first_layer_ = 0;  // the global index of layers_[0] (a pipeline stage's first layer)
  Slot& cur() { return slots_[slot_]; }
  const Slot& cur() const { return slots_[slot_]; }
  index_t moe_layers_ = 0;                    // routed layers (the last num_layers - first_dense_layers)
  std::vector<moe::RouterStats> router_stats_;  // per MoE layer, since take_router_stats()
  std::vector<double> pending_load_;          // [MoE layers x E] since balance_experts()
};

}  // namespace reason::model
