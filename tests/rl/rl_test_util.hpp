// Shared pieces of the rl tests: a tiny float64 transformer and a rollout-shaped batch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "reason/attention/multi_head.hpp"
#include "reason/core/philox.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/rl/token_logp.hpp"
#include "support/gradcheck.hpp"

namespace reason::test {

using RlNet = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 4}>, ffn::SwiGLU, norm::RMSNorm,
                                 linear::Dense, precision::Fp64>;

inline model::Config rl_config() {
  model::Config c;
  c.vocab_size = 11;
  c.hidden_size = 6;
  c.num_layers = 2;
  c.num_heads = 3;
  c.num_kv_heads = 1;
  c.intermediate_size = 7;
  c.max_seq_len = 8;
  c.init_std = 0.4;  // large enough that every path carries signal in the check
  return c;
}

/// B sequences of L tokens: prompt of prompt_len[b] tokens, then a completion up to end[b]
/// (exclusive), then padding (token 0). mask(b, t) = 1 for prompt_len[b] - 1 <= t < end[b] - 1.
struct ToyRollout {
  index_t B = 0, L = 0;
  std::vector<std::int32_t> tokens;
  std::vector<std::uint8_t> mask;

  ToyRollout(index_t batch, index_t len, std::span<const index_t> prompt_len, std::span<const index_t> end,
             Philox& rng, index_t vocab = 11)
      : B(batch), L(len), tokens(static_cast<std::size_t>(batch * len), 0), mask(static_cast<std::size_t>(batch * len), 0) {
    for (index_t b = 0; b < B; ++b) {
      for (index_t t = 0; t < end[static_cast<std::size_t>(b)]; ++t)
        tokens[static_cast<std::size_t>(b * L + t)] = static_cast<std::int32_t>(1 + rng.below(static_cast<std::uint32_t>(vocab - 1)));
      for (index_t t = prompt_len[static_cast<std::size_t>(b)] - 1; t < end[static_cast<std::size_t>(b)] - 1; ++t)
        mask[static_cast<std::size_t>(b * L + t)] = 1;
    }
  }
  [[nodiscard]] View<const std::int32_t, 2> tokens_view() const { return make_view(tokens.data(), B, L); }
  [[nodiscard]] View<const std::uint8_t, 2> mask_view() const { return make_view(mask.data(), B, L); }
  [[nodiscard]] index_t completion_tokens(index_t b) const {
    index_t n = 0;
    for (index_t t = 0; t < L; ++t) n += mask[static_cast<std::size_t>(b * L + t)];
    return n;
  }
};

/// log pi(next token) at every masked position under `params` ([B, L], 0 elsewhere).
inline std::vector<double> token_logps(RlNet& net, const std::vector<double>& params, const ToyRollout& r) {
  std::vector<double> out(static_cast<std::size_t>(r.B * r.L), 0.0);
  rl::TokenLogProbs<double> rec(r.tokens_view(), r.mask_view(), make_view(out.data(), r.B, r.L));
  net.forward_objective(params.data(), nullptr, r.tokens_view(), rec);
  return out;
}

/// Central-difference step for checks through the model. The losses here are smooth but
/// curved (exp of log-prob differences, through the whole network), and the error of the
/// check falls as h^2 (seen: 1.7e-6 at h = 1e-5, 1.5e-7 at 3e-6 for one seed), so it is
/// truncation, not a wrong gradient; at 3e-6 round-off is still ~1e-16 / h ~ 3e-11.
inline constexpr double kFdStep = 3e-6;

inline double max_abs(std::span<const double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace reason::test
