// The GPU as fastnn's CUDA build sees it, queried once. The default build has no CUDA: there
// `cuda_built()` is false and nothing else here is defined (the binding says why).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fastnn {

struct CudaInfo {
    bool available = false;  // a device answered, and this build has code it runs
    std::string reason;      // why not, when not
    int device_count = 0;
    std::string name;        // device 0's
    int64_t memory_bytes = 0;
    int cc_major = 0, cc_minor = 0;
    // CUDA's encoding, 1000 * major + 10 * minor (0: not known)
    int driver_version = 0, runtime_version = 0, cublas_version = 0;
};

// Whether code built for `archs` (CMAKE_CUDA_ARCHITECTURES with commas: "80-real,90") runs
// on a device of compute capability major.minor: machine code for sm_XY runs on X.Y' >= X.Y
// of the same major; PTX for compute_XY is compiled by the driver for any X.Y' >= X.Y.
bool cuda_arch_runs(const std::string& archs, int major, int minor);

// Why the default build has no CUDA device: every refusal of "cuda" in it says this.
constexpr const char* kCudaNotBuilt = "this fastnn was built without CUDA (FASTNN_CUDA=OFF)";

#ifdef FASTNN_CUDA
constexpr bool cuda_built() { return true; }
const char* cuda_architectures();
const CudaInfo& cuda_info();
// Runs a kernel of this build on device 0 and checks what it wrote: the proof that the build
// and the device agree. Throws std::runtime_error with CUDA's message otherwise.
void cuda_selftest();
// Raw device memory for device_memory.cpp's allocator: nullptr when the device is out of
// memory, std::runtime_error on any other CUDA error. Copies are synchronous, in any
// direction (unified addressing tells them apart).
void* cuda_raw_alloc(int device, size_t bytes);
void cuda_raw_free(int device, void* p);
void cuda_copy(void* dst, const void* src, size_t n);
// n bytes of host memory to the device without waiting for the GPU's queued work (a plain copy
// from pageable memory waits for it): staged in pinned buffers, each reused once its last copy
// has run. For a batch's indices, every step.
void cuda_copy_to_device_async(void* dst, const void* src, size_t n);
void cuda_fill(float* p, size_t n, float value);
#else
constexpr bool cuda_built() { return false; }
#endif

}  // namespace fastnn
