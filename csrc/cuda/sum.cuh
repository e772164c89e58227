// Sums on the GPU that come out the same on every run and every GPU: fixed chunks of
// kSumChunk elements (core/work_split.h, as the CPU's chunked_sum), each added by one block in a
// fixed pattern and tree, then the chunks' partial sums added by one block in order. No float
// atomics; nothing depends on the launch's size. For loss.cu and reduce.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../core/work_split.h"
#include "launch.h"

namespace fastnn::cuda {
namespace {

constexpr int kSumThreads = 256;

// The block's kSumThreads values in `part` added in a tree of fixed shape, into part[0].
__device__ inline void tree_sum(double* part) {
    for (int half = kSumThreads / 2; half > 0; half /= 2) {
        if (static_cast<int>(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
}

// One block: thread t adds v[t], v[t + 256], ... in order, then the tree.
__global__ void ordered_sum(const double* v, int64_t n, double* out) {
    __shared__ double part[kSumThreads];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kSumThreads) s += v[i];
    part[threadIdx.x] = s;
    __syncthreads();
    tree_sum(part);
    if (threadIdx.x == 0) *out = part[0];
}

// Block b: the sum of term(i) over chunk b, into partial[b]. term may also write element i
// (a gradient), which each i is visited once for.
template <class Term>
__global__ void chunk_sums(int64_t n, Term term, double* partial) {
    __shared__ double part[kSumThreads];
    const int64_t begin = static_cast<int64_t>(blockIdx.x) * kSumChunk;
    const int64_t end = begin + kSumChunk < n ? begin + kSumChunk : n;
    double s = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kSumThreads) s += term(i);
    part[threadIdx.x] = s;
    __syncthreads();
    tree_sum(part);
    if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

// The sum of term(i) for i in [0, n), in double; scratch: sum_scratch_size(n) doubles on the
// device. Waits for the GPU (the value comes back to the host).
template <class Term>
double deterministic_sum(int64_t n, Term term, double* scratch, const char* what) {
    if (n <= 0) return 0.0;
    const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
    chunk_sums<<<static_cast<unsigned>(chunks), kSumThreads>>>(n, term, scratch);
    check_launch(what);
    ordered_sum<<<1, kSumThreads>>>(scratch, chunks, scratch + chunks);
    check_launch(what);
    double total = 0.0;
    check_call(cudaMemcpy(&total, scratch + chunks, sizeof total, cudaMemcpyDeviceToHost), what);
    return total;
}

}  // namespace
}  // namespace fastnn::cuda
