// tests/support/gradcheck.hpp — compares an analytic gradient with central finite differences.
//
// Used on the float64 instantiation of every backward. The loss is a scalar function of the
// inputs being perturbed (usually L = sum(output * R) with a fixed random R, which makes every
// output element matter). Each coordinate is perturbed by ±h and restored, so the inputs are
// unchanged afterwards.
//
// Error metric: |analytic - numeric| / max(|analytic|, |numeric|, floor), where
// floor = 1e-3 * max|numeric| keeps coordinates whose true gradient is ~0 (so that any
// difference is round-off, ~1e-16 |L| / h) from dominating. Central differences have
// truncation error O(h^2), so h = 1e-5 gives ~1e-10 on smooth functions: far below 1e-6.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "reason/core/philox.hpp"

namespace reason::test {

struct GradcheckResult {
  double max_rel_error = 0;
  std::int64_t worst_index = -1;
  double analytic = 0, numeric = 0;
  bool ok = true;

  [[nodiscard]] std::string describe() const {
    std::ostringstream os;
    os << "max rel error " << max_rel_error << " at index " << worst_index << " (analytic " << analytic
       << ", numeric " << numeric << ")";
    return os.str();
  }
};

/// Numeric gradient of `loss` with respect to `x` by central differences.
inline std::vector<double> numeric_gradient(const std::function<double()>& loss, std::span<double> x,
                                            double h = 1e-5) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double lp = loss();
    x[i] = saved - h;
    const double lm = loss();
    x[i] = saved;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

/// Compares `analytic` with the numeric gradient of `loss` w.r.t. `x`; ok when the error <= tol.
inline GradcheckResult gradcheck(const std::function<double()>& loss, std::span<double> x,
                                 std::span<const double> analytic, double tol = 1e-6, double h = 1e-5) {
  const std::vector<double> numeric = numeric_gradient(loss, x, h);
  double scale = 0;
  for (double v : numeric) scale = std::max(scale, std::abs(v));
  const double floor = std::max(1e-3 * scale, 1e-12);
  GradcheckResult r;
  for (std::size_t i = 0; i < numeric.size(); ++i) {
    const double a = analytic[i], n = numeric[i];
    const double err = std::abs(a - n) / std::max({std::abs(a), std::abs(n), floor});
    if (r.worst_index < 0 || !(err <= r.max_rel_error)) {  // the negated form also catches NaN
      r.max_rel_error = std::isnan(err) ? INFINITY : err;
      r.worst_index = static_cast<std::int64_t>(i);
      r.analytic = a;
      r.numeric = n;
    }
  }
  r.ok = r.max_rel_error <= tol;
  return r;
}

/// Fills `v` with uniform values in [lo, hi) from `rng`.
template <class T>
void fill_uniform(std::span<T> v, Philox& rng, double lo = -1.0, double hi = 1.0) {
  for (auto& x : v) x = static_cast<T>(lo + (hi - lo) * rng.uniform_double());
}

/// The seed for a test's random inputs: REASON_TEST_SEED if set, else a fixed default.
/// Tests print it on failure so a run can be reproduced.
inline std::uint64_t test_seed(std::uint64_t fallback = 20261124) {
  if (const char* s = std::getenv("REASON_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return fallback;
}

}  // namespace reason::test
