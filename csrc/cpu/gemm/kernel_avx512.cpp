// AVX-512 microkernel, 8 x 48: 24 zmm accumulators, 3 B loads and 8 broadcasts per step.
// Compiled with -mavx512f; only called when the CPU (and OS) support it.
#include <immintrin.h>

#include "gemm.h"
#include "small_gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 8, NR = 48;
// The transposed path's break-even (Microkernel::rows_a_k_per_row): at k 784, n 512 packed
// and transposed ran even at m 320 (gemm.cpp: Xeon family 6 model 207), k = 2.45 m; rounded
// down, so that every product measured there keeps its path.
constexpr int kRowsAKPerRow = 2;


inline __m256 upper_half(__m512 x) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}

// 8 rows x 16 columns transposed in registers: on return, t[2j] holds columns j (its lower
// 256 bits, rows 0-7) and 4 + j (upper), t[2j + 1] columns 8 + j and 12 + j, for j < 4.
inline void transpose_8x16(const __m512 r[8], __m512 t[8]) {
    // Per 128-bit lane L (columns 4L..4L+3): u[j] holds rows 0-3 of column 4L+j, v[j] rows 4-7.
    __m512 u[4], v[4];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
        const __m512* x = r + 4 * h;
        __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(x[0], x[1]));
        __m512d t1 = _mm512_castps_pd(_mm512_unpackhi_ps(x[0], x[1]));
        __m512d t2 = _mm512_castps_pd(_mm512_unpacklo_ps(x[2], x[3]));
        __m512d t3 = _mm512_castps_pd(_mm512_unpackhi_ps(x[2], x[3]));
        __m512* dst = h == 0 ? u : v;
        dst[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        dst[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        dst[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        dst[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
        // [u.L0, v.L0, u.L1, v.L1] then [u.L2, v.L2, u.L3, v.L3]: columns j, 4+j, 8+j, 12+j.
        __m512 lo = _mm512_shuffle_f32x4(u[j], v[j], _MM_SHUFFLE(1, 0, 1, 0));
        __m512 hi = _mm512_shuffle_f32x4(u[j], v[j], _MM_SHUFFLE(3, 2, 3, 2));
        t[2 * j] = _mm512_shuffle_f32x4(lo, lo, _MM_SHUFFLE(3, 1, 2, 0));
        t[2 * j + 1] = _mm512_shuffle_f32x4(hi, hi, _MM_SHUFFLE(3, 1, 2, 0));
    }
}

// acc = kc steps of MR values of A times 16 NV values of B. A is packed (kc groups of MR,
// `a`) or, with kRowsA, read in place (row i at rows[i], contiguous along k; `segments` runs
// of kc steps, the rows moved on by segment_stride after each). B's rows are ldb apart: NR
// when packed, B's own row stride when read in place (only the first 16 NV columns are read).
// Only the first R rows are computed (a packed A panel keeps its MR stride).
template <int NV, bool kRowsA, int R = MR>
inline void accumulate(int64_t kc, const float* a, const float* const* rows, const float* b,
                       int64_t ldb, __m512 (&acc)[R][NV], int64_t segments = 1,
                       int64_t segment_stride = 0) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
        for (int h = 0; h < NV; ++h) acc[i][h] = _mm512_setzero_ps();
    const float* row[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) row[i] = kRowsA ? rows[i] : nullptr;
    for (int64_t s = 0; s < (kRowsA ? segments : 1); ++s) {
        // Unrolled by 4: the loop's counter, pointer bumps and branch once per 96 FMAs, not 24
        // (+1-4% at 512-4096 on a Zen 5, the two builds alternated three times).
#pragma GCC unroll 4
        for (int64_t p = 0; p < kc; ++p, a += kRowsA ? 0 : MR, b += ldb) {
            __m512 bv[NV];
#pragma GCC unroll 3
            for (int h = 0; h < NV; ++h) bv[h] = _mm512_loadu_ps(b + 16 * h);
#pragma GCC unroll 8
            for (int i = 0; i < R; ++i) {
                __m512 ai = _mm512_set1_ps(kRowsA ? row[i][p] : a[i]);
#pragma GCC unroll 3
                for (int h = 0; h < NV; ++h) acc[i][h] = _mm512_fmadd_ps(ai, bv[h], acc[i][h]);
            }
        }
        if (kRowsA)
#pragma GCC unroll 8
            for (int i = 0; i < R; ++i) row[i] += segment_stride;
    }
}

// R x 16 NV tile of C (R <= MR: an edge tile computes only its rows) from packed A and B
// (B's rows ldb apart, see accumulate); rows of C past `rows` are not stored. With kMasked,
// the last vector loads and stores only the columns in `last`; a full tile uses plain loads
// and stores (Zen 5, 2048^2: 5% of the samples fell after the masked loads of C; plain ones
// ran 0.8% faster, 5 rounds alternated).
template <int NV, bool kMasked, int R = MR>
inline void tile_kernel(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                        int64_t ldc, float alpha, float beta, __mmask16 last, int64_t rows = R) {
    // The C tile is read at the end: start fetching it now, while the FMAs run.
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
        for (int h = 0; h < NV; ++h) _mm_prefetch(reinterpret_cast<const char*>(c + std::min<int64_t>(i, rows - 1) * ldc + 16 * h), _MM_HINT_T0);
    __m512 acc[R][NV];
    accumulate<NV, false, R>(kc, a, nullptr, b, ldb, acc);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
        if (i >= rows) break;
        float* row = c + i * ldc;
#pragma GCC unroll 3
        for (int h = 0; h < NV; ++h) {
            __m512 r = _mm512_mul_ps(va, acc[i][h]);
            if (kMasked && h == NV - 1) {
                if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(last, row + 16 * h), r);
                _mm512_mask_storeu_ps(row + 16 * h, last, r);
            } else {
                if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(row + 16 * h), r);
                _mm512_storeu_ps(row + 16 * h, r);
            }
        }
    }
}

void kernel_avx512(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                   int64_t ldc, float alpha, float beta) {
    tile_kernel<3, false>(kc, a, b, ldb, c, ldc, alpha, beta, 0xFFFF);
}

template <int R>
void edge_tile(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
               float alpha, float beta, int64_t rows, int vectors, __mmask16 last) {
    if (vectors == 1)
        tile_kernel<1, true, R>(kc, a, b, ldb, c, ldc, alpha, beta, last, rows);
    else if (vectors == 2)
        tile_kernel<2, true, R>(kc, a, b, ldb, c, ldc, alpha, beta, last, rows);
    else
        tile_kernel<3, true, R>(kc, a, b, ldb, c, ldc, alpha, beta, last, rows);
}

// An edge tile (n = 512 leaves 32 columns, m = 18 a panel of 2 rows): only the vectors
// holding columns are computed, and only an even number of rows, rows + 1 at most (one row
// or two take the same time: their 3 or 6 FMA chains wait on the FMA latency either way).
// Zen 5, 1 thread, against all 8 rows into a buffer: 18 x 136 x 295 (TN) 137 -> 150
// GFLOP/s, 33 x 700 x 700 202 -> 218 (its 2-row tiles cost 0.6 of a full one, not 0.33:
// B's panel comes from L2 for them). Both shapes have since gone to the small path's rows
// form here (small_form); the edge tiles serve taller products and longer k.
void kernel_avx512_edge(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                        int64_t ldc, float alpha, float beta, int64_t rows, int64_t cols) {
    const int vectors = static_cast<int>((cols + 15) / 16);
    const int in_last = static_cast<int>(cols - 16 * (vectors - 1));
    const __mmask16 last = __mmask16((1u << in_last) - 1u);
    if (rows <= 2)
        edge_tile<2>(kc, a, b, ldb, c, ldc, alpha, beta, rows, vectors, last);
    else if (rows <= 4)
        edge_tile<4>(kc, a, b, ldb, c, ldc, alpha, beta, rows, vectors, last);
    else if (rows <= 6)
        edge_tile<6>(kc, a, b, ldb, c, ldc, alpha, beta, rows, vectors, last);
    else
        edge_tile<8>(kc, a, b, ldb, c, ldc, alpha, beta, rows, vectors, last);
}

// The transposed path's tile: MR rows read in place (row i at a[i], kc long) times a packed B
// panel, a tile of C^T stored back transposed: C[q][r] = alpha * tile[r][q] + beta * C[q][r]
// (+ bias[r], then relu, where given) for r < rows, q < cols. Each 8 x 16 block is
// transposed in registers (as packing does).
template <int NV>
void rows_a_tile(int64_t kc, const float* const* a, const float* b, float* c,
                 int64_t ldc, float alpha, float beta, int64_t rows, int64_t cols,
                 const float* bias, bool relu, int64_t segments, int64_t segment_stride) {
    __m512 acc[MR][NV];
    accumulate<NV, true>(kc, nullptr, a, b, NR, acc, segments, segment_stride);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta), zero = _mm512_setzero_ps();
    const __mmask16 in_row = __mmask16((1u << rows) - 1u);  // C's columns j .. j + rows
    const __m512 vbias = bias ? _mm512_maskz_loadu_ps(in_row, bias) : zero;
#pragma GCC unroll 3
    for (int h = 0; h < NV; ++h) {
        __m512 r[MR], t[8];
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) r[i] = acc[i][h];
        transpose_8x16(r, t);
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) {
            // t[g] holds C's rows q0 (lower half) and q0 + 4 (upper): see transpose_8x16
            const int64_t q0 = 16 * h + (g & 1) * 8 + g / 2;
#pragma GCC unroll 2
            for (int half = 0; half < 2; ++half) {
                const int64_t q = q0 + 4 * half;
                if (q >= cols) continue;
                const __m512 v = half ? _mm512_shuffle_f32x4(t[g], t[g], _MM_SHUFFLE(3, 2, 3, 2)) : t[g];
                float* row = c + q * ldc;
                __m512 out = _mm512_mul_ps(va, v);
                if (beta != 0.0f) out = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(in_row, row), out);
                if (bias) out = _mm512_add_ps(out, vbias);
                if (relu) out = _mm512_max_ps(zero, out);  // x < 0 ? 0 : x, NaN and -0 kept
                _mm512_mask_storeu_ps(row, in_row, out);
            }
        }
    }
}

void kernel_avx512_rows_a(int64_t kc, const float* const* a, const float* b, float* c,
                          int64_t ldc, float alpha, float beta, int64_t rows, int64_t cols,
                          const float* bias, bool relu, int64_t segments, int64_t segment_stride) {
    const int vectors = static_cast<int>((cols + 15) / 16);
    if (vectors == 1)
        rows_a_tile<1>(kc, a, b, c, ldc, alpha, beta, rows, cols, bias, relu, segments, segment_stride);
    else if (vectors == 2)
        rows_a_tile<2>(kc, a, b, c, ldc, alpha, beta, rows, cols, bias, relu, segments, segment_stride);
    else
        rows_a_tile<3>(kc, a, b, c, ldc, alpha, beta, rows, cols, bias, relu, segments, segment_stride);
}

// Transposes 8 rows x kc columns of a row-major matrix into kc groups of 8 floats placed
// `stride` floats apart: 8 x 16 blocks transposed in registers, the tail column by column.
// Packs an A panel (stride MR) and, 8 rows at a time, a transposed B panel (stride NR).
void pack_8_rows(const float* a, int64_t lda, int64_t kc, float* out, int64_t stride) {
    int64_t p = 0;
    for (; p + 16 <= kc; p += 16, out += 16 * stride) {
        __m512 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_ps(a + i * lda + p);
        __m512 t[8];
        transpose_8x16(r, t);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            _mm256_storeu_ps(out + j * stride, _mm512_castps512_ps256(t[2 * j]));
            _mm256_storeu_ps(out + (4 + j) * stride, upper_half(t[2 * j]));
            _mm256_storeu_ps(out + (8 + j) * stride, _mm512_castps512_ps256(t[2 * j + 1]));
            _mm256_storeu_ps(out + (12 + j) * stride, upper_half(t[2 * j + 1]));
        }
    }
    for (; p < kc; ++p, out += stride)
        for (int i = 0; i < 8; ++i) out[i] = a[i * lda + p];
}

// PackRowsFn (gemm.h) for a panel `width` wide: whole groups of 8 rows in registers.
void pack_rows(const float* src, int64_t ld, int64_t kc, float* out, int64_t width, int64_t rows) {
    int64_t g = 0;
    for (; g + 8 <= rows; g += 8) pack_8_rows(src + g * ld, ld, kc, out + g, width);
    if (g < width) pack_rows_tail(src, ld, kc, out, width, g, rows);
}

void pack_a_rows(const float* a, int64_t lda, int64_t kc, float* out, int64_t rows) {
    pack_rows(a, lda, kc, out, MR, rows);
}

// A transposed B's panel: up to NR rows of the stored matrix (a small batch's X^T in the
// transposed path has 32 of 48: one value at a time, it cost 16% of that product).
void pack_b_rows(const float* b, int64_t ldb, int64_t kc, float* out, int64_t rows) {
    pack_rows(b, ldb, kc, out, NR, rows);
}

// ---- small and skinny products, straight from the unpacked operands -------------------

inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

inline void store_row(float* c, __m512 acc, __mmask16 mask, __m512 va, __m512 vb, bool beta0) {
    __m512 r = _mm512_mul_ps(va, acc);
    if (!beta0) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, c), r);
    _mm512_mask_storeu_ps(c, mask, r);
}

constexpr int64_t kRowsAhead = 8;  // rows_block's prefetch distance: ~100 cycles of FMAs

// ROWS rows of C by W vectors of columns (the last one masked with `last` where kMasked):
// broadcast op(A)(i, p) against vector rows of B.
template <int ROWS, int W, bool kMasked>
inline void rows_block(int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                       int64_t ldb, __m512 va, __m512 vb, bool beta0, float* c, int64_t ldc,
                       __mmask16 last, bool stream_b) {
    __m512 acc[ROWS][W];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 8
        for (int w = 0; w < W; ++w) acc[r][w] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
        const float* bp = b + p * ldb;
        // B's rows, ldb apart, from L2 (stream_b): a stream that Intel's L1 prefetchers do
        // not follow, so the row kRowsAhead on is fetched now. Xeon family 6 model 207, 1
        // thread, 40 rounds alternated in one process: 32 x 784 x 512 NN +16%, 128 x 784 x
        // 512 +15%, 1 x 784 x 512 +11%, 5 x 2000 x 50 +7%; with B in L1 it cost 4-6% (64 x
        // 64 x 64, 3000 x 16 x 60), hence only where B streams.
        if (stream_b)
#pragma GCC unroll 8
            for (int w = 0; w < W; ++w) _mm_prefetch(reinterpret_cast<const char*>(bp + kRowsAhead * ldb + 16 * w), _MM_HINT_T0);
        __m512 bv[W];
#pragma GCC unroll 8
        for (int w = 0; w < W; ++w)
            bv[w] = kMasked && w == W - 1 ? _mm512_maskz_loadu_ps(last, bp + 16 * w) : _mm512_loadu_ps(bp + 16 * w);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const __m512 ar = _mm512_set1_ps(a[r * a_row + p * a_col]);
#pragma GCC unroll 8
            for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(ar, bv[w], acc[r][w]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 8
        for (int w = 0; w < W; ++w)
            store_row(c + r * ldc + 16 * w, acc[r][w], kMasked && w == W - 1 ? last : __mmask16(0xFFFF),
                      va, vb, beta0);
}

// ROWS rows of C (up to 8) in blocks of W vectors: one row 8 (4 would be 4 dependent chains,
// a GEMV 1 x n x k), up to 6 rows 4, 7 or 8 rows 3 (24 accumulators at most, B's vectors
// beside them in registers); a narrower last block computes only the vectors that hold
// columns (n = 32 had run 4 vectors' FMAs for 2). Inlined into rows_of_c: a pass of 8 rows
// is a few hundred cycles at a small n, and the extra call cost 3-5% (3000 x 16 x 60 NN 167
// -> 177 GFLOP/s, 16 x 16 x 500 TN 123 -> 129; Zen 5, 1 thread).
template <int ROWS>
__attribute__((always_inline)) inline void small_rows(bool trans_a, int64_t n, int64_t k, float alpha,
                                                      const float* a, int64_t lda, const float* b,
                                                      int64_t ldb, float beta, float* c, int64_t ldc,
                                                      bool stream_b) {
    static_assert(ROWS >= 1 && ROWS <= 8);
    constexpr int W = ROWS == 1 ? 8 : ROWS <= 6 ? 4 : 3;
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
    const bool beta0 = beta == 0.0f;
    int64_t j = 0;
    for (; j + 16 * W <= n; j += 16 * W)
        rows_block<ROWS, W, false>(k, a, a_row, a_col, b + j, ldb, va, vb, beta0, c + j, ldc, 0xFFFF, stream_b);
    if constexpr (W > 4)
        for (; j + 64 <= n; j += 64)
            rows_block<ROWS, 4, false>(k, a, a_row, a_col, b + j, ldb, va, vb, beta0, c + j, ldc, 0xFFFF, stream_b);
    if (j == n) return;
    const int64_t left = n - j;
    const __mmask16 last = tail_mask(left - 16 * ((left - 1) / 16));
    switch ((left + 15) / 16) {
        case 1: rows_block<ROWS, 1, true>(k, a, a_row, a_col, b + j, ldb, va, vb, beta0, c + j, ldc, last, stream_b); break;
        case 2: rows_block<ROWS, 2, true>(k, a, a_row, a_col, b + j, ldb, va, vb, beta0, c + j, ldc, last, stream_b); break;
        case 3: rows_block<ROWS, 3, true>(k, a, a_row, a_col, b + j, ldb, va, vb, beta0, c + j, ldc, last, stream_b); break;
        default:
            if constexpr (W >= 4)
                rows_block<ROWS, 4, true>(k, a, a_row, a_col, b + j, ldb, va, vb, beta0, c + j, ldc, last, stream_b);
    }
}

// The 16 vectors' sums in one vector (lane i: the sum of v[i]): pairs, then quads added
// within 128-bit lanes, then the four lanes; 45 instructions where 16 reductions take ~130
// (the small path's 4 x 4 dot blocks spent as much on them as on their FMAs at k = 256).
inline __m512 reduce16(const __m512* v) {
    __m512 s[8], t[4];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)  // per 128-bit lane: [v0 a, v1 a, v0 b, v1 b] of pair (v0, v1)
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {  // per 128-bit lane: v[4i], ..., v[4i + 3], that lane's sums
        const __m512d x = _mm512_castps_pd(s[2 * i]), y = _mm512_castps_pd(s[2 * i + 1]);
        t[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    // the four 128-bit lanes of t[j] summed into lane j of the result
    const __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(t[0], t[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(t[0], t[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 w = _mm512_add_ps(_mm512_shuffle_f32x4(t[2], t[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(t[2], t[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(u, w, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(u, w, _MM_SHUFFLE(3, 1, 3, 1)));
}

// C = alpha A B^T + beta C with A (m x k) and B (n x k) both row-major: dot products
// along k, 4 x 4 at a time, reduced across lanes at the end.
template <int ROWS, int COLS>
void small_dots(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
    __m512 acc[ROWS][COLS];
    #pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r)
        #pragma GCC unroll 4
        for (int q = 0; q < COLS; ++q) acc[r][q] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p += 16) {
        const __mmask16 mask = tail_mask(k - p);
        __m512 bv[COLS];
        #pragma GCC unroll 4
        for (int q = 0; q < COLS; ++q) bv[q] = _mm512_maskz_loadu_ps(mask, b + q * ldb + p);
        #pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
            __m512 ar = _mm512_maskz_loadu_ps(mask, a + r * lda + p);
            #pragma GCC unroll 4
            for (int q = 0; q < COLS; ++q) acc[r][q] = _mm512_fmadd_ps(ar, bv[q], acc[r][q]);
        }
    }
    if constexpr (ROWS * COLS == 16) {  // the usual block: 16 sums in one vector
        alignas(64) float sums[16];
        _mm512_store_ps(sums, reduce16(&acc[0][0]));
        #pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r)
            #pragma GCC unroll 4
            for (int q = 0; q < COLS; ++q) {
                const float v = alpha * sums[r * COLS + q];
                float& out = c[r * ldc + q];
                out = beta == 0.0f ? v : v + beta * out;
            }
        return;
    }
    #pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r)
        #pragma GCC unroll 4
        for (int q = 0; q < COLS; ++q) {
            float v = alpha * _mm512_reduce_add_ps(acc[r][q]);
            float& out = c[r * ldc + q];
            out = beta == 0.0f ? v : v + beta * out;
        }
}

struct SmallAvx512 {
    template <int R>
    static void rows(bool trans_a, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc, bool stream_b) {
        small_rows<R>(trans_a, n, k, alpha, a, lda, b, ldb, beta, c, ldc, stream_b);
    }
    template <int R, int Q>
    static void dots(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                     int64_t ldb, float beta, float* c, int64_t ldc) {
        small_dots<R, Q>(k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    // out (cols x rows) = the rows x cols matrix at src (rows ld apart), transposed: 8 x 16
    // blocks in registers, as packing does (one value at a time, it had cost a third of 64 x
    // 40 x 500 NT by rows)
    static void transpose(const float* src, int64_t ld, int64_t rows, int64_t cols, float* out) {
        pack_rows(src, ld, cols, out, rows, rows);
    }
    static constexpr int kDotRows = 4;
    static constexpr int kLanes = 16;
    static constexpr int kRows = 8;
    static constexpr int kRowsWidth = 16 * 3;  // small_rows' W for 7 or 8 rows
    static constexpr int kDotOverhead = 6;      // fitted: rows and dots even at 1024 x 10 x ~150
    static constexpr bool kEvenPasses = true;
};

// Peak probe: 16 independent FMA chains (enough to cover latency x throughput on any
// current core), no loads. Returns the flops performed.
double fma_probe_avx512(int64_t iters) {
    __m512 acc[16];
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    }
    __m512 s = acc[0];
#pragma GCC unroll 15
    for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 16.0 * 16.0 * 2.0 * static_cast<double>(iters);
}

}  // namespace

const Microkernel kAvx512Kernel{"avx512", MR, NR, kernel_avx512, pack_a_rows, pack_b_rows,
                                small_gemm<SmallAvx512>, kernel_avx512_edge, fma_probe_avx512,
                                kernel_avx512_rows_a, SmallAvx512::kLanes, SmallAvx512::kRows,
                                SmallAvx512::kRowsWidth, SmallAvx512::kDotOverhead, kRowsAKPerRow};

}  // namespace fastnn
