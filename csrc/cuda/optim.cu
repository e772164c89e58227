// The optimizers' updates on the GPU, one fused kernel over the flat parameter buffer each,
// element by element as cpu/optim.cpp (Adam's, Adagrad's and RMSprop's element is the same code:
// core/optim_math.h).
// Reference first: each is held to the CPU's update by tests/test_cuda.py.
#include "../core/optim_math.h"
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

__global__ void sgd_kernel(float* p, const float* g, float* v, int64_t n, float lr, float mu,
                           bool nesterov, float wd) {
    FASTNN_GRID_STRIDE(i, n) {
        const float gi = decayed(g[i], p[i], wd);
        if (mu == 0.0f) {
            p[i] -= lr * gi;
        } else {
            v[i] = mu * v[i] + gi;
            p[i] -= lr * (nesterov ? gi + mu * v[i] : v[i]);
        }
    }
}

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamScalars s) {
    FASTNN_GRID_STRIDE(i, n) adam_element(p[i], g[i], m[i], v[i], s);
}

__global__ void adagrad_kernel(float* p, const float* g, float* sum_sq, int64_t n, float clr, float eps, float wd) {
    FASTNN_GRID_STRIDE(i, n) adagrad_element(p, g, sum_sq, i, clr, eps, wd);
}

template <bool kCentered, bool kMomentum>
__global__ void rmsprop_kernel(float* p, const float* g, float* sq, float* buf, float* gavg, int64_t n, float lr,
                               float alpha, float w, float eps, float wd, float momentum) {
    FASTNN_GRID_STRIDE(i, n) rmsprop_element<kCentered, kMomentum>(p, g, sq, buf, gavg, i, lr, alpha, w, eps, wd, momentum);
}

}  // namespace

void adagrad_step(float* param, const float* grad, float* sum_sq, int64_t n, float lr, float eps, float weight_decay,
                  float lr_decay, int64_t step) {
    if (n <= 0) return;
    adagrad_kernel<<<grid_for(n), kThreads>>>(param, grad, sum_sq, n, adagrad_lr(lr, lr_decay, step), eps, weight_decay);
    check_launch("adagrad_step");
}

void rmsprop_step(float* param, const float* grad, float* sq, float* buf, float* gavg, int64_t n, float lr,
                  double alpha, float eps, float weight_decay, float momentum, bool centered) {
    if (n <= 0) return;
    const float a = float(alpha), w = float(1.0 - alpha);
    if (centered && momentum > 0.0f)
        rmsprop_kernel<true, true><<<grid_for(n), kThreads>>>(param, grad, sq, buf, gavg, n, lr, a, w, eps, weight_decay, momentum);
    else if (centered)
        rmsprop_kernel<true, false><<<grid_for(n), kThreads>>>(param, grad, sq, buf, gavg, n, lr, a, w, eps, weight_decay, momentum);
    else if (momentum > 0.0f)
        rmsprop_kernel<false, true><<<grid_for(n), kThreads>>>(param, grad, sq, buf, gavg, n, lr, a, w, eps, weight_decay, momentum);
    else
        rmsprop_kernel<false, false><<<grid_for(n), kThreads>>>(param, grad, sq, buf, gavg, n, lr, a, w, eps, weight_decay, momentum);
    check_launch("rmsprop_step");
}

void sgd_step(float* param, const float* grad, float* velocity, int64_t n, float lr, float momentum,
              bool nesterov, float weight_decay) {
    if (n <= 0) return;
    sgd_kernel<<<grid_for(n), kThreads>>>(param, grad, velocity, n, lr, momentum, nesterov, weight_decay);
    check_launch("sgd_step");
}

void adam_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr, double beta1,
               double beta2, float eps, float weight_decay, int64_t step, bool decoupled) {
    if (n <= 0) return;
    adam_kernel<<<grid_for(n), kThreads>>>(param, grad, m, v, n,
                                           adam_scalars(lr, beta1, beta2, eps, weight_decay, step, decoupled));
    check_launch("adam_step");
}

}  // namespace fastnn::cuda
