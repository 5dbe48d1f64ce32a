#include <doctest/doctest.h>

#include <string>

#include "reason/io/jsonl.hpp"

using reason::io::utf8_sanitized;

TEST_CASE("utf8_sanitized keeps valid UTF-8 and replaces every invalid byte") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(utf8_sanitized("plain ascii 123") == "plain ascii 123");
  CHECK(utf8_sanitized("\xC3\xA9t\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80") == "\xC3\xA9t\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  CHECK(utf8_sanitized(std::string("a\0b", 3)) == std::string("a\0b", 3));  // NUL is valid UTF-8
  CHECK(utf8_sanitized("\xC0\xAF") == fffd + fffd);                         // overlong
  CHECK(utf8_sanitized("\xED\xA0\x80") == fffd + fffd + fffd);              // surrogate
  CHECK(utf8_sanitized("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd);   // above U+10FFFF
  CHECK(utf8_sanitized("x\xE2\x82") == "x" + fffd + fffd);                  // truncated
  CHECK(utf8_sanitized("\xFF") == fffd);
  // Whatever the bytes, the result serialises as JSON.
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  CHECK_NOTHROW((void)reason::io::Json(utf8_sanitized(all)).dump());
}
