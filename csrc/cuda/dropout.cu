// Inverted dropout on the GPU, as cpu/dropout.cpp's: element i of the input keeps its value
// (times 1 / (1 - p)) where uniform element offset + i of stream 0 under `seed` is >= p. The
// uniforms come from random.h's Philox, the very code the CPU runs, so one seed and offset
// give the same mask on either device, bit for bit; backward regenerates it.
#include "../random.h"
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

// One thread per Philox block (4 elements): the block is computed once for its 4 lanes. Thread
// t has block (offset / 4) + t (rng::block wraps it); lane l is element 4 t + l - offset % 4.
__global__ void dropout_kernel(const float* x, float* y, int64_t n, int64_t blocks, float p, float scale,
                               uint64_t seed, uint64_t offset) {
    const int64_t skip = int64_t(offset & 3);
    FASTNN_GRID_STRIDE(t, blocks) {
        const rng::Block r = rng::block(seed, 0, (offset >> 2) + uint64_t(t));
        for (int lane = 0; lane < 4; ++lane) {
            const int64_t i = 4 * t + lane - skip;
            if (i >= 0 && i < n) y[i] = x[i] * (rng::to_uniform(r.v[lane]) >= p ? scale : 0.0f);
        }
    }
}

}  // namespace

void dropout(const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
    if (n <= 0) return;
    if (p == 0.0f) {  // identity: no random numbers needed
        if (x != y) check_call(cudaMemcpy(y, x, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice), "dropout");
        return;
    }
    const int64_t blocks = (int64_t(offset & 3) + n + 3) / 4;  // no wrap, whatever the offset
    dropout_kernel<<<grid_for(blocks), kThreads>>>(x, y, n, blocks, p, 1.0f / (1.0f - p), seed, offset);
    check_launch("dropout");
}

}  // namespace fastnn::cuda
