// AVX-512 helpers of the two bf16 kernel files (kernel_avx512_bf16.cpp, kernel_amx_bf16.cpp),
// which alone include this header: both are compiled with -mavx512f.
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

}  // namespace bf16_avx512
}  // namespace fastnn
