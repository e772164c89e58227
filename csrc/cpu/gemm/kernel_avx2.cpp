// AVX2 + FMA microkernel, 6 x 16: 12 ymm accumulators, 2 B loads and a broadcast per step.
// Compiled with -mavx2 -mfma; only called when the CPU has both.
#include <immintrin.h>

#include <cmath>

#include "gemm.h"
#include "small_gemm.h"
#include "../avx2_tile_asm.h"

namespace fastnn {
namespace {

constexpr int MR = 6, NR = 16;
// The transposed path's break-even (Microkernel::rows_a_k_per_row): transposed against packed,
// Zen 3, 1 thread, n 512 (NT), 21 rounds alternated, packed/transposed time: m 16 k 128 0.98,
// k 256 0.77; m 32 k 128 1.00, k 256 0.89; m 64 k 256 1.00, k 512 0.99; m 96 k 256 1.06, k 512
// 1.02; m 68, n 1405 (TT): k 20 1.55, k 64 1.30, k 256 1.15. 2 threads: m 64 k 128 1.08, k 256
// 1.00; m 120 k 256 1.11; 68 x 1405 x 20 (TT) 1.84.
constexpr int kRowsAKPerRow = 4;

// An edge tile: R x 8 NV of C (R <= MR: only its rows are computed); rows past `rows` are
// not stored, and the last vector holds `in_last` columns (1-8), stored one by one where
// fewer than 8: AMD's masked stores (vmaskmovps) made a 686 x 12 x 599 (TT) product of
// 12-column tiles 20% slower than the full kernel through a buffer (Zen 5).
template <int NV, int R>
inline void tile_kernel(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                        int64_t ldc, float alpha, float beta, int in_last, int64_t rows) {
    // The C tile is read at the end: start fetching it now, while the FMAs run (its rows
    // are ldc apart, often a power of two, so they also compete for the same L1 sets).
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
        const float* row = c + std::min<int64_t>(i, rows - 1) * ldc;
        _mm_prefetch(reinterpret_cast<const char*>(row), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(row + 8 * NV - 1), _MM_HINT_T0);
    }
    __m256 acc[R][NV];
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
        for (int h = 0; h < NV; ++h) acc[i][h] = _mm256_setzero_ps();
    auto step = [&]() __attribute__((always_inline)) {
        __m256 bv[NV];
#pragma GCC unroll 2
        for (int h = 0; h < NV; ++h) bv[h] = _mm256_loadu_ps(b + 8 * h);
#pragma GCC unroll 6
        for (int i = 0; i < R; ++i) {
            __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 2
            for (int h = 0; h < NV; ++h) acc[i][h] = _mm256_fmadd_ps(ai, bv[h], acc[i][h]);
        }
        a += MR;
        b += ldb;
    };
    // Unrolled by 4 (fewer loop-control instructions per FMA): 2-3% faster on a Zen 3.
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        step();
        step();
        step();
        step();
    }
    for (; p < kc; ++p) step();
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
        if (i >= rows) break;
        float* row = c + i * ldc;
#pragma GCC unroll 2
        for (int h = 0; h < NV; ++h) {
            __m256 r = _mm256_mul_ps(va, acc[i][h]);
            if (h == NV - 1 && in_last < 8) {
                alignas(32) float t[8];
                _mm256_store_ps(t, r);
                for (int q = 0; q < in_last; ++q)
                    row[8 * h + q] = beta != 0.0f ? std::fma(beta, row[8 * h + q], t[q]) : t[q];
            } else {
                if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8 * h), r);
                _mm256_storeu_ps(row + 8 * h, r);
            }
        }
    }
}

// One k step of the full tile in ymm0-11 (row i in ymm 2i, 2i+1): B's two vectors, then
// each row's broadcast A value times both. OFF: the step's A group, in bytes.
#define FASTNN_AVX2_STEP(OFF)                                                              \
    "vmovups (%[b]), %%ymm12\n\t"                                                          \
    "vmovups 32(%[b]), %%ymm13\n\t"                                                        \
    "add %[ldb4], %[b]\n\t"                                                                \
    "vbroadcastss " #OFF "+0(%[a]), %%ymm14\n\t"                                           \
    "vfmadd231ps %%ymm12, %%ymm14, %%ymm0\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm14, %%ymm1\n\t"                                             \
    "vbroadcastss " #OFF "+4(%[a]), %%ymm15\n\t"                                           \
    "vfmadd231ps %%ymm12, %%ymm15, %%ymm2\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm15, %%ymm3\n\t"                                             \
    "vbroadcastss " #OFF "+8(%[a]), %%ymm14\n\t"                                           \
    "vfmadd231ps %%ymm12, %%ymm14, %%ymm4\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm14, %%ymm5\n\t"                                             \
    "vbroadcastss " #OFF "+12(%[a]), %%ymm15\n\t"                                          \
    "vfmadd231ps %%ymm12, %%ymm15, %%ymm6\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm15, %%ymm7\n\t"                                             \
    "vbroadcastss " #OFF "+16(%[a]), %%ymm14\n\t"                                          \
    "vfmadd231ps %%ymm12, %%ymm14, %%ymm8\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm14, %%ymm9\n\t"                                             \
    "vbroadcastss " #OFF "+20(%[a]), %%ymm15\n\t"                                          \
    "vfmadd231ps %%ymm12, %%ymm15, %%ymm10\n\t"                                            \
    "vfmadd231ps %%ymm13, %%ymm15, %%ymm11\n\t"

// The full tile. Its k loop is assembly: GCC 12 compiled tile_kernel's 12 accumulators with
// spills and register copies, so it ran at 75% of the FMA peak with A and B in L1, this loop
// at 97-100% (Zen 3, 1 thread). Same products in the same order as tile_kernel.
void kernel_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                 int64_t ldc, float alpha, float beta) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {  // as tile_kernel: C's rows are read at the end
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
    alignas(32) float acc[MR * NR];
    int64_t quads = kc / 4, rest = kc % 4;
    const int64_t ldb4 = ldb * static_cast<int64_t>(sizeof(float));
    asm volatile(
        FASTNN_AVX2_TILE_ZERO
        "test %[quads], %[quads]\n\t"
        "jz 2f\n\t"
        ".p2align 5\n\t"
        "1:\n\t"  // four steps at a time
        FASTNN_AVX2_STEP(0) FASTNN_AVX2_STEP(24) FASTNN_AVX2_STEP(48) FASTNN_AVX2_STEP(72)
        "add $96, %[a]\n\t"
        "dec %[quads]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        "test %[rest], %[rest]\n\t"
        "jz 4f\n\t"
        "3:\n\t"  // the last kc % 4 steps
        FASTNN_AVX2_STEP(0)
        "add $24, %[a]\n\t"
        "dec %[rest]\n\t"
        "jnz 3b\n\t"
        "4:\n\t"
        FASTNN_AVX2_TILE_STORE(acc)
        : [a] "+r"(a), [b] "+r"(b), [quads] "+r"(quads), [rest] "+r"(rest)
        : [ldb4] "r"(ldb4), [acc] "r"(acc)
        : FASTNN_AVX2_TILE_CLOBBERS);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            float* out = c + i * ldc + 8 * h;
            __m256 r = _mm256_mul_ps(va, _mm256_load_ps(acc + i * NR + 8 * h));
            if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(out), r);
            _mm256_storeu_ps(out, r);
        }
}
#undef FASTNN_AVX2_STEP

template <int R>
void edge_tile(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
               float alpha, float beta, int64_t rows, int64_t cols) {
    const int in_last = static_cast<int>(cols - (cols > 8 ? 8 : 0));
    if (cols <= 8)
        tile_kernel<1, R>(kc, a, b, ldb, c, ldc, alpha, beta, in_last, rows);
    else
        tile_kernel<2, R>(kc, a, b, ldb, c, ldc, alpha, beta, in_last, rows);
}

// An edge tile: only the vectors holding columns and an even number of rows (rows + 1 at
// most) are computed, as kernel_avx512_edge does (Zen 5, 1 thread: 37 x 40 x 1000 74 -> 82
// GFLOP/s, 20 x 500 x 300 99 -> 104; squares unchanged).
void kernel_avx2_edge(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                      int64_t ldc, float alpha, float beta, int64_t rows, int64_t cols) {
    if (rows <= 2)
        edge_tile<2>(kc, a, b, ldb, c, ldc, alpha, beta, rows, cols);
    else if (rows <= 4)
        edge_tile<4>(kc, a, b, ldb, c, ldc, alpha, beta, rows, cols);
    else
        edge_tile<6>(kc, a, b, ldb, c, ldc, alpha, beta, rows, cols);
}

// The 8 x 8 block at rows r[0..7] transposed in registers: on return, r[j] holds column j.
inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {  // within each 128-bit lane: columns 0-3 of 4 rows
        const __m256* x = t + 4 * h;
        u[4 * h + 0] = _mm256_shuffle_ps(x[0], x[2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * h + 1] = _mm256_shuffle_ps(x[0], x[2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * h + 2] = _mm256_shuffle_ps(x[1], x[3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * h + 3] = _mm256_shuffle_ps(x[1], x[3], _MM_SHUFFLE(3, 2, 3, 2));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {  // rows 0-3 and 4-7 of columns j and 4 + j
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

// Rows [0, R) x columns [0, kc) of a row-major matrix into kc groups of R floats placed
// `stride` apart, 8 columns at a time through transpose8; R is 8, or 6 (A's panel: rows 6
// and 7 repeat row 5, which is read anyway, and are not stored).
template <int R>
void pack_rows(const float* src, int64_t ld, int64_t kc, float* out, int64_t stride) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8, out += 8 * stride) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (i < R ? i : R - 1) * ld + p);
        transpose8(r);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            if (R == 8) {
                _mm256_storeu_ps(out + j * stride, r[j]);
            } else {  // 6 floats: 4 then 2, never past the group
                _mm_storeu_ps(out + j * stride, _mm256_castps256_ps128(r[j]));
                _mm_storel_pi(reinterpret_cast<__m64*>(out + j * stride + 4), _mm256_extractf128_ps(r[j], 1));
            }
        }
    }
    for (; p < kc; ++p, out += stride)
        for (int i = 0; i < R; ++i) out[i] = src[i * ld + p];
}

void pack_a_rows(const float* a, int64_t lda, int64_t kc, float* out, int64_t rows) {
    if (rows == MR)
        pack_rows<MR>(a, lda, kc, out, MR);
    else
        pack_rows_tail(a, lda, kc, out, MR, 0, rows);
}

// A transposed B's panel: up to NR rows of the stored matrix, 8 at a time.
void pack_b_rows(const float* b, int64_t ldb, int64_t kc, float* out, int64_t rows) {
    int64_t g = 0;
    for (; g + 8 <= rows; g += 8) pack_rows<8>(b + g * ldb, ldb, kc, out + g, NR);
    if (g < NR) pack_rows_tail(b, ldb, kc, out, NR, g, rows);
}

// ---- the transposed path's tile: A's rows read in place ----------------------------------

// One k step of the rows-in-place tile (ymm0-11 as kernel_avx2's): B's packed row, then
// row i's value at p + OFF (in floats) from its own pointer r<i>.
#define FASTNN_AVX2_ROWS_STEP(OFF)                                                         \
    "vmovups 64*" #OFF "(%[b]), %%ymm12\n\t"                                               \
    "vmovups 64*" #OFF "+32(%[b]), %%ymm13\n\t"                                            \
    "vbroadcastss 4*" #OFF "(%[r0],%[p],4), %%ymm14\n\t"                                   \
    "vfmadd231ps %%ymm12, %%ymm14, %%ymm0\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm14, %%ymm1\n\t"                                             \
    "vbroadcastss 4*" #OFF "(%[r1],%[p],4), %%ymm15\n\t"                                   \
    "vfmadd231ps %%ymm12, %%ymm15, %%ymm2\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm15, %%ymm3\n\t"                                             \
    "vbroadcastss 4*" #OFF "(%[r2],%[p],4), %%ymm14\n\t"                                   \
    "vfmadd231ps %%ymm12, %%ymm14, %%ymm4\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm14, %%ymm5\n\t"                                             \
    "vbroadcastss 4*" #OFF "(%[r3],%[p],4), %%ymm15\n\t"                                   \
    "vfmadd231ps %%ymm12, %%ymm15, %%ymm6\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm15, %%ymm7\n\t"                                             \
    "vbroadcastss 4*" #OFF "(%[r4],%[p],4), %%ymm14\n\t"                                   \
    "vfmadd231ps %%ymm12, %%ymm14, %%ymm8\n\t"                                             \
    "vfmadd231ps %%ymm13, %%ymm14, %%ymm9\n\t"                                             \
    "vbroadcastss 4*" #OFF "(%[r5],%[p],4), %%ymm15\n\t"                                   \
    "vfmadd231ps %%ymm12, %%ymm15, %%ymm10\n\t"                                            \
    "vfmadd231ps %%ymm13, %%ymm15, %%ymm11\n\t"

// acc (MR x NR, row-major) = (first: 0, else acc) + the MR rows at r[0..5], kc long, times
// kc rows of a packed B panel. Assembly for the reason kernel_avx2's loop is. The first
// segment starts from zeroed registers: zeroing acc in memory (a `rep stos`) and loading it
// back took 10% of a 68 x 1405 x 64 (TT) product (Zen 3, 1 thread).
void accumulate_rows_a(int64_t kc, const float* const* r, const float* b, float* acc, bool first) {
    int64_t p = 0;
    const int64_t quads = kc / 4 * 4;
    asm volatile(
        "test %[first], %[first]\n\t"
        "jz 5f\n\t"
        FASTNN_AVX2_TILE_ZERO
        "jmp 6f\n\t"
        "5:\n\t"
        FASTNN_AVX2_TILE_LOAD(acc)
        "6:\n\t"
        "cmp %[quads], %[p]\n\t"
        "jge 2f\n\t"
        ".p2align 5\n\t"
        "1:\n\t"  // four steps at a time
        FASTNN_AVX2_ROWS_STEP(0) FASTNN_AVX2_ROWS_STEP(1) FASTNN_AVX2_ROWS_STEP(2)
        FASTNN_AVX2_ROWS_STEP(3)
        "add $256, %[b]\n\t"
        "add $4, %[p]\n\t"
        "cmp %[quads], %[p]\n\t"
        "jl 1b\n\t"
        "2:\n\t"
        "cmp %[kc], %[p]\n\t"
        "jge 4f\n\t"
        "3:\n\t"  // the last kc % 4 steps
        FASTNN_AVX2_ROWS_STEP(0)
        "add $64, %[b]\n\t"
        "add $1, %[p]\n\t"
        "cmp %[kc], %[p]\n\t"
        "jl 3b\n\t"
        "4:\n\t"
        FASTNN_AVX2_TILE_STORE(acc)
        : [b] "+r"(b), [p] "+r"(p)
        : [quads] "r"(quads), [kc] "r"(kc), [acc] "r"(acc), [first] "r"(int64_t{first}),
          [r0] "r"(r[0]), [r1] "r"(r[1]),
          [r2] "r"(r[2]), [r3] "r"(r[3]), [r4] "r"(r[4]), [r5] "r"(r[5])
        : FASTNN_AVX2_TILE_CLOBBERS);
}
#undef FASTNN_AVX2_ROWS_STEP

// The transposed path's tile (Microkernel::rows_a): MR rows read in place times a packed B
// panel, the 6 x 16 tile of C^T stored back transposed through transpose8 (rows 6 and 7 of
// each 8 x 8 block repeat row 5 and are never stored), bias and relu applied on the way.
// C's row segments of `rows` floats: 6 go as 4 + 2 floats (AMD's masked moves are
// microcoded), fewer one by one.
void kernel_avx2_rows_a(int64_t kc, const float* const* a, const float* b, float* c,
                        int64_t ldc, float alpha, float beta, int64_t rows, int64_t cols,
                        const float* bias, bool relu, int64_t segments, int64_t segment_stride) {
    alignas(32) float acc[MR * NR];
    const float* r[MR];
    for (int i = 0; i < MR; ++i) r[i] = a[i];
    for (int64_t s = 0; s < segments; ++s, b += NR * kc) {
        accumulate_rows_a(kc, r, b, acc, s == 0);
        for (int i = 0; i < MR; ++i) r[i] += segment_stride;
    }
    alignas(32) float bias_lanes[8] = {};
    for (int64_t i = 0; bias && i < rows; ++i) bias_lanes[i] = bias[i];
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta),
                 vbias = _mm256_load_ps(bias_lanes), zero = _mm256_setzero_ps();
    for (int h = 0; h < NR / 8; ++h) {
        __m256 t[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) t[i] = _mm256_load_ps(acc + std::min(i, MR - 1) * NR + 8 * h);
        transpose8(t);  // t[q]: column 8h + q of the tile, i.e. C's row, over the tile's rows
        for (int q = 0; q < 8 && 8 * h + q < cols; ++q) {
            float* row = c + (8 * h + q) * ldc;
            __m256 out = _mm256_mul_ps(va, t[q]);
            if (rows == MR) {
                if (beta != 0.0f) {
                    const __m128 lo = _mm_loadu_ps(row);
                    const __m128 hi = _mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(row + 4));
                    out = _mm256_fmadd_ps(vb, _mm256_set_m128(hi, lo), out);
                }
                if (bias) out = _mm256_add_ps(out, vbias);
                if (relu) out = _mm256_max_ps(zero, out);  // x < 0 ? 0 : x, NaN and -0 kept
                _mm_storeu_ps(row, _mm256_castps256_ps128(out));
                _mm_storel_pi(reinterpret_cast<__m64*>(row + 4), _mm256_extractf128_ps(out, 1));
            } else {
                alignas(32) float lanes[8] = {};
                for (int64_t i = 0; beta != 0.0f && i < rows; ++i) lanes[i] = row[i];
                if (beta != 0.0f) out = _mm256_fmadd_ps(vb, _mm256_load_ps(lanes), out);
                if (bias) out = _mm256_add_ps(out, vbias);
                if (relu) out = _mm256_max_ps(zero, out);
                _mm256_store_ps(lanes, out);
                for (int64_t i = 0; i < rows; ++i) row[i] = lanes[i];
            }
        }
    }
}

// ---- small and skinny products, straight from the unpacked operands -------------------

// Lanes [0, left) set; none when left <= 0. Masked-off lanes are neither read nor faulted.
inline __m256i lanes_below(int64_t left) {
    const int32_t l = static_cast<int32_t>(left < 0 ? 0 : left > 8 ? 8 : left);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(l), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// ROWS rows of C by W vectors of 8 columns from j: broadcast op(A)(i, p), vector rows of B.
// kMasked: `left` columns remain (fewer than 8 W); vectors past them are neither read nor
// stored.
template <int ROWS, int W, bool kMasked>
inline void rows_block(int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                       int64_t ldb, float alpha, float beta, float* c, int64_t ldc, int64_t left) {
    __m256i mask[W];
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) mask[w] = lanes_below(left - 8 * w);
    __m256 acc[ROWS][W];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 8
        for (int w = 0; w < W; ++w) acc[r][w] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
        const float* bp = b + p * ldb;
        __m256 bv[W];
#pragma GCC unroll 8
        for (int w = 0; w < W; ++w)
            bv[w] = kMasked ? _mm256_maskload_ps(bp + 8 * w, mask[w]) : _mm256_loadu_ps(bp + 8 * w);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const __m256 ar = _mm256_broadcast_ss(a + r * a_row + p * a_col);
#pragma GCC unroll 8
            for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(ar, bv[w], acc[r][w]);
        }
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 8
        for (int w = 0; w < W; ++w) {
            float* out = c + r * ldc + 8 * w;
            __m256 v = _mm256_mul_ps(va, acc[r][w]);
            if (!kMasked) {
                if (beta != 0.0f) v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(out), v);
                _mm256_storeu_ps(out, v);
            } else if (left > 8 * w) {
                if (beta != 0.0f) v = _mm256_fmadd_ps(vb, _mm256_maskload_ps(out, mask[w]), v);
                _mm256_maskstore_ps(out, mask[w], v);
            }
        }
}

// ROWS rows of C: blocks of 8 accumulators' width (one row: 64 columns, two: 32, more: 16;
// fewer would leave the FMAs waiting on each other), the rest 16 columns at a time.
template <int ROWS>
void small_rows(bool trans_a, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    constexpr int W = ROWS == 1 ? 8 : ROWS == 2 ? 4 : 2;
    const int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
    if constexpr (ROWS > 4) {  // only for a row within one vector (rows_of_c)
        rows_block<ROWS, 1, true>(k, a, a_row, a_col, b, ldb, alpha, beta, c, ldc, n);
        return;
    }
    int64_t j = 0;
    for (; j + 8 * W <= n; j += 8 * W)
        rows_block<ROWS, W, false>(k, a, a_row, a_col, b + j, ldb, alpha, beta, c + j, ldc, 8 * W);
    for (; j + 16 <= n; j += 16)
        rows_block<ROWS, 2, false>(k, a, a_row, a_col, b + j, ldb, alpha, beta, c + j, ldc, 16);
    if (j < n) rows_block<ROWS, 2, true>(k, a, a_row, a_col, b + j, ldb, alpha, beta, c + j, ldc, n - j);
}

inline float lane_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// C = alpha A B^T + beta C with A (m x k) and B (n x k) both row-major: dot products along
// k, ROWS x COLS at a time, reduced across lanes at the end.
template <int ROWS, int COLS>
void small_dots(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
    __m256 acc[ROWS][COLS];
#pragma GCC unroll 2
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
        for (int q = 0; q < COLS; ++q) acc[r][q] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; p += 8) {
        const bool whole = k - p >= 8;
        const __m256i mask = lanes_below(k - p);
        __m256 bv[COLS];
#pragma GCC unroll 4
        for (int q = 0; q < COLS; ++q)
            bv[q] = whole ? _mm256_loadu_ps(b + q * ldb + p) : _mm256_maskload_ps(b + q * ldb + p, mask);
#pragma GCC unroll 2
        for (int r = 0; r < ROWS; ++r) {
            const __m256 ar = whole ? _mm256_loadu_ps(a + r * lda + p) : _mm256_maskload_ps(a + r * lda + p, mask);
#pragma GCC unroll 4
            for (int q = 0; q < COLS; ++q) acc[r][q] = _mm256_fmadd_ps(ar, bv[q], acc[r][q]);
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
        for (int q = 0; q < COLS; ++q) {
            const float v = alpha * lane_sum(acc[r][q]);
            float& out = c[r * ldc + q];
            out = beta == 0.0f ? v : v + beta * out;
        }
}

struct SmallAvx2 {
    // stream_b unused: AVX-512's prefetch of B's rows (its rows_block) was not measured here
    template <int R>
    static void rows(bool trans_a, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc, bool /*stream_b*/) {
        small_rows<R>(trans_a, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    template <int R, int Q>
    static void dots(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                     int64_t ldb, float beta, float* c, int64_t ldc) {
        small_dots<R, Q>(k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    // out (cols x rows) = the rows x cols matrix at src (rows ld apart), transposed: 8 x 8
    // blocks in registers, as packing does
    static void transpose(const float* src, int64_t ld, int64_t rows, int64_t cols, float* out) {
        int64_t g = 0;
        for (; g + 8 <= rows; g += 8) pack_rows<8>(src + g * ld, ld, cols, out + g, rows);
        if (g < rows) pack_rows_tail(src, ld, cols, out, rows, g, rows);
    }
    static constexpr int kDotRows = 2;
    static constexpr int kLanes = 8;
    static constexpr int kRows = 4;
    static constexpr int kRowsWidth = 8 * 2;  // its rows kernel's W for 3 or 4 rows
    static constexpr int kDotOverhead = 5;    // fitted: rows and dots even at 1024 x 10 x 64
    static constexpr bool kEvenPasses = false;
};

// Peak probe: 12 independent FMA chains (latency x units is 8-10 on current cores; 12 plus
// the two operands fit the 16 ymm registers), no loads. Returns the flops performed.
double fma_probe_avx2(int64_t iters) {
    __m256 acc[12];
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    }
    __m256 s = acc[0];
#pragma GCC unroll 11
    for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, s);
    volatile float sink = lanes[0] + lanes[7];
    (void)sink;
    return 12.0 * 8.0 * 2.0 * static_cast<double>(iters);
}

}  // namespace

const Microkernel kAvx2Kernel{"avx2", MR, NR, kernel_avx2, pack_a_rows, pack_b_rows,
                              small_gemm<SmallAvx2>, kernel_avx2_edge, fma_probe_avx2, kernel_avx2_rows_a,
                              SmallAvx2::kLanes, SmallAvx2::kRows, SmallAvx2::kRowsWidth,
                              SmallAvx2::kDotOverhead, kRowsAKPerRow};

}  // namespace fastnn
