// reason/io/atomic_file.hpp — files written whole or not at all, and logs of whole lines.
//
// Design rule: a crash, a full disk or a kill -9 never leaves a half-written checkpoint or a
// torn line behind. A file is written to a temporary sibling `<name>.tmp.<pid>.<counter>` in the
// same directory (so the rename stays on one filesystem), fsync'ed, renamed over the target
// (rename(2) is atomic on POSIX), and then the directory is fsync'ed so the new name is durable
// — the sequence described in "Files are hard" (Dan Luu) and used by SQLite and LevelDB for their
// manifests. On any error the temporary is removed and reason::Error names the path and the
// strerror text. A LineLog appends to an O_APPEND descriptor with exactly one write(2) per line
// built whole in memory (POSIX 2017, write(2): O_APPEND moves to the end and writes as one step),
// so readers of a metrics log see only complete lines, even with several writers.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <concepts>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"

namespace reason::io {

namespace detail {

inline std::string errno_text(int e) { return std::strerror(e); }

/// Writes all of [data, data + n) to fd, retrying on EINTR and short writes; returns errno or 0.
inline int write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return 0;
}

/// `<name>.tmp.<pid>.<counter>` beside `path`: unique within and across processes.
inline std::filesystem::path temp_sibling(const std::filesystem::path& path) {
  static std::atomic<std::uint64_t> counter{0};
  std::filesystem::path t = path;
  t += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  return t;
}

/// fsync of the directory holding `path`, so a rename into it survives a power cut. Filesystems
/// that cannot fsync a directory (EINVAL) are accepted: nothing more can be done there.
inline void fsync_parent(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("write_file_atomic: cannot open directory '", dir.string(), "' to fsync it: ", errno_text(errno));
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (rc != 0 && e != EINVAL) fail("write_file_atomic: fsync of directory '", dir.string(), "' failed: ", errno_text(e));
}

}  // namespace detail

/// What a writer callback of write_file_atomic receives: appends bytes to the temporary file.
class AtomicWriter {
 public:
  void write(std::span<const std::byte> bytes) { write(reinterpret_cast<const char*>(bytes.data()), bytes.size()); }
  void write(std::string_view text) { write(text.data(), text.size()); }
  void write(const char* data, std::size_t n) {
    if (const int e = detail::write_all(fd_, data, n))
      fail("write_file_atomic: writing '", temp_.string(), "' (for '", target_.string(), "') failed: ", detail::errno_text(e));
    written_ += n;
  }
  [[nodiscard]] std::size_t bytes_written() const { return written_; }

 private:
  template <class F>
    requires std::invocable<F&, AtomicWriter&>
  friend void write_file_atomic(const std::filesystem::path& path, F&& writer);
  AtomicWriter(int fd, std::filesystem::path temp, std::filesystem::path target)
      : fd_(fd), temp_(std::move(temp)), target_(std::move(target)) {}
  int fd_;
  std::filesystem::path temp_, target_;
  std::size_t written_ = 0;
};

/// Writes the file at `path` whole or not at all; `writer(AtomicWriter&)` produces its bytes.
/// Any exception from the writer or the filesystem removes the temporary and propagates
/// (filesystem errors as reason::Error naming the path and strerror); the target is untouched.
template <class F>
  requires std::invocable<F&, AtomicWriter&>
void write_file_atomic(const std::filesystem::path& path, F&& writer) {
  const std::filesystem::path temp = detail::temp_sibling(path);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    fail("write_file_atomic: cannot create '", temp.string(), "' (for '", path.string(), "'): ", detail::errno_text(errno));
  auto abandon = [&] {
    ::close(fd);
    ::unlink(temp.c_str());
  };
  try {
    AtomicWriter w(fd, temp, path);
    writer(w);
  } catch (...) {
    abandon();
    throw;
  }
  if (::fsync(fd) != 0) {
    const int e = errno;
    abandon();
    fail("write_file_atomic: fsync of '", temp.string(), "' (for '", path.string(), "') failed: ", detail::errno_text(e));
  }
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    fail("write_file_atomic: close of '", temp.string(), "' (for '", path.string(), "') failed: ", detail::errno_text(e));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    fail("write_file_atomic: cannot rename '", temp.string(), "' to '", path.string(), "': ", detail::errno_text(e));
  }
  detail::fsync_parent(path);
}

/// Writes `bytes` as the whole content of `path`, atomically.
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  write_file_atomic(path, [&](AtomicWriter& w) { w.write(bytes); });
}
inline void write_file_atomic(const std::filesystem::path& path, std::string_view text) {
  write_file_atomic(path, [&](AtomicWriter& w) { w.write(text); });
}

/// The whole content of `path`; reason::Error naming the path and strerror if it cannot be read.
inline std::vector<std::byte> read_file_bytes(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '", path.string(), "': ", detail::errno_text(errno));
  std::vector<std::byte> out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  std::byte buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      fail("cannot read '", path.string(), "': ", detail::errno_text(e));
    }
    if (r == 0) break;
    out.insert(out.end(), buf, buf + r);
  }
  ::close(fd);
  return out;
}

/// An append-only log of whole lines: each line goes out in one write(2) on an O_APPEND fd.
class LineLog {
 public:
  LineLog() = default;
  /// Opens (creating if needed, mode 0644) `path` for appending.
  explicit LineLog(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("LineLog: cannot open '", path_.string(), "' for appending: ", detail::errno_text(errno));
  }
  LineLog(LineLog&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}
  LineLog& operator=(LineLog&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      path_ = std::move(o.path_);
    }
    return *this;
  }
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;
  ~LineLog() { close(); }

  [[nodiscard]] bool is_open() const { return fd_ >= 0; }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

  /// Appends `line` and a '\n' in one write. A line holding '\n' itself is refused: it would
  /// not be one line in the file.
  void append(std::string_view line) {
    REASON_CHECK(fd_ >= 0, "LineLog: append to a closed log");
    REASON_CHECK(line.find('\n') == std::string_view::npos, "LineLog '", path_.string(),
                 "': a line must not contain '\\n' (got ", line.size(), " bytes with a newline at ",
                 line.find('\n'), ")");
    std::string whole;
    whole.reserve(line.size() + 1);
    whole.append(line);
    whole.push_back('\n');
    if (const int e = detail::write_all(fd_, whole.data(), whole.size()))
      fail("LineLog: append to '", path_.string(), "' failed: ", detail::errno_text(e));
  }

  /// Makes the lines appended so far durable (fsync).
  void sync() {
    REASON_CHECK(fd_ >= 0, "LineLog: sync of a closed log");
    if (::fsync(fd_) != 0) fail("LineLog: fsync of '", path_.string(), "' failed: ", detail::errno_text(errno));
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::filesystem::path path_;
};

}  // namespace reason::io
