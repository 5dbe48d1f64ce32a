// The GPU samplers (kernels/sampler.cuh) against the host policies (infer/sampler.hpp): the same
// logits (bf16 / fp16 widened to float for the host), the same Philox states, row by row.
//
// Policies: Greedy; Temperature 0.7, 1.0 and 0; TopK<1>, TopK<50> (block-level selection), TopK<2000>
// (the full sort); TopP 0.9, 1.0 (and 0.9 at temperature 0.7): float, bf16 and fp16 logits, V = 17, 1000,
// 50257, B = 64, two Philox positions each (offset 0, and offset 2^32 + 12345 + row), rows of random
// logits (peaked, flat — wide nuclei go to the full sort — and very peaked) and adversarial rows:
// ties at the top-k / top-p boundary (few distinct values; all equal), -inf entries (30%; all but
// one; fewer finite than k), one huge logit (the others' weights underflow to 0), huge negative
// finite logits, +0 / -0 maxima, the maximum repeated, logits of scale 300 (partial underflow).
// Padded rows (scalar loads) and strided outputs are covered too.
//
// What must hold, per row:
//   * the rng entry advanced by exactly one value (seed, stream and offset as the host's);
//   * logp_model bit for bit (a difference of one float ulp is tolerated and counted: it needs
//     x_t - lse within ~1e-13 of a float rounding boundary, since the sum is associated differently);
//   * argmax rows (Greedy, temperature 0): the token exactly and logp_sampled == 0;
//   * the token the host's, unless u * total lies within delta * total (+ the uncertain mass below)
//     of the boundary between the two tokens in the host's own CDF (delta = 1e-9, far above the
//     ~1e-11 worst case of the device's different association of the sums); such rows are counted
//     ("near a boundary") and at most 2 per case are allowed. For TopP the nucleus cut itself may
//     move by the tokens whose prefix mass lies within delta * total of p * total: their mass is the
//     "uncertain mass", added to both the token and the logp_sampled tolerance;
//   * logp_sampled within 1e-13 + 8 n 2^-53 (n the support size: the relative error of two sums of
//     n positive terms) + 2 (uncertain mass) / mass.
// Also: the device expf (libm_expf) against the host's std::exp(float) over every 61st float in
// [-104, 0] (mismatch allowed only at -0x1.f8cbb2p+5, where glibc's SSE2 and FMA builds differ);
// two identical calls give the same bits; errors (a NaN, a +inf, an all -inf row) name the first bad
// row and token, leave that row's rng entry alone and advance the others; argument errors (checked
// before any launch, on any machine). A timing table (B 256, V 151936) is printed, not checked.
// Exit status: 0 pass, 1 a check failed, 77 no GPU (CTest: skipped), 2 an unexpected error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/philox.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/kernels/sampler.cuh"
#include "cuda/cuda_test_util.hpp"

namespace dev = reason::gpu;
namespace infer = reason::infer;
using reason::index_t;
using reason::Philox;
using reason::View;
using bf = __nv_bfloat16;
using f16 = __half;

namespace {

int failures = 0;
constexpr double delta = 1e-9;  // relative slack for "near a CDF boundary"
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

template <class T>
const char* type_name() {
  return reason::test::storage_name<T>();
}

std::string label(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

std::uint32_t float_bits(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
std::uint64_t double_bits(double x) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Policies under test: a name and the host object.

template <class P>
struct Case {
  const char* name;
  P policy;
};

template <class P>
float temperature_of(const P& p) {
  if constexpr (requires { p.temperature; })
    return p.temperature;
  else
    return 0.0f;
}

// ---------------------------------------------------------------------------------------------
// The host reference with the quantities needed to judge a difference.

struct Ref {
  infer::TokenDraw d;
  bool argmax = false;
  std::vector<std::int32_t> order;  // support order (top-p: every finite token, sorted)
  std::vector<double> cum;          // the host's running sums over `order`
  std::size_t n = 0;                // support size the host used
  std::size_t n_hi = 0;             // the largest support the device might use (top-p), else n
  double total = 0;                 // the normaliser the host used
  double target = 0;                // u * total
  double slack = 0;                 // top-p: mass whose inclusion is uncertain
  bool consistent = true;           // this reimplementation picks the host's token
};

template <class P>
Ref reference(const P& policy, std::span<const float> x, Philox& g, index_t row) {
  Ref ref;
  const Philox g0 = g;
  infer::SampleScratch scratch;
  ref.d = policy.sample(x, g, scratch, row);
  Philox gu = g0;
  const double u = infer::detail::unit_open(gu.next_u32());
  const float t = temperature_of(policy);
  if (t == 0.0f) {
    ref.argmax = true;
    return ref;
  }
  float mx = -kInf;
  for (float v : x) mx = v > mx ? v : mx;
  const double inv_t = 1.0 / static_cast<double>(t), dmx = static_cast<double>(mx);
  auto weight = [&](std::int32_t id) { return std::exp((static_cast<double>(x[static_cast<std::size_t>(id)]) - dmx) * inv_t); };
  for (std::size_t v = 0; v < x.size(); ++v)
    if (x[v] > -kInf) ref.order.push_back(static_cast<std::int32_t>(v));
  const std::size_t finite = ref.order.size();
  double total_id = 0;  // top-p's total: token-id order
  for (std::int32_t id : ref.order) total_id += weight(id);
  constexpr bool by_id = !requires { P::k; } && !requires { policy.p; };
  if constexpr (!by_id) {
    std::stable_sort(ref.order.begin(), ref.order.end(), [&](std::int32_t a, std::int32_t b) {
      const float la = x[static_cast<std::size_t>(a)], lb = x[static_cast<std::size_t>(b)];
      return la > lb || (la == lb && a < b);
    });
  }
  std::vector<double> w(finite);
  double cum = 0;
  for (std::size_t i = 0; i < finite; ++i) {
    w[i] = weight(ref.order[i]);
    cum += w[i];
    ref.cum.push_back(cum);
  }
  ref.n = finite;
  if constexpr (requires { P::k; }) {
    ref.n = std::min<std::size_t>(finite, static_cast<std::size_t>(P::k));
    // the host sums the kept prefix from zero, which is exactly cum[0..n)
  } else if constexpr (requires { policy.p; }) {
    const double target_p = static_cast<double>(policy.p) * total_id;
    auto first_reaching = [&](double level) {
      for (std::size_t i = 0; i < finite; ++i)
        if (ref.cum[i] >= level) return i + 1;
      return finite;
    };
    ref.n = first_reaching(target_p);
    const std::size_t lo = first_reaching(target_p - delta * total_id);
    const std::size_t hi = first_reaching(target_p + delta * total_id);
    ref.n_hi = hi;
    ref.slack = ref.cum[hi - 1] - ref.cum[lo - 1];
  }
  if (ref.n_hi == 0) ref.n_hi = ref.n;
  ref.total = ref.cum[ref.n - 1];
  ref.target = u * ref.total;
  // The host's invert_cdf over (order, w)[0, n): must give the host's token.
  double c = 0;
  std::size_t pick = ref.n;
  for (std::size_t i = 0; i < ref.n; ++i) {
    if (w[i] <= 0) continue;
    c += w[i];
    pick = i;
    if (c > ref.target) break;
  }
  ref.consistent = pick < ref.n && ref.order[pick] == ref.d.token;
  return ref;
}

struct Tally {
  std::string what;
  std::size_t rows = 0, lm_ulp = 0, near = 0, fails = 0;
  double worst_ls = 0;  // worst |d logp_sampled| / tolerance
  std::string first;

  void fail(const std::string& why) {
    if (fails++ == 0) first = why;
  }
  void finish() {
    const bool ok = fails == 0 && near <= 2;
    if (!ok) ++failures;
    std::printf("%s %s: %zu rows, logp_sampled err/tol %.3f, %zu logp_model 1-ulp, %zu near a boundary%s%s%s\n",
                ok ? "ok  " : "FAIL", what.c_str(), rows, worst_ls, lm_ulp, near, fails ? ", " : "",
                fails ? label("%zu wrong, first: ", fails).c_str() : "", first.c_str());
  }
};

void judge(const Ref& ref, std::int32_t tok, double ls, double lm, index_t row, Tally& t) {
  ++t.rows;
  if (!ref.consistent) t.fail(label("row %lld: the test's reference disagrees with the host sampler", static_cast<long long>(row)));
  // logp_model
  if (double_bits(lm) != double_bits(ref.d.logp_model)) {
    if (std::abs(lm - ref.d.logp_model) <= 0x1p-23 * std::abs(ref.d.logp_model))
      ++t.lm_ulp;
    else
      t.fail(label("row %lld: logp_model %.17g, host %.17g", static_cast<long long>(row), lm, ref.d.logp_model));
  }
  if (ref.argmax) {
    if (tok != ref.d.token || ls != 0.0)
      t.fail(label("row %lld: argmax token %d logp %g, host %d", static_cast<long long>(row), tok, ls, ref.d.token));
    return;
  }
  const double tol = 1e-13 + 8.0 * static_cast<double>(ref.n_hi) * 0x1p-53 + 2.0 * ref.slack / ref.total;
  if (tok == ref.d.token) {
    const double err = std::abs(ls - ref.d.logp_sampled);
    if (!(err <= tol))
      t.fail(label("row %lld: logp_sampled %.17g, host %.17g", static_cast<long long>(row), ls, ref.d.logp_sampled));
    else
      t.worst_ls = std::max(t.worst_ls, err / tol);
    return;
  }
  // A different token: only where the host's own CDF puts u * total next to that token.
  std::size_t i = 0;
  while (i < ref.n_hi && ref.order[i] != tok) ++i;
  if (i == ref.n_hi) {
    t.fail(label("row %lld: token %d is outside the host's support (host %d)", static_cast<long long>(row), tok,
                 ref.d.token));
    return;
  }
  const double lo = i > 0 ? ref.cum[i - 1] : 0.0, hi = ref.cum[i];
  const double slack = delta * ref.total + ref.slack;
  if (ref.target >= lo - slack && ref.target <= hi + slack)
    ++t.near;
  else
    t.fail(label("row %lld: token %d, host %d (u * total %.17g, the device's token spans [%.17g, %.17g])",
                 static_cast<long long>(row), tok, ref.d.token, ref.target, lo, hi));
}

// ---------------------------------------------------------------------------------------------
// Logits.

/// Row r of a random batch: kind r % 3 — 0: 3 N(0, 1) (moderate), 1: U(-2, 2) (flat), 2: 8 N(0, 1).
std::vector<float> random_logits(Philox& rng, index_t B, index_t V) {
  std::vector<float> x(static_cast<std::size_t>(B * V));
  for (index_t r = 0; r < B; ++r)
    for (index_t v = 0; v < V; ++v) {
      float& y = x[static_cast<std::size_t>(r * V + v)];
      switch (r % 3) {
        case 0: y = static_cast<float>(3.0 * rng.normal()); break;
        case 1: y = -2.0f + 4.0f * rng.uniform(); break;
        default: y = static_cast<float>(8.0 * rng.normal()); break;
      }
    }
  return x;
}

/// Adversarial rows, pattern r % 11.
std::vector<float> adversarial_logits(Philox& rng, index_t B, index_t V) {
  std::vector<float> x(static_cast<std::size_t>(B * V));
  for (index_t r = 0; r < B; ++r) {
    float* y = x.data() + r * V;
    const auto pos = [&] { return static_cast<index_t>(rng.below(static_cast<std::uint32_t>(V))); };
    switch (r % 11) {
      case 0:  // few distinct values: ties at every boundary
        for (index_t v = 0; v < V; ++v) y[v] = -0.5f * static_cast<float>(rng.below(3));
        break;
      case 1:  // all equal
        for (index_t v = 0; v < V; ++v) y[v] = 1.25f;
        break;
      case 2:  // 30% -inf
        for (index_t v = 0; v < V; ++v) y[v] = rng.uniform() < 0.3f ? -kInf : static_cast<float>(2.0 * rng.normal());
        break;
      case 3:  // one finite logit
        for (index_t v = 0; v < V; ++v) y[v] = -kInf;
        y[pos()] = -3.5f;
        break;
      case 4:  // fewer finite than k (at most 10)
        for (index_t v = 0; v < V; ++v) y[v] = -kInf;
        for (int q = 0; q < 10; ++q) y[pos()] = static_cast<float>(rng.normal());
        break;
      case 5:  // one huge logit: the others' weights underflow to 0
        for (index_t v = 0; v < V; ++v) y[v] = static_cast<float>(rng.normal());
        y[pos()] = 1.0e4f;
        break;
      case 6:  // huge negative finite logits
        for (index_t v = 0; v < V; ++v) y[v] = rng.uniform() < 0.5f ? -1.0e30f : static_cast<float>(rng.normal());
        break;
      case 7:  // +0 and -0 share the maximum with negatives and -inf around
        for (index_t v = 0; v < V; ++v) y[v] = rng.uniform() < 0.5f ? -kInf : -1.0f - rng.uniform();
        for (int q = 0; q < 4; ++q) y[pos()] = (q % 2) ? 0.0f : -0.0f;
        break;
      case 8:  // the maximum repeated, one copy at the last token
        for (index_t v = 0; v < V; ++v) y[v] = static_cast<float>(rng.normal());
        for (int q = 0; q < 3; ++q) y[pos()] = 7.0f;
        y[V - 1] = 7.0f;
        break;
      case 9:  // scale 300: most weights underflow, some do not
        for (index_t v = 0; v < V; ++v) y[v] = static_cast<float>(300.0 * rng.normal());
        break;
      default:  // two levels: a plateau of 5 tokens at the top (top-p boundary inside a tie)
        for (index_t v = 0; v < V; ++v) y[v] = -4.0f;
        for (int q = 0; q < 5; ++q) y[pos()] = 0.0f;
        break;
    }
  }
  return x;
}

template <class T>
std::vector<T> to_storage(const std::vector<float>& f, std::vector<float>& widened) {
  std::vector<T> t(f.size());
  widened.resize(f.size());
  for (std::size_t i = 0; i < f.size(); ++i) {
    t[i] = reason::test::from_float<T>(f[i]);
    widened[i] = reason::test::to_float(t[i]);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// One batch through host and device.

struct Layout {
  index_t pad = 0;         // extra elements per logits row
  index_t out_stride = 1;  // tokens / logps stride
};

template <class T, class P>
void run_case(dev::SampleWorkspace& ws, dev::Stream& st, const Case<P>& c, const std::vector<float>& raw, index_t B,
              index_t V, std::uint64_t seed, std::uint64_t offset_base, bool offset_by_row, Layout lay,
              const char* data_name) {
  std::vector<float> x;
  const std::vector<T> stored = to_storage<T>(raw, x);
  const index_t ld = V + lay.pad;
  std::vector<T> padded(static_cast<std::size_t>(B * ld), reason::test::from_float<T>(-1.0f));
  for (index_t r = 0; r < B; ++r)
    std::copy_n(stored.begin() + r * V, V, padded.begin() + r * ld);
  std::vector<Philox> rng(static_cast<std::size_t>(B));
  for (index_t r = 0; r < B; ++r)
    rng[static_cast<std::size_t>(r)] =
        Philox(seed, static_cast<std::uint64_t>(r), offset_base + (offset_by_row ? static_cast<std::uint64_t>(r) : 0));

  dev::DeviceBuffer<T> d_x(padded.size());
  d_x.copy_from(padded);
  dev::DeviceBuffer<Philox> d_rng(rng.size());
  const index_t os = lay.out_stride;
  dev::DeviceBuffer<std::int32_t> d_tok(static_cast<std::size_t>(B * os));
  dev::DeviceBuffer<double> d_ls(static_cast<std::size_t>(B * os)), d_lm(static_cast<std::size_t>(B * os));
  const View<const T, 2> lv(d_x.data(), {B, V}, {ld, 1});
  const View<Philox, 1> rv(d_rng.data(), {B}, {1});
  const View<std::int32_t, 1> tv(d_tok.data(), {B}, {os});
  const View<double, 1> lsv(d_ls.data(), {B}, {os}), lmv(d_lm.data(), {B}, {os});

  std::vector<std::int32_t> tok[2];
  std::vector<double> ls[2], lm[2];
  std::vector<Philox> rng_after;
  for (int rep = 0; rep < 2; ++rep) {
    d_rng.copy_from(rng);
    dev::sample_rows(ws, c.policy, lv, rv, tv, lsv, lmv, st.get());
    tok[rep].resize(static_cast<std::size_t>(B * os));
    ls[rep].resize(tok[rep].size());
    lm[rep].resize(tok[rep].size());
    d_tok.copy_to(tok[rep]);
    d_ls.copy_to(ls[rep]);
    d_lm.copy_to(lm[rep]);
    if (rep == 0) {
      rng_after.resize(rng.size());
      d_rng.copy_to(rng_after);
    }
  }

  Tally t;
  t.what = label("%s %s V=%lld %s offset %s%s%s", c.name, type_name<T>(), static_cast<long long>(V), data_name,
                 offset_base ? "2^32+12345+row" : "0", lay.pad ? " padded" : "", os > 1 ? " strided" : "");
  for (index_t r = 0; r < B; ++r) {
    Philox g = rng[static_cast<std::size_t>(r)];
    const Ref ref = reference(c.policy, std::span<const float>(x.data() + r * V, static_cast<std::size_t>(V)), g, r);
    const Philox& gd = rng_after[static_cast<std::size_t>(r)];
    if (gd.seed() != g.seed() || gd.stream() != g.stream() || gd.offset() != g.offset())
      t.fail(label("row %lld: rng offset %llu, host %llu", static_cast<long long>(r),
                   static_cast<unsigned long long>(gd.offset()), static_cast<unsigned long long>(g.offset())));
    const auto i = static_cast<std::size_t>(r * os);
    judge(ref, tok[0][i], ls[0][i], lm[0][i], r, t);
    if (tok[1][i] != tok[0][i] || double_bits(ls[1][i]) != double_bits(ls[0][i]) ||
        double_bits(lm[1][i]) != double_bits(lm[0][i]))
      t.fail(label("row %lld: a second identical call gave different bits", static_cast<long long>(r)));
  }
  t.finish();
}

// ---------------------------------------------------------------------------------------------
// expf

__global__ void libm_expf_kernel(std::uint32_t first, std::uint32_t step, std::uint32_t count, float* out) {
  __shared__ double table[32];
  if (threadIdx.x < 32) table[threadIdx.x] = dev::detail::libm_exp2_entry(static_cast<int>(threadIdx.x));
  __syncthreads();
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    std::uint32_t b = first + i * step;
    float x;
    std::memcpy(&x, &b, sizeof x);
    out[i] = dev::detail::libm_expf(x, table);
  }
}

void expf_check() {
  // Every 61st pattern from -0 (0x80000000) to -104 (0xC2D00000), then a few specials.
  const std::uint32_t first = 0x80000000u, step = 61, count = (0xC2D00000u - first) / step + 1;
  dev::DeviceBuffer<float> out(count);
  libm_expf_kernel<<<1024, 256>>>(first, step, count, out.data());
  REASON_CUDA_CHECK(cudaGetLastError());
  std::vector<float> got(count);
  out.copy_to(got);
  std::size_t bad = 0, variant = 0;
  std::string firstbad;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint32_t b = first + i * step;
    float x;
    std::memcpy(&x, &b, sizeof x);
    const float ref = std::exp(x);
    if (float_bits(ref) != float_bits(got[i])) {
      if (++bad == 1) firstbad = label("expf(%a) = %a, host %a", static_cast<double>(x), static_cast<double>(got[i]),
                                       static_cast<double>(ref));
    }
  }
  // The one input where glibc's FMA and SSE2 builds differ, and the ends.
  const float special[] = {-0x1.f8cbb2p+5f, -0.0f, 0.0f, -kInf, -0x1.9fe368p6f, -0x1.9fe36ap6f, -87.5f, -1e-30f};
  dev::DeviceBuffer<float> sy(std::size(special));
  for (std::size_t q = 0; q < std::size(special); ++q) {
    const std::uint32_t b = float_bits(special[q]);
    libm_expf_kernel<<<1, 32>>>(b, 0, 1, sy.data() + q);
    REASON_CUDA_CHECK(cudaGetLastError());
  }
  std::vector<float> sgot(std::size(special));
  sy.copy_to(sgot);
  for (std::size_t q = 0; q < std::size(special); ++q) {
    if (float_bits(std::exp(special[q])) == float_bits(sgot[q])) continue;
    if (q == 0) {
      ++variant;
    } else if (++bad == 1) {
      firstbad = label("expf(%a) = %a, host %a", static_cast<double>(special[q]), static_cast<double>(sgot[q]),
                       static_cast<double>(std::exp(special[q])));
    }
  }
  if (bad) ++failures;
  std::printf("%s libm_expf against the host's std::exp(float): %u inputs, %zu differ%s%s%s\n", bad ? "FAIL" : "ok  ",
              count + static_cast<unsigned>(std::size(special)), bad, bad ? ", first: " : "", firstbad.c_str(),
              variant ? " (the host libm is glibc's SSE2 build: it differs at -0x1.f8cbb2p+5, as expected)" : "");
}

// ---------------------------------------------------------------------------------------------
// Errors on the device: the first bad row is named; its rng entry stays, the others advance.

int error_failures = 0;
template <class F>
void expect_error(F&& f, const std::string& needle, const std::string& what) {
  const std::string wrong = reason::test::error_mismatch(f, needle);
  std::printf("%s error: %s%s%s\n", wrong.empty() ? "ok  " : "FAIL", what.c_str(), wrong.empty() ? "" : ": ",
              wrong.c_str());
  error_failures += wrong.empty() ? 0 : 1;
}

template <class T, class P>
void device_errors(dev::SampleWorkspace& ws, dev::Stream& st, const Case<P>& c) {
  const index_t B = 12, V = 1000;
  Philox gen(77, 1);
  struct Bad {
    std::vector<std::pair<index_t, index_t>> nan, inf;
    std::vector<index_t> all_neg_inf;
    std::string needle;
    index_t row;
  };
  const Bad cases[] = {
      {{{5, 7}}, {}, {}, "row 5 has a NaN logit at token 7 (vocabulary size 1000)", 5},
      {{{9, 3}, {3, 900}}, {{3, 12}}, {}, "row 3 has a +inf logit at token 12 (vocabulary size 1000)", 3},
      {{{8, 0}}, {}, {2}, "every one of the 1000 logits of row 2 is -inf", 2},
      {{}, {{11, 999}}, {}, "row 11 has a +inf logit at token 999", 11},
  };
  for (const Bad& b : cases) {
    std::vector<float> raw = random_logits(gen, B, V);
    for (auto [r, v] : b.nan) raw[static_cast<std::size_t>(r * V + v)] = kNaN;
    for (auto [r, v] : b.inf) raw[static_cast<std::size_t>(r * V + v)] = kInf;
    for (index_t r : b.all_neg_inf)
      for (index_t v = 0; v < V; ++v) raw[static_cast<std::size_t>(r * V + v)] = -kInf;
    std::vector<float> x;
    const std::vector<T> stored = to_storage<T>(raw, x);
    dev::DeviceBuffer<T> d_x(stored.size());
    d_x.copy_from(stored);
    std::vector<Philox> rng;
    for (index_t r = 0; r < B; ++r) rng.emplace_back(5, static_cast<std::uint64_t>(r), 40);
    dev::DeviceBuffer<Philox> d_rng(rng.size());
    d_rng.copy_from(rng);
    dev::DeviceBuffer<std::int32_t> d_tok(static_cast<std::size_t>(B));
    expect_error(
        [&] {
          dev::sample_rows(ws, c.policy, View<const T, 2>(d_x.data(), {B, V}), View<Philox, 1>(d_rng.data(), {B}),
                           View<std::int32_t, 1>(d_tok.data(), {B}), View<double, 1>{}, View<double, 1>{}, st.get());
        },
        "gpu::sample_rows: " + b.needle, label("%s %s names %s", c.name, type_name<T>(), b.needle.c_str()));
    std::vector<Philox> after(rng.size());
    d_rng.copy_to(after);
    bool ok = true;
    for (index_t r = 0; r < B; ++r) {
      bool invalid = false;
      for (auto [rr, v] : b.nan) invalid |= rr == r;
      for (auto [rr, v] : b.inf) invalid |= rr == r;
      for (index_t rr : b.all_neg_inf) invalid |= rr == r;
      ok &= after[static_cast<std::size_t>(r)].offset() == 40 + (invalid ? 0u : 1u);
    }
    if (!ok) ++error_failures;
    std::printf("%s error: %s %s: invalid rows keep their rng entry, valid rows advance by one\n", ok ? "ok  " : "FAIL",
                c.name, type_name<T>());
  }
}

// Argument errors: thrown before any launch, so they need no GPU (the pointers are never read).
void argument_errors() {
  auto* fp = reinterpret_cast<float*>(std::uintptr_t{4096});
  auto* pp = reinterpret_cast<Philox*>(std::uintptr_t{4096});
  auto* ip = reinterpret_cast<std::int32_t*>(std::uintptr_t{4096});
  auto* dp = reinterpret_cast<double*>(std::uintptr_t{4096});
  dev::SampleWorkspace ws;
  const View<const float, 2> x(fp, {4, 10});
  const View<Philox, 1> rng(pp, {4});
  const View<std::int32_t, 1> tok(ip, {4});
  expect_error([&] { dev::sample_rows(ws, infer::Temperature{-1.0f}, x, rng, tok); }, "temperature = -1",
               "Temperature rejects a negative temperature");
  expect_error([&] { dev::sample_rows(ws, infer::TopK<5>{std::numeric_limits<float>::infinity()}, x, rng, tok); },
               "temperature = inf", "TopK rejects an infinite temperature");
  expect_error([&] { dev::sample_rows(ws, infer::TopP{0.0f, 1.0f}, x, rng, tok); }, "p = 0; expected 0 < p <= 1",
               "TopP rejects p = 0");
  expect_error([&] { dev::sample_rows(ws, infer::TopP{1.5f, 1.0f}, x, rng, tok); }, "p = 1.5", "TopP rejects p > 1");
  expect_error([&] { dev::sample_rows(ws, infer::Greedy{}, x, rng, View<std::int32_t, 1>(ip, {3})); },
               "gpu::sample_rows: tokens: shape [3], expected [4]", "names a wrong tokens");
  expect_error([&] { dev::sample_rows(ws, infer::Greedy{}, x, View<Philox, 1>(pp, {5}), tok); },
               "gpu::sample_rows: rng: shape [5], expected [4]", "names a wrong rng");
  expect_error(
      [&] {
        dev::sample_rows(ws, infer::Greedy{}, x, rng, tok, View<double, 1>(dp, {4}), View<double, 1>(dp, {2}));
      },
      "gpu::sample_rows: logp_model: shape [2], expected [4]", "names a wrong logp_model");
  expect_error([&] { dev::sample_rows(ws, infer::Greedy{}, View<const float, 2>(fp, {4, 10}, {20, 2}), rng, tok); },
               "gpu::sample_rows: logits: innermost stride 2", "names strided logits");
  expect_error([&] { dev::sample_rows(ws, infer::Greedy{}, View<const float, 2>(fp, {4, 10}, {8, 1}), rng, tok); },
               "row stride 8 is below the row length 10", "names overlapping rows");
  expect_error([&] { dev::sample_rows(ws, infer::Greedy{}, View<const float, 2>(fp, {4, 0}), rng, tok); },
               "has no logits (vocabulary size 0)", "rejects an empty vocabulary");
}

// ---------------------------------------------------------------------------------------------
// Timing (printed only).

template <class T, class P>
void time_case(dev::SampleWorkspace& ws, dev::Stream& st, const Case<P>& c, dev::DeviceBuffer<T>& d_x, index_t B,
               index_t V, dev::DeviceBuffer<Philox>& d_rng, dev::DeviceBuffer<std::int32_t>& d_tok,
               dev::DeviceBuffer<double>& d_ls, dev::DeviceBuffer<double>& d_lm) {
  const View<const T, 2> lv(d_x.data(), {B, V});
  const View<Philox, 1> rv(d_rng.data(), {B});
  const View<std::int32_t, 1> tv(d_tok.data(), {B});
  const View<double, 1> lsv(d_ls.data(), {B}), lmv(d_lm.data(), {B});
  dev::sample_rows(ws, c.policy, lv, rv, tv, lsv, lmv, st.get());  // warm-up (grows the workspace)
  constexpr int reps = 5;
  dev::Event a, z;
  a.record(st.get());
  for (int q = 0; q < reps; ++q) dev::sample_rows(ws, c.policy, lv, rv, tv, lsv, lmv, st.get());
  z.record(st.get());
  std::printf("time %-22s %s B=%lld V=%lld: %.3f ms a call (with its synchronisation)\n", c.name, type_name<T>(),
              static_cast<long long>(B), static_cast<long long>(V), static_cast<double>(z.elapsed_ms_since(a)) / reps);
}

template <class T>
void timing(dev::SampleWorkspace& ws, dev::Stream& st) {
  const index_t B = 256, V = 151936;
  Philox gen(2024, 9);
  std::vector<float> raw(static_cast<std::size_t>(B * V));
  for (auto& y : raw) y = static_cast<float>(3.0 * gen.normal());
  std::vector<float> x;
  const std::vector<T> stored = to_storage<T>(raw, x);
  dev::DeviceBuffer<T> d_x(stored.size());
  d_x.copy_from(stored);
  std::vector<Philox> rng;
  for (index_t r = 0; r < B; ++r) rng.emplace_back(1, static_cast<std::uint64_t>(r));
  dev::DeviceBuffer<Philox> d_rng(rng.size());
  d_rng.copy_from(rng);
  dev::DeviceBuffer<std::int32_t> d_tok(static_cast<std::size_t>(B));
  dev::DeviceBuffer<double> d_ls(static_cast<std::size_t>(B)), d_lm(static_cast<std::size_t>(B));
  time_case<T>(ws, st, Case<infer::Greedy>{"Greedy", {}}, d_x, B, V, d_rng, d_tok, d_ls, d_lm);
  time_case<T>(ws, st, Case<infer::Temperature>{"Temperature 1.0", {1.0f}}, d_x, B, V, d_rng, d_tok, d_ls, d_lm);
  time_case<T>(ws, st, Case<infer::TopK<50>>{"TopK<50> 1.0", {1.0f}}, d_x, B, V, d_rng, d_tok, d_ls, d_lm);
  time_case<T>(ws, st, Case<infer::TopP>{"TopP 0.9 T 0.7", {0.9f, 0.7f}}, d_x, B, V, d_rng, d_tok, d_ls, d_lm);
  time_case<T>(ws, st, Case<infer::TopP>{"TopP 0.9 T 1.0 (sort)", {0.9f, 1.0f}}, d_x, B, V, d_rng, d_tok, d_ls, d_lm);
}

// ---------------------------------------------------------------------------------------------

template <class T, class P>
void policy_cases(dev::SampleWorkspace& ws, dev::Stream& st, const Case<P>& c, std::uint64_t& seed) {
  const index_t B = 64;
  for (index_t V : {index_t{17}, index_t{1000}, index_t{50257}}) {
    Philox gen(seed++, 3);
    const std::vector<float> rnd = random_logits(gen, B, V);
    const std::vector<float> adv = adversarial_logits(gen, B, V);
    for (int pos = 0; pos < 2; ++pos) {
      const std::uint64_t off = pos == 0 ? 0 : (std::uint64_t{1} << 32) + 12345;
      run_case<T>(ws, st, c, rnd, B, V, seed, off, pos == 1, Layout{}, "random");
      run_case<T>(ws, st, c, adv, B, V, seed + 1, off, pos == 1, Layout{}, "adversarial");
    }
    seed += 2;
  }
  // Padded rows (scalar loads) and strided outputs.
  Philox gen(seed++, 4);
  const std::vector<float> rnd = random_logits(gen, 33, 1000);
  run_case<T>(ws, st, c, rnd, 33, 1000, seed++, 7, false, Layout{3, 2}, "random");
}

template <class T>
void all_policies(dev::SampleWorkspace& ws, dev::Stream& st, std::uint64_t& seed) {
  policy_cases<T>(ws, st, Case<infer::Greedy>{"Greedy", {}}, seed);
  policy_cases<T>(ws, st, Case<infer::Temperature>{"Temperature 0.7", {0.7f}}, seed);
  policy_cases<T>(ws, st, Case<infer::Temperature>{"Temperature 1.0", {1.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::Temperature>{"Temperature 0", {0.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopK<1>>{"TopK<1>", {1.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopK<50>>{"TopK<50>", {1.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopK<50>>{"TopK<50> T 0.7", {0.7f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopK<2000>>{"TopK<2000> (sort)", {1.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopP>{"TopP 0.9", {0.9f, 1.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopP>{"TopP 1.0", {1.0f, 1.0f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopP>{"TopP 0.9 T 0.7", {0.9f, 0.7f}}, seed);
  policy_cases<T>(ws, st, Case<infer::TopP>{"TopP 0.9 T 0", {0.9f, 0.0f}}, seed);
  device_errors<T>(ws, st, Case<infer::Greedy>{"Greedy", {}});
  device_errors<T>(ws, st, Case<infer::Temperature>{"Temperature", {1.0f}});
  device_errors<T>(ws, st, Case<infer::TopK<50>>{"TopK<50>", {1.0f}});
  device_errors<T>(ws, st, Case<infer::TopP>{"TopP", {0.9f, 1.0f}});
}

}  // namespace

int main() {
  try {
    argument_errors();
    if (const int rc = reason::test::exit_status_without_gpu(error_failures); rc >= 0) return rc;
    (void)dev::require_device(0);
    dev::Stream st;
    dev::SampleWorkspace ws;
    expf_check();
    std::uint64_t seed = 1000;
    all_policies<float>(ws, st, seed);
    all_policies<bf>(ws, st, seed);
    all_policies<f16>(ws, st, seed);  // (fp16: the huge negative logits round to -inf, on both sides)
    // The workspace still works after the errors.
    {
      Philox gen(seed++, 5);
      const std::vector<float> rnd = random_logits(gen, 64, 50257);
      run_case<float>(ws, st, Case<infer::TopP>{"TopP 0.9 after errors", {0.9f, 1.0f}}, rnd, 64, 50257, seed++, 0,
                      false, Layout{}, "random");
    }
    timing<float>(ws, st);
    timing<bf>(ws, st);
    failures += error_failures;
    std::printf("%s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
