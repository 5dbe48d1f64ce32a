// reason/core/dtype.hpp — the element types the library stores, by name and by size.
//
// Design rule: one enum names every element type that crosses a file or a device boundary, and
// its spelling is the safetensors one ("F32", "BF16", "F8_E4M3", ...; huggingface/safetensors,
// safetensors/src/tensor.rs `Dtype`), so a checkpoint header maps to a DType with no table of
// our own. `dtype_of<T>` ties a C++ type to its tag at compile time; an unsupported T fails in
// one static_assert. The reduced-precision float types themselves live in bf16.hpp, fp16.hpp
// and fp8.hpp (included here) and round exactly like CUDA's cuda_bf16.h / cuda_fp16.h /
// cuda_fp8.h, so host and device agree bit for bit.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "reason/core/bf16.hpp"
#include "reason/core/error.hpp"
#include "reason/core/fp16.hpp"
#include "reason/core/fp8.hpp"

namespace reason {

/// Element types, in safetensors' vocabulary.
enum class DType : std::uint8_t { f32, f64, bf16, f16, f8_e4m3, f8_e5m2, i8, u8, i32, u32, i64, u64 };

inline constexpr std::array<DType, 12> all_dtypes = {DType::f32, DType::f64,     DType::bf16,    DType::f16,
                                                     DType::f8_e4m3, DType::f8_e5m2, DType::i8, DType::u8,
                                                     DType::i32, DType::u32,     DType::i64,     DType::u64};

/// Bytes per element.
[[nodiscard]] constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64: case DType::i64: case DType::u64: return 8;
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::bf16: case DType::f16: return 2;
    case DType::f8_e4m3: case DType::f8_e5m2: case DType::i8: case DType::u8: return 1;
  }
  return 0;  // not a DType value
}

/// The safetensors name: "F32", "BF16", "F8_E4M3", ... ("?" for a value outside the enum).
[[nodiscard]] constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::f8_e4m3: return "F8_E4M3";
    case DType::f8_e5m2: return "F8_E5M2";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::u32: return "U32";
    case DType::i64: return "I64";
    case DType::u64: return "U64";
  }
  return "?";
}

/// The DType with safetensors name `name` (exact, case-sensitive); throws reason::Error naming
/// the string and listing the known names otherwise.
[[nodiscard]] inline DType parse_dtype(std::string_view name) {
  for (DType t : all_dtypes)
    if (dtype_name(t) == name) return t;
  std::string known;
  for (DType t : all_dtypes) {
    if (!known.empty()) known += ", ";
    known += dtype_name(t);
  }
  fail("unknown dtype \"", name, "\", expected one of ", known);
}

namespace detail {
template <class T> struct DTypeOf {
  static_assert(sizeof(T) == 0, "reason::dtype_of<T>: T is not a storage type (float, double, bf16, fp16, "
                                "fp8_e4m3, fp8_e5m2, or a fixed-width 8/32/64-bit integer)");
};
template <DType D> struct DTypeTag { static constexpr DType value = D; };
template <> struct DTypeOf<float> : DTypeTag<DType::f32> {};
template <> struct DTypeOf<double> : DTypeTag<DType::f64> {};
template <> struct DTypeOf<bf16> : DTypeTag<DType::bf16> {};
template <> struct DTypeOf<fp16> : DTypeTag<DType::f16> {};
template <> struct DTypeOf<fp8_e4m3> : DTypeTag<DType::f8_e4m3> {};
template <> struct DTypeOf<fp8_e5m2> : DTypeTag<DType::f8_e5m2> {};
template <> struct DTypeOf<std::int8_t> : DTypeTag<DType::i8> {};
template <> struct DTypeOf<std::uint8_t> : DTypeTag<DType::u8> {};
template <> struct DTypeOf<std::int32_t> : DTypeTag<DType::i32> {};
template <> struct DTypeOf<std::uint32_t> : DTypeTag<DType::u32> {};
template <> struct DTypeOf<std::int64_t> : DTypeTag<DType::i64> {};
template <> struct DTypeOf<std::uint64_t> : DTypeTag<DType::u64> {};
}  // namespace detail

/// The DType tag of element type T (cv-qualifiers ignored): dtype_of<float> == DType::f32.
template <class T> inline constexpr DType dtype_of = detail::DTypeOf<std::remove_cv_t<T>>::value;

}  // namespace reason
