// ParamLayout::slice: the tensors a range of the flat buffer overlaps, cut to the overlap, keep their
// flags; an element-wise optimizer stepping over every slice of a partition equals one whole step.
#include <doctest/doctest.h>

#include <cstring>
#include <span>
#include <vector>

#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/optim/adamw.hpp"

using namespace reason;

TEST_CASE("ParamLayout::slice cuts the overlapped tensors and keeps their flags") {
  ParamLayout l;
  l.add("w", {3, 4}, Init::normal, 0.1);  // [0, 12), decays
  l.add("g", {5}, Init::ones);            // [12, 17), no decay
  l.add_buffer("bias", {2}, Init::zeros); // [17, 19), not trainable
  const ParamLayout s = l.slice(10, 8);   // [10, 18)
  REQUIRE(s.size() == 8);
  REQUIRE(s.params().size() == 3);
  CHECK(s.params()[0].name == "w[10:12]");
  CHECK(s.params()[0].offset == 0);
  CHECK(s.params()[0].numel == 2);
  CHECK(s.params()[0].decay);
  CHECK(s.params()[1].name == "g[0:5]");
  CHECK(s.params()[1].offset == 2);
  CHECK(!s.params()[1].decay);
  CHECK(s.params()[2].name == "bias[0:1]");
  CHECK(s.params()[2].offset == 7);
  CHECK(!s.params()[2].trainable);
  CHECK(l.slice(19, 0).params().empty());
  CHECK_THROWS_WITH_AS(l.slice(15, 5), doctest::Contains("[15, 20) is outside the layout of 19 elements"), Error);
}

TEST_CASE("AdamW over the slices of a partition equals AdamW over the whole layout") {
  ParamLayout l;
  l.add("a", {7, 3}, Init::normal, 0.5);
  l.add("b", {4}, Init::ones);
  l.add_buffer("c", {3}, Init::zeros);
  l.add("d", {2, 5}, Init::normal, 0.5);
  const std::size_t n = l.size();
  std::vector<float> p(n), g(n), st(2 * n, 0.0f);
  l.initialize(std::span<float>(p), 4);
  Philox rng(8, 0);
  for (auto& x : g) x = static_cast<float>(rng.normal());
  std::vector<float> whole_p = p, whole_st = st;
  const optim::AdamW opt{};
  opt.step(l, std::span<float>(whole_p), std::span<const float>(g), std::span<float>(whole_st), 1e-2, 1);
  for (std::size_t first = 0; first < n; first += 10) {  // shards of 10 elements, the last shorter
    const std::size_t count = std::min<std::size_t>(10, n - first);
    std::vector<float> shard_state(2 * count, 0.0f);
    opt.step(l.slice(first, count), std::span<float>(p).subspan(first, count),
             std::span<const float>(g).subspan(first, count), std::span<float>(shard_state), 1e-2, 1);
    std::copy_n(shard_state.begin(), count, st.begin() + static_cast<std::ptrdiff_t>(first));
    std::copy_n(shard_state.begin() + static_cast<std::ptrdiff_t>(count), count,
                st.begin() + static_cast<std::ptrdiff_t>(n + first));
  }
  CHECK(std::memcmp(p.data(), whole_p.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(st.data(), whole_st.data(), 2 * n * sizeof(float)) == 0);
}
