// reason/quant/quant.hpp — every quantizer policy in one include (a convenience; include the one you use).
//
//   quant::Int8<Int8Scheme{...}>      INT8 weights and activations, int32 accumulation   (int8.hpp)
//   quant::Int4Group<G, Symmetry>     INT4 weight-only, groups of G = 32/64/128           (int4.hpp)
//   quant::Fp8Block<fp8_e4m3 / e5m2>  FP8 with DeepSeek-V3's 1x128 / 128x128 scaling       (fp8_block.hpp)
//   fake_quant_forward / _backward    quantize-dequantize with a straight-through gradient (fake_quant.hpp)
// Each policy satisfies quant::Quantizer (concepts.hpp).
#pragma once

#include "reason/quant/concepts.hpp"
#include "reason/quant/fake_quant.hpp"
#include "reason/quant/fp8_block.hpp"
#include "reason/quant/grid.hpp"
#include "reason/quant/int4.hpp"
#include "reason/quant/int8.hpp"
