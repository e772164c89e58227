// Losses: the mean loss (summed in fixed chunks, so thread-count independent) and its
// gradient with respect to the prediction, in one pass.
#include <algorithm>
#include <cmath>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "isa.h"
#include "vmath.h"

namespace fastnn {
namespace {

// Row chunk of about kSumChunk elements, fixed by the shape alone.
int64_t row_chunk(int64_t cols) { return std::max<int64_t>(1, kSumChunk / std::max<int64_t>(cols, 1)); }

// A row's log(sum(exp(x))) is max + log_sum; a loss term log(sum(exp(x))) - x[j] is taken as
// (max - x[j]) + log_sum, as torch's log_softmax: max + log_sum first rounds log_sum away
// where max is large (logits near 1e7: a loss of 0 instead of 0.41).
struct ShiftedExp {
    float max;      // max(x)
    float log_sum;  // log(sum(exp(x - max)))
    float inv_sum;  // 1 / sum(exp(x - max)): turns e into softmax(x)
    double minus(float xj) const { return static_cast<double>(max - xj) + log_sum; }
};

// Writes exp(x - max(x)) of one row into e.
FASTNN_ISA_BODY ShiftedExp shifted_exp(const float* x, float* e, int64_t cols) {
    const float mx = max_lanes(x, cols);
    for (int64_t j = 0; j < cols; ++j) e[j] = exp_f(x[j] - mx);
    const float sum = sum_lanes(e, cols);
    return {mx, std::log(sum), 1.0f / sum};
}

}  // namespace

double mse(const float* pred, const float* target, float* grad, int64_t n) {
    const float scale = 2.0f / static_cast<float>(n);
    double total = chunked_sum(n, kSumChunk, [&](int64_t b, int64_t e) {
        double s = 0.0;
        for (int64_t i = b; i < e; ++i) {
            float d = pred[i] - target[i];
            grad[i] = scale * d;
            s += static_cast<double>(d) * d;
        }
        return s;
    });
    return total / static_cast<double>(n);
}

double bce_with_logits(const float* z, const float* t, float* grad, int64_t n) {
    const float inv_n = 1.0f / static_cast<float>(n);
    double total = chunked_sum(n, kSumChunk, [&](int64_t b, int64_t e) {
        double s = 0.0;
        for (int64_t i = b; i < e; ++i) {
            // max(z, 0) - z t + log(1 + exp(-|z|)): no overflow for any z.
            float ez = std::exp(-std::fabs(z[i]));
            s += std::max(z[i], 0.0f) - z[i] * t[i] + std::log1p(ez);
            float sig = z[i] >= 0.0f ? 1.0f / (1.0f + ez) : ez / (1.0f + ez);
            grad[i] = (sig - t[i]) * inv_n;
        }
        return s;
    });
    return total / static_cast<double>(n);
}

double bce_probabilities(const float* p, const float* t, float* grad, int64_t n) {
    // As PyTorch: each log clamped at -100, the gradient's denominator at 1e-12.
    const float inv_n = 1.0f / static_cast<float>(n);
    double total = chunked_sum(n, kSumChunk, [&](int64_t b, int64_t e) {
        double s = 0.0;
        for (int64_t i = b; i < e; ++i) {
            float lp = std::max(std::log(p[i]), -100.0f);
            float lq = std::max(std::log1p(-p[i]), -100.0f);
            s -= t[i] * lp + (1.0f - t[i]) * lq;
            grad[i] = (p[i] - t[i]) / std::max(p[i] * (1.0f - p[i]), 1e-12f) * inv_n;
        }
        return s;
    });
    return total / static_cast<double>(n);
}

double cross_entropy(const float* logits, const int64_t* labels, float* grad, int64_t rows,
                     int64_t classes) {
    const auto row_exp = IsaCopies<shifted_exp>::pick();  // once: called row by row
    const float inv_rows = 1.0f / static_cast<float>(rows);
    double total = chunked_sum(rows, row_chunk(classes), [&](int64_t b, int64_t e) {
        double s = 0.0;
        for (int64_t r = b; r < e; ++r) {
            const float* x = logits + r * classes;
            float* g = grad + r * classes;
            ShiftedExp se = row_exp(x, g, classes);
            s += se.minus(x[labels[r]]);
            float scale = se.inv_sum * inv_rows;
            for (int64_t j = 0; j < classes; ++j) g[j] *= scale;   // softmax / rows
            g[labels[r]] -= inv_rows;
        }
        return s;
    });
    return total / static_cast<double>(rows);
}

double cross_entropy_soft(const float* logits, const float* target, float* grad, int64_t rows,
                          int64_t classes) {
    const auto row_exp = IsaCopies<shifted_exp>::pick();  // once: called row by row
    const float inv_rows = 1.0f / static_cast<float>(rows);
    double total = chunked_sum(rows, row_chunk(classes), [&](int64_t b, int64_t e) {
        double s = 0.0;
        for (int64_t r = b; r < e; ++r) {
            const float *x = logits + r * classes, *t = target + r * classes;
            float* g = grad + r * classes;
            ShiftedExp se = row_exp(x, g, classes);
            float mass = 0.0f;  // sum of the target row: 1 for a distribution
            for (int64_t j = 0; j < classes; ++j) {
                mass += t[j];
                s += t[j] * se.minus(x[j]);
            }
            float scale = mass * se.inv_sum * inv_rows;
            for (int64_t j = 0; j < classes; ++j) g[j] = g[j] * scale - t[j] * inv_rows;
        }
        return s;
    });
    return total / static_cast<double>(rows);
}

// One scalar pass over a few hundred values a training step, where NumPy's argmax, compare
// and sum were three calls (fit at batch 32, 2 threads: a 784-128-10 step 1.043x faster).
int64_t argmax_matches(const float* logits, const int64_t* labels, int64_t rows, int64_t classes) {
    int64_t matches = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const float* x = logits + r * classes;
        int64_t best = 0;
        for (int64_t j = 0; j < classes; ++j) {
            if (std::isnan(x[j])) {
                best = -1;  // a diverged model's row predicts nothing: a miss
                break;
            }
            if (x[j] > x[best]) best = j;
        }
        matches += best == labels[r];
    }
    return matches;
}

int64_t first_label_out_of_range(const int64_t* labels, int64_t n, int64_t classes) {
    // Blocks checked without a branch (vectorized; max pooling's backward checks every
    // index), the first bad label looked for in a failing block only. Unsigned, a negative
    // label is out of range too.
    constexpr int64_t kBlock = 1024;
    for (int64_t b = 0; b < n; b += kBlock) {
        const int64_t e = std::min(n, b + kBlock);
        bool bad = false;
        for (int64_t i = b; i < e; ++i) bad |= uint64_t(labels[i]) >= uint64_t(classes);
        if (bad)
            for (int64_t i = b; i < e; ++i)
                if (labels[i] < 0 || labels[i] >= classes) return i;
    }
    return -1;
}

}  // namespace fastnn
