// Attention with grouped KV heads: a float64 reference with an explicit scores matrix, the
// probability properties, GQA == MHA with repeated kv heads, finite differences on slices of one
// fused qkv buffer (the model's layout), decoding against a cache, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "reason/kernels/attention.hpp"
#include "support/gradcheck.hpp"

using namespace reason;
using namespace reason::kernels;

namespace {

struct Dims {
  index_t B, T, H, Hkv, D;
};

/// One buffer [B, T, H + 2 Hkv, D] holding q, k and v as strided slices, like the model's qkv.
template <class T>
struct Qkv {
  Dims s;
  std::vector<T> buf;
  explicit Qkv(Dims d, T fill = T(0)) : s(d), buf(d.B * d.T * (d.H + 2 * d.Hkv) * d.D, fill) {}
  View<T, 4> all() { return make_view(buf.data(), s.B, s.T, s.H + 2 * s.Hkv, s.D); }
  View<T, 4> q() { return all().slice(2, 0, s.H); }
  View<T, 4> k() { return all().slice(2, s.H, s.H + s.Hkv); }
  View<T, 4> v() { return all().slice(2, s.H + s.Hkv, s.H + 2 * s.Hkv); }
};

/// The float64 reference: explicit scores [T, T] per (b, h), -inf above the diagonal when causal.
struct Ref {
  std::vector<double> probs, out;         // [B, H, T, T], [B, T, H, D]
  std::vector<double> dq, dk, dv;         // [B, T, H, D], [B, T, Hkv, D] x2
};

template <class T>
Ref reference(Dims s, View<const T, 4> q, View<const T, 4> k, View<const T, 4> v, bool causal,
              const std::vector<double>& dout) {  // dout [B, T, H, D] or empty
  Ref r;
  const index_t B = s.B, Tn = s.T, H = s.H, Hkv = s.Hkv, D = s.D, group = H / Hkv;
  r.probs.assign(B * H * Tn * Tn, 0);
  r.out.assign(B * Tn * H * D, 0);
  r.dq.assign(B * Tn * H * D, 0);
  r.dk.assign(B * Tn * Hkv * D, 0);
  r.dv.assign(B * Tn * Hkv * D, 0);
  const double scale = 1.0 / std::sqrt(double(D));
  for (index_t b = 0; b < B; ++b) {
    for (index_t h = 0; h < H; ++h) {
      const index_t g = h / group;
      std::vector<double> S(Tn * Tn), P(Tn * Tn);
      for (index_t t = 0; t < Tn; ++t) {
        for (index_t u = 0; u < Tn; ++u) {
          double dot = 0;
          for (index_t d = 0; d < D; ++d) dot += double(q(b, t, h, d)) * double(k(b, u, g, d));
          S[t * Tn + u] = (causal && u > t) ? -std::numeric_limits<double>::infinity() : dot * scale;
        }
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (index_t u = 0; u < Tn; ++u) mx = std::max(mx, S[t * Tn + u]);
        for (index_t u = 0; u < Tn; ++u) sum += std::exp(S[t * Tn + u] - mx);
        for (index_t u = 0; u < Tn; ++u) P[t * Tn + u] = std::exp(S[t * Tn + u] - mx) / sum;
        for (index_t u = 0; u < Tn; ++u) r.probs[((b * H + h) * Tn + t) * Tn + u] = P[t * Tn + u];
        for (index_t d = 0; d < D; ++d) {
          double o = 0;
          for (index_t u = 0; u < Tn; ++u) o += P[t * Tn + u] * double(v(b, u, g, d));
          r.out[((b * Tn + t) * H + h) * D + d] = o;
        }
      }
      if (dout.empty()) continue;
      auto go = [&](index_t t, index_t d) { return dout[((b * Tn + t) * H + h) * D + d]; };
      for (index_t t = 0; t < Tn; ++t) {
        std::vector<double> dP(Tn);
        double rowsum = 0;
        for (index_t u = 0; u < Tn; ++u) {
          for (index_t d = 0; d < D; ++d) dP[u] += go(t, d) * double(v(b, u, g, d));
          rowsum += P[t * Tn + u] * dP[u];
        }
        for (index_t u = 0; u < Tn; ++u) {
          const double dS = P[t * Tn + u] * (dP[u] - rowsum);
          for (index_t d = 0; d < D; ++d) {
            r.dq[((b * Tn + t) * H + h) * D + d] += scale * dS * double(k(b, u, g, d));
            r.dk[((b * Tn + u) * Hkv + g) * D + d] += scale * dS * double(q(b, t, h, d));
            r.dv[((b * Tn + u) * Hkv + g) * D + d] += P[t * Tn + u] * go(t, d);
          }
        }
      }
    }
  }
  return r;
}

/// max |got - want| over a view and a contiguous reference of the same shape.
template <class T>
double max_diff(View<T, 4> got, const std::vector<double>& want) {
  double m = 0;
  std::size_t i = 0;
  for (index_t a = 0; a < got.shape[0]; ++a)
    for (index_t b = 0; b < got.shape[1]; ++b)
      for (index_t c = 0; c < got.shape[2]; ++c)
        for (index_t d = 0; d < got.shape[3]; ++d) {
          const double diff = std::abs(double(got(a, b, c, d)) - want[i++]);
          m = std::isnan(diff) ? INFINITY : std::max(m, diff);
        }
  return m;
}

template <class T>
std::vector<T> random_vector(std::size_t n, Philox& rng) {
  std::vector<T> v(n);
  test::fill_uniform(std::span<T>(v), rng);
  return v;
}

}  // namespace

TEST_CASE_TEMPLATE("attention forward and backward match a float64 reference across GQA shapes", T, float, double) {
  Philox rng(test::test_seed(), 10);
  INFO("seed ", test::test_seed());
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (index_t Tn : {5, 7, 9}) {
    for (index_t Hkv : {1, 2, 3, 6}) {
      for (index_t D : {6, 10}) {
        for (bool causal : {true, false}) {
          const Dims s{2, Tn, 6, Hkv, D};
          CAPTURE(Tn);
          CAPTURE(Hkv);
          CAPTURE(D);
          CAPTURE(causal);
          Qkv<T> x(s);
          test::fill_uniform(std::span<T>(x.buf), rng, -1.5, 1.5);
          // out is a strided slice too: rows of a [B, T, H, D + 2] buffer.
          std::vector<T> outbuf(s.B * Tn * s.H * (D + 2), std::numeric_limits<T>::quiet_NaN());
          auto out = make_view(outbuf.data(), s.B, Tn, s.H, D + 2).slice(3, 1, D + 1);
          std::vector<T> probs(s.B * s.H * Tn * Tn, std::numeric_limits<T>::quiet_NaN());
          auto pv = make_view(probs.data(), s.B, s.H, Tn, Tn);
          attention_forward<T>(x.q(), x.k(), x.v(), causal, pv, out);

          std::vector<T> dout = random_vector<T>(s.B * Tn * s.H * D, rng);
          const Ref ref = reference<T>(s, x.q(), x.k(), x.v(), causal, std::vector<double>(dout.begin(), dout.end()));
          CHECK(max_diff(out, ref.out) <= tol);
          CHECK(max_diff(pv, ref.probs) <= tol);

          Qkv<T> dx(s, std::numeric_limits<T>::quiet_NaN());  // backward overwrites: NaN must not leak
          attention_backward<T>(x.q(), x.k(), x.v(), pv, make_view(dout.data(), s.B, Tn, s.H, D), dx.q(), dx.k(),
                                dx.v());
          CHECK(max_diff(dx.q(), ref.dq) <= tol);
          CHECK(max_diff(dx.k(), ref.dk) <= tol);
          CHECK(max_diff(dx.v(), ref.dv) <= tol);

          // Without probs (inference prefill) the output is the same, bit for bit.
          std::vector<T> out2(s.B * Tn * s.H * D);
          auto o2 = make_view(out2.data(), s.B, Tn, s.H, D);
          attention_forward<T>(x.q(), x.k(), x.v(), causal, View<T, 4>{}, o2);
          bool same = true;
          for (index_t b = 0; b < s.B; ++b)
            for (index_t t = 0; t < Tn; ++t)
              for (index_t h = 0; h < s.H; ++h)
                for (index_t d = 0; d < D; ++d) same &= o2(b, t, h, d) == out(b, t, h, d);
          CHECK(same);
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE("attention probs: causal rows sum to 1 with zeros above the diagonal, non-causal see every key", T,
                   float, double) {
  Philox rng(test::test_seed(), 11);
  const Dims s{2, 8, 6, 2, 6};
  Qkv<T> x(s);
  test::fill_uniform(std::span<T>(x.buf), rng, -2, 2);
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  std::vector<T> pc(s.B * s.H * s.T * s.T, T(7)), pn(pc.size(), T(7));
  std::vector<T> oc(s.B * s.T * s.H * s.D), on(oc.size());
  attention_forward<T>(x.q(), x.k(), x.v(), true, make_view(pc.data(), s.B, s.H, s.T, s.T),
                       make_view(oc.data(), s.B, s.T, s.H, s.D));
  attention_forward<T>(x.q(), x.k(), x.v(), false, make_view(pn.data(), s.B, s.H, s.T, s.T),
                       make_view(on.data(), s.B, s.T, s.H, s.D));
  for (index_t r = 0; r < s.B * s.H * s.T; ++r) {
    const index_t t = r % s.T;
    double sc = 0, sn = 0;
    for (index_t u = 0; u < s.T; ++u) {
      const T c = pc[r * s.T + u], n = pn[r * s.T + u];
      if (u > t) {
        REQUIRE(c == T(0));
      } else {
        REQUIRE(c > T(0));
      }
      REQUIRE(n > T(0));
      sc += c;
      sn += n;
    }
    CHECK(std::abs(sc - 1) <= tol);
    CHECK(std::abs(sn - 1) <= tol);
  }
  // The first query sees only itself when causal: its output is v at position 0, exactly.
  CHECK(oc[0] == x.v()(0, 0, 0, 0));
  // The last query sees every key in both modes; earlier ones differ.
  double last = 0, first = 0;
  for (index_t h = 0; h < s.H; ++h)
    for (index_t d = 0; d < s.D; ++d) {
      const index_t il = ((0 * s.T + s.T - 1) * s.H + h) * s.D + d, i0 = ((0 * s.T + 0) * s.H + h) * s.D + d;
      last = std::max(last, double(std::abs(oc[il] - on[il])));
      first = std::max(first, double(std::abs(oc[i0] - on[i0])));
    }
  CHECK(last <= 10 * tol);
  CHECK(first > 1e-3);
}

TEST_CASE_TEMPLATE("GQA equals multi-head attention with each kv head repeated H / Hkv times", T, float, double) {
  Philox rng(test::test_seed(), 12);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  for (index_t Hkv : {1, 2, 3}) {
    CAPTURE(Hkv);
    const Dims g{2, 7, 6, Hkv, 10}, m{2, 7, 6, 6, 10};
    const index_t group = 6 / Hkv;
    Qkv<T> xg(g), xm(m);
    test::fill_uniform(std::span<T>(xg.buf), rng);
    for (index_t b = 0; b < 2; ++b)
      for (index_t t = 0; t < 7; ++t)
        for (index_t h = 0; h < 6; ++h)
          for (index_t d = 0; d < 10; ++d) {
            xm.q()(b, t, h, d) = xg.q()(b, t, h, d);
            xm.k()(b, t, h, d) = xg.k()(b, t, h / group, d);
            xm.v()(b, t, h, d) = xg.v()(b, t, h / group, d);
          }
    const std::size_t np = 2 * 6 * 7 * 7, no = 2 * 7 * 6 * 10;
    std::vector<T> pg(np), pm(np), og(no), om(no);
    attention_forward<T>(xg.q(), xg.k(), xg.v(), true, make_view(pg.data(), 2, 6, 7, 7), make_view(og.data(), 2, 7, 6, 10));
    attention_forward<T>(xm.q(), xm.k(), xm.v(), true, make_view(pm.data(), 2, 6, 7, 7), make_view(om.data(), 2, 7, 6, 10));
    CHECK(pg == pm);  // the same arithmetic on the same numbers
    CHECK(og == om);
    std::vector<T> dout = random_vector<T>(no, rng);
    Qkv<T> dg(g), dm(m);
    attention_backward<T>(xg.q(), xg.k(), xg.v(), make_view(pg.data(), 2, 6, 7, 7), make_view(dout.data(), 2, 7, 6, 10),
                          dg.q(), dg.k(), dg.v());
    attention_backward<T>(xm.q(), xm.k(), xm.v(), make_view(pm.data(), 2, 6, 7, 7), make_view(dout.data(), 2, 7, 6, 10),
                          dm.q(), dm.k(), dm.v());
    double dq = 0, dkv = 0;
    for (index_t b = 0; b < 2; ++b)
      for (index_t t = 0; t < 7; ++t)
        for (index_t d = 0; d < 10; ++d) {
          for (index_t h = 0; h < 6; ++h) dq = std::max(dq, double(std::abs(dg.q()(b, t, h, d) - dm.q()(b, t, h, d))));
          for (index_t kv = 0; kv < Hkv; ++kv) {  // a shared kv head's gradient sums over its group
            double sk = 0, sv = 0;
            for (index_t h = kv * group; h < (kv + 1) * group; ++h) {
              sk += dm.k()(b, t, h, d);
              sv += dm.v()(b, t, h, d);
            }
            dkv = std::max({dkv, std::abs(double(dg.k()(b, t, kv, d)) - sk), std::abs(double(dg.v()(b, t, kv, d)) - sv)});
          }
        }
    CHECK(dq <= tol);
    CHECK(dkv <= tol);
  }
}

namespace {

/// Finite differences of L = sum(out * R) over the whole fused qkv buffer against the analytic
/// gradient that `backward` writes into the slices of a fused dqkv buffer.
template <class Backward>
test::GradcheckResult attention_gradcheck(Dims s, bool causal, Backward backward) {
  Philox rng(test::test_seed(), 13 + s.Hkv + 100 * causal);
  Qkv<double> x(s);
  test::fill_uniform(std::span<double>(x.buf), rng, -1.5, 1.5);
  const std::vector<double> R = random_vector<double>(s.B * s.T * s.H * s.D, rng);
  std::vector<double> probs(s.B * s.H * s.T * s.T), out(R.size());
  auto pv = make_view(probs.data(), s.B, s.H, s.T, s.T);
  auto ov = make_view(out.data(), s.B, s.T, s.H, s.D);
  auto loss = [&] {
    attention_forward<double>(x.q(), x.k(), x.v(), causal, pv, ov);
    double l = 0;
    for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * R[i];
    return l;
  };
  (void)loss();
  Qkv<double> dx(s, std::numeric_limits<double>::quiet_NaN());
  backward(x, pv, make_view(R.data(), s.B, s.T, s.H, s.D), dx);
  return test::gradcheck(loss, x.buf, dx.buf);
}

void correct_backward(Qkv<double>& x, View<double, 4> probs, View<const double, 4> dout, Qkv<double>& dx) {
  attention_backward<double>(x.q(), x.k(), x.v(), probs, dout, dx.q(), dx.k(), dx.v());
}

}  // namespace

TEST_CASE("attention_backward passes finite differences on slices of a fused qkv buffer") {
  INFO("seed ", test::test_seed());
  for (index_t Hkv : {1, 2, 6}) {
    for (bool causal : {true, false}) {
      CAPTURE(Hkv);
      CAPTURE(causal);
      const auto r = attention_gradcheck(Dims{2, 6, 6, Hkv, 6}, causal, correct_backward);
      INFO(r.describe());
      CHECK(r.ok);
    }
  }
}

TEST_CASE("a broken attention backward fails the same finite-difference check") {
  const Dims s{2, 6, 6, 2, 6};
  // dk off by one part in 10^5.
  auto dk_scaled = [](Qkv<double>& x, View<double, 4> p, View<const double, 4> dout, Qkv<double>& dx) {
    correct_backward(x, p, dout, dx);
    auto dk = dx.k();
    for (index_t b = 0; b < 2; ++b)
      for (index_t t = 0; t < 6; ++t)
        for (index_t d = 0; d < 6; ++d) dk(b, t, 1, d) *= 1 + 1e-5;
  };
  // The last query row's contribution to dq dropped.
  auto dq_dropped = [](Qkv<double>& x, View<double, 4> p, View<const double, 4> dout, Qkv<double>& dx) {
    correct_backward(x, p, dout, dx);
    for (index_t d = 0; d < 6; ++d) dx.q()(1, 5, 3, d) = 0;
  };
  // One value gradient perturbed slightly.
  auto dv_perturbed = [](Qkv<double>& x, View<double, 4> p, View<const double, 4> dout, Qkv<double>& dx) {
    correct_backward(x, p, dout, dx);
    dx.v()(0, 2, 0, 4) *= 1 + 1e-4;
  };
  CHECK_FALSE(attention_gradcheck(s, true, dk_scaled).ok);
  CHECK_FALSE(attention_gradcheck(s, true, dq_dropped).ok);
  CHECK_FALSE(attention_gradcheck(s, false, dv_perturbed).ok);
}

TEST_CASE_TEMPLATE("attention_decode at each position equals that row of the causal forward, bit for bit", T, float,
                   double) {
  Philox rng(test::test_seed(), 14);
  const Dims s{2, 9, 6, 2, 10};
  const index_t S = 12;  // cache capacity > T; entries past len hold garbage that must not be read
  Qkv<T> x(s);
  test::fill_uniform(std::span<T>(x.buf), rng);
  std::vector<T> probs(s.B * s.H * s.T * s.T), out(s.B * s.T * s.H * s.D);
  auto ov = make_view(out.data(), s.B, s.T, s.H, s.D);
  attention_forward<T>(x.q(), x.k(), x.v(), true, make_view(probs.data(), s.B, s.H, s.T, s.T), ov);
  // A fused kv cache [B, S, 2 Hkv, D]: k and v are strided slices of it.
  std::vector<T> cache(s.B * S * 2 * s.Hkv * s.D, std::numeric_limits<T>::quiet_NaN());
  auto kv = make_view(cache.data(), s.B, S, 2 * s.Hkv, s.D);
  auto kc = kv.slice(2, 0, s.Hkv), vc = kv.slice(2, s.Hkv, 2 * s.Hkv);
  for (index_t t = 0; t < s.T; ++t) {
    for (index_t b = 0; b < s.B; ++b)  // append position t to the cache
      for (index_t g = 0; g < s.Hkv; ++g)
        for (index_t d = 0; d < s.D; ++d) {
          kc(b, t, g, d) = x.k()(b, t, g, d);
          vc(b, t, g, d) = x.v()(b, t, g, d);
        }
    auto qa = x.q();
    View<const T, 3> qt(qa.data + t * qa.stride[1], {s.B, s.H, s.D}, {qa.stride[0], qa.stride[2], qa.stride[3]});
    std::vector<T> o(s.B * s.H * s.D);
    attention_decode<T>(qt, kc, vc, t + 1, make_view(o.data(), s.B, s.H, s.D));
    bool same = true;
    for (index_t b = 0; b < s.B; ++b)
      for (index_t h = 0; h < s.H; ++h)
        for (index_t d = 0; d < s.D; ++d) same &= o[(b * s.H + h) * s.D + d] == ov(b, t, h, d);
    CAPTURE(t);
    CHECK(same);
  }
}

TEST_CASE("attention: bad head counts, shapes, strides and cache lengths are errors naming the argument") {
  std::vector<float> buf(4096, 0.25f);
  auto v4 = [&](index_t a, index_t b, index_t c, index_t d) { return make_view(buf.data(), a, b, c, d); };
  std::vector<float> out(4096);
  auto o4 = [&](index_t a, index_t b, index_t c, index_t d) { return make_view(out.data(), a, b, c, d); };
  CHECK_THROWS_WITH_AS(attention_forward<float>(v4(1, 5, 6, 4), v4(1, 5, 4, 4), v4(1, 5, 4, 4), true, o4(1, 6, 5, 5),
                                                o4(1, 5, 6, 4)),
                       "attention_forward: q has 6 heads, which is not a multiple of the 4 kv heads of k "
                       "(grouped-query attention needs H % Hkv == 0)",
                       Error);
  CHECK_THROWS_WITH_AS(attention_forward<float>(v4(1, 5, 6, 4), v4(1, 5, 2, 4), v4(1, 5, 3, 4), true, o4(1, 6, 5, 5),
                                                o4(1, 5, 6, 4)),
                       "attention_forward: v: shape [1, 5, 3, 4], expected [1, 5, 2, 4]", Error);
  CHECK_THROWS_WITH_AS(attention_forward<float>(v4(1, 5, 6, 4), v4(1, 4, 2, 4), v4(1, 5, 2, 4), true, o4(1, 6, 5, 5),
                                                o4(1, 5, 6, 4)),
                       "attention_forward: k: shape [1, 4, 2, 4], expected [1, 5, 2, 4]", Error);
  CHECK_THROWS_WITH_AS(attention_forward<float>(v4(1, 5, 6, 4), v4(1, 5, 2, 4), v4(1, 5, 2, 4), true, o4(1, 6, 5, 4),
                                                o4(1, 5, 6, 4)),
                       "attention_forward: probs: shape [1, 6, 5, 4], expected [1, 6, 5, 5]", Error);
  View<const float, 4> qt(buf.data(), {1, 5, 6, 4}, {120, 24, 1, 6});  // head_dim not innermost
  CHECK_THROWS_WITH_AS(attention_forward<float>(qt, v4(1, 5, 2, 4), v4(1, 5, 2, 4), true, o4(1, 6, 5, 5),
                                                o4(1, 5, 6, 4)),
                       "attention_forward: q: innermost stride 6, expected 1 (shape [1, 5, 6, 4])", Error);
  CHECK_THROWS_WITH_AS(attention_backward<float>(v4(1, 5, 6, 4), v4(1, 5, 2, 4), v4(1, 5, 2, 4), v4(1, 6, 5, 5),
                                                 v4(1, 5, 6, 4), o4(1, 5, 6, 4), o4(1, 5, 2, 4), o4(1, 5, 6, 4)),
                       "attention_backward: dv: shape [1, 5, 6, 4], expected [1, 5, 2, 4]", Error);
  CHECK_THROWS_WITH_AS(attention_backward<float>(v4(1, 5, 6, 4), v4(1, 5, 2, 4), v4(1, 5, 2, 4), View<float, 4>{},
                                                 v4(1, 5, 6, 4), o4(1, 5, 6, 4), o4(1, 5, 2, 4), o4(1, 5, 2, 4)),
                       "attention_backward: probs: shape [0, 0, 0, 0], expected [1, 6, 5, 5]", Error);
  CHECK_THROWS_WITH_AS(attention_backward<float>(v4(1, 5, 6, 4), v4(1, 5, 0, 4), v4(1, 5, 0, 4), v4(1, 6, 5, 5),
                                                 v4(1, 5, 6, 4), o4(1, 5, 6, 4), o4(1, 5, 0, 4), o4(1, 5, 0, 4)),
                       doctest::Contains("not a multiple of the 0 kv heads"), Error);
  CHECK_THROWS_WITH_AS(attention_forward<float>(View<const float, 4>(nullptr, {1, 5, 6, 4}), v4(1, 5, 2, 4),
                                                v4(1, 5, 2, 4), false, View<float, 4>{}, o4(1, 5, 6, 4)),
                       "attention_forward: q is empty (data is null)", Error);
  auto q3 = make_view(buf.data(), 1, 6, 4);
  auto o3 = make_view(out.data(), 1, 6, 4);
  CHECK_THROWS_WITH_AS(attention_decode<float>(q3, v4(1, 5, 2, 4), v4(1, 5, 2, 4), 0, o3),
                       "attention_decode: len 0 is out of range [1, 5] of the cache (k_cache shape [1, 5, 2, 4])", Error);
  CHECK_THROWS_WITH_AS(attention_decode<float>(q3, v4(1, 5, 2, 4), v4(1, 5, 2, 4), 6, o3),
                       "attention_decode: len 6 is out of range [1, 5] of the cache (k_cache shape [1, 5, 2, 4])", Error);
  CHECK_THROWS_WITH_AS(attention_decode<float>(q3, v4(1, 5, 2, 4), v4(1, 4, 2, 4), 3, o3),
                       "attention_decode: v_cache: shape [1, 4, 2, 4], expected [1, 5, 2, 4]", Error);
  CHECK_THROWS_WITH_AS(attention_decode<float>(q3, v4(1, 5, 4, 4), v4(1, 5, 4, 4), 3, o3),
                       doctest::Contains("attention_decode: q has 6 heads"), Error);
}
