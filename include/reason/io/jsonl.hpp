// reason/io/jsonl.hpp — JSON Lines: one JSON object per line (https://jsonlines.org).
//
// Design rule: a data file with one bad line out of a million must say *which* line and what
// is wrong with it — "problems.jsonl:4127: field 'answer' is number, expected string" — not
// "parse error". Reading goes line by line; blank lines are skipped; each line must be a JSON
// object (RFC 8259). Fields are taken through JsonlRecord, whose accessors name the file, the
// 1-based line and the field. Writing a whole file goes through write_file_atomic (all lines or
// none); an appending JsonlWriter (for metrics) emits each row as one whole line via LineLog.
// Needs nlohmann-json (CMake component reason::io).
#pragma once

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "reason/core/error.hpp"
#include "reason/io/atomic_file.hpp"

namespace reason::io {

using Json = nlohmann::json;

namespace detail {
inline std::string_view json_kind(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "object";
    case Json::value_t::array: return "array";
    case Json::value_t::string: return "string";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "integer";
    case Json::value_t::number_float: return "number";
    default: return "binary";
  }
}
template <class T>
constexpr std::string_view json_kind_of() {
  if constexpr (std::is_same_v<T, bool>) return "boolean";
  else if constexpr (std::is_integral_v<T>) return "integer";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else if constexpr (std::is_convertible_v<T, std::string_view>) return "string";
  else return "value";
}
}  // namespace detail

/// One object of a JSONL file with where it came from; field accessors name file, line, field.
struct JsonlRecord {
  const Json& object;
  const std::filesystem::path& file;
  std::int64_t line;  // 1-based

  /// "file:line: " — the prefix of every message about this record.
  [[nodiscard]] std::string where() const { return file.string() + ":" + std::to_string(line) + ": "; }

  [[nodiscard]] bool has(std::string_view field) const { return object.contains(field); }

  /// The value of `field` as T (std::string, bool, an integer or floating type). Throws naming
  /// the file, line and field when it is missing, has another JSON type, or an integer does not fit T.
  template <class T>
  [[nodiscard]] T get(std::string_view field) const {
    static_assert(std::is_arithmetic_v<T> || std::is_same_v<T, std::string>,
                  "JsonlRecord::get<T>: T must be bool, an integer, a floating type or std::string");
    const auto it = object.find(field);
    if (it == object.end()) fail(where(), "missing field '", field, "'");
    const Json& v = *it;
    bool ok;
    if constexpr (std::is_same_v<T, bool>) ok = v.is_boolean();
    else if constexpr (std::is_integral_v<T>) ok = v.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>) ok = v.is_number();
    else ok = v.is_string();
    if (!ok) fail(where(), "field '", field, "' is ", detail::json_kind(v), ", expected ", detail::json_kind_of<T>());
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      const bool fits = v.is_number_unsigned()
                            ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())
                            : (v.get<std::int64_t>() >= static_cast<std::int64_t>(std::numeric_limits<T>::min()) &&
                               (std::is_unsigned_v<T> ||
                                v.get<std::int64_t>() <= static_cast<std::int64_t>(std::numeric_limits<T>::max())));
      if (!fits) fail(where(), "field '", field, "' = ", v.dump(), " does not fit the expected integer type");
    }
    try {
      return v.get<T>();
    } catch (const Json::exception& e) {
      fail(where(), "field '", field, "': ", e.what());
    }
  }
};

/// Calls `f(const JsonlRecord&)` for each non-blank line of `path`, in order. Throws
/// reason::Error "path:line: ..." for a line that is not JSON or not a JSON object; errors
/// thrown by `f` propagate unchanged (use JsonlRecord's accessors so they name the line too).
template <class F>
void for_each_jsonl(const std::filesystem::path& path, F&& f) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open JSONL file '", path.string(), "': ", detail::errno_text(errno));
  std::string text;
  std::int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    Json j;
    try {
      j = Json::parse(text);
    } catch (const Json::parse_error& e) {
      fail(path.string(), ":", line, ": not JSON (", e.what(), ")");
    }
    if (!j.is_object()) fail(path.string(), ":", line, ": expected a JSON object, got ", detail::json_kind(j));
    f(JsonlRecord{j, path, line});
  }
  if (in.bad()) fail("reading JSONL file '", path.string(), "' failed after line ", line);
}

/// All objects of a JSONL file (see for_each_jsonl for the errors).
inline std::vector<Json> read_jsonl(const std::filesystem::path& path) {
  std::vector<Json> rows;
  for_each_jsonl(path, [&](const JsonlRecord& r) { rows.push_back(r.object); });
  return rows;
}

/// `text` with every byte that is not part of a valid UTF-8 sequence (RFC 3629: no overlongs,
/// no surrogates, nothing above U+10FFFF) replaced by U+FFFD, so model output of arbitrary
/// bytes can go into a JSON log. Valid text is returned unchanged.
inline std::string utf8_sanitized(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    bool ok = len > 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      const unsigned char b = s[i + k];
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

/// One row as one line: compact JSON; invalid UTF-8 in a string is an error naming the row.
inline std::string jsonl_line(const Json& row, std::string_view file, std::size_t index) {
  if (!row.is_object()) fail("JSONL '", file, "': row ", index, " is ", detail::json_kind(row), ", expected an object");
  try {
    return row.dump();
  } catch (const Json::exception& e) {
    fail("JSONL '", file, "': row ", index, " cannot be serialized: ", e.what());
  }
}

/// Writes `rows` (objects) as a JSONL file, atomically: all lines or, on error, the old file.
inline void write_jsonl(const std::filesystem::path& path, std::span<const Json> rows) {
  write_file_atomic(path, [&](AtomicWriter& w) {
    std::string buf;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      buf += jsonl_line(rows[i], path.string(), i);
      buf += '\n';
      if (buf.size() >= (1u << 20)) {
        w.write(buf);
        buf.clear();
      }
    }
    w.write(buf);
  });
}

/// Appends rows to a JSONL file (metrics): each row one compact line, one write(2).
class JsonlWriter {
 public:
  explicit JsonlWriter(const std::filesystem::path& path) : log_(path) {}
  void write(const Json& row) { log_.append(jsonl_line(row, log_.path().string(), rows_++)); }
  void sync() { log_.sync(); }
  [[nodiscard]] const std::filesystem::path& path() const { return log_.path(); }

 private:
  LineLog log_;
  std::size_t rows_ = 0;
};

}  // namespace reason::io
