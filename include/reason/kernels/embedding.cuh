// reason/kernels/embedding.cuh — token embedding lookup and its scatter-add backward on the GPU.
//
// The contract of kernels/embedding.hpp on device views, with a cudaStream_t last:
//   forward   out[n, :] = table[tokens[n], :]                      (a gather);
//   backward  dtable[tokens[n], :] += dout[n, :], positions summed in order n = 0, 1, ...
// Storage T is float, __nv_bfloat16 or __half; dtable may be T or float (an fp32 gradient buffer).
//
// Determinism: the backward uses no atomics. It sorts (token, position) pairs by token with
// CUB's stable radix sort — equal tokens keep their positions in increasing order — and then one
// block per distinct token (times a column slice) walks that token's positions in order:
//   acc = float(dtable[t, j]);  for each position n of t, in order: acc += float(dout[n, j]);
//   dtable[t, j] = acc   (rounded once to the dtable type).
// That is the host's order of additions exactly, so for float the result is the host's bit for
// bit, for any N, any repetition and any GPU; in bf16 / fp16 it is the rounding of the fp32 sum
// (better than adding in 16 bits). The sort's scratch (4 N int32 plus CUB's temporary storage) comes
// from the stream-ordered allocator (cudaMallocAsync / cudaFreeAsync on the same stream), so the
// call does not synchronise. A very frequent token makes one block do a long serial walk; the
// cost is O(repeats) for that token's rows, not a race.
//
// Tokens live on the device, so they are not checked before the launch: an id outside [0, V)
// makes the forward write a NaN row (loud, never an out-of-bounds read) and the backward skip
// that position (never an out-of-bounds write). gpu::check_tokens (which synchronises) names
// the first such position with the host's message.
//
// Note: CUB brings in libcu++, which declares a global namespace ::cuda. After
// `using namespace reason;` an unqualified `gpu::` is then ambiguous: write reason::gpu:: (or a
// namespace alias) in such files. Code inside namespace reason is unaffected.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>
#include <limits>
#include <type_traits>

#include "reason/core/cuda_check.hpp"
#include "reason/core/error.hpp"
#include "reason/core/view.hpp"
#include "reason/kernels/device_util.cuh"

namespace reason::gpu {

namespace detail {

inline constexpr int kEmbedBlock = 256;
inline constexpr int kEmbedBackBlock = 128;

template <class T, int VEC>
__global__ void __launch_bounds__(kEmbedBlock)
    embedding_forward_kernel(const std::int32_t* tokens, index_t stok, const T* table, index_t stab, index_t vocab,
                             T* out, index_t sout, index_t n, int c) {
  const int j = (static_cast<int>(blockIdx.x) * kEmbedBlock + static_cast<int>(threadIdx.x)) * VEC;
  if (j >= c) return;
  for (index_t r = blockIdx.y; r < n; r += gridDim.y) {
    const std::int32_t t = tokens[r * stok];
    Pack<T, VEC> p;
    if (t >= 0 && t < vocab) {
      p = *reinterpret_cast<const Pack<T, VEC>*>(table + static_cast<index_t>(t) * stab + j);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) p.v[k] = from_f32<T>(__int_as_float(0x7fffffff));
    }
    *reinterpret_cast<Pack<T, VEC>*>(out + r * sout + j) = p;
  }
}

// keys[n] = tokens[n] (vocab for an id outside [0, vocab): sorted last, then skipped), rows[n] = n.
template <class I>
__global__ void embedding_keys_kernel(const I* tokens, index_t stok, index_t n, index_t vocab, std::uint32_t* keys,
                                      std::int32_t* rows) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const I t = tokens[i * stok];
  keys[i] = (t >= 0 && t < vocab) ? static_cast<std::uint32_t>(t) : static_cast<std::uint32_t>(vocab);
  rows[i] = static_cast<std::int32_t>(i);
}

// Block (i, y): sorted entry i, if it starts a run of one token, sums that run's rows in order
// into columns y * 128 + threadIdx.x (+ k * gridDim.y * 128).
template <class T, class G>
__global__ void __launch_bounds__(kEmbedBackBlock)
    embedding_backward_kernel(const std::uint32_t* keys, const std::int32_t* rows, int n, const T* dout, index_t sd,
                              G* dtable, index_t st, std::uint32_t vocab, int c) {
  const int i = static_cast<int>(blockIdx.x);
  const std::uint32_t t = keys[i];
  if (t >= vocab || (i > 0 && keys[i - 1] == t)) return;  // not a run's first entry, or an invalid id
  int end = i + 1;
  while (end < n && keys[end] == t) ++end;
  G* d = dtable + static_cast<index_t>(t) * st;
  for (int j = static_cast<int>(blockIdx.y) * kEmbedBackBlock + static_cast<int>(threadIdx.x); j < c;
       j += static_cast<int>(gridDim.y) * kEmbedBackBlock) {
    float acc = to_f32(d[j]);
    for (int p = i; p < end; ++p) acc = __fadd_rn(acc, to_f32(dout[static_cast<index_t>(rows[p]) * sd + j]));
    d[j] = from_f32<G>(acc);
  }
}

inline std::size_t align256(std::size_t b) { return (b + 255) / 256 * 256; }

}  // namespace detail

/// out[n, :] = table[tokens[n], :] (device views). An id outside [0, V) gives a NaN row.
template <class T>
void embedding_forward(View<const std::int32_t, 1> tokens,  // tokens: [N], ids in [0, V)
                       View<const T, 2> table,              // table: [V, C]
                       View<T, 2> out,                      // out: [N, C]
                       cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::embedding_forward: T is float, __nv_bfloat16 or __half");
  constexpr const char* fn = "gpu::embedding_forward";
  const index_t n = tokens.shape[0], vocab = table.shape[0], c = table.shape[1];
  expect_view(tokens, fn, "tokens", {n});
  expect_view(table, fn, "table", {vocab, c});
  expect_view(out, fn, "out", {n, c});
  REASON_CHECK(c <= std::numeric_limits<int>::max() - 8 * detail::kEmbedBlock, fn, ": width C = ", c,
               " is too large");
  if (n == 0 || c == 0) return;
  constexpr int V = detail::vec16<T>;
  const bool vec = detail::vec_ok(table, V) && detail::vec_ok(out, V);
  const int vw = vec ? V : 1;
  const dim3 grid(static_cast<unsigned>(((c + vw - 1) / vw + detail::kEmbedBlock - 1) / detail::kEmbedBlock),
                  detail::grid_rows(n));
  if (vec) {
    detail::embedding_forward_kernel<T, V><<<grid, detail::kEmbedBlock, 0, stream>>>(
        tokens.data, tokens.stride[0], table.data, table.stride[0], vocab, out.data, out.stride[0], n,
        static_cast<int>(c));
  } else {
    detail::embedding_forward_kernel<T, 1><<<grid, detail::kEmbedBlock, 0, stream>>>(
        tokens.data, tokens.stride[0], table.data, table.stride[0], vocab, out.data, out.stride[0], n,
        static_cast<int>(c));
  }
  REASON_CUDA_CHECK(cudaGetLastError());
}

/// dtable[tokens[n], :] += dout[n, :], positions summed in order (deterministic; see the header).
/// dtable is T or float. Ids outside [0, V) are skipped.
template <class T, class G>
void embedding_backward(View<const std::int32_t, 1> tokens,  // tokens: [N], ids in [0, V)
                        View<const T, 2> dout,               // dout: [N, C]
                        View<G, 2> dtable,                   // dtable: [V, C], accumulated
                        cudaStream_t stream) {
  static_assert(detail::is_storage_v<T>, "gpu::embedding_backward: T is float, __nv_bfloat16 or __half");
  static_assert(std::is_same_v<G, T> || std::is_same_v<G, float>, "gpu::embedding_backward: dtable is T or float");
  constexpr const char* fn = "gpu::embedding_backward";
  const index_t n = tokens.shape[0], vocab = dtable.shape[0], c = dtable.shape[1];
  expect_view(tokens, fn, "tokens", {n});
  expect_view(dout, fn, "dout", {n, c});
  expect_view(dtable, fn, "dtable", {vocab, c});
  REASON_CHECK(n <= std::numeric_limits<std::int32_t>::max(), fn, ": N = ", n, " positions exceed ",
               std::numeric_limits<std::int32_t>::max());
  REASON_CHECK(vocab < std::numeric_limits<std::int32_t>::max(), fn, ": vocabulary ", vocab, " is too large");
  REASON_CHECK(c <= std::numeric_limits<int>::max() - detail::kEmbedBackBlock, fn, ": width C = ", c,
               " is too large");
  if (n == 0 || c == 0 || vocab == 0) return;
  const int ni = static_cast<int>(n);
  const int end_bit = std::bit_width(static_cast<std::uint32_t>(vocab));  // the sentinel `vocab` fits too
  // Scratch: keys and rows, in and out, then CUB's temporary storage.
  const std::size_t ints = detail::align256(static_cast<std::size_t>(n) * 4);
  std::size_t cub_bytes = 0;
  REASON_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, static_cast<const std::uint32_t*>(nullptr),
                                                    static_cast<std::uint32_t*>(nullptr),
                                                    static_cast<const std::int32_t*>(nullptr),
                                                    static_cast<std::int32_t*>(nullptr), ni, 0, end_bit, stream));
  void* scratch = nullptr;
  REASON_CUDA_CHECK(cudaMallocAsync(&scratch, 4 * ints + cub_bytes, stream));
  auto* base = static_cast<unsigned char*>(scratch);
  auto* keys_in = reinterpret_cast<std::uint32_t*>(base);
  auto* keys_out = reinterpret_cast<std::uint32_t*>(base + ints);
  auto* rows_in = reinterpret_cast<std::int32_t*>(base + 2 * ints);
  auto* rows_out = reinterpret_cast<std::int32_t*>(base + 3 * ints);
  void* cub_temp = base + 4 * ints;
  try {
    detail::embedding_keys_kernel<std::int32_t><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
        tokens.data, tokens.stride[0], n, vocab, keys_in, rows_in);
    REASON_CUDA_CHECK(cudaGetLastError());
    REASON_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp, cub_bytes, keys_in, keys_out, rows_in, rows_out, ni,
                                                      0, end_bit, stream));
    const index_t slices = std::min<index_t>((c + detail::kEmbedBackBlock - 1) / detail::kEmbedBackBlock, 65535);
    const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(slices));
    detail::embedding_backward_kernel<T, G><<<grid, detail::kEmbedBackBlock, 0, stream>>>(
        keys_out, rows_out, ni, dout.data, dout.stride[0], dtable.data, dtable.stride[0],
        static_cast<std::uint32_t>(vocab), static_cast<int>(c));
    REASON_CUDA_CHECK(cudaGetLastError());
  } catch (...) {
    (void)cudaFreeAsync(scratch, stream);
    throw;
  }
  REASON_CUDA_CHECK(cudaFreeAsync(scratch, stream));
}

/// Throws, naming the first position, when a token id on the device is outside [0, vocab).
/// Synchronises the stream (it copies the answer back): for debugging and tests, not the hot path.
inline void check_tokens(View<const std::int32_t, 1> tokens, index_t vocab, cudaStream_t stream,
                         const char* who = "gpu::embedding") {
  const auto bad = detail::first_out_of_range(tokens, 0, vocab, stream);
  if (bad.index >= 0) [[unlikely]] {
    fail(who, ": tokens[", bad.index, "] = ", bad.value, " is outside the vocabulary [0, ", vocab, ")");
  }
}

}  // namespace reason::gpu
