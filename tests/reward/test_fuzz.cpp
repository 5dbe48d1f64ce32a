// Random and mutated completions: every reward returns a finite score in its range, agrees with
// data::parse_completion and data::Tokenizer, and stays linear on megabyte-long hostile input.
#include <doctest/doctest.h>

#include <chrono>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "reason/core/philox.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/reward/all.hpp"

using namespace reason;

namespace {

using Long = reward::Overlong<reward::OverlongConfig{.max_length = 48, .cache = 16}>;
using Mix = reward::Weighted<reward::Weights{1.0f, 0.25f, 0.5f, 1.0f}, reward::Accuracy, reward::PartialFormat,
                             reward::Efficiency, Long>;

constexpr std::string_view pieces[] = {"<think>", "</think>", "<answer>", "</answer>", "<eos>", "<pad>", "<",
                                       "</",      "<answer", "</think", "think>",   ">",         "/",     "+",
                                       "-",       " ",       "0",       "28",       "\0",        "\xff",  ","};

std::string random_text(Philox& rng, std::size_t max_len) {
  std::string s;
  const std::size_t target = rng.below(static_cast<std::uint32_t>(max_len + 1));
  while (s.size() < target) {
    if (rng.below(2)) s.push_back(static_cast<char>(rng.below(256)));
    else s += pieces[rng.below(std::size(pieces))];
  }
  return s;
}

/// A valid completion with 1..4 random edits: insert/replace/delete bytes, insert tag pieces,
/// duplicate or truncate a slice.
std::string mutated(Philox& rng, const std::string& valid) {
  std::string s = valid;
  const int edits = 1 + static_cast<int>(rng.below(4));
  for (int e = 0; e < edits; ++e) {
    const std::size_t at = rng.below(static_cast<std::uint32_t>(s.size() + 1));
    switch (rng.below(6)) {
      case 0: s.insert(at, 1, static_cast<char>(rng.below(256))); break;
      case 1: if (at < s.size()) s[at] = static_cast<char>(rng.below(256)); break;
      case 2: s.erase(at, rng.below(12)); break;
      case 3: s.insert(at, pieces[rng.below(std::size(pieces))]); break;
      case 4: s.insert(at, s.substr(rng.below(static_cast<std::uint32_t>(s.size() + 1)), rng.below(16))); break;
      default: s.resize(at); break;
    }
  }
  return s;
}

/// An independent reading of an integer answer that fits in 64 bits; nullopt for anything else.
std::optional<std::int64_t> small_integer(std::string_view a) {
  const auto b = a.find_first_not_of(" \t\n\r\f\v"), e = a.find_last_not_of(" \t\n\r\f\v");
  if (b == std::string_view::npos) return std::nullopt;
  a = a.substr(b, e - b + 1);
  if (a.starts_with('+')) {
    a.remove_prefix(1);
    if (a.starts_with('-')) return std::nullopt;  // "+-5" is not a number
  }
  std::int64_t v = 0;
  const auto r = std::from_chars(a.data(), a.data() + a.size(), v);
  if (r.ec != std::errc{} || r.ptr != a.data() + a.size()) return std::nullopt;
  return v;
}

std::size_t trailing_pad_ids(const std::vector<std::int32_t>& ids) {
  std::size_t n = 0;
  while (n < ids.size() && ids[ids.size() - 1 - n] == data::Tokenizer::pad) ++n;
  return n;
}

template <class R>
bool in_range(float v) {
  return std::isfinite(v) && v >= R::min_score && v <= R::max_score;
}

struct FuzzResult {
  std::int64_t inputs = 0, failures = 0, well_formed = 0, correct = 0;
  std::string first_failure;
};

/// Scores `count` inputs (alternately random text and mutated valid completions) and checks
/// the properties; returns counts and the first failing input.
FuzzResult fuzz(std::uint64_t seed, std::int64_t count, std::size_t max_len) {
  Philox rng(seed, 0);
  std::vector<data::Problem> problems;
  std::vector<std::string> valid;
  for (int i = 0; i < 64; ++i) {
    problems.push_back(data::generate(1 + i % 4, rng));
    const auto e = data::sft_example(problems.back());
    valid.push_back(data::Tokenizer::decode(std::span(e.tokens).subspan(e.prompt_length)));
  }
  const reward::Accuracy accuracy;
  const reward::Format format;
  const reward::PartialFormat partial;
  const reward::Efficiency efficiency;
  const Long overlong;
  const Mix mix;
  FuzzResult out;
  for (std::int64_t i = 0; i < count; ++i) {
    const std::size_t k = rng.below(static_cast<std::uint32_t>(problems.size()));
    const data::Problem& p = problems[k];
    const std::string c = i % 2 ? mutated(rng, valid[k]) : random_text(rng, max_len);
    const float acc = accuracy.score(c, p), fmt = format.score(c, p), part = partial.score(c, p),
                eff = efficiency.score(c, p), ovl = overlong.score(c, p), all = mix.score(c, p);
    const auto parsed = data::parse_completion(c);
    const auto ids = data::Tokenizer::encode(c);
    std::string why;
    if (!in_range<reward::Accuracy>(acc) || (acc != 0 && acc != 1)) why = "accuracy out of range";
    else if (!in_range<reward::Format>(fmt) || (fmt != 0 && fmt != 1)) why = "format out of range";
    else if (!in_range<reward::PartialFormat>(part) || part * 4 != std::floor(part * 4)) why = "partial out of range";
    else if (!in_range<reward::Efficiency>(eff)) why = "efficiency out of range";
    else if (!in_range<Long>(ovl)) why = "overlong out of range";
    else if (!in_range<Mix>(all)) why = "weighted out of range";
    else if ((fmt == 1) != parsed.has_value()) why = "format disagrees with parse_completion";
    else if ((part == 1) != (fmt == 1)) why = "partial credit 1 without the template";
    else if (acc > fmt) why = "accuracy without the format";
    else if ((eff > 0) != (fmt == 1)) why = "efficiency without the format";
    else if (parsed && std::abs(eff - 1.0 / (1.0 + double(reward::trace_steps(parsed->think)))) > 1e-6)
      why = "efficiency disagrees with the parsed trace";
    else if (Long::length(c) != std::int64_t(ids.size() - trailing_pad_ids(ids)))
      why = "token count disagrees with Tokenizer";
    else if (std::abs(all - (acc + 0.25f * part + 0.5f * eff + ovl)) > 1e-5f) why = "weighted sum disagrees";
    else if (parsed) {
      const auto got = small_integer(parsed->answer);
      if (got && (acc == 1) != (*got == std::stoll(p.answer))) why = "accuracy disagrees with a 64-bit comparison";
    }
    out.well_formed += fmt == 1;
    out.correct += acc == 1;
    ++out.inputs;
    if (!why.empty() && out.failures++ == 0) {
      out.first_failure = why + " on \"";
      for (unsigned char ch : c)
        out.first_failure += ch >= 32 && ch < 127 ? std::string(1, char(ch)) : "\\x" + std::to_string(ch);
      out.first_failure += "\"";
    }
  }
  return out;
}

}  // namespace

TEST_CASE("reward fuzz: 10^5 random and mutated completions score finite and in range and consistently") {
  const auto r = fuzz(1, 100'000, 96);
  INFO(r.first_failure);
  CHECK(r.failures == 0);
  CHECK(r.inputs == 100'000);
  // The mutations keep a share of completions well formed and correct, so those paths are exercised.
  CHECK(r.well_formed > 1000);
  CHECK(r.correct > 500);
  MESSAGE("well formed ", r.well_formed, ", correct ", r.correct, " of ", r.inputs);
}

TEST_CASE("rewards stay linear on megabyte-long hostile completions") {
  const std::size_t n = std::size_t(2) << 20;  // 2 MB: a quadratic scan would take hours
  auto repeat = [&](std::string_view unit) {
    std::string s;
    s.reserve(n + unit.size());
    while (s.size() < n) s += unit;
    return s;
  };
  const std::string half(n / 2, '7');
  const std::vector<std::string> hostile = {
      repeat("<"), repeat("<answer"), repeat("</think>"), repeat("<answer>"), repeat("<pad>"), repeat("</answer>"),
      repeat(std::string_view("\0\xff", 2)), repeat("9"),
      "x</think><answer>" + half + "/" + half + "</answer>",          // a 2 MB fraction
      "x</think><answer>" + repeat("0") + "3/2</answer><eos>",        // 2 MB of leading zeros
      repeat(",") + "</think><answer>28</answer><eos>" + repeat("<pad>"),
  };
  const data::Problem fraction{"?", "3/2", "", 1}, big{"?", std::string(300, '7') + "/" + std::string(150, '7'), "", 1};
  const reward::Accuracy accuracy;
  const reward::PartialFormat partial;
  const reward::Efficiency efficiency;
  const Long overlong;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < hostile.size(); ++i)
    for (const data::Problem* p : {&fraction, &big}) {
      CAPTURE(i);
      const std::string& c = hostile[i];
      const float a = accuracy.score(c, *p), f = partial.score(c, *p), e = efficiency.score(c, *p),
                  o = overlong.score(c, *p);
      CHECK((a == 0 || a == 1));
      CHECK((f >= 0 && f <= 1 && e >= 0 && e <= 1));
      CHECK(o == (i == 4 ? 0.0f : -1.0f));  // only trailing <pad>s: nothing generated
    }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("scored ", hostile.size() * 2, " completions of ~2 MB with 4 rewards in ", seconds, " s");
  CHECK(seconds < 20.0);  // ~0.1 s in Release; generous for sanitizers and shared cores
  // The 2 MB of leading zeros hold the answer 3/2.
  CHECK(accuracy.score(hostile[9], fraction) == 1.0f);
  CHECK(efficiency.score(hostile[10], fraction) == doctest::Approx(1.0 / (2.0 + double(n))).epsilon(1e-6));
}

TEST_SUITE("long") {
  TEST_CASE("reward fuzz long: 10^6 inputs up to 1 KB") {
    const auto r = fuzz(2, 1'000'000, 1024);
    INFO(r.first_failure);
    CHECK(r.failures == 0);
    CHECK(r.well_formed > 10000);
  }
}
