// The measured FMA peak, for config() and the benchmarks' share of peak.
#include <algorithm>
#include <chrono>

#include "gemm.h"

namespace fastnn {

// Best-of-rounds FMA rate of `uk`'s probe on `threads` threads for `seconds`: the machine
// is shared, so the best round is the one nothing else interrupted.
double measure_fma_peak(const Microkernel& uk, int threads, double seconds) {
    if (!uk.fma_probe) return 0.0;
    const int64_t iters = 1 << 18;
    double best = 0.0;
    const auto start = std::chrono::steady_clock::now();
    do {
        double flops = 0.0;
        const auto t0 = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : flops)
#endif
        for (int t = 0; t < threads; ++t) flops += uk.fma_probe(iters);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, flops / dt / 1e9);
    } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
    return best;
}

}  // namespace fastnn
