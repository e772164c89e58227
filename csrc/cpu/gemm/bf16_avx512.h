// AVX-512 helpers of the two bf16 kernel files (kernel_avx512_bf16.cpp, kernel_amx_bf16.cpp),
// which alone include this header: both are compiled with -mavx512f -mavx512bf16 (every CPU
// with AMX-BF16 has AVX512_BF16, and the AMX path requires it).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace fastnn {
namespace bf16_avx512 {

// x's bits rounded as bf16_from_float does, in the upper half of each lane (the lower half
// is left over): integer operations, so MXCSR's denormal flags do not touch them
// (vcvtneps2bf16 would flush subnormals).
inline __m512i round_bf16_bits(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                  _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_or_epi32(rounded, nan, u, _mm512_set1_epi32(0x00400000));
}

// Lanes (x0[l], x1[l]) rounded to a bf16 pair each, x0's in the lower half.
inline __m512i bf16_pairs(__m512 x0, __m512 x1) {
    return _mm512_or_si512(_mm512_srli_epi32(round_bf16_bits(x0), 16),
                           _mm512_and_si512(round_bf16_bits(x1), _mm512_set1_epi32(int(0xFFFF0000u))));
}

// The first n lanes (none for n <= 0, all for n >= 16).
inline __mmask16 first(int64_t n) {
    return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n > 0 ? n : 0)) - 1u);
}

// vcvtne2ps2bf16 rounds to nearest even as bf16_from_float does, NaNs and infinities alike,
// but takes a subnormal input as zero; a vector with one goes the integer way (rarely: a
// subnormal operand only). With whole vectors loaded and stored unmasked, packing a 512 x 784
// weight this way took 16% (ks in rows) to 35% (rows along k) less time on a Zen 5.
inline bool any_subnormal(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    return _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7F800000)), u,
                                       _mm512_set1_epi32(0x007FFFFF)) != 0;
}

// 16 bf16 of x, in order, in 16-bit lanes.
inline __m256i bf16_of(__m512 x) {
    if (any_subnormal(x)) return _mm512_cvtepi32_epi16(_mm512_srli_epi32(round_bf16_bits(x), 16));
    return (__m256i)_mm512_cvtneps_pbh(x);
}

// Up to 32 values of a row (contiguous along k; zeros from kc on) as 16 pairs, in k order.
inline __m512i row_pairs(const float* src, int64_t kc) {
    const bool whole = kc >= 32;
    const __m512 lo = whole ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps(first(kc), src);
    const __m512 hi = whole ? _mm512_loadu_ps(src + 16) : _mm512_maskz_loadu_ps(first(kc - 16), src + 16);
    if (any_subnormal(lo) || any_subnormal(hi))
        return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_of(lo)), bf16_of(hi), 1);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

// r[j] = lane j of every input: a 16 x 16 transpose of 32-bit lanes.
inline void transpose_16x16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; ++i) {
            t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xDD);
        }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    }
}

}  // namespace bf16_avx512
}  // namespace fastnn
