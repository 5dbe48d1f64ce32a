// Device check of reason/core/{bf16,fp16,fp8,philox}.hpp: the same inputs converted on the GPU with
// CUDA's own intrinsics (cuda_bf16.h, cuda_fp16.h, cuda_fp8.h; on sm_90 these are cvt
// instructions) and with reason's types compiled as device code, and Philox drawn on the GPU, all
// compared with reason's host results. Also the library's conversion kernels, gpu::to_bf16 and
// gpu::to_fp16 (kernels/convert.cuh: the compute copies of bf16 / fp16 models; their vector path
// with its tail and their scalar path), against the host reason::bf16(float) / reason::fp16(float):
// bit for bit, overflow to Inf included.
//
// Must agree bit for bit: reason on the device with reason on the host (the same code), CUDA's
// device intrinsics with reason on the host for every non-NaN result, Philox's integer and
// uniform draws. Reported but not failed: NaN results whose payload or sign differs between
// CUDA's device instructions and CUDA's host headers (reason follows the headers; both are NaN),
// and normal() within 1e-12 (device log/cos are not glibc's, so the last bits may differ).
// Exit status: 0 pass, 1 mismatch, 77 no GPU (CTest: skipped), 2 a CUDA or other error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/cuda_check.hpp"
#include "reason/core/dtype.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/convert.cuh"

using namespace reason;

namespace {

constexpr int kOut = 6;  // per input: bf16, fp16, e4m3 sat, e4m3 nosat, e5m2 sat, e5m2 nosat

template <class X>
REASON_HOST_DEVICE void reason_convert(X x, std::uint16_t* out) {
  out[0] = bf16(x).bits;
  out[1] = fp16(x).bits;
  out[2] = fp8_e4m3(x, Saturation::finite).bits;
  out[3] = fp8_e4m3(x, Saturation::none).bits;
  out[4] = fp8_e5m2(x, Saturation::finite).bits;
  out[5] = fp8_e5m2(x, Saturation::none).bits;
}

__device__ void cuda_convert(float x, std::uint16_t* out) {
  out[0] = __nv_bfloat16_raw(__float2bfloat16(x)).x;
  out[1] = __half_raw(__float2half(x)).x;
  out[2] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
  out[3] = __nv_cvt_float_to_fp8(x, __NV_NOSAT, __NV_E4M3);
  out[4] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
  out[5] = __nv_cvt_float_to_fp8(x, __NV_NOSAT, __NV_E5M2);
}
__device__ void cuda_convert(double x, std::uint16_t* out) {
  out[0] = __nv_bfloat16_raw(__double2bfloat16(x)).x;
  out[1] = __half_raw(__double2half(x)).x;
  out[2] = __nv_cvt_double_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
  out[3] = __nv_cvt_double_to_fp8(x, __NV_NOSAT, __NV_E4M3);
  out[4] = __nv_cvt_double_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
  out[5] = __nv_cvt_double_to_fp8(x, __NV_NOSAT, __NV_E5M2);
}

template <class X>
__global__ void convert_kernel(const X* in, std::size_t n, std::uint16_t* by_cuda, std::uint16_t* by_reason) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    cuda_convert(in[i], by_cuda + kOut * i);
    reason_convert(in[i], by_reason + kOut * i);
  }
}

// Decoding: every 16-bit pattern as bf16 and fp16, the low 256 also as E4M3 and E5M2.
// Per pattern 4 floats (as bits) from CUDA and 4 from reason.
__global__ void decode_kernel(std::uint32_t* by_cuda, std::uint32_t* by_reason) {
  const unsigned b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= 65536) return;
  const auto h = static_cast<unsigned short>(b);
  by_cuda[4 * b + 0] = __float_as_uint(__bfloat162float(__nv_bfloat16(__nv_bfloat16_raw{h})));
  by_cuda[4 * b + 1] = __float_as_uint(__half2float(__half(__half_raw{h})));
  __nv_fp8_e4m3 e4;
  __nv_fp8_e5m2 e5;
  e4.__x = e5.__x = static_cast<__nv_fp8_storage_t>(b & 0xFF);
  by_cuda[4 * b + 2] = __float_as_uint(static_cast<float>(e4));
  by_cuda[4 * b + 3] = __float_as_uint(static_cast<float>(e5));
  by_reason[4 * b + 0] = __float_as_uint(static_cast<float>(bf16::from_bits(h)));
  by_reason[4 * b + 1] = __float_as_uint(static_cast<float>(fp16::from_bits(h)));
  by_reason[4 * b + 2] = __float_as_uint(static_cast<float>(fp8_e4m3::from_bits(std::uint8_t(b & 0xFF))));
  by_reason[4 * b + 3] = __float_as_uint(static_cast<float>(fp8_e5m2::from_bits(std::uint8_t(b & 0xFF))));
}

// Philox: thread t reads stream t from offset 5t.
constexpr int kWords = 9;
constexpr std::uint64_t kSeed = 0x5eed5eed12345678ull;
REASON_HOST_DEVICE void philox_draws(unsigned t, std::uint64_t* w, double* z) {
  Philox p(kSeed, t, 5ull * t);
  for (int k = 0; k < 4; ++k) w[k] = p.next_u32();
  w[4] = p.next_u64();
  w[5] = detail::bit_cast<std::uint32_t>(p.uniform());
  w[6] = detail::bit_cast<std::uint64_t>(p.uniform_double());
  w[7] = p.below(1000);
  w[8] = p.below(3000000001u);
  *z = p.normal();
}
__global__ void philox_kernel(unsigned n, std::uint64_t* w, double* z) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n) philox_draws(t, w + kWords * std::size_t{t}, z + t);
}

// ---- inputs ---------------------------------------------------------------------------------------
bool is_nan_out(int which, unsigned b) {
  switch (which) {
    case 0: return (b & 0x7FFF) > 0x7F80;
    case 1: return (b & 0x7FFF) > 0x7C00;
    case 2: case 3: return (b & 0x7F) == 0x7F;
    default: return (b & 0x7F) > 0x7C;
  }
}

// Values on and around every rounding midpoint of every target format, and the special values.
std::vector<double> edge_values() {
  std::vector<double> v = {0.0, INFINITY, 0x1p-149, 0x1p-126, 0x1.fffffep127, 0x1p-1074, 1e300, 448.0, 464.0, 480.0,
                           57344.0, 61440.0, 65504.0, 65520.0, 0x1p-133, 0x1p-24, 0x1p-25, 0x1p-9, 0x1p-10, 0x1p-16, 0x1p-17};
  auto add_format = [&](auto tag, unsigned count, auto is_special) {
    using T = decltype(tag);
    std::vector<double> finite;
    for (unsigned b = 0; b < count / 2; ++b)
      if (!is_special(b)) finite.push_back(static_cast<double>(T::from_bits(static_cast<decltype(T::bits)>(b))));
    finite.push_back(finite.back() + (finite.back() - finite[finite.size() - 2]));
    for (std::size_t i = 0; i + 1 < finite.size(); ++i) {
      const double lo = finite[i], hi = finite[i + 1], mid = lo + (hi - lo) / 2;
      for (double p : {lo, mid})
        for (double q : {p, double(std::nextafter(float(p), INFINITY)), double(std::nextafter(float(p), -INFINITY)),
                         std::nextafter(p, 1e300), std::nextafter(p, -1.0), p + p * 0x1p-30, p - p * 0x1p-30})
          v.push_back(q);
    }
  };
  add_format(bf16{}, 1u << 16, [](unsigned b) { return (b & 0x7FFF) >= 0x7F80; });
  add_format(fp16{}, 1u << 16, [](unsigned b) { return (b & 0x7FFF) >= 0x7C00; });
  add_format(fp8_e4m3{}, 256, [](unsigned b) { return (b & 0x7F) == 0x7F; });
  add_format(fp8_e5m2{}, 256, [](unsigned b) { return (b & 0x7F) >= 0x7C; });
  const std::size_t n = v.size();
  for (std::size_t i = 0; i < n; ++i) v.push_back(-v[i]);
  return v;
}

struct Tally {
  const char* what;
  long mismatches = 0, nan_notes = 0;
  std::string first;
  void bad(unsigned long long input, unsigned long long got, unsigned long long want, int which) {
    if (++mismatches > 5) return;
    char buf[200];
    std::snprintf(buf, sizeof buf, "  %s[%d] input 0x%llx: got 0x%llx, expected 0x%llx\n", what, which, input, got, want);
    first += buf;
  }
  bool report() const {
    std::printf("%-44s %s: %ld mismatches, %ld NaN-payload differences (noted)\n", what,
                mismatches ? "FAIL" : "ok", mismatches, nan_notes);
    if (mismatches) std::printf("%s", first.c_str());
    return mismatches == 0;
  }
};

template <class X, class Bits>
bool check_conversions(const char* name, const std::vector<Bits>& bits) {
  const std::size_t n = bits.size();
  std::vector<X> in(n);
  for (std::size_t i = 0; i < n; ++i) in[i] = std::bit_cast<X>(bits[i]);
  X* d_in = nullptr;
  std::uint16_t *d_cuda = nullptr, *d_reason = nullptr;
  REASON_CUDA_CHECK(cudaMalloc(&d_in, n * sizeof(X)));
  REASON_CUDA_CHECK(cudaMalloc(&d_cuda, n * kOut * sizeof(std::uint16_t)));
  REASON_CUDA_CHECK(cudaMalloc(&d_reason, n * kOut * sizeof(std::uint16_t)));
  REASON_CUDA_CHECK(cudaMemcpy(d_in, in.data(), n * sizeof(X), cudaMemcpyHostToDevice));
  convert_kernel<X><<<1024, 256>>>(d_in, n, d_cuda, d_reason);
  REASON_CUDA_CHECK(cudaGetLastError());
  std::vector<std::uint16_t> by_cuda(n * kOut), by_reason(n * kOut);
  REASON_CUDA_CHECK(cudaMemcpy(by_cuda.data(), d_cuda, by_cuda.size() * 2, cudaMemcpyDeviceToHost));
  REASON_CUDA_CHECK(cudaMemcpy(by_reason.data(), d_reason, by_reason.size() * 2, cudaMemcpyDeviceToHost));
  REASON_CUDA_CHECK(cudaFree(d_in));
  REASON_CUDA_CHECK(cudaFree(d_cuda));
  REASON_CUDA_CHECK(cudaFree(d_reason));

  std::string a = std::string(name) + ": reason device vs host", b = std::string(name) + ": CUDA device vs reason host";
  Tally same{a.c_str()}, cuda{b.c_str()};
  std::uint16_t host[kOut];
  for (std::size_t i = 0; i < n; ++i) {
    reason_convert(in[i], host);
    for (int k = 0; k < kOut; ++k) {
      const unsigned h = host[k], r = by_reason[kOut * i + k], c = by_cuda[kOut * i + k];
      if (r != h) same.bad(bits[i], r, h, k);
      if (c != h) {
        if (is_nan_out(k, c) && is_nan_out(k, h)) ++cuda.nan_notes;
        else cuda.bad(bits[i], c, h, k);
      }
    }
  }
  const bool ok1 = same.report(), ok2 = cuda.report();
  return ok1 && ok2;
}

bool check_decoding() {
  std::uint32_t *d_cuda = nullptr, *d_reason = nullptr;
  REASON_CUDA_CHECK(cudaMalloc(&d_cuda, 4 * 65536 * sizeof(std::uint32_t)));
  REASON_CUDA_CHECK(cudaMalloc(&d_reason, 4 * 65536 * sizeof(std::uint32_t)));
  decode_kernel<<<256, 256>>>(d_cuda, d_reason);
  REASON_CUDA_CHECK(cudaGetLastError());
  std::vector<std::uint32_t> by_cuda(4 * 65536), by_reason(4 * 65536);
  REASON_CUDA_CHECK(cudaMemcpy(by_cuda.data(), d_cuda, by_cuda.size() * 4, cudaMemcpyDeviceToHost));
  REASON_CUDA_CHECK(cudaMemcpy(by_reason.data(), d_reason, by_reason.size() * 4, cudaMemcpyDeviceToHost));
  REASON_CUDA_CHECK(cudaFree(d_cuda));
  REASON_CUDA_CHECK(cudaFree(d_reason));
  Tally same{"decode: reason device vs host"}, cuda{"decode: CUDA device vs reason host"};
  for (unsigned b = 0; b < 65536; ++b) {
    const auto b8 = static_cast<std::uint8_t>(b & 0xFF);
    const float host[4] = {static_cast<float>(bf16::from_bits(std::uint16_t(b))), static_cast<float>(fp16::from_bits(std::uint16_t(b))),
                           static_cast<float>(fp8_e4m3::from_bits(b8)), static_cast<float>(fp8_e5m2::from_bits(b8))};
    for (int k = 0; k < 4; ++k) {
      const auto h = std::bit_cast<std::uint32_t>(host[k]);
      if (by_reason[4 * b + k] != h) same.bad(b, by_reason[4 * b + k], h, k);
      if (by_cuda[4 * b + k] != h) {
        if (std::isnan(host[k]) && std::isnan(std::bit_cast<float>(by_cuda[4 * b + k]))) ++cuda.nan_notes;
        else cuda.bad(b, by_cuda[4 * b + k], h, k);
      }
    }
  }
  const bool ok1 = same.report(), ok2 = cuda.report();
  return ok1 && ok2;
}

bool check_philox() {
  constexpr unsigned n = 1u << 16;
  std::uint64_t* d_w = nullptr;
  double* d_z = nullptr;
  REASON_CUDA_CHECK(cudaMalloc(&d_w, std::size_t{n} * kWords * sizeof(std::uint64_t)));
  REASON_CUDA_CHECK(cudaMalloc(&d_z, n * sizeof(double)));
  philox_kernel<<<n / 256, 256>>>(n, d_w, d_z);
  REASON_CUDA_CHECK(cudaGetLastError());
  std::vector<std::uint64_t> w(std::size_t{n} * kWords);
  std::vector<double> z(n);
  REASON_CUDA_CHECK(cudaMemcpy(w.data(), d_w, w.size() * sizeof(std::uint64_t), cudaMemcpyDeviceToHost));
  REASON_CUDA_CHECK(cudaMemcpy(z.data(), d_z, z.size() * sizeof(double), cudaMemcpyDeviceToHost));
  REASON_CUDA_CHECK(cudaFree(d_w));
  REASON_CUDA_CHECK(cudaFree(d_z));
  Tally draws{"philox: device vs host, integer/uniform draws"}, normal{"philox: device vs host, normal() within 1e-12"};
  std::uint64_t hw[kWords];
  double hz = 0;
  for (unsigned t = 0; t < n; ++t) {
    philox_draws(t, hw, &hz);
    for (int k = 0; k < kWords; ++k)
      if (w[std::size_t{t} * kWords + k] != hw[k]) draws.bad(t, w[std::size_t{t} * kWords + k], hw[k], k);
    if (!(std::fabs(z[t] - hz) <= 1e-12 * std::fmax(1.0, std::fabs(hz))))
      normal.bad(t, std::bit_cast<std::uint64_t>(z[t]), std::bit_cast<std::uint64_t>(hz), 0);
  }
  const bool ok1 = draws.report(), ok2 = normal.report();
  return ok1 && ok2;
}

/// gpu::to_bf16 / gpu::to_fp16 (`convert`) over the float bit patterns against Host(float).bits:
/// aligned buffers (the 4-wide path, an element count that leaves a tail) and buffers one element
/// off (the scalar path).
template <class T, class Host, class Convert>
bool check_narrow(const char* name, const std::vector<std::uint32_t>& bits, Convert convert) {
  const std::size_t n = bits.size() % 4 == 0 ? bits.size() - 1 : bits.size();
  float* d_in = nullptr;
  T* d_out = nullptr;
  REASON_CUDA_CHECK(cudaMalloc(&d_in, (n + 1) * sizeof(float)));
  REASON_CUDA_CHECK(cudaMalloc(&d_out, (n + 1) * sizeof(T)));
  bool ok = true;
  for (std::size_t shift : {0, 1}) {
    const std::string what = std::string(name) + (shift ? " (scalar path)" : " (vector path)") + " vs host";
    Tally t{what.c_str()};
    REASON_CUDA_CHECK(cudaMemcpy(d_in + shift, bits.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    convert(d_in + shift, d_out + shift, n, nullptr);
    REASON_CUDA_CHECK(cudaGetLastError());
    std::vector<std::uint16_t> got(n);
    REASON_CUDA_CHECK(cudaMemcpy(got.data(), d_out + shift, n * sizeof(T), cudaMemcpyDeviceToHost));
    const int which = std::is_same_v<Host, bf16> ? 0 : 1;  // is_nan_out's index
    for (std::size_t i = 0; i < n; ++i) {
      const unsigned want = Host(std::bit_cast<float>(bits[i])).bits, g = got[i];
      if (g == want) continue;
      if (is_nan_out(which, g) && is_nan_out(which, want))
        ++t.nan_notes;
      else
        t.bad(bits[i], g, want, which);
    }
    ok = t.report() && ok;
  }
  REASON_CUDA_CHECK(cudaFree(d_in));
  REASON_CUDA_CHECK(cudaFree(d_out));
  return ok;
}

// REASON_CUDA_CHECK names the call, CUDA's error and the place; it runs with or without a GPU.
bool check_cuda_check() {
  try {
    REASON_CUDA_CHECK(cudaSetDevice(-1));
  } catch (const Error& e) {
    const std::string m = e.what();
    const bool ok = m.rfind("cudaSetDevice(-1) failed: cuda", 0) == 0 && m.find("dtype_philox.cu:") != std::string::npos;
    if (!ok) std::printf("REASON_CUDA_CHECK message not as expected: %s\n", m.c_str());
    return ok;
  }
  std::printf("REASON_CUDA_CHECK did not throw on cudaSetDevice(-1)\n");
  return false;
}

}  // namespace

int main() {
  if (!check_cuda_check()) return 1;
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("no CUDA device (%s): skipped\n", status != cudaSuccess ? cudaGetErrorString(status) : "count 0");
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    REASON_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device 0: %s, sm_%d%d\n", prop.name, prop.major, prop.minor);

    std::vector<std::uint32_t> floats;
    Philox rng(1);
    for (int i = 0; i < (1 << 21); ++i) floats.push_back(rng.next_u32());  // every exponent
    for (double e : edge_values()) floats.push_back(std::bit_cast<std::uint32_t>(static_cast<float>(e)));
    for (std::uint32_t u : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FA00000u})
      floats.push_back(u);
    for (std::uint32_t u = 1; u < (1u << 16); ++u) floats.push_back(u * 127u);  // float subnormals

    std::vector<std::uint64_t> doubles;
    for (int i = 0; i < (1 << 20); ++i) {
      std::uint64_t u = rng.next_u64();
      if (i % 2) u = (u & 0x800FFFFFFFFFFFFFull) | (std::uint64_t{1023 - 140 + rng.below(270)} << 52);
      doubles.push_back(u);
    }
    for (double e : edge_values()) doubles.push_back(std::bit_cast<std::uint64_t>(e));
    for (std::uint64_t u : {0x7FF8000000000000ull, 0xFFF8000000000000ull, 0x7FF0000000000001ull, 0x7FF4000000000000ull,
                            0xFFFFFFFFFFFFFFFFull, 0x7FFC000000000000ull})
      doubles.push_back(u);

    bool ok = check_decoding();
    ok = check_conversions<float>("float", floats) && ok;
    ok = check_conversions<double>("double", doubles) && ok;
    ok = check_narrow<__nv_bfloat16, bf16>("gpu::to_bf16", floats, gpu::to_bf16) && ok;
    ok = check_narrow<__half, fp16>("gpu::to_fp16", floats, gpu::to_fp16) && ok;
    ok = check_philox() && ok;
    std::printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
