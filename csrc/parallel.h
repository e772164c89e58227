// OpenMP helpers: the library-wide thread count and fixed work partitioning.
// Results never depend on the thread count: work is split into ranges whose
// per-element arithmetic is independent of the split, and reductions use
// fixed-size chunks summed in a fixed order (see chunked_sum).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastnn {

int get_num_threads();
void set_num_threads(int n);  // clamped to [1, max_threads()]
bool have_openmp();

// The most threads the kernels take: kThreadsPerCpu per online CPU. Oversubscribing a few
// times is allowed (to test thread-count independence on a small machine); beyond that
// libgomp's thread creation fails and the process dies. OMP_NUM_THREADS is clamped to it.
constexpr int kThreadsPerCpu = 4;
int max_threads();
// The thread count OMP_NUM_THREADS (or OpenMP's default) asked for, before clamping.
int requested_threads();

// Threads worth using for `work` units when each thread should get at least `grain`.
inline int threads_for(int64_t work, int64_t grain) {
    int64_t t = grain > 0 ? work / grain : work;
    int max_t = get_num_threads();
    if (t < 1) t = 1;
    return t < max_t ? static_cast<int>(t) : max_t;
}

// f(begin, end) over a static contiguous split of [0, n).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
    int t = threads_for(n, grain);
    if (t <= 1) {
        if (n > 0) f(int64_t{0}, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(t)
    {
        int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t begin = n * id / nt, end = n * (id + 1) / nt;
        if (begin < end) f(begin, end);
    }
#else
    f(int64_t{0}, n);
#endif
}

// Sum of chunk(begin, end) over fixed chunks of `chunk` items, added in index order,
// so the result is bit-identical whatever the thread count.
template <class F>
double chunked_sum(int64_t n, int64_t chunk, F&& partial) {
    int64_t chunks = (n + chunk - 1) / chunk;
    std::vector<double> parts(static_cast<size_t>(chunks > 0 ? chunks : 0));
    // A thread takes at least 64 Ki items: waking one costs more than summing fewer.
    parallel_for(chunks, std::max<int64_t>(1, (int64_t{1} << 16) / chunk), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            int64_t lo = i * chunk, hi = lo + chunk < n ? lo + chunk : n;
            parts[static_cast<size_t>(i)] = partial(lo, hi);
        }
    });
    double total = 0.0;
    for (double p : parts) total += p;
    return total;
}

// out[j] = beta * out[j] + (sum over rows r of row r's values at j), where add_row(r, s)
// adds row r's cols values into s. Threads take blocks of rows, as the row-parallel kernels
// that wrote the inputs did, so each mostly reads what its own core wrote (a column split
// made every thread fetch half its input from the other core: 3.5x slower in a training
// step). Rows are summed in fixed blocks of 32 and the blocks then added in order, so the
// result does not depend on the thread count.
template <class F>
void column_sums_by_row_blocks(int64_t rows, int64_t cols, float beta, float* out, F&& add_row) {
    constexpr int64_t kBlock = 32;
    const int64_t blocks = (rows + kBlock - 1) / kBlock;
    std::vector<float> partial(static_cast<size_t>(blocks * cols), 0.0f);
    float* part = partial.data();
    parallel_for(blocks, std::max<int64_t>(1, (int64_t{1} << 15) / (kBlock * std::max<int64_t>(cols, 1))),
                 [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t r = b * kBlock; r < std::min(rows, (b + 1) * kBlock); ++r)
                add_row(r, part + b * cols);
    });
    for (int64_t j = 0; j < cols; ++j) out[j] = beta == 0.0f ? 0.0f : beta * out[j];
    for (int64_t b = 0; b < blocks; ++b) {
        const float* p = part + b * cols;
        for (int64_t j = 0; j < cols; ++j) out[j] += p[j];
    }
}

}  // namespace fastnn
