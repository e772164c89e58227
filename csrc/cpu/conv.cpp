// 2-D convolution, NCHW with torch's weight layout (OC, C / groups, KH, KW), as a GEMM over
// the im2col matrix: one row per output pixel (n, oy, ox), one column per input value of its
// patch (c, ky, kx) in the weight's order. Rows x W^T is then the output with one column per
// output channel: the Dense layer's product, with bias and activation in the GEMM's epilogue
// (the layer composes im2col, the GEMM and from_rows; its backward to_rows, the GEMMs and
// col2im). Measured against an NHWC layout kept inside: see the Conv2d layer.
// The depthwise case (groups == channels) has its own direct loops: its GEMMs would have k =
// KH x KW (9) and n = the channel multiplier (1), far too thin for the microkernel.
#include <algorithm>
#include <cstring>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"

namespace fastnn {

namespace {

// Work units of at least this many floats per thread.
int64_t grain_rows(int64_t floats_per_row) {
    return std::max<int64_t>(1, kGrain / std::max<int64_t>(floats_per_row, 1));
}

}  // namespace

// ---- the reference: the direct sum, in double --------------------------------------------

void conv2d_reference(const ConvGeometry& g, int64_t out_channels, int64_t groups,
                      const float* x, const float* w, const float* bias, float* y) {
    const int64_t oh = g.out_h(), ow = g.out_w(), cg = g.c / groups, og = out_channels / groups;
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t o = 0; o < out_channels; ++o) {
            const int64_t grp = o / og;
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    double s = bias ? bias[o] : 0.0;
                    for (int64_t ci = 0; ci < cg; ++ci)
                        for (int64_t ky = 0; ky < g.kh; ++ky)
                            for (int64_t kx = 0; kx < g.kw; ++kx) {
                                const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                                const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                                const int64_t c = grp * cg + ci;
                                s += double(x[((n * g.c + c) * g.h + iy) * g.w + ix]) *
                                     w[((o * cg + ci) * g.kh + ky) * g.kw + kx];
                            }
                    y[((n * out_channels + o) * oh + oy) * ow + ox] = static_cast<float>(s);
                }
        }
}

// ---- im2col and its adjoint ----------------------------------------------------------------

void im2col(const ConvGeometry& g, const float* x, float* col) {
    const int64_t oh = g.out_h(), ow = g.out_w(), kk = g.kh * g.kw, width = g.c * kk;
    parallel_for(g.n * oh * ow, grain_rows(width), [=](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / (oh * ow), oy = r / ow % oh, ox = r % ow;
            float* out = col + r * width;
            for (int64_t c = 0; c < g.c; ++c) {
                const float* plane = x + (n * g.c + c) * g.h * g.w;
                for (int64_t ky = 0; ky < g.kh; ++ky) {
                    const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                    float* o = out + c * kk + ky * g.kw;
                    if (iy < 0 || iy >= g.h) {
                        std::fill(o, o + g.kw, 0.0f);
                        continue;
                    }
                    const float* src = plane + iy * g.w;
                    for (int64_t kx = 0; kx < g.kw; ++kx) {
                        const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                        o[kx] = ix >= 0 && ix < g.w ? src[ix] : 0.0f;
                    }
                }
            }
        }
    });
}

void col2im(const ConvGeometry& g, const float* col, float* dx) {
    // Threads take whole images: every value of dx is summed by one thread, over its patch
    // rows in a fixed order (row-major), so the bits do not depend on the thread count.
    const int64_t oh = g.out_h(), ow = g.out_w(), kk = g.kh * g.kw, width = g.c * kk;
    const int64_t plane = g.h * g.w;
    parallel_for(g.n, grain_rows(oh * ow * width), [=](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
            float* img = dx + n * g.c * plane;
            std::fill(img, img + g.c * plane, 0.0f);
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    const float* row = col + ((n * oh + oy) * ow + ox) * width;
                    for (int64_t c = 0; c < g.c; ++c)
                        for (int64_t ky = 0; ky < g.kh; ++ky) {
                            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                            if (iy < 0 || iy >= g.h) continue;
                            float* dst = img + c * plane + iy * g.w;
                            const float* src = row + c * kk + ky * g.kw;
                            for (int64_t kx = 0; kx < g.kw; ++kx) {
                                const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                                if (ix >= 0 && ix < g.w) dst[ix] += src[kx];
                            }
                        }
                }
        }
    });
}

// ---- NCHW <-> rows (one row per pixel, one column per channel) ----------------------------

namespace {

// out (cols x rows) = in (rows x cols)^T, in 32 x 32 tiles.
void transpose(const float* in, float* out, int64_t rows, int64_t cols) {
    constexpr int64_t T = 32;
    for (int64_t r0 = 0; r0 < rows; r0 += T)
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            const int64_t r1 = std::min(rows, r0 + T), c1 = std::min(cols, c0 + T);
            for (int64_t c = c0; c < c1; ++c)
                for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = in[r * cols + c];
        }
}

}  // namespace

void to_rows(const float* x, float* rows, int64_t n, int64_t c, int64_t hw) {
    parallel_for(n, grain_rows(c * hw), [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) transpose(x + i * c * hw, rows + i * c * hw, c, hw);
    });
}

void from_rows(const float* rows, float* x, int64_t n, int64_t c, int64_t hw) {
    parallel_for(n, grain_rows(c * hw), [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) transpose(rows + i * c * hw, x + i * c * hw, hw, c);
    });
}

// ---- depthwise: output channel o reads input channel o / multiplier only -----------------

void depthwise_forward(const ConvGeometry& g, int64_t multiplier, const float* x, const float* w,
                       const float* bias, float* y) {
    const int64_t oh = g.out_h(), ow = g.out_w(), oc = g.c * multiplier;
    parallel_for(g.n * oc, grain_rows(oh * ow * g.kh * g.kw), [=](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t n = p / oc, o = p % oc;
            const float* plane = x + (n * g.c + o / multiplier) * g.h * g.w;
            const float* k = w + o * g.kh * g.kw;
            float* out = y + p * oh * ow;
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    float s = 0.0f;
                    for (int64_t ky = 0; ky < g.kh; ++ky) {
                        const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                        if (iy < 0 || iy >= g.h) continue;
                        for (int64_t kx = 0; kx < g.kw; ++kx) {
                            const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                            if (ix >= 0 && ix < g.w) s += plane[iy * g.w + ix] * k[ky * g.kw + kx];
                        }
                    }
                    out[oy * ow + ox] = bias ? s + bias[o] : s;
                }
        }
    });
}

void depthwise_backward(const ConvGeometry& g, int64_t multiplier, const float* x,
                        const float* w, const float* gy, float* dx, float* dw, float dw_beta) {
    const int64_t oh = g.out_h(), ow = g.out_w(), oc = g.c * multiplier, kk = g.kh * g.kw;
    // dx: threads take input planes (n, c); each sums its multiplier output planes in order.
    if (dx)
        parallel_for(g.n * g.c, grain_rows(multiplier * oh * ow * kk), [=](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) {
                const int64_t n = p / g.c, c = p % g.c;
                float* d = dx + p * g.h * g.w;
                std::fill(d, d + g.h * g.w, 0.0f);
                for (int64_t m = 0; m < multiplier; ++m) {
                    const int64_t o = c * multiplier + m;
                    const float* go = gy + (n * oc + o) * oh * ow;
                    const float* k = w + o * kk;
                    for (int64_t oy = 0; oy < oh; ++oy)
                        for (int64_t ox = 0; ox < ow; ++ox) {
                            const float v = go[oy * ow + ox];
                            for (int64_t ky = 0; ky < g.kh; ++ky) {
                                const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                                if (iy < 0 || iy >= g.h) continue;
                                for (int64_t kx = 0; kx < g.kw; ++kx) {
                                    const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                                    if (ix >= 0 && ix < g.w) d[iy * g.w + ix] += v * k[ky * g.kw + kx];
                                }
                            }
                        }
                }
            }
        });
    // dw: threads take output channels; each sums over the batch in order, in double.
    parallel_for(oc, grain_rows(g.n * oh * ow * kk), [=](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
            const int64_t c = o / multiplier;
            for (int64_t ky = 0; ky < g.kh; ++ky)
                for (int64_t kx = 0; kx < g.kw; ++kx) {
                    double s = 0.0;
                    for (int64_t n = 0; n < g.n; ++n) {
                        const float* plane = x + (n * g.c + c) * g.h * g.w;
                        const float* go = gy + (n * oc + o) * oh * ow;
                        for (int64_t oy = 0; oy < oh; ++oy) {
                            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                            if (iy < 0 || iy >= g.h) continue;
                            for (int64_t ox = 0; ox < ow; ++ox) {
                                const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                                if (ix >= 0 && ix < g.w) s += double(plane[iy * g.w + ix]) * go[oy * ow + ox];
                            }
                        }
                    }
                    float& out = dw[o * kk + ky * g.kw + kx];
                    out = dw_beta == 0.0f ? static_cast<float>(s) : dw_beta * out + static_cast<float>(s);
                }
        }
    });
}

}  // namespace fastnn
