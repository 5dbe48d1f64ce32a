#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "io/temp_dir.hpp"
#include "reason/data/problem_json.hpp"

using namespace reason;
using reason::test::TempDir;

TEST_CASE("problems JSONL round trip") {
  TempDir dir;
  const auto p = dir / "problems.jsonl";
  std::vector<data::Problem> ps;
  Philox rng(8);
  for (int level = 1; level <= 4; ++level)
    for (int i = 0; i < 25; ++i) ps.push_back(data::generate(level, rng));
  data::write_problems_jsonl(p, ps);
  CHECK(data::read_problems_jsonl(p) == ps);
  CHECK(test::slurp(p).starts_with("{\"answer\":\"" + ps[0].answer + "\",\"difficulty\":1,\"question\":\""));
  CHECK(dir.entry_count() == 1);
}

TEST_CASE("malformed problem lines name the file, line and field") {
  TempDir dir;
  const auto p = dir / "bad.jsonl";
  const std::string good = R"({"question":"1+1=?","answer":"2","difficulty":1,"trace":"1+1=2:2"})";
  auto error_of = [&](const std::string& line) {
    test::spit(p, good + "\n" + good + "\n\n" + line + "\n");
    try {
      (void)data::read_problems_jsonl(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string where = p.string() + ":4: ";
  CHECK(error_of(good) == "no error");
  CHECK(error_of(R"({"question":"1+1=?","answer":"2","difficulty":1)").starts_with(where + "not JSON ("));
  CHECK(error_of(R"({"question":"1+1=?","answer":"2","difficulty":1})") == where + "missing field 'trace'");
  CHECK(error_of(R"({"question":"1+1=?","answer":2,"difficulty":1,"trace":""})") ==
        where + "field 'answer' is integer, expected string");
  CHECK(error_of(R"({"question":"1+1=?","answer":"2","difficulty":"1","trace":""})") ==
        where + "field 'difficulty' is string, expected integer");
  CHECK(error_of(R"({"question":"1+1=?","answer":"2","difficulty":9,"trace":""})") ==
        where + "field 'difficulty' is 9, expected 1..4");
  CHECK(error_of(R"(["question"])") == where + "expected a JSON object, got array");
}
