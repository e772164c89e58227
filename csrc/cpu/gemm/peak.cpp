// Measured peaks: the FMA peak, for config() and the benchmarks' share of peak, and the bf16
// dot products' (gemm_bf16.cpp's choice of path).
#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "../../parallel.h"
#include "gemm.h"

namespace fastnn {

// Best-of-rounds rate of `probe` on `threads` threads for `seconds`: the machine is shared,
// so the best round is the one nothing else interrupted.
double measure_peak(double (*probe)(int64_t iters), int threads, double seconds) {
    const int64_t iters = 1 << 18;
    if (threads > 1 && forked_after_team())  // its region would wait forever (parallel.h)
        throw std::runtime_error("the FMA peak on " + std::to_string(threads) + " threads cannot be "
                                 "measured in a process forked from inside a parallel region: "
                                 "OpenMP's threads do not survive a fork");
    if (threads > 1) note_team_started();
    double best = 0.0;
    const auto start = std::chrono::steady_clock::now();
    do {
        double flops = 0.0;
        const auto t0 = std::chrono::steady_clock::now();
        if (threads == 1) {  // no OpenMP region (a forked child has no team)
            flops = probe(iters);
        } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : flops)
#endif
            for (int t = 0; t < threads; ++t) flops += probe(iters);
        }
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, flops / dt / 1e9);
    } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
    return best;
}

double measure_fma_peak(const Microkernel& uk, int threads, double seconds) {
    return uk.fma_probe ? measure_peak(uk.fma_probe, threads, seconds) : 0.0;
}

}  // namespace fastnn
