// Reductions, gathers and in-place elementwise helpers: the bias gradient (column_sum; the bias
// itself is added by the GEMM epilogue), squared norms for gradient clipping, scale, axpby, clip.
#include <algorithm>
#include <cmath>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "isa.h"
#include "vmath.h"

namespace fastnn {

void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float beta) {
    column_sums_by_row_blocks(rows, cols, beta, out, [=](int64_t r, float* s) {
        const float* xr = x + r * cols;
        for (int64_t j = 0; j < cols; ++j) s[j] += xr[j];
    });
}

void gather_rows(const float* x, const int64_t* idx, float* out, int64_t n, int64_t cols) {
    parallel_for(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                 [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
            std::copy(x + idx[i] * cols, x + (idx[i] + 1) * cols, out + i * cols);
    });
}

namespace {

FASTNN_ISA_BODY double sum_squares_range(const float* x, int64_t n) {
    return sum_lanes_f64(0, n, [=](int64_t i) { return static_cast<double>(x[i]) * x[i]; });
}

FASTNN_ISA_BODY double sum_abs_range(const float* x, int64_t n) {
    return sum_lanes_f64(0, n, [=](int64_t i) { return std::fabs(static_cast<double>(x[i])); });
}

}  // namespace

double sum_squares(const float* x, int64_t n) {
    const auto range = IsaCopies<sum_squares_range>::pick();
    return chunked_sum(n, kSumChunk, [=](int64_t b, int64_t e) { return range(x + b, e - b); });
}

double sum_abs(const float* x, int64_t n) {
    const auto range = IsaCopies<sum_abs_range>::pick();
    return chunked_sum(n, kSumChunk, [=](int64_t b, int64_t e) { return range(x + b, e - b); });
}

void scale(float* x, int64_t n, float factor) {
    // Captured by value (here and below): the stores cannot alias the scalars, so it vectorizes.
    parallel_for(n, kGrain, [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) x[i] *= factor;
    });
}

void axpby(float* y, const float* x, int64_t n, float a, float b) {
    parallel_for(n, kGrain, [=](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) y[i] = a * y[i] + b * x[i];
    });
}

void clip(float* x, int64_t n, float low, float high) {
    // std::max(x, low) keeps a NaN x (the comparison is false), so NaNs pass through
    // as in torch.clamp rather than being hidden.
    parallel_for(n, kGrain, [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) x[i] = std::min(std::max(x[i], low), high);
    });
}

}  // namespace fastnn
