// 2-D pooling over planes (the n x c planes of an NCHW batch), as torch.nn.functional's
// max_pool2d and avg_pool2d (floor mode; avg counts the padding, torch's default). Threads
// take whole planes; the backward passes sum into each input value in a fixed order, so
// results do not depend on the thread count. These loops are the reference themselves.
#include <algorithm>
#include <cmath>
#include <limits>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"

namespace fastnn {

namespace {

int64_t plane_grain(const PoolGeometry& g) {
    return std::max<int64_t>(1, kGrain / std::max<int64_t>(g.out_h() * g.out_w() * g.kh * g.kw, 1));
}

}  // namespace

void maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int64_t* argmax) {
    const int64_t oh = g.out_h(), ow = g.out_w();
    parallel_for(g.planes, plane_grain(g), [=](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* in = x + p * g.h * g.w;
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    const int64_t y0 = std::max<int64_t>(oy * g.sh - g.ph, 0);
                    const int64_t y1 = std::min(oy * g.sh - g.ph + g.kh, g.h);
                    const int64_t x0 = std::max<int64_t>(ox * g.sw - g.pw, 0);
                    const int64_t x1 = std::min(ox * g.sw - g.pw + g.kw, g.w);
                    // As torch: the first of equal maxima; a NaN wins, the last one seen
                    int64_t best = y0 * g.w + x0;
                    float value = -std::numeric_limits<float>::infinity();
                    for (int64_t iy = y0; iy < y1; ++iy)
                        for (int64_t ix = x0; ix < x1; ++ix) {
                            const float v = in[iy * g.w + ix];
                            if (v > value || std::isnan(v)) {
                                value = v;
                                best = iy * g.w + ix;
                            }
                        }
                    const int64_t o = (p * oh + oy) * ow + ox;
                    y[o] = value;
                    argmax[o] = best;
                }
        }
    });
}

void maxpool2d_backward(const PoolGeometry& g, const float* gy, const int64_t* argmax, float* dx) {
    const int64_t plane_out = g.out_h() * g.out_w(), plane_in = g.h * g.w;
    parallel_for(g.planes, plane_grain(g), [=](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            float* d = dx + p * plane_in;
            std::fill(d, d + plane_in, 0.0f);
            for (int64_t o = 0; o < plane_out; ++o) d[argmax[p * plane_out + o]] += gy[p * plane_out + o];
        }
    });
}

void avgpool2d_forward(const PoolGeometry& g, const float* x, float* y) {
    const int64_t oh = g.out_h(), ow = g.out_w();
    const float inv = 1.0f / static_cast<float>(g.kh * g.kw);  // the padding counts (torch's default)
    parallel_for(g.planes, plane_grain(g), [=](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* in = x + p * g.h * g.w;
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    const int64_t y0 = std::max<int64_t>(oy * g.sh - g.ph, 0);
                    const int64_t y1 = std::min(oy * g.sh - g.ph + g.kh, g.h);
                    const int64_t x0 = std::max<int64_t>(ox * g.sw - g.pw, 0);
                    const int64_t x1 = std::min(ox * g.sw - g.pw + g.kw, g.w);
                    float s = 0.0f;
                    for (int64_t iy = y0; iy < y1; ++iy)
                        for (int64_t ix = x0; ix < x1; ++ix) s += in[iy * g.w + ix];
                    y[(p * oh + oy) * ow + ox] = s * inv;
                }
        }
    });
}

void avgpool2d_backward(const PoolGeometry& g, const float* gy, float* dx) {
    const int64_t oh = g.out_h(), ow = g.out_w();
    const float inv = 1.0f / static_cast<float>(g.kh * g.kw);
    parallel_for(g.planes, plane_grain(g), [=](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            float* d = dx + p * g.h * g.w;
            std::fill(d, d + g.h * g.w, 0.0f);
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    const float v = gy[(p * oh + oy) * ow + ox] * inv;
                    const int64_t y0 = std::max<int64_t>(oy * g.sh - g.ph, 0);
                    const int64_t y1 = std::min(oy * g.sh - g.ph + g.kh, g.h);
                    const int64_t x0 = std::max<int64_t>(ox * g.sw - g.pw, 0);
                    const int64_t x1 = std::min(ox * g.sw - g.pw + g.kw, g.w);
                    for (int64_t iy = y0; iy < y1; ++iy)
                        for (int64_t ix = x0; ix < x1; ++ix) d[iy * g.w + ix] += v;
                }
        }
    });
}

}  // namespace fastnn
