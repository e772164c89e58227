// Batch normalization on the GPU, as cpu/norm.cpp's (torch's batch_norm over axis 1 of (n, c, s)
// data): one block per channel, its sums in double taken by the block's threads in a fixed
// pattern and added in a fixed tree (the same bits on every run; another order than the CPU's,
// so equal to rounding), then the channel's statistics (core/norm_math.h, the CPU's code) and
// the scale and shift (or, backward, the input's gradient) applied by the same block.
#include "../core/norm_math.h"
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

constexpr int kNormThreads = 256;

// The block's two sums (a, b) added over its threads in a fixed tree; thread 0 gets them.
__device__ inline void block_sums(double a, double b, double* sa, double* sb) {
    sa[threadIdx.x] = a;
    sb[threadIdx.x] = b;
    __syncthreads();
    for (int half = kNormThreads / 2; half > 0; half /= 2) {
        if (static_cast<int>(threadIdx.x) < half) {
            sa[threadIdx.x] += sa[threadIdx.x + half];
            sb[threadIdx.x] += sb[threadIdx.x + half];
        }
        __syncthreads();
    }
}

// Value p of channel ch (image p / s, position p % s).
__device__ inline int64_t at(int64_t p, int64_t ch, int64_t c, int64_t s) { return (p / s * c + ch) * s + p % s; }

__global__ void forward_kernel(const float* x, const float* gamma, const float* beta, float* y, int64_t n, int64_t c,
                               int64_t s, float eps, bool training, float momentum, float* running_mean,
                               float* running_var, float* save_mean, float* save_invstd) {
    __shared__ double sa[kNormThreads], sb[kNormThreads];
    __shared__ float affine[3];  // mean, scale, shift: y = (x - mean) scale + shift
    const int64_t ch = blockIdx.x, count = n * s;
    const double pivot = training && count > 0 ? pivot_of(x[at(0, ch, c, s)]) : 0.0;
    if (training) {
        double a = 0.0, b = 0.0;
        for (int64_t p = threadIdx.x; p < count; p += kNormThreads) {
            const double d = double(x[at(p, ch, c, s)]) - pivot;
            a += d;
            b += d * d;
        }
        block_sums(a, b, sa, sb);
    }
    if (threadIdx.x == 0) {
        const ChannelMap m = channel_map(training ? sa[0] : 0.0, training ? sb[0] : 0.0, pivot, count, training,
                                         momentum, eps, running_mean, running_var, gamma, beta, ch);
        save_mean[ch] = static_cast<float>(m.mean);
        save_invstd[ch] = static_cast<float>(m.invstd);
        affine[0] = save_mean[ch];
        affine[1] = m.scale;
        affine[2] = m.shift;
    }
    __syncthreads();
    const float mean = affine[0], scale = affine[1], shift = affine[2];
    for (int64_t p = threadIdx.x; p < count; p += kNormThreads) {
        const int64_t i = at(p, ch, c, s);
        y[i] = (x[i] - mean) * scale + shift;
    }
}

__global__ void backward_kernel(const float* x, const float* gy, const float* gamma, const float* save_mean,
                                const float* save_invstd, float* dx, float* dgamma, float* dbeta, float param_beta,
                                int64_t n, int64_t c, int64_t s, bool training) {
    __shared__ double sa[kNormThreads], sb[kNormThreads];
    const int64_t ch = blockIdx.x, count = n * s;
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    double a = 0.0, b = 0.0;  // sum(dy), sum(dy * xhat)
    for (int64_t p = threadIdx.x; p < count; p += kNormThreads) {
        const int64_t i = at(p, ch, c, s);
        a += gy[i];
        b += double(gy[i]) * ((x[i] - mean) * invstd);
    }
    block_sums(a, b, sa, sb);
    const double sum_g = sa[0], sum_gx = sb[0];
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[ch] = static_cast<float>(param_beta * dgamma[ch] + sum_gx);
        if (dbeta) dbeta[ch] = static_cast<float>(param_beta * dbeta[ch] + sum_g);
    }
    if (!dx) return;
    // training: dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)); evaluation: w invstd dy
    const double w = gamma ? gamma[ch] : 1.0, k = w * invstd;
    const double mg = training ? sum_g / double(count) : 0.0, mgx = training ? sum_gx / double(count) : 0.0;
    for (int64_t p = threadIdx.x; p < count; p += kNormThreads) {
        const int64_t i = at(p, ch, c, s);
        dx[i] = static_cast<float>(k * (gy[i] - mg - (x[i] - mean) * invstd * mgx));
    }
}

}  // namespace

void batchnorm_forward(const float* x, const float* gamma, const float* beta, float* y, int64_t n, int64_t c,
                       int64_t s, float eps, bool training, float momentum, float* running_mean, float* running_var,
                       float* save_mean, float* save_invstd) {
    if (c <= 0) return;
    forward_kernel<<<static_cast<unsigned>(c), kNormThreads>>>(x, gamma, beta, y, n, c, s, eps, training, momentum,
                                                               running_mean, running_var, save_mean, save_invstd);
    check_launch("batchnorm_forward");
}

void batchnorm_backward(const float* x, const float* gy, const float* gamma, const float* save_mean,
                        const float* save_invstd, float* dx, float* dgamma, float* dbeta, float param_beta, int64_t n,
                        int64_t c, int64_t s, bool training) {
    if (c <= 0) return;
    backward_kernel<<<static_cast<unsigned>(c), kNormThreads>>>(x, gy, gamma, save_mean, save_invstd, dx, dgamma,
                                                                dbeta, param_beta, n, c, s, training);
    check_launch("batchnorm_backward");
}

}  // namespace fastnn::cuda
