// bfloat16 products: C(fp32) = alpha * op(A) * op(B) + beta * C with A and B rounded to
// bf16 inside the packing, products accumulated in fp32 (gemm_bf16.cpp), on one of the
// bf16 paths below.
#pragma once
#include <cstdint>
#include <cstring>

#include "gemm.h"

namespace fastnn {

// The reference conversion: round to nearest, ties to even; infinities stay, a NaN stays a
// (quiet) NaN with its sign, subnormals are rounded like any other value (not flushed), a
// value past the largest finite bf16 rounds to infinity. bf16 is fp32's upper half, so
// rounding is an integer add on the bits.
inline uint16_t bf16_from_float(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
    return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float float_from_bf16(uint16_t h) {
    const uint32_t u = uint32_t{h} << 16;
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// n values converted as bf16_from_float does, on the vector conversion that packing uses
// where the CPU has AVX512_BF16 (the tests hold it to the reference), else the reference.
void bf16_convert(const float* x, uint16_t* y, int64_t n);

// One bf16 path: its microkernel and the packing it reads. A is packed in panels of MR rows
// as kp / KA groups of MR x KA values (KA consecutive ks of a row together: 2 for
// vdpbf16ps's pairs, 32 for an AMX tile row); B in panels of NR columns as kp / 2 groups of
// NR pairs (b[p][j], b[p+1][j]), the VNNI layout of both. kp is the k-block rounded up to a
// multiple of KA; the padding is zeros, in A and B alike.
struct Bf16Kernel {
    const char* name;
    int mr, nr, ka;
    // A product of k up to this many KCs runs as one k-block (its whole tiles straight to
    // C, see run_bf16), its micro-panels then past L1.
    int one_block_kcs;
    // Called by each thread before its first tile (AMX: the tile configuration, which is per
    // thread); nullptr if none.
    void (*begin)();
    // op(A) rows [0, rows) x ks [0, kc) (element (i, p) at a[i * lda + p], or a[p * lda + i]
    // when trans) into one panel; rows <= MR, zeros past them and past kc.
    void (*pack_a)(bool trans, const float* a, int64_t lda, int64_t rows, int64_t kc, uint16_t* out);
    // op(B) ks [0, kc) x columns [0, cols) (element (p, j) at b[p * ldb + j], or
    // b[j * ldb + p] when trans) into one panel; cols <= NR, zeros past them and past kc.
    void (*pack_b)(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t cols, uint16_t* out);
    // acc += (a panel) x (b panel) over kp ks, on a whole MR x NR tile of the driver's fp32
    // accumulator (rows ld floats apart), set to zero first when `fresh`.
    void (*fn)(int64_t kp, const uint16_t* a, const uint16_t* b, float* acc, int64_t ld, bool fresh);
};

#ifdef FASTNN_X86
extern const Bf16Kernel kAvx512Bf16Kernel;
extern const Bf16Kernel kAmxBf16Kernel;
// The B packing of both paths (kernel_avx512_bf16.cpp): kp / 2 groups of nr pairs.
void pack_b_pairs(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t kp, int64_t cols,
                  int nr, uint16_t* out);
// bf16_convert on AVX512_BF16: vcvtneps2bf16, or the integer rounding for a vector holding a
// subnormal (which the instruction takes as zero), as the packing converts.
void bf16_convert_avx512_bf16(const float* x, uint16_t* y, int64_t n);
// Whether Linux lets this process use the AMX tile state (asked once; kernel_amx_bf16.cpp).
bool amx_permitted();
// The flops of `iters` rounds of 16 independent vdpbf16ps chains (measure_peak's probe).
double bf16_dot_probe_avx512(int64_t iters);
#endif

// The product on the active bf16 path; on the "fp32" path, gemm itself on the fp32 inputs.
void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc, const Epilogue& epilogue = Epilogue{});

// gemm_reference on the bf16-rounded inputs: the values every bf16 path is held to.
void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float beta, float* c, int64_t ldc, const Epilogue& epilogue = Epilogue{});

// Path selection: "amx", "avx512_bf16" or "fp32", the one fastnn picks (bf16_auto_path)
// unless FASTNN_BF16, FASTNN_ISA or set_bf16_path says otherwise.
const char* bf16_path();
// The rule that picks: amx where it runs; else avx512_bf16 where it runs and its dot products
// (dot_gflops, measured on one core) come at least 1.5x as fast as float32 FMAs (fma_gflops),
// which the packing's conversions and the fp32 accumulator's copy then still leave ahead; else
// fp32 (on an Intel Xeon with AMX, vdpbf16ps ran at 92 GFLOP/s a core against the FMA's 185,
// and the MLP step's GEMMs on it at 0.44-0.48x fp32's speed; on an AMD Zen 5 its GEMM ran
// 1.75-1.82x fp32's).
const char* choose_bf16_path(bool amx_runs, bool avx512_bf16_runs, double dot_gflops, double fma_gflops);
// The path fastnn picked for this CPU, and why that is fp32 where a bf16 kernel runs ("" else).
const char* bf16_auto_path();
const char* bf16_auto_reason();
bool set_bf16_path(const char* name);      // false if unknown or not run here
// The ISA chosen for every kernel (FASTNN_ISA, set_isa) moves bf16 with it, as a CPU of that
// ISA would have it: fp32 off AVX-512 (both kernels are AVX-512 code), the automatic path on
// it; unless FASTNN_BF16 or set_bf16_path chose the path.
void bf16_follow_isa(const char* isa);
void reset_bf16_path();  // back to the automatic path (for the ISA in use), following set_isa again
// What chose the path in use, for config(): "" where it is the automatic one.
const char* bf16_chosen_by();
int supported_bf16_paths(const char** names);  // fills up to 3, best first
// Why a path is missing here ("" where it runs): for config() and the fp32 warning.
const char* bf16_missing_reason(const char* name);
// The blocking of a bf16 path (the model's, for its MR, NR and 2-byte elements).
Blocking bf16_blocking(const char* name);

}  // namespace fastnn
