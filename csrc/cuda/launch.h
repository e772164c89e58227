// How csrc/cuda's kernels are launched: grid-stride loops over int64 sizes, and every launch
// checked, so that a failure is an exception naming the kernel, not a later one's error.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastnn::cuda {

constexpr int kThreads = 256;

// Blocks for n elements of a grid-stride loop: enough to fill any current GPU, never more
// than the elements need.
inline unsigned grid_for(int64_t n) {
    return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65536)));
}

inline void check_call(cudaError_t e, const char* what) {
    if (e != cudaSuccess)
        throw std::runtime_error(std::string(what) + " failed on the GPU (" + cudaGetErrorName(e) + ": " +
                                 cudaGetErrorString(e) + ")");
}

inline void check_launch(const char* kernel) { check_call(cudaGetLastError(), kernel); }

}  // namespace fastnn::cuda

#define FASTNN_GRID_STRIDE(i, n)                                                              \
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                  \
         i += int64_t(blockDim.x) * gridDim.x)
