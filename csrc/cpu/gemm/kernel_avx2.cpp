// AVX2 + FMA microkernel, 6 x 16: 12 ymm accumulators, 2 B loads and a broadcast per step.
// Compiled with -mavx2 -mfma; only called when the CPU has both.
#include <immintrin.h>

#include "gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 6, NR = 16;

void kernel_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                 float alpha, float beta) {
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

}  // namespace

const Microkernel kAvx2Kernel{"avx2", MR, NR, kernel_avx2, nullptr, nullptr, nullptr};

}  // namespace fastnn
