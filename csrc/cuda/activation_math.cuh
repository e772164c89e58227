// The activations' scalar formulas on the GPU, for the elementwise kernels (activation.cu)
// and the GEMM's epilogue (gemm.cu): cpu/activation.cpp's stable forms and choices at NaN, with
// CUDA's expf/expm1f/log1pf where the CPU has its vectorized ones.
#pragma once
#include <cstdint>

#include "../cpu/gemm/gemm.h"  // Activation

namespace fastnn::cuda {

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

// std::min and std::max as the CPU's code calls them: a NaN first argument comes back (CUDA's
// fminf and fmaxf drop NaN instead, which turned elu's and gelu's NaN into numbers here).
__device__ inline float min_as_std(float a, float b) { return b < a ? b : a; }
__device__ inline float max_as_std(float a, float b) { return a < b ? b : a; }

__device__ inline float sigmoid(float x) {
    const float e = expf(-fabsf(x)), s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

__device__ inline float tanh_stable(float x) {
    const float em = expm1f(-2.0f * fabsf(x));
    return copysignf(-em / (2.0f + em), x);
}

__device__ inline float gelu(float x) {
    const float e = expf(-2.0f * kGeluK * (x + kGeluC * x * x * x));
    return x / (1.0f + e);
}

__device__ inline float gelu_derivative(float x) {
    const float xc = min_as_std(max_as_std(x, -10.0f), 10.0f), x2 = xc * xc;
    const float e = expf(-2.0f * kGeluK * (xc + kGeluC * x2 * xc));
    const float s = 1.0f / (1.0f + e), s1 = e * s;
    const float d = s + 2.0f * xc * (s1 * s) * kGeluK * (1.0f + 3.0f * kGeluC * x2);
    return fabsf(x) > 10.0f ? (x > 0.0f ? 1.0f : 0.0f) : d;
}

__device__ inline float activate(Activation act, float x, float alpha) {
    switch (act) {
        case Activation::Identity: return x;
        case Activation::Sigmoid: return sigmoid(x);
        case Activation::Relu: return x < 0.0f ? 0.0f : x;  // NaN passes, as on the CPU
        case Activation::Tanh: return tanh_stable(x);
        case Activation::LeakyRelu: return x > 0.0f ? x : alpha * x;
        case Activation::Elu: return x > 0.0f ? x : alpha * expm1f(min_as_std(x, 0.0f));
        case Activation::Gelu: return gelu(x);
        case Activation::Softplus: return max_as_std(x, 0.0f) + log1pf(expf(-fabsf(x)));
    }
    return x;
}

// grad_x from y (and x, which gelu and elu read), as cpu/activation.cpp's derivative().
__device__ inline float derivative(Activation act, const float* x, float y, float g, int64_t i, float alpha) {
    switch (act) {
        case Activation::Identity: return g;
        case Activation::Sigmoid: return g * y * (1.0f - y);
        case Activation::Relu: return y <= 0.0f ? 0.0f : g;
        case Activation::Tanh: return g * (1.0f - y * y);
        case Activation::LeakyRelu: return y > 0.0f ? g : alpha * g;
        case Activation::Elu: return x[i] <= 0.0f ? g * (alpha * expf(min_as_std(x[i], 0.0f))) : g;
        case Activation::Gelu: return g * gelu_derivative(x[i]);
        case Activation::Softplus: return -g * expm1f(-y);
    }
    return g;
}

}  // namespace fastnn::cuda
