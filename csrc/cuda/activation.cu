// Elementwise activations on the GPU, forward and backward, and the bias gradient: the
// formulas of cpu/activation.cpp (the same stable forms, the same choices at NaN), with CUDA's
// expf/expm1f/log1pf where the CPU has its vectorized ones, so results agree to rounding.
// Held to the CPU's by tests/test_cuda.py.
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

__device__ float sigmoid(float x) {
    const float e = expf(-fabsf(x)), s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

__device__ float tanh_stable(float x) {
    const float em = expm1f(-2.0f * fabsf(x));
    return copysignf(-em / (2.0f + em), x);
}

__device__ float gelu(float x) {
    const float e = expf(-2.0f * kGeluK * (x + kGeluC * x * x * x));
    return x / (1.0f + e);
}

__device__ float gelu_derivative(float x) {
    const float xc = fminf(fmaxf(x, -10.0f), 10.0f), x2 = xc * xc;
    const float e = expf(-2.0f * kGeluK * (xc + kGeluC * x2 * xc));
    const float s = 1.0f / (1.0f + e), s1 = e * s;
    const float d = s + 2.0f * xc * (s1 * s) * kGeluK * (1.0f + 3.0f * kGeluC * x2);
    return fabsf(x) > 10.0f ? (x > 0.0f ? 1.0f : 0.0f) : d;
}

__device__ float activate(Activation act, float x, float alpha) {
    switch (act) {
        case Activation::Identity: return x;
        case Activation::Sigmoid: return sigmoid(x);
        case Activation::Relu: return x < 0.0f ? 0.0f : x;  // NaN passes, as on the CPU
        case Activation::Tanh: return tanh_stable(x);
        case Activation::LeakyRelu: return x > 0.0f ? x : alpha * x;
        case Activation::Elu: return x > 0.0f ? x : alpha * expm1f(fminf(x, 0.0f));
        case Activation::Gelu: return gelu(x);
        case Activation::Softplus: return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
    }
    return x;
}

// grad_x from y (and x, which only gelu reads), as cpu/activation.cpp's derivative().
__device__ float derivative(Activation act, const float* x, float y, float g, int64_t i, float alpha) {
    switch (act) {
        case Activation::Identity: return g;
        case Activation::Sigmoid: return g * y * (1.0f - y);
        case Activation::Relu: return y <= 0.0f ? 0.0f : g;
        case Activation::Tanh: return g * (1.0f - y * y);
        case Activation::LeakyRelu: return y > 0.0f ? g : alpha * g;
        case Activation::Elu: return y <= 0.0f ? g * (y + alpha) : g;
        case Activation::Gelu: return g * gelu_derivative(x[i]);
        case Activation::Softplus: return -g * expm1f(-y);
    }
    return g;
}

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
