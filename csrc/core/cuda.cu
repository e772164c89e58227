// The CUDA build's device query and self-test (csrc/core/cuda.h). Compiled only with
// FASTNN_CUDA=ON; its kernel is the smallest proof that this build's code runs on the device.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda.h"

namespace fastnn {
namespace {

std::string error_text(cudaError_t e) {
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + " failed (" + error_text(e) + ")");
}

CudaInfo query() {
    CudaInfo info;
    cudaRuntimeGetVersion(&info.runtime_version);
    int cublas_major = 0, cublas_minor = 0;
    if (cublasGetProperty(MAJOR_VERSION, &cublas_major) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(MINOR_VERSION, &cublas_minor) == CUBLAS_STATUS_SUCCESS)
        info.cublas_version = 1000 * cublas_major + 10 * cublas_minor;
    cudaDriverGetVersion(&info.driver_version);  // 0 where no driver is installed
    const cudaError_t count = cudaGetDeviceCount(&info.device_count);
    if (count != cudaSuccess || info.device_count == 0) {
        info.device_count = 0;
        info.reason = info.driver_version == 0 ? "no CUDA driver on this machine (libcuda.so.1)"
                      : count != cudaSuccess        ? "no usable CUDA device (" + error_text(count) + ")"
                                                    : "no CUDA device";
        cudaGetLastError();  // the query's error is reported here, not left for the next call
        return info;
    }
    cudaDeviceProp prop{};
    const cudaError_t got = cudaGetDeviceProperties(&prop, 0);
    if (got != cudaSuccess) {
        info.reason = "device 0 did not answer (" + error_text(got) + ")";
        cudaGetLastError();
        return info;
    }
    info.name = prop.name;
    info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    if (!cuda_arch_runs(cuda_architectures(), prop.major, prop.minor)) {
        info.reason = "device 0 (" + info.name + ", compute capability " + std::to_string(prop.major) +
                      "." + std::to_string(prop.minor) + ") runs none of this build's code (built for " +
                      cuda_architectures() + ": set CMAKE_CUDA_ARCHITECTURES)";
        return info;
    }
    info.available = true;
    return info;
}

__global__ void fill_kernel(float* p, size_t n, float value) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(blockDim.x) * gridDim.x)
        p[i] = value;
}

__global__ void write_index(int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 3 * i + 1;
}

}  // namespace

const char* cuda_architectures() { return FASTNN_CUDA_ARCHS; }

const CudaInfo& cuda_info() {
    static const CudaInfo info = query();
    return info;
}

void cuda_selftest() {
    const CudaInfo& info = cuda_info();
    if (!info.available) throw std::runtime_error("CUDA self-test: " + info.reason);
    constexpr int n = 1000;
    int* device = nullptr;
    check(cudaMalloc(&device, n * sizeof(int)), "cudaMalloc");
    write_index<<<(n + 255) / 256, 256>>>(device, n);
    cudaError_t launched = cudaGetLastError();
    int host[n];
    const cudaError_t copied = launched == cudaSuccess
        ? cudaMemcpy(host, device, sizeof host, cudaMemcpyDeviceToHost) : launched;
    cudaFree(device);
    check(copied, "the self-test kernel");
    for (int i = 0; i < n; ++i)
        if (host[i] != 3 * i + 1)
            throw std::runtime_error("CUDA self-test: element " + std::to_string(i) + " is " +
                                     std::to_string(host[i]) + ", expected " + std::to_string(3 * i + 1));
}

void* cuda_raw_alloc(int device, size_t bytes) {
    check(cudaSetDevice(device), "cudaSetDevice");
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // reported as nullptr (std::bad_alloc, MemoryError), not left pending
        return nullptr;
    }
    check(e, "cudaMalloc");
    return p;
}

void cuda_raw_free(int device, void* p) {
    cudaSetDevice(device);
    cudaFree(p);  // only from the allocator's own blocks; an error here has no one to tell
}

void cuda_copy(void* dst, const void* src, size_t n) { check(cudaMemcpy(dst, src, n, cudaMemcpyDefault), "cudaMemcpy"); }

namespace {

struct Staging {  // a pinned host buffer and the event of the last copy out of it
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
};

constexpr int kStagingSlots = 4;
std::mutex g_staging_mutex;
Staging g_staging[kStagingSlots];
int g_next_staging = 0;

}  // namespace

void cuda_copy_to_device_async(void* dst, const void* src, size_t n) {
    if (n == 0) return;
    std::lock_guard<std::mutex> lock(g_staging_mutex);
    Staging& s = g_staging[g_next_staging];
    g_next_staging = (g_next_staging + 1) % kStagingSlots;
    if (!s.done)
        check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
    else
        check(cudaEventSynchronize(s.done), "a staged copy");  // its last copy has run (four steps ago)
    if (s.capacity < n) {
        if (s.host) check(cudaFreeHost(s.host), "cudaFreeHost");
        s.host = nullptr;
        s.capacity = 0;
        check(cudaMallocHost(&s.host, n), "cudaMallocHost");
        s.capacity = n;
    }
    std::memcpy(s.host, src, n);
    check(cudaMemcpyAsync(dst, s.host, n, cudaMemcpyHostToDevice, 0), "cudaMemcpyAsync");  // the default stream: ordered with the ops
    check(cudaEventRecord(s.done, 0), "cudaEventRecord");
}

void cuda_fill(float* p, size_t n, float value) {
    const size_t blocks = std::min<size_t>((n + 255) / 256, 65536);
    fill_kernel<<<unsigned(blocks), 256>>>(p, n, value);
    check(cudaGetLastError(), "fill");
}

}  // namespace fastnn
