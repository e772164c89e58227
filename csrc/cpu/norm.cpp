// Batch normalization over the channels of (n, c, s) data (BatchNorm1d: s = 1 or L;
// BatchNorm2d: s = H x W), as torch.nn.functional.batch_norm: training normalizes by the
// batch's mean and biased variance and moves the running statistics by `momentum` toward
// the batch's mean and unbiased variance; evaluation uses the running ones. Each channel's
// sums are taken in double, in one pass over its values, by one thread, in a fixed order:
// the same bits whatever the thread count. These loops are the reference themselves.
#include <algorithm>
#include <cmath>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"

namespace fastnn {

namespace {

int64_t channel_grain(int64_t values) {
    return std::max<int64_t>(1, kGrain / std::max<int64_t>(values, 1));
}

}  // namespace

void batchnorm_forward(const float* x, const float* gamma, const float* beta, float* y,
                       int64_t n, int64_t c, int64_t s, float eps, bool training,
                       float momentum, float* running_mean, float* running_var,
                       float* save_mean, float* save_invstd) {
    const int64_t count = n * s;
    parallel_for(c, channel_grain(count), [=](int64_t c0, int64_t c1) {
        for (int64_t ch = c0; ch < c1; ++ch) {
            double mean, var;
            if (training) {
                double sum = 0.0, sq = 0.0;
                for (int64_t i = 0; i < n; ++i) {
                    const float* v = x + (i * c + ch) * s;
                    for (int64_t j = 0; j < s; ++j) {
                        sum += v[j];
                        sq += double(v[j]) * v[j];
                    }
                }
                mean = sum / double(count);
                var = std::max(sq / double(count) - mean * mean, 0.0);
                const double unbiased = count > 1 ? var * double(count) / double(count - 1) : var;
                running_mean[ch] = static_cast<float>((1.0 - momentum) * running_mean[ch] + momentum * mean);
                running_var[ch] = static_cast<float>((1.0 - momentum) * running_var[ch] + momentum * unbiased);
            } else {
                mean = running_mean[ch];
                var = running_var[ch];
            }
            const double invstd = 1.0 / std::sqrt(var + double(eps));
            save_mean[ch] = static_cast<float>(mean);
            save_invstd[ch] = static_cast<float>(invstd);
            // y = x * scale + shift, with scale and shift in float: one multiply-add per value
            const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
            const float scale = static_cast<float>(g * invstd);
            const float shift = static_cast<float>(b - mean * g * invstd);
            for (int64_t i = 0; i < n; ++i) {
                const float* v = x + (i * c + ch) * s;
                float* out = y + (i * c + ch) * s;
                for (int64_t j = 0; j < s; ++j) out[j] = v[j] * scale + shift;
            }
        }
    });
}

void batchnorm_backward(const float* x, const float* gy, const float* gamma,
                        const float* save_mean, const float* save_invstd, float* dx,
                        float* dgamma, float* dbeta, float param_beta, int64_t n, int64_t c,
                        int64_t s, bool training) {
    const int64_t count = n * s;
    parallel_for(c, channel_grain(count), [=](int64_t c0, int64_t c1) {
        for (int64_t ch = c0; ch < c1; ++ch) {
            const double mean = save_mean[ch], invstd = save_invstd[ch];
            double sum_g = 0.0, sum_gx = 0.0;  // sum(dy), sum(dy * xhat)
            for (int64_t i = 0; i < n; ++i) {
                const float* v = x + (i * c + ch) * s;
                const float* g = gy + (i * c + ch) * s;
                for (int64_t j = 0; j < s; ++j) {
                    sum_g += g[j];
                    sum_gx += double(g[j]) * ((v[j] - mean) * invstd);
                }
            }
            if (dgamma) dgamma[ch] = static_cast<float>(param_beta * dgamma[ch] + sum_gx);
            if (dbeta) dbeta[ch] = static_cast<float>(param_beta * dbeta[ch] + sum_g);
            if (!dx) continue;
            const double w = gamma ? gamma[ch] : 1.0;
            // training: dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)), the batch's
            // statistics depending on x; evaluation: dx = w invstd dy
            const double k = w * invstd, mg = training ? sum_g / double(count) : 0.0;
            const double mgx = training ? sum_gx / double(count) : 0.0;
            for (int64_t i = 0; i < n; ++i) {
                const float* v = x + (i * c + ch) * s;
                const float* g = gy + (i * c + ch) * s;
                float* d = dx + (i * c + ch) * s;
                for (int64_t j = 0; j < s; ++j)
                    d[j] = static_cast<float>(k * (g[j] - mg - (v[j] - mean) * invstd * mgx));
            }
        }
    });
}

}  // namespace fastnn
