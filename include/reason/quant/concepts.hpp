// reason/quant/concepts.hpp — what a quantizer policy provides.
//
// A quantizer is a type that chooses how a weight matrix W [out, in] (PyTorch's nn.Linear layout)
// is stored and multiplied, so that a linear layer can take it as a policy
// (`Linear<quant::Int4Group<128>>`) and quantize on load:
//   Q::name                           a short name with the policy's numbers ("int4_g128_asym");
//   Q::bits                           bits per stored weight code (8 or 4; scales not counted);
//   Q::Packed                         the quantized weights; `rows`, `cols` (out, in) and `bytes()`,
//                                     every byte the product reads for them (codes, scales, zero
//                                     points, precomputed sums);
//   Q::quantize(w, name) -> Packed    from float weights [out, in]; Inf or NaN is an error naming
//                                     `name` and the element;
//   Q::dequantize(packed, out)        out [out, in] = the float value of every stored code;
//   Q::matmul(x, packed, y)           y [N, out] = x [N, in] W^T on the quantized operands (the codes
//                                     themselves; activations quantized on the fly where the scheme
//                                     quantizes them), never through a dequantized float W.
// Entry points constrained on a quantizer `static_assert(quant::Quantizer<Q>, "...")` once, so a
// wrong type fails at one readable line.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

#include "reason/core/view.hpp"

namespace reason::quant {

template <class Q>
concept Quantizer = requires {
  { Q::name } -> std::convertible_to<std::string_view>;
  { Q::bits } -> std::convertible_to<int>;
  typename Q::Packed;
} && requires(View<const float, 2> w, const typename Q::Packed& p, View<float, 2> out, std::string_view name) {
  { p.rows } -> std::convertible_to<index_t>;
  { p.cols } -> std::convertible_to<index_t>;
  { p.bytes() } -> std::convertible_to<std::size_t>;
  { Q::quantize(w, name) } -> std::same_as<typename Q::Packed>;
  Q::dequantize(p, out);
  Q::matmul(w, p, out);
};

}  // namespace reason::quant
