// The fused softmax cross-entropy on the GPU, as cpu/loss.cpp's cross_entropy: each row's
// loss log(sum(exp(x))) - x[label] from the shifted exponentials (as (max - x[label]) +
// log(sum(exp(x - max))), cpu/loss.cpp's), its gradient
// (softmax - onehot) / rows written in the same pass, the mean over rows in double. The sum
// is deterministic: one thread per row writes its loss, one block adds them in a fixed order
// (no atomics on floats), so a run repeats bit for bit. And the elementwise losses (MSE, binary
// cross-entropy from logits or probabilities), summed by sum.cuh's fixed chunks.
#include <cuda_runtime.h>

#include <cstring>

#include "activation_math.cuh"  // max_as_std
#include "launch.h"
#include "ops.h"
#include "sum.cuh"

namespace fastnn::cuda {
namespace {


template <class Label>
__global__ void cross_entropy_rows(const float* logits, const Label* labels, float* grad, int64_t rows,
                                   int64_t classes, double* row_loss, unsigned long long* first_bad) {
    FASTNN_GRID_STRIDE(r, rows) {
        const float* x = logits + r * classes;
        float* g = grad + r * classes;
        const int64_t label = static_cast<int64_t>(labels[r]);
        if (label < 0 || label >= classes) {  // reported by the caller; nothing read out of bounds
            atomicMin(first_bad, static_cast<unsigned long long>(r));
            row_loss[r] = 0.0;
            continue;
        }
        float mx = x[0];
        for (int64_t j = 1; j < classes; ++j) mx = fmaxf(mx, x[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < classes; ++j) {
            g[j] = expf(x[j] - mx);
            sum += g[j];
        }
        const float inv_rows = 1.0f / static_cast<float>(rows), scale = (1.0f / sum) * inv_rows;
        for (int64_t j = 0; j < classes; ++j) g[j] *= scale;
        g[label] -= inv_rows;
        // (max - x[label]) + log(sum), as cpu/loss.cpp's ShiftedExp::minus
        row_loss[r] = static_cast<double>(mx - x[label]) + logf(sum);
    }
}

__global__ void cross_entropy_soft_rows(const float* logits, const float* target, float* grad, int64_t rows,
                                        int64_t classes, double* row_loss) {
    FASTNN_GRID_STRIDE(r, rows) {
        const float *x = logits + r * classes, *t = target + r * classes;
        float* g = grad + r * classes;
        float mx = x[0];
        for (int64_t j = 1; j < classes; ++j) mx = max_as_std(mx, x[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < classes; ++j) sum += g[j] = expf(x[j] - mx);
        const float log_sum = logf(sum), inv_rows = 1.0f / static_cast<float>(rows);
        float mass = 0.0f;  // the target row's sum: 1 for a distribution
        double s = 0.0;
        for (int64_t j = 0; j < classes; ++j) {
            mass += t[j];
            s += t[j] * (static_cast<double>(mx - x[j]) + log_sum);
        }
        const float scale = mass * (1.0f / sum) * inv_rows;
        for (int64_t j = 0; j < classes; ++j) g[j] = g[j] * scale - t[j] * inv_rows;
        row_loss[r] = s;
    }
}

// The elementwise losses: grad[i] and the term of the sum at i, as cpu/loss.cpp's formulas.
struct MseTerm {
    const float *p, *t;
    float* grad;
    float scale;
    __device__ double operator()(int64_t i) const {
        const float d = p[i] - t[i];
        grad[i] = scale * d;
        return static_cast<double>(d) * d;
    }
};

struct BceLogitsTerm {
    const float *z, *t;
    float* grad;
    float inv_n;
    __device__ double operator()(int64_t i) const {
        const float ez = expf(-fabsf(z[i]));
        const float sig = z[i] >= 0.0f ? 1.0f / (1.0f + ez) : ez / (1.0f + ez);
        grad[i] = (sig - t[i]) * inv_n;
        return static_cast<double>(max_as_std(z[i], 0.0f) - z[i] * t[i] + log1pf(ez));
    }
};

struct BceProbabilitiesTerm {  // each log clamped at -100, the denominator at 1e-12, as PyTorch
    const float *p, *t;
    float* grad;
    float inv_n;
    __device__ double operator()(int64_t i) const {
        const float lp = max_as_std(logf(p[i]), -100.0f), lq = max_as_std(log1pf(-p[i]), -100.0f);
        grad[i] = (p[i] - t[i]) / max_as_std(p[i] * (1.0f - p[i]), 1e-12f) * inv_n;
        return -static_cast<double>(t[i] * lp + (1.0f - t[i]) * lq);
    }
};

}  // namespace

template <class Label>
double cross_entropy(const float* logits, const Label* labels, float* grad, int64_t rows, int64_t classes,
                     double* scratch, int64_t* first_bad_row) {
    // scratch: rows + 2 doubles on the device (row losses, the total, the first bad row)
    double* total = scratch + rows;
    auto* first_bad = reinterpret_cast<unsigned long long*>(scratch + rows + 1);
    const unsigned long long none = ~0ull;
    check_call(cudaMemsetAsync(first_bad, 0xFF, sizeof none), "cross_entropy");  // = none, without a wait
    cross_entropy_rows<<<grid_for(rows), kThreads>>>(logits, labels, grad, rows, classes, scratch, first_bad);
    check_launch("cross_entropy");
    ordered_sum<<<1, kSumThreads>>>(scratch, rows, total);
    check_launch("cross_entropy (sum)");
    double result[2];  // the total and the first bad row, side by side: one wait for both
    check_call(cudaMemcpy(result, total, sizeof result, cudaMemcpyDeviceToHost), "cross_entropy (result)");
    unsigned long long bad;
    std::memcpy(&bad, &result[1], sizeof bad);
    *first_bad_row = bad == none ? -1 : static_cast<int64_t>(bad);
    return result[0] / static_cast<double>(rows);
}

double cross_entropy_soft(const float* logits, const float* target, float* grad, int64_t rows, int64_t classes,
                          double* scratch) {
    cross_entropy_soft_rows<<<grid_for(rows), kThreads>>>(logits, target, grad, rows, classes, scratch);
    check_launch("cross_entropy_soft");
    ordered_sum<<<1, kSumThreads>>>(scratch, rows, scratch + rows);
    check_launch("cross_entropy_soft (sum)");
    double total = 0.0;
    check_call(cudaMemcpy(&total, scratch + rows, sizeof total, cudaMemcpyDeviceToHost), "cross_entropy_soft (result)");
    return total / static_cast<double>(rows);
}

double elementwise_loss(ElementwiseLoss kind, const float* pred, const float* target, float* grad, int64_t n,
                        double* scratch) {
    const float inv_n = 1.0f / static_cast<float>(n);
    double total = 0.0;
    switch (kind) {
        case ElementwiseLoss::Mse:
            total = deterministic_sum(n, MseTerm{pred, target, grad, 2.0f / static_cast<float>(n)}, scratch, "mse");
            break;
        case ElementwiseLoss::BceLogits:
            total = deterministic_sum(n, BceLogitsTerm{pred, target, grad, inv_n}, scratch, "binary_cross_entropy");
            break;
        case ElementwiseLoss::BceProbabilities:
            total = deterministic_sum(n, BceProbabilitiesTerm{pred, target, grad, inv_n}, scratch,
                                      "binary_cross_entropy");
            break;
    }
    return total / static_cast<double>(n);
}

template double cross_entropy<int64_t>(const float*, const int64_t*, float*, int64_t, int64_t, double*, int64_t*);
template double cross_entropy<int32_t>(const float*, const int32_t*, float*, int64_t, int64_t, double*, int64_t*);
template double cross_entropy<uint8_t>(const float*, const uint8_t*, float*, int64_t, int64_t, double*, int64_t*);

}  // namespace fastnn::cuda
