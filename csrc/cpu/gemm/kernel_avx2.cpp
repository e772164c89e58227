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

const Microkernel kAvx2Kernel{"avx2", MR, NR, kernel_avx2, nullptr, nullptr, nullptr, nullptr,
                              fma_probe_avx2};

}  // namespace fastnn
