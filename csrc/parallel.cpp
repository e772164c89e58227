#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <pthread.h>
#include <cstdlib>
#include <string>
#include <thread>
#include <time.h>

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
static std::atomic<bool> g_team_started{false}, g_forked_after_team{false}, g_pool_released{false};

void note_team_started() {
    if (!g_team_started.load(std::memory_order_relaxed)) g_team_started.store(true, std::memory_order_relaxed);
}

bool forked_after_team() { return g_forked_after_team.load(std::memory_order_relaxed); }

// GNU OpenMP keeps a pool of threads per thread that started a parallel region, and a
// fork() copies the pool but not its threads: the child's first region waited on them
// forever, whichever library had started the pool (fastnn, or PyTorch or any other user of
// the one libgomp in the process). The forking thread's pool is released before the fork
// (OpenMP 5.0's omp_pause_resource_all), so the child, and the parent at its next region,
// start a new one.
static void before_fork() {  // in the parent, in the forking thread
#ifdef _OPENMP
    g_pool_released.store(omp_pause_resource_all(omp_pause_soft) == 0, std::memory_order_relaxed);
#endif
}

static void fork_handler() {  // in the child, on fork()'s return
    // no pool to lose; else released unless the fork came from inside a parallel region
    if (!g_team_started.load(std::memory_order_relaxed) || g_pool_released.load(std::memory_order_relaxed)) return;
    g_forked_after_team.store(true, std::memory_order_relaxed);
    g_threads.store(1, std::memory_order_relaxed);
}
static const int g_fork_handler_registered = pthread_atfork(before_fork, nullptr, fork_handler);

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    if (!have_openmp() || forked_after_team()) n = 1;  // the caller's thread only (above)
    g_threads.store(std::clamp(n, 1, max_threads()), std::memory_order_relaxed);
}

std::string env_setting(const char* name) {
    const char* v = std::getenv(name);
    std::string s;
    for (const char* c = v ? v : ""; *c; ++c) s += static_cast<char>(std::tolower(static_cast<unsigned char>(*c)));
    const size_t b = s.find_first_not_of(" \t\n\r\f\v"), e = s.find_last_not_of(" \t\n\r\f\v");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// An on/off environment switch that is on unless set to 0, off, false or no (any case,
// spaces around); fastnn/__init__.py warns about any other value.
static bool switched_off(const char* name) {
    const std::string s = env_setting(name);
    return s == "0" || s == "off" || s == "false" || s == "no";
}

static std::atomic<bool> g_flush_denormals{!switched_off("FASTNN_FLUSH_DENORMALS")};

bool flush_denormals() { return g_flush_denormals.load(std::memory_order_relaxed); }
void set_flush_denormals(bool on) { g_flush_denormals.store(on, std::memory_order_relaxed); }

namespace load_guard {
namespace {

// A region is late when it outlasts its threads' summed work by more than this: far above
// a wake-up from spinning or from a futex (microseconds), below a scheduler time slice.
constexpr int64_t kLateSlackNs = 200'000;
// Threads runnable but off a CPU for more than the slack and an eighth of their time in a
// region: another program took their core (page faults and interrupts count as CPU time).
constexpr int64_t kOffCpuShare = 8;
// The regions after one that lasted this long read their threads' CPU time, and every
// kSampleEvery-th region: the clock is a system call (1.4 us on a Zen 3 guest), against a
// shortest region of a few microseconds.
constexpr int64_t kLongRegionNs = 1'000'000;
constexpr uint32_t kSampleEvery = 16;
// Cut the threads after this many late regions among the last 32.
constexpr int kLateToPause = 3;
// The first pause; it doubles (up to kMaxPauseNs) when the load is still there after one.
constexpr int64_t kFirstPauseNs = 100'000'000, kMaxPauseNs = 3'200'000'000;

const bool g_enabled = !switched_off("FASTNN_ADAPTIVE_THREADS");
// Races between Python threads calling kernels at once only blur these: it is a heuristic.
std::atomic<uint32_t> g_late_bits{0};  // bit i: whether the i-th last region was late
std::atomic<int> g_cap{0};             // the thread cap while paused
std::atomic<int64_t> g_paused_until{0}, g_pause_ns{kFirstPauseNs}, g_pauses{0};
std::atomic<uint32_t> g_regions{0};
std::atomic<bool> g_last_long{false};

}  // namespace

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

int64_t thread_cpu_ns() {
#ifdef CLOCK_THREAD_CPUTIME_ID
    timespec t;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0) return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
#endif
    return -1;
}

bool sample_cpu() {
    if (!g_enabled) return false;
    return g_last_long.load(std::memory_order_relaxed) ||
           g_regions.fetch_add(1, std::memory_order_relaxed) % kSampleEvery == 0;
}

int thread_cap(int threads) {
    if (threads <= 1 || g_paused_until.load(std::memory_order_relaxed) == 0) return threads;
    if (now_ns() >= g_paused_until.load(std::memory_order_relaxed)) return threads;
    return std::min(threads, g_cap.load(std::memory_order_relaxed));
}

void record(int threads, int64_t wall_ns, int64_t work_ns, int64_t cpu_ns) {
    if (!g_enabled) return;
    g_last_long.store(wall_ns >= kLongRegionNs, std::memory_order_relaxed);
    // cpu_ns < 0: not read, or no per-thread clock (each thread's reading then is -1 - -1)
    const int64_t off_cpu = cpu_ns > 0 ? work_ns - cpu_ns : 0;
    const bool late = wall_ns > work_ns + kLateSlackNs ||
                      (off_cpu > kLateSlackNs && kOffCpuShare * off_cpu > work_ns);
    const uint32_t bits = (g_late_bits.load(std::memory_order_relaxed) << 1) | (late ? 1u : 0u);
    g_late_bits.store(bits, std::memory_order_relaxed);
    if (!late || __builtin_popcount(bits) < kLateToPause) return;
    const int64_t now = now_ns(), until = g_paused_until.load(std::memory_order_relaxed);
    // Late again during a pause, or soon after one ended: the load is still there.
    int64_t pause = g_pause_ns.load(std::memory_order_relaxed);
    pause = now < until + 2 * pause ? std::min(2 * pause, kMaxPauseNs) : kFirstPauseNs;
    g_pause_ns.store(pause, std::memory_order_relaxed);
    g_cap.store(std::max(1, threads / 2), std::memory_order_relaxed);
    g_paused_until.store(now + pause, std::memory_order_relaxed);
    g_late_bits.store(0, std::memory_order_relaxed);
    g_pauses.fetch_add(1, std::memory_order_relaxed);
}

int64_t pauses() { return g_pauses.load(std::memory_order_relaxed); }

}  // namespace load_guard

bool have_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

}  // namespace fastnn
