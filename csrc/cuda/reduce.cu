// Gathers on the GPU, as cpu/reduce.cpp's: a shuffled mini-batch's rows out of a dataset kept
// on the device, one thread per element; an index out of range is reported by its position
// and never read through.
#include <cuda_runtime.h>

#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

__global__ void gather_kernel(const float* x, const int64_t* idx, float* out, int64_t n, int64_t cols,
                              int64_t rows, unsigned long long* first_bad) {
    FASTNN_GRID_STRIDE(e, n * cols) {
        const int64_t i = e / cols, src = idx[i];
        if (src < 0 || src >= rows) {
            atomicMin(first_bad, static_cast<unsigned long long>(i));
            continue;
        }
        out[e] = x[src * cols + e % cols];
    }
}

}  // namespace

int64_t gather_rows(const float* x, const int64_t* idx, float* out, int64_t n, int64_t cols, int64_t rows,
                    unsigned long long* flag) {
    const unsigned long long none = ~0ull;
    check_call(cudaMemcpy(flag, &none, sizeof none, cudaMemcpyHostToDevice), "gather_rows");
    if (n > 0 && cols > 0) {
        gather_kernel<<<grid_for(n * cols), kThreads>>>(x, idx, out, n, cols, rows, flag);
        check_launch("gather_rows");
    }
    unsigned long long bad = none;
    check_call(cudaMemcpy(&bad, flag, sizeof bad, cudaMemcpyDeviceToHost), "gather_rows (result)");
    return bad == none ? -1 : static_cast<int64_t>(bad);
}

}  // namespace fastnn::cuda
