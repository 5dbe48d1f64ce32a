// reason/moe/balance.hpp — keeping the experts evenly loaded.
//
// Two mechanisms, each a policy of the gate:
//   BiasBalance<gamma>   auxiliary-loss-free balancing (Wang et al. 2024, "Auxiliary-Loss-Free Load
//                        Balancing Strategy for Mixture-of-Experts"; DeepSeek-V3 §2.1.2): a
//                        per-expert bias b_i is added to the scores for *choosing* experts only —
//                        the combine weights come from the unbiased scores — and after each
//                        optimizer step b_i += gamma * sign(mean load - load_i): an overloaded
//                        expert becomes less attractive, an underloaded one more. The bias is a
//                        non-trainable buffer saved with the weights ("e_score_correction_bias").
//   NoBias               no bias.
// and an auxiliary loss added to the training loss, whose gradient pushes the router itself:
//   SwitchLoss<alpha>    alpha * E * sum_i f_i P_i over the forward's tokens (Switch Transformer
//                        eq. 4, with f_i the fraction of the k N assignments going to i);
//   SequenceLoss<alpha>  the same per sequence, averaged over the batch (DeepSeek-V3 eqs. 17-20, its
//                        "complementary sequence-wise balance loss", alpha = 1e-4 there);
//   NoAuxLoss.
// For a sigmoid gate P_i uses the scores normalised over all experts (DeepSeek-V3 eq. 19).
#pragma once

#include <charconv>
#include <span>
#include <string>

#include "reason/core/view.hpp"

namespace reason::moe {

namespace detail {
inline std::string shortest(float v) {  // "0.001", not the double 0.0010000000474974513
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}
}  // namespace detail

struct NoBias {
  static constexpr bool has_bias = false;
  static std::string signature() { return "no_bias"; }
};

template <float Gamma = 0.001f>
struct BiasBalance {
  static_assert(Gamma > 0.0f, "moe::BiasBalance<gamma>: the bias update speed gamma must be > 0");
  static constexpr bool has_bias = true;
  static constexpr float gamma = Gamma;
  /// b_i += gamma * sign(mean - load_i), load [E] counted over the step's training tokens.
  template <class T>
  static void update(View<T, 1> bias, std::span<const double> load) {
    double mean = 0;
    for (double l : load) mean += l;
    mean /= static_cast<double>(load.size());
    for (std::size_t i = 0; i < load.size(); ++i) {
      const double d = mean - load[i];
      bias(static_cast<index_t>(i)) += static_cast<T>(d > 0 ? Gamma : d < 0 ? -Gamma : 0.0f);
    }
  }
  static std::string signature() { return "bias_balance(" + detail::shortest(Gamma) + ")"; }
};

struct NoAuxLoss {
  static constexpr bool active = false;
  static constexpr double alpha = 0;
  static constexpr bool per_sequence = false;
  static std::string signature() { return "no_aux_loss"; }
};

template <float Alpha = 0.01f>
struct SwitchLoss {
  static_assert(Alpha > 0.0f, "moe::SwitchLoss<alpha>: alpha must be > 0");
  static constexpr bool active = true;
  static constexpr double alpha = Alpha;
  static constexpr bool per_sequence = false;
  static std::string signature() { return "switch_loss(" + detail::shortest(Alpha) + ")"; }
};

template <float Alpha = 0.0001f>
struct SequenceLoss {
  static_assert(Alpha > 0.0f, "moe::SequenceLoss<alpha>: alpha must be > 0");
  static constexpr bool active = true;
  static constexpr double alpha = Alpha;
  static constexpr bool per_sequence = true;
  static std::string signature() { return "sequence_loss(" + detail::shortest(Alpha) + ")"; }
};

}  // namespace reason::moe
