// The direct convolution's kernels (conv_direct_kernels.h) in AVX2 with FMA: 8 floats a
// vector, 16 registers. Compiled with -mavx2 -mfma; called only while the AVX2 ISA is active.
#include <immintrin.h>

#include "conv_direct_kernels.h"

namespace fastnn {
namespace {

// For each mask of 8 lanes, the lanes it holds, in order, then zeros.
struct CompressTable {
    alignas(32) int32_t lane[256][8];
};
constexpr CompressTable compress_table() {
    CompressTable t{};
    for (int m = 0; m < 256; ++m)
        for (int l = 0, j = 0; l < 8; ++l)
            if (m >> l & 1) t.lane[m][j++] = l;
    return t;
}
constexpr CompressTable kCompress = compress_table();

struct Avx2 {
    using V = __m256;
    static constexpr int W = 8;
    // Forward: 6 channels x 2 vectors (12 FMAs for 8 loads; 15 registers), down to 4 x 3.
    static constexpr int kForwardChannels = 6;
    static constexpr int forward_vectors(int ob) { return ob >= 5 ? 2 : 3; }
    // Weight gradient: 3 channels x 3 taps (9 FMAs for 6 loads; 13 registers).
    static constexpr int kGradChannels = 3, kGradTaps = 3;
    static constexpr int kPixels = 0, kPixelVectors = 0;  // no forward_pixels: 16 registers

    static V zero() { return _mm256_setzero_ps(); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    // AVX2 has no compress: a permutation per lane mask, from a table (lanes one at a time
    // made LeNet's first layer 28% slower than storing whole vectors and copying them out).
    // The lanes are then copied one by one, not by a masked store: AMD's (vmaskmovps) are
    // microcoded (Zen 3, 2 threads: LeNet b32 6-9% faster this way).
    static void store_lanes(float* dst, V v, uint32_t lanes, int count) {
        if (count == W) return _mm256_storeu_ps(dst, v);
        const __m256i order = _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.lane[lanes]));
        alignas(32) float packed[W];
        _mm256_store_ps(packed, _mm256_permutevar8x32_ps(v, order));
        for (int i = 0; i < count; ++i) dst[i] = packed[i];
    }
    static float sum(V v) {  // lanes added pairwise, in a fixed order
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
        return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
    }
    // Whole vectors, then the tail one by one: no masked stores (above). The padding of a
    // VGG step's images had taken 7.8% of its time with them, 2.1% without (Zen 3, b128).
    static void copy(const float* src, int64_t n, float* dst) {
        int64_t j = 0;
        for (; j + W <= n; j += W) _mm256_storeu_ps(dst + j, src ? _mm256_loadu_ps(src + j) : zero());
        for (; j < n; ++j) dst[j] = src ? src[j] : 0.0f;
    }
};

}  // namespace

const DirectConvKernels kDirectConvAvx2 = direct::kernels<Avx2>();

}  // namespace fastnn
