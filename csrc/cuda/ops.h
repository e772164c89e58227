// The CUDA twins of ops.h's kernels, by the same names in namespace fastnn::cuda: device
// pointers and sizes, launched on the default stream (ordered with every copy of a device
// array); a CUDA error is a std::runtime_error naming the kernel. Compiled with FASTNN_CUDA=ON.
#pragma once
#include <cstdint>

#include "../cpu/gemm/gemm.h"  // Activation, Epilogue
#include "../core/geometry.h"  // ConvGeometry, PoolGeometry

namespace fastnn::cuda {

// csrc/cuda/activation.cu
void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha);
void activation_backward(Activation act, const float* x, const float* y, const float* grad_y,
                         float* grad_x, int64_t n, float alpha);
// ... and the bias gradient: db[j] += sum over the rows of grad_x[:, j], in row order.
void activation_backward_bias(Activation act, const float* x, const float* y, const float* grad_y,
                              float* grad_x, int64_t rows, int64_t cols, float alpha, float* db);
// row-wise softmax of (rows, cols) and its backward (grad_x = y * (grad_y - <y, grad_y>))
void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols);
void softmax_backward(const float* y, const float* grad_y, float* grad_x, int64_t rows, int64_t cols);
// out[j] = beta * out[j] + the sum of x[:, j] (beta 0: out is only written), a fixed order of
// additions on every run (reduce.cpp's column_sum is the CPU's).
void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float beta);

// csrc/cuda/dropout.cu: y = x * (uniform(seed, offset + i) >= p) / (1 - p), random.h's
// stream, the CPU's masks bit for bit; x == y allowed.
void dropout(const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset);

// csrc/cuda/gemm.cu: cpu/gemm's contract (row-major, leading dimensions, C = alpha op(A) op(B)
// + beta C, then the epilogue), sizes within int32 (the bindings check); cuBLAS (tf32: its
// operands may be rounded to TF32 on tensor cores), and fastnn's own tiled SGEMM (float sums
// in k order), the readable reference.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const Epilogue& ep,
          bool tf32);
void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc, const Epilogue& ep);

// csrc/cuda/loss.cu: the mean softmax cross-entropy of rows x classes logits against integer
// labels (int64, int32 or uint8), its gradient into grad; scratch: rows + 2 doubles of device
// memory. *first_bad_row: the first row whose label is outside [0, classes) (its loss and
// gradient left out), or -1.
template <class Label>
double cross_entropy(const float* logits, const Label* labels, float* grad, int64_t rows, int64_t classes,
                     double* scratch, int64_t* first_bad_row);

// csrc/cuda/loss.cu: the mean of an elementwise loss over n entries and its gradient, as
// cpu/loss.cpp's mse, bce_with_logits and bce_probabilities; scratch: (n + kSumChunk - 1) /
// kSumChunk + 1 doubles on the device (sum.cuh's partial sums).
enum class ElementwiseLoss { Mse = 0, BceLogits = 1, BceProbabilities = 2 };  // the bindings' codes
// ... and from a target distribution per row (cpu/loss.cpp's cross_entropy_soft); scratch:
// rows + 1 doubles on the device.
double cross_entropy_soft(const float* logits, const float* target, float* grad, int64_t rows, int64_t classes,
                          double* scratch);
double elementwise_loss(ElementwiseLoss kind, const float* pred, const float* target, float* grad, int64_t n,
                        double* scratch);

// csrc/cuda/reduce.cu: out[i] = x[idx[i]] for n rows of row_bytes bytes out of x's `rows`.
// With flag (8 bytes of device memory), returns the first i whose index is outside [0, rows)
// (that row left unwritten), or -1, waiting for the GPU; without (indices checked by the
// caller), returns -1 at once.
int64_t gather_rows(const void* x, const int64_t* idx, void* out, int64_t n, int64_t row_bytes, int64_t rows,
                    unsigned long long* flag);
// ... and the reductions and in-place helpers of clipping and L1/L2 (cpu/reduce.cpp's and
// cpu/optim.cpp's add_penalty_grad), the sums in sum.cuh's fixed order; scratch as above.
double sum_squares(const float* x, int64_t n, double* scratch);
double sum_abs(const float* x, int64_t n, double* scratch);
// grad += l1 sign(p) + 2 l2 p; returns l1 sum|p| + l2 sum p^2
double add_penalty_grad(const float* p, float* grad, int64_t n, double l1, double l2, double* scratch);
void scale(float* x, int64_t n, float factor);
void clip(float* x, int64_t n, float low, float high);

// csrc/cuda/optim.cu
void sgd_step(float* param, const float* grad, float* velocity, int64_t n, float lr,
              float momentum, bool nesterov, float weight_decay);
void adam_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
               double beta1, double beta2, float eps, float weight_decay, int64_t step,
               bool decoupled);
void adagrad_step(float* param, const float* grad, float* sum_sq, int64_t n, float lr, float eps, float weight_decay,
                  float lr_decay, int64_t step);
// buf: with momentum > 0 only; gavg: centered only (else may be null)
void rmsprop_step(float* param, const float* grad, float* sq, float* buf, float* gavg, int64_t n, float lr,
                  double alpha, float eps, float weight_decay, float momentum, bool centered);

// csrc/cuda/conv.cu: csrc/ops.h's contract (groups, stride, padding, dilation); backward's
// scratch: max(weights, out_channels) * n floats on the device (per-image partial sums).
void conv2d_forward(const ConvGeometry& g, int64_t out_channels, int64_t groups, const float* x, const float* w,
                    const float* bias, Activation act, float alpha, float* y);
void conv2d_backward(const ConvGeometry& g, int64_t out_channels, int64_t groups, const float* x, const float* w,
                     const float* gy, float* dx, float* dw, float dw_beta, float* db, float* scratch);

// csrc/cuda/norm.cu: csrc/ops.h's contract (channels of (n, c, s) data; c < 2^31)
void batchnorm_forward(const float* x, const float* gamma, const float* beta, float* y, int64_t n, int64_t c,
                       int64_t s, float eps, bool training, float momentum, float* running_mean, float* running_var,
                       float* save_mean, float* save_invstd);
void batchnorm_backward(const float* x, const float* gy, const float* gamma, const float* save_mean,
                        const float* save_invstd, float* dx, float* dgamma, float* dbeta, float param_beta, int64_t n,
                        int64_t c, int64_t s, bool training);

// csrc/cuda/pool.cu: csrc/ops.h's contract
void maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int64_t* argmax);
void maxpool2d_backward(const PoolGeometry& g, const float* gy, const int64_t* argmax, float* dx);
void avgpool2d_forward(const PoolGeometry& g, const float* x, float* y);
void avgpool2d_backward(const PoolGeometry& g, const float* gy, float* dx);

}  // namespace fastnn::cuda
