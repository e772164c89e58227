// Device-neutral op declarations on raw pointers and sizes. Arguments are trusted:
// the bindings check dtype, shape and ranges before any kernel sees them.
#pragma once
#include <cstdint>
#include <vector>

#include "core/geometry.h"  // ConvGeometry, PoolGeometry
#include "cpu/gemm/gemm.h"

namespace fastnn {

// ---- activations (cpu/activation.cpp) ----
void activation_forward(Activation act, const float* x, float* y, int64_t n, float alpha);
// grad_x = f'(x) * grad_y, from the forward output y; gelu's f' needs the input x
// instead (x may be nullptr for every other activation). elu needs alpha >= 0.
void activation_backward(Activation act, const float* x, const float* y, const float* grad_y,
                         float* grad_x, int64_t n, float alpha);
// activation_backward and, in the same pass, db[j] += sum_i grad_x[i][j] (a Dense layer's
// bias gradient): rows x cols arrays.
void activation_backward_bias(Activation act, const float* x, const float* y, const float* grad_y,
                              float* grad_x, int64_t rows, int64_t cols, float alpha, float* db);
void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols);
void softmax_backward(const float* y, const float* grad_y, float* grad_x, int64_t rows,
                      int64_t cols);

// out[i] = x[idx[i]] for rows of `cols` floats (a shuffled mini-batch), idx checked by the caller.
void gather_rows(const float* x, const int64_t* idx, float* out, int64_t n, int64_t cols);

// ---- reductions (cpu/reduce.cpp); the bias broadcast is the GEMM's epilogue ----
// out[j] = beta * out[j] + sum_i x[i][j]
void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float beta);
// sum(x^2) in double over fixed chunks: the same value whatever the thread count.
double sum_squares(const float* x, int64_t n);
double sum_abs(const float* x, int64_t n);  // sum |x| in double, the same fixed chunks
void scale(float* x, int64_t n, float factor);                 // x *= factor
void axpby(float* y, const float* x, int64_t n, float a, float b);  // y = a * y + b * x
void clip(float* x, int64_t n, float low, float high);         // x = min(max(x, low), high)

// ---- convolution (cpu/conv.cpp) ----
// The direct convolution in double (the reference): y (n, out_channels, oh, ow) from x and
// w (out_channels, c / groups, kh, kw), bias (out_channels) or nullptr.
void conv2d_reference(const ConvGeometry& g, int64_t out_channels, int64_t groups,
                      const float* x, const float* w, const float* bias, float* y);
// The convolution: y (n, out_channels, oh, ow) = w (out_channels, c / groups, kh, kw) * x,
// plus bias (nullptr: none), then act. Backward: dx (nullptr: not wanted) = the input's
// gradient, dw = dw_beta * dw + the weight's, db += the bias's (nullptr: none), from the
// output's gradient gy (after the activation's derivative).
// bf16: the GEMM path's products in bfloat16 (gemm_bf16). The direct kernels (stride 1 on
// AVX2/AVX-512: the forward, the input's gradient, the weight's for at most 16 filters per
// group) stay float32: on im2col, the bf16 GEMM was slower than them for small layers (1 to
// 32 channels at 28x28, Xeon with AMX) and at most 1.2x faster for 64-128 channels.
void conv2d_forward(const ConvGeometry& g, int64_t out_channels, int64_t groups, const float* x,
                    const float* w, const float* bias, Activation act, float alpha, float* y,
                    bool bf16 = false);
void conv2d_backward(const ConvGeometry& g, int64_t out_channels, int64_t groups, const float* x,
                     const float* w, const float* gy, float* dx, float* dw, float dw_beta,
                     float* db, bool bf16 = false);
// groups == channels: output channel o = c * multiplier + m reads input channel c only;
// w (c * multiplier, 1, kh, kw). Backward writes dx (if not nullptr), dw = dw_beta * dw + the
// weight's gradient and db += the bias's (if not nullptr).
void depthwise_forward(const ConvGeometry& g, int64_t multiplier, const float* x, const float* w,
                       const float* bias, float* y);
void depthwise_backward(const ConvGeometry& g, int64_t multiplier, const float* x,
                        const float* w, const float* gy, float* dx, float* dw, float dw_beta,
                        float* db);

// ---- pooling (cpu/pool.cpp), over `planes` planes of h x w, floor mode ----
// argmax: the index in its input plane (iy * w + ix) of each output's value, for backward.
void maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int64_t* argmax);
// Backward skips an argmax entry outside its plane and returns the first such entry's
// position in argmax (-1: none), for the caller's error.
int64_t maxpool2d_backward(const PoolGeometry& g, const float* gy, const int64_t* argmax, float* dx);
// The mean of each window, the padding counted (torch's count_include_pad=True).
void avgpool2d_forward(const PoolGeometry& g, const float* x, float* y);
void avgpool2d_backward(const PoolGeometry& g, const float* gy, float* dx);

// ---- batch normalization (cpu/norm.cpp) over the c channels of (n, c, s) data ----
// gamma/beta may be nullptr (1 and 0). training: the batch's statistics, and the running
// ones moved by momentum (toward the unbiased variance); else the running ones. save_mean
// and save_invstd receive the statistics used, for backward. relu: y = relu(the
// normalized x), a ReLU layer after it fused (bit for bit what the two layers compute).
void batchnorm_forward(const float* x, const float* gamma, const float* beta, float* y,
                       int64_t n, int64_t c, int64_t s, float eps, bool training,
                       float momentum, float* running_mean, float* running_var,
                       float* save_mean, float* save_invstd, bool relu = false);
// dgamma/dbeta = param_beta * themselves + the gradient (nullptr: not wanted); dx (nullptr:
// not wanted) as training or evaluation normalized. relu: the forward pass fused a relu, with
// these gamma and beta; gy is then the relu's output gradient, zeroed first where the
// forward's output was <= 0 (recomputed from x and the saved statistics, bit for bit), as the
// relu's backward would.
void batchnorm_backward(const float* x, const float* gy, const float* gamma,
                        const float* save_mean, const float* save_invstd, float* dx,
                        float* dgamma, float* dbeta, float param_beta, int64_t n, int64_t c,
                        int64_t s, bool training, bool relu = false, const float* beta = nullptr);
// sums[ch] += the sum of channel ch of (n, c, s) data, in double, in batch norm's fixed
// order (the same bits whatever the threads and ISA): a convolution's bias gradient.
void add_channel_sums(const float* x, int64_t n, int64_t c, int64_t s, float* sums);

// ---- random numbers and dropout (cpu/dropout.cpp; the generator is random.h) ----
// out[i] = uniform [0, 1) element (offset + i) of the seed's stream.
void random_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset);
// y = x * 1 / (1 - p) where uniform(seed, offset + i) >= p, else 0; 0 <= p < 1.
// Backward is the same call on grad_y: the mask is regenerated, never stored.
void dropout(const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset);

// ---- augmentation (cpu/augment.cpp) ----
struct AugmentSpec {
    float max_shift = 0.0f;     // pixels, each direction
    bool flip = false;          // horizontal, with probability 1/2
    float max_rotation = 0.0f;  // degrees, either way
    float noise_std = 0.0f;
};
// Counter-stream elements each image of a call takes: image i reads offset + i * this, so
// a caller advances its offset by n * this per batch (exported as _C.AUGMENT_STREAM_PER_IMAGE).
constexpr uint64_t kAugmentStreamPerImage = 8;
// n images of c channels of h x w (contiguous), transformed into out (never in place).
void augment_images(const float* x, float* out, int64_t n, int64_t c, int64_t h, int64_t w,
                    const AugmentSpec& spec, uint64_t seed, uint64_t offset);

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
// The rows of logits (rows x classes) whose argmax is their label: the accuracy metric's
// count. The argmax as NumPy's (ties to the first maximum); a row with a NaN is a miss.
int64_t argmax_matches(const float* logits, const int64_t* labels, int64_t rows, int64_t classes);

// ---- optimizer updates (cpu/optim.cpp), PyTorch's formulas ----
// The parameters a flat buffer holds, for the thread split: each is `rows` rows of `cols`
// values from `offset` (a 1-D parameter: rows of one value). The elements outside every
// segment (alignment padding) are not updated. Without segments (nullptr or empty) the
// buffer is one range, split evenly. Speed only: the values are the same either way.
struct ParamSegment {
    int64_t offset, rows, cols;
};
using ParamSegments = std::vector<ParamSegment>;

void sgd_step(float* param, const float* grad, float* velocity, int64_t n, float lr,
              float momentum, bool nesterov, float weight_decay, const ParamSegments* segments = nullptr);
// decoupled: AdamW (param *= 1 - lr * weight_decay first; the gradient gets no decay term).
// The betas (and RMSprop's alpha) are doubles, as torch.optim's are: 1 - beta2 from a float
// 0.999 is 1.3e-5 off 0.001.
void adam_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
               double beta1, double beta2, float eps, float weight_decay, int64_t step,
               bool decoupled, const ParamSegments* segments = nullptr);
void adagrad_step(float* param, const float* grad, float* sum_sq, int64_t n, float lr,
                  float eps, float weight_decay, float lr_decay, int64_t step,
                  const ParamSegments* segments = nullptr);
// momentum_buf is used when momentum > 0, grad_avg when centered (else may be nullptr).
void rmsprop_step(float* param, const float* grad, float* square_avg, float* momentum_buf,
                  float* grad_avg, int64_t n, float lr, double alpha, float eps,
                  float weight_decay, float momentum, bool centered,
                  const ParamSegments* segments = nullptr);
// grad += l1 * sign(param) + 2 * l2 * param; returns l1 * sum|param| + l2 * sum(param^2),
// summed in double over fixed chunks.
double add_penalty_grad(const float* param, float* grad, int64_t n, double l1, double l2);

}  // namespace fastnn
