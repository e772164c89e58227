// AVX512_BF16 microkernel, 8 x 48: vdpbf16ps adds two bf16 products (a k pair) into each
// fp32 lane; 24 zmm accumulators, 3 B loads and 8 pair broadcasts per k pair. Also the
// vector fp32 -> bf16 conversion and the pair packing, shared with the AMX path.
// Compiled with -mavx512f -mavx512bf16; only called when the CPU runs AVX512_BF16 (the AMX
// path, which packs B here, requires it too).
#include <immintrin.h>

#include "bf16.h"
#include "bf16_avx512.h"

namespace fastnn {
namespace {

using namespace bf16_avx512;

constexpr int MR = 8, NR = 48;
static_assert(MR == 8 && NR % 16 == 0, "rows_as_pairs packs 8 or a multiple of 16 columns");

// n (<= 16 per vector, any count) pairs (r0[i], r1[i]) into out[0, width): zeros past n;
// r1 == nullptr: the second of each pair is zero (odd k's pad).
void two_rows_pairs(const float* r0, const float* r1, int64_t n, int64_t width, uint32_t* out) {
    for (int64_t j = 0; j < width; j += 16) {
        const bool whole = n - j >= 16;  // AMD's masked loads and stores are slow: plain where full
        const __mmask16 m = first(n - j);
        const __m512 x0 = whole ? _mm512_loadu_ps(r0 + j) : _mm512_maskz_loadu_ps(m, r0 + j);
        const __m512 x1 = !r1 ? _mm512_setzero_ps() : whole ? _mm512_loadu_ps(r1 + j) : _mm512_maskz_loadu_ps(m, r1 + j);
        const __m512i v = _mm512_or_si512(_mm512_cvtepu16_epi32(bf16_of(x0)),
                                          _mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16_of(x1)), 16));
        if (width - j >= 16)
            _mm512_storeu_si512(out + j, v);
        else
            _mm512_mask_storeu_epi32(out + j, first(width - j), v);
    }
}

// An operand whose ks are rows (ld apart), n values of each: kp / 2 groups of `width` pairs
// (zeros past n and from kc on).
void ks_in_rows_as_pairs(const float* src, int64_t ld, int64_t kc, int64_t kp, int64_t n,
                         int64_t width, uint32_t* out) {
    for (int64_t p = 0; p < kp; p += 2, out += width) {
        if (p < kc)
            two_rows_pairs(src + p * ld, p + 1 < kc ? src + (p + 1) * ld : nullptr, n, width, out);
        else
            for (int64_t j = 0; j < width; ++j) out[j] = 0;
    }
}

// An operand whose rows (ld apart, contiguous along k) are its `n` columns of a panel: the
// same layout, row j's pairs at out[q * width + j] (zero columns past n). 16 rows' pairs of
// 32 ks are transposed in registers (16 rows of one 32-k chunk, or, for a width of 8, 8 rows
// of two chunks) and stored a pair index at a time: a scatter per row ran at a quarter of
// the speed on a Zen 5 and made packing a sixth of a training step. width: 8 (MR) or a
// multiple of 16 (NR, and the AMX path's 32).
void rows_as_pairs(const float* src, int64_t ld, int64_t kc, int64_t kp, int64_t n,
                   int64_t width, uint32_t* out) {
    const int rows = width >= 16 ? 16 : 8, chunks = 16 / rows;
    for (int64_t j0 = 0; j0 < width; j0 += rows)
        for (int64_t p0 = 0; p0 < kp; p0 += 32 * chunks) {
            __m512i r[16];
            for (int s = 0; s < 16; ++s) {
                const int64_t j = j0 + s % rows, p = p0 + 32 * (s / rows);
                r[s] = j < n && p < kc ? row_pairs(src + j * ld + p, kc - p) : _mm512_setzero_si512();
            }
            transpose_16x16(r);  // r[q]: pair q of each (row, chunk)
            for (int c = 0; c < chunks; ++c)
                for (int q = 0; q < 16; ++q) {
                    const int64_t pair = (p0 + 32 * c) / 2 + q;
                    if (pair >= kp / 2) break;
                    uint32_t* o = out + pair * width + j0;
                    if (rows == 16)
                        _mm512_storeu_si512(o, r[q]);
                    else
                        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o),
                                            c == 0 ? _mm512_castsi512_si256(r[q]) : _mm512_extracti64x4_epi64(r[q], 1));
                }
        }
}

}  // namespace

void bf16_convert_avx512_bf16(const float* x, uint16_t* y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), bf16_of(_mm512_loadu_ps(x + i)));
    for (; i < n; ++i) y[i] = bf16_from_float(x[i]);
}

void pack_b_pairs(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t kp, int64_t cols,
                  int nr, uint16_t* out) {
    uint32_t* o = reinterpret_cast<uint32_t*>(out);
    if (trans)
        rows_as_pairs(b, ldb, kc, kp, cols, nr, o);
    else
        ks_in_rows_as_pairs(b, ldb, kc, kp, cols, nr, o);
}

namespace {

// A's panel as kp / 2 groups of MR pairs (a[i][p], a[i][p+1]).
void pack_a(bool trans, const float* a, int64_t lda, int64_t rows, int64_t kc, uint16_t* out) {
    uint32_t* o = reinterpret_cast<uint32_t*>(out);
    const int64_t kp = (kc + 1) / 2 * 2;
    if (trans)  // two rows of A are two ks of op(A): pairs of contiguous values
        ks_in_rows_as_pairs(a, lda, kc, kp, rows, MR, o);
    else
        rows_as_pairs(a, lda, kc, kp, rows, MR, o);
}

void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t cols, uint16_t* out) {
    pack_b_pairs(trans, b, ldb, kc, (kc + 1) / 2 * 2, cols, NR, out);
}

// acc (a whole 8 x 48 tile, rows ld floats apart) += the products; zeroed first when fresh.
// The k-block's products are summed from zero and then added to acc, as the fp32 GEMM adds
// a k-block's sums to C: a lane carried across k-blocks stopped counting at 2^24 (a long
// sum of ones), where a k-block's sum is added exactly.
void kernel(int64_t kp, const uint16_t* a, const uint16_t* b, float* acc, int64_t ld, bool fresh) {
    __m512 sum[MR][3];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
        for (int h = 0; h < 3; ++h) sum[i][h] = _mm512_setzero_ps();
    const uint32_t* ap = reinterpret_cast<const uint32_t*>(a);
#pragma GCC unroll 2
    for (int64_t q = 0; q < kp / 2; ++q, ap += MR, b += 2 * NR) {
        __m512bh bv[3];
#pragma GCC unroll 3
        for (int h = 0; h < 3; ++h) bv[h] = (__m512bh)_mm512_loadu_si512(b + 32 * h);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(ap[i]));
#pragma GCC unroll 3
            for (int h = 0; h < 3; ++h) sum[i][h] = _mm512_dpbf16_ps(sum[i][h], ai, bv[h]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
        for (int h = 0; h < 3; ++h)
            _mm512_storeu_ps(acc + i * ld + 16 * h,
                             fresh ? sum[i][h] : _mm512_add_ps(_mm512_loadu_ps(acc + i * ld + 16 * h), sum[i][h]));
}

}  // namespace

// As fma_probe_avx512, on vdpbf16ps: 16 independent chains, 64 flops an instruction (16
// lanes, two products each, and their adds).
double bf16_dot_probe_avx512(int64_t iters) {
    __m512 acc[16];
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80), y = (__m512bh)_mm512_set1_epi32(0x33D633D6);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
    __m512 s = acc[0];
#pragma GCC unroll 15
    for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 16.0 * 16.0 * 4.0 * static_cast<double>(iters);
}

// one_block_kcs 1: never measured on a CPU where this kernel runs at its full rate (Zen)
const Bf16Kernel kAvx512Bf16Kernel = {"avx512_bf16", MR, NR, 2, 1, nullptr, pack_a, pack_b, kernel};

}  // namespace fastnn
