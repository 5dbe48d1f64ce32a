#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "io/temp_dir.hpp"
#include "reason/core/philox.hpp"
#include "reason/io/safetensors.hpp"

using namespace reason;
using reason::test::TempDir;

namespace {

std::vector<std::byte> to_bytes(std::string_view s) {
  std::vector<std::byte> v(s.size());
  if (!s.empty()) std::memcpy(v.data(), s.data(), s.size());
  return v;
}

/// A file from a header text and a data buffer, with the header length field set to `n`
/// (default: the header's true length).
std::vector<std::byte> file_bytes(std::string_view header, std::string_view data, std::uint64_t n = ~0ull) {
  if (n == ~0ull) n = header.size();
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  s += header;
  s += data;
  return to_bytes(s);
}

io::SafetensorsFile parse(std::string_view header, std::string_view data) {
  return io::SafetensorsFile::parse(file_bytes(header, data), "t.safetensors");
}

std::string error_of(std::string_view header, std::string_view data) {
  try {
    (void)parse(header, data);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("safetensors round trip of several dtypes, shapes and metadata") {
  TempDir dir;
  const auto path = dir / "m.safetensors";
  const std::vector<float> w = {1, 2, 3, 4, 5, -6.5f};
  const std::vector<std::int64_t> ids = {-1, 0, 1ll << 40, 7};
  const std::vector<double> d = {0.25, -1e300};
  const std::vector<std::uint8_t> u = {200};
  const std::vector<std::uint16_t> bf = {0x3f80, 0xc000, 0x0001};  // raw BF16 bits
  const std::vector<io::SafetensorsEntry> entries = {
      io::safetensors_entry<float>("layer.w", w, {2, 3}),
      io::safetensors_entry<std::int64_t>("ids", ids, {4}),
      io::safetensors_entry<double>("d", d, {1, 1, 2}),
      io::safetensors_entry<std::uint8_t>("scalar", u, {}),
      {"bf", DType::bf16, {3}, std::as_bytes(std::span(bf))},
      io::safetensors_entry<float>("empty", std::span<const float>(), {0, 5}),
  };
  io::write_safetensors(path, entries, {{"format", "pt"}, {"step", "12"}, {"ünï", "cödé"}});
  CHECK(dir.entry_count() == 1);

  const auto f = io::SafetensorsFile::open(path);
  REQUIRE(f.size() == entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {  // laid out in the order given
    CHECK(f.tensors()[i].name == entries[i].name);
    CHECK(f.tensors()[i].dtype == entries[i].dtype);
    CHECK(f.tensors()[i].shape == entries[i].shape);
  }
  CHECK(f.metadata().at("step") == "12");
  CHECK(f.metadata().at("ünï") == "cödé");
  CHECK(f.metadata().size() == 3);
  std::uint64_t n = 0;
  std::memcpy(&n, io::read_file_bytes(path).data(), 8);
  CHECK(n % 8 == 0);

  std::vector<float> w2(6);
  f.read_into<float>("layer.w", w2);
  CHECK(w2 == w);
  std::vector<std::int64_t> ids2(4);
  f.read_into<std::int64_t>("ids", ids2);
  CHECK(ids2 == ids);
  std::vector<double> d2(2);
  f.read_into<double>("d", d2);
  CHECK(d2 == d);
  std::uint8_t u2 = 0;
  f.read_into<std::uint8_t>("scalar", std::span(&u2, 1));
  CHECK(u2 == 200);
  CHECK(f.at("scalar").numel() == 1);
  const auto bb = f.bytes("bf");
  REQUIRE(bb.size() == 6);
  CHECK(std::memcmp(bb.data(), bf.data(), 6) == 0);
  CHECK(f.at("empty").nbytes() == 0);

  CHECK_NOTHROW(f.expect("layer.w", DType::f32, {2, 3}));
  CHECK_THROWS_WITH_AS(f.expect("layer.w", DType::bf16, {3, 2}),
                       (path.string() + ": tensor 'layer.w': got F32 [2, 3], expected BF16 [3, 2]").c_str(), Error);
  CHECK_THROWS_WITH_AS(f.expect("nope", DType::f32, {1}), doctest::Contains("no tensor 'nope'"), Error);
  CHECK_THROWS_WITH_AS(f.read_into<double>("layer.w", d2), doctest::Contains("tensor 'layer.w' is F32, read as F64"), Error);
  CHECK_THROWS_WITH_AS(f.read_into<float>("layer.w", std::span(w2).first(5)),
                       doctest::Contains("has 6 elements, destination has 5"), Error);
}

TEST_CASE("safetensors writer matches the reference writer byte for byte") {
  // What huggingface/safetensors writes for {"w": float32 [1.0, -2.5]}, metadata {"format": "pt"}:
  // compact JSON, __metadata__ first, keys dtype/shape/data_offsets, padded with spaces to 8.
  const std::string header = R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"
                             "   ";  // 85 + 3 = 88 bytes
  REQUIRE(header.size() == 88);
  std::string expected("\x58\0\0\0\0\0\0\0", 8);
  expected += header;
  expected += std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8);  // 1.0f, -2.5f little-endian

  const std::vector<float> w = {1.0f, -2.5f};
  const std::vector<io::SafetensorsEntry> entries = {io::safetensors_entry<float>("w", w, {2})};
  const auto bytes = io::safetensors_bytes(entries, {{"format", "pt"}});
  CHECK(bytes == to_bytes(expected));

  TempDir dir;
  io::write_safetensors(dir / "w.safetensors", entries, {{"format", "pt"}});
  CHECK(test::slurp(dir / "w.safetensors") == expected);

  const auto f = io::SafetensorsFile::parse(to_bytes(expected), "ref");
  std::vector<float> got(2);
  f.expect("w", DType::f32, {2});
  f.read_into<float>("w", got);
  CHECK(got == w);
  CHECK(f.metadata().at("format") == "pt");
  // Without metadata the reference omits "__metadata__".
  const auto plain = io::safetensors_header(entries);
  CHECK(std::string(reinterpret_cast<const char*>(plain.data()) + 8, plain.size() - 8) ==
        R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"
        "  ");  // 54 + 2
}

TEST_CASE("safetensors reader rejects every truncation of a file") {
  const std::vector<float> a = {1, 2, 3}, b = {4};
  const std::vector<io::SafetensorsEntry> entries = {io::safetensors_entry<float>("a", a, {3}),
                                                     io::safetensors_entry<float>("b", b, {1})};
  const auto full = io::safetensors_bytes(entries, {{"k", "v"}});
  CHECK_NOTHROW((void)io::SafetensorsFile::parse(full, "t.safetensors"));
  std::uint64_t n = 0;
  std::memcpy(&n, full.data(), 8);
  for (std::size_t len = 0; len < full.size(); ++len) {
    CAPTURE(len);
    const std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
    std::string msg;
    try {
      (void)io::SafetensorsFile::parse(cut, "t.safetensors");
      msg = "no error";
    } catch (const Error& e) {
      msg = e.what();
    }
    CHECK(msg.starts_with("t.safetensors: "));
    if (len < 8) CHECK(msg.find("shorter than the 8-byte header length") != std::string::npos);
    else if (len < 8 + n) CHECK(msg.find("runs past the end of the file") != std::string::npos);
    else CHECK(msg.find("tensor") != std::string::npos);
  }
}

TEST_CASE("safetensors reader survives corrupted header bytes") {
  const std::vector<float> a = {1, 2};
  const std::vector<io::SafetensorsEntry> entries = {io::safetensors_entry<float>("a", a, {2})};
  const auto full = io::safetensors_bytes(entries, {{"k", "v"}});
  std::uint64_t n = 0;
  std::memcpy(&n, full.data(), 8);
  int rejected = 0;
  for (std::size_t i = 8; i < 8 + n; ++i)
    for (int v : {0, int('}'), int('"'), int('9'), 0xff, int(' ')}) {
      auto bad = full;
      if (bad[i] == std::byte(v)) continue;
      bad[i] = std::byte(v);
      try {
        const auto f = io::SafetensorsFile::parse(bad, "c.st");
        CHECK(f.size() <= 1);  // some edits stay valid (inside the metadata value, padding)
      } catch (const Error& e) {
        CHECK(std::string(e.what()).starts_with("c.st: "));
        ++rejected;
      }
    }
  CHECK(rejected > 100);

  // Random 1-4 byte mutations anywhere, the length field included: a clean Error or a valid file.
  Philox rng(17);
  int random_rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto bad = full;
    const int edits = 1 + int(rng.below(4));
    for (int k = 0; k < edits; ++k) bad[rng.below(std::uint32_t(bad.size()))] = std::byte(rng.below(256));
    try {
      const auto f = io::SafetensorsFile::parse(bad, "r.st");
      for (const auto& t : f.tensors()) CHECK(t.end <= f.data().size());
    } catch (const Error& e) {
      CHECK(std::string(e.what()).starts_with("r.st: "));
      ++random_rejected;
    }
  }
  CHECK(random_rejected > 1000);

  CHECK(error_of("{\"a\":", "").starts_with("t.safetensors: header is not valid JSON: [json.exception.parse_error.101]"));
  CHECK(error_of("{\"a\":\"\xff\"}", "").starts_with("t.safetensors: header is not valid JSON: "));
  CHECK(error_of(" [1,2]", "") == "t.safetensors: header does not start with '{'");
  CHECK(error_of("{\"a\":1}", "") == "t.safetensors: tensor 'a': entry is number, expected an object");
  CHECK(error_of(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "abcd") ==
        "t.safetensors: tensor 'a': unknown dtype \"F33\", expected one of F32, F64, BF16, F16, F8_E4M3, F8_E5M2, "
        "I8, U8, I32, U32, I64, U64");
  CHECK(error_of(R"({"__metadata__":{"k":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x") ==
        "t.safetensors: __metadata__ value for 'k' is number, expected string");
  CHECK(error_of(R"({"__metadata__":[],"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x") ==
        "t.safetensors: __metadata__ is not an object of strings");
  CHECK(error_of(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678") ==
        "t.safetensors: tensor 'a': shape [3] of F32 needs 3 x 4 bytes, data_offsets [0, 8] span 8");
  CHECK(error_of(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678") ==
        "t.safetensors: tensor 'a': shape [-2] has an entry that is not a non-negative integer");
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}})", "") ==
        "t.safetensors: tensor 'a': shape [4294967296,4294967296,4294967296] is too large for any file");
  CHECK(error_of(R"({"a":{"dtype":"F32","shape":[2]}})", "12345678") ==
        "t.safetensors: tensor 'a': \"data_offsets\" must be [begin, end] with non-negative integers, got nothing");
  CHECK(error_of(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", "12345678") ==
        "t.safetensors: tensor 'a': missing or non-string \"dtype\"");
}

TEST_CASE("safetensors reader rejects oversized header lengths") {
  const std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  CHECK_THROWS_WITH_AS((void)io::SafetensorsFile::parse(file_bytes(header, "x", 100'000'001), "big.st"),
                       "big.st: header length 100000001 exceeds the limit of 100000000 bytes", Error);
  CHECK_THROWS_WITH_AS((void)io::SafetensorsFile::parse(file_bytes(header, "x", ~0ull - 1), "big.st"),
                       doctest::Contains("exceeds the limit"), Error);
  CHECK_THROWS_WITH_AS((void)io::SafetensorsFile::parse(file_bytes(header, "x", header.size() + 2), "big.st"),
                       doctest::Contains("big.st: header length 55 runs past the end of the file (54 bytes follow)"),
                       Error);
}

TEST_CASE("safetensors reader rejects bad, overlapping and non-covering offsets") {
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", "1234") ==
        "t.safetensors: tensor 'a': data_offsets [0, 8] out of range of the 4-byte data buffer");
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[3,2]}})", "1234") ==
        "t.safetensors: tensor 'a': data_offsets [3, 2] out of range of the 4-byte data buffer");
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                 "1234") == "t.safetensors: tensor 'b': data_offsets [2, 4] overlap the previous tensor (which ends at 3)");
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                 "1234") == "t.safetensors: tensor 'b': data_offsets [2, 4] leave a gap after the previous tensor (which ends at 1)");
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "1234") ==
        "t.safetensors: tensors cover 2 bytes of the 4-byte data buffer, expected all of it");
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,-2]}})", "12") ==
        "t.safetensors: tensor 'a': \"data_offsets\" must be [begin, end] with non-negative integers, got [0,-2]");
  // Tensors listed out of offset order are fine: the buffer is covered exactly.
  const auto f = parse(R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                       "1234");
  CHECK(f.tensors()[0].name == "a");
  CHECK(f.data().size() == 4);
}

TEST_CASE("safetensors duplicate names are rejected by reader and writer") {
  CHECK(error_of(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                 "12") == "t.safetensors: header has duplicate key 'a'");
  CHECK(error_of(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "1") ==
        "t.safetensors: header has duplicate key 'dtype'");
  const std::vector<float> a = {1};
  const std::vector<io::SafetensorsEntry> twice = {io::safetensors_entry<float>("a", a, {1}),
                                                   io::safetensors_entry<float>("a", a, {1})};
  CHECK_THROWS_WITH_AS((void)io::safetensors_bytes(twice), "write_safetensors: duplicate tensor name 'a'", Error);
  const std::vector<io::SafetensorsEntry> short_data = {io::safetensors_entry<float>("a", a, {2})};
  CHECK_THROWS_WITH_AS((void)io::safetensors_bytes(short_data),
                       "write_safetensors: tensor 'a' F32 [2] needs 8 bytes, got 4", Error);
  TempDir dir;
  CHECK_THROWS_WITH_AS((void)io::SafetensorsFile::open(dir / "absent.safetensors"),
                       doctest::Contains("absent.safetensors': No such file or directory"), Error);
}
