// reason/data/problem_json.hpp — Problems as JSON Lines: {"question","answer","difficulty","trace"}.
//
// Design rule: data sets are plain JSONL (https://jsonlines.org) a person can read and a script
// can write; loading one checks every row and names the file, line and field that is wrong
// (see reason/io/jsonl.hpp). Kept apart from arithmetic.hpp so the generator needs no JSON
// library; this header needs the reason::io component (nlohmann-json).
#pragma once

#include <filesystem>
#include <span>
#include <vector>

#include "reason/data/arithmetic.hpp"
#include "reason/io/jsonl.hpp"

namespace reason::data {

[[nodiscard]] inline io::Json problem_to_json(const Problem& p) {
  return io::Json{{"question", p.question}, {"answer", p.answer}, {"difficulty", p.difficulty}, {"trace", p.trace}};
}

/// The Problem of one JSONL record; errors name the file, line and field.
[[nodiscard]] inline Problem problem_from_json(const io::JsonlRecord& r) {
  Problem p;
  p.question = r.get<std::string>("question");
  p.answer = r.get<std::string>("answer");
  p.difficulty = r.get<int>("difficulty");
  p.trace = r.get<std::string>("trace");
  if (p.difficulty < min_level || p.difficulty > max_level)
    fail(r.where(), "field 'difficulty' is ", p.difficulty, ", expected ", min_level, "..", max_level);
  return p;
}

[[nodiscard]] inline std::vector<Problem> read_problems_jsonl(const std::filesystem::path& path) {
  std::vector<Problem> out;
  io::for_each_jsonl(path, [&](const io::JsonlRecord& r) { out.push_back(problem_from_json(r)); });
  return out;
}

/// Writes `problems` as JSONL, atomically.
inline void write_problems_jsonl(const std::filesystem::path& path, std::span<const Problem> problems) {
  std::vector<io::Json> rows;
  rows.reserve(problems.size());
  for (const Problem& p : problems) rows.push_back(problem_to_json(p));
  io::write_jsonl(path, rows);
}

}  // namespace reason::data
