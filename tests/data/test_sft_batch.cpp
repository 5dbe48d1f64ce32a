#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "reason/data/sft_batch.hpp"

using namespace reason;
using data::Tokenizer;

TEST_CASE("SFT example layout: question, <think> trace </think><answer> answer </answer><eos>") {
  const data::Problem p{"1+2=?", "3", "1+2=3:3", 1};
  const auto e = data::sft_example(p);
  CHECK(Tokenizer::decode(e.tokens) == "1+2=?<think>1+2=3:3</think><answer>3</answer><eos>");
  CHECK(e.prompt_length == 5);
  const auto prompt = data::prompt_tokens(p);
  CHECK(Tokenizer::decode(prompt) == "1+2=?<think>");
  CHECK(std::equal(prompt.begin(), prompt.end(), e.tokens.begin()));
}

TEST_CASE("SFT batch: padding, targets only on the completion") {
  const std::vector<data::Problem> ps = {{"1+2=?", "3", "1+2=3:3", 1}, {"7*x+1=8, x=?", "1", "8-1=7,7/7=1", 4}};
  const auto e0 = data::sft_example(ps[0]), e1 = data::sft_example(ps[1]);
  const index_t seq = 40;
  const data::SftBatch b = data::make_sft_batch(ps, seq);
  REQUIRE(b.batch == 2);
  REQUIRE(b.tokens.size() == 80);
  CHECK(b.lengths == std::vector<std::int32_t>{std::int32_t(e0.tokens.size()), std::int32_t(e1.tokens.size())});
  const auto tok = b.tokens_view();
  const auto tgt = b.targets_view();
  std::int64_t counted = 0;
  for (index_t r = 0; r < 2; ++r) {
    const auto& e = r == 0 ? e0 : e1;
    const auto n = index_t(e.tokens.size()), q = index_t(e.prompt_length);
    for (index_t t = 0; t < seq; ++t) {
      CAPTURE(r);
      CAPTURE(t);
      CHECK(tok(r, t) == (t < n ? e.tokens[std::size_t(t)] : Tokenizer::pad));
      const bool in_completion = t + 1 >= q && t + 1 < n;  // next token is <think>... or later
      CHECK(tgt(r, t) == (in_completion ? tok(r, t + 1) : -1));
      counted += in_completion;
    }
    CHECK(tgt(r, q - 1) == Tokenizer::think);   // the last question token predicts <think>
    CHECK(tgt(r, n - 2) == Tokenizer::eos);     // <eos> is predicted
    CHECK(tgt(r, n - 1) == -1);                 // nothing after <eos>
    CHECK(tgt(r, q - 2) == -1);                 // the prompt is not predicted
  }
  CHECK(b.target_count() == counted);
  CHECK(counted == index_t(e0.tokens.size() - e0.prompt_length + e1.tokens.size() - e1.prompt_length));

  // An example filling the sequence exactly fits; its last position has no target.
  const auto exact = data::make_sft_batch(std::span(ps).first(1), index_t(e0.tokens.size()));
  CHECK(exact.targets.back() == -1);
  CHECK(exact.tokens.back() == Tokenizer::eos);
  CHECK_THROWS_WITH_AS((void)data::make_sft_batch(ps, 20),
                       "make_sft_batch: example 1 is 29 tokens, longer than the sequence length 20 (question \"7*x+1=8, x=?\")",
                       Error);
}

TEST_CASE("parse_completion accepts the template and nothing else") {
  auto ok = data::parse_completion("<think>7*3=21</think><answer>21</answer><eos>");
  REQUIRE(ok);
  CHECK(ok->think == "7*3=21");
  CHECK(ok->answer == "21");
  ok = data::parse_completion("a</think><answer>-5</answer><eos><pad><pad>");
  REQUIRE(ok);
  CHECK(ok->think == "a");
  CHECK(ok->answer == "-5");
  CHECK(data::parse_completion("</think><answer></answer>")->answer.empty());
  for (const char* bad : {"", "7*3=21", "<think>x<answer>1</answer>", "<think>x</think>1</answer>",
                          "<think>x</think><answer>1", "<think>x</think><answer>1</answer>junk",
                          "<think>x</think> <answer>1</answer>", "<think>x</think><answer>1</answer><eos>x",
                          "<think><think>x</think><answer>1</answer>", "x</think><answer>1<answer></answer>",
                          "<think>x</think><answer>1</answer></answer>"})
    CHECK_MESSAGE(!data::parse_completion(bad), bad);
  // The round trip from a generated problem.
  const data::Problem p{"12+7*3-5=?", "28", "7*3=21,12+21=33,33-5=28", 3};
  const auto e = data::sft_example(p);
  const std::vector<std::int32_t> completion(e.tokens.begin() + std::ptrdiff_t(e.prompt_length), e.tokens.end());
  const auto c = data::parse_completion(Tokenizer::decode(completion));
  REQUIRE(c);
  CHECK(c->think == p.trace);
  CHECK(c->answer == p.answer);
}
