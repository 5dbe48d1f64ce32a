// Only the header-only core: no BLAS, no JSON. The GEMM falls back to the blocked kernel.
#include <reason/core/philox.hpp>
#include <reason/kernels/gemm.hpp>

#include <cstdio>
#include <vector>

int main() {
  std::vector<float> a{1, 2, 3, 4}, b{5, 6, 7, 8}, c(4);
  reason::kernels::gemm<float>(reason::kernels::Trans::N, reason::kernels::Trans::N, 1.0f,
                               reason::make_view(static_cast<const float*>(a.data()), 2, 2),
                               reason::make_view(static_cast<const float*>(b.data()), 2, 2), 0.0f,
                               reason::make_view(c.data(), 2, 2));
  std::printf("core only: %g %g %g %g, philox %08x\n", c[0], c[1], c[2], c[3], reason::Philox(1).next_u32());
  return c[0] == 19 && c[3] == 50 ? 0 : 1;
}
