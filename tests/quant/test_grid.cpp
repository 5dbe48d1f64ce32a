#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <algorithm>
#include <string_view>
#include <vector>

#include "reason/quant/quant.hpp"

using namespace reason;
using namespace reason::quant;

namespace {

/// Has everything a quantizer needs but the product.
struct NoMatmul {
  struct Packed {
    index_t rows = 0, cols = 0;
    std::size_t bytes() const { return 0; }
  };
  static constexpr const char* name = "no_matmul";
  static constexpr int bits = 8;
  static Packed quantize(View<const float, 2>, std::string_view) { return {}; }
  static void dequantize(const Packed&, View<float, 2>) {}
};

}  // namespace

TEST_CASE("quantizer concept: every policy satisfies it, a type without a product does not") {
  static_assert(Quantizer<Int8Symmetric> && Quantizer<Int8Asymmetric>);
  static_assert(Quantizer<Int4Group<32>> && Quantizer<Int4Group<64>> && Quantizer<Int4Group<128>>);
  static_assert(Quantizer<Fp8E4M3Block> && Quantizer<Fp8E5M2Block>);
  static_assert(!Quantizer<NoMatmul>);
  static_assert(!Quantizer<int>);
  CHECK(std::string_view(Int8Symmetric::name) == "int8_sym_channel_token");
  CHECK(std::string_view(Int8Asymmetric::name) == "int8_asym_channel_token");
  CHECK(std::string_view(Int4Group<128>::name) == "int4_g128_asym");
  CHECK(std::string_view(Int4Group<32, Symmetry::symmetric>::name) == "int4_g32_sym");
  CHECK(std::string_view(Fp8E4M3Block::name) == "fp8_e4m3_block128");
  CHECK(std::string_view(Fp8E5M2Block::name) == "fp8_e5m2_block128");
}

TEST_CASE("round_half_even: ties go to the even integer, like CUDA's __float2int_rn") {
  CHECK(round_half_even(0.5f) == 0.0f);
  CHECK(round_half_even(1.5f) == 2.0f);
  CHECK(round_half_even(2.5f) == 2.0f);
  CHECK(round_half_even(-2.5f) == -2.0f);
  CHECK(round_half_even(-1.5f) == -2.0f);
  CHECK(round_half_even(126.5f) == 126.0f);
  CHECK(round_half_even(127.5f) == 128.0f);
  CHECK(round_half_even(0.49999997f) == 0.0f);
  CHECK(round_half_even(-7.2f) == -7.0f);
  CHECK(round_half_even(1e-40f) == 0.0f);
}

TEST_CASE("integer grids: the edge cases of the scale (zeros, subnormals, a range without 0)") {
  CHECK(IntGrid::symmetric(0.0f, 127).scale == 1.0f);
  CHECK(IntGrid::symmetric(1e-40f, 127).scale == FLT_MIN);  // never subnormal
  CHECK(IntGrid::symmetric(127.0f, 127).scale == 1.0f);
  const IntGrid zeros = IntGrid::affine(0.0f, 0.0f, -128, 127);
  CHECK(zeros.scale == 1.0f);
  CHECK(zeros.round_trip(0.0f) == 0.0f);
  const IntGrid positive = IntGrid::affine(3.0f, 5.1f, 0, 15);  // widened to [0, 5.1]
  CHECK(positive.scale == static_cast<float>(double(5.1f) / 15.0));
  CHECK(positive.zero_point == 0);
  CHECK(positive.code(5.1f) == 15);
  CHECK(positive.code(0.0f) == 0);
  const IntGrid negative = IntGrid::affine(-4.0f, -1.0f, -128, 127);  // widened to [-4, 0]
  CHECK(negative.zero_point == 127);
  CHECK(negative.code(-4.0f) == -128);
  CHECK(negative.round_trip(0.0f) == 0.0f);
  CHECK(negative.clips(0.005f) == false);  // within half a step (s = 4 / 255) of 0
  CHECK(negative.clips(0.01f) == true);
  CHECK(negative.clips(1.0f) == true);
  CHECK(negative.code(1.0f) == 127);
}

TEST_CASE("quantizers: empty matrices quantize and multiply to empty (or zero) results") {
  std::vector<float> none;
  const View<const float, 2> w0 = make_view(static_cast<const float*>(none.data()), 0, 128);
  const View<const float, 2> x0 = make_view(static_cast<const float*>(none.data()), 0, 128);
  std::vector<float> ybuf;
  const View<float, 2> y00 = make_view(ybuf.data(), 0, 0);
  Int8Symmetric::matmul(x0, Int8Symmetric::quantize(w0), y00);
  Int4Group<128>::matmul(x0, Int4Group<128>::quantize(w0), y00);
  Fp8E4M3Block::matmul(x0, Fp8E4M3Block::quantize(w0), y00);
  // K = 0: every output is an empty sum.
  const View<const float, 2> wk = make_view(static_cast<const float*>(none.data()), 3, 0);
  const View<const float, 2> xk = make_view(static_cast<const float*>(none.data()), 2, 0);
  std::vector<float> y(6, -1.0f);
  Int8Asymmetric::matmul(xk, Int8Asymmetric::quantize(wk), make_view(y.data(), 2, 3));
  CHECK(y == std::vector<float>(6, 0.0f));
  std::fill(y.begin(), y.end(), -1.0f);
  Fp8E5M2Block::matmul(xk, Fp8E5M2Block::quantize(wk), make_view(y.data(), 2, 3));
  CHECK(y == std::vector<float>(6, 0.0f));
  std::fill(y.begin(), y.end(), -1.0f);
  Int4Group<32>::matmul(xk, Int4Group<32>::quantize(wk), make_view(y.data(), 2, 3));
  CHECK(y == std::vector<float>(6, 0.0f));
}
