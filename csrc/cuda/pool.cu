// Pooling on the GPU, as cpu/pool.cpp's: max pooling keeping each window's argmax (its index
// in the input plane; the first of equal values, a NaN taken, as torch), average pooling with
// the padding counted. One thread per output element forward; backward one thread per input
// element, gathering from the windows that read it in the CPU's order (no atomics): the same
// sums bit for bit.
#include <cmath>  // INFINITY

#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

struct Pool {  // PoolGeometry with its output size (out_h / out_w are host functions)
    int64_t planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

Pool pool_of(const PoolGeometry& g) {
    return {g.planes, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.out_h(), g.out_w()};
}

__global__ void max_forward_kernel(Pool g, const float* x, float* y, int64_t* argmax) {
    FASTNN_GRID_STRIDE(e, g.planes * g.oh * g.ow) {
        const int64_t ox = e % g.ow, oy = e / g.ow % g.oh, p = e / (g.ow * g.oh);
        const float* in = x + p * g.h * g.w;
        const int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
        float value = -INFINITY;
        int64_t best = (y0 > 0 ? y0 : 0) * g.w + (x0 > 0 ? x0 : 0);  // the first pixel inside
        for (int64_t ky = 0; ky < g.kh; ++ky) {
            const int64_t iy = y0 + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; ++kx) {
                const int64_t ix = x0 + kx;
                if (ix < 0 || ix >= g.w) continue;
                const float v = in[iy * g.w + ix];
                if (v > value || v != v) {
                    value = v;
                    best = iy * g.w + ix;
                }
            }
        }
        y[e] = value;
        argmax[e] = best;
    }
}

// The output windows (oy, ox) that contain input pixel (iy, ix), as a range of each.
__device__ inline void windows_of(const Pool& g, int64_t iy, int64_t ix, int64_t& oy0, int64_t& oy1, int64_t& ox0,
                                  int64_t& ox1) {
    const int64_t ty = iy + g.ph, tx = ix + g.pw;  // oy * sh <= ty <= oy * sh + kh - 1
    oy0 = ty - g.kh + 1 > 0 ? (ty - g.kh + 1 + g.sh - 1) / g.sh : 0;
    ox0 = tx - g.kw + 1 > 0 ? (tx - g.kw + 1 + g.sw - 1) / g.sw : 0;
    oy1 = ty / g.sh + 1 < g.oh ? ty / g.sh + 1 : g.oh;
    ox1 = tx / g.sw + 1 < g.ow ? tx / g.sw + 1 : g.ow;
}

// An argmax entry that is not this pixel (or outside the plane) adds nothing here.
__global__ void max_backward_kernel(Pool g, const float* gy, const int64_t* argmax, float* dx) {
    FASTNN_GRID_STRIDE(e, g.planes * g.h * g.w) {
        const int64_t ix = e % g.w, iy = e / g.w % g.h, p = e / (g.w * g.h), here = iy * g.w + ix;
        int64_t oy0, oy1, ox0, ox1;
        windows_of(g, iy, ix, oy0, oy1, ox0, ox1);
        float s = 0.0f;
        for (int64_t oy = oy0; oy < oy1; ++oy)
            for (int64_t ox = ox0; ox < ox1; ++ox) {
                const int64_t o = (p * g.oh + oy) * g.ow + ox;
                if (argmax[o] == here) s += gy[o];
            }
        dx[e] = s;
    }
}

__global__ void avg_forward_kernel(Pool g, const float* x, float* y) {
    const float inv = 1.0f / static_cast<float>(g.kh * g.kw);  // the padding counts (torch's default)
    FASTNN_GRID_STRIDE(e, g.planes * g.oh * g.ow) {
        const int64_t ox = e % g.ow, oy = e / g.ow % g.oh, p = e / (g.ow * g.oh);
        const float* in = x + p * g.h * g.w;
        float s = 0.0f;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
            const int64_t iy = oy * g.sh - g.ph + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; ++kx) {
                const int64_t ix = ox * g.sw - g.pw + kx;
                if (ix >= 0 && ix < g.w) s += in[iy * g.w + ix];
            }
        }
        y[e] = s * inv;
    }
}

__global__ void avg_backward_kernel(Pool g, const float* gy, float* dx) {
    const float inv = 1.0f / static_cast<float>(g.kh * g.kw);
    FASTNN_GRID_STRIDE(e, g.planes * g.h * g.w) {
        const int64_t ix = e % g.w, iy = e / g.w % g.h, p = e / (g.w * g.h);
        int64_t oy0, oy1, ox0, ox1;
        windows_of(g, iy, ix, oy0, oy1, ox0, ox1);
        float s = 0.0f;
        for (int64_t oy = oy0; oy < oy1; ++oy)
            for (int64_t ox = ox0; ox < ox1; ++ox) s += gy[(p * g.oh + oy) * g.ow + ox] * inv;
        dx[e] = s;
    }
}

}  // namespace

void maxpool2d_forward(const PoolGeometry& geometry, const float* x, float* y, int64_t* argmax) {
    const Pool g = pool_of(geometry);
    if (g.planes * g.oh * g.ow <= 0) return;
    max_forward_kernel<<<grid_for(g.planes * g.oh * g.ow), kThreads>>>(g, x, y, argmax);
    check_launch("maxpool2d_forward");
}

void maxpool2d_backward(const PoolGeometry& geometry, const float* gy, const int64_t* argmax, float* dx) {
    const Pool g = pool_of(geometry);
    if (g.planes * g.h * g.w <= 0) return;
    max_backward_kernel<<<grid_for(g.planes * g.h * g.w), kThreads>>>(g, gy, argmax, dx);
    check_launch("maxpool2d_backward");
}

void avgpool2d_forward(const PoolGeometry& geometry, const float* x, float* y) {
    const Pool g = pool_of(geometry);
    if (g.planes * g.oh * g.ow <= 0) return;
    avg_forward_kernel<<<grid_for(g.planes * g.oh * g.ow), kThreads>>>(g, x, y);
    check_launch("avgpool2d_forward");
}

void avgpool2d_backward(const PoolGeometry& geometry, const float* gy, float* dx) {
    const Pool g = pool_of(geometry);
    if (g.planes * g.h * g.w <= 0) return;
    avg_backward_kernel<<<grid_for(g.planes * g.h * g.w), kThreads>>>(g, gy, dx);
    check_launch("avgpool2d_backward");
}

}  // namespace fastnn::cuda
