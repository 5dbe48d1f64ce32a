// Tests of reason/core/dtype.hpp and the narrow float types (bf16, fp16, fp8 E4M3/E5M2).
//
// Always: DType names/sizes/parsing, known values, every encoding round-trips, and conversions
// agree with an independent reference (nearest-even over the sorted table of all finite values).
// With REASON_TEST_WITH_CUDA_HEADERS: bit-for-bit agreement with the host paths of CUDA's
// cuda_bf16.h / cuda_fp16.h / cuda_fp8.h on every narrow encoding, millions of random float and
// double bit patterns, every rounding midpoint and its neighbours, and the special values.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/dtype.hpp"
#include "reason/core/philox.hpp"

#if defined(REASON_TEST_WITH_CUDA_HEADERS)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

using namespace reason;

namespace {

// ---- compile-time facts ---------------------------------------------------------------------------
static_assert(std::is_trivially_copyable_v<bf16> && std::is_trivially_copyable_v<fp16>);
static_assert(std::is_trivially_copyable_v<fp8_e4m3> && std::is_trivially_copyable_v<fp8_e5m2>);
static_assert(sizeof(bf16) == 2 && sizeof(fp16) == 2 && sizeof(fp8_e4m3) == 1 && sizeof(fp8_e5m2) == 1);
static_assert(bf16(1.0f).bits == 0x3F80 && fp16(1.0f).bits == 0x3C00);
static_assert(fp8_e4m3(448.0f).bits == 0x7E && fp8_e5m2(-57344.0).bits == 0xFB);
static_assert(float(fp16::from_bits(0x0001)) == 0x1p-24f);  // constexpr decoding
static_assert(dtype_of<bf16> == DType::bf16 && dtype_of<const fp8_e5m2> == DType::f8_e5m2);
static_assert(dtype_of<std::int64_t> == DType::i64 && dtype_size(DType::f8_e4m3) == 1);

template <class T> using Bits = decltype(T::bits);

// Each narrow type: the encodings that are NaN or infinite, and the one past the largest finite.
template <class T> struct Traits;
template <> struct Traits<bf16> {
  static constexpr const char* name = "bf16";
  static constexpr unsigned count = 1u << 16, overflow = 0x7F80, sign = 0x8000;
  static bool is_nan(unsigned b) { return (b & 0x7FFF) > 0x7F80; }
  static bool is_inf(unsigned b) { return (b & 0x7FFF) == 0x7F80; }
};
template <> struct Traits<fp16> {
  static constexpr const char* name = "fp16";
  static constexpr unsigned count = 1u << 16, overflow = 0x7C00, sign = 0x8000;
  static bool is_nan(unsigned b) { return (b & 0x7FFF) > 0x7C00; }
  static bool is_inf(unsigned b) { return (b & 0x7FFF) == 0x7C00; }
};
template <> struct Traits<fp8_e4m3> {
  static constexpr const char* name = "fp8_e4m3";
  static constexpr unsigned count = 256, overflow = 0x7F, sign = 0x80;
  static bool is_nan(unsigned b) { return (b & 0x7F) == 0x7F; }
  static bool is_inf(unsigned) { return false; }
};
template <> struct Traits<fp8_e5m2> {
  static constexpr const char* name = "fp8_e5m2";
  static constexpr unsigned count = 256, overflow = 0x7C, sign = 0x80;
  static bool is_nan(unsigned b) { return (b & 0x7F) > 0x7C; }
  static bool is_inf(unsigned b) { return (b & 0x7F) == 0x7C; }
};

template <class T> T make(float x, Saturation s) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>) return (void)s, T(x);
  else return T(x, s);
}
template <class T> T make(double x, Saturation s) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, fp16>) return (void)s, T(x);
  else return T(x, s);
}
template <class T> constexpr bool has_saturation = !(std::is_same_v<T, bf16> || std::is_same_v<T, fp16>);

// Counts mismatches, keeping the first few as text for the failure message.
struct Mismatches {
  long count = 0;
  std::string first;
  void add(const char* what, std::uint64_t input, unsigned got, unsigned expected) {
    if (++count > 4) return;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s(0x%llx): got 0x%x, expected 0x%x; ", what,
                  static_cast<unsigned long long>(input), got, expected);
    first += buf;
  }
};

// ---- an independent reference: nearest value, ties to the even encoding ---------------------------
// The non-negative finite values in increasing order, then one virtual value past the largest
// finite one (the next value of the binade, encoded as `overflow`): rounding to it means overflow.
template <class T> struct Table {
  std::vector<long double> value;
  std::vector<unsigned> bits;
  Table() {
    for (unsigned b = 0; b < Traits<T>::count / 2; ++b) {
      if (Traits<T>::is_nan(b) || Traits<T>::is_inf(b)) continue;
      value.push_back(static_cast<double>(T::from_bits(static_cast<Bits<T>>(b))));
      bits.push_back(b);
    }
    const std::size_t n = value.size();
    value.push_back(value[n - 1] + (value[n - 1] - value[n - 2]));
    bits.push_back(Traits<T>::overflow);
  }
  // Magnitude encoding of |x| rounded to nearest even, or `overflow`.
  unsigned round(long double a) const {
    auto hi = std::upper_bound(value.begin(), value.end(), a);
    if (hi == value.end()) return Traits<T>::overflow;
    const auto i = static_cast<std::size_t>(hi - value.begin());
    const long double dlo = a - value[i - 1], dhi = value[i] - a;
    if (dlo < dhi) return bits[i - 1];
    if (dhi < dlo) return bits[i];
    return (bits[i - 1] & 1) ? bits[i] : bits[i - 1];
  }
};

// What the reference says T(x, s) must be, for finite or infinite non-NaN x.
template <class T> unsigned reference(const Table<T>& table, long double x, Saturation s) {
  const unsigned sign = std::signbit(x) ? Traits<T>::sign : 0;
  const unsigned m = std::isinf(x) ? Traits<T>::overflow : table.round(std::fabs(x));
  if (m != Traits<T>::overflow) return sign | m;
  if (!has_saturation<T> || s == Saturation::none) return sign | Traits<T>::overflow;  // Inf, or E4M3 NaN
  return sign | (Traits<T>::overflow - 1);                                             // largest finite
}

float float_from(std::uint32_t u) { return std::bit_cast<float>(u); }
double double_from(std::uint64_t u) { return std::bit_cast<double>(u); }

// A few million float bit patterns: uniform over all 2^32 (so every exponent), from Philox.
std::vector<std::uint32_t> random_floats(std::size_t n, std::uint64_t seed) {
  Philox rng(seed);
  std::vector<std::uint32_t> v(n);
  for (auto& u : v) u = rng.next_u32();
  return v;
}
// Double bit patterns: half uniform over all 2^64, half with exponents near the narrow ranges.
std::vector<std::uint64_t> random_doubles(std::size_t n, std::uint64_t seed) {
  Philox rng(seed);
  std::vector<std::uint64_t> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t u = rng.next_u64();
    if (i % 2) {
      const std::uint64_t e = 1023 - 140 + rng.below(140 + 130);  // 2^-140 .. 2^130
      u = (u & 0x800FFFFFFFFFFFFFull) | (e << 52);
    }
    v[i] = u;
  }
  return v;
}

// Floats and doubles on and around every rounding midpoint of T, at the saturation bounds, and the
// special values. For doubles, also the points a float would move onto a midpoint (double rounding).
template <class T> std::vector<double> edge_values() {
  std::vector<double> v = {0.0, -0.0, std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max(),
                           double(std::numeric_limits<float>::denorm_min()), double(std::numeric_limits<float>::min()),
                           double(std::numeric_limits<float>::max()), 0x1.fffffcp-127, 1.0, -1.0};
  std::vector<double> finite;
  for (unsigned b = 0; b < Traits<T>::count / 2; ++b)
    if (!Traits<T>::is_nan(b) && !Traits<T>::is_inf(b)) finite.push_back(static_cast<double>(T::from_bits(static_cast<Bits<T>>(b))));
  const double top = finite.back() + (finite.back() - finite[finite.size() - 2]);
  finite.push_back(top);
  for (std::size_t i = 0; i + 1 < finite.size(); ++i) {
    const double lo = finite[i], hi = finite[i + 1], mid = lo + (hi - lo) / 2;  // exact
    for (double p : {lo, mid, hi}) {
      const double pf = std::nextafter(float(p), INFINITY), mf = std::nextafter(float(p), -INFINITY);
      for (double q : {p, pf, mf, std::nextafter(p, 1e300), std::nextafter(p, -1.0), p + p * 0x1p-30, p - p * 0x1p-30}) {
        v.push_back(q);
        v.push_back(-q);
      }
    }
  }
  return v;
}
std::vector<std::uint32_t> nan_floats() {
  return {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FA00000u, 0x7F8FFFFFu};
}
std::vector<std::uint64_t> nan_doubles() {
  return {0x7FF8000000000000ull, 0xFFF8000000000000ull, 0x7FF0000000000001ull, 0xFFF0000000000001ull,
          0x7FFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull, 0x7FF4000000000000ull, 0x7FFC000000000000ull,
          0xFFF4000000000000ull, 0x7FF0000000000100ull};
}

template <class T> bool is_nan_bits(unsigned b) { return Traits<T>::is_nan(b); }

}  // namespace

TEST_CASE("DType: names, sizes and parsing follow safetensors") {
  const char* names[] = {"F32", "F64", "BF16", "F16", "F8_E4M3", "F8_E5M2", "I8", "U8", "I32", "U32", "I64", "U64"};
  const std::size_t sizes[] = {4, 8, 2, 2, 1, 1, 1, 1, 4, 4, 8, 8};
  for (std::size_t i = 0; i < all_dtypes.size(); ++i) {
    CHECK(dtype_name(all_dtypes[i]) == names[i]);
    CHECK(dtype_size(all_dtypes[i]) == sizes[i]);
    CHECK(parse_dtype(names[i]) == all_dtypes[i]);
  }
  CHECK(dtype_of<float> == DType::f32);
  CHECK(dtype_of<double> == DType::f64);
  CHECK(dtype_of<fp16> == DType::f16);
  CHECK(dtype_of<fp8_e4m3> == DType::f8_e4m3);
  CHECK(dtype_of<std::uint8_t> == DType::u8);
  CHECK(dtype_size(dtype_of<bf16>) == sizeof(bf16));
  CHECK_THROWS_WITH_AS((void)parse_dtype("bf16"),
                       "unknown dtype \"bf16\", expected one of F32, F64, BF16, F16, F8_E4M3, F8_E5M2, I8, U8, I32, U32, I64, U64",
                       Error);
  CHECK_THROWS_AS((void)parse_dtype(""), Error);
  CHECK(dtype_name(static_cast<DType>(200)) == "?");
  CHECK(dtype_size(static_cast<DType>(200)) == 0);
}

TEST_CASE("narrow floats: known values, saturation, NaN and double rounding") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(bf16(3.140625f).bits == 0x4049);
  CHECK(bf16(1.00390625f).bits == 0x3F80);  // tie -> even
  CHECK(bf16(1.01171875f).bits == 0x3F82);  // tie -> even, upwards
  CHECK(bf16(-inf).bits == 0xFF80);
  CHECK(bf16(-nan).bits == 0x7FFF);
  CHECK(bf16(0x1p-133f).bits == 0x0001);  // bf16's smallest subnormal
  CHECK(bf16(3.4e38f).bits == 0x7F80);    // overflows to Inf
  CHECK(fp16(65504.0f).bits == 0x7BFF);
  CHECK(fp16(65519.996f).bits == 0x7BFF);
  CHECK(fp16(65520.0f).bits == 0x7C00);
  CHECK(fp16(0x1p-24f).bits == 0x0001);
  CHECK(fp16(0x1p-25f).bits == 0x0000);  // tie -> even (zero)
  CHECK(fp16(-0x1.000002p-25f).bits == 0x8001);
  CHECK(fp8_e4m3(464.0f).bits == 0x7E);  // tie -> even: 448
  CHECK(fp8_e4m3(464.1f).bits == 0x7E);  // saturates
  CHECK(fp8_e4m3(464.1f, Saturation::none).bits == 0x7F);
  CHECK(fp8_e4m3(-inf).bits == 0xFE);
  CHECK(fp8_e4m3(-inf, Saturation::none).bits == 0xFF);
  CHECK(fp8_e4m3(-nan).bits == 0x7F);
  CHECK(fp8_e4m3(0x1p-9f).bits == 0x01);   // smallest subnormal
  CHECK(fp8_e4m3(0x1p-10f).bits == 0x00);  // tie -> zero
  CHECK(fp8_e5m2(61439.0f).bits == 0x7B);
  CHECK(fp8_e5m2(61440.0f).bits == 0x7B);  // overflow, saturated
  CHECK(fp8_e5m2(61440.0f, Saturation::none).bits == 0x7C);
  CHECK(fp8_e5m2(inf, Saturation::none).bits == 0x7C);
  CHECK(fp8_e5m2(0x1p-16f).bits == 0x01);
  CHECK(fp8_e5m2(nan).bits == 0x7F);
  CHECK(fp8_e5m2(double_from(0xFFF8000000000000ull)).bits == 0xFE);  // double NaN keeps sign and top bits
  CHECK(fp8_e5m2(double_from(0x7FF4000000000000ull)).bits == 0x7F);
  CHECK(fp8_e4m3(double_from(0xFFF8000000000000ull)).bits == 0xFF);
  // Double rounding: 1 + 2^-8 + 2^-40 is just above a bf16 midpoint; as a float it is the midpoint.
  const double d = 1.0 + 0x1p-8 + 0x1p-40;
  CHECK(bf16(d).bits == 0x3F81);
  CHECK(bf16(float(d)).bits == 0x3F80);
  CHECK(fp16(1.0 + 0x1p-11 + 0x1p-40).bits == 0x3C01);
  CHECK(fp8_e4m3(1.0 + 0x1p-4 + 0x1p-40).bits == 0x39);
  CHECK(fp8_e5m2(1.0 + 0x1p-3 + 0x1p-40).bits == 0x3D);
  // Decoding.
  CHECK(float(bf16::from_bits(0xFFC1)) != float(bf16::from_bits(0xFFC1)));
  CHECK(std::bit_cast<std::uint32_t>(float(bf16::from_bits(0xFFC1))) == 0xFFC10000u);
  CHECK(std::bit_cast<std::uint32_t>(float(fp16::from_bits(0xFE01))) == 0x7FFFFFFFu);
  CHECK(std::bit_cast<std::uint32_t>(float(fp8_e4m3::from_bits(0xFF))) == 0x7FFFFFFFu);
  CHECK(float(fp8_e4m3::from_bits(0x7E)) == 448.0f);
  CHECK(float(fp8_e5m2::from_bits(0xFC)) == -inf);
  CHECK(double(fp8_e5m2::from_bits(0x01)) == 0x1p-16);
}

TEST_CASE_TEMPLATE("narrow floats: every encoding round-trips and rounding matches a nearest-even reference", T,
                   bf16, fp16, fp8_e4m3, fp8_e5m2) {
  Mismatches bad;
  for (unsigned b = 0; b < Traits<T>::count; ++b) {
    const T x = T::from_bits(static_cast<Bits<T>>(b));
    const float f = static_cast<float>(x);
    const double dd = static_cast<double>(x);
    if (Traits<T>::is_nan(b)) {
      if (!std::isnan(f) || !std::isnan(dd)) bad.add("nan decode", b, 0, 1);
      if (!is_nan_bits<T>(make<T>(f, Saturation::none).bits)) bad.add("nan round-trip", b, 0, 1);
      continue;
    }
    if (double(f) != dd) bad.add("float vs double", b, 0, 1);
    if (make<T>(f, Saturation::none).bits != b) bad.add("from float", b, make<T>(f, Saturation::none).bits, b);
    if (make<T>(dd, Saturation::none).bits != b) bad.add("from double", b, make<T>(dd, Saturation::none).bits, b);
  }
  const Table<T> table;
  for (std::uint32_t u : random_floats(1 << 19, 7)) {
    const float f = float_from(u);
    if (std::isnan(f)) continue;
    for (Saturation s : {Saturation::finite, Saturation::none}) {
      const unsigned want = reference<T>(table, f, s), got = make<T>(f, s).bits;
      if (got != want) bad.add("float", u, got, want);
    }
  }
  auto doubles = random_doubles(1 << 18, 8);
  for (double e : edge_values<T>()) doubles.push_back(std::bit_cast<std::uint64_t>(e));
  for (std::uint64_t u : doubles) {
    const double d = double_from(u);
    if (std::isnan(d)) continue;
    for (Saturation s : {Saturation::finite, Saturation::none}) {
      const unsigned want = reference<T>(table, d, s), got = make<T>(d, s).bits;
      if (got != want) bad.add("double", u, got, want);
    }
  }
  INFO(std::string(Traits<T>::name), ": ", bad.first);
  CHECK(bad.count == 0);
}

#if defined(REASON_TEST_WITH_CUDA_HEADERS)

namespace {
// CUDA's host conversions, as bits.
template <class T> unsigned cuda_from(float x, Saturation s) {
  const auto sat = s == Saturation::finite ? __NV_SATFINITE : __NV_NOSAT;
  if constexpr (std::is_same_v<T, bf16>) return __nv_bfloat16_raw(__float2bfloat16(x)).x;
  else if constexpr (std::is_same_v<T, fp16>) return __half_raw(__float2half(x)).x;
  else if constexpr (std::is_same_v<T, fp8_e4m3>) return __nv_cvt_float_to_fp8(x, sat, __NV_E4M3);
  else return __nv_cvt_float_to_fp8(x, sat, __NV_E5M2);
}
template <class T> unsigned cuda_from(double x, Saturation s) {
  const auto sat = s == Saturation::finite ? __NV_SATFINITE : __NV_NOSAT;
  if constexpr (std::is_same_v<T, bf16>) return __nv_bfloat16_raw(__double2bfloat16(x)).x;
  else if constexpr (std::is_same_v<T, fp16>) return __half_raw(__double2half(x)).x;
  else if constexpr (std::is_same_v<T, fp8_e4m3>) return __nv_cvt_double_to_fp8(x, sat, __NV_E4M3);
  else return __nv_cvt_double_to_fp8(x, sat, __NV_E5M2);
}
template <class T> float cuda_to_float(unsigned b) {
  if constexpr (std::is_same_v<T, bf16>) return __bfloat162float(__nv_bfloat16(__nv_bfloat16_raw{static_cast<unsigned short>(b)}));
  else if constexpr (std::is_same_v<T, fp16>) return __half2float(__half(__half_raw{static_cast<unsigned short>(b)}));
  else {
    using C = std::conditional_t<std::is_same_v<T, fp8_e4m3>, __nv_fp8_e4m3, __nv_fp8_e5m2>;
    C c;
    c.__x = static_cast<__nv_fp8_storage_t>(b);
    return static_cast<float>(c);
  }
}
template <class T> constexpr Saturation saturations[] = {Saturation::finite, Saturation::none};
}  // namespace

TEST_CASE_TEMPLATE("narrow floats: every encoding decodes like CUDA, bit for bit", T, bf16, fp16, fp8_e4m3, fp8_e5m2) {
  Mismatches bad;
  for (unsigned b = 0; b < Traits<T>::count; ++b) {
    const T x = T::from_bits(static_cast<Bits<T>>(b));
    const float want = cuda_to_float<T>(b);
    const auto got = std::bit_cast<std::uint32_t>(static_cast<float>(x));
    if (got != std::bit_cast<std::uint32_t>(want)) bad.add("to float", b, got, std::bit_cast<std::uint32_t>(want));
    const auto got_d = std::bit_cast<std::uint64_t>(static_cast<double>(x));
    const auto want_d = std::bit_cast<std::uint64_t>(static_cast<double>(want));  // CUDA widens the float
    if (got_d != want_d) bad.add("to double (high word)", b, unsigned(got_d >> 32), unsigned(want_d >> 32));
  }
  INFO(std::string(Traits<T>::name), ": ", bad.first);
  CHECK(bad.count == 0);
}

TEST_CASE_TEMPLATE("narrow floats: float to T rounds like CUDA, bit for bit", T, bf16, fp16, fp8_e4m3, fp8_e5m2) {
  std::vector<std::uint32_t> inputs = random_floats(std::size_t{3} << 20, 1);
  for (double e : edge_values<T>()) inputs.push_back(std::bit_cast<std::uint32_t>(static_cast<float>(e)));
  for (std::uint32_t u : nan_floats()) inputs.push_back(u);
  for (std::uint32_t u = 0; u < (1u << 16); ++u) {  // float subnormals, both signs, and every exponent's edges
    inputs.push_back(u * 131u);
    inputs.push_back(0x80000000u | (u * 127u));
    inputs.push_back(((u & 0x1FFu) << 23) | (u >> 9) | ((u & 1) ? 0x7FFFFFu : 0u));
  }
  Mismatches bad;
  for (std::uint32_t u : inputs) {
    const float f = float_from(u);
    for (Saturation s : saturations<T>) {
      const unsigned got = make<T>(f, s).bits, want = cuda_from<T>(f, s);
      if (got != want) bad.add(s == Saturation::finite ? "float" : "float nosat", u, got, want);
      if (!has_saturation<T>) break;
    }
  }
  INFO(std::string(Traits<T>::name), " (", inputs.size(), " inputs): ", bad.first);
  CHECK(bad.count == 0);
}

TEST_CASE_TEMPLATE("narrow floats: double to T rounds once, like CUDA, bit for bit", T, bf16, fp16, fp8_e4m3, fp8_e5m2) {
  std::vector<std::uint64_t> inputs = random_doubles(std::size_t{1} << 20, 2);
  for (double e : edge_values<T>()) inputs.push_back(std::bit_cast<std::uint64_t>(e));
  for (std::uint64_t u : nan_doubles()) inputs.push_back(u);
  for (std::uint64_t e = 0; e < 2048; ++e)  // every exponent, with fraction 0, all ones and a half
    for (std::uint64_t frac : {0ull, 0xFFFFFFFFFFFFFull, 0x8000000000000ull, 0x8000000000001ull, 1ull})
      for (std::uint64_t sign : {0ull, 1ull}) inputs.push_back((sign << 63) | (e << 52) | frac);
  Mismatches bad;
  for (std::uint64_t u : inputs) {
    const double d = double_from(u);
    for (Saturation s : saturations<T>) {
      const unsigned got = make<T>(d, s).bits, want = cuda_from<T>(d, s);
      if (got != want) bad.add(s == Saturation::finite ? "double" : "double nosat", u, got, want);
      if (!has_saturation<T>) break;
    }
  }
  INFO(std::string(Traits<T>::name), " (", inputs.size(), " inputs): ", bad.first);
  CHECK(bad.count == 0);
}

#endif  // REASON_TEST_WITH_CUDA_HEADERS
