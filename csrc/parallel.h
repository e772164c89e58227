// OpenMP helpers: the library-wide thread count and fixed work partitioning.
// Results never depend on the thread count: work is split into ranges whose
// per-element arithmetic is independent of the split, and reductions use
// fixed-size chunks summed in a fixed order (see chunked_sum).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/work_split.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace fastnn {

int get_num_threads();
// An environment variable's value as the FASTNN_ settings read it: lowercased, ASCII spaces
// around removed ("" when unset); fastnn/__init__.py strips the same spaces.
std::string env_setting(const char* name);
void set_num_threads(int n);  // clamped to [1, max_threads()]; to 1 in a child forked from a parallel region (below)
bool have_openmp();

// GNU OpenMP's thread pool does not survive fork(): in the child, the first parallel region
// waited forever for threads that are not there (a multiprocessing pool with the fork start
// method hung on its first batch). The forking thread's pool is released before every fork
// (parallel.cpp); where that fails (a fork from inside a parallel region) after fastnn's
// regions ran, the child runs every kernel on its own thread.
void note_team_started();  // a region starts on several threads (parallel_region)
bool forked_after_team();  // whether this process is such a child

// The most threads the kernels take: kThreadsPerCpu per online CPU. Oversubscribing a few
// times is allowed (to test thread-count independence on a small machine); beyond that
// libgomp's thread creation fails and the process dies. OMP_NUM_THREADS is clamped to it.
constexpr int kThreadsPerCpu = 4;
int max_threads();
// The thread count OMP_NUM_THREADS (or OpenMP's default) asked for, before clamping.
int requested_threads();

// Oversubscription guard. When another program keeps a core busy, a worker thread that
// shares that core waits for a scheduler time slice (milliseconds) before it runs, and a
// fork/join region of microseconds then lasts milliseconds: training ran 25-30x slower.
// In a region of milliseconds, the thread that shares the core runs at half speed or less
// while its equal share of the work holds up the others: a VGG step beside a busy loop on one
// core, other programs running too, ran 2x slower on two threads than on one (Zen 3, 2 vCPUs;
// 217 against 106 ms; with this reading, 110 against 108). Every region times its threads; one
// that took longer than its threads' work added up (what a single thread would have needed)
// by more than a wake-up counts as late, and so does one whose threads spent much of their
// time runnable but off a CPU (their CPU time against their wall time; read on the regions
// after a long one and on every 16th, as the clock costs a system call). A few late regions
// among the last ones and the library halves its threads for a while (again, and for longer,
// while the load lasts), then tries all of them again. Results do not depend on the thread
// count, so this changes only the speed.
// FASTNN_ADAPTIVE_THREADS=0 (or off, false, no) turns it off.
namespace load_guard {
int64_t now_ns();
int64_t thread_cpu_ns();                       // the calling thread's CPU time (-1: no such clock)
bool sample_cpu();                             // whether this region reads its threads' CPU time
int thread_cap(int threads);                   // the threads to use now, of `threads`
// One region on `threads`: its wall time, its threads' summed wall times inside it, and
// their summed CPU time (-1 when not read)
void record(int threads, int64_t wall_ns, int64_t work_ns, int64_t cpu_ns);
int64_t pauses();                              // how often it cut the threads, since the start
}  // namespace load_guard

// Threads worth using for `work` units when each thread should get at least `grain`.
inline int threads_for(int64_t work, int64_t grain) {
    int64_t t = grain > 0 ? work / grain : work;
    if (t <= 1) return 1;
#ifdef _OPENMP
    if (omp_in_parallel()) return 1;  // a kernel called by a kernel's thread (conv's GEMMs)
#endif
    const int max_t = load_guard::thread_cap(get_num_threads());
    return t < max_t ? static_cast<int>(t) : max_t;
}

// Denormal floats (below 2^-126 = 1.2e-38) are flushed to zero inside the kernels, as
// TensorFlow does by default and torch.set_flush_denormal(True) does: an Intel core takes a
// microcode assist for every denormal result, 16-27x the time of the operation (a vector
// multiply or FMA on a Xeon with AMX), and training makes them routinely (Adam's first moment
// of a weight whose gradient stays zero, behind a dead ReLU, decays by beta1 each step and
// spends ~150 steps in the denormal range: its step took 1.1 ms instead of 0.19 ms). Results
// differ from IEEE gradual underflow only below 1.2e-38. set_flush_denormals(false) or
// FASTNN_FLUSH_DENORMALS=0 (or off, false, no) keeps IEEE behaviour. MXCSR is per thread, so every thread of a
// region sets it (FTZ and DAZ) for the region and restores the caller's on the way out.
bool flush_denormals();
void set_flush_denormals(bool on);

class DenormalScope {
  public:
#if defined(__x86_64__) || defined(_M_X64)
    DenormalScope() {
        if (!flush_denormals()) return;
        saved_ = _mm_getcsr();
        if ((saved_ & kFtzDaz) != kFtzDaz) _mm_setcsr(saved_ | kFtzDaz);
    }
    ~DenormalScope() {
        if ((saved_ & kFtzDaz) != kFtzDaz) _mm_setcsr(saved_);
    }
#else
    DenormalScope() = default;  // other architectures: IEEE behaviour (not measured there)
#endif
    DenormalScope(const DenormalScope&) = delete;
    DenormalScope& operator=(const DenormalScope&) = delete;

  private:
#if defined(__x86_64__) || defined(_M_X64)
    static constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bits 15 (flush to zero), 6 (denormals are zero)
    unsigned saved_ = kFtzDaz;                   // as if already set: nothing to restore
#endif
};

// f(thread_id, thread_count) on `threads` threads (the caller's alone when 1), timed for
// the oversubscription guard. Every kernel's parallel region goes through here.
template <class F>
void parallel_region(int threads, F&& f) {
#ifdef _OPENMP
    if (threads > 1) {
        note_team_started();
        std::atomic<int64_t> work{0}, cpu{0};
        const bool sample = load_guard::sample_cpu();
        const int64_t t0 = load_guard::now_ns();
#pragma omp parallel num_threads(threads)
        {
            const int64_t start = load_guard::now_ns();
            const int64_t cpu_start = sample ? load_guard::thread_cpu_ns() : 0;
            {
                DenormalScope denormals;
                f(omp_get_thread_num(), omp_get_num_threads());
            }
            if (sample) cpu.fetch_add(load_guard::thread_cpu_ns() - cpu_start, std::memory_order_relaxed);
            work.fetch_add(load_guard::now_ns() - start, std::memory_order_relaxed);
        }
        load_guard::record(threads, load_guard::now_ns() - t0, work.load(std::memory_order_relaxed),
                           sample ? cpu.load(std::memory_order_relaxed) : -1);
        return;
    }
#endif
    (void)threads;
    DenormalScope denormals;
    f(0, 1);
}

// f(begin, end) over a static contiguous split of [0, n).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
    if (n <= 0) return;
    parallel_region(threads_for(n, grain), [&](int64_t id, int64_t nt) {
        int64_t begin = n * id / nt, end = n * (id + 1) / nt;
        if (begin < end) f(begin, end);
    });
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
    const int64_t blocks = (rows + kColumnSumRows - 1) / kColumnSumRows;
    std::vector<float> partial(static_cast<size_t>(blocks * cols), 0.0f);
    float* part = partial.data();
    parallel_for(blocks, std::max<int64_t>(1, kGrain / (kColumnSumRows * std::max<int64_t>(cols, 1))),
                 [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t r = b * kColumnSumRows; r < std::min(rows, (b + 1) * kColumnSumRows); ++r)
                add_row(r, part + b * cols);
    });
    for (int64_t j = 0; j < cols; ++j) out[j] = beta == 0.0f ? 0.0f : beta * out[j];
    for (int64_t b = 0; b < blocks; ++b) {
        const float* p = part + b * cols;
        for (int64_t j = 0; j < cols; ++j) out[j] += p[j];
    }
}

}  // namespace fastnn
