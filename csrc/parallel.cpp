#include "parallel.h"

#include <atomic>

namespace fastnn {

static int initial_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();  // honours OMP_NUM_THREADS
#else
    return 1;
#endif
}

static std::atomic<int> g_threads{initial_threads()};

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    if (!have_openmp()) n = 1;  // a build without OpenMP runs everything on the caller's thread
    g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed);
}

bool have_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

}  // namespace fastnn
