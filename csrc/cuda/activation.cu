// Elementwise activations on the GPU, forward and backward, and the bias gradient
// (activation_math.cuh's formulas), held to the CPU's by tests/test_device_ops.py.
#include "activation_math.cuh"
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

__global__ void forward_kernel(Activation act, const float* x, float* y, int64_t n, float alpha) {
    FASTNN_GRID_STRIDE(i, n) y[i] = activate(act, x[i], alpha);
}

__global__ void backward_kernel(Activation act, const float* x, const float* y, const float* gy,
                                float* gx, int64_t n, float alpha) {
    FASTNN_GRID_STRIDE(i, n) gx[i] = derivative(act, x, y[i], gy[i], i, alpha);
}

// Softmax, one thread per row, as cpu/activation.cpp's: shifted by the row's max.
__global__ void softmax_forward_kernel(const float* x, float* y, int64_t rows, int64_t cols) {
    FASTNN_GRID_STRIDE(r, rows) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float mx = xr[0];
        for (int64_t j = 1; j < cols; ++j) mx = max_as_std(mx, xr[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < cols; ++j) sum += yr[j] = expf(xr[j] - mx);
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
}

__global__ void softmax_backward_kernel(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols) {
    FASTNN_GRID_STRIDE(r, rows) {
        const float *yr = y + r * cols, *gr = gy + r * cols;
        float dot = 0.0f;
        for (int64_t j = 0; j < cols; ++j) dot += yr[j] * gr[j];
        for (int64_t j = 0; j < cols; ++j) gx[r * cols + j] = yr[j] * (gr[j] - dot);
    }
}

// Columns in tiles of 32 (a warp reads 32 neighbours of a row: coalesced), a tile's rows
// dealt to 32 thread rows in a fixed pattern and added back in a fixed tree: the same sum on
// every run and every GPU, no atomics. (One thread per column, its rows in order, used 16 of
// the H200's 132 multiprocessors for 4096 columns and took milliseconds at 8192 rows.)
constexpr int kSumCols = 32, kSumRows = 32;

__global__ void column_sum_kernel(const float* g, int64_t rows, int64_t cols, float* db, float beta) {
    __shared__ float part[kSumRows][kSumCols + 1];
    for (int64_t tile = blockIdx.x; tile * kSumCols < cols; tile += gridDim.x) {  // uniform per block
        const int64_t j = tile * kSumCols + threadIdx.x;
        float s = 0.0f;
        if (j < cols)
            for (int64_t r = threadIdx.y; r < rows; r += kSumRows) s += g[r * cols + j];
        part[threadIdx.y][threadIdx.x] = s;
        __syncthreads();
        for (int half = kSumRows / 2; half > 0; half /= 2) {
            if (static_cast<int>(threadIdx.y) < half) part[threadIdx.y][threadIdx.x] += part[threadIdx.y + half][threadIdx.x];
            __syncthreads();
        }
        if (threadIdx.y == 0 && j < cols) db[j] = beta == 0.0f ? part[0][threadIdx.x] : beta * db[j] + part[0][threadIdx.x];
        __syncthreads();  // part is written again by the next tile
    }
}

}  // namespace

void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha) {
    if (n <= 0) return;
    forward_kernel<<<grid_for(n), kThreads>>>(act, x, y, n, alpha);
    check_launch("activation_forward");
}

void activation_backward(Activation act, const float* x, const float* y, const float* grad_y,
                         float* grad_x, int64_t n, float alpha) {
    if (n <= 0) return;
    backward_kernel<<<grid_for(n), kThreads>>>(act, x, y, grad_y, grad_x, n, alpha);
    check_launch("activation_backward");
}

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
    softmax_forward_kernel<<<grid_for(rows), kThreads>>>(x, y, rows, cols);
    check_launch("softmax_forward");
}

void softmax_backward(const float* y, const float* grad_y, float* grad_x, int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
    softmax_backward_kernel<<<grid_for(rows), kThreads>>>(y, grad_y, grad_x, rows, cols);
    check_launch("softmax_backward");
}

void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float beta) {
    if (cols <= 0) return;
    const dim3 block(kSumCols, kSumRows), grid(static_cast<unsigned>(std::min<int64_t>((cols + kSumCols - 1) / kSumCols, 65536)));
    column_sum_kernel<<<grid, block>>>(x, std::max<int64_t>(rows, 0), cols, out, beta);
    check_launch("column_sum");
}

void activation_backward_bias(Activation act, const float* x, const float* y, const float* grad_y,
                              float* grad_x, int64_t rows, int64_t cols, float alpha, float* db) {
    activation_backward(act, x, y, grad_y, grad_x, rows * cols, alpha);
    if (rows > 0) column_sum(grad_x, db, rows, cols, 1.0f);
}

}  // namespace fastnn::cuda
