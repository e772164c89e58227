#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>

namespace fastnn {

int requested_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();  // honours OMP_NUM_THREADS
#else
    return 1;
#endif
}

int max_threads() {
    static const int cap = kThreadsPerCpu * static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return cap;
}

static std::atomic<int> g_threads{std::min(requested_threads(), max_threads())};

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    if (!have_openmp()) n = 1;  // a build without OpenMP runs everything on the caller's thread
    g_threads.store(std::clamp(n, 1, max_threads()), std::memory_order_relaxed);
}

bool have_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

}  // namespace fastnn
