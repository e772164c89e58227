// Portable microkernel: plain loops the compiler vectorises for the baseline ISA.
#include "gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 4, NR = 16;

void kernel_generic(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                    float alpha, float beta) {
    float acc[MR][NR] = {};
    for (int64_t p = 0; p < kc; ++p, a += MR, b += NR)
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    for (int i = 0; i < MR; ++i) {
        float* row = c + i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < NR; ++j) row[j] = alpha * acc[i][j];
        else
            for (int j = 0; j < NR; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
    }
}

}  // namespace

const Microkernel kGenericKernel{"generic", MR, NR, kernel_generic, nullptr, nullptr, nullptr};

}  // namespace fastnn
