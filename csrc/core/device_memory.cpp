#include "device_memory.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cuda.h"

namespace fastnn {
namespace {

struct Pool {
    std::map<size_t, std::vector<void*>> cached;  // rounded size -> freed blocks
    MemoryStats stats;
};

std::mutex g_mutex;
std::map<std::pair<int, int>, Pool> g_pools;  // (device type, index) -> its pool

Pool& pool_of(const Device& d) { return g_pools[{static_cast<int>(d.type), d.index}]; }

void* raw_alloc(const Device& d, size_t bytes) {
    if (d.type == DeviceType::Cpu) return std::aligned_alloc(64, bytes);  // bytes: a multiple of 512
#ifdef FASTNN_CUDA
    return cuda_raw_alloc(d.index, bytes);
#else
    throw std::runtime_error("device memory on " + d.name() + ": " + kCudaNotBuilt);
#endif
}

void raw_free(const Device& d, void* p) {
    if (d.type == DeviceType::Cpu) {
        std::free(p);
        return;
    }
#ifdef FASTNN_CUDA
    cuda_raw_free(d.index, p);
#endif
}

void release_cached(const Device& d, Pool& pool) {
    for (auto& [size, blocks] : pool.cached)
        for (void* p : blocks) raw_free(d, p);
    pool.cached.clear();
    pool.stats.cached_bytes = 0;
}

}  // namespace

size_t rounded_size(size_t bytes) {
    constexpr size_t kSmallStep = 512, kLargeStep = size_t{2} << 20, kLarge = size_t{1} << 20;
    if (bytes > SIZE_MAX / 2) throw std::bad_alloc();
    const size_t step = bytes < kLarge ? kSmallStep : kLargeStep;
    return std::max<size_t>(1, (bytes + step - 1) / step) * step;
}

void* device_alloc(const Device& device, size_t bytes) {
    const size_t size = rounded_size(bytes);
    std::lock_guard<std::mutex> lock(g_mutex);
    Pool& pool = pool_of(device);
    auto it = pool.cached.find(size);
    if (it != pool.cached.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        pool.stats.cached_bytes -= static_cast<int64_t>(size);
        pool.stats.in_use_bytes += static_cast<int64_t>(size);
        ++pool.stats.reuses;
        return p;
    }
    void* p = raw_alloc(device, size);
    if (!p && pool.stats.cached_bytes > 0) {  // blocks of other sizes may be what is missing
        release_cached(device, pool);
        p = raw_alloc(device, size);
    }
    if (!p) throw std::bad_alloc();
    ++pool.stats.device_allocs;
    pool.stats.in_use_bytes += static_cast<int64_t>(size);
    return p;
}

void device_free(const Device& device, void* ptr, size_t bytes) {
    if (!ptr) return;
    const size_t size = rounded_size(bytes);
    std::lock_guard<std::mutex> lock(g_mutex);
    Pool& pool = pool_of(device);
    pool.cached[size].push_back(ptr);
    pool.stats.in_use_bytes -= static_cast<int64_t>(size);
    pool.stats.cached_bytes += static_cast<int64_t>(size);
}

void device_empty_cache(const Device& device) {
    std::lock_guard<std::mutex> lock(g_mutex);
    release_cached(device, pool_of(device));
}

MemoryStats device_memory_stats(const Device& device) {
    std::lock_guard<std::mutex> lock(g_mutex);
    return pool_of(device).stats;
}

void device_upload(const Device& device, void* dst, const void* src, size_t n) {
    if (n == 0) return;
    if (device.type == DeviceType::Cpu) {
        std::memcpy(dst, src, n);
        return;
    }
#ifdef FASTNN_CUDA
    cuda_copy_to_device_async(dst, src, n);
#else
    throw std::runtime_error("copy to " + device.name() + ": " + kCudaNotBuilt);
#endif
}

void device_copy(const Device& dst_device, void* dst, const Device& src_device, const void* src, size_t n) {
    if (n == 0) return;
    if (dst_device.type == DeviceType::Cpu && src_device.type == DeviceType::Cpu) {
        std::memcpy(dst, src, n);
        return;
    }
#ifdef FASTNN_CUDA
    cuda_copy(dst, src, n);
#else
    throw std::runtime_error("copy between " + src_device.name() + " and " + dst_device.name() + ": " +
                             kCudaNotBuilt);
#endif
}

void device_fill(const Device& device, float* p, size_t n, float value) {
    if (n == 0) return;
    if (device.type == DeviceType::Cpu) {
        std::fill(p, p + n, value);
        return;
    }
#ifdef FASTNN_CUDA
    cuda_fill(p, n, value);
#else
    throw std::runtime_error("fill on " + device.name() + ": " + kCudaNotBuilt);
#endif
}

}  // namespace fastnn
