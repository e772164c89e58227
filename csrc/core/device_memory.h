// Memory on a device, through a caching allocator: a freed block is kept for the next request
// of its rounded size instead of going back to the device (cudaMalloc and cudaFree synchronise
// the GPU and cost tens of microseconds), so that the steady state of training allocates
// nothing. The caching is device-neutral and is what the tests check on the CPU, whose
// blocks come from the aligned host allocator; the CUDA build's come from cudaMalloc.
#pragma once
#include <cstddef>
#include <cstdint>

#include "view.h"

namespace fastnn {

struct MemoryStats {
    int64_t in_use_bytes = 0;    // handed out and not freed, rounded sizes
    int64_t cached_bytes = 0;    // freed, kept for reuse
    int64_t device_allocs = 0;   // blocks taken from the device (malloc / cudaMalloc)
    int64_t reuses = 0;          // requests served from the cache
};

// The size a request is served at: 512-byte steps below 1 MiB, 2 MiB steps above, so that
// batches of slightly different sizes share blocks.
size_t rounded_size(size_t bytes);

// A block of at least `bytes` (64-byte aligned on the CPU, 256 on CUDA) on `device`;
// std::bad_alloc when the device has no memory left, even after the cache is emptied.
void* device_alloc(const Device& device, size_t bytes);
// Back to the cache; `bytes` as asked of device_alloc.
void device_free(const Device& device, void* ptr, size_t bytes);
// Every cached block of `device` back to it.
void device_empty_cache(const Device& device);
MemoryStats device_memory_stats(const Device& device);

// n bytes between any two devices (host <-> CUDA by cudaMemcpy, synchronous).
void device_copy(const Device& dst_device, void* dst, const Device& src_device, const void* src, size_t n);
// n bytes of host memory to `device` in the order of its queued work, without waiting for it
// (cuda_copy_to_device_async); a plain memcpy for host memory.
void device_upload(const Device& device, void* dst, const void* src, size_t n);
// n floats at p on `device` set to value (a kernel on CUDA, ordered with the other ops).
void device_fill(const Device& device, float* p, size_t n, float value);

}  // namespace fastnn
