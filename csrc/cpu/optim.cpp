// Optimizer updates, elementwise and in place, with PyTorch's formulas.
#include <cmath>

#include "../ops.h"
#include "../parallel.h"

namespace fastnn {

constexpr int64_t kGrain = 1 << 15;

void sgd_step(float* p, const float* grad, float* v, int64_t n, float lr, float momentum,
              bool nesterov, float wd) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            float g = grad[i] + wd * p[i];
            if (momentum != 0.0f) {
                v[i] = momentum * v[i] + g;
                g = nesterov ? g + momentum * v[i] : v[i];
            }
            p[i] -= lr * g;
        }
    });
}

void adam_step(float* p, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
               float beta2, float eps, float wd, int64_t step) {
    const double t = static_cast<double>(step);
    const float step_size = static_cast<float>(lr / (1.0 - std::pow(double(beta1), t)));
    const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(double(beta2), t)));
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            float g = grad[i] + wd * p[i];
            m[i] = beta1 * m[i] + (1.0f - beta1) * g;
            v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
            p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
        }
    });
}

}  // namespace fastnn
