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

// The map y = (x - mean) scale + shift from a channel's mean and 1/std as saved for backward
// (floats): the forward pass's own, so that the backward of a fused ReLU finds which outputs
// it zeroed from x, bit for bit, instead of reading the output back (a third of its reads).
// x - mean first, as torch: x scale + (beta - mean scale) lost the output where the mean is
// large beside the spread (1e5 +- 0.01: x scale near 1e7, float's spacing 1).
FASTNN_HD inline void saved_affine(float invstd, const float* gamma, const float* beta, int64_t ch,
                                   float& scale, float& shift) {
    const double g = gamma ? gamma[ch] : 1.0;
    scale = static_cast<float>(g * double(invstd));
    shift = beta ? beta[ch] : 0.0f;
}

// The value a channel's sums are taken from (pivot_of): its first one, near the mean. Sums of
// x and x^2 lost the variance to cancellation where the mean is large beside the spread
// (1e5 +- 0.01: 78% off, where torch's two passes were right); sums of d = x - pivot keep it,
// d exact in double. A non-finite first value is no pivot: 0 then, as before.
FASTNN_HD inline double pivot_of(float first) { return std::isfinite(first) ? double(first) : 0.0; }

// Training: the batch's mean and biased variance from sum and sum_sq of (x - pivot) over
// count values, and the running statistics moved by momentum toward the mean and the
// unbiased variance, as torch.
FASTNN_HD inline ChannelMap channel_map(double sum, double sum_sq, double pivot, int64_t count, bool training,
                                        float momentum, float eps, float* running_mean, float* running_var,
                                        const float* gamma, const float* beta, int64_t ch) {
    double mean, var;
    if (training) {
        const double shifted = sum / double(count);
        mean = pivot + shifted;
        const double biased = sum_sq / double(count) - shifted * shifted;
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
    saved_affine(static_cast<float>(invstd), gamma, beta, ch, scale, shift);
    return {mean, invstd, scale, shift};
}

}  // namespace fastnn
