// GEMM block sizes: derived from the cache geometry by an analytical model, replaced by a
// tuned or overridden blocking where one is set (gemm.h: set_blocking).
#pragma once
#include <cstdint>
#include <vector>

#include "core/cpu.h"

namespace fastnn {

struct Blocking {
    int64_t kc = 0;  // k-block: C's tiles are read and written once per KC steps
    int64_t nc = 0;  // column block: the packed KC x NC block of op(B) stays in L3
    int64_t mc = 0;  // row block: the packed MC x KC block of op(A) stays in L2
};

// The model, for the driver's loops (gemm.cpp): BLIS's loop nest, with the sizes chosen by
// what a block costs beyond the level it lives in (after Low, Igual, Smith and
// Quintana-Orti, "Analytical modeling is enough for high-performance BLIS", ACM TOMS 2016,
// whose L1 rule is replaced: see below). Per flop, the microkernel reads (MR + NR) / (2 MR
// NR) floats of packed panels, which L2 serves at the kernel's rate on every x86-64 core
// since Haswell (the 8 x 48 AVX-512 kernel needs 19 bytes a cycle, L2 gives 32-64). What
// costs is traffic from beyond L2: C's tile, read and written once per KC steps, 1/KC
// floats per flop, from L3 or memory once C outgrows L2; and B's micro-panels, fetched from
// L3 once per A block, 1/(2 MC). A float of C weighs four of B: B's micro-panel is one
// contiguous stream that the hardware prefetchers run ahead of, C's tile is MR rows far
// apart, fetched, dirtied and written back around the FMAs. Measured on a Zen 5 (1 thread,
// 5 rounds alternated): equal weights (KC 640, MC 336) ran 2048^2 and 4096^2 at 251 and 245
// GFLOP/s, these (KC 1096, MC 176) at 262 and 256; 512-1024 and the MLP's products moved
// within noise, except 3-5% faster forwards with 784 inputs (one k-block instead of two).
//   L2: the A block (MC x KC) and the B micro-panel (KC x NR) in W2 - 1 ways, divided
//       between the logical CPUs that share the cache (each thread packs its own); KC (a
//       multiple of 8, 16 to 2048) and MC (of MR) minimize 4/KC + 1/(2 MC) within that.
//   L3: one way left and the A block's ways taken, for the B block, divided between the
//       logical CPUs that share it; and at most four times the thread's L2 (kBBlockL2s),
//       at most 8192 columns. Without an L3, L2's sizes. B's micro-panels come from L3 at
//       1/(2 MC) floats per flop whatever the block's width; the width only amortizes the
//       A block's packing, 1/(2 NC) per flop, a fifth of that once the B block holds four
//       L2s (the A block fills most of one). A wider block claims L3 that C's stream, the
//       operands being packed and, on a VM, cores the guest does not see also use: on a
//       2-vCPU Zen 5 guest (L3 32 MiB "shared by 2") 4 MiB blocks (NC 912) ran 2 threads
//       1-5% faster than 14 MiB ones (NC 3312) at 1500-4096, 1 thread within -1.4..+2.5%
//       (5 rounds alternated, subprocesses).
// BLIS's rule keeps the KC x NR micro-panel in L1 (W1 - 1 ways with an A panel): KC = 192
// for the 8 x 48 kernel on a 48 KiB L1. On a Zen 5 that ran 2048^2 at 71% of the FMA peak
// and 4096^2 at 69%, against 86-87% at KC = 640 by this model with equal weights (C's 11
// passes instead of 4).
// A contiguous panel of S bytes needs ceil(S / way) ways of a level (sets x line bytes).
// KC depends on the machine and the kernel only, never on the thread count.
Blocking model_blocking(const std::vector<CacheLevel>& caches, int mr, int nr);

// The bf16 driver's blocking (gemm_bf16.cpp), whose loop nest keeps an MC x NC fp32
// accumulator of C in L2 across all the k-blocks, so KC no longer sets C's traffic and is
// sized for L1 instead (BLIS's rule): the A and B micro-panels, KC x (MR + NR) bf16, in two
// thirds of L1 (the rest: the accumulator's lines, the next panels), a multiple of 32 (AMX's
// tile depth). The accumulator, MC x NC x 4 bytes, in a quarter of the thread's L2, and the
// block's B panels, KC x NC x 2, in an eighth (read from L3 once per A block).
Blocking model_blocking_bf16(const std::vector<CacheLevel>& caches, int mr, int nr);

// Whether `rows` rows of a matrix read in place, `stride_bytes` apart, stay in L2 together:
// they fall on way / gcd(stride, way) set positions (way = L2 sets x line bytes), so
// rows x gcd / way of them compete for each position's ways; at most half of the ways (the
// packed panels and C need the rest). A stride of a multiple of 4 KiB (1024 floats and up)
// fails for a few hundred rows: B's rows then come from L3 at every reuse.
bool strided_rows_fit_l2(const std::vector<CacheLevel>& caches, int64_t rows, int64_t stride_bytes);

}  // namespace fastnn
