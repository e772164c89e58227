// The geometry of a convolution and of a pooling, shared by the CPU's kernels (csrc/ops.h) and
// the GPU's (csrc/cuda/ops.h).
#pragma once
#include <cstdint>

namespace fastnn {

// An NCHW input and a KH x KW kernel with its strides, paddings and dilations; the bindings
// check that the output has at least one pixel.
struct ConvGeometry {
    int64_t n, c, h, w, kh, kw;
    int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
    int64_t out_h() const { return (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1; }
    int64_t out_w() const { return (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1; }
};

// Pooling over `planes` planes of h x w, floor mode.
struct PoolGeometry {
    int64_t planes, h, w, kh, kw, sh, sw, ph, pw;
    int64_t out_h() const { return (h + 2 * ph - kh) / sh + 1; }
    int64_t out_w() const { return (w + 2 * pw - kw) / sw + 1; }
};

}  // namespace fastnn
