// The direct convolution's kernels (conv_direct_kernels.h) in AVX2 with FMA: 8 floats a
// vector, 16 registers. Compiled with -mavx2 -mfma; called only while the AVX2 ISA is active.
#include <immintrin.h>

#include "avx2_tile_asm.h"
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
    // Forward: 6 channels x 2 vectors (12 FMAs for 8 loads; 15 registers), down to 4 x 3
    // (12 FMAs for 7 loads), the tail block (direct_block_size).
    static constexpr int kForwardChannels = 6, kTailChannels = 4;
    static constexpr int forward_vectors(int ob) { return ob >= 5 ? 2 : 3; }
    // Weight gradient: 3 channels x 3 taps (9 FMAs for 6 loads; 13 registers).
    static constexpr int kGradChannels = 3, kGradTaps = 3;
    // Channels along the vectors (forward_pixels): 6 pixels x 2 vectors, 16 channels (12
    // FMAs for 8 loads, as the channel tile's).
    static constexpr int kPixels = 6, kPixelVectors = 2;

    // The 6 x 2 tile of 3-wide kernels in assembly: GCC 12 kept one of its 12 accumulators
    // on the stack and copied registers about, as much as the surrounding code let it (VGG's
    // 3 x 3 layers, batch 32, one Zen 3 core: 51-65 GFLOP/s forward from the release build's
    // intrinsics, 69-73 from this loop, processes alternated; 1.05-1.19x in one process).
    // The 4 x 3 tile likewise.
    template <int OB, int NV, int KW>
    static constexpr bool kAsmSums = ((OB == 6 && NV == 2) || (OB == 4 && NV == 3)) && KW == 3;
    template <int OB, int NV>
    static void tile_sums(const float* xq, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                          const float* w, V (&acc)[OB][NV]);
    // The 6-pixel x 16-channel tile of 3-wide kernels (forward_pixels) likewise.
    template <int P, int NV, int KW>
    static constexpr bool kAsmPixelSums = P == 6 && NV == 2 && KW == 3;
    static void pixel_sums(const float* const* base, int64_t c, int64_t plane, int64_t wp,
                           int64_t kh, const float* w, V (&acc)[6][2]);

    static V zero() { return _mm256_setzero_ps(); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
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

// One tap: the image's two vectors at byte offset X of the row, then each of the 6 channels'
// weights (at byte W of the block) times both; accumulator (o, v) in ymm(2 o + v).
#define FASTNN_CONV_TAP(X, W)                                                              \
    "vmovups " #X "(%[row]), %%ymm12\n\t"                                                   \
    "vmovups " #X "+32(%[row]), %%ymm13\n\t"                                                \
    "vbroadcastss " #W "+0(%[w]), %%ymm14\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n\t"                                              \
    "vbroadcastss " #W "+4(%[w]), %%ymm15\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n\t"                                              \
    "vbroadcastss " #W "+8(%[w]), %%ymm14\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n\t"                                              \
    "vbroadcastss " #W "+12(%[w]), %%ymm15\n\t"                                             \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n\t"                                              \
    "vbroadcastss " #W "+16(%[w]), %%ymm14\n\t"                                             \
    "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n\t"                                              \
    "vbroadcastss " #W "+20(%[w]), %%ymm15\n\t"                                             \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n\t"                                             \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n\t"

// One tap of the 4 x 3 tile: the image's three vectors, then each of the 4 channels'
// weights times them; accumulator (o, v) in ymm(3 o + v).
#define FASTNN_CONV_TAP4(X, W)                                                             \
    "vmovups " #X "(%[row]), %%ymm12\n\t"                                                   \
    "vmovups " #X "+32(%[row]), %%ymm13\n\t"                                                \
    "vmovups " #X "+64(%[row]), %%ymm14\n\t"                                                \
    "vbroadcastss " #W "+0(%[w]), %%ymm15\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm0\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm1\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm14, %%ymm2\n\t"                                              \
    "vbroadcastss " #W "+4(%[w]), %%ymm15\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm3\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm4\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm14, %%ymm5\n\t"                                              \
    "vbroadcastss " #W "+8(%[w]), %%ymm15\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm14, %%ymm8\n\t"                                              \
    "vbroadcastss " #W "+12(%[w]), %%ymm15\n\t"                                             \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm9\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm10\n\t"                                             \
    "vfmadd231ps %%ymm15, %%ymm14, %%ymm11\n\t"

// forward_tile's sums over channels, kernel rows, then the row's three taps, as the
// template's loop (the same bits): TAP is the tile's tap; the weights of a tap are 6 apart
// (the packed block), 3 taps a kernel row.
#define FASTNN_CONV_TILE_SUMS(TAP)                                                         \
    asm volatile(                                                                          \
        FASTNN_AVX2_TILE_ZERO                                                              \
        "test %[c], %[c]\n\t"                                                               \
        "jle 3f\n\t"                                                                        \
        "1:\n\t"                                                                            \
        "mov %[xq], %[row]\n\t"                                                             \
        "mov %[kh], %[rows_left]\n\t"                                                       \
        "test %[rows_left], %[rows_left]\n\t"                                               \
        "jle 4f\n\t"                                                                        \
        ".p2align 5\n\t"                                                                    \
        "2:\n\t"                                                                            \
        TAP(0, 0) TAP(4, 24) TAP(8, 48)                                                    \
        "add $72, %[w]\n\t"                                                                 \
        "add %[wp4], %[row]\n\t"                                                            \
        "dec %[rows_left]\n\t"                                                              \
        "jnz 2b\n\t"                                                                        \
        "4:\n\t"                                                                            \
        "add %[plane4], %[xq]\n\t"                                                          \
        "dec %[c]\n\t"                                                                      \
        "jnz 1b\n\t"                                                                        \
        "3:\n\t"                                                                            \
        FASTNN_AVX2_TILE_STORE(sums)                                                       \
        : [xq] "+r"(xq), [w] "+r"(w), [c] "+r"(c), [row] "+r"(row), [rows_left] "+r"(rows_left) \
        : [kh] "r"(kh), [wp4] "r"(wp4), [plane4] "r"(plane4), [sums] "r"(sums)             \
        : FASTNN_AVX2_TILE_CLOBBERS)

// The 6 x 2 tile's sums (accumulator (o, v) in ymm(2 o + v)) or the 4 x 3 tile's (ymm(3 o + v)).
template <int OB, int NV>
void Avx2::tile_sums(const float* xq, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                     const float* w, V (&acc)[OB][NV]) {
    static_assert((OB == 6 && NV == 2) || (OB == 4 && NV == 3), "the tiles in assembly");
    alignas(32) float sums[12 * 8];
    const int64_t plane4 = plane * int64_t{sizeof(float)}, wp4 = wp * int64_t{sizeof(float)};
    const float* row = xq;
    int64_t rows_left = 0;
    if constexpr (NV == 2)
        FASTNN_CONV_TILE_SUMS(FASTNN_CONV_TAP);
    else
        FASTNN_CONV_TILE_SUMS(FASTNN_CONV_TAP4);
    for (int o = 0; o < OB; ++o)
        for (int v = 0; v < NV; ++v) acc[o][v] = _mm256_load_ps(sums + (NV * o + v) * 8);
}
#undef FASTNN_CONV_TAP
#undef FASTNN_CONV_TAP4
#undef FASTNN_CONV_TILE_SUMS

// One tap of the pixel tile: 16 channels' weights (at byte W of the block), then each of the
// 6 pixels' input (at byte X past its base, plus off) times both; accumulator (p, v) in
// ymm(2 p + v).
#define FASTNN_PIXEL_TAP(X, W)                                                             \
    "vmovups " #W "(%[w]), %%ymm12\n\t"                                                     \
    "vmovups " #W "+32(%[w]), %%ymm13\n\t"                                                  \
    "vbroadcastss " #X "(%[b0],%[off],1), %%ymm14\n\t"                                      \
    "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n\t"                                              \
    "vbroadcastss " #X "(%[b1],%[off],1), %%ymm15\n\t"                                      \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n\t"                                              \
    "vbroadcastss " #X "(%[b2],%[off],1), %%ymm14\n\t"                                      \
    "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n\t"                                              \
    "vbroadcastss " #X "(%[b3],%[off],1), %%ymm15\n\t"                                      \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n\t"                                              \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n\t"                                              \
    "vbroadcastss " #X "(%[b4],%[off],1), %%ymm14\n\t"                                      \
    "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n\t"                                              \
    "vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n\t"                                              \
    "vbroadcastss " #X "(%[b5],%[off],1), %%ymm15\n\t"                                      \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n\t"                                             \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n\t"

// pixel_tile's sums for 6 pixels x 2 vectors of channels, kw = 3: over channels, kernel rows,
// then the row's three taps, as the template's loop (the same bits).
void Avx2::pixel_sums(const float* const* base, int64_t c, int64_t plane, int64_t wp,
                      int64_t kh, const float* w, V (&acc)[6][2]) {
    alignas(32) float sums[12 * 8];
    const int64_t plane4 = plane * int64_t{sizeof(float)}, wp4 = wp * int64_t{sizeof(float)};
    int64_t channel_off = 0, off = 0, rows_left = 0;  // byte offsets of the channel, the row
    asm volatile(
        FASTNN_AVX2_TILE_ZERO
        "test %[c], %[c]\n\t"
        "jle 3f\n\t"
        "1:\n\t"  // a channel
        "mov %[channel_off], %[off]\n\t"
        "mov %[kh], %[rows_left]\n\t"
        "test %[rows_left], %[rows_left]\n\t"
        "jle 4f\n\t"
        ".p2align 5\n\t"
        "2:\n\t"  // a kernel row: three taps
        FASTNN_PIXEL_TAP(0, 0) FASTNN_PIXEL_TAP(4, 64) FASTNN_PIXEL_TAP(8, 128)
        "add $192, %[w]\n\t"
        "add %[wp4], %[off]\n\t"
        "dec %[rows_left]\n\t"
        "jnz 2b\n\t"
        "4:\n\t"
        "add %[plane4], %[channel_off]\n\t"
        "dec %[c]\n\t"
        "jnz 1b\n\t"
        "3:\n\t"
        FASTNN_AVX2_TILE_STORE(sums)
        : [w] "+r"(w), [c] "+r"(c), [channel_off] "+r"(channel_off), [off] "+r"(off),
          [rows_left] "+r"(rows_left)
        : [kh] "m"(kh), [wp4] "m"(wp4), [plane4] "m"(plane4), [sums] "r"(sums),
          [b0] "r"(base[0]), [b1] "r"(base[1]), [b2] "r"(base[2]), [b3] "r"(base[3]),
          [b4] "r"(base[4]), [b5] "r"(base[5])
        : FASTNN_AVX2_TILE_CLOBBERS);
    for (int p = 0; p < 6; ++p)
        for (int v = 0; v < 2; ++v) acc[p][v] = _mm256_load_ps(sums + (2 * p + v) * 8);
}
#undef FASTNN_PIXEL_TAP

}  // namespace

const DirectConvKernels kDirectConvAvx2 = direct::kernels<Avx2>();

}  // namespace fastnn
