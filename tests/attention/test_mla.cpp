// Multi-head latent attention (attention/mla.hpp): the module's forward against a naive float64
// implementation of the DeepSeek-V2 formulas, its backward against finite differences, the
// absorbed decode against the expanded forward, MLA inside a Transformer (decoding against the
// full forward, the size of its cache) and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "attention/attention_test_util.hpp"
#include "reason/attention/mla.hpp"
#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/concepts.hpp"
#include "reason/model/transformer.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

constexpr attention::MlaShape kShape{
    .q_lora_rank = 12, .kv_lora_rank = 10, .qk_nope_head_dim = 6, .qk_rope_head_dim = 4, .v_head_dim = 5};
using Attn = attention::Mla<kShape>;
static_assert(model::AttentionPolicy<Attn>, "attention::Mla must satisfy model::AttentionPolicy");
static_assert(Attn::head_dim == 10);

constexpr index_t kWidth = 16, kHeads = 3, kMaxSeq = 9;
constexpr double kTheta = 500.0;  // small enough that every RoPE plane turns visibly over a few positions

template <class T>
using AttnModule = typename Attn::template Module<T, linear::Dense>;

/// One MLA module with random parameters: matrices uniform in [-0.5, 0.5), norm gains in [0.5, 1.5).
template <class T>
struct Fixture {
  ParamLayout layout;
  AttnModule<T> attn;
  std::vector<T> params;

  explicit Fixture(std::uint64_t seed)
      : attn(layout, "attn", attention::Dims{kWidth, kHeads, /*kv_heads, ignored*/ 1, kMaxSeq, kTheta, 0.02, 0.02}),
        params(layout.size()) {
    Philox rng(seed, 1);
    for (const auto& p : layout.params()) {
      const bool gain = p.name.find("norm") != std::string::npos;
      test::fill_uniform(std::span<T>(params).subspan(p.offset, p.numel), rng, gain ? 0.5 : -0.5, gain ? 1.5 : 0.5);
    }
  }
};

/// The formulas of the header comment, written out in float64 with plain loops. x [B T, C] -> y [B T, C].
std::vector<double> naive_mla(const ParamLayout& layout, const std::vector<double>& p, const std::vector<double>& x,
                              index_t B, index_t Tn) {
  constexpr index_t C = kWidth, H = kHeads, Rq = kShape.q_lora_rank, Rkv = kShape.kv_lora_rank;
  constexpr index_t dn = kShape.qk_nope_head_dim, dr = kShape.qk_rope_head_dim, dv = kShape.v_head_dim;
  auto at = [&](const char* name) { return p.data() + layout.find(std::string("attn.") + name).offset; };
  auto linear = [](const double* w, const double* in, index_t n_in, index_t n_out) {
    std::vector<double> out(n_out, 0.0);
    for (index_t o = 0; o < n_out; ++o)
      for (index_t i = 0; i < n_in; ++i) out[o] += w[o * n_in + i] * in[i];
    return out;
  };
  auto rmsnorm = [](std::vector<double> v, const double* gain) {
    double ss = 0;
    for (double e : v) ss += e * e;
    const double r = 1.0 / std::sqrt(ss / double(v.size()) + 1e-6);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] *= r * gain[i];
    return v;
  };
  auto rope = [](double* v, index_t pos) {  // rotate_half: plane i is (i, i + dr/2)
    for (index_t i = 0; i < dr / 2; ++i) {
      const double angle = double(pos) * std::pow(kTheta, -2.0 * double(i) / double(dr));
      const double a = v[i], b = v[i + dr / 2];
      v[i] = a * std::cos(angle) - b * std::sin(angle);
      v[i + dr / 2] = a * std::sin(angle) + b * std::cos(angle);
    }
  };
  const index_t N = B * Tn;
  std::vector<double> q(N * H * (dn + dr)), k(N * H * (dn + dr)), v(N * H * dv);
  for (index_t n = 0; n < N; ++n) {
    const index_t pos = n % Tn;
    const double* xr = x.data() + n * C;
    const auto c_q = rmsnorm(linear(at("q_a.weight"), xr, C, Rq), at("q_norm.weight"));
    const auto qn = linear(at("q_b.weight"), c_q.data(), Rq, H * (dn + dr));
    const auto kv_a = linear(at("kv_a.weight"), xr, C, Rkv + dr);
    const auto c_kv = rmsnorm(std::vector<double>(kv_a.begin(), kv_a.begin() + Rkv), at("kv_norm.weight"));
    std::vector<double> k_rope(kv_a.begin() + Rkv, kv_a.end());
    rope(k_rope.data(), pos);
    const auto kv = linear(at("kv_b.weight"), c_kv.data(), Rkv, H * (dn + dv));
    for (index_t h = 0; h < H; ++h) {
      double* qh = q.data() + (n * H + h) * (dn + dr);
      double* kh = k.data() + (n * H + h) * (dn + dr);
      for (index_t i = 0; i < dn + dr; ++i) qh[i] = qn[h * (dn + dr) + i];
      rope(qh + dn, pos);
      for (index_t i = 0; i < dn; ++i) kh[i] = kv[h * (dn + dv) + i];
      for (index_t i = 0; i < dr; ++i) kh[dn + i] = k_rope[i];
      for (index_t i = 0; i < dv; ++i) v[(n * H + h) * dv + i] = kv[h * (dn + dv) + dn + i];
    }
  }
  std::vector<double> ctx(N * H * dv, 0.0), y(N * C);
  const double scale = 1.0 / std::sqrt(double(dn + dr));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < Tn; ++t) {
        std::vector<double> s(t + 1);
        for (index_t u = 0; u <= t; ++u) {
          double dot = 0;
          for (index_t i = 0; i < dn + dr; ++i)
            dot += q[((b * Tn + t) * H + h) * (dn + dr) + i] * k[((b * Tn + u) * H + h) * (dn + dr) + i];
          s[u] = dot * scale;
        }
        const double mx = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (index_t u = 0; u <= t; ++u)
          for (index_t i = 0; i < dv; ++i)
            ctx[((b * Tn + t) * H + h) * dv + i] += s[u] / sum * v[((b * Tn + u) * H + h) * dv + i];
      }
  for (index_t n = 0; n < N; ++n) {
    const auto yr = linear(at("o.weight"), ctx.data() + n * H * dv, H * dv, C);
    std::copy(yr.begin(), yr.end(), y.begin() + n * C);
  }
  return y;
}

template <class T>
std::vector<T> random_vector(std::size_t n, Philox& rng) {
  std::vector<T> v(n);
  test::fill_uniform(std::span<T>(v), rng);
  return v;
}

/// Positions 0..T-1 of each of B sequences, row b T + t.
std::vector<std::int32_t> positions(index_t B, index_t Tn) {
  std::vector<std::int32_t> pos(B * Tn);
  for (index_t i = 0; i < B * Tn; ++i) pos[i] = static_cast<std::int32_t>(i % Tn);
  return pos;
}

/// The module's activations for batch x seq rows, carved from an arena of the measured size.
template <class T>
struct Buffers {
  Arena arena;
  typename AttnModule<T>::Saved saved;
  typename AttnModule<T>::Scratch scratch;
  Buffers(const AttnModule<T>& m, index_t batch, index_t seq) {
    arena.reserve(Arena::measure([&](Arena& a) {
      (void)m.carve(a, batch, seq);
      (void)m.carve_scratch(a, batch, seq);
    }));
    saved = m.carve(arena, batch, seq);
    scratch = m.carve_scratch(arena, batch, seq);
  }
};

/// max |a - b| / max |b|.
template <class T>
double rel_max_diff(const std::vector<T>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double d = std::abs(double(a[i]) - b[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

model::Config mla_config() {
  model::Config c;
  c.vocab_size = 11;
  c.hidden_size = kWidth;
  c.num_layers = 2;
  c.num_heads = kHeads;
  c.num_kv_heads = kHeads;  // ignored by MLA; Config still wants num_heads % num_kv_heads == 0
  c.intermediate_size = 20;
  c.max_seq_len = 12;
  c.init_std = 0.2;  // large enough that the attention is far from uniform
  return c;
}

struct Tokens {
  std::vector<std::int32_t> tokens, targets;
};

Tokens random_tokens(index_t n, index_t vocab, Philox& rng) {
  Tokens d;
  for (index_t i = 0; i < n; ++i) {
    d.tokens.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
    d.targets.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(vocab))));
  }
  return d;
}

}  // namespace

TEST_CASE_TEMPLATE("MLA forward matches a naive float64 implementation of the DeepSeek-V2 formulas", T, float,
                   double) {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  const index_t B = 2, Tn = 7, N = B * Tn;
  Fixture<T> f(seed);
  Philox rng(seed, 2);
  const auto x = random_vector<T>(N * kWidth, rng);
  const auto pos = positions(B, Tn);
  Buffers<T> buf(f.attn, B, Tn);
  std::vector<T> y(N * kWidth, std::numeric_limits<T>::quiet_NaN());
  f.attn.forward(f.params.data(), B, make_view(x.data(), N, kWidth), make_view(pos.data(), N), buf.saved,
                 make_view(y.data(), N, kWidth));

  const std::vector<double> p64(f.params.begin(), f.params.end()), x64(x.begin(), x.end());
  const auto want = naive_mla(f.layout, p64, x64, B, Tn);
  const double err = rel_max_diff(y, want);
  MESSAGE("MLA forward vs naive, ", std::string(sizeof(T) == 4 ? "float" : "double"), ": max |diff| / max |y| = ", err);
  CHECK(err <= (std::is_same_v<T, float> ? 1e-5 : 1e-12));
  // The saved latent is [c_kv | k_rope], the decode cache's layout: its RoPE part is shared by all heads of k.
  for (index_t h = 0; h < kHeads; ++h)
    CHECK(buf.saved.k(0, h * Attn::head_dim + kShape.qk_nope_head_dim) == buf.saved.latent(0, kShape.kv_lora_rank));
}

TEST_CASE("MLA backward equals finite differences for every parameter and for x (float64)") {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  const index_t B = 2, Tn = 7, N = B * Tn;
  Fixture<double> f(seed);
  Philox rng(seed, 3);
  auto x = random_vector<double>(N * kWidth, rng);
  const auto R = random_vector<double>(N * kWidth, rng);
  const auto pos = positions(B, Tn);
  Buffers<double> buf(f.attn, B, Tn);
  std::vector<double> y(N * kWidth);
  auto run_forward = [&] {
    f.attn.forward(f.params.data(), B, make_view(static_cast<const double*>(x.data()), N, kWidth),
                   make_view(pos.data(), N), buf.saved, make_view(y.data(), N, kWidth));
  };
  auto loss = [&] {
    run_forward();
    double l = 0;
    for (std::size_t i = 0; i < y.size(); ++i) l += y[i] * R[i];
    return l;
  };
  std::vector<double> grads(f.params.size(), 0.0), dx(x.size(), std::numeric_limits<double>::quiet_NaN());
  auto run_backward = [&] {
    run_forward();
    f.attn.backward(f.params.data(), grads.data(), B, make_view(static_cast<const double*>(x.data()), N, kWidth),
                    make_view(pos.data(), N), buf.saved, buf.scratch, make_view(R.data(), N, kWidth),
                    make_view(dx.data(), N, kWidth));
  };
  run_backward();

  const auto gp = test::gradcheck(loss, std::span<double>(f.params), grads);
  MESSAGE("MLA backward, parameters: ", gp.describe());
  CHECK(gp.ok);
  const auto gx = test::gradcheck(loss, std::span<double>(x), dx);
  MESSAGE("MLA backward, x: ", gx.describe());
  CHECK(gx.ok);

  // Every parameter tensor gets a gradient, and a second backward adds the same again (+=); dx is overwritten.
  for (const auto& p : f.layout.params()) {
    double norm = 0;
    for (std::size_t i = 0; i < p.numel; ++i) norm += std::abs(grads[p.offset + i]);
    CAPTURE(p.name);
    CHECK(norm > 0);
  }
  const auto once = grads;
  const auto dx_once = dx;
  run_backward();
  double worst = 0;
  for (std::size_t i = 0; i < grads.size(); ++i) worst = std::max(worst, std::abs(grads[i] - 2 * once[i]));
  CHECK(worst <= 1e-12);
  CHECK(dx == dx_once);
}

TEST_CASE_TEMPLATE("MLA absorbed decode against the latent cache equals the expanded forward", T, float, double) {
  const std::uint64_t seed = test::test_seed();
  CAPTURE(seed);
  const index_t B = 2, Tn = 7, N = B * Tn, S = kMaxSeq;  // a cache longer than the sequence
  Fixture<T> f(seed + 1);
  Philox rng(seed, 4);
  const auto x = random_vector<T>(N * kWidth, rng);
  const auto pos = positions(B, Tn);
  Buffers<T> buf(f.attn, B, Tn);
  std::vector<T> y_full(N * kWidth);
  f.attn.forward(f.params.data(), B, make_view(x.data(), N, kWidth), make_view(pos.data(), N), buf.saved,
                 make_view(y_full.data(), N, kWidth));

  CHECK(f.attn.cache_elems(S) == S * (kShape.kv_lora_rank + kShape.qk_rope_head_dim));
  CHECK(f.attn.cache_history() == 0);
  std::vector<T> memory(B * f.attn.cache_elems(S), std::numeric_limits<T>::quiet_NaN());
  const auto cache = f.attn.cache_at(memory.data(), B, S);
  CHECK(cache.latent.shape == std::array<index_t, 3>{B, S, Attn::Module<T, linear::Dense>::latent_dim});
  std::vector<T> scratch(f.attn.decode_scratch_elems(B), std::numeric_limits<T>::quiet_NaN());
  std::vector<T> x_t(B * kWidth), y_t(B * kWidth);
  double worst_y = 0, scale_y = 0, worst_latent = 0;
  for (index_t t = 0; t < Tn; ++t) {
    for (index_t b = 0; b < B; ++b) std::copy_n(x.data() + (b * Tn + t) * kWidth, kWidth, x_t.data() + b * kWidth);
    f.attn.decode(f.params.data(), make_view(static_cast<const T*>(x_t.data()), B, kWidth), t, cache, scratch.data(),
                  make_view(y_t.data(), B, kWidth));
    for (index_t b = 0; b < B; ++b) {
      for (index_t c = 0; c < kWidth; ++c) {
        const double want = y_full[(b * Tn + t) * kWidth + c];
        worst_y = std::max(worst_y, std::abs(double(y_t[b * kWidth + c]) - want));
        scale_y = std::max(scale_y, std::abs(want));
      }
      for (index_t i = 0; i < cache.latent.size(2); ++i) {  // the cache holds the forward's latent row
        const double diff = std::abs(double(cache.latent(b, t, i)) - double(buf.saved.latent(b * Tn + t, i)));
        worst_latent = std::max(worst_latent, diff);
      }
    }
  }
  const double err = worst_y / scale_y;
  MESSAGE("MLA absorbed decode vs expanded forward, ", std::string(sizeof(T) == 4 ? "float" : "double"),
          ": max |diff| / max |y| = ", err, ", latent max |diff| = ", worst_latent);
  CHECK(err <= (std::is_same_v<T, float> ? 1e-5 : 1e-12));
  CHECK(worst_latent <= (std::is_same_v<T, float> ? 1e-5 : 1e-12));
}

TEST_CASE("A Transformer with MLA decodes token by token to the full forward's logits, with a latent-sized cache") {
  using Net = model::Transformer<Attn, ffn::SwiGLU>;
  const model::Config c = mla_config();
  const index_t batch = 3, seq = 10;
  const double err = test::decode_vs_forward_error<Attn>(c, batch, seq, test::test_seed());
  MESSAGE("Transformer<Mla> decode_step vs logits(): max |diff| / max |logit| = ", err);
  CHECK(err <= 1e-5);

  const Net net(c);
  const auto state = net.make_decode_state(batch, seq);

  const std::size_t latent = kShape.kv_lora_rank + kShape.qk_rope_head_dim;
  CHECK(state.cache_bytes() == c.num_layers * batch * seq * latent * sizeof(float));
  // The same model width with multi-head attention keeps k and v of every head: 2 H (dn + dr) per token.
  using Mha = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = Attn::head_dim}>, ffn::SwiGLU>;
  const Mha mha(c);
  const auto mha_state = mha.make_decode_state(batch, seq);
  MESSAGE("decode cache, ", c.num_layers, " layers x ", batch, " x ", seq, ": MLA ", state.cache_bytes(),
          " bytes, MHA ", mha_state.cache_bytes(), " bytes");
  CHECK(mha_state.cache_bytes() == c.num_layers * batch * seq * 2 * kHeads * Attn::head_dim * sizeof(float));
  CHECK(state.cache_bytes() < mha_state.cache_bytes());
}

TEST_CASE("A Transformer with MLA: backward equals finite differences (float64)") {
  using Net = model::Transformer<Attn, ffn::SwiGLU, norm::RMSNorm, linear::Dense, precision::Fp64>;
  model::Config c = mla_config();
  c.init_std = 0.4;
  Net net(c);
  const index_t batch = 2, seq = 4;
  net.reserve(batch, seq);
  std::vector<double> params(net.num_params()), grads(net.num_params(), 0.0);
  net.layout().initialize(std::span<double>(params), test::test_seed());
  CHECK(net.layout().find("layers.1.attn.kv_b.weight").shape ==
        std::vector<index_t>{kHeads * (kShape.qk_nope_head_dim + kShape.v_head_dim), kShape.kv_lora_rank});
  Philox rng(test::test_seed(), 6);
  const Tokens d = random_tokens(batch * seq, c.vocab_size, rng);
  const auto tokens = make_view(d.tokens.data(), batch, seq);
  const auto targets = make_view(d.targets.data(), batch, seq);
  net.forward(params.data(), grads.data(), tokens, targets, 1.0);
  net.backward(params.data(), grads.data());
  auto loss = [&] { return net.loss(params.data(), tokens, targets).loss_sum; };
  const auto check = test::gradcheck(loss, std::span<double>(params), grads);
  MESSAGE("Transformer<Mla> backward: ", check.describe());
  CHECK(check.ok);
}

TEST_CASE("MLA rejects bad run-time inputs with named errors") {
  Fixture<float> f(test::test_seed());
  const index_t B = 2, Tn = 7, N = B * Tn;
  Buffers<float> buf(f.attn, B, Tn);
  const auto pos = positions(B, Tn);
  std::vector<float> x(N * (kWidth - 1), 0.5f), y(N * kWidth);
  CHECK_THROWS_WITH_AS(f.attn.forward(f.params.data(), B, make_view(static_cast<const float*>(x.data()), N, kWidth - 1),
                                      make_view(pos.data(), N), buf.saved, make_view(y.data(), N, kWidth)),
                       doctest::Contains("attn (attention::Mla) forward: x: shape [14, 15], expected [14, 16]"), Error);
  std::vector<float> x_ok(N * kWidth, 0.5f);
  CHECK_THROWS_WITH_AS(f.attn.forward(f.params.data(), 3, make_view(static_cast<const float*>(x_ok.data()), N, kWidth),
                                      make_view(pos.data(), N), buf.saved, make_view(y.data(), N, kWidth)),
                       doctest::Contains("x has 14 rows, which do not split into 3 sequences"), Error);

  const index_t S = 4;
  std::vector<float> memory(B * f.attn.cache_elems(S)), scratch(f.attn.decode_scratch_elems(B));
  const auto cache = f.attn.cache_at(memory.data(), B, S);
  std::vector<float> x_t(B * kWidth, 0.5f), y_t(B * kWidth);
  auto decode_at = [&](index_t p) {
    f.attn.decode(f.params.data(), make_view(static_cast<const float*>(x_t.data()), B, kWidth), p, cache,
                  scratch.data(), make_view(y_t.data(), B, kWidth));
  };
  CHECK_THROWS_WITH_AS(
      decode_at(S), doctest::Contains("position 4 outside the cache of 4 positions (cache latent shape [2, 4, 14])"),
      Error);
  CHECK_THROWS_WITH_AS(decode_at(-1), doctest::Contains("position -1 outside the cache"), Error);
  CHECK_NOTHROW(decode_at(S - 1));
  CHECK_THROWS_WITH_AS(f.attn.decode(f.params.data(), make_view(static_cast<const float*>(x_t.data()), B - 1, kWidth),
                                     0, cache, scratch.data(), make_view(y_t.data(), B - 1, kWidth)),
                       doctest::Contains("cache latent: shape [2, 4, 14], expected [1, S, 14]"), Error);
}
