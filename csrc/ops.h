// Device-neutral op declarations on raw pointers and sizes. Arguments are trusted:
// the bindings check dtype, shape and ranges before any kernel sees them.
#pragma once
#include <cstdint>

#include "cpu/gemm/gemm.h"

namespace fastnn {

// ---- activations (cpu/activation.cpp) ----
void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha);
// grad_x = f'(x) * grad_y, from the forward output y (every supported f allows it).
void activation_backward(Activation act, const float* y, const float* grad_y, float* grad_x,
                         int64_t n, float alpha);
void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols);
void softmax_backward(const float* y, const float* grad_y, float* grad_x, int64_t rows,
                      int64_t cols);

// ---- reductions (cpu/reduce.cpp); the bias broadcast is the GEMM's epilogue ----
// out[j] = beta * out[j] + sum_i x[i][j]
void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float beta);

// ---- losses (cpu/loss.cpp): mean loss returned, its gradient written to grad ----
double mse(const float* pred, const float* target, float* grad, int64_t n);
double bce_with_logits(const float* logits, const float* target, float* grad, int64_t n);
double bce_probabilities(const float* prob, const float* target, float* grad, int64_t n);
double cross_entropy(const float* logits, const int64_t* labels, float* grad, int64_t rows,
                     int64_t classes);
double cross_entropy_soft(const float* logits, const float* target, float* grad, int64_t rows,
                          int64_t classes);
// Index of the first label outside [0, classes), or -1.
int64_t first_label_out_of_range(const int64_t* labels, int64_t n, int64_t classes);

// ---- optimizer updates (cpu/optim.cpp), PyTorch's formulas ----
void sgd_step(float* param, const float* grad, float* velocity, int64_t n, float lr,
              float momentum, bool nesterov, float weight_decay);
void adam_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
               float beta1, float beta2, float eps, float weight_decay, int64_t step);

}  // namespace fastnn
