// The CPU as fastnn sees it: vendor and model, the vector ISAs that the CPU and the OS both
// run, and the data caches (L1d, L2, L3) with their geometry. Read once, at load; the GEMM
// blocking model derives its block sizes from it (cpu/gemm/blocking.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fastnn {

struct CacheLevel {
    int level = 0;            // 1, 2, 3
    int64_t size_bytes = 0;
    int ways = 0;             // associativity
    int line_bytes = 64;
    int shared_by = 1;        // logical CPUs sharing this cache (0: unknown)
    int64_t sets() const { return size_bytes / (int64_t{ways} * line_bytes); }
};

struct CpuInfo {
    std::string vendor, model_name;
    int family = 0, model = 0, stepping = 0;
    // Usable: the CPU has it and the OS saves its registers (XCR0).
    bool avx2 = false, fma = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;
    std::vector<CacheLevel> caches;  // data or unified, by level: L1d first
    // Where the cache geometry came from: "cpuid", "sysfs", "sysconf", "default" or
    // "FASTNN_CACHE" (the override; `detected_caches` keeps what the machine reported).
    std::string cache_source;
    std::vector<CacheLevel> detected_caches;
    std::string cache_override_error;  // a FASTNN_CACHE that could not be parsed, or ""
};

// Detected once (thread-safe), FASTNN_CACHE applied.
const CpuInfo& cpu_info();

// A cache level's share of one logical CPU, in floats (`fallback` where none is reported).
int64_t cache_floats(int level, int64_t fallback);

// Parses a cache geometry "48K:12,2M:16,300M:15": per level from L1d, SIZE[:WAYS[:LINE]],
// SIZE an integer with an optional K, M or G (binary); WAYS defaults to 8, LINE to 64.
// Returns "" and fills `out`, or a message saying what is wrong.
std::string parse_cache_spec(const std::string& spec, std::vector<CacheLevel>& out);

// "48K:12:64,2M:16:64,300M:15:64": the inverse of parse_cache_spec, for keys and messages.
std::string cache_spec(const std::vector<CacheLevel>& caches);

}  // namespace fastnn
