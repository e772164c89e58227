// Inverted dropout and the public uniform stream. Masks come from the counter-based
// generator (random.h), so backward regenerates exactly the forward's mask from
// (seed, offset) instead of storing it, and no result depends on the thread count.
#include <algorithm>
#ifdef FASTNN_X86
#include <immintrin.h>
#endif

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "../random.h"
#include "isa.h"

namespace fastnn {
namespace {

#ifdef FASTNN_X86
// (a * b) >> 32 per 32-bit lane: products of the even lanes, then of the odd ones.
__attribute__((target("avx512f"))) inline __m512i mulhi_epu32(__m512i a, __m512i b) {
    const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, b), 32);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(b, 32));
    return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// The top 24 bits as floats in [0, 1), exactly as rng::to_uniform.
__attribute__((target("avx512f"))) inline __m512i uniform(__m512i u) {
    const __m512 f = _mm512_cvtepi32_ps(_mm512_srli_epi32(u, 8));
    return _mm512_castps_si512(_mm512_mul_ps(f, _mm512_set1_ps(0x1.0p-24f)));
}

// Philox4x32-10 (stream 0) on 16 consecutive blocks, one per 32-bit lane: the 64 uniforms
// of blocks [first_block, first_block + 16), bit for bit those of rng::block and
// rng::to_uniform. About 10x the scalar generator, which made dropout cost more than the
// GEMMs around it.
__attribute__((target("avx512f"))) void uniforms_16_blocks(uint64_t seed, uint64_t first_block,
                                                           float* out) {
    const __m512i base = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first_block)));
    __m512i c0 = _mm512_add_epi32(base, _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                                         4, 3, 2, 1, 0));
    const __mmask16 carry = _mm512_cmplt_epu32_mask(c0, base);  // the low word wrapped
    const __m512i hi = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first_block >> 32)));
    __m512i c1 = _mm512_mask_add_epi32(hi, carry, hi, _mm512_set1_epi32(1));
    c1 = _mm512_and_si512(c1, _mm512_set1_epi32(static_cast<int>(rng::kBlockIndexMask >> 32)));
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
    const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const __m512i lo0 = _mm512_mullo_epi32(c0, m0), hi0 = mulhi_epu32(c0, m0);
        const __m512i lo1 = _mm512_mullo_epi32(c2, m1), hi1 = mulhi_epu32(c2, m1);
        c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
        c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
        c1 = lo1;
        c3 = lo0;
    }
    const __m512i f0 = uniform(c0), f1 = uniform(c1), f2 = uniform(c2), f3 = uniform(c3);
    // Lane j of f0..f3 is block j: interleave to out[4j + word].
    const __m512i t0 = _mm512_unpacklo_epi32(f0, f1), t1 = _mm512_unpackhi_epi32(f0, f1);
    const __m512i t2 = _mm512_unpacklo_epi32(f2, f3), t3 = _mm512_unpackhi_epi32(f2, f3);
    // u_r holds blocks r, r + 4, r + 8, r + 12 (one per 128-bit lane)
    const __m512 u0 = _mm512_castsi512_ps(_mm512_unpacklo_epi64(t0, t2));
    const __m512 u1 = _mm512_castsi512_ps(_mm512_unpackhi_epi64(t0, t2));
    const __m512 u2 = _mm512_castsi512_ps(_mm512_unpacklo_epi64(t1, t3));
    const __m512 u3 = _mm512_castsi512_ps(_mm512_unpackhi_epi64(t1, t3));
    const __m512 a = _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 b = _mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 c = _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 d = _mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(3, 2, 3, 2));
    _mm512_storeu_ps(out, _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif

// out[i] = uniform element (first + i) of stream 0: rng::uniforms, 16 blocks at a time when
// the active ISA is AVX-512 (wide: read once per operation; the same values either way).
void draw_uniforms(uint64_t seed, uint64_t first, int64_t n, float* out, [[maybe_unused]] bool wide) {
#ifdef FASTNN_X86
    if (wide && n >= 64) {
        int64_t i = 0;
        if (first & 3) {  // up to the first whole block
            i = std::min<int64_t>(n, 4 - static_cast<int64_t>(first & 3));
            rng::uniforms(seed, 0, first, i, out);
        }
        for (; i + 64 <= n; i += 64) uniforms_16_blocks(seed, (first + i) >> 2, out + i);
        if (i < n) rng::uniforms(seed, 0, first + i, n - i, out + i);
        return;
    }
#endif
    rng::uniforms(seed, 0, first, n, out);
}

}  // namespace

void random_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset) {
    const bool wide = elementwise_isa() == Isa::Avx512;
    parallel_for(n, kDropoutGrain, [&](int64_t b, int64_t e) {
        draw_uniforms(seed, offset + static_cast<uint64_t>(b), e - b, out + b, wide);
    });
}

void dropout(const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
    if (p == 0.0f) {  // identity: no random numbers needed
        parallel_for(n, kDropoutGrain, [&](int64_t b, int64_t e) { std::copy(x + b, x + e, y + b); });
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    const bool wide = elementwise_isa() == Isa::Avx512;
    // Captured by value: locals the compiler knows y cannot alias.
    parallel_for(n, kDropoutGrain, [=](int64_t b, int64_t e) {
        float u[kRandomTile];
        for (int64_t t = b; t < e; t += kRandomTile) {
            const int64_t len = std::min(kRandomTile, e - t);
            draw_uniforms(seed, offset + static_cast<uint64_t>(t), len, u, wide);
            // A multiply by the mask rather than a branch: random keeps defeat prediction.
            for (int64_t i = 0; i < len; ++i) y[t + i] = x[t + i] * (u[i] >= p ? scale : 0.0f);
        }
    });
}

}  // namespace fastnn
