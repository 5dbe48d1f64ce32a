// reason/core/arena.hpp — a bump allocator over one allocation, sized up front.
//
// Design rule (llm.c): the activations a step needs are known from the shapes before the
// step runs, so they live in one buffer carved into named pieces; nothing is allocated on
// the hot path. An Arena can be run in measuring mode first (no buffer) to find the size,
// then reserved once. Asking for more than was reserved throws with the name of the piece.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "reason/core/error.hpp"
#include "reason/core/view.hpp"

namespace reason {

class Arena {
 public:
  static constexpr std::size_t alignment = 64;  // a cache line; also enough for AVX-512 loads

  /// A measuring arena: allocations only count bytes (pointers are null).
  Arena() = default;
  /// The bytes `carve(arena)` takes from an arena: a measuring pass, for reserve().
  template <class Carve>
  [[nodiscard]] static std::size_t measure(Carve&& carve) {
    Arena a;
    carve(a);
    return a.peak();
  }
  explicit Arena(std::size_t bytes) { reserve(bytes); }
  /// An arena over `bytes` of someone else's memory (a piece of another arena), which it does not
  /// own; over nullptr it measures, so a module can carve sub-pieces during the outer measuring pass.
  Arena(std::byte* external, std::size_t bytes) : base_(external), capacity_(external ? bytes : 0), measuring_(external == nullptr) {}

  /// Owns a buffer of `bytes` (rounded up to the alignment) and rewinds to empty.
  void reserve(std::size_t bytes) {
    const std::size_t rounded = round_up(bytes);
    if (rounded > capacity_) {
      buffer_.reset(static_cast<std::byte*>(::operator new[](rounded, std::align_val_t{alignment})));
      base_ = buffer_.get();
      capacity_ = rounded;
    }
    used_ = 0;
    peak_ = 0;
    measuring_ = false;
  }

  [[nodiscard]] bool measuring() const { return measuring_; }
  [[nodiscard]] std::size_t capacity() const { return capacity_; }
  [[nodiscard]] std::size_t used() const { return used_; }
  /// Largest `used()` seen since the last reserve() (reset() keeps it): in measuring mode, the size to reserve.
  [[nodiscard]] std::size_t peak() const { return peak_; }

  /// `count` elements of T, aligned; `what` names the piece in the error when it does not fit.
  template <class T>
  [[nodiscard]] T* allocate(std::size_t count, const char* what) {
    const std::size_t bytes = round_up(count * sizeof(T));
    if (!measuring_ && used_ + bytes > capacity_) [[unlikely]] {
      fail("Arena: no room for '", what, "' (", bytes, " bytes): ", used_, " of ", capacity_,
           " bytes in use; size the arena with a measuring pass first");
    }
    T* p = measuring_ ? nullptr : reinterpret_cast<T*>(base_ + used_);
    used_ += bytes;
    if (used_ > peak_) peak_ = used_;
    return p;
  }

  /// A contiguous View of shape `dims...` carved from the arena.
  template <class T, class... I>
  [[nodiscard]] View<T, static_cast<int>(sizeof...(I))> view(const char* what, I... dims) {
    std::size_t n = 1;
    ((n *= static_cast<std::size_t>(dims)), ...);
    return make_view(allocate<T>(n, what), dims...);
  }

  /// Everything allocated after `mark()` is released by `rewind(mark)`.
  [[nodiscard]] std::size_t mark() const { return used_; }
  void rewind(std::size_t mark) {
    REASON_CHECK(mark <= used_, "Arena::rewind: mark ", mark, " is past the end ", used_);
    used_ = mark;
  }
  void reset() { used_ = 0; }

 private:
  static std::size_t round_up(std::size_t b) { return (b + alignment - 1) / alignment * alignment; }

  struct Free {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{alignment}); }
  };
  std::unique_ptr<std::byte[], Free> buffer_;
  std::byte* base_ = nullptr;  // buffer_, or the external memory of a non-owning arena
  std::size_t capacity_ = 0, used_ = 0, peak_ = 0;
  bool measuring_ = true;
};

}  // namespace reason
