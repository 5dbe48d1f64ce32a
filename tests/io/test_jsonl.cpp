#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "io/temp_dir.hpp"
#include "reason/io/jsonl.hpp"

using namespace reason;
using reason::test::TempDir;

TEST_CASE("JSONL round trip, blank lines skipped, CRLF accepted") {
  TempDir dir;
  const auto p = dir / "rows.jsonl";
  const std::vector<io::Json> rows = {{{"a", 1}, {"s", "x\ny\"z"}}, {{"a", -2}, {"f", 0.5}}, io::Json::object()};
  io::write_jsonl(p, rows);
  CHECK(test::slurp(p) == "{\"a\":1,\"s\":\"x\\ny\\\"z\"}\n{\"a\":-2,\"f\":0.5}\n{}\n");
  CHECK(io::read_jsonl(p) == rows);
  CHECK(dir.entry_count() == 1);

  test::spit(p, "\n{\"a\": 1}\r\n   \n\t\n{\"a\": 2}");  // no final newline either
  std::vector<std::int64_t> lines;
  io::for_each_jsonl(p, [&](const io::JsonlRecord& r) {
    lines.push_back(r.line);
    CHECK(r.get<int>("a") == int(lines.size()));
  });
  CHECK(lines == std::vector<std::int64_t>{2, 5});

  CHECK_THROWS_WITH_AS(io::write_jsonl(p, std::vector<io::Json>{io::Json::array()}),
                       doctest::Contains("row 0 is array, expected an object"), Error);
  CHECK(io::read_jsonl(p).size() == 2);  // the failed write left the old file
  CHECK(dir.entry_count() == 1);
}

TEST_CASE("malformed JSONL lines give errors naming file and line") {
  TempDir dir;
  const auto p = dir / "bad.jsonl";
  const std::string where = p.string() + ":3: ";
  auto error_of = [&](const std::string& third_line, auto&& use) {
    test::spit(p, "{\"n\": 1, \"s\": \"a\"}\n\n" + third_line + "\n{\"n\": 4}\n");
    try {
      io::for_each_jsonl(p, use);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto read_n = [](const io::JsonlRecord& r) { (void)r.get<int>("n"); };
  auto read_s = [](const io::JsonlRecord& r) { (void)r.get<std::string>("s"); };
  CHECK(error_of("{\"n\": 3", read_n).starts_with(where + "not JSON ("));
  CHECK(error_of("[1, 2]", read_n) == where + "expected a JSON object, got array");
  CHECK(error_of("7", read_n) == where + "expected a JSON object, got integer");
  CHECK(error_of("{\"m\": 3}", read_n) == where + "missing field 'n'");
  CHECK(error_of("{\"n\": \"3\"}", read_n) == where + "field 'n' is string, expected integer");
  CHECK(error_of("{\"n\": 3.5}", read_n) == where + "field 'n' is number, expected integer");
  CHECK(error_of("{\"n\": 30000000000}", read_n) == where + "field 'n' = 30000000000 does not fit the expected integer type");
  CHECK(error_of("{\"n\": 3, \"s\": 5}", read_s) == where + "field 's' is integer, expected string");
  CHECK(error_of("{\"n\": 3, \"s\": null}", read_s) == where + "field 's' is null, expected string");
  CHECK(error_of("{\"n\": 3, \"s\": \"ok\"}", read_s) == p.string() + ":4: missing field 's'");
  CHECK(error_of("{\"n\": 3}", read_n) == "no error");
  CHECK(error_of("{\"n\": 3, \"s\": \"\xff\"}", read_s).starts_with(where + "not JSON ("));
  CHECK_THROWS_WITH_AS(io::read_jsonl(dir / "missing.jsonl"),
                       doctest::Contains("missing.jsonl': No such file or directory"), Error);
}

TEST_CASE("JsonlWriter appends whole rows") {
  TempDir dir;
  const auto p = dir / "metrics.jsonl";
  {
    io::JsonlWriter w(p);
    w.write({{"step", 1}, {"loss", 2.5}});
    w.write({{"step", 2}, {"loss", 1.25}});
  }
  {
    io::JsonlWriter w(p);
    w.write({{"step", 3}});
    CHECK_THROWS_WITH_AS(w.write(io::Json("text")), doctest::Contains("row 1 is string, expected an object"), Error);
    CHECK_THROWS_WITH_AS(w.write({{"bad", "\xff"}}), doctest::Contains("cannot be serialized"), Error);
  }
  const auto rows = io::read_jsonl(p);
  REQUIRE(rows.size() == 3);
  CHECK(rows[1]["loss"] == 1.25);
  CHECK(rows[2]["step"] == 3);
}
