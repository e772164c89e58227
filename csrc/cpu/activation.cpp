// Elementwise activations and row-wise softmax, forward and backward. activate() is also
// the GEMM epilogue's, so every activation here can be fused into a Dense forward pass.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "isa.h"
#include "vmath.h"

namespace fastnn {

const ActivationInfo kActivations[] = {
    {"identity", Activation::Identity, 0.0f, false, false},
    {"linear", Activation::Identity, 0.0f, false, false},
    {"sigmoid", Activation::Sigmoid, 0.0f, false, false},
    {"relu", Activation::Relu, 0.0f, false, true},
    {"tanh", Activation::Tanh, 0.0f, false, false},
    {"leaky_relu", Activation::LeakyRelu, 0.01f, false, true},
    {"elu", Activation::Elu, 1.0f, true, true},
    {"gelu", Activation::Gelu, 0.0f, true, true},
    {"softplus", Activation::Softplus, 0.0f, false, false},
};
const int kNumActivations = sizeof(kActivations) / sizeof(kActivations[0]);

const ActivationInfo* find_activation(const char* name) {
    for (const ActivationInfo& a : kActivations)
        if (std::strcmp(a.name, name) == 0) return &a;
    return nullptr;
}

namespace {

// Stable for any |x|: e^-|x| never overflows, and 1 - s for x < 0 is e s, not a difference.
// Both sides of the select are computed, so loops over it vectorize.
inline float sigmoid(float x) {
    const float e = exp_f(-std::fabs(x)), s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

// tanh |x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): no cancellation near 0, 1 for large |x|.
inline float tanh_f(float x) {
    const float em = expm1_f(-2.0f * std::fabs(x));
    return std::copysign(-em / (2.0f + em), x);
}

// GELU, tanh approximation (torch's approximate="tanh"): 0.5 x (1 + tanh(u)) with
// u = k (x + c x^3). As 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), one exp does it (several
// times faster than tanh), and e^(-2u) = inf gives 0 rather than NaN.
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

inline float gelu(float x) {
    const float e = exp_f(-2.0f * kGeluK * (x + kGeluC * x * x * x));
    return x / (1.0f + e);
}

inline float gelu_derivative(float x) {
    // Past |x| = 10 the curve is flat in float32; the clamp also keeps x^3 from
    // overflowing into inf * 0 = NaN for huge |x|.
    const float xc = std::min(std::max(x, -10.0f), 10.0f), x2 = xc * xc;
    const float e = exp_f(-2.0f * kGeluK * (xc + kGeluC * x2 * xc));
    const float s = 1.0f / (1.0f + e);  // 0.5 (1 + tanh(u))
    // d/dx = s + x * 2 s (1 - s) * u', with 1 - s = e s (no cancellation); e s first,
    // as e alone reaches 1e38 near x = -10.
    const float s1 = e * s;
    const float d = s + 2.0f * xc * (s1 * s) * kGeluK * (1.0f + 3.0f * kGeluC * x2);
    return std::fabs(x) > 10.0f ? (x > 0.0f ? 1.0f : 0.0f) : d;
}

// log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no loss for small.
inline float softplus(float x) { return std::max(x, 0.0f) + log1p_unit_f(exp_f(-std::fabs(x))); }

FASTNN_ISA_BODY void activate_body(Activation act, const float* x, float* y, int64_t n, float alpha) {
    switch (act) {
        case Activation::Identity: if (x != y) std::copy(x, x + n, y); break;
        case Activation::Sigmoid: for (int64_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]); break;
        case Activation::Relu:  // NaN fails x < 0 and passes through, as in torch (one maxps)
            for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
            break;
        case Activation::Tanh: for (int64_t i = 0; i < n; ++i) y[i] = tanh_f(x[i]); break;
        case Activation::LeakyRelu:
            for (int64_t i = 0; i < n; ++i) {
                const float v = x[i], neg = alpha * v;  // both sides computed: vectorizes
                y[i] = v > 0.0f ? v : neg;
            }
            break;
        case Activation::Elu:  // expm1 keeps small negative inputs accurate
            for (int64_t i = 0; i < n; ++i) {
                const float v = x[i], neg = alpha * expm1_f(std::min(v, 0.0f));
                y[i] = v > 0.0f ? v : neg;
            }
            break;
        case Activation::Gelu: for (int64_t i = 0; i < n; ++i) y[i] = gelu(x[i]); break;
        case Activation::Softplus: for (int64_t i = 0; i < n; ++i) y[i] = softplus(x[i]); break;
    }
}

}  // namespace

ActivateFn activate_kernel() { return IsaCopies<activate_body>::pick(); }

void activate(Activation act, const float* x, float* y, int64_t n, float alpha) {
    IsaCopies<activate_body>::run(act, x, y, n, alpha);
}

void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) { activate(act, x + b, y + b, e - b, alpha); });
}

namespace {

// grad_x = f'(x) * grad_y on one thread, from y (and x, which gelu and elu read). Both sides
// of each select are computed first: a load or a product under a condition keeps gcc from
// vectorizing, and a branch on the sign of y mispredicts half the time (4 ns per element).
// At NaN, torch's choices: relu and elu test y (x) <= 0 (false: the gradient passes), leaky_relu
// y > 0 (false: it is scaled); the others compute NaN.
FASTNN_ISA_BODY void derivative(Activation act, const float* x, const float* y, const float* gy,
                                float* gx, int64_t n, float alpha) {
    switch (act) {
        case Activation::Identity: std::copy(gy, gy + n, gx); break;
        case Activation::Sigmoid:
            for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * y[i] * (1.0f - y[i]);
            break;
        case Activation::Relu:
            for (int64_t i = 0; i < n; ++i) {
                const float g = gy[i];
                gx[i] = y[i] <= 0.0f ? 0.0f : g;
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
        case Activation::Elu:  // for x <= 0: alpha e^x, from x: y + alpha loses it below -17
            for (int64_t i = 0; i < n; ++i) {
                const float g = gy[i], xi = x[i], neg = g * (alpha * exp_f(std::min(xi, 0.0f)));
                gx[i] = xi <= 0.0f ? neg : g;
            }
            break;
        case Activation::Gelu:  // f' is not a function of y: needs the input x
            for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * gelu_derivative(x[i]);
            break;
        case Activation::Softplus:  // f'(x) = sigmoid(x) = 1 - e^-y, as -expm1(-y) for small y
            for (int64_t i = 0; i < n; ++i) gx[i] = -gy[i] * expm1_f(-y[i]);
            break;
    }
}

}  // namespace

void activation_backward(Activation act, const float* x, const float* y, const float* gy,
                         float* gx, int64_t n, float alpha) {
    parallel_for(n, kGrain, [=](int64_t b, int64_t e) {
        IsaCopies<derivative>::run(act, x ? x + b : nullptr, y + b, gy + b, gx + b, e - b, alpha);
    });
}

void activation_backward_bias(Activation act, const float* x, const float* y, const float* gy,
                              float* gx, int64_t rows, int64_t cols, float alpha, float* db) {
    const auto row_derivative = IsaCopies<derivative>::pick();  // once: called row by row
    column_sums_by_row_blocks(rows, cols, 1.0f, db, [=](int64_t r, float* s) {
        const int64_t o = r * cols;
        row_derivative(act, x ? x + o : nullptr, y + o, gy + o, gx + o, cols, alpha);
        const float* g = gx + o;
        for (int64_t j = 0; j < cols; ++j) s[j] += g[j];
    });
}

namespace {

FASTNN_ISA_BODY void softmax_row(const float* x, float* y, int64_t cols) {
    const float mx = max_lanes(x, cols);
    for (int64_t j = 0; j < cols; ++j) y[j] = exp_f(x[j] - mx);
    const float inv = 1.0f / sum_lanes(y, cols);
    for (int64_t j = 0; j < cols; ++j) y[j] *= inv;
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols) {
    const auto row_softmax = IsaCopies<softmax_row>::pick();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) row_softmax(x + r * cols, y + r * cols, cols);
    });
}

namespace {

// The row's dot product in lanes (one running sum waited 4 cycles a value: 128 x 1000 ran at
// 0.74x PyTorch).
FASTNN_ISA_BODY void softmax_backward_row(const float* yr, const float* gr, float* out, int64_t cols) {
    const float dot = sum_lanes_of(cols, [=](int64_t j) { return yr[j] * gr[j]; });
    for (int64_t j = 0; j < cols; ++j) out[j] = yr[j] * (gr[j] - dot);
}

}  // namespace

void softmax_backward(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols) {
    const auto row_backward = IsaCopies<softmax_backward_row>::pick();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) row_backward(y + r * cols, gy + r * cols, gx + r * cols, cols);
    });
}

}  // namespace fastnn
