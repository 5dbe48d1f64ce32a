// reason/core/philox.hpp — the Philox4x32-10 counter-based random number generator.
//
// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11 (Random123).
// A counter-based generator has no hidden state: value i of stream s under seed k is
// block(counter = {i/4 as 64 bits, s as 64 bits}, key = k)[i % 4]. So a (seed, stream, offset)
// triple reproduces any stretch of any stream on the host, on a GPU thread or in another
// process, and a checkpoint stores three integers. The counter layout is cuRAND's
// (curand_init(seed, subsequence, offset)): low 64 bits count blocks, high 64 bits name the stream.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>

#include "reason/core/host_device.hpp"

namespace reason {

/// N 32-bit words. Not std::array: its accessors are host-only constexpr functions, which nvcc
/// refuses to call from device code without --expt-relaxed-constexpr.
template <int N>
struct Words32 {
  std::uint32_t w[N];
  REASON_HOST_DEVICE constexpr std::uint32_t& operator[](std::size_t i) { return w[i]; }
  REASON_HOST_DEVICE constexpr const std::uint32_t& operator[](std::size_t i) const { return w[i]; }
  friend constexpr bool operator==(const Words32&, const Words32&) = default;
};

struct Philox4x32 {
  using Counter = Words32<4>;
  using Key = Words32<2>;

  static constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // round multipliers
  static constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // Weyl key increments
  static constexpr int rounds = 10;

  /// The 128-bit output block for one counter under one key.
  REASON_HOST_DEVICE static constexpr Counter block(Counter c, Key k) {
    for (int r = 0; r < rounds; ++r) {
      if (r > 0) {
        k[0] += W0;
        k[1] += W1;
      }
      const std::uint64_t p0 = std::uint64_t{M0} * c[0];
      const std::uint64_t p1 = std::uint64_t{M1} * c[2];
      const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
      const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
      c = Counter{hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    }
    return c;
  }
};

/// A stream of 32-bit random values: (seed, stream) chooses it, offset counts values drawn.
class Philox {
 public:
  constexpr Philox() = default;
  REASON_HOST_DEVICE constexpr explicit Philox(std::uint64_t seed, std::uint64_t stream = 0, std::uint64_t offset = 0)
      : seed_(seed), stream_(stream), offset_(offset) {}

  [[nodiscard]] REASON_HOST_DEVICE constexpr std::uint64_t seed() const { return seed_; }
  [[nodiscard]] REASON_HOST_DEVICE constexpr std::uint64_t stream() const { return stream_; }
  /// Number of 32-bit values drawn so far: with seed and stream, the whole state.
  [[nodiscard]] REASON_HOST_DEVICE constexpr std::uint64_t offset() const { return offset_; }
  REASON_HOST_DEVICE constexpr void skip(std::uint64_t n) { offset_ += n; }

  /// Value `i` of this stream, without moving the offset.
  [[nodiscard]] REASON_HOST_DEVICE constexpr std::uint32_t at(std::uint64_t i) const {
    const std::uint64_t blk = i / 4;
    const auto out = Philox4x32::block(
        {static_cast<std::uint32_t>(blk), static_cast<std::uint32_t>(blk >> 32),
         static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)},
        {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)});
    return out[i % 4];
  }

  REASON_HOST_DEVICE constexpr std::uint32_t next_u32() { return at(offset_++); }
  REASON_HOST_DEVICE constexpr std::uint64_t next_u64() {
    const std::uint64_t lo = next_u32();
    return lo | (std::uint64_t{next_u32()} << 32);
  }
  /// Uniform in [0, 1) with 24 random bits (every value exactly representable in float).
  REASON_HOST_DEVICE constexpr float uniform() { return static_cast<float>(next_u32() >> 8) * 0x1.0p-24f; }
  /// Uniform in [0, 1) with 53 random bits.
  REASON_HOST_DEVICE constexpr double uniform_double() {
    return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  }
  /// Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject). n must be > 0.
  REASON_HOST_DEVICE constexpr std::uint32_t below(std::uint32_t n) {
    std::uint64_t m = std::uint64_t{next_u32()} * n;
    auto low = static_cast<std::uint32_t>(m);
    if (low < n) {
      const std::uint32_t threshold = static_cast<std::uint32_t>(-n) % n;
      while (low < threshold) {
        m = std::uint64_t{next_u32()} * n;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return static_cast<std::uint32_t>(m >> 32);
  }
  /// Standard normal by Box–Muller from two 32-bit draws (always exactly two).
  REASON_HOST_DEVICE double normal() {
    const double u1 = (static_cast<double>(next_u32()) + 1.0) * 0x1.0p-32;  // (0, 1]
    const double u2 = static_cast<double>(next_u32()) * 0x1.0p-32;          // [0, 1)
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::uint64_t seed_ = 0, stream_ = 0, offset_ = 0;
};

}  // namespace reason
