// Elementwise activations and row-wise softmax, forward and backward. activate() is also
// the GEMM epilogue's, so every activation here can be fused into a Dense forward pass.
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

// GELU, tanh approximation (torch's approximate="tanh"): 0.5 x (1 + tanh(u)) with
// u = k (x + c x^3). As 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), one exp does it (several
// times faster than tanh), and e^(-2u) = inf gives 0 rather than NaN.
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

inline float gelu(float x) {
    const float e = std::exp(-2.0f * kGeluK * (x + kGeluC * x * x * x));
    return x / (1.0f + e);
}

inline float gelu_derivative(float x) {
    // Past |x| = 10 the curve is flat in float32; the cut also keeps x^3 from
    // overflowing into inf * 0 = NaN for huge |x|.
    if (std::fabs(x) > 10.0f) return x > 0.0f ? 1.0f : 0.0f;
    const float x2 = x * x;
    const float e = std::exp(-2.0f * kGeluK * (x + kGeluC * x2 * x));
    const float s = 1.0f / (1.0f + e);  // 0.5 (1 + tanh(u))
    // d/dx = s + x * 2 s (1 - s) * u', with 1 - s = e s (no cancellation); e s first,
    // as e alone reaches 1e38 near x = -10.
    const float s1 = e * s;
    return s + 2.0f * x * (s1 * s) * kGeluK * (1.0f + 3.0f * kGeluC * x2);
}

// log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no loss for small.
inline float softplus(float x) { return std::max(x, 0.0f) + std::log1p(std::exp(-std::fabs(x))); }

}  // namespace

void activate(Activation act, const float* x, float* y, int64_t n, float alpha) {
    switch (act) {
        case Activation::Identity: if (x != y) std::copy(x, x + n, y); break;
        case Activation::Sigmoid: for (int64_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]); break;
        case Activation::Relu: for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
        case Activation::Tanh: for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]); break;
        case Activation::LeakyRelu:
            for (int64_t i = 0; i < n; ++i) {
                const float v = x[i], neg = alpha * v;  // both sides computed: vectorizes
                y[i] = v > 0.0f ? v : neg;
            }
            break;
        case Activation::Elu:  // expm1 keeps small negative inputs accurate
            for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : alpha * std::expm1(x[i]);
            break;
        case Activation::Gelu: for (int64_t i = 0; i < n; ++i) y[i] = gelu(x[i]); break;
        case Activation::Softplus: for (int64_t i = 0; i < n; ++i) y[i] = softplus(x[i]); break;
    }
}

void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) { activate(act, x + b, y + b, e - b, alpha); });
}

// grad_x = f'(x) * grad_y on one thread, from y (and x, which only gelu reads). Both sides
// of each select are computed first: a load or a product under a condition keeps gcc from
// vectorizing, and a branch on the sign of y mispredicts half the time (4 ns per element).
static void derivative(Activation act, const float* x, const float* y, const float* gy,
                       float* gx, int64_t n, float alpha) {
    switch (act) {
        case Activation::Identity: std::copy(gy, gy + n, gx); break;
        case Activation::Sigmoid:
            for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * y[i] * (1.0f - y[i]);
            break;
        case Activation::Relu:
            for (int64_t i = 0; i < n; ++i) {
                const float g = gy[i];
                gx[i] = y[i] > 0.0f ? g : 0.0f;
            }
            break;
        case Activation::Tanh:
            for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * (1.0f - y[i] * y[i]);
            break;
        case Activation::LeakyRelu:  // y > 0 exactly where x > 0, for alpha > 0
            for (int64_t i = 0; i < n; ++i) {
                const float g = gy[i], neg = alpha * g;
                gx[i] = y[i] > 0.0f ? g : neg;
            }
            break;
        case Activation::Elu:  // for x <= 0: f'(x) = alpha e^x = y + alpha (alpha >= 0)
            for (int64_t i = 0; i < n; ++i) {
                const float g = gy[i], yi = y[i], neg = g * (yi + alpha);
                gx[i] = yi > 0.0f ? g : neg;
            }
            break;
        case Activation::Gelu:  // f' is not a function of y: needs the input x
            for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * gelu_derivative(x[i]);
            break;
        case Activation::Softplus:  // f'(x) = sigmoid(x) = 1 - e^-y, as -expm1(-y) for small y
            for (int64_t i = 0; i < n; ++i) gx[i] = -gy[i] * std::expm1(-y[i]);
            break;
    }
}

void activation_backward(Activation act, const float* x, const float* y, const float* gy,
                         float* gx, int64_t n, float alpha) {
    parallel_for(n, kGrain, [=](int64_t b, int64_t e) {
        derivative(act, x ? x + b : nullptr, y + b, gy + b, gx + b, e - b, alpha);
    });
}

void activation_backward_bias(Activation act, const float* x, const float* y, const float* gy,
                              float* gx, int64_t rows, int64_t cols, float alpha, float* db) {
    // Threads split the columns and walk the rows in order (as column_sum): each column's
    // bias gradient is summed in the same order whatever the split.
    parallel_for(cols, std::max<int64_t>(16, kGrain / std::max<int64_t>(rows, 1)),
                 [=](int64_t b, int64_t e) {
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t o = r * cols + b;
            derivative(act, x ? x + o : nullptr, y + o, gy + o, gx + o, e - b, alpha);
            for (int64_t j = b; j < e; ++j) db[j] += gx[r * cols + j];
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
