// Element-wise losses against central differences in float64, and their defining properties:
// k3, the GRPO/PPO clipped surrogate (clipped tokens get exactly zero gradient), the PPO value
// loss, DPO on one pair, Bradley-Terry.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <vector>

#include "reason/rl/bradley_terry.hpp"
#include "reason/rl/dpo.hpp"
#include "reason/rl/grpo.hpp"
#include "reason/rl/kl.hpp"
#include "reason/rl/ppo.hpp"
#include "support/gradcheck.hpp"

using namespace reason;

namespace {

using Dapo = rl::Grpo<rl::GrpoConfig{.eps_low = 0.2f, .eps_high = 0.28f, .aggregation = rl::Aggregation::token_mean}>;
using PpoClip = rl::Ppo<rl::PpoConfig{.eps_low = 0.2f, .eps_high = 0.2f, .value_clip = 0.2f}>;

/// Central difference of f at x along one scalar.
template <class F>
double derivative(F&& f, double x, double h = 1e-6) {
  return (f(x + h) - f(x - h)) / (2 * h);
}

void check_close(double analytic, double numeric) {
  const double err = std::abs(analytic - numeric) / std::max({std::abs(analytic), std::abs(numeric), 1e-8});
  CAPTURE(analytic);
  CAPTURE(numeric);
  CHECK(err <= 1e-6);
}

}  // namespace

TEST_CASE("k3 is non-negative, zero exactly when the policies agree, and its derivative is right") {
  for (double logp : {-3.0, -0.7, -1e-3}) {
    CHECK(rl::k3(logp, logp).value == 0.0);
    CHECK(rl::k3(logp, logp).dlogp == 0.0);
    for (double d : {-2.0, -0.3, -1e-4, 1e-9, 0.05, 1.5}) {
      const double ref = logp + d;
      const rl::KlTerm k = rl::k3(logp, ref);
      CHECK(k.value > 0.0);
      CHECK(k.value == doctest::Approx(std::exp(d) - d - 1).epsilon(1e-9));
      if (std::abs(d) > 1e-6) check_close(k.dlogp, derivative([&](double x) { return rl::k3(x, ref).value; }, logp));
    }
  }
  // it estimates KL(pi || pi_ref) without bias: E_{pi}[k3] = KL, here for two 3-way distributions
  const std::array<double, 3> p = {0.5, 0.3, 0.2}, q = {0.2, 0.5, 0.3};
  double kl = 0, ek3 = 0;
  for (int i = 0; i < 3; ++i) {
    kl += p[i] * std::log(p[i] / q[i]);
    ek3 += p[i] * rl::k3(std::log(p[i]), std::log(q[i])).value;
  }
  CHECK(ek3 == doctest::Approx(kl).epsilon(1e-12));
}

TEST_CASE("The GRPO token loss matches finite differences away from the clip boundary") {
  const double beta = 0.07;
  // ratios exp(delta) well inside (0.8, 1.28), and outside it on either side
  for (double delta : {-0.5, -0.1, 0.0, 0.08, 0.2, 0.4}) {
    for (double adv : {-1.3, 0.6}) {
      const double logp = -1.1, old = logp - delta, ref = logp + 0.3;
      auto f = [&](double x) { return Dapo::token(x, old, ref, adv, beta).loss; };
      const rl::TokenTerm t = Dapo::token(logp, old, ref, adv, beta);
      CAPTURE(delta);
      CAPTURE(adv);
      check_close(t.dlogp, derivative(f, logp));
      const double r = std::exp(delta);
      CHECK(t.ratio == doctest::Approx(r).epsilon(1e-14));
      const double surrogate = -std::min(r * adv, std::clamp(r, 0.8, 1.28) * adv);
      CHECK(t.loss == doctest::Approx(surrogate + beta * rl::k3(logp, ref).value).epsilon(1e-6));
    }
  }
}

TEST_CASE("Clipped tokens get exactly zero surrogate gradient, the KL term still counts") {
  const double logp = -0.9, ref = -0.6;
  struct Case {
    double delta, adv;
    bool clipped;
  };
  // A > 0 with ratio > 1 + eps_high; A < 0 with ratio < 1 - eps_low; the other sides are not clipped
  const Case cases[] = {{0.3, 1.0, true},   {std::log(1.281), 2.0, true}, {-0.3, -1.0, true},
                        {0.3, -1.0, false}, {-0.3, 1.0, false},           {std::log(1.27), 1.0, false},
                        {0.0, 0.0, false}};
  for (const Case& c : cases) {
    CAPTURE(c.delta);
    CAPTURE(c.adv);
    const rl::TokenTerm t = Dapo::token(logp, logp - c.delta, ref, c.adv, 0.0);
    CHECK(t.clipped == c.clipped);
    if (c.clipped) {
      CHECK(t.dlogp == 0.0);
      const rl::TokenTerm k = Dapo::token(logp, logp - c.delta, ref, c.adv, 0.5);
      CHECK(k.dlogp == 0.5 * rl::k3(logp, ref).dlogp);
      CHECK(k.dlogp != 0.0);
    } else {
      CHECK(t.dlogp == doctest::Approx(-std::exp(c.delta) * c.adv).epsilon(1e-14));
    }
  }
  // the PPO surrogate shares the clip; a symmetric range clips at 1.2 from above
  CHECK(PpoClip::token(0.0, -std::log(1.25), 1.0).dlogp == 0.0);
  CHECK(PpoClip::token(0.0, -std::log(1.15), 1.0).dlogp != 0.0);
}

TEST_CASE("The clipped value loss matches finite differences and stops at the clip") {
  // (value - value_old, return): inside the clip; outside with the unclipped branch larger;
  // outside with the clipped branch larger (flat)
  struct Case {
    double dv, ret;
    bool flat;
  };
  const double v_old = 0.4;
  for (const Case c : {Case{0.1, 1.3, false}, Case{-0.05, -0.7, false}, Case{0.6, -0.5, false}, Case{0.6, 1.2, true},
                       Case{-0.5, -0.3, true}}) {
    const double v = v_old + c.dv;
    const rl::ValueTerm t = PpoClip::value_token(v, v_old, c.ret);
    CAPTURE(c.dv);
    CAPTURE(c.ret);
    CHECK(t.clipped == c.flat);
    check_close(t.dvalue, derivative([&](double x) { return PpoClip::value_token(x, v_old, c.ret).loss; }, v));
    if (c.flat) CHECK(t.dvalue == 0.0);
  }
  // no clip: plain squared error
  using NoClip = rl::Ppo<rl::PpoConfig{.value_clip = 0.0f}>;
  CHECK(NoClip::value_token(2.0, 0.0, 0.5).loss == doctest::Approx(0.5 * 1.5 * 1.5));
  CHECK(NoClip::value_token(2.0, 0.0, 0.5).dvalue == doctest::Approx(1.5));
}

TEST_CASE("The DPO loss of a pair matches finite differences and falls as the chosen log-prob rises") {
  const double beta = 0.3;
  const double lc = -5.0, rc = -5.4, lr = -6.1, rr = -5.5;
  const rl::DpoTerm t = rl::Dpo::pair(lc, rc, lr, rr, beta);
  const double z = beta * ((lc - rc) - (lr - rr));
  CHECK(t.z == doctest::Approx(z).epsilon(1e-14));
  CHECK(t.loss == doctest::Approx(std::log1p(std::exp(-z))).epsilon(1e-14));
  check_close(t.dlogp_chosen, derivative([&](double x) { return rl::Dpo::pair(x, rc, lr, rr, beta).loss; }, lc));
  check_close(t.dlogp_rejected, derivative([&](double x) { return rl::Dpo::pair(lc, rc, x, rr, beta).loss; }, lr));
  CHECK(t.dlogp_chosen < 0);
  CHECK(t.dlogp_rejected > 0);
  double prev = INFINITY;
  for (double up = 0; up < 20; up += 0.5) {
    const double l = rl::Dpo::pair(lc + up, rc, lr, rr, beta).loss;
    CHECK(l < prev);
    prev = l;
  }
  // equal log-ratios: log 2; extreme margins stay finite
  CHECK(rl::Dpo::pair(-1, -2, -3, -4, beta).loss == doctest::Approx(std::log(2.0)).epsilon(1e-14));
  CHECK(std::isfinite(rl::Dpo::pair(-1e4, 0, 0, 0, 1.0).loss));
  CHECK(rl::Dpo::pair(1e4, 0, 0, 0, 1.0).loss == 0.0);
}

TEST_CASE("The Bradley-Terry loss matches finite differences") {
  for (double rc : {-2.0, 0.3, 4.0}) {
    for (double rr : {-1.0, 0.5}) {
      for (double m : {0.0, 0.7}) {
        const rl::BradleyTerryTerm t = rl::bradley_terry(rc, rr, m);
        CHECK(t.loss == doctest::Approx(-std::log(1.0 / (1.0 + std::exp(-(rc - rr - m))))).epsilon(1e-13));
        check_close(t.dchosen, derivative([&](double x) { return rl::bradley_terry(x, rr, m).loss; }, rc));
        check_close(t.drejected, derivative([&](double x) { return rl::bradley_terry(rc, x, m).loss; }, rr));
        CHECK(t.dchosen == -t.drejected);
      }
    }
  }
  CHECK(rl::bradley_terry(0, 0).loss == doctest::Approx(std::log(2.0)));
  CHECK(std::isfinite(rl::bradley_terry(-800, 800).loss));
  const std::vector<double> c = {1.0, -0.5}, r = {0.0, 0.5};
  std::vector<double> dc(2), dr(2);
  const double mean = rl::bradley_terry_mean(c, r, dc, dr);
  CHECK(mean == doctest::Approx(0.5 * (rl::bradley_terry(1, 0).loss + rl::bradley_terry(-0.5, 0.5).loss)));
  CHECK(dc[1] == doctest::Approx(0.5 * rl::bradley_terry(-0.5, 0.5).dchosen));
}
