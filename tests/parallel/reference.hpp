// tests/parallel/reference.hpp — every rank's data, known to every rank, and the comparison.
//
// Rank r's data for a test is Philox(seed, stream(salt, r)): any rank can compute any other rank's
// buffer, so the expected result of a collective is computed locally from its definition — sums in
// float64 (int64 for the integer types), maxima exactly — and compared with what came back.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/philox.hpp"
#include "reason/parallel/communicator.hpp"
#include "parallel/harness.hpp"

namespace reason::test {

/// Element i of rank `rank`'s data for the test `salt`: floats in [-1, 1), int32 in [-1000, 1000],
/// int64 around +-4e15 (beyond 32 bits), any byte.
template <class T>
T datum(std::uint64_t seed, std::uint64_t salt, int rank, std::size_t i) {
  const std::uint32_t u = Philox(seed, salt * 4099 + static_cast<std::uint64_t>(rank)).at(i);
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(static_cast<double>(u >> 8) * 0x1.0p-23 - 1.0);
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    return static_cast<std::int32_t>(u % 2001) - 1000;
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    return (static_cast<std::int64_t>(u % 2000001) - 1000000) * std::int64_t{4294967311};
  } else {
    return static_cast<std::byte>(u & 0xff);
  }
}

template <class T>
std::vector<T> data(std::uint64_t seed, std::uint64_t salt, int rank, std::size_t n) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = datum<T>(seed, salt, rank, i);
  return v;
}

/// The type a reference is kept in: float64 for floating point, int64 for integers, bytes as such.
template <class T>
using Ref = std::conditional_t<std::is_floating_point_v<T>, double,
                               std::conditional_t<std::is_same_v<T, std::byte>, std::byte, std::int64_t>>;

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "int64";
  else return "byte";
}

/// The reduction over ranks 0..n-1 of element i: the definition of all_reduce.
template <class T>
Ref<T> reduce_ref(std::uint64_t seed, std::uint64_t salt, int n, std::size_t i, parallel::ReduceOp op) {
  Ref<T> acc = static_cast<Ref<T>>(datum<T>(seed, salt, 0, i));
  for (int r = 1; r < n; ++r) {
    const auto x = static_cast<Ref<T>>(datum<T>(seed, salt, r, i));
    acc = op == parallel::ReduceOp::sum ? acc + x : (x > acc ? x : acc);
  }
  return acc;
}

template <class T>
bool same(T got, Ref<T> want) {
  if constexpr (std::is_same_v<T, float>) {
    return std::abs(static_cast<double>(got) - want) <= 1e-5;  // float sums of <= 4 values in [-1, 1)
  } else if constexpr (std::is_same_v<T, double>) {
    return std::abs(got - want) <= 1e-12;
  } else {
    return static_cast<Ref<T>>(got) == want;
  }
}

template <class X>
std::string show(X x) {
  std::ostringstream os;
  if constexpr (std::is_same_v<X, std::byte>) {
    os << static_cast<int>(x);
  } else {
    os.precision(17);
    os << x;
  }
  return os.str();
}

/// Checks got[i] against want[i]; reports the first difference and how many there are.
template <class T>
void expect_equal(MpiHarness& h, std::span<const T> got, const std::vector<Ref<T>>& want, const std::string& what) {
  if (got.size() != want.size()) {
    h.check(false, what + ": " + std::to_string(got.size()) + " elements, expected " + std::to_string(want.size()));
    return;
  }
  std::size_t wrong = 0, first = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!same<T>(got[i], want[i]) && wrong++ == 0) first = i;
  if (wrong != 0)
    h.check(false, what + ": " + std::to_string(wrong) + " of " + std::to_string(got.size()) +
                       " elements wrong; the first is element " + std::to_string(first) + ": " + show(got[first]) +
                       ", expected " + show(want[first]));
}

/// Runs f(std::type_identity<T>{}) for each T.
template <class... Ts, class F>
void for_types(F&& f) {
  (f(std::type_identity<Ts>{}), ...);
}

}  // namespace reason::test
