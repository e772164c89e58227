// Inverted dropout and the public uniform stream. Masks come from the counter-based
// generator (random.h), so backward regenerates exactly the forward's mask from
// (seed, offset) instead of storing it, and no result depends on the thread count.
#include <algorithm>

#include "../ops.h"
#include "../parallel.h"
#include "../random.h"

namespace fastnn {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per thread before a fork pays
constexpr int64_t kTile = 1024;      // uniforms drawn at a time, on the stack

}  // namespace

void random_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
        rng::uniforms(seed, 0, offset + static_cast<uint64_t>(b), e - b, out + b);
    });
}

void dropout(const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
    if (p == 0.0f) {  // identity: no random numbers needed
        parallel_for(n, kGrain, [&](int64_t b, int64_t e) { std::copy(x + b, x + e, y + b); });
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    // Captured by value: locals the compiler knows y cannot alias.
    parallel_for(n, kGrain, [=](int64_t b, int64_t e) {
        float u[kTile];
        for (int64_t t = b; t < e; t += kTile) {
            const int64_t len = std::min(kTile, e - t);
            rng::uniforms(seed, 0, offset + static_cast<uint64_t>(t), len, u);
            // A multiply by the mask rather than a branch: random keeps defeat prediction.
            for (int64_t i = 0; i < len; ++i) y[t + i] = x[t + i] * (u[i] >= p ? scale : 0.0f);
        }
    });
}

}  // namespace fastnn
