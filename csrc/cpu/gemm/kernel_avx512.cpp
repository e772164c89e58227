// AVX-512 microkernel, 8 x 48: 24 zmm accumulators, 3 B loads and 8 broadcasts per step.
// Compiled with -mavx512f; only called when the CPU (and OS) support it.
#include <immintrin.h>

#include "gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 8, NR = 48;

void kernel_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                   float alpha, float beta) {
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

}  // namespace

const Microkernel kAvx512Kernel{"avx512", MR, NR, kernel_avx512};

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
