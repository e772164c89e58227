// The direct convolution's kernels (conv_direct_kernels.h) in AVX-512: 16 floats a vector,
// 32 registers. Compiled with -mavx512f; called only while the AVX-512 ISA is active.
#include <immintrin.h>

#include "conv_direct_kernels.h"

namespace fastnn {
namespace {

struct Avx512 {
    using V = __m512;
    static constexpr int W = 16;
    // Forward: 8 channels x 3 vectors (24 FMAs for 11 loads), down to 6 x 4, 4 x 6.
    static constexpr int kForwardChannels = 8, kTailChannels = 0;
    static constexpr int forward_vectors(int ob) { return ob >= 7 ? 3 : ob >= 5 ? 4 : 6; }
    // Weight gradient: 4 channels x 5 taps (20 FMAs for 9 loads). 8 x 3 measured slower:
    // with its 8 gradient vectors it needs 33 registers.
    static constexpr int kGradChannels = 4, kGradTaps = 5;
    // Channels along the vectors (forward_pixels): 6 pixels x 4 vectors, 64 channels (24 FMAs
    // for 10 loads).
    static constexpr int kPixels = 6, kPixelVectors = 4;
    template <int OB, int NV, int KW>
    static constexpr bool kAsmSums = false;  // 32 registers: GCC's tiles need no assembly
    template <int P, int NV, int KW>
    static constexpr bool kAsmPixelSums = false;

    static V zero() { return _mm512_setzero_ps(); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static void store_lanes(float* dst, V v, uint32_t lanes, int count) {
        if (count == W)
            _mm512_storeu_ps(dst, v);
        else
            _mm512_mask_storeu_ps(dst, __mmask16((1u << count) - 1u), _mm512_maskz_compress_ps(__mmask16(lanes), v));
    }
    static float sum(V v) { return _mm512_reduce_add_ps(v); }
    static void copy(const float* src, int64_t n, float* dst) {
        for (int64_t j = 0; j < n; j += W) {
            const __mmask16 m = n - j >= W ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1u);
            _mm512_mask_storeu_ps(dst + j, m, src ? _mm512_maskz_loadu_ps(m, src + j) : zero());
        }
    }
};

}  // namespace

const DirectConvKernels kDirectConvAvx512 = direct::kernels<Avx512>();

}  // namespace fastnn
