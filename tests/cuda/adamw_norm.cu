// The device AdamW update (kernels/adamw.cuh) and gradient norm / clip (kernels/reduce.cuh)
// against the host kernels on the same inputs.
//
// AdamW: optim::AdamW::step on the host (which walks the layout: decay only where ParamInfo::decay,
// non-trainable tensors skipped) against gpu::adamw_step / adamw_update, for layouts of 2, 1680
// (300 runs: several launches), 10022 and 1057313 elements and an all-frozen one; odd sizes and
// tensors at offsets that are not multiples of 4; pointers aligned, all offset alike (vector path
// with a non-zero phase), offset differently (element path), and the two-slot state buffer;
// fp32 and bf16 gradients; double and float arithmetic; steps t = 1..5; inf / NaN gradients. Each
// step starts the device from the host's state, so every comparison is one step from identical
// inputs. Per element (trainable):
//   |m_dev - m_host| <= rtol (b1 |m_old| + (1 - b1) |g|)
//   |v_dev - v_host| <= rtol (b2 v_old + (1 - b2) g^2)
//   |p_dev - p_host| <= rtol (|p_old| + lr (c1 (b1 |m_old| + (1 - b1) |g|) / (sqrt(c2 v_host) + eps) + wd |p_old|))
// i.e. relative to the size of the terms (the update can cancel p). rtol 1e-6 for double
// arithmetic, which must moreover be bit-identical on >= 99.99% of the elements (it is the host's
// own sequence of double operations; only a host compiler that contracts into FMAs can move a
// last bit, with probability ~2^-29), and 2e-6 for float arithmetic (float rounding of the inputs
// and ~12 float operations: a worst case of ~15 * 2^-24 = 9e-7; the host computes in double).
// Where the host value is inf or NaN the device value must be the same inf, or a NaN. Non-
// trainable tensors and the guard elements around each buffer must keep their bits.
//
// Norm: gpu::GradNorm against sqrt(kernels::sum_squares) (the host's double sum) for sizes 0 ..
// 10^7 + 1, pointers at offsets 0..3, fp32, bf16 and fp16: |norm_dev - norm_host| <= 1e-9 norm_host
// (both sums are of non-negative doubles: each is within ~1e-12 relative of the exact sum);
// the same norm, bit for bit, on a second run. Clip: with max_norm below the norm the gradients
// must equal, bit for bit, g * float(max_norm / (norm_dev + 1e-6)) (bf16 / fp16: rounded back by the
// host's reason::bf16 / reason::fp16, which must agree with the device's rounding bit for bit),
// and fp32 within 1e-6 relative of train::clip_grad_norm; with max_norm above the norm or <= 0,
// untouched. inf gradients: norm inf, clipped to +-0 (inf -> NaN) as on the host; a NaN: norm NaN,
// nothing scaled.
// Bad arguments (sizes, null pointers, t, betas) are checked on every machine, GPU or not.
// Exit status: 0 pass, 1 a check failed, 77 no GPU (CTest: skipped), 2 an unexpected error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "reason/core/bf16.hpp"
#include "reason/core/cuda_device.hpp"
#include "reason/core/device_buffer.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/kernels/adamw.cuh"
#include "reason/kernels/reduce.cuh"
#include "reason/kernels/reduce.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/train/clip.hpp"
#include "cuda/cuda_test_util.hpp"

using namespace reason;

namespace {

int failures = 0;

void report(bool ok, const std::string& line) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", line.c_str());
  if (!ok) ++failures;
}

template <class F>
void expect_error(F&& f, const std::string& needle, const std::string& what) {
  const std::string wrong = test::error_mismatch(f, needle);
  report(wrong.empty(), what + (wrong.empty() ? "" : ": " + wrong));
}

constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();
constexpr float inf_f = std::numeric_limits<float>::infinity();

// bf16 / fp16 on the host (reason::bf16, reason::fp16) and the device (__nv_bfloat16, __half) share
// their bits: test::from_float / to_float convert through the host types.
/// The value the gradient type G holds for x, widened to float (exact for bf16 and fp16), and its G encoding.
template <class G>
float representable(float x) {
  return test::to_float(test::from_float<G>(x));
}
template <class G>
G encode(float x) {
  return test::from_float<G>(x);
}
template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}
template <class T>
const char* type_name() {
  return std::is_same_v<T, double> ? "double" : test::storage_name<T>();
}

/// A device buffer of `n` elements at element offset `off`, with guard elements around it that
/// must keep their canary bits.
template <class T>
class Padded {
 public:
  static constexpr std::size_t guard = 7;
  Padded(std::size_t n, std::size_t off) : n_(n), off_(off), image_(off + n + guard, canary()), buf_(image_.size(), "padded") {
    buf_.copy_from(image_);
  }
  T* ptr() { return buf_.data() + off_; }
  std::size_t size() const { return n_; }
  void upload(const std::vector<T>& x, std::size_t at = 0) {
    for (std::size_t i = 0; i < x.size(); ++i) image_[off_ + at + i] = x[i];
    buf_.copy_from(image_);
  }
  std::vector<T> download(std::size_t at, std::size_t count) {
    buf_.copy_to(image_);
    return std::vector<T>(image_.begin() + static_cast<std::ptrdiff_t>(off_ + at),
                          image_.begin() + static_cast<std::ptrdiff_t>(off_ + at + count));
  }
  /// After a download: every guard element still holds the canary.
  bool guards_kept() const {
    for (std::size_t i = 0; i < off_; ++i)
      if (!same_bits(image_[i], canary())) return false;
    for (std::size_t i = off_ + n_; i < image_.size(); ++i)
      if (!same_bits(image_[i], canary())) return false;
    return true;
  }

 private:
  static T canary() {
    if constexpr (std::is_same_v<T, float>)
      return -7777.25f;
    else
      return test::from_float<T>(48.5f);  // bf16 0x4242, fp16 0x5210: exact in both
  }
  std::size_t n_, off_;
  std::vector<T> image_;
  gpu::DeviceBuffer<T> buf_;
};

// ---------------------------------------------------------------------------------------------
// Layouts.

ParamLayout tiny_layout() {
  ParamLayout L;
  L.add("s", {1}, Init::ones);
  L.add("one", {1, 1}, Init::normal, 0.5);
  return L;
}
ParamLayout frozen_layout() {
  ParamLayout L;
  L.add_buffer("frozen.a", {10}, Init::ones);
  L.add_buffer("frozen.b", {3}, Init::ones);
  return L;
}
/// Odd sizes, offsets off the vector grid, decay on and off, merged neighbours, non-trainable
/// buffers in the middle and at the end: 10022 elements, 6 runs.
ParamLayout mixed_layout() {
  ParamLayout L;
  L.add("embed.weight", {37, 13}, Init::normal, 0.5);  // [0, 481) decay
  L.add("ln1.weight", {13}, Init::ones);                // [481, 494)
  L.add_buffer("router.bias", {5}, Init::ones);         // [494, 499) frozen
  L.add("w1.weight", {7, 9}, Init::normal, 0.5);        // [499, 562) decay
  L.add("w2.weight", {9, 7}, Init::normal, 0.5);        // [562, 625) decay, merged with w1
  L.add("b1.bias", {3}, Init::zeros);                   // [625, 628)
  L.add("b2.bias", {1001}, Init::zeros);                // [628, 1629), merged with b1
  L.add("w3.weight", {129, 65}, Init::normal, 0.5);     // [1629, 10014) decay
  L.add("ln2.weight", {6}, Init::ones);                 // [10014, 10020)
  L.add_buffer("tail.buffer", {2}, Init::ones);         // [10020, 10022) frozen
  return L;
}
/// 1057313 elements: many tiles per run.
ParamLayout large_layout() {
  ParamLayout L;
  L.add("big.weight", {1023, 1031}, Init::normal, 0.5);
  L.add("big.norm", {1031}, Init::ones);
  L.add_buffer("big.buffer", {7}, Init::ones);
  L.add("proj.weight", {517, 3}, Init::normal, 0.5);
  L.add("proj.bias", {11}, Init::zeros);
  return L;
}
/// 300 runs of 6 and 5 elements (more than one launch's adamw_max_segments), a frozen buffer
/// after every tenth pair.
ParamLayout many_layout() {
  ParamLayout L;
  for (int i = 0; i < 150; ++i) {
    L.add("w." + std::to_string(i), {3, 2}, Init::normal, 0.5);
    L.add("b." + std::to_string(i), {5}, Init::zeros);
    if (i % 10 == 0) L.add_buffer("buf." + std::to_string(i), {2}, Init::ones);
  }
  return L;
}

// ---------------------------------------------------------------------------------------------
// AdamW.

enum class Mode { aligned, offset, mixed_phase, two_slot };
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::aligned: return "aligned";
    case Mode::offset: return "offset-3";
    case Mode::mixed_phase: return "mixed-phase";
    case Mode::two_slot: return "two-slot state";
  }
  return "?";
}

struct Tally {
  double worst = 0;  // max error / bound
  std::size_t compared = 0, identical = 0, bad = 0;
  std::string first_bad;
  void add(float d, float h, double bound, const char* what, std::size_t i, std::int64_t t) {
    ++compared;
    if (same_bits(d, h)) ++identical;
    bool ok;
    if (std::isnan(h))
      ok = std::isnan(d);
    else if (std::isinf(h))
      ok = d == h;
    else {
      const double err = std::abs(double(d) - double(h));
      ok = std::isfinite(d) && err <= bound;
      if (ok && err > 0) worst = std::max(worst, err / bound);
    }
    if (!ok && bad++ == 0) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s[%zu] at t=%lld: device %.9g, host %.9g, bound %.3g", what, i,
                    static_cast<long long>(t), double(d), double(h), bound);
      first_bad = buf;
    }
  }
};

template <class G, class Acc>
void check_adamw(const char* name, const ParamLayout& L, Mode mode, const optim::AdamW::Config& cfg, double lr,
                 bool nonfinite, std::uint64_t seed, gpu::Stream& stream) {
  const std::size_t n = L.size();
  // What each element is: 0 frozen, 1 trainable, 2 trainable with decay.
  std::vector<int> kind(n, 0);
  for (const ParamInfo& p : L.params())
    for (std::size_t i = p.offset; i < p.offset + p.numel; ++i) kind[i] = p.trainable ? (p.decay ? 2 : 1) : 0;

  std::vector<float> p(n), state(2 * n, 0.0f);
  L.initialize(std::span<float>(p), seed);
  // Give the frozen tensors' moments something to keep.
  for (std::size_t i = 0; i < n; ++i)
    if (kind[i] == 0) state[i] = 0.25f, state[n + i] = 0.5f;

  const std::size_t o = mode == Mode::offset ? 3 : 0;
  const std::size_t op = o, og = mode == Mode::mixed_phase ? 1 : o, om = mode == Mode::mixed_phase ? 2 : o,
                    ov = mode == Mode::mixed_phase ? 3 : o;
  Padded<float> dp(n, op), dm(mode == Mode::two_slot ? 2 * n : n, om), dv(n, ov);
  Padded<G> dg(n, og);

  Philox rng(seed, 77);
  const double rtol = std::is_same_v<Acc, double> ? 1e-6 : 2e-6;
  Tally tp, tm, tv;
  bool frozen_kept = true, guards = true;
  for (std::int64_t t = 1; t <= 5; ++t) {
    // Gradients: each tensor at its own scale, 1e-3 .. 1e2; frozen ones get values too (ignored).
    std::vector<float> g(n);
    std::vector<G> g_dev(n);
    for (const ParamInfo& info : L.params()) {
      const double scale = std::pow(10.0, -3.0 + 5.0 * rng.uniform_double());
      for (std::size_t i = info.offset; i < info.offset + info.numel; ++i)
        g[i] = representable<G>(static_cast<float>(scale * rng.normal()));
      if (nonfinite && (t == 2 || t == 4) && info.numel >= 3) {
        g[info.offset] = t == 2 ? inf_f : nan_f;
        g[info.offset + info.numel / 2] = t == 2 ? nan_f : -inf_f;
        g[info.offset + info.numel - 1] = -inf_f;
      }
    }
    for (std::size_t i = 0; i < n; ++i) g_dev[i] = encode<G>(g[i]);

    // The device starts from the host's state.
    dp.upload(p);
    dg.upload(g_dev);
    if (mode == Mode::two_slot) {
      dm.upload(state);
    } else {
      dm.upload(std::vector<float>(state.begin(), state.begin() + static_cast<std::ptrdiff_t>(n)));
      dv.upload(std::vector<float>(state.begin() + static_cast<std::ptrdiff_t>(n), state.end()));
    }
    const std::vector<float> p_old = p, s_old = state;

    optim::AdamW host{cfg};
    host.step<float>(L, std::span<float>(p), std::span<const float>(g), std::span<float>(state), lr, t);

    if (mode == Mode::two_slot)
      gpu::adamw_step<G, Acc>(L, std::span<float>(dp.ptr(), n), std::span<const G>(dg.ptr(), n),
                               std::span<float>(dm.ptr(), 2 * n), cfg, lr, t, stream.get());
    else
      gpu::adamw_step<G, Acc>(L, std::span<float>(dp.ptr(), n), std::span<const G>(dg.ptr(), n),
                               std::span<float>(dm.ptr(), n), std::span<float>(dv.ptr(), n), cfg, lr, t, stream.get());
    stream.synchronize();

    const std::vector<float> got_p = dp.download(0, n);
    std::vector<float> got_m, got_v;
    if (mode == Mode::two_slot) {
      got_m = dm.download(0, n);
      got_v = dm.download(n, n);
    } else {
      got_m = dm.download(0, n);
      got_v = dv.download(0, n);
    }
    guards = guards && dp.guards_kept() && dm.guards_kept() && dv.guards_kept();

    const double c1 = 1.0 / (1.0 - std::pow(cfg.beta1, double(t))), c2 = 1.0 / (1.0 - std::pow(cfg.beta2, double(t)));
    for (std::size_t i = 0; i < n; ++i) {
      const float hp = p[i], hm = state[i], hv = state[n + i];
      if (kind[i] == 0) {
        frozen_kept = frozen_kept && same_bits(got_p[i], p_old[i]) && same_bits(got_m[i], s_old[i]) &&
                      same_bits(got_v[i], s_old[n + i]) && same_bits(hp, p_old[i]);
        continue;
      }
      const double gi = g[i], po = p_old[i], mo = s_old[i], vo = s_old[n + i];
      const double wd = kind[i] == 2 ? cfg.weight_decay : 0.0;
      const double sm = cfg.beta1 * std::abs(mo) + (1 - cfg.beta1) * std::abs(gi);
      const double sv = cfg.beta2 * vo + (1 - cfg.beta2) * gi * gi;
      const double sp = std::abs(po) + lr * (c1 * sm / (std::sqrt(c2 * double(hv)) + cfg.eps) + wd * std::abs(po));
      tm.add(got_m[i], hm, rtol * sm, "m", i, t);
      tv.add(got_v[i], hv, rtol * sv, "v", i, t);
      tp.add(got_p[i], hp, rtol * sp, "p", i, t);
    }
  }
  const std::size_t compared = tp.compared + tm.compared + tv.compared;
  const std::size_t identical = tp.identical + tm.identical + tv.identical;
  const std::size_t bad = tp.bad + tm.bad + tv.bad;
  // Double arithmetic is the host's: allow a last-bit difference on at most 1 element in 10^4.
  const bool bits_ok = !std::is_same_v<Acc, double> || compared - identical <= compared / 10000;
  const bool ok = bad == 0 && frozen_kept && guards && bits_ok;
  char line[512];
  std::snprintf(line, sizeof line,
                "adamw %s (%zu elements) %s grads %s, %s arithmetic%s, cfg b1 %g b2 %g eps %g wd %g lr %g, t 1..5: "
                "error/bound p %.3f m %.3f v %.3f, bit-identical %zu of %zu%s%s%s%s%s",
                name, n, mode_name(mode), type_name<G>(), type_name<Acc>(), nonfinite ? ", inf/NaN grads" : "",
                cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, lr, tp.worst, tm.worst, tv.worst, identical, compared,
                frozen_kept ? "" : "; FROZEN TENSOR CHANGED", guards ? "" : "; GUARD OVERWRITTEN",
                bits_ok ? "" : "; too few bit-identical for double arithmetic", bad ? "; first bad: " : "",
                bad ? (!tp.first_bad.empty() ? tp.first_bad : !tm.first_bad.empty() ? tm.first_bad : tv.first_bad).c_str()
                    : "");
  report(ok, line);
}

template <class G, class Acc>
void adamw_all_modes(const char* name, const ParamLayout& L, const optim::AdamW::Config& cfg, double lr,
                     bool nonfinite, std::uint64_t& seed, gpu::Stream& stream) {
  for (Mode m : {Mode::aligned, Mode::offset, Mode::mixed_phase, Mode::two_slot})
    check_adamw<G, Acc>(name, L, m, cfg, lr, nonfinite, ++seed, stream);
}

template <class G, class Acc>
void adamw_suite(std::uint64_t& seed, gpu::Stream& stream) {
  const optim::AdamW::Config cfg{};  // 0.9, 0.95, 1e-8, 0.1
  const optim::AdamW::Config cfg2{0.8, 0.999, 1e-6, 0.01};
  adamw_all_modes<G, Acc>("tiny", tiny_layout(), cfg, 1e-3, false, seed, stream);
  adamw_all_modes<G, Acc>("frozen", frozen_layout(), cfg, 1e-3, false, seed, stream);
  adamw_all_modes<G, Acc>("mixed", mixed_layout(), cfg, 1e-3, false, seed, stream);
  adamw_all_modes<G, Acc>("mixed", mixed_layout(), cfg2, 3e-2, false, seed, stream);
  adamw_all_modes<G, Acc>("mixed", mixed_layout(), cfg, 1e-3, true, seed, stream);
  adamw_all_modes<G, Acc>("many", many_layout(), cfg, 1e-3, false, seed, stream);
  adamw_all_modes<G, Acc>("large", large_layout(), cfg, 1e-3, false, seed, stream);
}

// ---------------------------------------------------------------------------------------------
// Norm and clip.

/// Host values (as float, exactly what T holds) and their device encoding: normal * scale.
template <class T>
void make_grads(std::size_t n, double scale, std::uint64_t seed, std::vector<float>& host, std::vector<T>& dev) {
  Philox rng(seed, 5);
  host.resize(n);
  dev.resize(n);
  for (std::size_t i = 0; i < n; ++i) host[i] = representable<T>(static_cast<float>(scale * rng.normal()));
  for (std::size_t i = 0; i < n; ++i) dev[i] = encode<T>(host[i]);
}
template <class T>
float widen(T x) {
  return test::to_float(x);
}
/// What the host's clip makes of x with factor f (float), in T (rounded by the host's reason::bf16 / fp16).
template <class T>
T scaled(T x, float f) {
  if constexpr (std::is_same_v<T, float>)
    return x * f;
  else
    return test::from_float<T>(widen(x) * f);
}

template <class T>
void check_norm(std::size_t n, std::size_t off, double scale, std::uint64_t seed, gpu::Stream& stream) {
  std::vector<float> host;
  std::vector<T> dev;
  make_grads<T>(n, scale, seed, host, dev);
  Padded<T> buf(n, off);
  buf.upload(dev);
  gpu::GradNorm gn;
  const double ref = std::sqrt(kernels::sum_squares<float>(std::span<const float>(host)));
  const double got = gn.norm<T>(std::span<const T>(buf.ptr(), n), stream.get());
  const double again = gn.norm<T>(std::span<const T>(buf.ptr(), n), stream.get());
  const double rel = ref > 0 ? std::abs(got - ref) / ref : std::abs(got);
  const bool norm_ok = rel <= 1e-9 && same_bits(got, again);

  // Clip below the norm: g * float(max / (norm + 1e-6)), bit for bit.
  bool clip_ok = true, untouched_ok = true;
  double clip_rel = 0;
  if (n > 0 && ref > 0) {
    const double max_norm = 0.5 * ref;
    const double got_clip = gn.clip_grad_norm<T>(std::span<T>(buf.ptr(), n), max_norm, stream.get());
    const std::vector<T> after = buf.download(0, n);
    const float f = static_cast<float>(max_norm / (got_clip + 1e-6));
    clip_ok = same_bits(got_clip, got);
    for (std::size_t i = 0; i < n; ++i) clip_ok = clip_ok && same_bits(after[i], scaled(dev[i], f));
    if constexpr (std::is_same_v<T, float>) {  // and close to train::clip_grad_norm's own result
      std::vector<float> h = host;
      (void)train::clip_grad_norm<float>(std::span<float>(h), max_norm);
      for (std::size_t i = 0; i < n; ++i)
        if (h[i] != 0) clip_rel = std::max(clip_rel, std::abs(double(after[i]) - h[i]) / std::abs(double(h[i])));
      clip_ok = clip_ok && clip_rel <= 1e-6;
    }
    buf.upload(dev);
  }
  // Above the norm, or max_norm <= 0: untouched.
  for (double max_norm : {2 * ref + 1, 0.0, -1.0}) {
    const double r = gn.clip_grad_norm<T>(std::span<T>(buf.ptr(), n), max_norm, stream.get());
    const std::vector<T> after = buf.download(0, n);
    untouched_ok = untouched_ok && same_bits(r, got);
    for (std::size_t i = 0; i < n; ++i) untouched_ok = untouched_ok && same_bits(after[i], dev[i]);
  }
  (void)buf.download(0, n);
  const bool guards = buf.guards_kept();
  char line[384];
  std::snprintf(line, sizeof line,
                "norm %s n %zu offset %zu scale %g: device %.17g host %.17g (rel %.2e)%s; clip%s (vs host clip rel "
                "%.2e)%s%s",
                type_name<T>(), n, off, scale, got, ref, rel, same_bits(got, again) ? ", repeatable" : ", NOT REPEATABLE",
                clip_ok ? " ok" : " WRONG", clip_rel, untouched_ok ? "" : "; changed when it should not clip",
                guards ? "" : "; GUARD OVERWRITTEN");
  report(norm_ok && clip_ok && untouched_ok && guards, line);
}

/// inf and NaN gradients: the norm and the clip as on the host.
template <class T>
void check_norm_nonfinite(std::size_t off, gpu::Stream& stream) {
  const std::size_t n = 50001;
  struct Case {
    const char* what;
    std::vector<std::pair<std::size_t, float>> specials;
  };
  const Case cases[] = {{"+inf", {{12345, inf_f}}},
                        {"-inf and +inf", {{0, -inf_f}, {n - 1, inf_f}}},
                        {"NaN", {{777, nan_f}}},
                        {"NaN and inf", {{3, inf_f}, {40000, nan_f}}}};
  for (const Case& c : cases) {
    std::vector<float> host;
    std::vector<T> dev;
    make_grads<T>(n, 1.0, 99, host, dev);
    for (auto [i, x] : c.specials) host[i] = x, dev[i] = encode<T>(x);
    Padded<T> buf(n, off);
    buf.upload(dev);
    gpu::GradNorm gn;
    const double ref = std::sqrt(kernels::sum_squares<float>(std::span<const float>(host)));
    const double got = gn.clip_grad_norm<T>(std::span<T>(buf.ptr(), n), 1.0, stream.get());
    const std::vector<T> after = buf.download(0, n);
    bool same_norm = (std::isnan(ref) && std::isnan(got)) || ref == got;
    // The host's clip on the same values (as float; in T the same rounding of exact products).
    const bool clips = ref > 1.0;  // the host's rule with max_norm 1
    const float f = clips ? static_cast<float>(1.0 / (ref + 1e-6)) : 1.0f;
    bool grads_ok = true;
    for (std::size_t i = 0; i < n; ++i) {
      const T want = clips ? scaled(dev[i], f) : dev[i];
      const float w = widen(want), d = widen(after[i]);
      grads_ok = grads_ok && (std::isnan(w) ? std::isnan(d) : same_bits(after[i], want));
    }
    if constexpr (std::is_same_v<T, float>) {  // train::clip_grad_norm itself
      std::vector<float> h = host;
      const double hn = train::clip_grad_norm<float>(std::span<float>(h), 1.0);
      same_norm = same_norm && ((std::isnan(hn) && std::isnan(got)) || hn == got);
      for (std::size_t i = 0; i < n; ++i) grads_ok = grads_ok && (std::isnan(h[i]) ? std::isnan(after[i]) : same_bits(after[i], h[i]));
    }
    char line[256];
    std::snprintf(line, sizeof line, "norm %s with %s (offset %zu): device norm %g, host %g; clip to 1: %s", type_name<T>(),
                  c.what, off, got, ref, grads_ok ? "as on the host" : "DIFFERS from the host");
    report(same_norm && grads_ok && buf.guards_kept(), line);
  }
}

template <class T>
void norm_suite(std::uint64_t& seed, gpu::Stream& stream) {
  const std::size_t sizes[] = {0, 1, 3, 4, 5, 1000, 16383, 16384, 16385, (std::size_t{1} << 20) + 3, 10'000'001};
  const double scales[] = {1.0, 1e-3, 1e3};
  int k = 0;
  for (std::size_t n : sizes)
    for (std::size_t off : {0, 1, 2, 3}) {
      if (n >= 10'000'000 && off % 2 == 1) continue;  // the largest only aligned and at offset 2
      check_norm<T>(n, off, scales[k++ % 3], ++seed, stream);
    }
  check_norm_nonfinite<T>(0, stream);
  check_norm_nonfinite<T>(1, stream);
}

// ---------------------------------------------------------------------------------------------
// Bad arguments and the run table: no device memory is touched, so these run everywhere.

void check_host_side() {
  const ParamLayout L = mixed_layout();
  const auto runs = gpu::adamw_segments(L);
  const std::vector<gpu::AdamWSegment> want = {{0, 481, true},     {481, 494, false},  {499, 625, true},
                                                {625, 1629, false}, {1629, 10014, true}, {10014, 10020, false}};
  bool same = runs.size() == want.size();
  for (std::size_t i = 0; same && i < runs.size(); ++i)
    same = runs[i].begin == want[i].begin && runs[i].end == want[i].end && runs[i].decay == want[i].decay;
  report(same, "adamw_segments: 6 runs, neighbours with one decay flag merged, frozen buffers left out");
  report(gpu::adamw_segments(frozen_layout()).empty(), "adamw_segments: an all-frozen layout has no runs");
  report(gpu::adamw_segments(many_layout()).size() == 300, "adamw_segments: 300 runs for 150 weight/bias pairs");

  const std::size_t n = L.size();
  std::vector<float> p(n), g(n), s(2 * n), m(n), v(n);
  std::vector<__nv_bfloat16> gb(n);
  const optim::AdamW::Config cfg{};
  expect_error([&] { gpu::adamw_step<float>(L, std::span<float>(p.data(), n - 1), std::span<const float>(g), std::span<float>(s), cfg, 1e-3, 1, nullptr); },
               "params has 10021 elements, expected 10022", "adamw_step: params of the wrong size is named");
  expect_error([&] { gpu::adamw_step<__nv_bfloat16>(L, std::span<float>(p), std::span<const __nv_bfloat16>(gb.data(), n + 1), std::span<float>(s), cfg, 1e-3, 1, nullptr); },
               "grads has 10023 elements, expected 10022", "adamw_step: grads of the wrong size is named");
  expect_error([&] { gpu::adamw_step<float>(L, std::span<float>(p), std::span<const float>(g), std::span<float>(s.data(), n), cfg, 1e-3, 1, nullptr); },
               "state has 10022 elements, expected 20044", "adamw_step: a state of the wrong size is named");
  expect_error([&] { gpu::adamw_step<float>(L, std::span<float>(p), std::span<const float>(g), std::span<float>(m), std::span<float>(v.data(), 5), cfg, 1e-3, 1, nullptr); },
               "exp_avg_sq has 5 elements, expected 10022", "adamw_step: exp_avg_sq of the wrong size is named");
  expect_error([&] { gpu::adamw_update<float>(runs, n, nullptr, g.data(), m.data(), v.data(), cfg, 1e-3, 1, nullptr); },
               "params is a null pointer (10022 elements expected)", "adamw_update: a null params pointer is named");
  expect_error([&] { gpu::adamw_update<__nv_bfloat16>(runs, n, p.data(), nullptr, m.data(), v.data(), cfg, 1e-3, 1, nullptr); },
               "grads is a null pointer", "adamw_update: a null grads pointer is named");
  expect_error([&] { gpu::adamw_update<float>(runs, n, p.data(), g.data(), m.data(), nullptr, cfg, 1e-3, 1, nullptr); },
               "exp_avg_sq is a null pointer", "adamw_update: a null exp_avg_sq pointer is named");
  expect_error([&] { gpu::adamw_step<float>(L, std::span<float>(p), std::span<const float>(g), std::span<float>(s), cfg, 1e-3, 0, nullptr); },
               "step t = 0", "adamw_step: t = 0 refused");
  expect_error([&] { gpu::adamw_step<float>(L, std::span<float>(p), std::span<const float>(g), std::span<float>(s), {1.0, 0.95, 1e-8, 0.1}, 1e-3, 1, nullptr); },
               "beta1 = 1", "adamw_step: beta1 = 1 refused");
  expect_error([&] { gpu::adamw_step<float>(L, std::span<float>(p), std::span<const float>(g), std::span<float>(s), {0.9, -0.5, 1e-8, 0.1}, 1e-3, 1, nullptr); },
               "beta2 = -0.5", "adamw_step: beta2 < 0 refused");
  const gpu::AdamWSegment outside[] = {{0, n + 1, true}};
  expect_error([&] { gpu::adamw_update<float>(outside, n, p.data(), g.data(), m.data(), v.data(), cfg, 1e-3, 1, nullptr); },
               "lies outside the 10022-element buffers", "adamw_update: a run past the buffers refused");
  gpu::GradNorm gn;
  expect_error([&] { (void)gn.norm<float>(std::span<const float>(static_cast<const float*>(nullptr), 10), nullptr); },
               "grads is a null pointer with 10 elements", "GradNorm: a null gradient pointer is named");
}

}  // namespace

int main() {
  try {
    check_host_side();
    if (const int rc = test::exit_status_without_gpu(failures); rc >= 0) return rc;
    (void)gpu::require_device(0);
    gpu::Stream stream;
    std::uint64_t seed = 1;
    adamw_suite<float, double>(seed, stream);
    adamw_suite<float, float>(seed, stream);
    adamw_suite<__nv_bfloat16, double>(seed, stream);
    adamw_suite<__nv_bfloat16, float>(seed, stream);
    norm_suite<float>(seed, stream);
    norm_suite<__nv_bfloat16>(seed, stream);
    norm_suite<__half>(seed, stream);
    std::printf("%s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
