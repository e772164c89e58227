// One element of each optimizer update (Adam, Adagrad, RMSprop; SGD's is a line), written once
// for the CPU's loops (cpu/optim.cpp, where it vectorizes) and the GPU's kernels (cuda/optim.cu): both compile it without contracting
// a*b+c into an fma, and sqrt and division are IEEE on both, so a step gives the same bits on
// either device.
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"

namespace fastnn {

// The gradient with weight decay wd * p added, as torch.optim does it: not at all when wd
// is 0, so that an infinite parameter does not turn into NaN through 0 * inf.
FASTNN_HD inline float decayed(float g, float p, float wd) { return wd == 0.0f ? g : g + wd * p; }

// Adam's per-step constants, from the step count (1, 2, ...) in double, as torch does.
struct AdamScalars {
    float beta1, beta2, c1, c2;  // c = 1 - beta
    float step_size;             // lr / (1 - beta1^t)
    float inv_sqrt_bc2;          // 1 / sqrt(1 - beta2^t)
    float eps, l2, shrink;       // L2 decay on the gradient (Adam), or p's shrink (AdamW)
};

inline AdamScalars adam_scalars(float lr, double beta1, double beta2, float eps, float wd,
                                int64_t step, bool decoupled) {
    const double t = static_cast<double>(step);
    AdamScalars s;
    s.beta1 = float(beta1);
    s.beta2 = float(beta2);
    s.c1 = float(1.0 - beta1);
    s.c2 = float(1.0 - beta2);
    s.step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, t)));
    s.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(beta2, t)));
    s.eps = eps;
    // Adam adds wd * p to the gradient (L2); AdamW shrinks p itself before the update.
    s.l2 = decoupled ? 0.0f : wd;
    s.shrink = decoupled ? static_cast<float>(1.0 - double(lr) * wd) : 1.0f;
    return s;
}

FASTNN_HD inline void adam_element(float& p, float grad, float& m, float& v, const AdamScalars& s) {
    const float w = p * s.shrink;  // shrink == 1 unless decoupled (AdamW)
    const float g = decayed(grad, w, s.l2);
    m = s.beta1 * m + s.c1 * g;
    v = s.beta2 * v + s.c2 * g * g;
    p = w - s.step_size * m / (std::sqrt(v) * s.inv_sqrt_bc2 + s.eps);
}

// Adagrad's learning rate at step 1, 2, ...: lr / (1 + (step - 1) lr_decay), in double.
inline float adagrad_lr(float lr, float lr_decay, int64_t step) {
    return static_cast<float>(lr / (1.0 + double(step - 1) * lr_decay));
}

// Adagrad at element i: clr is adagrad_lr of this step.
FASTNN_HD inline void adagrad_element(float* p, const float* grad, float* sum_sq, int64_t i, float clr, float eps,
                                      float wd) {
    const float g = decayed(grad[i], p[i], wd);
    sum_sq[i] += g * g;
    p[i] -= clr * g / (std::sqrt(sum_sq[i]) + eps);
}

// RMSprop at element i (w = 1 - alpha): buf is read only with kMomentum, gavg with kCentered.
template <bool kCentered, bool kMomentum>
FASTNN_HD inline void rmsprop_element(float* p, const float* grad, float* sq, float* buf, float* gavg, int64_t i,
                                      float lr, float alpha, float w, float eps, float wd, float momentum) {
    const float g = decayed(grad[i], p[i], wd);
    sq[i] = alpha * sq[i] + w * g * g;
    float var = sq[i];
    if (kCentered) {
        gavg[i] += w * (g - gavg[i]);  // torch's lerp(grad_avg, grad, 1 - alpha)
        // E[g^2] >= E[g]^2 exactly; the clamp (std::max's choice at NaN) only stops rounding
        // from making a NaN.
        const float d = var - gavg[i] * gavg[i];
        var = d < 0.0f ? 0.0f : d;
    }
    const float avg = std::sqrt(var) + eps;
    if (kMomentum) {
        buf[i] = momentum * buf[i] + g / avg;
        p[i] -= lr * buf[i];
    } else {
        p[i] -= lr * g / avg;
    }
}

}  // namespace fastnn
