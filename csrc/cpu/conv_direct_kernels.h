// The direct convolution's kernels (conv_direct.h), written once over a vector type: each
// ISA's file (conv_direct_avx512.cpp, conv_direct_avx2.cpp) instantiates them with its own
// vector operations and register blocking, compiled for that ISA. Include only there.
#pragma once
#include <algorithm>
#include <cstdint>

#include "conv_direct.h"

namespace fastnn {
namespace direct {

// Vec supplies: V (the vector), W (floats in one, under 32), zero, load, set1, fmadd, add,
// sum (of the lanes), copy (dst[0, n) = src[0, n), or zeros where src is nullptr),
// store_lanes (the lanes set in `lanes`, in order, to dst[0, count)), kAsmSums<OB, NV, KW>
// and kAsmPixelSums<P, NV, KW> (true where tile_sums and pixel_sums compute forward_tile's
// and pixel_tile's sums, in assembly), and the blocking:
// kForwardChannels output channels per forward block, whose vectors per tile
// forward_vectors(ob) gives, the tail block kTailChannels (direct_block_size), and
// kGradChannels x kGradTaps accumulators in the weight gradient's blocks (kGradChannels
// gradient vectors and one image vector live beside them).

// Every accumulator of an R x C tile to zero.
template <class Vec, int R, int C>
inline void zero_tile(typename Vec::V (&acc)[R][C]) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 6
        for (int j = 0; j < C; ++j) acc[i][j] = Vec::zero();
}

// OB output channels x NV vectors of q: OB x NV accumulators, each tap loading NV vectors of
// the image and broadcasting OB weights (packed: a tap's weights side by side, in one cache
// line, not a row of the weight apart each). KW > 0 is the kernel's width (kw) known at compile
// time, so that a kernel row's taps unroll: 3 x 3 layers (64 -> 64 channels, 16 x 16, batch 32,
// one Xeon core) went from 125-130 to 149-157 GFLOP/s forward.
// The tile starts at q0 = row wp + col of the grid.
template <class Vec, int OB, int NV, int KW>
void forward_tile(const float* xq, int64_t c, int64_t plane, int64_t wp, int64_t kh, int64_t kw_,
                  const float* w, int64_t q0, int64_t row, int64_t col, const DirectOutput& out) {
    static_assert(Vec::W < 32, "lane masks are 32 bits");
    using V = typename Vec::V;
    const int64_t kw = KW > 0 ? KW : kw_;
    V acc[OB][NV];
    if constexpr (Vec::template kAsmSums<OB, NV, KW>) {
        Vec::tile_sums(xq, c, plane, wp, kh, w, acc);  // the same sums in the same order
    } else {
        zero_tile<Vec>(acc);
        const float* wt = w;
        for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t ky = 0; ky < kh; ++ky) {
                const float* row = xq + ci * plane + ky * wp;
#pragma GCC unroll 8
                for (int64_t kx = 0; kx < kw; ++kx, wt += Vec::kForwardChannels) {
                    V xv[NV];
#pragma GCC unroll 6
                    for (int v = 0; v < NV; ++v) xv[v] = Vec::load(row + kx + Vec::W * v);
#pragma GCC unroll 8
                    for (int o = 0; o < OB; ++o) {
                        const V wv = Vec::set1(wt[o]);
#pragma GCC unroll 6
                        for (int v = 0; v < NV; ++v) acc[o][v] = Vec::fmadd(wv, xv[v], acc[o][v]);
                    }
                }
            }
    }
    // Each vector's output pixels: the lanes whose q is one (column below ow, q below span),
    // and where the first of them goes
    uint32_t lanes[NV];
    int count[NV];
    int64_t at[NV];
    const int64_t ow = out.ow;
    auto bits = [](int64_t from, int64_t to) {  // lanes [from, to), within the vector
        to = std::min<int64_t>(to, Vec::W);
        return from >= to ? 0u : ((1u << to) - 1u) & ~((1u << from) - 1u);
    };
    for (int v = 0; v < NV; ++v) {
        const int64_t q = q0 + Vec::W * v;
        at[v] = row * ow + std::min(col, ow);
        uint32_t m = bits(0, ow - col);
        for (int64_t next = wp - col; next < Vec::W; next += wp) m |= bits(next, next + ow);
        lanes[v] = m & bits(0, out.span - q);
        count[v] = __builtin_popcount(lanes[v]);
        for (col += Vec::W; col >= wp; col -= wp) ++row;
    }
    float* const y = out.y;
    const int64_t out_plane = out.plane;
    const float* const bias = out.bias;
#pragma GCC unroll 8
    for (int o = 0; o < OB; ++o) {
        const V b = Vec::set1(bias ? bias[o] : 0.0f);
#pragma GCC unroll 6
        for (int v = 0; v < NV; ++v)
            if (count[v])
                Vec::store_lanes(y + o * out_plane + at[v], bias ? Vec::add(acc[o][v], b) : acc[o][v],
                                 lanes[v], count[v]);
    }
}

// OB output channels over all of q: tiles of forward_vectors(OB) vectors, then smaller ones.
template <class Vec, int OB, int KW>
void forward_channels(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                      int64_t kw, const float* w, int64_t qn, const DirectOutput& out, int64_t rest) {
    if constexpr (OB > 1)
        if (rest < OB) return forward_channels<Vec, OB - 1, KW>(xp, c, plane, wp, kh, kw, w, qn, out, rest);
    constexpr int NV = Vec::forward_vectors(OB), step = Vec::W * NV;
    int64_t q = 0, row = 0, col = 0;  // q = row wp + col, followed without a division a tile
    auto advance = [&](int64_t by) {
        q += by;
        for (col += by; col >= wp; col -= wp) ++row;
    };
    for (; q + step <= qn; advance(step)) forward_tile<Vec, OB, NV, KW>(xp + q, c, plane, wp, kh, kw, w, q, row, col, out);
    // The rest two vectors at a time where it can (one alone loads as much as it computes:
    // an 8 x 8 image's 80 columns were 40% single vectors, 6% of a VGG step)
    if constexpr (NV > 2)
        for (; q + 2 * Vec::W <= qn; advance(2 * Vec::W))
            forward_tile<Vec, OB, 2, KW>(xp + q, c, plane, wp, kh, kw, w, q, row, col, out);
    for (; q < qn; advance(Vec::W)) forward_tile<Vec, OB, 1, KW>(xp + q, c, plane, wp, kh, kw, w, q, row, col, out);
}

template <class Vec>
void forward(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh, int64_t kw,
             const float* w, int64_t oc, int64_t qn, const DirectOutput& out) {
    const int64_t k = c * kh * kw;
    constexpr int B = Vec::kForwardChannels;
    const auto channels = kw == 3   ? forward_channels<Vec, B, 3>
                          : kw == 5 ? forward_channels<Vec, B, 5>  // LeNet's
                                    : forward_channels<Vec, B, 0>;
    for (int64_t o = 0, b = 0, size = 0; o < oc; o += size, ++b) {
        size = direct_block_size(oc - o, B, Vec::kTailChannels);
        const DirectOutput block{out.y + o * out.plane, out.plane, out.ow, out.span,
                                 out.bias ? out.bias + o : nullptr};
        channels(xp, c, plane, wp, kh, kw, w + b * k * B, qn, block, size);
    }
}

// P consecutive output pixels (raster order, rows crossed) x NV vectors of output channels:
// P x NV accumulators, each tap loading NV vectors of packed weights and broadcasting P
// input values, read in place at the pixels' offsets `at` in the padded plane. The tile goes
// through a buffer to its count pixels of each channel's plane: 384 scalar stores a tile,
// against 27648 FMAs at 128 input channels.
template <class Vec, int P, int NV, int KW>
void pixel_tile(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh, int64_t kw_,
                const float* w, const int64_t* at, int count, float* y, int64_t out_plane,
                const float* bias) {
    using V = typename Vec::V;
    constexpr int B = Vec::W * NV;
    const int64_t kw = KW > 0 ? KW : kw_;
    V acc[P][NV];
    const float* base[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) base[p] = xp + at[p];
    if constexpr (Vec::template kAsmPixelSums<P, NV, KW>) {
        Vec::pixel_sums(base, c, plane, wp, kh, w, acc);  // the same sums in the same order
    } else {
        zero_tile<Vec>(acc);
        const float* wt = w;
        for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t ky = 0; ky < kh; ++ky) {
                const int64_t row = ci * plane + ky * wp;
#pragma GCC unroll 8
                for (int64_t kx = 0; kx < kw; ++kx, wt += B) {
                    V wv[NV];
#pragma GCC unroll 4
                    for (int v = 0; v < NV; ++v) wv[v] = Vec::load(wt + Vec::W * v);
#pragma GCC unroll 8
                    for (int p = 0; p < P; ++p) {
                        const V xv = Vec::set1(base[p][row + kx]);
#pragma GCC unroll 4
                        for (int v = 0; v < NV; ++v) acc[p][v] = Vec::fmadd(xv, wv[v], acc[p][v]);
                    }
                }
            }
    }
    alignas(64) float tile[P][B];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) Vec::store(tile[p] + Vec::W * v, acc[p][v]);
    for (int o = 0; o < B; ++o) {  // forward_tile's bits: no + 0.0f without a bias (-0 stays -0)
        float* dst = y + o * out_plane;
        if (bias)
            for (int p = 0; p < count; ++p) dst[p] = tile[p][o] + bias[o];
        else
            for (int p = 0; p < count; ++p) dst[p] = tile[p][o];
    }
}

template <class Vec, int KW>
void forward_pixels_kw(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                       int64_t kw, const float* w, int64_t oc, int64_t oh, const DirectOutput& out) {
    constexpr int P = Vec::kPixels, NV = Vec::kPixelVectors, B = Vec::W * NV;
    const int64_t k = c * kh * kw, ow = out.ow, pixels = oh * ow;
    for (int64_t o = 0; o < oc; o += B)
        for (int64_t r0 = 0; r0 < pixels; r0 += P) {
            const int count = static_cast<int>(std::min<int64_t>(P, pixels - r0));
            int64_t at[P];
            for (int p = 0; p < P; ++p) {  // past the last pixel: the last again (not stored)
                const int64_t r = r0 + std::min(p, count - 1);
                at[p] = r / ow * wp + r % ow;
            }
            pixel_tile<Vec, P, NV, KW>(xp, c, plane, wp, kh, kw, w + o * k, at, count,
                                       out.y + o * out.plane + r0, out.plane,
                                       out.bias ? out.bias + o : nullptr);
        }
}

template <class Vec>
void forward_pixels(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh, int64_t kw,
                    const float* w, int64_t oc, int64_t oh, const DirectOutput& out) {
    (kw == 3 ? forward_pixels_kw<Vec, 3> : forward_pixels_kw<Vec, 0>)(xp, c, plane, wp, kh, kw, w, oc, oh, out);
}

// OB output channels x TB taps along a kernel row: OB x TB accumulators over the images and
// q, each step loading OB gradient vectors and TB image vectors, reduced to sums at the end.
template <class Vec, int OB, int TB>
void weight_grad_tile(const float* xr, int64_t x_stride, const float* g, int64_t g_stride,
                      int64_t images, int64_t qn, float* dw, int64_t k) {
    using V = typename Vec::V;
    V acc[OB][TB];
    zero_tile<Vec>(acc);
    for (int64_t i = 0; i < images; ++i) {
        const float* x = xr + i * x_stride;
        const float* gi = g + i * g_stride;
        for (int64_t q = 0; q < qn; q += Vec::W) {
            V gv[OB];
#pragma GCC unroll 4
            for (int o = 0; o < OB; ++o) gv[o] = Vec::load(gi + o * qn + q);
#pragma GCC unroll 5
            for (int t = 0; t < TB; ++t) {
                const V xv = Vec::load(x + t + q);
#pragma GCC unroll 4
                for (int o = 0; o < OB; ++o) acc[o][t] = Vec::fmadd(gv[o], xv, acc[o][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 5
        for (int t = 0; t < TB; ++t) dw[o * k + t] = Vec::sum(acc[o][t]);
}

// Taps [kx, kx + TB) of every kernel row, then the row's next block.
template <class Vec, int OB, int TB>
void weight_grad_taps(const float* xr, int64_t x_stride, const float* g, int64_t g_stride,
                      int64_t images, int64_t qn, float* dw, int64_t k, int64_t rest) {
    if constexpr (TB > 1)
        if (rest < TB) return weight_grad_taps<Vec, OB, TB - 1>(xr, x_stride, g, g_stride, images, qn, dw, k, rest);
    weight_grad_tile<Vec, OB, TB>(xr, x_stride, g, g_stride, images, qn, dw, k);
}

template <class Vec, int OB>
void weight_grad_channels(const float* xp, int64_t x_stride, const float* g, int64_t g_stride,
                          int64_t images, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                          int64_t kw, int64_t qn, float* dw, int64_t k, int64_t rest) {
    if constexpr (OB > 1)
        if (rest < OB)
            return weight_grad_channels<Vec, OB - 1>(xp, x_stride, g, g_stride, images, c, plane,
                                                     wp, kh, kw, qn, dw, k, rest);
    constexpr int TB = Vec::kGradTaps;
    for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t ky = 0; ky < kh; ++ky) {
            const float* row = xp + ci * plane + ky * wp;
            float* d = dw + (ci * kh + ky) * kw;
            for (int64_t kx = 0; kx < kw; kx += TB)
                weight_grad_taps<Vec, OB, TB>(row + kx, x_stride, g, g_stride, images, qn, d + kx,
                                              k, std::min<int64_t>(TB, kw - kx));
        }
}

template <class Vec>
void weight_grad(const float* xp, int64_t x_stride, const float* gq, int64_t g_stride,
                 int64_t images, int64_t c, int64_t plane, int64_t wp, int64_t kh, int64_t kw,
                 int64_t oc, int64_t qn, float* dw) {
    const int64_t k = c * kh * kw;
    constexpr int B = Vec::kGradChannels;
    for (int64_t o = 0; o < oc; o += B)
        weight_grad_channels<Vec, B>(xp, x_stride, gq + o * qn, g_stride, images, c, plane, wp, kh,
                                     kw, qn, dw + o * k, k, std::min<int64_t>(B, oc - o));
}

template <class Vec>
void pad(const float* x, int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw, float* xp) {
    const int64_t wp = w + pw, plane = (h + 2 * ph) * wp + pw;
    for (int64_t ci = 0; ci < c; ++ci) {
        float* p = xp + ci * plane;
        Vec::copy(nullptr, ph * wp, p);
        for (int64_t y = 0; y < h; ++y) {
            float* row = p + (ph + y) * wp;
            Vec::copy(nullptr, pw, row);
            Vec::copy(x + (ci * h + y) * w, w, row + pw);
        }
        Vec::copy(nullptr, ph * wp + pw, p + (ph + h) * wp);
    }
    Vec::copy(nullptr, 16, xp + c * plane);
}

template <class Vec>
void to_grid(const float* y, int64_t c, int64_t oh, int64_t ow, int64_t wp, int64_t qn, float* yq) {
    for (int64_t o = 0; o < c; ++o) {
        float* p = yq + o * qn;
        for (int64_t oy = 0; oy < oh; ++oy) {
            Vec::copy(y + (o * oh + oy) * ow, ow, p + oy * wp);
            const int64_t end = oy + 1 == oh ? qn : (oy + 1) * wp;  // the row's gap, or the tail
            Vec::copy(nullptr, end - (oy * wp + ow), p + oy * wp + ow);
        }
    }
}

template <class Vec>
constexpr DirectConvKernels kernels() {
    if constexpr (Vec::kPixels > 0)
        return {Vec::kForwardChannels, forward<Vec>, Vec::W * Vec::kPixelVectors, forward_pixels<Vec>,
                weight_grad<Vec>, pad<Vec>, to_grid<Vec>, Vec::kTailChannels};
    else
        return {Vec::kForwardChannels, forward<Vec>, 0, nullptr, weight_grad<Vec>, pad<Vec>, to_grid<Vec>,
                Vec::kTailChannels};
}

}  // namespace direct
}  // namespace fastnn
