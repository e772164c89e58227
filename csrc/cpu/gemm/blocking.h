// GEMM block sizes: derived from the cache geometry by an analytical model, replaced by a
// tuned or overridden blocking where one is set (gemm.h: set_blocking).
#pragma once
#include <cstdint>
#include <vector>

#include "core/cpu.h"

namespace fastnn {

struct Blocking {
    int64_t kc = 0;  // k-block: a KC x NR micro-panel of op(B) stays in L1
    int64_t nc = 0;  // column block: the packed KC x NC block of op(B) stays in L3
    int64_t mc = 0;  // row block: the packed MC x KC block of op(A) stays in L2
};

// The model, after Low, Igual, Smith and Quintana-Orti, "Analytical modeling is enough for
// high-performance BLIS" (ACM TOMS 2016), for the driver's loops (gemm.cpp): the microkernel
// keeps a KC x NR micro-panel of B in L1 while the KC x MR panels of A stream through it
// from the A block in L2; B's block waits in L3. A contiguous panel of S bytes needs
// ceil(S / way) ways of a cache level (a way holds sets x line bytes).
//   L1: the largest KC (a multiple of 8) whose A panel and B micro-panel need at most
//       W1 - 1 ways together: one way is left for the C tile and the next panel.
//   L2: one way left and the B micro-panel's ways taken; the A block fills the rest,
//       divided between the logical CPUs that share the cache (each thread packs its own).
//   L3: the same with the A block's ways taken, for the B block; at most 8192 columns
//       (a thread's packed B is then at most 32 KC KiB). Without an L3, L2's sizes.
// KC depends on the machine and the kernel only, never on the thread count.
Blocking model_blocking(const std::vector<CacheLevel>& caches, int mr, int nr);

}  // namespace fastnn
