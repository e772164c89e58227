// AVX2 + FMA microkernel, 6 x 16: 12 ymm accumulators, 2 B loads and a broadcast per step.
// Compiled with -mavx2 -mfma; only called when the CPU has both.
#include <immintrin.h>

#include "gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 6, NR = 16;

void kernel_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                 float alpha, float beta) {
    // The C tile is read at the end: start fetching it now, while the FMAs run (its rows
    // are ldc apart, often a power of two, so they also compete for the same L1 sets).
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; ++p, a += MR, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; ++i) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
        float* row = c + i * ldc;
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            __m256 r = _mm256_mul_ps(va, acc[i][h]);
            if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8 * h), r);
            _mm256_storeu_ps(row + 8 * h, r);
        }
    }
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

void pack_a_rows(const float* a, int64_t lda, int64_t kc, float* out) {
    pack_rows<MR>(a, lda, kc, out, MR);
}

// A full NR-column panel of a transposed B: NR rows of the stored matrix, 8 at a time.
void pack_b_rows(const float* b, int64_t ldb, int64_t kc, float* out) {
#pragma GCC unroll 2
    for (int g = 0; g < NR / 8; ++g) pack_rows<8>(b + g * 8 * ldb, ldb, kc, out + g * 8, NR);
}

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

const Microkernel kAvx2Kernel{"avx2", MR, NR, kernel_avx2, pack_a_rows, pack_b_rows, nullptr,
                              nullptr, fma_probe_avx2};

}  // namespace fastnn
