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
void set_num_threads(int n);
bool have_openmp();

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

}  // namespace fastnn
