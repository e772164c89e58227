// The column sum: the bias gradient (the bias itself is added by the GEMM epilogue).
#include "../ops.h"
#include "../parallel.h"

namespace fastnn {

void column_sum(const float* x, float* out, int64_t rows, int64_t cols, float beta) {
    // Threads split the columns and walk the rows in order: contiguous loads, and each
    // column is summed in the same order whatever the split.
    parallel_for(cols, std::max<int64_t>(16, (1 << 15) / std::max<int64_t>(rows, 1)),
                 [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) out[j] = beta == 0.0f ? 0.0f : beta * out[j];
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * cols;
            for (int64_t j = b; j < e; ++j) out[j] += xr[j];
        }
    });
}

}  // namespace fastnn
