// tests/support/decode_check.hpp — decoding with the KV cache against the full forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/model/transformer.hpp"

namespace reason::test {

/// A Transformer with attention policy A and feed-forward policy Ffn fed token by token through
/// decode_step gives the full forward's logits: returns max |decode - full| / max |full| over
/// every position. `adjust` may change the initialised parameters first (e.g. set a buffer).
template <class A, class Ffn = ffn::SwiGLU>
double decode_vs_forward_error(model::Config c, index_t batch, index_t seq, std::uint64_t seed,
                               const std::function<void(const ParamLayout&, std::span<float>)>& adjust = {}) {
  using Net = model::Transformer<A, Ffn>;
  Net net(c);
  net.reserve(batch, seq);
  std::vector<float> params(net.num_params());
  net.layout().initialize(std::span<float>(params), seed);
  if (adjust) adjust(net.layout(), std::span<float>(params));
  Philox rng(seed, 5);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch * seq));
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(c.vocab_size)));
  const index_t V = c.vocab_size;
  std::vector<float> full(static_cast<std::size_t>(batch * seq * V));
  net.logits(params.data(), make_view(static_cast<const std::int32_t*>(tokens.data()), batch, seq),
             make_view(full.data(), batch * seq, V));
  auto state = net.make_decode_state(batch, seq);
  std::vector<std::int32_t> step(static_cast<std::size_t>(batch));
  std::vector<float> logits(static_cast<std::size_t>(batch * V));
  double worst = 0, peak = 0;
  for (index_t t = 0; t < seq; ++t) {
    for (index_t b = 0; b < batch; ++b) step[b] = tokens[b * seq + t];
    net.decode_step(params.data(), make_view(static_cast<const std::int32_t*>(step.data()), batch), t, state,
                    make_view(logits.data(), batch, V));
    for (index_t b = 0; b < batch; ++b)
      for (index_t v = 0; v < V; ++v) {
        const double f = full[(b * seq + t) * V + v];
        worst = std::max(worst, std::abs(static_cast<double>(logits[b * V + v]) - f));
        peak = std::max(peak, std::abs(f));
      }
  }
  return worst / peak;
}

}  // namespace reason::test
