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

// One thread per column, adding the rows in order: the same sum on every run (no atomics).
__global__ void column_sum_kernel(const float* g, int64_t rows, int64_t cols, float* db) {
    FASTNN_GRID_STRIDE(j, cols) {
        float s = 0.0f;
        for (int64_t r = 0; r < rows; ++r) s += g[r * cols + j];
        db[j] += s;
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

void activation_backward_bias(Activation act, const float* x, const float* y, const float* grad_y,
                              float* grad_x, int64_t rows, int64_t cols, float alpha, float* db) {
    activation_backward(act, x, y, grad_y, grad_x, rows * cols, alpha);
    if (rows <= 0 || cols <= 0) return;
    column_sum_kernel<<<grid_for(cols), kThreads>>>(grad_x, rows, cols, db);
    check_launch("activation_backward (bias gradient)");
}

}  // namespace fastnn::cuda
