// Which GPUs a build's CUDA code runs on (core/cuda_arch.hpp): the compatibility rules of the CUDA
// programming guide applied to CMake's CUDA_ARCHITECTURES lists. Plain C++, no GPU needed.
#include <doctest/doctest.h>

#include "reason/core/cuda_arch.hpp"

using namespace reason;

TEST_CASE("CUDA_ARCHITECTURES lists parse into SASS and PTX entries") {
  const auto a = gpu::parse_cuda_architectures("90;80-real,75-virtual 90a");
  REQUIRE(a.size() == 4);
  CHECK((a[0].capability == 90 && a[0].sass && a[0].ptx));
  CHECK((a[1].capability == 80 && a[1].sass && !a[1].ptx));
  CHECK((a[2].capability == 75 && !a[2].sass && a[2].ptx));
  CHECK((a[3].capability == 90 && a[3].sass && a[3].ptx));
  CHECK(gpu::describe(gpu::parse_cuda_architectures("90")) == "sm_90 + compute_90 (PTX)");
  CHECK(gpu::parse_cuda_architectures("").empty());
  CHECK_THROWS_WITH(gpu::parse_cuda_architectures("native"), doctest::Contains("entry 'native'"));
  CHECK_THROWS_WITH(gpu::parse_cuda_architectures("90-fast"), doctest::Contains("<capability>[-real|-virtual]"));
}

TEST_CASE("SASS runs on the same major with an equal or higher minor; PTX on anything newer") {
  using gpu::parse_cuda_architectures, gpu::runs_on;
  CHECK(runs_on(parse_cuda_architectures("90"), 9, 0));              // H100
  CHECK_FALSE(runs_on(parse_cuda_architectures("90"), 8, 0));        // A100: too old for sm_90 / compute_90
  CHECK(runs_on(parse_cuda_architectures("90"), 10, 0));             // a newer GPU JIT-compiles the PTX
  CHECK_FALSE(runs_on(parse_cuda_architectures("90-real"), 10, 0));  // ... but not without it
  CHECK(runs_on(parse_cuda_architectures("86-real"), 8, 9));         // sm_86 SASS on an 8.9 device
  CHECK_FALSE(runs_on(parse_cuda_architectures("86-real"), 8, 0));   // not on an older minor
  CHECK(runs_on(parse_cuda_architectures("80-virtual"), 9, 0));
  CHECK(runs_on(parse_cuda_architectures("75-real;90-real"), 9, 0));
  CHECK_FALSE(runs_on(parse_cuda_architectures(""), 9, 0));
}
