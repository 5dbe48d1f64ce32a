#include <doctest/doctest.h>

#include <atomic>
#include <vector>

#include "reason/core/arena.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

using namespace reason;

TEST_CASE("View: strides, indexing, slices and shape errors") {
  std::vector<float> buf(24);
  for (int i = 0; i < 24; ++i) buf[i] = float(i);
  auto v = make_view(buf.data(), 2, 3, 4);
  CHECK(v.is_contiguous());
  CHECK(v.numel() == 24);
  CHECK(v(1, 2, 3) == 23.0f);
  CHECK(v[1](0, 1) == 13.0f);
  auto s = v.slice(2, 1, 3);  // [2, 3, 2], strided
  CHECK_FALSE(s.is_contiguous());
  CHECK(s(1, 1, 0) == 17.0f);
  View<const float, 3> c = v;
  CHECK(c(0, 0, 1) == 1.0f);
  CHECK_NOTHROW(expect_shape(v, "x", {2, 3, 4}));
  CHECK_THROWS_WITH_AS(expect_shape(v, "x", {2, 4, 4}), "x: shape [2, 3, 4], expected [2, 4, 4]", Error);
  View<float, 2> t(buf.data(), {4, 3}, {1, 4});  // a transposed view
  CHECK_THROWS_WITH_AS(expect_unit_inner_stride(t, "wT"), "wT: innermost stride 4, expected 1 (shape [4, 3])", Error);
}

TEST_CASE("Arena: a measuring pass sizes the real one, overflow names the piece") {
  Arena measure;
  CHECK(measure.measuring());
  (void)measure.allocate<float>(10, "a");
  (void)measure.allocate<double>(3, "b");
  CHECK(measure.peak() == 128);  // each piece rounded to 64 bytes

  Arena arena(measure.peak());
  float* a = arena.allocate<float>(10, "a");
  double* b = arena.allocate<double>(3, "b");
  CHECK(reinterpret_cast<std::uintptr_t>(a) % Arena::alignment == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b) % Arena::alignment == 0);
  CHECK(reinterpret_cast<std::byte*>(b) - reinterpret_cast<std::byte*>(a) == 64);
  CHECK_THROWS_WITH_AS((void)arena.allocate<float>(1, "extra"),
                       doctest::Contains("no room for 'extra'"), Error);
  const auto m = arena.mark();
  arena.rewind(m);
  arena.reset();
  auto v = arena.view<float>("v", 4, 8);
  CHECK(v.shape == std::array<index_t, 2>{4, 8});
  CHECK_THROWS_AS(arena.rewind(arena.used() + 64), Error);
}

TEST_CASE("parallel_for covers every index once, rethrows, and nests") {
  std::vector<std::atomic<int>> hits(1000);
  parallel_for(1000, 1, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) hits[i]++;
    parallel_for(10, 1, [](index_t, index_t) {});  // nested: runs serially, no deadlock
  });
  for (auto& h : hits) CHECK(h.load() == 1);
  CHECK_THROWS_AS(parallel_for(100, 1, [](index_t b, index_t) {
                    if (b > 0) fail("boom");
                  }),
                  Error);
}
