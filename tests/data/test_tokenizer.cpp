#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "reason/core/philox.hpp"
#include "reason/data/tokenizer.hpp"

using namespace reason;
using data::Tokenizer;

TEST_CASE("Tokenizer: bytes are ids 0..255, specials follow") {
  CHECK(Tokenizer::vocab_size == 262);
  CHECK(Tokenizer::think == 256);
  CHECK(Tokenizer::end_think == 257);
  CHECK(Tokenizer::answer == 258);
  CHECK(Tokenizer::end_answer == 259);
  CHECK(Tokenizer::eos == 260);
  CHECK(Tokenizer::pad == 261);
  CHECK(Tokenizer::encode("A1") == std::vector<std::int32_t>{65, 49});
  CHECK(Tokenizer::encode("") .empty());
  CHECK(Tokenizer::token_text(Tokenizer::end_answer) == "</answer>");
  CHECK_THROWS_WITH_AS((void)Tokenizer::token_text(262), "Tokenizer: token id 262 out of range [0, 262)", Error);
}

TEST_CASE("Tokenizer: special tokens embedded in text round trip") {
  const std::string text = "1+2=?<think>2+1=3</think><answer>3</answer><eos><pad><pad>";
  const auto ids = Tokenizer::encode(text);
  const std::vector<std::int32_t> want = {'1', '+', '2', '=', '?', 256, '2', '+', '1', '=', '3', 257, 258, '3', 259, 260, 261, 261};
  CHECK(ids == want);
  CHECK(Tokenizer::decode(ids) == text);
  // Near misses stay bytes.
  const std::string near = "<think</think<answer ><eos<<pad>>";
  const auto nids = Tokenizer::encode(near);
  CHECK(Tokenizer::decode(nids) == near);
  CHECK(std::count(nids.begin(), nids.end(), Tokenizer::pad) == 1);
  CHECK(nids.size() == near.size() - 4);
  CHECK_THROWS_WITH_AS((void)Tokenizer::decode(std::vector<std::int32_t>{1, -3}),
                       "Tokenizer::decode: token id -3 at position 1 out of range [0, 262)", Error);
}

TEST_CASE("Tokenizer: arbitrary bytes incl. NUL and invalid UTF-8 round trip") {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto ids = Tokenizer::encode(all);
  REQUIRE(ids.size() == 256);
  for (int b = 0; b < 256; ++b) CHECK(ids[b] == b);
  CHECK(Tokenizer::decode(ids) == all);

  Philox rng(7);
  const char* pieces[] = {"<think>", "</think>", "<answer>", "</answer>", "<eos>", "<pad>", "<", ">", "/"};
  for (int trial = 0; trial < 500; ++trial) {
    std::string s;
    const int n = int(rng.below(40));
    for (int i = 0; i < n; ++i) {
      if (rng.below(4) == 0) s += pieces[rng.below(9)];
      else s.push_back(static_cast<char>(rng.below(256)));
    }
    const auto t = Tokenizer::encode(s);
    CHECK(Tokenizer::decode(t) == s);
    CHECK(Tokenizer::encode(Tokenizer::decode(t)) == t);
  }
}
