// reason/core/error.hpp — one exception type and the checks that throw it.
//
// Design rule: bad input never crashes, hangs or silently answers wrong. Every check says
// *what* was wrong in terms a user can act on: which tensor, the shape it had, the shape it
// should have had. Messages are built only on the failure path, so checks cost a branch.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace reason {

/// The one exception type the library throws for bad input, bad files and failed resources.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
[[nodiscard]] std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

/// Throws reason::Error with the streamed pieces as its message.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

/// Formats a shape as "[2, 3, 4]".
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}
inline std::string shape_string(std::initializer_list<std::int64_t> shape) {
  return shape_string(std::span<const std::int64_t>(shape.begin(), shape.size()));
}

}  // namespace reason

/// REASON_CHECK(cond, pieces...): throws reason::Error("<pieces>") when cond is false.
#define REASON_CHECK(cond, ...)                                   \
  do {                                                            \
    if (!(cond)) [[unlikely]] ::reason::fail(__VA_ARGS__);        \
  } while (0)
