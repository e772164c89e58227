// Batch normalization over the channels of (n, c, s) data (BatchNorm1d: s = 1 or L;
// BatchNorm2d: s = H x W), as torch.nn.functional.batch_norm: training normalizes by the
// batch's mean and biased variance and moves the running statistics by `momentum` toward
// the batch's mean and unbiased variance; evaluation uses the running ones. Each channel's
// sums are taken in double, by one thread, in a fixed order: the same bits whatever the
// thread count and the ISA. The float64 references are in tests/_ref.py.
#include <algorithm>
#include <cmath>

#include "../core/norm_math.h"
#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "isa.h"

namespace fastnn {

namespace {

int64_t channel_grain(int64_t values) {
    return std::max<int64_t>(1, kGrain / std::max<int64_t>(values, 1));
}

// A channel's sums run in kLanes double accumulators, value p of the channel (in its
// order: image by image) into lane p % kLanes, the lanes added in order at the end. One
// accumulator made every value wait for the previous add (4 cycles each: batch norm took
// an eighth of a VGG training step); independent lanes vectorize, in every ISA copy alike.
constexpr int64_t kLanes = 32;

struct Lanes {
    double a[kLanes] = {}, b[kLanes] = {};
    double total_a() const { return total(a); }
    double total_b() const { return total(b); }

  private:
    static double total(const double* v) {
        double t = 0.0;
        for (int64_t l = 0; l < kLanes; ++l) t += v[l];
        return t;
    }
};

// a += d, b += d * d (kSquares) over a channel's values, d = x - pivot in double (exact; see
// pivot_of): n rows of s, `stride` apart.
template <bool kSquares>
FASTNN_ISA_BODY void sum_values(const float* x, int64_t n, int64_t s, int64_t stride, double pivot,
                                Lanes* lanes) {
    double a[kLanes], b[kLanes];
    std::copy(lanes->a, lanes->a + kLanes, a);
    std::copy(lanes->b, lanes->b + kLanes, b);
    for (int64_t i = 0, p = 0; i < n; ++i) {
        const float* v = x + i * stride;
        int64_t j = 0;
        for (; j < s && (p + j) % kLanes != 0; ++j) {
            const double d = double(v[j]) - pivot;
            a[(p + j) % kLanes] += d;
            if (kSquares) b[(p + j) % kLanes] += d * d;
        }
        for (; j + kLanes <= s; j += kLanes)
            for (int64_t l = 0; l < kLanes; ++l) {
                const double d = double(v[j + l]) - pivot;
                a[l] += d;
                if (kSquares) b[l] += d * d;
            }
        for (; j < s; ++j) {
            const double d = double(v[j]) - pivot;
            a[(p + j) % kLanes] += d;
            if (kSquares) b[(p + j) % kLanes] += d * d;
        }
        p += s;
    }
    std::copy(a, a + kLanes, lanes->a);
    std::copy(b, b + kLanes, lanes->b);
}

// The gradient that reaches batch norm's output: dy, or with a relu fused after it, dy where
// the forward's output (x - mean) scale + shift (scale_shift's float arithmetic: the same bits) was
// above 0 and 0 elsewhere, as the relu's own backward. Reading the relu's output instead made
// a third of the pass's reads (b128 VGG step, 2 threads: 87.7 -> 83.7 ms without them). The
// load comes before the select: one under a condition keeps gcc from vectorizing.
template <bool kRelu>
inline float grad_at(const float* g, const float* x, int64_t at, float mean, float scale, float shift) {
    const float d = g[at];
    if constexpr (kRelu) return (x[at] - mean) * scale + shift <= 0.0f ? 0.0f : d;
    return d;
}

// a += dy, b += dy * (x - mean) over a channel's values (as sum_values); the caller scales
// b by invstd. Each product is taken in float, and only the sums in double: the double
// subtract and multiply per value made the pass compute-bound where its values sit in cache
// (with input_grad's float arithmetic, the backward alone 1.17-1.45x faster on VGG's shapes,
// 2 threads; inside a b128 VGG step, whose values come from memory, within noise).
template <bool kRelu>
FASTNN_ISA_BODY void sum_grads(const float* x, const float* g, float scale, float shift, int64_t n,
                               int64_t s, int64_t stride, float mean, Lanes* lanes) {
    double a[kLanes], b[kLanes];
    std::copy(lanes->a, lanes->a + kLanes, a);
    std::copy(lanes->b, lanes->b + kLanes, b);
    for (int64_t i = 0, p = 0; i < n; ++i) {
        const float* v = x + i * stride;
        const float* d = g + i * stride;
        int64_t j = 0;
        for (; j < s && (p + j) % kLanes != 0; ++j) {
            const float dj = grad_at<kRelu>(d, v, j, mean, scale, shift);
            a[(p + j) % kLanes] += dj;
            b[(p + j) % kLanes] += dj * (v[j] - mean);
        }
        for (; j + kLanes <= s; j += kLanes)
            for (int64_t l = 0; l < kLanes; ++l) {
                const float dj = grad_at<kRelu>(d, v, j + l, mean, scale, shift);
                a[l] += dj;
                b[l] += dj * (v[j + l] - mean);
            }
        for (; j < s; ++j) {
            const float dj = grad_at<kRelu>(d, v, j, mean, scale, shift);
            a[(p + j) % kLanes] += dj;
            b[(p + j) % kLanes] += dj * (v[j] - mean);
        }
        p += s;
    }
    std::copy(a, a + kLanes, lanes->a);
    std::copy(b, b + kLanes, lanes->b);
}

// One value per channel and row (s == 1, BatchNorm1d on (n, c)): channels [c0, c1) side
// by side, each channel's sums in row order in one accumulator: contiguous loads across
// channels instead of one value per cache line. a and b receive the sums.
constexpr int64_t kChannelBlock = 64;

FASTNN_ISA_BODY void sum_values_across(const float* x, int64_t n, int64_t c, int64_t c0,
                                       int64_t c1, const double* pivot, double* a, double* b) {
    std::fill(a, a + (c1 - c0), 0.0);
    std::fill(b, b + (c1 - c0), 0.0);
    for (int64_t i = 0; i < n; ++i) {
        const float* v = x + i * c + c0;
        for (int64_t k = 0; k < c1 - c0; ++k) {
            const double d = double(v[k]) - pivot[k];
            a[k] += d;
            b[k] += d * d;
        }
    }
}

// As sum_grads, for channels [c0, c1); scale and shift: the block's channels' (from c0), for kRelu.
template <bool kRelu>
FASTNN_ISA_BODY void sum_grads_across(const float* x, const float* g, const float* scale,
                                      const float* shift, int64_t n, int64_t c, int64_t c0,
                                      int64_t c1, const float* mean, double* a, double* b) {
    std::fill(a, a + (c1 - c0), 0.0);
    std::fill(b, b + (c1 - c0), 0.0);
    for (int64_t i = 0; i < n; ++i) {
        const float *v = x + i * c + c0, *d = g + i * c + c0;
        for (int64_t k = 0; k < c1 - c0; ++k) {
            const float dk = grad_at<kRelu>(d, v, k, mean[c0 + k], scale[k], shift[k]);
            a[k] += dk;
            b[k] += dk * (v[k] - mean[c0 + k]);
        }
    }
}

// y = (x - mean) scale + shift over a channel's values, in float (saved_affine); with kRelu,
// then the relu as activate() computes it (the relu's own pass over y had 1.5% of a VGG
// step's perf samples).
template <bool kRelu>
FASTNN_ISA_BODY void scale_shift(const float* x, float* y, int64_t n, int64_t s, int64_t stride,
                                 float mean, float scale, float shift) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < s; ++j) {
            const float v = (x[i * stride + j] - mean) * scale + shift;
            y[i * stride + j] = kRelu && v < 0.0f ? 0.0f : v;
        }
}

// dx = gain dy + (slope (x - mean) + offset) over a channel's values, in float (as torch):
// the channel's constants come from its double sums (see sum_grads for what it saved).
template <bool kRelu>
FASTNN_ISA_BODY void input_grad(const float* x, const float* g, float scale, float shift, float* d,
                                int64_t n, int64_t s, int64_t stride, float gain, float mean,
                                float slope, float offset) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < s; ++j) {
            const int64_t at = i * stride + j;
            d[at] = gain * grad_at<kRelu>(g, x, at, mean, scale, shift) + (slope * (x[at] - mean) + offset);
        }
}

// scale_shift and input_grad for one value per channel and row (s == 1), channels [c0, c1)
// side by side as sum_values_across: a channel at a time read one float per cache line
// (BatchNorm1d on (128, 512): 0.49x PyTorch). The same arithmetic per value.
template <bool kRelu>
FASTNN_ISA_BODY void scale_shift_across(const float* x, float* y, int64_t n, int64_t c, int64_t c0,
                                        int64_t c1, const float* mean, const float* scale,
                                        const float* shift) {
    for (int64_t i = 0; i < n; ++i) {
        const float* v = x + i * c + c0;
        float* out = y + i * c + c0;
        for (int64_t k = 0; k < c1 - c0; ++k) {
            const float r = (v[k] - mean[k]) * scale[k] + shift[k];
            out[k] = kRelu && r < 0.0f ? 0.0f : r;
        }
    }
}

template <bool kRelu>
FASTNN_ISA_BODY void input_grad_across(const float* x, const float* g, const float* scale,
                                       const float* shift, float* d, int64_t n, int64_t c, int64_t c0,
                                       int64_t c1, const float* gain, const float* mean,
                                       const float* slope, const float* offset) {
    for (int64_t i = 0; i < n; ++i) {
        const float *v = x + i * c + c0, *dy = g + i * c + c0;
        float* out = d + i * c + c0;
        for (int64_t k = 0; k < c1 - c0; ++k)
            out[k] = gain[k] * grad_at<kRelu>(dy, v, k, mean[k], scale[k], shift[k]) + (slope[k] * (v[k] - mean[k]) + offset[k]);
    }
}

}  // namespace

void batchnorm_forward(const float* x, const float* gamma, const float* beta, float* y,
                       int64_t n, int64_t c, int64_t s, float eps, bool training,
                       float momentum, float* running_mean, float* running_var,
                       float* save_mean, float* save_invstd, bool relu) {
    const int64_t count = n * s;
    const auto sums = IsaCopies<sum_values<true>>::pick();
    const auto sums_across = IsaCopies<sum_values_across>::pick();
    const auto apply = relu ? IsaCopies<scale_shift<true>>::pick() : IsaCopies<scale_shift<false>>::pick();
    const auto apply_across =
        relu ? IsaCopies<scale_shift_across<true>>::pick() : IsaCopies<scale_shift_across<false>>::pick();
    parallel_for(c, channel_grain(count), [=](int64_t c0, int64_t c1) {
        for (int64_t b0 = c0; b0 < c1; b0 += kChannelBlock) {
            const int64_t b1 = std::min(c1, b0 + kChannelBlock);
            double sum[kChannelBlock], sq[kChannelBlock], pivot[kChannelBlock];
            float center[kChannelBlock], scale[kChannelBlock], shift[kChannelBlock];
            for (int64_t ch = b0; ch < b1; ++ch)
                pivot[ch - b0] = training && count > 0 ? pivot_of(x[ch * s]) : 0.0;
            if (training && s == 1) sums_across(x, n, c, b0, b1, pivot, sum, sq);
            for (int64_t ch = b0; ch < b1; ++ch) {
                if (training && s > 1) {  // just before the channel's pass: its values still in L2
                    Lanes lanes;
                    sums(x + ch * s, n, s, c * s, pivot[ch - b0], &lanes);
                    sum[ch - b0] = lanes.total_a(), sq[ch - b0] = lanes.total_b();
                }
                const ChannelMap m = channel_map(training ? sum[ch - b0] : 0.0, training ? sq[ch - b0] : 0.0,
                                                 pivot[ch - b0], count, training, momentum, eps, running_mean,
                                                 running_var, gamma, beta, ch);
                save_mean[ch] = static_cast<float>(m.mean);
                save_invstd[ch] = static_cast<float>(m.invstd);
                if (s > 1)
                    apply(x + ch * s, y + ch * s, n, s, c * s, save_mean[ch], m.scale, m.shift);
                center[ch - b0] = save_mean[ch], scale[ch - b0] = m.scale, shift[ch - b0] = m.shift;
            }
            if (s == 1) apply_across(x, y, n, c, b0, b1, center, scale, shift);
        }
    });
}

void add_channel_sums(const float* x, int64_t n, int64_t c, int64_t s, float* sums) {
    const auto add = IsaCopies<sum_values<false>>::pick();
    parallel_for(c, channel_grain(n * s), [=](int64_t c0, int64_t c1) {
        for (int64_t ch = c0; ch < c1; ++ch) {
            Lanes lanes;
            add(x + ch * s, n, s, c * s, 0.0, &lanes);
            sums[ch] += static_cast<float>(lanes.total_a());
        }
    });
}

namespace {

template <bool kRelu>
void batchnorm_backward_body(const float* x, const float* gy, const float* gamma, const float* beta,
                             const float* save_mean, const float* save_invstd, float* dx,
                             float* dgamma, float* dbeta, float param_beta, int64_t n, int64_t c,
                             int64_t s, bool training) {
    const int64_t count = n * s;
    const auto sums = IsaCopies<sum_grads<kRelu>>::pick();
    const auto sums_across = IsaCopies<sum_grads_across<kRelu>>::pick();
    const auto grad = IsaCopies<input_grad<kRelu>>::pick();
    const auto grad_across = IsaCopies<input_grad_across<kRelu>>::pick();
    parallel_for(c, channel_grain(count), [=](int64_t c0, int64_t c1) {
        for (int64_t b0 = c0; b0 < c1; b0 += kChannelBlock) {
            const int64_t b1 = std::min(c1, b0 + kChannelBlock);
            double gsum[kChannelBlock], gxsum[kChannelBlock];  // sum(dy), sum(dy * (x - mean))
            float scale[kChannelBlock], shift[kChannelBlock];  // the forward's map (for kRelu)
            float gain[kChannelBlock], mean_f[kChannelBlock], slope[kChannelBlock], offset[kChannelBlock];
            for (int64_t ch = b0; ch < b1; ++ch)
                saved_affine(save_invstd[ch], gamma, beta, ch, scale[ch - b0], shift[ch - b0]);
            if (s == 1) sums_across(x, gy, scale, shift, n, c, b0, b1, save_mean, gsum, gxsum);
            for (int64_t ch = b0; ch < b1; ++ch) {
                if (s > 1) {  // just before the channel's pass, as the forward's sums
                    Lanes lanes;
                    sums(x + ch * s, gy + ch * s, scale[ch - b0], shift[ch - b0], n, s, c * s,
                         save_mean[ch], &lanes);
                    gsum[ch - b0] = lanes.total_a(), gxsum[ch - b0] = lanes.total_b();
                }
                const double mean = save_mean[ch], invstd = save_invstd[ch];
                const double sum_g = gsum[ch - b0], sum_gx = gxsum[ch - b0] * invstd;
                if (dgamma) dgamma[ch] = static_cast<float>(param_beta * dgamma[ch] + sum_gx);
                if (dbeta) dbeta[ch] = static_cast<float>(param_beta * dbeta[ch] + sum_g);
                if (!dx) continue;
                const double w = gamma ? gamma[ch] : 1.0;
                // training: dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)), the batch's
                // statistics depending on x; evaluation: dx = w invstd dy
                const double k = w * invstd, mg = training ? sum_g / double(count) : 0.0;
                const double mgx = training ? sum_gx / double(count) : 0.0;
                const int64_t j = ch - b0;
                gain[j] = static_cast<float>(k), mean_f[j] = static_cast<float>(mean);
                slope[j] = static_cast<float>(-k * invstd * mgx), offset[j] = static_cast<float>(-k * mg);
                if (s > 1)
                    grad(x + ch * s, gy + ch * s, scale[j], shift[j], dx + ch * s, n, s, c * s, gain[j],
                         mean_f[j], slope[j], offset[j]);
            }
            if (dx && s == 1)
                grad_across(x, gy, scale, shift, dx, n, c, b0, b1, gain, mean_f, slope, offset);
        }
    });
}

}  // namespace

void batchnorm_backward(const float* x, const float* gy, const float* gamma,
                        const float* save_mean, const float* save_invstd, float* dx,
                        float* dgamma, float* dbeta, float param_beta, int64_t n, int64_t c,
                        int64_t s, bool training, bool relu, const float* beta) {
    (relu ? batchnorm_backward_body<true> : batchnorm_backward_body<false>)(
        x, gy, gamma, beta, save_mean, save_invstd, dx, dgamma, dbeta, param_beta, n, c, s, training);
}

}  // namespace fastnn
