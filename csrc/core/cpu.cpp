// CPU detection. Caches come from cpuid (leaf 4 on Intel, 0x8000001D on AMD), which works
// in any container; then from /sys/devices/system/cpu/cpuN/cache (other architectures, or
// a hypervisor that hides the leaves), then from sysconf, then from a conservative default;
// the first two read on (or for) the first CPU the process may run on (OnFirstCpu).
#include "cpu.h"

#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FASTNN_HAVE_CPUID 1
#endif

namespace fastnn {
namespace {

#ifdef FASTNN_HAVE_CPUID
struct Regs {
    unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
    Regs r;
    if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) return Regs{};
    return r;
}

uint64_t xcr0() {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t{hi} << 32) | lo;
}

void read_identity(CpuInfo& info) {
    Regs r0 = cpuid(0);
    char vendor[13] = {};
    std::memcpy(vendor, &r0.b, 4);
    std::memcpy(vendor + 4, &r0.d, 4);
    std::memcpy(vendor + 8, &r0.c, 4);
    info.vendor = vendor;
    const unsigned max_leaf = r0.a;

    Regs r1 = cpuid(1);
    const unsigned base_family = (r1.a >> 8) & 0xF, base_model = (r1.a >> 4) & 0xF;
    info.family = static_cast<int>(base_family == 0xF ? base_family + ((r1.a >> 20) & 0xFF) : base_family);
    info.model = static_cast<int>(base_family >= 0x6 ? base_model | (((r1.a >> 16) & 0xF) << 4) : base_model);
    info.stepping = static_cast<int>(r1.a & 0xF);

    if (cpuid(0x80000000).a >= 0x80000004) {
        char brand[49] = {};
        for (unsigned i = 0; i < 3; ++i) {
            Regs r = cpuid(0x80000002 + i);
            std::memcpy(brand + 16 * i, &r, 16);
        }
        std::string name = brand;
        const size_t first = name.find_first_not_of(' '), last = name.find_last_not_of(' ');
        info.model_name = first == std::string::npos ? "" : name.substr(first, last - first + 1);
    }

    // The OS must save the registers: XMM|YMM for AVX2, plus opmask|ZMM_Hi256|Hi16_ZMM for
    // AVX-512, plus XTILECFG|XTILEDATA for AMX.
    const bool osxsave = (r1.c >> 27) & 1;
    const uint64_t xcr = osxsave ? xcr0() : 0;
    const bool os_avx = (xcr & 0x6) == 0x6, os_avx512 = os_avx && (xcr & 0xE0) == 0xE0;
    const bool os_amx = (xcr & 0x60000) == 0x60000;
    Regs r7 = max_leaf >= 7 ? cpuid(7, 0) : Regs{};
    Regs r71 = max_leaf >= 7 && r7.a >= 1 ? cpuid(7, 1) : Regs{};
    info.fma = os_avx && ((r1.c >> 12) & 1);
    info.avx2 = os_avx && ((r7.b >> 5) & 1);
    info.avx512f = os_avx512 && ((r7.b >> 16) & 1);
    info.avx512_bf16 = info.avx512f && ((r71.a >> 5) & 1);
    info.amx_bf16 = os_amx && ((r7.d >> 22) & 1);
}

// Deterministic cache parameters: leaf 4 (Intel) or 0x8000001D (AMD, with topology
// extensions) share one layout.
std::vector<CacheLevel> caches_from_cpuid(const CpuInfo& info) {
    unsigned leaf = 0;
    if (info.vendor == "GenuineIntel" && cpuid(0).a >= 4) {
        leaf = 4;
    } else if (info.vendor == "AuthenticAMD" || info.vendor == "HygonGenuine") {
        const bool topoext = (cpuid(0x80000001).c >> 22) & 1;
        if (topoext && cpuid(0x80000000).a >= 0x8000001D) leaf = 0x8000001D;
    }
    std::vector<CacheLevel> out;
    if (!leaf) return out;
    for (unsigned sub = 0; sub < 16; ++sub) {
        Regs r = cpuid(leaf, sub);
        const unsigned type = r.a & 0x1F;
        if (type == 0) break;
        if (type == 2) continue;  // instruction cache
        CacheLevel c;
        c.level = static_cast<int>((r.a >> 5) & 0x7);
        c.line_bytes = static_cast<int>((r.b & 0xFFF) + 1);
        const int64_t partitions = ((r.b >> 12) & 0x3FF) + 1;
        c.ways = static_cast<int>(((r.b >> 22) & 0x3FF) + 1);
        const int64_t sets = int64_t{r.c} + 1;
        c.size_bytes = c.ways * partitions * c.line_bytes * sets;
        c.shared_by = static_cast<int>(((r.a >> 14) & 0xFFF) + 1);
        if ((r.a >> 9) & 1) c.ways = static_cast<int>(sets);  // fully associative: one set
        out.push_back(c);
    }
    return out;
}
#endif

std::string read_line(const std::string& path) {
    std::ifstream f(path);
    std::string s;
    std::getline(f, s);
    return s;
}

int64_t parse_size(const std::string& s) {  // "48K", "2048K", "32M", "512": at most 2^40 bytes
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || v <= 0) return 0;
    if (*end && end[1]) return 0;  // one suffix letter at most
    int shift = 0;
    switch (std::toupper(static_cast<unsigned char>(*end))) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case '\0': break;
        default: return 0;
    }
    // checked before the shift: 17179869185G had wrapped to 1G (a signed overflow)
    return v > ((1LL << 40) >> shift) ? 0 : v << shift;
}

int count_cpus(const std::string& list) {  // "0-3,8-11" -> 8
    int count = 0;
    std::stringstream ss(list);
    std::string part;
    while (std::getline(ss, part, ',')) {
        if (part.empty()) continue;
        const size_t dash = part.find('-');
        int lo = std::atoi(part.c_str());
        int hi = dash == std::string::npos ? lo : std::atoi(part.c_str() + dash + 1);
        if (hi >= lo) count += hi - lo + 1;
    }
    return count;
}

// The first CPU this thread may run on, and this thread held there while the object lives
// (its affinity given back after). A CPU with two kinds of cores (Intel's performance and
// efficiency cores, AMD's Zen 5 and Zen 5c) has two cache geometries, and cpuid describes
// the core it runs on: the blocking, so the products' rounding and the tuning file's key,
// had followed whichever core the import ran on.
class OnFirstCpu {
public:
#ifdef __linux__
    OnFirstCpu() {
        if (sched_getaffinity(0, sizeof saved_, &saved_) != 0) return;  // over 1024 CPUs: as is
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &saved_)) {
                cpu_ = c;
                break;
            }
        if (CPU_COUNT(&saved_) < 2) return;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu_, &one);
        pinned_ = sched_setaffinity(0, sizeof one, &one) == 0;
    }
    ~OnFirstCpu() {
        if (pinned_) sched_setaffinity(0, sizeof saved_, &saved_);
    }
#else
    OnFirstCpu() = default;
#endif
    OnFirstCpu(const OnFirstCpu&) = delete;
    OnFirstCpu& operator=(const OnFirstCpu&) = delete;
    int cpu() const { return cpu_; }

private:
#ifdef __linux__
    cpu_set_t saved_;
    bool pinned_ = false;
#endif
    int cpu_ = 0;
};

std::vector<CacheLevel> caches_from_sysfs(int cpu) {
    std::vector<CacheLevel> out;
    for (int index = 0; index < 16; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/cache/index" +
                                std::to_string(index) + "/";
        const std::string type = read_line(dir + "type");
        if (type.empty()) break;
        if (type == "Instruction") continue;
        CacheLevel c;
        c.level = std::atoi(read_line(dir + "level").c_str());
        c.size_bytes = parse_size(read_line(dir + "size"));
        c.ways = std::atoi(read_line(dir + "ways_of_associativity").c_str());
        c.line_bytes = std::atoi(read_line(dir + "coherency_line_size").c_str());
        c.shared_by = count_cpus(read_line(dir + "shared_cpu_list"));
        if (c.line_bytes <= 0) c.line_bytes = 64;
        if (c.level > 0 && c.size_bytes > 0 && c.ways > 0) out.push_back(c);
    }
    return out;
}

std::vector<CacheLevel> caches_from_sysconf() {
    std::vector<CacheLevel> out;
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    const int names[3][3] = {
        {_SC_LEVEL1_DCACHE_SIZE, _SC_LEVEL1_DCACHE_ASSOC, _SC_LEVEL1_DCACHE_LINESIZE},
        {_SC_LEVEL2_CACHE_SIZE, _SC_LEVEL2_CACHE_ASSOC, _SC_LEVEL2_CACHE_LINESIZE},
        {_SC_LEVEL3_CACHE_SIZE, _SC_LEVEL3_CACHE_ASSOC, _SC_LEVEL3_CACHE_LINESIZE}};
    for (int level = 0; level < 3; ++level) {
        CacheLevel c;
        c.level = level + 1;
        c.size_bytes = sysconf(names[level][0]);
        c.ways = static_cast<int>(sysconf(names[level][1]));
        c.line_bytes = static_cast<int>(sysconf(names[level][2]));
        c.shared_by = 0;
        if (c.line_bytes <= 0) c.line_bytes = 64;
        if (c.size_bytes > 0 && c.ways > 0) out.push_back(c);
    }
#endif
    return out;
}

// Keeps L1d, L2, L3 in order, each once; a geometry with no L1d is unusable.
bool usable(std::vector<CacheLevel>& caches) {
    std::vector<CacheLevel> kept;
    for (int level = 1; level <= 3; ++level)
        for (const CacheLevel& c : caches)
            if (c.level == level && c.size_bytes > 0 && c.ways > 0 && c.sets() > 0) {
                kept.push_back(c);
                break;
            }
    caches = kept;
    return !caches.empty() && caches[0].level == 1;
}

CpuInfo detect() {
    CpuInfo info;
    const OnFirstCpu first;
#ifdef FASTNN_HAVE_CPUID
    read_identity(info);
    info.caches = caches_from_cpuid(info);
    info.cache_source = "cpuid";
#endif
    if (!usable(info.caches)) {
        info.caches = caches_from_sysfs(first.cpu());
        info.cache_source = "sysfs";
    }
    if (!usable(info.caches)) {
        info.caches = caches_from_sysconf();
        info.cache_source = "sysconf";
    }
    if (!usable(info.caches)) {  // 32 KiB 8-way, 512 KiB 8-way, 8 MiB 16-way: a small modern core
        info.caches = {{1, 32 << 10, 8, 64, 1}, {2, 512 << 10, 8, 64, 1}, {3, 8 << 20, 16, 64, 0}};
        info.cache_source = "default";
    }
    if (info.model_name.empty()) {  // not x86, or no brand string: what the kernel says
        std::ifstream f("/proc/cpuinfo");
        std::string line;
        while (std::getline(f, line)) {
            if (line.rfind("model name", 0) == 0 || line.rfind("Processor", 0) == 0) {
                const size_t colon = line.find(':');
                if (colon != std::string::npos) info.model_name = line.substr(line.find_first_not_of(" \t", colon + 1));
                break;
            }
        }
    }
    info.detected_caches = info.caches;
    if (const char* spec = std::getenv("FASTNN_CACHE"); spec && *spec) {
        std::vector<CacheLevel> forced;
        info.cache_override_error = parse_cache_spec(spec, forced);
        if (info.cache_override_error.empty()) {
            info.caches = forced;
            info.cache_source = "FASTNN_CACHE";
        }
    }
    return info;
}

}  // namespace

const CpuInfo& cpu_info() {
    static const CpuInfo info = detect();
    return info;
}

std::string parse_cache_spec(const std::string& spec, std::vector<CacheLevel>& out) {
    out.clear();
    std::stringstream levels(spec);
    std::string part;
    while (std::getline(levels, part, ',')) {
        const std::string where = "level " + std::to_string(out.size() + 1) + " ('" + part + "')";
        if (out.size() == 3) return "more than three levels";
        std::vector<std::string> fields;
        std::stringstream ss(part);
        for (std::string f; std::getline(ss, f, ':');) fields.push_back(f);
        if (part.empty() || part.back() == ':' || fields.size() > 3)
            return where + ": expected SIZE[:WAYS[:LINE]]";
        const std::string size = fields[0], ways = fields.size() > 1 ? fields[1] : "8",
                          line = fields.size() > 2 ? fields[2] : "64";
        CacheLevel c;
        c.level = static_cast<int>(out.size()) + 1;
        c.size_bytes = parse_size(size);
        char* end = nullptr;
        const long w = std::strtol(ways.c_str(), &end, 10);
        if (end == ways.c_str() || *end) return where + ": ways '" + ways + "' is not an integer";
        const long l = std::strtol(line.c_str(), &end, 10);
        if (end == line.c_str() || *end) return where + ": line '" + line + "' is not an integer";
        if (c.size_bytes <= 0 || c.size_bytes > (int64_t{1} << 40))
            return where + ": size '" + size + "' is not a size such as 48K, 2M or 32768";
        if (w < 1 || w > 1024) return where + ": ways must be 1..1024";
        if (l < 16 || l > 1024 || (l & (l - 1))) return where + ": line must be a power of two, 16..1024";
        c.ways = static_cast<int>(w);
        c.line_bytes = static_cast<int>(l);
        c.shared_by = 0;
        if (c.sets() < 1) return where + ": smaller than one line per way";
        if (!out.empty() && c.size_bytes < out.back().size_bytes) return where + ": smaller than the level above";
        out.push_back(c);
    }
    if (out.empty()) return "no levels";
    return "";
}

std::string cache_spec(const std::vector<CacheLevel>& caches) {
    std::string s;
    for (const CacheLevel& c : caches) {
        if (!s.empty()) s += ',';
        const int64_t kib = c.size_bytes >> 10;
        s += c.size_bytes % 1024 ? std::to_string(c.size_bytes)
             : kib % 1024 == 0   ? std::to_string(kib >> 10) + "M"
                                 : std::to_string(kib) + "K";
        s += ":" + std::to_string(c.ways) + ":" + std::to_string(c.line_bytes);
    }
    return s;
}

int64_t cache_floats(int level, int64_t fallback) {
    for (const CacheLevel& c : cpu_info().caches)
        if (c.level == level) return c.size_bytes / std::max(1, c.shared_by) / int64_t{sizeof(float)};
    return fallback;
}

}  // namespace fastnn
