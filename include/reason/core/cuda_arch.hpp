// reason/core/cuda_arch.hpp — which GPUs a build's CUDA code can run on.
//
// A CUDA binary carries machine code (SASS) for some architectures and PTX for others (CMake's
// CUDA_ARCHITECTURES: "90" = sm_90 SASS + compute_90 PTX, "90-real" = SASS only, "90-virtual" =
// PTX only). A device of compute capability M.m runs SASS built for M.n with n <= m (same major:
// binary compatibility) and JIT-compiles PTX built for any capability <= M.m (CUDA C Programming
// Guide, "Binary Compatibility" and "PTX Compatibility"). Plain C++: the logic is tested on
// machines without a GPU; core/cuda_device.hpp applies it to the device in hand.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "reason/core/error.hpp"

namespace reason::gpu {

struct CompiledArch {
  int capability = 0;  // 90 for sm_90 / compute_90
  bool sass = true;    // machine code for it
  bool ptx = true;     // PTX for it
};

/// Parses a CMake CUDA_ARCHITECTURES list ("90;80-real;75-virtual"; ';', ',' or ' ' separated).
/// "all", "native" and friends are not a fixed list and are refused.
[[nodiscard]] inline std::vector<CompiledArch> parse_cuda_architectures(std::string_view list) {
  std::vector<CompiledArch> out;
  std::size_t i = 0;
  while (i < list.size()) {
    const std::size_t end = list.find_first_of(";, ", i);
    const std::string_view item = list.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i);
    i = end == std::string_view::npos ? list.size() : end + 1;
    if (item.empty()) continue;
    CompiledArch a;
    std::size_t digits = 0;
    while (digits < item.size() && item[digits] >= '0' && item[digits] <= '9') {
      a.capability = a.capability * 10 + (item[digits] - '0');
      ++digits;
    }
    std::string_view suffix = item.substr(digits);
    if (!suffix.empty() && (suffix.back() == 'a' || suffix.back() == 'f')) suffix = suffix.substr(0, suffix.size() - 1);  // 90a: arch-specific
    REASON_CHECK(digits > 0 && (suffix.empty() || suffix == "-real" || suffix == "-virtual"), "CUDA architectures '",
                 std::string(list), "': entry '", std::string(item), "' is not <capability>[-real|-virtual]");
    if (suffix == "-real") a.ptx = false;
    if (suffix == "-virtual") a.sass = false;
    out.push_back(a);
  }
  return out;
}

/// Whether code built for `archs` runs on a device of compute capability major.minor.
[[nodiscard]] inline bool runs_on(const std::vector<CompiledArch>& archs, int major, int minor) {
  const int device = major * 10 + minor;
  for (const CompiledArch& a : archs) {
    if (a.sass && a.capability / 10 == major && a.capability % 10 <= minor) return true;
    if (a.ptx && a.capability <= device) return true;
  }
  return false;
}

/// "sm_90 + compute_90 (PTX)" for the error messages.
[[nodiscard]] inline std::string describe(const std::vector<CompiledArch>& archs) {
  std::string s;
  for (const CompiledArch& a : archs) {
    const std::string cc = std::to_string(a.capability);
    if (a.sass) s += (s.empty() ? "" : " + ") + std::string("sm_") + cc;
    if (a.ptx) s += (s.empty() ? "" : " + ") + std::string("compute_") + cc + " (PTX)";
  }
  return s.empty() ? std::string("no architecture") : s;
}

}  // namespace reason::gpu
