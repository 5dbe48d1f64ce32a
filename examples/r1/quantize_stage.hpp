// examples/r1/quantize_stage.hpp — stage 5: the RL model under each weight format.
//
// The GRPO model, trained in fp32, evaluated greedily on the held-out problems as it is and with
// the linear layers of its blocks stored and multiplied in
//   bf16   weights rounded to bfloat16, fp32 activations (quant::Bf16Weights);
//   int8   per-channel weights, per-token activations, int8 x int8 -> int32 (quant::Int8Symmetric);
//   int4   groups of 128 input columns (64 or 32 where a layer's width needs it), asymmetric,
//          unpacked inside the product (quant::Int4Group<128>);
//   fp8    E4M3 in DeepSeek-V3's 128x128 weight blocks and 1x128 activation tiles, promoted to fp32
//          every 128 elements of K (quant::Fp8Block<fp8_e4m3>).
// Each model is model::Transformer<..., linear::Quantized<Q>>, which loads the float weights and
// quantizes on load. Reported side by side: greedy accuracy (± its standard error, and the change
// from fp32 in points), the model's bytes (the tensors stored quantized at their packed size —
// codes, scales, zero points — the rest in fp32) and greedy decode tokens/s on this CPU (every
// completion token over the evaluation's wall time; prompts included). The stage runs on the host
// whatever --device says: the quantized products are host kernels so far.
// MLA builds skip it: MLA's absorbed decode multiplies by its float up-projection (weight()).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/linear/quantized.hpp"
#include "reason/quant/bf16_weights.hpp"
#include "reason/quant/fp8_block.hpp"
#include "reason/quant/int4.hpp"
#include "reason/quant/int8.hpp"

namespace r1 {

/// The policy's architecture with another linear-layer policy (host, fp32 activations).
template <class Linear>
using PolicyWith = model::Transformer<Attention, examples::Ffn, norm::RMSNorm, Linear, precision::Fp32>;

/// MLA's absorbed decode reads its float up-projection; the other attention policies quantize.
inline constexpr bool quantizable_attention = !std::is_same_v<AttentionChoice, examples::variants::mla>;

namespace detail {

/// The model's bytes: tensors a linear::Quantized<Q> layer stores quantized (ParamInfo::storage)
/// at Q's packed size, measured by quantizing them; every other tensor in fp32.
template <class Q>
std::size_t model_bytes(const ParamLayout& layout, const std::vector<float>& params) {
  std::size_t bytes = 0;
  for (const ParamInfo& p : layout.params()) {
    if (p.storage.empty()) {
      bytes += p.numel * sizeof(float);
    } else {
      REASON_CHECK(p.storage == Q::name && p.shape.size() == 2, "r1 quantize: '", p.name, "' is stored as ", p.storage,
                   ", expected a matrix in ", Q::name);
      bytes += Q::quantize(matrix_at(params.data(), p.offset, p.shape[0], p.shape[1]), p.name).bytes();
    }
  }
  return bytes;
}

}  // namespace detail

template <class Net, class StudentNet, class Par, class StudentPar>
template <class Linear>
void Pipeline<Net, StudentNet, Par, StudentPar>::evaluate_format(const std::string& format, const model::Config& mc,
                                                const std::vector<float>& params) {
  PolicyWith<Linear> net(mc);
  rl::EvalConfig ec;
  ec.max_new_tokens = mc.max_seq_len;
  ec.samples = 0;  // greedy only
  ec.ks.clear();
  QuantizedEval q;
  q.format = format;
  if constexpr (std::is_same_v<Linear, linear::Dense>)
    q.bytes = params.size() * sizeof(float);
  else
    q.bytes = detail::model_bytes<typename Linear::quantizer>(net.layout(), params);
  const auto t0 = std::chrono::steady_clock::now();
  q.report = rl::evaluate(net, params.data(), std::span<const data::Problem>(held_out_.problems), ec);
  const double seconds = detail::seconds_since(t0);
  q.tokens_per_s = static_cast<double>(q.report.problems) * q.report.mean_tokens / seconds;
  const double fp32 = quantized_.empty() ? q.report.accuracy : quantized_.front().report.accuracy;
  log({{"stage", "quantize"}, {"format", format}, {"accuracy", q.report.accuracy},
                   {"accuracy_se", q.report.accuracy_se}, {"accuracy_change", q.report.accuracy - fp32},
                   {"format_rate", q.report.format_rate}, {"mean_tokens", q.report.mean_tokens}, {"bytes", q.bytes},
                   {"tokens_per_s", q.tokens_per_s}, {"seconds", seconds}});
  std::printf("  %-8s greedy accuracy %5.1f%% ± %.1f (%+.1f points)  %9zu bytes  %7.0f tokens/s\n", format.c_str(),
              100 * q.report.accuracy, 100 * q.report.accuracy_se, 100 * (q.report.accuracy - fp32), q.bytes,
              q.tokens_per_s);
  std::fflush(stdout);
  quantized_.push_back(std::move(q));
}

template <class Net, class StudentNet, class Par, class StudentPar>
void Pipeline<Net, StudentNet, Par, StudentPar>::run_quantize(const model::Config& mc, const std::vector<float>& params) {
  if constexpr (!quantizable_attention) {
    (void)mc, (void)params;
    std::printf("\n== stage 5: quantized inference: skipped (MLA's absorbed decode multiplies by its float "
                "up-projection)\n");
  } else {
    std::printf("\n== stage 5: quantized inference of the policy on the CPU, %zu held-out problems, greedy\n",
                held_out_.size());
    quantized_.clear();
    evaluate_format<linear::Dense>("fp32", mc, params);
    evaluate_format<linear::Quantized<quant::Bf16Weights>>("bf16", mc, params);
    evaluate_format<linear::Quantized<quant::Int8Symmetric>>("int8", mc, params);
    // INT4 groups of 128 input columns where every layer's input width allows it, else 64 or 32.
    const index_t head_width = mc.num_heads * Net::head_dim;
    auto groups_fit = [&](index_t g) {
      return mc.hidden_size % g == 0 && head_width % g == 0 && mc.intermediate_size % g == 0 &&
             (!Net::routed || mc.moe_intermediate_size % g == 0);
    };
    if (groups_fit(128))
      evaluate_format<linear::Quantized<quant::Int4Group<128>>>("int4-g128", mc, params);
    else if (groups_fit(64))
      evaluate_format<linear::Quantized<quant::Int4Group<64>>>("int4-g64", mc, params);
    else
      evaluate_format<linear::Quantized<quant::Int4Group<32>>>("int4-g32", mc, params);
    evaluate_format<linear::Quantized<quant::Fp8Block<fp8_e4m3>>>("fp8", mc, params);
  }
}

}  // namespace r1
