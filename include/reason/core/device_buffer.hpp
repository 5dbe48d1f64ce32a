// reason/core/device_buffer.hpp — GPU memory, streams and events that clean up after themselves.
//
//   gpu::DeviceBuffer<T>   `count` elements from plain cudaMalloc (no managed memory), freed on
//                           destruction; move-only. Copies to and from host spans check sizes.
//   gpu::Stream            a non-blocking stream (cudaStreamNonBlocking), destroyed on destruction.
//   gpu::Event             an event for ordering and for timing (elapsed_ms between two).
// Every call is checked (REASON_CUDA_CHECK). A destructor cannot throw: a failure there is
// written to stderr as one whole line and otherwise ignored — by then the context is usually
// gone anyway, and the earlier, checked call has already said why.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdio>
#include <span>
#include <utility>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"

namespace reason::gpu {

namespace detail {
inline void report_release_failure(const char* what, cudaError_t status) {
  if (status == cudaSuccess) return;
  std::fprintf(stderr, "reason: %s failed while releasing: %s (%s)\n", what, cudaGetErrorName(status),
               cudaGetErrorString(status));
}
}  // namespace detail

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// `count` uninitialised elements; `what` names the buffer in an out-of-memory error.
  explicit DeviceBuffer(std::size_t count, const char* what = "DeviceBuffer") : count_(count) {
    if (count == 0) return;
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T));
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      std::size_t free_bytes = 0, total = 0;
      (void)cudaMemGetInfo(&free_bytes, &total);
      (void)cudaGetLastError();
      fail("cudaMalloc of ", count * sizeof(T), " bytes for '", what, "' failed: ", cudaGetErrorName(status), " (",
           cudaGetErrorString(status), "); ", free_bytes, " of ", total, " bytes free on the device");
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  [[nodiscard]] T* data() { return data_; }
  [[nodiscard]] const T* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return count_; }
  [[nodiscard]] std::size_t bytes() const { return count_ * sizeof(T); }

  /// Host -> device, whole buffer; `stream` 0 is the default stream (then synchronous).
  void copy_from(std::span<const T> host, cudaStream_t stream = nullptr) {
    REASON_CHECK(host.size() == count_, "DeviceBuffer::copy_from: host has ", host.size(), " elements, the buffer ",
                 count_);
    if (count_ == 0) return;
    REASON_CUDA_CHECK(cudaMemcpyAsync(data_, host.data(), bytes(), cudaMemcpyHostToDevice, stream));
    if (stream == nullptr) REASON_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
  /// Device -> host, whole buffer.
  void copy_to(std::span<T> host, cudaStream_t stream = nullptr) const {
    REASON_CHECK(host.size() == count_, "DeviceBuffer::copy_to: host has ", host.size(), " elements, the buffer ",
                 count_);
    if (count_ == 0) return;
    REASON_CUDA_CHECK(cudaMemcpyAsync(host.data(), data_, bytes(), cudaMemcpyDeviceToHost, stream));
    if (stream == nullptr) REASON_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
  /// Every byte zero.
  void zero(cudaStream_t stream = nullptr) {
    if (count_ == 0) return;
    REASON_CUDA_CHECK(cudaMemsetAsync(data_, 0, bytes(), stream));
    if (stream == nullptr) REASON_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }

 private:
  void release() {
    if (data_ != nullptr) detail::report_release_failure("cudaFree", cudaFree(data_));
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

class Stream {
 public:
  Stream() { REASON_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    if (this != &o) {
      release();
      stream_ = std::exchange(o.stream_, nullptr);
    }
    return *this;
  }
  ~Stream() { release(); }

  [[nodiscard]] cudaStream_t get() const { return stream_; }
  void synchronize() const { REASON_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  void release() {
    if (stream_ != nullptr) detail::report_release_failure("cudaStreamDestroy", cudaStreamDestroy(stream_));
    stream_ = nullptr;
  }
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { REASON_CUDA_CHECK(cudaEventCreate(&event_)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}
  Event& operator=(Event&& o) noexcept {
    if (this != &o) {
      release();
      event_ = std::exchange(o.event_, nullptr);
    }
    return *this;
  }
  ~Event() { release(); }

  [[nodiscard]] cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream = nullptr) { REASON_CUDA_CHECK(cudaEventRecord(event_, stream)); }
  void synchronize() const { REASON_CUDA_CHECK(cudaEventSynchronize(event_)); }
  /// Milliseconds from `start` to this event (both recorded; waits for this one).
  [[nodiscard]] float elapsed_ms_since(const Event& start) const {
    synchronize();
    float ms = 0;
    REASON_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
    return ms;
  }

 private:
  void release() {
    if (event_ != nullptr) detail::report_release_failure("cudaEventDestroy", cudaEventDestroy(event_));
    event_ = nullptr;
  }
  cudaEvent_t event_ = nullptr;
};

}  // namespace reason::gpu
