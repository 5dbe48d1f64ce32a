// Device memory, streams, events and the device check (core/device_buffer.hpp, core/cuda_device.hpp).
// With no GPU: require_device's error says so plainly (checked), then exit 77 (CTest: skipped),
// since nothing else here can run. With a GPU: round trips, size and ordinal errors, a compiled-
// architecture mismatch named as such, timing with events.
// Exit status: 0 pass, 1 a check failed, 77 no GPU, 2 an unexpected error.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "reason/core/cublaslt_check.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "cuda/cuda_test_util.hpp"

using namespace reason;

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failures;
  }
}
/// Runs f, which must throw reason::Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle, const char* what) {
  const std::string wrong = test::error_mismatch(f, needle);
  if (wrong.empty()) return;
  std::printf("FAILED: %s: %s\n", what, wrong.c_str());
  ++failures;
}

__global__ void add_one(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}

}  // namespace

int main(int argc, char** argv) {
  // --expect-no-device: run with the GPUs hidden (CUDA_VISIBLE_DEVICES=""), so the no-device
  // error is checked, and passes, on every machine.
  const bool expect_none = argc > 1 && std::string(argv[1]) == "--expect-no-device";
  try {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      expect_error([] { (void)gpu::require_device(); }, "no CUDA device is present", "require_device without a GPU");
      if (expect_none) return failures ? 1 : 0;
      std::printf("no CUDA device: the no-device error was checked; the rest needs a GPU (skipped)\n");
      return failures ? 1 : 77;
    }
    if (expect_none) {
      std::printf("FAILED: --expect-no-device, but %d device(s) are visible (CUDA_VISIBLE_DEVICES not empty?)\n", count);
      return 1;
    }
    const gpu::DeviceInfo d = gpu::require_device(0);
    std::printf("device %d: %s, compute capability %d.%d, %zu MiB, %d SMs; compiled for \"%s\"\n", d.ordinal,
                d.name.c_str(), d.major, d.minor, d.memory_bytes >> 20, d.multiprocessors,
                gpu::compiled_architectures().c_str());
    expect(!gpu::compiled_architectures().empty(), "the build passes REASON_CUDA_ARCHITECTURES");
    expect_error([&] { (void)gpu::require_device(count); }, "only", "an ordinal past the last device");
    // A list that cannot run here: SASS only, for a capability of another major.
    const std::string other = d.major == 8 ? "90-real" : "80-real";
    expect_error([&] { (void)gpu::require_device(0, other); }, "compute capability", "a build for another GPU");

    const int n = 1 << 20;
    std::vector<float> host(n), back(n);
    for (int i = 0; i < n; ++i) host[i] = static_cast<float>(i);
    gpu::DeviceBuffer<float> buf(n, "x");
    buf.copy_from(host);
    gpu::Stream stream;
    gpu::Event start, stop;
    start.record(stream.get());
    add_one<<<(n + 255) / 256, 256, 0, stream.get()>>>(buf.data(), n);
    REASON_CUDA_CHECK(cudaGetLastError());
    stop.record(stream.get());
    const float ms = stop.elapsed_ms_since(start);
    buf.copy_to(back, stream.get());
    stream.synchronize();
    bool same = true;
    for (int i = 0; i < n; ++i) same = same && back[i] == host[i] + 1.0f;
    expect(same, "a kernel on a DeviceBuffer, round trip through the host");
    expect(ms >= 0, "event timing");
    buf.zero();
    buf.copy_to(back);
    expect(back[n - 1] == 0.0f && back[0] == 0.0f, "zero()");
    std::vector<float> wrong(n - 1);
    expect_error([&] { buf.copy_to(wrong); }, "host has 1048575 elements, the buffer 1048576", "copy size mismatch");
    expect_error([] { gpu::DeviceBuffer<float> huge(std::size_t{1} << 45, "too big"); }, "for 'too big' failed",
                 "an allocation the device cannot hold");
    gpu::DeviceBuffer<float> moved = std::move(buf);
    expect(moved.size() == static_cast<std::size_t>(n) && buf.size() == 0 && buf.data() == nullptr, "move");
    expect_error([] { REASON_CUBLASLT_CHECK(cublasLtMatmulDescCreate(nullptr, CUBLAS_COMPUTE_32F, CUDA_R_32F)); },
                 "cublasLtMatmulDescCreate(nullptr", "a failed cuBLASLt call names itself");
    std::printf("%s (add_one on 1M floats: %.3f ms)\n", failures ? "FAILED" : "passed", ms);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
