// reason/io/safetensors.hpp — read and write the safetensors checkpoint format.
//
// Format (huggingface/safetensors, safetensors/src/tensor.rs; docs at hf.co/docs/safetensors):
//   u64 N (little-endian) | N bytes of JSON header | data buffer
//   header = {"__metadata__": {string: string}, name: {"dtype": "F32", "shape": [..],
//             "data_offsets": [begin, end]}, ...}; offsets are relative to the data buffer.
// Design rule: a file from anywhere is untrusted. The reader checks every claim the header
// makes before any byte is used — header length within the file and under 100 MB (the
// reference's MAX_HEADER_SIZE), valid JSON object, no duplicate keys, string metadata, known
// dtype, shape product x dtype size == offset span, offsets in order, without gaps or overlap,
// covering the buffer exactly — and every message names the file and, where there is one, the
// tensor. The writer emits what the reference writer emits: compact JSON, "__metadata__" first
// (omitted when empty), each tensor's keys in the order dtype, shape, data_offsets, header padded
// with spaces to a multiple of 8; tensors are laid out in the order given (the reference sorts
// by dtype then name; pass them in that order for byte-identical files). Written atomically.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "reason/core/dtype.hpp"
#include "reason/core/error.hpp"
#include "reason/io/atomic_file.hpp"

namespace reason::io {

static_assert(std::endian::native == std::endian::little,
              "reason/io/safetensors.hpp: safetensors data is little-endian; big-endian hosts are not supported");

using SafetensorsMetadata = std::map<std::string, std::string, std::less<>>;

/// One tensor of a safetensors file: where its bytes are in the data buffer.
struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0, end = 0;  // byte offsets into the data buffer, [begin, end)

  [[nodiscard]] std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  [[nodiscard]] std::size_t nbytes() const { return end - begin; }
};

/// A parsed, validated safetensors file that owns its bytes.
class SafetensorsFile {
 public:
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  /// Reads and validates `path`; throws reason::Error naming the file (and tensor) on any defect.
  [[nodiscard]] static SafetensorsFile open(const std::filesystem::path& path) {
    return parse(read_file_bytes(path), path.string());
  }

  /// Validates `bytes` as a safetensors file; `name` is used in messages.
  [[nodiscard]] static SafetensorsFile parse(std::vector<std::byte> bytes, std::string name) {
    SafetensorsFile f;
    f.name_ = std::move(name);
    f.bytes_ = std::move(bytes);
    f.validate();
    return f;
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  /// Tensors in data-buffer order.
  [[nodiscard]] std::span<const TensorInfo> tensors() const { return tensors_; }
  [[nodiscard]] std::size_t size() const { return tensors_.size(); }
  [[nodiscard]] const SafetensorsMetadata& metadata() const { return metadata_; }
  /// The data buffer (everything after the header).
  [[nodiscard]] std::span<const std::byte> data() const { return std::span(bytes_).subspan(data_start_); }

  [[nodiscard]] const TensorInfo* find(std::string_view tensor) const {
    const auto it = index_.find(tensor);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  [[nodiscard]] bool contains(std::string_view tensor) const { return find(tensor) != nullptr; }

  /// The tensor named `tensor`; throws naming the file and the tensor when there is none.
  [[nodiscard]] const TensorInfo& at(std::string_view tensor) const {
    if (const TensorInfo* t = find(tensor)) return *t;
    std::string some;
    for (std::size_t i = 0; i < tensors_.size() && i < 8; ++i) some += (i ? ", " : "") + tensors_[i].name;
    if (tensors_.size() > 8) some += ", ...";
    fail(name_, ": no tensor '", tensor, "' (the file has ", tensors_.size(), " tensors: ", some, ")");
  }

  /// The tensor named `tensor`, checked to have `dtype` and `shape`; the error names the tensor
  /// and the got/expected dtype and shape.
  const TensorInfo& expect(std::string_view tensor, DType dtype, std::span<const std::int64_t> shape) const {
    const TensorInfo& t = at(tensor);
    if (t.dtype != dtype || !std::ranges::equal(t.shape, shape))
      fail(name_, ": tensor '", tensor, "': got ", dtype_name(t.dtype), " ", shape_string(t.shape), ", expected ",
           dtype_name(dtype), " ", shape_string(shape));
    return t;
  }
  const TensorInfo& expect(std::string_view tensor, DType dtype, std::initializer_list<std::int64_t> shape) const {
    return expect(tensor, dtype, std::span<const std::int64_t>(shape.begin(), shape.size()));
  }

  /// The raw little-endian bytes of a tensor.
  [[nodiscard]] std::span<const std::byte> bytes(const TensorInfo& t) const { return data().subspan(t.begin, t.nbytes()); }
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view tensor) const { return bytes(at(tensor)); }

  /// Copies tensor `tensor` into `out`, whose element type must be the tensor's dtype and whose
  /// size must be its element count.
  template <class T>
  void read_into(std::string_view tensor, std::span<T> out) const {
    const TensorInfo& t = at(tensor);
    if (t.dtype != dtype_of<T>)
      fail(name_, ": tensor '", tensor, "' is ", dtype_name(t.dtype), ", read as ", dtype_name(dtype_of<T>));
    if (static_cast<std::int64_t>(out.size()) != t.numel())
      fail(name_, ": tensor '", tensor, "' ", shape_string(t.shape), " has ", t.numel(), " elements, destination has ",
           out.size());
    if (t.nbytes()) std::memcpy(out.data(), bytes(t).data(), t.nbytes());
  }

 private:
  using Json = nlohmann::json;

  void validate() {
    const std::size_t total = bytes_.size();
    if (total < 8) fail(name_, ": file is ", total, " bytes, shorter than the 8-byte header length");
    std::uint64_t n = 0;
    std::memcpy(&n, bytes_.data(), 8);
    if (n > max_header_bytes) fail(name_, ": header length ", n, " exceeds the limit of ", max_header_bytes, " bytes");
    if (n > total - 8) fail(name_, ": header length ", n, " runs past the end of the file (", total - 8, " bytes follow)");
    data_start_ = 8 + static_cast<std::size_t>(n);
    const auto* hb = reinterpret_cast<const char*>(bytes_.data()) + 8;
    const std::string_view header(hb, static_cast<std::size_t>(n));
    if (header.empty() || header.front() != '{') fail(name_, ": header does not start with '{'");

    // Duplicate keys are legal JSON but ambiguous here: reject them (nlohmann keeps the last).
    std::vector<std::set<std::string>> keys;
    std::string dup;
    auto watch = [&](int, Json::parse_event_t ev, Json& parsed) {
      if (ev == Json::parse_event_t::object_start) keys.emplace_back();
      else if (ev == Json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
      else if (ev == Json::parse_event_t::key && !keys.empty() && dup.empty()) {
        auto k = parsed.get<std::string>();
        if (!keys.back().insert(k).second) dup = k;
      }
      return true;
    };
    Json j;
    try {
      j = Json::parse(header.begin(), header.end(), watch);
    } catch (const Json::exception& e) {
      fail(name_, ": header is not valid JSON: ", e.what());
    }
    if (!dup.empty()) fail(name_, ": header has duplicate key '", dup, "'");
    if (!j.is_object()) fail(name_, ": header is not a JSON object");

    const std::size_t data_size = total - data_start_;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      if (key == "__metadata__") {
        if (!it->is_object()) fail(name_, ": __metadata__ is not an object of strings");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) fail(name_, ": __metadata__ value for '", m.key(), "' is ", m->type_name(), ", expected string");
          metadata_.emplace(m.key(), m->get<std::string>());
        }
        continue;
      }
      tensors_.push_back(parse_entry(key, *it, data_size));
    }

    std::ranges::sort(tensors_, [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::size_t expected_begin = 0;
    for (const TensorInfo& t : tensors_) {
      if (t.begin != expected_begin)
        fail(name_, ": tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end, "] ",
             t.begin < expected_begin ? "overlap the previous tensor" : "leave a gap after the previous tensor",
             " (which ends at ", expected_begin, ")");
      expected_begin = t.end;
    }
    if (expected_begin != data_size)
      fail(name_, ": tensors cover ", expected_begin, " bytes of the ", data_size, "-byte data buffer, expected all of it");
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  TensorInfo parse_entry(const std::string& key, const Json& v, std::size_t data_size) const {
    const std::string where = name_ + ": tensor '" + key + "'";
    if (!v.is_object()) fail(where, ": entry is ", v.type_name(), ", expected an object");
    TensorInfo t;
    t.name = key;
    const auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail(where, ": missing or non-string \"dtype\"");
    try {
      t.dtype = parse_dtype(dt->get<std::string>());
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
    const auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail(where, ": missing or non-array \"shape\"");
    std::uint64_t numel = 1;
    bool huge = false;  // product beyond 2^62 elements: no file can hold it
    for (const Json& d : *sh) {
      if (!d.is_number_unsigned()) fail(where, ": shape ", sh->dump(), " has an entry that is not a non-negative integer");
      const auto u = d.get<std::uint64_t>();
      if (u > (std::uint64_t{1} << 62)) huge = true;
      t.shape.push_back(static_cast<std::int64_t>(std::min<std::uint64_t>(u, std::uint64_t{1} << 62)));
      if (numel != 0 && u != 0 && numel > (std::uint64_t{1} << 62) / u) huge = true;
      numel *= u;
    }
    if (std::ranges::find(t.shape, 0) != t.shape.end()) numel = 0, huge = false;
    if (huge) fail(where, ": shape ", sh->dump(), " is too large for any file");
    const auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail(where, ": \"data_offsets\" must be [begin, end] with non-negative integers, got ",
           off == v.end() ? std::string("nothing") : off->dump());
    const auto b = (*off)[0].get<std::uint64_t>(), e = (*off)[1].get<std::uint64_t>();
    if (b > e || e > data_size)
      fail(where, ": data_offsets [", b, ", ", e, "] out of range of the ", data_size, "-byte data buffer");
    const std::uint64_t need = numel * dtype_size(t.dtype);  // may wrap only when numel > 2^60, refused below
    if (numel > (std::uint64_t{1} << 60) || need != e - b)
      fail(where, ": shape ", shape_string(t.shape), " of ", dtype_name(t.dtype), " needs ", numel, " x ",
           dtype_size(t.dtype), " bytes, data_offsets [", b, ", ", e, "] span ", e - b);
    t.begin = static_cast<std::size_t>(b);
    t.end = static_cast<std::size_t>(e);
    return t;
  }

  std::string name_;
  std::vector<std::byte> bytes_;
  std::size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
  SafetensorsMetadata metadata_;
};

/// One tensor to write: the bytes must be dtype_size(dtype) x product(shape) long.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;
};

/// An entry viewing `values` (element type gives the dtype).
template <class T>
[[nodiscard]] SafetensorsEntry safetensors_entry(std::string name, std::span<const T> values,
                                                 std::vector<std::int64_t> shape) {
  return {std::move(name), dtype_of<T>, std::move(shape), std::as_bytes(values)};
}

/// The header bytes (length prefix + padded JSON) for `entries` laid out in order.
[[nodiscard]] inline std::vector<std::byte> safetensors_header(std::span<const SafetensorsEntry> entries,
                                                               const SafetensorsMetadata& metadata = {}) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = h["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::size_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    REASON_CHECK(e.name != "__metadata__", "write_safetensors: a tensor may not be named \"__metadata__\"");
    REASON_CHECK(!h.contains(e.name), "write_safetensors: duplicate tensor name '", e.name, "'");
    std::int64_t numel = 1;
    for (auto d : e.shape) {
      REASON_CHECK(d >= 0, "write_safetensors: tensor '", e.name, "' has negative extent in shape ", shape_string(e.shape));
      numel *= d;
    }
    const std::size_t need = static_cast<std::size_t>(numel) * dtype_size(e.dtype);
    REASON_CHECK(e.data.size() == need, "write_safetensors: tensor '", e.name, "' ", dtype_name(e.dtype), " ",
                 shape_string(e.shape), " needs ", need, " bytes, got ", e.data.size());
    auto& t = h[e.name];
    t["dtype"] = std::string(dtype_name(e.dtype));
    t["shape"] = e.shape;
    t["data_offsets"] = {offset, offset + need};
    offset += need;
  }
  std::string json;
  try {
    json = h.dump();
  } catch (const nlohmann::json::exception& ex) {
    fail("write_safetensors: header cannot be serialized (names and metadata must be UTF-8): ", ex.what());
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  std::vector<std::byte> out(8 + json.size());
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, json.data(), json.size());
  return out;
}

/// The whole file as bytes.
[[nodiscard]] inline std::vector<std::byte> safetensors_bytes(std::span<const SafetensorsEntry> entries,
                                                              const SafetensorsMetadata& metadata = {}) {
  std::vector<std::byte> out = safetensors_header(entries, metadata);
  for (const SafetensorsEntry& e : entries) out.insert(out.end(), e.data.begin(), e.data.end());
  return out;
}

/// Writes a safetensors file atomically (whole or not at all).
inline void write_safetensors(const std::filesystem::path& path, std::span<const SafetensorsEntry> entries,
                              const SafetensorsMetadata& metadata = {}) {
  const std::vector<std::byte> header = safetensors_header(entries, metadata);
  write_file_atomic(path, [&](AtomicWriter& w) {
    w.write(header);
    for (const SafetensorsEntry& e : entries) w.write(e.data);
  });
}

}  // namespace reason::io
