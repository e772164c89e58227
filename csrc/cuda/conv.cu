// The convolution on the GPU, as cpu/conv.cpp's (NCHW, torch's weight layout, groups, stride,
// padding, dilation; depthwise is the groups == channels case): direct kernels, one thread per
// element of what it computes, every sum in a fixed order (no atomics), so a run repeats bit
// for bit. The weight's and the bias's gradients are summed image by image, then over the
// images in order. Readable rather than fast: the GEMM formulation (im2col on cuBLAS) or cuDNN
// is what the speed targets need.
#include "activation_math.cuh"
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

// What the kernels read of ConvGeometry (whose out_h / out_w are host functions).
struct Conv {
    int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, oc, groups;
    __host__ __device__ int64_t cg() const { return c / groups; }   // input channels per group
    __host__ __device__ int64_t og() const { return oc / groups; }  // output channels per group
};

Conv conv_of(const ConvGeometry& g, int64_t oc, int64_t groups) {
    return {g.n, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.out_h(), g.out_w(), oc, groups};
}

__global__ void forward_kernel(Conv g, const float* x, const float* w, const float* bias, Activation act,
                               float alpha, float* y) {
    const int64_t cg = g.cg();
    FASTNN_GRID_STRIDE(e, g.n * g.oc * g.oh * g.ow) {
        const int64_t ox = e % g.ow, oy = e / g.ow % g.oh, o = e / (g.ow * g.oh) % g.oc, n = e / (g.ow * g.oh * g.oc);
        const int64_t c0 = o / g.og() * cg;
        float s = 0.0f;
        for (int64_t c = 0; c < cg; ++c)
            for (int64_t ky = 0; ky < g.kh; ++ky) {
                const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
                if (iy < 0 || iy >= g.h) continue;
                for (int64_t kx = 0; kx < g.kw; ++kx) {
                    const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                    if (ix < 0 || ix >= g.w) continue;
                    s += x[((n * g.c + c0 + c) * g.h + iy) * g.w + ix] * w[((o * cg + c) * g.kh + ky) * g.kw + kx];
                }
            }
        if (bias) s += bias[o];
        y[e] = activate(act, s, alpha);
    }
}

// dx at (n, c, iy, ix): every output position whose window reads it, through the weight tap.
__global__ void input_grad_kernel(Conv g, const float* w, const float* gy, float* dx) {
    const int64_t cg = g.cg(), og = g.og();
    FASTNN_GRID_STRIDE(e, g.n * g.c * g.h * g.w) {
        const int64_t ix = e % g.w, iy = e / g.w % g.h, c = e / (g.w * g.h) % g.c, n = e / (g.w * g.h * g.c);
        const int64_t group = c / cg, cc = c % cg;
        float s = 0.0f;
        for (int64_t o = group * og; o < (group + 1) * og; ++o)
            for (int64_t ky = 0; ky < g.kh; ++ky) {
                const int64_t ty = iy + g.ph - ky * g.dh;
                if (ty < 0 || ty % g.sh) continue;
                const int64_t oy = ty / g.sh;
                if (oy >= g.oh) continue;
                for (int64_t kx = 0; kx < g.kw; ++kx) {
                    const int64_t tx = ix + g.pw - kx * g.dw;
                    if (tx < 0 || tx % g.sw) continue;
                    const int64_t ox = tx / g.sw;
                    if (ox >= g.ow) continue;
                    s += gy[((n * g.oc + o) * g.oh + oy) * g.ow + ox] * w[((o * cg + cc) * g.kh + ky) * g.kw + kx];
                }
            }
        dx[e] = s;
    }
}

// partial[k * n_images + n]: image n's share of the weight gradient's element k (o, cc, ky, kx).
__global__ void weight_grad_partials(Conv g, const float* x, const float* gy, float* partial) {
    const int64_t cg = g.cg(), taps = g.kh * g.kw, weights = g.oc * cg * taps;
    FASTNN_GRID_STRIDE(e, weights * g.n) {
        const int64_t k = e / g.n, n = e % g.n;
        const int64_t kx = k % g.kw, ky = k / g.kw % g.kh, cc = k / taps % cg, o = k / (taps * cg);
        const int64_t c = o / g.og() * cg + cc;
        float s = 0.0f;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t ox = 0; ox < g.ow; ++ox) {
                const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                if (ix < 0 || ix >= g.w) continue;
                s += gy[((n * g.oc + o) * g.oh + oy) * g.ow + ox] * x[((n * g.c + c) * g.h + iy) * g.w + ix];
            }
        }
        partial[e] = s;
    }
}

// partial[o * n_images + n]: image n's share of the bias gradient of channel o.
__global__ void bias_grad_partials(Conv g, const float* gy, float* partial) {
    FASTNN_GRID_STRIDE(e, g.oc * g.n) {
        const int64_t o = e / g.n, n = e % g.n;
        const float* plane = gy + (n * g.oc + o) * g.oh * g.ow;
        float s = 0.0f;
        for (int64_t i = 0; i < g.oh * g.ow; ++i) s += plane[i];
        partial[e] = s;
    }
}

// out[k] = beta * out[k] + the sum over the images of partial[k * n_images + n], in order
// (beta 1: accumulate, as the bias gradient does; 0: out only written).
__global__ void sum_images(const float* partial, int64_t count, int64_t images, float beta, float* out) {
    FASTNN_GRID_STRIDE(k, count) {
        float s = 0.0f;
        for (int64_t n = 0; n < images; ++n) s += partial[k * images + n];
        out[k] = beta == 0.0f ? s : beta * out[k] + s;
    }
}

}  // namespace

void conv2d_forward(const ConvGeometry& geometry, int64_t out_channels, int64_t groups, const float* x,
                    const float* w, const float* bias, Activation act, float alpha, float* y) {
    const Conv g = conv_of(geometry, out_channels, groups);
    const int64_t total = g.n * g.oc * g.oh * g.ow;
    if (total <= 0) return;
    forward_kernel<<<grid_for(total), kThreads>>>(g, x, w, bias, act, alpha, y);
    check_launch("conv2d_forward");
}

void conv2d_backward(const ConvGeometry& geometry, int64_t out_channels, int64_t groups, const float* x,
                     const float* w, const float* gy, float* dx, float* dw, float dw_beta, float* db, float* scratch) {
    const Conv g = conv_of(geometry, out_channels, groups);
    if (dx && g.n * g.c * g.h * g.w > 0) {
        input_grad_kernel<<<grid_for(g.n * g.c * g.h * g.w), kThreads>>>(g, w, gy, dx);
        check_launch("conv2d_backward (input)");
    }
    const int64_t weights = g.oc * g.cg() * g.kh * g.kw;
    if (weights > 0) {
        weight_grad_partials<<<grid_for(weights * g.n), kThreads>>>(g, x, gy, scratch);
        check_launch("conv2d_backward (weight)");
        sum_images<<<grid_for(weights), kThreads>>>(scratch, weights, g.n, dw_beta, dw);
        check_launch("conv2d_backward (weight)");
    }
    if (db && g.oc > 0) {
        bias_grad_partials<<<grid_for(g.oc * g.n), kThreads>>>(g, gy, scratch);
        check_launch("conv2d_backward (bias)");
        sum_images<<<grid_for(g.oc), kThreads>>>(scratch, g.oc, g.n, 1.0f, db);
        check_launch("conv2d_backward (bias)");
    }
}

}  // namespace fastnn::cuda
