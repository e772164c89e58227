// AVX-512 microkernel, 8 x 48: 24 zmm accumulators, 3 B loads and 8 broadcasts per step.
// Compiled with -mavx512f; only called when the CPU (and OS) support it.
#include <immintrin.h>

#include "gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 8, NR = 48;

void kernel_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                   float alpha, float beta) {
    // The C tile is read at the end: start fetching it now, while the FMAs run.
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
        for (int h = 0; h < 3; ++h) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * h), _MM_HINT_T0);
    __m512 acc[MR][3];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = acc[i][2] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kc; ++p, a += MR, b += NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(ai, b2, acc[i][2]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
        float* row = c + i * ldc;
#pragma GCC unroll 3
        for (int h = 0; h < 3; ++h) {
            __m512 r = _mm512_mul_ps(va, acc[i][h]);
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(row + 16 * h), r);
            _mm512_storeu_ps(row + 16 * h, r);
        }
    }
}

// Packs rows [0, 8) x columns [0, kc) of a row-major A (the 8-row panel of a non-transposed
// A) into kc groups of 8: 8 x 16 blocks transposed in registers, the tail column by column.
void pack_a_avx512(const float* a, int64_t lda, int64_t kc, float* out) {
    int64_t p = 0;
    for (; p + 16 <= kc; p += 16, out += 16 * MR) {
        __m512 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_ps(a + i * lda + p);
        // Per 128-bit lane L (columns 4L..4L+3): u[j] holds rows 0-3 of column 4L+j,
        // v[j] rows 4-7.
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
            lo = _mm512_shuffle_f32x4(lo, lo, _MM_SHUFFLE(3, 1, 2, 0));
            hi = _mm512_shuffle_f32x4(hi, hi, _MM_SHUFFLE(3, 1, 2, 0));
            _mm256_storeu_ps(out + j * 8, _mm512_castps512_ps256(lo));
            _mm256_storeu_ps(out + (4 + j) * 8, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(lo), 1)));
            _mm256_storeu_ps(out + (8 + j) * 8, _mm512_castps512_ps256(hi));
            _mm256_storeu_ps(out + (12 + j) * 8, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(hi), 1)));
        }
    }
    for (; p < kc; ++p, out += MR)
        for (int i = 0; i < MR; ++i) out[i] = a[i * lda + p];
}

}  // namespace

const Microkernel kAvx512Kernel{"avx512", MR, NR, kernel_avx512, pack_a_avx512};

}  // namespace fastnn

namespace fastnn {

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

}  // namespace fastnn
