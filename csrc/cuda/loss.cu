// The fused softmax cross-entropy on the GPU, as cpu/loss.cpp's cross_entropy: each row's
// loss log(sum(exp(x))) - x[label] from the shifted exponentials, its gradient
// (softmax - onehot) / rows written in the same pass, the mean over rows in double. The sum
// is deterministic: one thread per row writes its loss, one block adds them in a fixed order
// (no atomics on floats), so a run repeats bit for bit.
#include <cuda_runtime.h>

#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

constexpr int kSumThreads = 256;

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
        row_loss[r] = static_cast<double>(mx + logf(sum)) - static_cast<double>(x[label]);
    }
}

// One block: thread t adds rows t, t + 256, ... in order, then a tree of fixed shape.
__global__ void ordered_sum(const double* v, int64_t n, double* out) {
    __shared__ double part[kSumThreads];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kSumThreads) s += v[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = kSumThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = part[0];
}

}  // namespace

template <class Label>
double cross_entropy(const float* logits, const Label* labels, float* grad, int64_t rows, int64_t classes,
                     double* scratch, int64_t* first_bad_row) {
    // scratch: rows + 2 doubles on the device (row losses, the total, the first bad row)
    double* total = scratch + rows;
    auto* first_bad = reinterpret_cast<unsigned long long*>(scratch + rows + 1);
    const unsigned long long none = ~0ull;
    check_call(cudaMemcpy(first_bad, &none, sizeof none, cudaMemcpyHostToDevice), "cross_entropy");
    cross_entropy_rows<<<grid_for(rows), kThreads>>>(logits, labels, grad, rows, classes, scratch, first_bad);
    check_launch("cross_entropy");
    ordered_sum<<<1, kSumThreads>>>(scratch, rows, total);
    check_launch("cross_entropy (sum)");
    double host_total = 0.0;
    unsigned long long bad = none;
    check_call(cudaMemcpy(&host_total, total, sizeof host_total, cudaMemcpyDeviceToHost), "cross_entropy (result)");
    check_call(cudaMemcpy(&bad, first_bad, sizeof bad, cudaMemcpyDeviceToHost), "cross_entropy (result)");
    *first_bad_row = bad == none ? -1 : static_cast<int64_t>(bad);
    return host_total / static_cast<double>(rows);
}

template double cross_entropy<int64_t>(const float*, const int64_t*, float*, int64_t, int64_t, double*, int64_t*);
template double cross_entropy<int32_t>(const float*, const int32_t*, float*, int64_t, int64_t, double*, int64_t*);
template double cross_entropy<uint8_t>(const float*, const uint8_t*, float*, int64_t, int64_t, double*, int64_t*);

}  // namespace fastnn::cuda
