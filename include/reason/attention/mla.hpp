// reason/attention/mla.hpp — multi-head latent attention (MLA), DeepSeek-V2 / V3 style.
//
// DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
// Model", arXiv:2405.04434 (2024), section 2.1; the attention of DeepSeek-V3 and R1. Keys and
// values are compressed into one low-rank latent per token, and decoding caches only that latent
// plus one small RoPE key shared by all heads — far less than the 2 Hkv D values of a KV cache.
//
//   using Attn = attention::Mla<attention::MlaShape{.q_lora_rank = 64, .kv_lora_rank = 32,
//                                                   .qk_nope_head_dim = 16, .qk_rope_head_dim = 8,
//                                                   .v_head_dim = 16}>;
//
// With x [N, C] (the normalised residual stream), H heads (run-time), ranks Rq, Rkv and per-head
// widths dn (no RoPE), dr (RoPE) and dv:
//   c_q   = RMSNorm_q(x W_qa^T)                     [N, Rq]       the query latent
//   q     = c_q W_qb^T                              [N, H, dn + dr], per head [q_nope | q_rope]
//   kv_a  = x W_kva^T                               [N, Rkv + dr]
//   c_kv  = RMSNorm_kv(kv_a[:, :Rkv])               [N, Rkv]      the key/value latent
//   k_rope = RoPE(kv_a[:, Rkv:])                    [N, dr]       one RoPE key shared by all heads
//   kv    = c_kv W_kvb^T                            [N, H, dn + dv], per head [k_nope | v]
//   k_h   = [k_nope_h | k_rope],  RoPE also on q_rope
//   out_h = softmax(q_h k_h^T / sqrt(dn + dr)) v_h  [N, H, dv];    y = out W_o^T   [N, C]
// RoPE is applied to the dr-wide parts only ("decoupled RoPE", sec. 2.1.3, eq. 14-19): a rotation
// between the query and the latent would stop W_kvb from being folded into the query at decode time.
//
// Training runs the EXPANDED form: k [N, H, dn + dr] is materialised (k_nope copied per head, the
// shared k_rope repeated), v is read in place from the kv buffer, and kernels::attention_forward /
// attention_backward run with Dk = dn + dr and Dv = dv.
//
// Decoding runs the ABSORBED form (sec. 2.1.2: at inference W^UK is absorbed into the query side and
// W^UV into the output). The cache holds, per token and layer, only latent = [c_kv | k_rope] (Rkv + dr
// values, after the norm and the rotation). Since q_nope_h . k_nope_h = q_nope_h . (W_uk_h c_kv) =
// (W_uk_h^T q_nope_h) . c_kv, each head's query becomes q_abs_h = [W_uk_h^T q_nope_h | q_rope_h] of
// width Rkv + dr and attends to the latent directly: one attention_decode call with the latent as
// the key cache and its first Rkv columns as the value cache (one kv head, shared by all H query
// heads, the scale of the expanded form), giving ctx_h in latent space [Rkv]; then out_h = W_uv_h
// ctx_h. W_uk_h, W_uv_h are the dn and dv rows of head h in W_kvb [H (dn + dv), Rkv].
//
// Parameters, for a module named P (Hugging Face DeepSeek names in brackets):
//   P.q_a     [Rq, C]               (q_a_proj)          P.q_norm  [Rq]   (q_a_layernorm)
//   P.q_b     [H (dn + dr), Rq]     (q_b_proj)
//   P.kv_a    [Rkv + dr, C]         (kv_a_proj_with_mqa) P.kv_norm [Rkv] (kv_a_layernorm)
//   P.kv_b    [H (dn + dv), Rkv]    (kv_b_proj)          P.o       [C, H dv] (o_proj, out_std)
// The norms are RMSNorm with eps = 1e-6 (DeepSeek's rms_norm_eps); RoPE pairs (i, i + dr/2) as in
// kernels/rope.hpp. (DeepSeek's released weights order the RoPE columns of q_b and kv_a for the
// interleaved pairing (2i, 2i + 1); loading them needs those rows permuted.) MLA has no kv heads:
// Dims::kv_heads is ignored, the shared cache entry is the latent. The softmax scale is
// 1/sqrt(dn + dr), without V3's YaRN correction.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>

#include "reason/attention/shape.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/attention.hpp"
#include "reason/kernels/gemm.hpp"
#include "reason/kernels/residual.hpp"
#include "reason/kernels/rope.hpp"
#include "reason/norm/rmsnorm.hpp"

namespace reason::attention {

/// The compile-time sizes of MLA (defaults: DeepSeek-V3's). Passed as a non-type template parameter.
struct MlaShape {
  int q_lora_rank = 1536;      // Rq: width of the query latent c_q
  int kv_lora_rank = 512;      // Rkv: width of the key/value latent c_kv, what the cache keeps
  int qk_nope_head_dim = 128;  // dn: per-head query/key width without RoPE
  int qk_rope_head_dim = 64;   // dr: per-head query width with RoPE, and the shared RoPE key's
  int v_head_dim = 128;        // dv: per-head value width
  bool causal = true;          // false for encoders (no mask; no decoding)
  friend constexpr bool operator==(const MlaShape&, const MlaShape&) = default;
};

/// Multi-head latent attention with decoupled RoPE and a latent KV cache.
template <MlaShape S>
struct Mla {
  static_assert(S.q_lora_rank > 0 && S.kv_lora_rank > 0,
                "attention::Mla: the MLA ranks MlaShape::q_lora_rank and kv_lora_rank must be positive");
  static_assert(S.qk_nope_head_dim > 0 && S.qk_rope_head_dim > 0 && S.v_head_dim > 0,
                "attention::Mla: MlaShape::qk_nope_head_dim, qk_rope_head_dim and v_head_dim must be positive");
  static_assert(S.qk_rope_head_dim % 2 == 0,
                "attention::Mla: MlaShape::qk_rope_head_dim must be even (RoPE rotates pairs of dimensions)");
  static constexpr MlaShape shape = S;
  /// The query/key width per head, dn + dr: what model::Config sees as head_dim.
  static constexpr int head_dim = S.qk_nope_head_dim + S.qk_rope_head_dim;
  static constexpr const char* name = "mla";
  /// The policy with its compile-time numbers, recorded in checkpoints.
  static std::string signature() {
    return std::string(name) + "(q_lora_rank=" + std::to_string(S.q_lora_rank) + ", kv_lora_rank=" +
           std::to_string(S.kv_lora_rank) + ", qk_nope_head_dim=" + std::to_string(S.qk_nope_head_dim) +
           ", qk_rope_head_dim=" + std::to_string(S.qk_rope_head_dim) + ", v_head_dim=" + std::to_string(S.v_head_dim) + ")";
  }

  template <class T, class Linear>
  class Module {
    using LinearModule = typename Linear::template Module<T>;
    using NormModule = norm::RMSNorm::Module<T>;

   public:
    static constexpr index_t Rq = S.q_lora_rank, Rkv = S.kv_lora_rank;
    static constexpr index_t dn = S.qk_nope_head_dim, dr = S.qk_rope_head_dim, dv = S.v_head_dim;
    static constexpr index_t dqk = dn + dr;         // per-head query/key width (expanded form)
    static constexpr index_t dkv = dn + dv;         // per-head width of kv = c_kv W_kvb^T: [k_nope | v]
    static constexpr index_t latent_dim = Rkv + dr;  // one cached token: [c_kv | k_rope]
    static constexpr double norm_eps = 1e-6;         // DeepSeek-V2/V3's rms_norm_eps

    /// What forward keeps for backward, per layer; N = B T rows.
    struct Saved {
      View<T, 2> q_a;      // [N, Rq] x W_qa^T, before q_norm
      View<T, 1> q_rstd;   // [N]
      View<T, 2> c_q;      // [N, Rq] the query latent
      View<T, 2> q;        // [N, H dqk] per head [q_nope | q_rope], q_rope after RoPE
      View<T, 2> kv_a;     // [N, Rkv + dr] x W_kva^T, before kv_norm and RoPE
      View<T, 1> kv_rstd;  // [N]
      View<T, 2> latent;   // [N, Rkv + dr] [c_kv | k_rope]: what the decode cache holds
      View<T, 2> kv;       // [N, H dkv] per head [k_nope | v]
      View<T, 2> k;        // [N, H dqk] the expanded keys, per head [k_nope_h | k_rope]
      View<T, 4> probs;    // [B, H, T, T] softmax probabilities
      View<T, 2> ctx;      // [N, H dv] attention output before the o projection
    };
    /// Backward's temporaries, shared by all layers.
    struct Scratch {
      View<T, 2> dctx;   // [N, H dv]
      View<T, 2> dq;     // [N, H dqk]
      View<T, 2> dk;     // [N, H dqk]
      View<T, 2> dkv;    // [N, H dkv]
      View<T, 2> dc_kv;  // [N, Rkv] d(normed c_kv)
      View<T, 2> dkv_a;  // [N, Rkv + dr]
      View<T, 2> dc_q;   // [N, Rq] d(normed c_q)
      View<T, 2> dq_a;   // [N, Rq]
      View<T, 2> dx_q;   // [N, C] the query path's share of dx
    };
    /// One layer's decode cache: the latent of every position so far.
    struct Cache {
      View<T, 3> latent;  // [B, S, Rkv + dr] [c_kv (normed) | k_rope (rotated)]
    };

    Module() = default;
    Module(ParamLayout& layout, const std::string& prefix, const Dims& d)
        : name_(prefix), width_(d.width), heads_(d.heads), rope_(d.max_seq, S.qk_rope_head_dim, d.rope_theta) {
      REASON_CHECK(d.width > 0 && d.heads > 0, prefix, " (attention::Mla): width = ", d.width, ", heads = ", d.heads,
                   "; expected both > 0");
      q_a_ = LinearModule(layout, prefix + ".q_a", d.width, Rq, d.init_std);
      q_norm_ = NormModule(layout, prefix + ".q_norm", Rq, norm_eps);
      q_b_ = LinearModule(layout, prefix + ".q_b", Rq, d.heads * dqk, d.init_std);
      kv_a_ = LinearModule(layout, prefix + ".kv_a", d.width, latent_dim, d.init_std);
      kv_norm_ = NormModule(layout, prefix + ".kv_norm", Rkv, norm_eps);
      kv_b_ = LinearModule(layout, prefix + ".kv_b", Rkv, d.heads * dkv, d.init_std);
      o_ = LinearModule(layout, prefix + ".o", d.heads * dv, d.width, d.out_std);
    }

    [[nodiscard]] index_t heads() const { return heads_; }
    [[nodiscard]] index_t width() const { return width_; }
    /// The softmax scale of the expanded form, 1/sqrt(dn + dr), used by the absorbed decode too.
    static double softmax_scale() { return 1.0 / std::sqrt(static_cast<double>(dqk)); }

    Saved carve(Arena& arena, index_t batch, index_t seq) const {
      const index_t n = batch * seq;
      Saved s;
      s.q_a = arena.view<T>("mla.q_a", n, Rq);
      s.q_rstd = arena.view<T>("mla.q_rstd", n);
      s.c_q = arena.view<T>("mla.c_q", n, Rq);
      s.q = arena.view<T>("mla.q", n, heads_ * dqk);
      s.kv_a = arena.view<T>("mla.kv_a", n, latent_dim);
      s.kv_rstd = arena.view<T>("mla.kv_rstd", n);
      s.latent = arena.view<T>("mla.latent", n, latent_dim);
      s.kv = arena.view<T>("mla.kv", n, heads_ * dkv);
      s.k = arena.view<T>("mla.k", n, heads_ * dqk);
      s.probs = arena.view<T>("mla.probs", batch, heads_, seq, seq);
      s.ctx = arena.view<T>("mla.ctx", n, heads_ * dv);
      return s;
    }
    Scratch carve_scratch(Arena& arena, index_t batch, index_t seq) const {
      const index_t n = batch * seq;
      Scratch s;
      s.dctx = arena.view<T>("mla.dctx", n, heads_ * dv);
      s.dq = arena.view<T>("mla.dq", n, heads_ * dqk);
      s.dk = arena.view<T>("mla.dk", n, heads_ * dqk);
      s.dkv = arena.view<T>("mla.dkv", n, heads_ * dkv);
      s.dc_kv = arena.view<T>("mla.dc_kv", n, Rkv);
      s.dkv_a = arena.view<T>("mla.dkv_a", n, latent_dim);
      s.dc_q = arena.view<T>("mla.dc_q", n, Rq);
      s.dq_a = arena.view<T>("mla.dq_a", n, Rq);
      s.dx_q = arena.view<T>("mla.dx_q", n, width_);
      return s;
    }

    /// y [N, C] = MLA(x [N, C]) for N = B T rows in batch-major order; pos [N] the positions.
    void forward(const T* params, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos, const Saved& s,
                 View<T, 2> y) const {
      const index_t seq = check_rows("forward", batch, x, pos);
      expect_rows(y, "forward", "y", x.size(0), width_);
      // Queries: x -> c_q -> q, RoPE on each head's last dr columns.
      q_a_.forward(params, x, s.q_a);
      q_norm_.forward(params, s.q_a, s.c_q, s.q_rstd);
      q_b_.forward(params, s.c_q, s.q);
      kernels::rope_forward<T>(rope_, pos, per_head(s.q, heads_, dqk, dn, dr));
      // The latent: [RMSNorm(kv_a[:, :Rkv]) | RoPE(kv_a[:, Rkv:])].
      kv_a_.forward(params, x, s.kv_a);
      kv_norm_.forward(params, cols(s.kv_a, 0, Rkv), cols(s.latent, 0, Rkv), s.kv_rstd);
      copy_cols(cols(s.kv_a, Rkv, dr), cols(s.latent, Rkv, dr));
      kernels::rope_forward<T>(rope_, pos, per_head(s.latent, 1, latent_dim, Rkv, dr));
      kv_b_.forward(params, cols(s.latent, 0, Rkv), s.kv);
      // Expanded keys k_h = [k_nope_h | k_rope]; values are read in place from kv.
      const index_t n = x.size(0);
      for (index_t r = 0; r < n; ++r)
        for (index_t h = 0; h < heads_; ++h) {
          T* kr = s.k.row(r) + h * dqk;
          std::copy_n(s.kv.row(r) + h * dkv, dn, kr);
          std::copy_n(s.latent.row(r) + Rkv, dr, kr + dn);
        }
      kernels::attention_forward<T>(split4(s.q, batch, seq, dqk, 0, dqk), split4(s.k, batch, seq, dqk, 0, dqk),
                                    split4(s.kv, batch, seq, dkv, dn, dv), S.causal, s.probs,
                                    split4(s.ctx, batch, seq, dv, 0, dv), softmax_scale());
      o_.forward(params, s.ctx, y);
    }

    /// dx [N, C] (overwrite) from dy [N, C]; parameter gradients accumulate into grads.
    void backward(const T* params, T* grads, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos,
                  const Saved& s, const Scratch& sc, View<const T, 2> dy, View<T, 2> dx) const {
      const index_t seq = check_rows("backward", batch, x, pos);
      expect_rows(dy, "backward", "dy", x.size(0), width_);
      expect_rows(dx, "backward", "dx", x.size(0), width_);
      o_.backward(params, grads, s.ctx, dy, sc.dctx);
      // dv lands in place in dkv (the v columns); dk is split below.
      kernels::attention_backward<T>(split4(s.q, batch, seq, dqk, 0, dqk), split4(s.k, batch, seq, dqk, 0, dqk),
                                     split4(s.kv, batch, seq, dkv, dn, dv), s.probs,
                                     split4(sc.dctx, batch, seq, dv, 0, dv), split4(sc.dq, batch, seq, dqk, 0, dqk),
                                     split4(sc.dk, batch, seq, dqk, 0, dqk), split4(sc.dkv, batch, seq, dkv, dn, dv),
                                     softmax_scale());
      // dk_h = [dk_nope_h | dk_rope_h]: dk_nope_h goes to head h's k_nope columns of dkv; the
      // shared k_rope gets the sum over heads (in head order: a fixed order).
      const index_t n = x.size(0);
      for (index_t r = 0; r < n; ++r) {
        T* d_rope = sc.dkv_a.row(r) + Rkv;
        std::fill_n(d_rope, dr, T(0));
        for (index_t h = 0; h < heads_; ++h) {
          const T* dkr = sc.dk.row(r) + h * dqk;
          std::copy_n(dkr, dn, sc.dkv.row(r) + h * dkv);
          for (index_t i = 0; i < dr; ++i) d_rope[i] += dkr[dn + i];
        }
      }
      kernels::rope_backward<T>(rope_, pos, per_head(sc.dq, heads_, dqk, dn, dr));
      kernels::rope_backward<T>(rope_, pos, per_head(sc.dkv_a, 1, latent_dim, Rkv, dr));
      // Key/value path back to x: kv_b, kv_norm (into dkv_a's c_kv columns), kv_a.
      kv_b_.backward(params, grads, cols(s.latent, 0, Rkv), sc.dkv, sc.dc_kv);
      kv_norm_.backward(params, grads, cols(s.kv_a, 0, Rkv), s.kv_rstd, sc.dc_kv, cols(sc.dkv_a, 0, Rkv));
      kv_a_.backward(params, grads, x, sc.dkv_a, dx);
      // Query path: q_b, q_norm, q_a; Linear::backward overwrites its dx, so it goes to a scratch and is added.
      q_b_.backward(params, grads, s.c_q, sc.dq, sc.dc_q);
      q_norm_.backward(params, grads, s.q_a, s.q_rstd, sc.dc_q, sc.dq_a);
      q_a_.backward(params, grads, x, sc.dq_a, sc.dx_q);
      kernels::accumulate<T>(dx, sc.dx_q);
    }

    /// Elements of one sequence's cache in one layer, for max_seq positions: the latent only.
    [[nodiscard]] index_t cache_elems(index_t max_seq) const { return max_seq * latent_dim; }
    /// The cache keeps every position.
    [[nodiscard]] index_t cache_history() const { return 0; }
    /// The cache views over `memory` (batch * cache_elems(max_seq) elements).
    Cache cache_at(T* memory, index_t batch, index_t max_seq) const {
      return {make_view(memory, batch, max_seq, latent_dim)};
    }
    /// Scratch for one decode step of `batch` rows: q_a, c_q [B, Rq]; q [B, H dqk]; kv_a [B, Rkv + dr];
    /// q_abs [B, H, Rkv + dr]; ctx_latent [B, H, Rkv]; ctx [B, H dv].
    [[nodiscard]] index_t decode_scratch_elems(index_t batch) const {
      return batch * (2 * Rq + heads_ * dqk + latent_dim + heads_ * latent_dim + heads_ * Rkv + heads_ * dv);
    }

    /// One new token per sequence at position `pos` (the same for the batch): x, y [B, C].
    /// Writes its latent into the cache at `pos`, then attends over positions [0, pos] in the absorbed form.
    void decode(const T* params, View<const T, 2> x, index_t pos, const Cache& cache, T* scratch, View<T, 2> y) const {
      static_assert(S.causal, "attention::Mla: decoding needs causal attention (MlaShape{.causal = true})");
      static_assert(requires(const LinearModule& m, const T* p) {
        { m.weight(p) } -> std::convertible_to<View<const T, 2>>;
      }, "attention::Mla: the absorbed decode folds kv_b's weight into the query and output, so the linear policy's "
         "Module must offer weight(params) -> View<const T, 2> [out, in] (linear::Dense does)");
      const index_t batch = x.size(0), max_seq = cache.latent.size(1);
      expect_rows(x, "decode", "x", batch, width_);
      expect_rows(y, "decode", "y", batch, width_);
      REASON_CHECK(cache.latent.shape[0] == batch && cache.latent.shape[2] == latent_dim, name_,
                   " (attention::Mla) decode: cache latent: shape ", shape_string(cache.latent.shape), ", expected [",
                   batch, ", S, ", latent_dim, "] for x of ", batch, " rows");
      REASON_CHECK(pos >= 0 && pos < max_seq, name_, " (attention::Mla) decode: position ", pos,
                   " outside the cache of ", max_seq, " positions (cache latent shape ",
                   shape_string(cache.latent.shape), ")");
      T* next = scratch;
      auto take = [&](index_t rows, index_t w) {
        auto v = make_view(next, rows, w);
        next += rows * w;
        return v;
      };
      const auto q_a = take(batch, Rq), c_q = take(batch, Rq), q = take(batch, heads_ * dqk);
      const auto kv_a = take(batch, latent_dim), q_abs = take(batch, heads_ * latent_dim);
      const auto ctx_latent = take(batch, heads_ * Rkv), ctx = take(batch, heads_ * dv);

      const auto pos32 = static_cast<std::int32_t>(pos);
      const View<const std::int32_t, 1> pv(&pos32, {batch}, {0});  // every row at `pos`: a stride-0 view
      q_a_.forward(params, x, q_a);
      q_norm_.forward(params, q_a, c_q, View<T, 1>{});
      q_b_.forward(params, c_q, q);
      kernels::rope_forward<T>(rope_, pv, per_head(q, heads_, dqk, dn, dr));
      // This token's latent, straight into the cache row `pos` of every sequence.
      const View<T, 2> slot(cache.latent.row(0, pos), {batch, latent_dim}, {cache.latent.stride[0], 1});
      kv_a_.forward(params, x, kv_a);
      kv_norm_.forward(params, cols(kv_a, 0, Rkv), cols(slot, 0, Rkv), View<T, 1>{});
      copy_cols(cols(kv_a, Rkv, dr), cols(slot, Rkv, dr));
      kernels::rope_forward<T>(rope_, pv, per_head(slot, 1, latent_dim, Rkv, dr));
      // Absorb W_uk into the query: q_abs_h = [q_nope_h W_uk_h | q_rope_h], W_uk_h [dn, Rkv].
      const View<const T, 2> w_kvb = kv_b_.weight(params);  // [H dkv, Rkv]
      for (index_t h = 0; h < heads_; ++h) {
        const View<const T, 2> w_uk = w_kvb.slice(0, h * dkv, h * dkv + dn);
        kernels::gemm<T>(kernels::Trans::N, kernels::Trans::N, T(1), cols(q, h * dqk, dn), w_uk, T(0),
                         cols(q_abs, h * latent_dim, Rkv));
        copy_cols(cols(q, h * dqk + dn, dr), cols(q_abs, h * latent_dim + Rkv, dr));
      }
      // One kv head shared by all query heads: keys are the whole latent, values its first Rkv columns.
      const index_t seq_stride = cache.latent.stride[1];
      const View<const T, 4> k_cache(cache.latent.data, {batch, max_seq, 1, latent_dim},
                                     {cache.latent.stride[0], seq_stride, latent_dim, 1});
      const View<const T, 4> v_cache(cache.latent.data, {batch, max_seq, 1, Rkv},
                                     {cache.latent.stride[0], seq_stride, Rkv, 1});
      kernels::attention_decode<T>(as_heads(q_abs, latent_dim), k_cache, v_cache, pos + 1,
                                   as_heads(ctx_latent, Rkv), softmax_scale());
      // Absorb W_uv into the output: out_h = ctx_latent_h W_uv_h^T, W_uv_h [dv, Rkv].
      for (index_t h = 0; h < heads_; ++h) {
        const View<const T, 2> w_uv = w_kvb.slice(0, h * dkv + dn, (h + 1) * dkv);
        kernels::gemm<T>(kernels::Trans::N, kernels::Trans::T, T(1), cols(ctx_latent, h * Rkv, Rkv), w_uv, T(0),
                         cols(ctx, h * dv, dv));
      }
      o_.forward(params, ctx, y);
    }

   private:
    /// Checks x [N, C] and pos [N] and returns the rows per sequence, T = N / batch.
    index_t check_rows(const char* fn, index_t batch, View<const T, 2> x, View<const std::int32_t, 1> pos) const {
      expect_rows(x, fn, "x", x.size(0), width_);
      REASON_CHECK(batch > 0 && x.size(0) % batch == 0, name_, " (attention::Mla) ", fn, ": x has ", x.size(0),
                   " rows, which do not split into ", batch, " sequences");
      REASON_CHECK(pos.shape[0] == x.size(0), name_, " (attention::Mla) ", fn, ": pos: shape ",
                   shape_string(pos.shape), ", expected [", x.size(0), "] (one position per row of x)");
      return x.size(0) / batch;
    }
    template <class U>
    void expect_rows(const View<U, 2>& v, const char* fn, const char* what, index_t rows, index_t w) const {
      REASON_CHECK(v.shape[0] == rows && v.shape[1] == w, name_, " (attention::Mla) ", fn, ": ", what, ": shape ",
                   shape_string(v.shape), ", expected ", shape_string({rows, w}), " (rows of the model width C = ",
                   width_, ")");
    }

    /// Columns [first, first + count) of a [N, *] buffer.
    static View<T, 2> cols(View<T, 2> buf, index_t first, index_t count) {
      return View<T, 2>(buf.data + first, {buf.size(0), count}, {buf.stride[0], 1});
    }
    static View<const T, 2> cols(View<const T, 2> buf, index_t first, index_t count) {
      return View<const T, 2>(buf.data + first, {buf.size(0), count}, {buf.stride[0], 1});
    }
    /// dst = src, row by row.
    static void copy_cols(View<const T, 2> src, View<T, 2> dst) {
      for (index_t r = 0; r < src.size(0); ++r) std::copy_n(src.row(r), src.size(1), dst.row(r));
    }
    /// [N, heads, width] view of a [N, heads * per_head] buffer: columns [offset, offset + width) of each head.
    static View<T, 3> per_head(View<T, 2> buf, index_t heads, index_t per_head_width, index_t offset, index_t width) {
      return View<T, 3>(buf.data + offset, {buf.size(0), heads, width}, {buf.stride[0], per_head_width, 1});
    }
    /// A contiguous [B, H w] buffer as [B, H, w].
    View<T, 3> as_heads(View<T, 2> buf, index_t w) const {
      return View<T, 3>(buf.data, {buf.size(0), heads_, w}, {buf.stride[0], w, 1});
    }
    /// [B, T, H, width] view of a [B T, H * per_head] buffer: columns [offset, offset + width) of each head.
    View<T, 4> split4(View<T, 2> buf, index_t batch, index_t seq, index_t per_head_width, index_t offset,
                      index_t width) const {
      return View<T, 4>(buf.data + offset, {batch, seq, heads_, width},
                        {seq * buf.stride[0], buf.stride[0], per_head_width, 1});
    }

    std::string name_;
    index_t width_ = 0, heads_ = 0;
    kernels::RopeTable<T> rope_{1, 2};
    LinearModule q_a_;
    NormModule q_norm_;
    LinearModule q_b_, kv_a_;
    NormModule kv_norm_;
    LinearModule kv_b_, o_;
  };
};

}  // namespace reason::attention
