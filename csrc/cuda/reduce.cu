// Gathers on the GPU, as cpu/reduce.cpp's: a shuffled mini-batch's rows out of a dataset kept
// on the device, one thread per element; an index out of range is reported by its position
// and never read through. And the reductions and in-place helpers of gradient clipping and
// L1/L2 penalties (sums in sum.cuh's fixed order).
#include <cuda_runtime.h>

#include "activation_math.cuh"  // min_as_std, max_as_std
#include "launch.h"
#include "ops.h"
#include "sum.cuh"

namespace fastnn::cuda {
namespace {

// Rows of `units` words of T each (4-byte words when the rows allow, else bytes); a row whose
// index is out of range is recorded in first_bad (when given) and never read.
template <class T>
__global__ void gather_kernel(const T* x, const int64_t* idx, T* out, int64_t n, int64_t units, int64_t rows,
                              unsigned long long* first_bad) {
    FASTNN_GRID_STRIDE(e, n * units) {
        const int64_t i = e / units, src = idx[i];
        if (src < 0 || src >= rows) {
            if (first_bad) atomicMin(first_bad, static_cast<unsigned long long>(i));
            continue;
        }
        out[e] = x[src * units + e % units];
    }
}

struct SquareTerm {
    const float* x;
    __device__ double operator()(int64_t i) const { return static_cast<double>(x[i]) * x[i]; }
};

struct AbsTerm {
    const float* x;
    __device__ double operator()(int64_t i) const { return fabs(static_cast<double>(x[i])); }
};

struct PenaltyTerm {  // the float coefficients for the float32 gradient, the exact ones for the sum
    const float* p;
    float* grad;
    float l1f, two_l2;
    double l1, l2;
    __device__ double operator()(int64_t i) const {
        const float sign = static_cast<float>((p[i] > 0.0f) - (p[i] < 0.0f));
        grad[i] += l1f * sign + two_l2 * p[i];
        const double v = p[i];
        return l1 * fabs(v) + l2 * v * v;
    }
};

__global__ void scale_kernel(float* x, int64_t n, float factor) {
    FASTNN_GRID_STRIDE(i, n) x[i] *= factor;
}

__global__ void clip_kernel(float* x, int64_t n, float low, float high) {  // NaN passes, as on the CPU
    FASTNN_GRID_STRIDE(i, n) x[i] = min_as_std(max_as_std(x[i], low), high);
}

}  // namespace

double sum_squares(const float* x, int64_t n, double* scratch) {
    return deterministic_sum(n, SquareTerm{x}, scratch, "sum_squares");
}

double sum_abs(const float* x, int64_t n, double* scratch) {
    return deterministic_sum(n, AbsTerm{x}, scratch, "sum_abs");
}

double add_penalty_grad(const float* p, float* grad, int64_t n, double l1, double l2, double* scratch) {
    const PenaltyTerm term{p, grad, static_cast<float>(l1), static_cast<float>(2.0 * l2), l1, l2};
    return deterministic_sum(n, term, scratch, "add_penalty_grad");
}

void scale(float* x, int64_t n, float factor) {
    if (n <= 0) return;
    scale_kernel<<<grid_for(n), kThreads>>>(x, n, factor);
    check_launch("scale_");
}

void clip(float* x, int64_t n, float low, float high) {
    if (n <= 0) return;
    clip_kernel<<<grid_for(n), kThreads>>>(x, n, low, high);
    check_launch("clip_");
}

int64_t gather_rows(const void* x, const int64_t* idx, void* out, int64_t n, int64_t row_bytes, int64_t rows,
                    unsigned long long* flag) {
    const unsigned long long none = ~0ull;
    if (flag) check_call(cudaMemsetAsync(flag, 0xFF, sizeof none), "gather_rows");  // = none
    if (n > 0 && row_bytes > 0) {
        if (row_bytes % 4 == 0) {
            const int64_t units = row_bytes / 4;
            gather_kernel<<<grid_for(n * units), kThreads>>>(static_cast<const uint32_t*>(x), idx,
                                                              static_cast<uint32_t*>(out), n, units, rows, flag);
        } else {
            gather_kernel<<<grid_for(n * row_bytes), kThreads>>>(static_cast<const uint8_t*>(x), idx,
                                                                  static_cast<uint8_t*>(out), n, row_bytes, rows, flag);
        }
        check_launch("gather_rows");
    }
    if (!flag) return -1;
    unsigned long long bad = none;
    check_call(cudaMemcpy(&bad, flag, sizeof bad, cudaMemcpyDeviceToHost), "gather_rows (result)");
    return bad == none ? -1 : static_cast<int64_t>(bad);
}

}  // namespace fastnn::cuda
