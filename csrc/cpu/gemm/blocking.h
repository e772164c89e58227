// GEMM block sizes: derived from the cache geometry by an analytical model, replaced by a
// tuned or overridden blocking where one is set (gemm.h: set_blocking).
#pragma once
#include <cstdint>
#include <vector>

#include "core/cpu.h"

namespace fastnn {

struct Blocking {
    int64_t kc = 0;  // k-block: an MR x KC panel of op(A) stays in L1
    int64_t nc = 0;  // column block: the packed KC x NC block of op(B) stays in L2
    int64_t mc = 0;  // row block: the packed MC x KC block of op(A) stays in L3
};

// The model, after Low, Igual, Smith and Quintana-Orti, "Analytical modeling is enough for
// high-performance BLIS" (ACM TOMS 2016), in this library's row-major terms: the
// microkernel broadcasts from an MR x KC panel of A, which stays in L1 while the KC x NR
// micro-panels of B stream through it from the B block in L2.
//   L1: one way is left for C and the stream's turnover; of the other W1 - 1 ways, the B
//       micro-panel takes its share by width, floor((W1 - 1) NR / (MR + NR)); KC fills it.
//   L2: one way left, one or more for the A panel; the B block fills the remaining ways,
//       divided between the logical CPUs that share the cache (each thread packs its own).
//   L3: one way left, one or more for the B block; the A block fills the remaining ways,
//       divided between the logical CPUs that share it. Without an L3, MC is the size
//       the L2 model would give.
// KC depends on the machine and the kernel only, never on the thread count.
Blocking model_blocking(const std::vector<CacheLevel>& caches, int mr, int nr);

}  // namespace fastnn
