// Batch normalization's per-channel step, written once for the CPU's loops (cpu/norm.cpp) and
// the GPU's blocks (cuda/norm.cu): from a channel's sums (training) or its running statistics
// (evaluation), the mean and 1/std used, the running statistics moved, and the affine map
// y = x * scale + shift.
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"

namespace fastnn {

struct ChannelMap {
    double mean, invstd;
    float scale, shift;
};

// The affine map from a channel's mean and 1/std as saved for backward (floats): the
// forward pass's own, so that the backward of a fused ReLU finds which outputs it zeroed from
// x, bit for bit, instead of reading the output back (a third of its reads).
FASTNN_HD inline void saved_affine(float mean, float invstd, const float* gamma, const float* beta,
                                   int64_t ch, float& scale, float& shift) {
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    scale = static_cast<float>(g * double(invstd));
    shift = static_cast<float>(b - double(mean) * g * double(invstd));
}

// Training: the batch's mean and biased variance from sum and sum_sq over count values, and
// the running statistics moved by momentum toward the mean and the unbiased variance, as torch.
FASTNN_HD inline ChannelMap channel_map(double sum, double sum_sq, int64_t count, bool training, float momentum,
                                        float eps, float* running_mean, float* running_var, const float* gamma,
                                        const float* beta, int64_t ch) {
    double mean, var;
    if (training) {
        mean = sum / double(count);
        const double biased = sum_sq / double(count) - mean * mean;
        var = biased < 0.0 ? 0.0 : biased;  // rounding can make it negative; a NaN stays
        const double unbiased = count > 1 ? var * double(count) / double(count - 1) : var;
        running_mean[ch] = static_cast<float>((1.0 - momentum) * running_mean[ch] + momentum * mean);
        running_var[ch] = static_cast<float>((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    } else {
        mean = running_mean[ch];
        var = running_var[ch];
    }
    const double invstd = 1.0 / std::sqrt(var + double(eps));
    float scale, shift;
    saved_affine(static_cast<float>(mean), static_cast<float>(invstd), gamma, beta, ch, scale, shift);
    return {mean, invstd, scale, shift};
}

}  // namespace fastnn
