#include <doctest/doctest.h>

#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/temp_dir.hpp"
#include "reason/io/atomic_file.hpp"

using namespace reason;
using reason::test::TempDir;

TEST_CASE("write_file_atomic writes, replaces and leaves no temporary behind") {
  TempDir dir;
  const auto p = dir / "a.bin";
  io::write_file_atomic(p, std::string_view("hello"));
  CHECK(test::slurp(p) == "hello");
  const std::vector<std::byte> bytes = {std::byte{0}, std::byte{0xff}, std::byte{'x'}};
  io::write_file_atomic(p, bytes);
  CHECK(io::read_file_bytes(p) == bytes);
  io::write_file_atomic(p, [](io::AtomicWriter& w) {
    w.write(std::string_view("ab"));
    w.write(std::string_view("cd"));
    CHECK(w.bytes_written() == 4);
  });
  CHECK(test::slurp(p) == "abcd");
  io::write_file_atomic(p, std::string_view(""));
  CHECK(test::slurp(p).empty());
  CHECK(dir.entry_count() == 1);
}

TEST_CASE("write_file_atomic keeps the old file when the writer throws") {
  TempDir dir;
  const auto p = dir / "keep.txt";
  io::write_file_atomic(p, std::string_view("old"));
  CHECK_THROWS_WITH_AS(io::write_file_atomic(p,
                                             [](io::AtomicWriter& w) {
                                               w.write(std::string_view("half of the new"));
                                               fail("writer gave up");
                                             }),
                       "writer gave up", Error);
  CHECK(test::slurp(p) == "old");
  CHECK(dir.entry_count() == 1);
}

TEST_CASE("write_file_atomic errors name the path and the system error") {
  TempDir dir;
  const auto missing = dir / "no_such_dir" / "x.bin";
  const std::string want = missing.string() + "'): No such file or directory";
  CHECK_THROWS_WITH_AS(io::write_file_atomic(missing, std::string_view("x")), doctest::Contains(want.c_str()), Error);
  // Renaming a file over a non-empty directory fails: the temporary must be cleaned up.
  std::filesystem::create_directories(dir / "occupied" / "inside");
  CHECK_THROWS_WITH_AS(io::write_file_atomic(dir / "occupied", std::string_view("x")),
                       doctest::Contains("cannot rename"), Error);
  CHECK(dir.entry_count() == 1);
  CHECK_THROWS_WITH_AS(io::read_file_bytes(dir / "nothing"), doctest::Contains("nothing': No such file"), Error);
}

TEST_CASE("LineLog appends whole lines, also from several writers at once") {
  TempDir dir;
  const auto p = dir / "log.txt";
  {
    io::LineLog log(p);
    log.append("first");
    log.append("");
    CHECK_THROWS_WITH_AS(log.append("two\nlines"), doctest::Contains("must not contain"), Error);
    log.sync();
  }
  {
    io::LineLog again(p);  // reopening appends
    again.append("second");
  }
  CHECK(test::slurp(p) == "first\n\nsecond\n");

  const auto q = dir / "shared.txt";
  constexpr int writers = 4, lines = 300;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w)
    threads.emplace_back([&, w] {
      io::LineLog log(q);
      for (int i = 0; i < lines; ++i) log.append("w" + std::to_string(w) + " i" + std::to_string(i) + " " + std::string(200, char('a' + w)));
    });
  for (auto& t : threads) t.join();
  std::istringstream in(test::slurp(q));
  std::set<std::string> seen;
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    ++count;
    const auto sp = line.find(' ', 0);
    const auto sp2 = line.find(' ', sp + 1);
    REQUIRE(sp2 != std::string::npos);
    const int w = line[1] - '0';
    CHECK(line.substr(sp2 + 1) == std::string(200, char('a' + w)));
    seen.insert(line.substr(0, sp2));
  }
  CHECK(count == writers * lines);
  CHECK(seen.size() == std::size_t(writers * lines));
  CHECK_THROWS_WITH_AS(io::LineLog(dir / "no" / "log"), doctest::Contains("No such file or directory"), Error);
}
