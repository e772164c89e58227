// The direct convolution's kernels in AVX-512 (conv_direct.h). Compiled with -mavx512f;
// called only while the AVX-512 ISA is active.
#include <immintrin.h>

#include <algorithm>

#include "conv_direct.h"

namespace fastnn {
namespace {

// OB output channels x V vectors of q: OB x V accumulators, each tap loading V vectors of
// the image and broadcasting OB weights (24 FMAs for 10 loads at OB = 6, V = 4).
template <int OB, int V>
void forward_tile(const float* xq, int64_t c, int64_t plane, int64_t wp, int64_t kh, int64_t kw,
                  const float* w, int64_t k, float* yq, int64_t qn) {
    __m512 acc[OB][V];
#pragma GCC unroll 8
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 6
        for (int v = 0; v < V; ++v) acc[o][v] = _mm512_setzero_ps();
    const float* wt = w;
    for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t ky = 0; ky < kh; ++ky) {
            const float* row = xq + ci * plane + ky * wp;
            for (int64_t kx = 0; kx < kw; ++kx, ++wt) {
                __m512 xv[V];
#pragma GCC unroll 6
                for (int v = 0; v < V; ++v) xv[v] = _mm512_loadu_ps(row + kx + 16 * v);
#pragma GCC unroll 8
                for (int o = 0; o < OB; ++o) {
                    const __m512 wv = _mm512_set1_ps(wt[o * k]);
#pragma GCC unroll 6
                    for (int v = 0; v < V; ++v) acc[o][v] = _mm512_fmadd_ps(wv, xv[v], acc[o][v]);
                }
            }
        }
#pragma GCC unroll 8
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 6
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(yq + o * qn + 16 * v, acc[o][v]);
}

// Vectors per tile for OB channels: as many accumulators as registers allow (with V image
// vectors and a broadcast beside them).
constexpr int vectors_for(int ob) { return ob >= 7 ? 3 : ob >= 5 ? 4 : 6; }

template <int OB>
void forward_channels(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                      int64_t kw, const float* w, int64_t k, int64_t qn, float* yq) {
    constexpr int V = vectors_for(OB);
    int64_t q = 0;
    for (; q + 16 * V <= qn; q += 16 * V) forward_tile<OB, V>(xp + q, c, plane, wp, kh, kw, w, k, yq + q, qn);
    for (; q < qn; q += 16) forward_tile<OB, 1>(xp + q, c, plane, wp, kh, kw, w, k, yq + q, qn);
}

void direct_forward(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                    int64_t kw, const float* w, int64_t oc, int64_t qn, float* yq) {
    const int64_t k = c * kh * kw;
    for (int64_t o = 0; o < oc; o += 8) {
        const float* wo = w + o * k;
        float* yo = yq + o * qn;
        switch (std::min<int64_t>(8, oc - o)) {
            case 1: forward_channels<1>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            case 2: forward_channels<2>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            case 3: forward_channels<3>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            case 4: forward_channels<4>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            case 5: forward_channels<5>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            case 6: forward_channels<6>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            case 7: forward_channels<7>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
            default: forward_channels<8>(xp, c, plane, wp, kh, kw, wo, k, qn, yo); break;
        }
    }
}

// OB output channels x TB taps along a kernel row: OB x TB accumulators over the images and
// q, each step loading OB gradient vectors and TB image vectors (20 FMAs for 9 loads at 4 x
// 5), reduced to sums once at the end.
template <int OB, int TB>
void weight_grad_tile(const float* xr, int64_t x_stride, const float* g, int64_t g_stride,
                      int64_t images, int64_t qn, float* dw, int64_t k) {
    __m512 acc[OB][TB];
#pragma GCC unroll 4
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 5
        for (int t = 0; t < TB; ++t) acc[o][t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < images; ++i) {
        const float* x = xr + i * x_stride;
        const float* gi = g + i * g_stride;
        for (int64_t q = 0; q < qn; q += 16) {
            __m512 gv[OB];
#pragma GCC unroll 4
            for (int o = 0; o < OB; ++o) gv[o] = _mm512_loadu_ps(gi + o * qn + q);
#pragma GCC unroll 5
            for (int t = 0; t < TB; ++t) {
                const __m512 xv = _mm512_loadu_ps(x + t + q);
#pragma GCC unroll 4
                for (int o = 0; o < OB; ++o) acc[o][t] = _mm512_fmadd_ps(gv[o], xv, acc[o][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 5
        for (int t = 0; t < TB; ++t) dw[o * k + t] = _mm512_reduce_add_ps(acc[o][t]);
}

template <int OB>
void weight_grad_channels(const float* xp, int64_t x_stride, const float* g, int64_t g_stride,
                          int64_t images, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                          int64_t kw, int64_t qn, float* dw, int64_t k) {
    for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t ky = 0; ky < kh; ++ky) {
            const float* row = xp + ci * plane + ky * wp;
            float* d = dw + (ci * kh + ky) * kw;
            for (int64_t kx = 0; kx < kw; kx += 5) {
                const float* xr = row + kx;
                switch (std::min<int64_t>(5, kw - kx)) {
                    case 1: weight_grad_tile<OB, 1>(xr, x_stride, g, g_stride, images, qn, d + kx, k); break;
                    case 2: weight_grad_tile<OB, 2>(xr, x_stride, g, g_stride, images, qn, d + kx, k); break;
                    case 3: weight_grad_tile<OB, 3>(xr, x_stride, g, g_stride, images, qn, d + kx, k); break;
                    case 4: weight_grad_tile<OB, 4>(xr, x_stride, g, g_stride, images, qn, d + kx, k); break;
                    default: weight_grad_tile<OB, 5>(xr, x_stride, g, g_stride, images, qn, d + kx, k); break;
                }
            }
        }
}

void direct_weight_grad(const float* xp, int64_t x_stride, const float* gq, int64_t g_stride,
                        int64_t images, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                        int64_t kw, int64_t oc, int64_t qn, float* dw) {
    const int64_t k = c * kh * kw;
    for (int64_t o = 0; o < oc; o += 4) {
        const float* g = gq + o * qn;
        float* d = dw + o * k;
        switch (std::min<int64_t>(4, oc - o)) {
            case 1: weight_grad_channels<1>(xp, x_stride, g, g_stride, images, c, plane, wp, kh, kw, qn, d, k); break;
            case 2: weight_grad_channels<2>(xp, x_stride, g, g_stride, images, c, plane, wp, kh, kw, qn, d, k); break;
            case 3: weight_grad_channels<3>(xp, x_stride, g, g_stride, images, c, plane, wp, kh, kw, qn, d, k); break;
            default: weight_grad_channels<4>(xp, x_stride, g, g_stride, images, c, plane, wp, kh, kw, qn, d, k); break;
        }
    }
}

inline __mmask16 first(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// dst[0, n) = src[0, n) (zeros where src is nullptr), + *add where given; 16 at a time.
inline void copy_row(const float* src, int64_t n, float* dst, const __m512* add = nullptr) {
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = first(n - j);
        __m512 v = src ? _mm512_maskz_loadu_ps(m, src + j) : _mm512_setzero_ps();
        if (add) v = _mm512_add_ps(v, *add);
        _mm512_mask_storeu_ps(dst + j, m, v);
    }
}

void direct_pad(const float* x, int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw, float* xp) {
    const int64_t wp = w + 2 * pw, hp = h + 2 * ph;
    for (int64_t ci = 0; ci < c; ++ci) {
        float* p = xp + ci * hp * wp;
        copy_row(nullptr, ph * wp, p);
        for (int64_t y = 0; y < h; ++y) {
            float* row = p + (ph + y) * wp;
            copy_row(nullptr, pw, row);
            copy_row(x + (ci * h + y) * w, w, row + pw);
            copy_row(nullptr, pw, row + pw + w);
        }
        copy_row(nullptr, ph * wp, p + (ph + h) * wp);
    }
    copy_row(nullptr, 16, xp + c * hp * wp);
}

void direct_to_grid(const float* y, int64_t c, int64_t oh, int64_t ow, int64_t wp, int64_t qn,
                    float* yq) {
    for (int64_t o = 0; o < c; ++o) {
        float* p = yq + o * qn;
        for (int64_t oy = 0; oy < oh; ++oy) {
            copy_row(y + (o * oh + oy) * ow, ow, p + oy * wp);
            const int64_t end = oy + 1 == oh ? qn : (oy + 1) * wp;  // the row's gap, or the tail
            copy_row(nullptr, end - (oy * wp + ow), p + oy * wp + ow);
        }
    }
}

void direct_from_grid(const float* yq, int64_t c, int64_t qn, int64_t wp, int64_t oh, int64_t ow,
                      const float* bias, float* y) {
    for (int64_t o = 0; o < c; ++o) {
        const __m512 add = _mm512_set1_ps(bias ? bias[o] : 0.0f);
        for (int64_t oy = 0; oy < oh; ++oy)
            copy_row(yq + o * qn + oy * wp, ow, y + (o * oh + oy) * ow, bias ? &add : nullptr);
    }
}

}  // namespace

const DirectConvKernels kDirectConvAvx512{direct_forward, direct_weight_grad, direct_pad,
                                          direct_to_grid, direct_from_grid};

}  // namespace fastnn
