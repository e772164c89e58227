// Portable microkernel: plain loops the compiler vectorises for the baseline ISA.
#include "gemm.h"

namespace fastnn {
namespace {

constexpr int MR = 4, NR = 16;

void kernel_generic(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                    int64_t ldc, float alpha, float beta) {
    float acc[MR][NR] = {};
    for (int64_t p = 0; p < kc; ++p, a += MR, b += ldb)
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

// Peak probe for the baseline ISA: 32 independent multiply-add chains the compiler keeps in
// vector registers (SSE2 on x86-64: a multiply and an add, two flops).
double fma_probe_generic(int64_t iters) {
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = static_cast<float>(i);
    const float x = 0.999999f, y = 1e-7f;
    for (int64_t it = 0; it < iters; ++it)
        for (int i = 0; i < 32; ++i) acc[i] = acc[i] * x + y;
    float s = 0.0f;
    for (int i = 0; i < 32; ++i) s += acc[i];
    volatile float sink = s;
    (void)sink;
    return 32.0 * 2.0 * static_cast<double>(iters);
}

}  // namespace

const Microkernel kGenericKernel{"generic", MR, NR, kernel_generic, nullptr, nullptr, nullptr,
                                 nullptr, fma_probe_generic};

}  // namespace fastnn
