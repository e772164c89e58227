// Elementwise activations and row-wise softmax, forward and backward.
#include <algorithm>
#include <cmath>

#include "../ops.h"
#include "../parallel.h"

namespace fastnn {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per thread before a fork pays

inline float sigmoid(float x) {
    // Two branches so exp never overflows: stable for any |x|.
    if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
    float e = std::exp(x);
    return e / (1.0f + e);
}

}  // namespace

void activate(Activation act, const float* x, float* y, int64_t n, float alpha) {
    switch (act) {
        case Activation::Identity: if (x != y) std::copy(x, x + n, y); break;
        case Activation::Sigmoid: for (int64_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]); break;
        case Activation::Relu: for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
        case Activation::Tanh: for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]); break;
        case Activation::LeakyRelu:
            for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : alpha * x[i];
            break;
    }
}

void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) { activate(act, x + b, y + b, e - b, alpha); });
}

void activation_backward(Activation act, const float* y, const float* gy, float* gx, int64_t n,
                         float alpha) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
        switch (act) {
            case Activation::Identity: std::copy(gy + b, gy + e, gx + b); break;
            case Activation::Sigmoid:
                for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * y[i] * (1.0f - y[i]);
                break;
            case Activation::Relu:
                for (int64_t i = b; i < e; ++i) gx[i] = y[i] > 0.0f ? gy[i] : 0.0f;
                break;
            case Activation::Tanh:
                for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * (1.0f - y[i] * y[i]);
                break;
            case Activation::LeakyRelu:  // y > 0 exactly where x > 0, for alpha > 0
                for (int64_t i = b; i < e; ++i) gx[i] = y[i] > 0.0f ? gy[i] : alpha * gy[i];
                break;
        }
    });
}

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols) {
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
            const float* xr = x + r * cols;
            float* yr = y + r * cols;
            float mx = *std::max_element(xr, xr + cols);
            float sum = 0.0f;
            for (int64_t j = 0; j < cols; ++j) sum += (yr[j] = std::exp(xr[j] - mx));
            float inv = 1.0f / sum;
            for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
        }
    });
}

void softmax_backward(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols) {
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
            const float *yr = y + r * cols, *gr = gy + r * cols;
            float dot = 0.0f;
            for (int64_t j = 0; j < cols; ++j) dot += yr[j] * gr[j];
            float* out = gx + r * cols;
            for (int64_t j = 0; j < cols; ++j) out[j] = yr[j] * (gr[j] - dot);
        }
    });
}

}  // namespace fastnn
