// reason/core/cuda_device.hpp — the GPU a program asked for, or a clear reason why there is none.
//
// require_device(ordinal) is what a program calls before it puts anything on a GPU: it throws
// reason::Error saying that no CUDA device is present (and what the driver said), that the
// ordinal is out of range, or that the device's compute capability is not among the
// architectures this translation unit's CUDA code was compiled for (naming them) — instead of
// the first kernel launch failing with "no kernel image is available". The compiled list comes
// from REASON_CUDA_ARCHITECTURES, which the reason::cuda CMake component sets from the consuming
// target's CUDA_ARCHITECTURES; without it only presence is checked.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "reason/core/cuda_arch.hpp"
#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"

namespace reason::gpu {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  std::size_t memory_bytes = 0;
  int multiprocessors = 0;
};

/// The architectures this code was compiled for ("" when the build did not say).
[[nodiscard]] inline std::string compiled_architectures() {
#ifdef REASON_CUDA_ARCHITECTURES
  return REASON_CUDA_ARCHITECTURES;
#else
  return {};
#endif
}

/// Device `ordinal`, made current, after checking that it exists and that this build runs on it.
inline DeviceInfo require_device(int ordinal = 0, const std::string& compiled = compiled_architectures()) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();  // clear the sticky error of a failed query
    fail("CUDA was asked for, but no CUDA device is present (cudaGetDeviceCount: ",
         status == cudaSuccess ? "0 devices" : cudaGetErrorName(status), status == cudaSuccess ? "" : " — ",
         status == cudaSuccess ? "" : cudaGetErrorString(status),
         "); run on a machine with an NVIDIA GPU and driver, or use the host backend");
  }
  REASON_CHECK(ordinal >= 0 && ordinal < count, "CUDA device ", ordinal, " was asked for, but only ", count,
               " device(s) are present (ordinals 0..", count - 1, ")");
  cudaDeviceProp prop{};
  REASON_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
  DeviceInfo d{ordinal, prop.name, prop.major, prop.minor, prop.totalGlobalMem, prop.multiProcessorCount};
  if (!compiled.empty()) {
    const auto archs = parse_cuda_architectures(compiled);
    REASON_CHECK(runs_on(archs, d.major, d.minor), "CUDA device ", ordinal, " (", d.name, ") has compute capability ",
                 d.major, ".", d.minor, ", but this code was compiled for ", describe(archs), " (CUDA_ARCHITECTURES \"",
                 compiled, "\"); rebuild with -DCMAKE_CUDA_ARCHITECTURES including ", d.major * 10 + d.minor);
  }
  REASON_CUDA_CHECK(cudaSetDevice(ordinal));
  return d;
}

}  // namespace reason::gpu
