#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "kernel_test_util.hpp"
#include "reason/kernels/embedding.hpp"

using namespace reason;
using namespace reason::kernels;
using namespace reason::test;

namespace {

constexpr index_t kN = 11, kVocab = 7, kC = 13;

/// Token ids with repeats (so the backward really scatter-adds), stored with stride `stride`.
Vec<std::int32_t> random_tokens(Philox& rng, index_t stride) {
  Vec<std::int32_t> t(kN, stride, -1);
  for (index_t n = 0; n < kN; ++n) t(n) = static_cast<std::int32_t>(rng.below(kVocab));
  t(kN - 1) = t(0);
  return t;
}

using Backward = void (*)(View<const std::int32_t, 1>, View<const double, 2>, View<double, 2>);

GradcheckResult embedding_gradcheck(Backward backward, index_t pad, Philox& rng) {
  const auto tok = random_tokens(rng, pad + 1);
  Mat<double> table(kVocab, kC, pad), out(kN, kC, pad), r(kN, kC, pad), dtable(kVocab, kC, pad);
  table.randomize(rng), r.randomize(rng), dtable.randomize(rng);
  const Mat<double> dtable0 = dtable;
  auto loss = [&] {
    embedding_forward<double>(tok.cview(), table.cview(), out.view());
    return dot(out, r);
  };
  backward(tok.cview(), r.cview(), dtable.view());
  return gradcheck(loss, table.all(), diff(dtable.buf, dtable0.buf));
}

}  // namespace

TEST_CASE_TEMPLATE("embedding: forward gathers rows and backward scatter-adds them, strided too", T, float, double) {
  Philox rng(test_seed(), 20);
  INFO("seed " << rng.seed());
  for (index_t pad : {0, 3}) {
    INFO("pad " << pad);
    const auto tok = random_tokens(rng, pad + 1);
    Mat<T> table(kVocab, kC, pad), out(kN, kC, pad), dout(kN, kC, pad), dtable(kVocab, kC, pad);
    table.randomize(rng), dout.randomize(rng), dtable.randomize(rng);
    const Mat<T> dtable0 = dtable;
    out.fill(std::numeric_limits<T>::quiet_NaN());
    embedding_forward<T>(tok.cview(), table.cview(), out.view());
    for (index_t n = 0; n < kN; ++n)
      for (index_t c = 0; c < kC; ++c) CHECK(out(n, c) == table(tok(n), c));
    CHECK(out.padding_intact());
    embedding_backward<T>(tok.cview(), dout.cview(), dtable.view());
    Mat<double> ref(kVocab, kC);
    for (index_t v = 0; v < kVocab; ++v)
      for (index_t c = 0; c < kC; ++c) ref(v, c) = double(dtable0(v, c));
    for (index_t n = 0; n < kN; ++n)
      for (index_t c = 0; c < kC; ++c) ref(tok(n), c) += double(dout(n, c));
    CHECK(max_abs_diff(dtable, ref) <= (std::is_same_v<T, float> ? 1e-5 : 1e-14));
    CHECK(dtable.padding_intact());
  }
}

TEST_CASE("embedding: backward passes central finite differences and a broken one fails") {
  Philox rng(test_seed(), 21);
  for (index_t pad : {0, 2}) {
    const auto r = embedding_gradcheck(&embedding_backward<double>, pad, rng);
    INFO("pad " << pad << " " << r.describe());
    CHECK(r.ok);
  }
  // A backward that writes (=) instead of adding (+=) for repeated tokens: drops a term.
  Backward overwrite = [](View<const std::int32_t, 1> tok, View<const double, 2> dout, View<double, 2> dtable) {
    std::vector<double> before(static_cast<std::size_t>(dtable.shape[0] * dtable.shape[1]));
    for (index_t v = 0; v < dtable.shape[0]; ++v)
      for (index_t c = 0; c < dtable.shape[1]; ++c) before[v * dtable.shape[1] + c] = dtable(v, c);
    for (index_t n = 0; n < tok.shape[0]; ++n)
      for (index_t c = 0; c < dtable.shape[1]; ++c)
        dtable(tok(n), c) = before[tok(n) * dtable.shape[1] + c] + dout(n, c);
  };
  const auto b = embedding_gradcheck(overwrite, 1, rng);
  INFO("broken: " << b.describe());
  CHECK_FALSE(b.ok);
}

TEST_CASE("embedding: the backward is the same for any split of the columns across threads") {
  // Many positions, few tokens: every row of dtable gets hundreds of adds; a parallel split
  // by position would make the float sums depend on the thread count, a split by column cannot.
  Philox rng(test_seed(), 22);
  const index_t n = 4000, vocab = 5, c = 300;
  std::vector<std::int32_t> tok(n);
  for (auto& t : tok) t = static_cast<std::int32_t>(rng.below(vocab));
  Mat<float> dout(n, c), dtable(vocab, c), serial(vocab, c);
  dout.randomize(rng);
  embedding_backward<float>(make_view<const std::int32_t>(tok.data(), n), dout.cview(), dtable.view());
  for (index_t r = 0; r < n; ++r)  // the documented order: positions 0, 1, ... in float
    for (index_t j = 0; j < c; ++j) serial(tok[r], j) += dout(r, j);
  CHECK(dtable.buf == serial.buf);
}

TEST_CASE("embedding: a token outside the vocabulary is an error naming position, token and vocabulary") {
  std::vector<float> table(kVocab * kC), out(3 * kC);
  std::vector<std::int32_t> tok = {1, 7, 2};
  auto tv = make_view<const std::int32_t>(tok.data(), 3);
  CHECK_THROWS_WITH_AS(embedding_forward<float>(tv, make_view<const float>(table.data(), kVocab, kC),
                                                make_view(out.data(), 3, kC)),
                       "embedding_forward: tokens[1] = 7 is outside the vocabulary [0, 7)", Error);
  tok = {1, 2, -3};
  CHECK_THROWS_WITH_AS(embedding_backward<float>(tv, make_view<const float>(out.data(), 3, kC),
                                                 make_view(table.data(), kVocab, kC)),
                       "embedding_backward: tokens[2] = -3 is outside the vocabulary [0, 7)", Error);
  CHECK_THROWS_WITH_AS(embedding_forward<float>(tv, make_view<const float>(table.data(), kVocab, kC),
                                                make_view(out.data(), 3, kC - 1)),
                       "embedding_forward: out: shape [3, 12], expected [3, 13]", Error);
  CHECK_THROWS_WITH_AS(embedding_backward<float>(tv, make_view<const float>(out.data(), 2, kC),
                                                 make_view(table.data(), kVocab, kC)),
                       "embedding_backward: dout: shape [2, 13], expected [3, 13]", Error);
}
