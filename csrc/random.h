// Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11; Random123).
// A value is a pure function of (seed, stream, index), so any thread can compute any
// element and the stream is the same whatever the thread count or the split.
//
// Layout: element `index` of stream `stream` under `seed` is lane index % 4 of the block
//   philox(counter = {lo32(index / 4), hi32(index / 4), lo32(stream), hi32(stream)},
//          key = {lo32(seed), hi32(seed)}).
// Stream 0 is the public stream (random_uniform, dropout, augmentation geometry); other
// streams are disjoint ranges for internal use (augmentation noise).
// The generator and the uniforms are FASTNN_HD: the GPU's dropout (cuda/dropout.cu) draws
// the CPU's masks bit for bit from this same code.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace fastnn {
namespace rng {

struct Block {
    uint32_t v[4];
};

FASTNN_HD inline Block philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                           uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {  // the key is bumped by the Weyl constants before every later round
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = uint64_t{0xD2511F53u} * c0, p1 = uint64_t{0xCD9E8D57u} * c2;
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
        const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
        c1 = static_cast<uint32_t>(p1);
        c3 = static_cast<uint32_t>(p0);
        c0 = n0;
        c2 = n2;
    }
    return {{c0, c1, c2, c3}};
}

// Element indices are uint64 and wrap (element 2^64 is element 0), so block indices wrap at
// 2^62 whichever path counts them.
constexpr uint64_t kBlockIndexMask = (uint64_t{1} << 62) - 1;

// The block holding elements [4 * block, 4 * block + 4) of (seed, stream).
FASTNN_HD inline Block block(uint64_t seed, uint64_t stream, uint64_t block) {
    block &= kBlockIndexMask;
    return philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                         static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                         static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// The top 24 bits as a float in [0, 1): every value is exact, 1.0 is never reached.
FASTNN_HD inline float to_uniform(uint32_t u) { return static_cast<float>(u >> 8) * 0x1.0p-24f; }

// The same shifted into (0, 1]: a safe argument for log.
inline float to_uniform_nonzero(uint32_t u) {
    return static_cast<float>((u >> 8) + 1) * 0x1.0p-24f;
}

// Uniform element `index` of stream 0: one Philox block per call (for a few values).
FASTNN_HD inline float uniform(uint64_t seed, uint64_t index) {
    return to_uniform(block(seed, 0, index >> 2).v[index & 3]);
}

// out[i] = uniform element (first + i) of (seed, stream), i < n: one block per 4 values.
inline void uniforms(uint64_t seed, uint64_t stream, uint64_t first, int64_t n, float* out) {
    int64_t i = 0;
    uint64_t blk = first >> 2;
    if (first & 3) {  // a partial first block
        const Block b = block(seed, stream, blk++);
        for (unsigned lane = first & 3; lane < 4 && i < n; ++lane, ++i) out[i] = to_uniform(b.v[lane]);
    }
    for (; i + 4 <= n; i += 4) {  // whole blocks: straight-line stores
        const Block b = block(seed, stream, blk++);
        for (int lane = 0; lane < 4; ++lane) out[i + lane] = to_uniform(b.v[lane]);
    }
    if (i < n) {
        const Block b = block(seed, stream, blk);
        for (int lane = 0; i < n; ++lane, ++i) out[i] = to_uniform(b.v[lane]);
    }
}

// Box-Muller: two independent standard normals from u1 in (0, 1] and u2 in [0, 1).
inline void box_muller(float u1, float u2, float& z0, float& z1) {
    const float r = std::sqrt(-2.0f * std::log(u1));
    const float a = 6.28318530717958647692f * u2;
    z0 = r * std::cos(a);
    z1 = r * std::sin(a);
}

// out[i] = standard normal element (first + i) of (seed, stream): block b's lanes (0, 1)
// give normals 4b and 4b+1, lanes (2, 3) give 4b+2 and 4b+3.
inline void normals(uint64_t seed, uint64_t stream, uint64_t first, int64_t n, float* out) {
    int64_t i = 0;
    while (i < n) {
        const uint64_t index = first + static_cast<uint64_t>(i);
        const Block b = block(seed, stream, index >> 2);
        float z[4];
        box_muller(to_uniform_nonzero(b.v[0]), to_uniform(b.v[1]), z[0], z[1]);
        box_muller(to_uniform_nonzero(b.v[2]), to_uniform(b.v[3]), z[2], z[3]);
        for (unsigned lane = index & 3; lane < 4 && i < n; ++lane, ++i) out[i] = z[lane];
    }
}

}  // namespace rng
}  // namespace fastnn
