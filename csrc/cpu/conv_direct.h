// The direct convolution at stride 1 and dilation 1: the forward pass and the input's
// gradient of every such layer, and the weight's gradient of those with few output channels
// (conv.cpp says where each runs and why). It began with LeNet, where a GEMM over im2col
// blocks was bound by building and reading the blocks (each value fed only 6 or 16 FMAs:
// 11-28 GFLOP/s); on VGG-style layers it also beat the GEMM forward and for the input's
// gradient, which no longer needs a patches' gradient block.
//
// The image is first copied with its zero padding into a buffer of row pitch wp = w + pw: each
// row its pw zeros of left padding, then its w values; a row's right padding is the next
// row's left (the last row's, pw zeros closing the plane). Output pixel (oy, ox) is then at
// q = oy * wp + ox of a "padded grid", and its tap (c, ky, kx) reads xp[c * plane + q + ky * wp
// + kx] (a column past the row's end is the next row's padding): for every tap, a run of
// consecutive q reads consecutive memory. The kernels compute whole vectors of q, the columns
// ox >= ow included (wasted: (kw - 1 - pw) / wp of the work; with padding on both sides of
// each row, (kw - 1) / (w + 2 pw), twice as much for 3 x 3 kernels: a fifth of an 8 x 8
// image's work): the forward kernel stores only the output pixels, and the weight gradient's
// takes the output's gradient on the grid, zero elsewhere. Small images waste most (8 x 8:
// 80 positions, 5 vectors, for 64 outputs): the forward pass and the input's gradient then
// put output channels along the vectors instead (forward_pixels), broadcasting each pixel's
// input from the same padded image, and compute no position for nothing (AVX-512, 2 threads,
// batch 128: 128 -> 128 channels on 8 x 8 forward 1.21x, backward 1.11x; 7 x 7 1.15x and
// 1.12x; on 16 x 16, whose grid wastes 6%, 1.05x and 0.99x: not taken there; AVX2 on a Zen 3,
// 1 and 2 threads, VGG's 8 x 8 layers: forward 1.21-1.27x, backward 1.07-1.14x). Each
// sum runs over the taps (or over images and q) in a fixed order: results do not depend on
// the thread count.
#pragma once
#include <cstdint>

namespace fastnn {

// Where the forward kernel puts its outputs: output pixel (oy, ox), at q = oy wp + ox of the
// grid, goes to y[o * plane + oy * ow + ox] (+ bias[o] where bias is given), for the q below
// span = (oh - 1) wp + ow whose column q % wp is below ow; the grid's other q are dropped as
// each tile is stored (a pass over a grid buffer afterwards cost 7% of a VGG layer's forward).
struct DirectOutput {
    float* y;
    int64_t plane, ow, span;
    const float* bias;
};

// The forward kernel's blocks of output channels, from the first: `block` channels each, but
// where 1 to tail - 1 channels would be left for a last block (a tile of few accumulators,
// which streams the whole image as a full block does for a fraction of its work), the last
// full block and they are split as `tail` and the rest (6 + 2 -> 4 + 4: a VGG step's 32-channel
// layers, one Zen 3 core, forward and input gradient about 1.1x). The size of the block that
// starts `rest` channels before the last.
inline int64_t direct_block_size(int64_t rest, int64_t block, int64_t tail) {
    return rest > block && rest < block + tail ? tail : (rest < block ? rest : block);
}

struct DirectConvKernels {
    // The forward kernel's output channels per block (at most; see direct_block_size and
    // channel_tail): its weights come packed, weight (o, t) of block b (its channel j) at
    // w[(b * K + t) * channel_block + j], zeros past the block's last channel.
    int64_t channel_block;
    // Output (o, q) = sum over taps t = (c, ky, kx) of weight (o, t) * xp[c * plane + ky * wp +
    // kx + q], for o < oc and q < qn (a multiple of 16, at least out.span), K = c kh kw, stored
    // as `out` says. xp holds c planes and 16 more floats (zeros): every read stays inside
    // c * plane + 16.
    void (*forward)(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                    int64_t kw, const float* w, int64_t oc, int64_t qn, const DirectOutput& out);
    // The same sums with the output channels along the vectors (nullptr where the ISA has no
    // such kernel), for images whose grid wastes much (an 8 x 8 image: 80 positions for 64
    // outputs): tiles of consecutive output pixels, each pixel's input broadcast from xp in
    // place, so no position is computed for nothing. oc a multiple of pixel_block, whose
    // blocks take the weights packed as the forward kernel's with pixel_block for
    // channel_block; out.span unused.
    int64_t pixel_block;
    void (*forward_pixels)(const float* xp, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                           int64_t kw, const float* w, int64_t oc, int64_t oh,
                           const DirectOutput& out);
    // dw[o * K + t] = the sum over `images` images i and q < qn of
    // gq[i * g_stride + o * qn + q] * xp[i * x_stride + c * plane + ky * wp + kx + q]: gq is
    // the output's gradient on the padded grid, zero at every q that is not an output pixel.
    void (*weight_grad)(const float* xp, int64_t x_stride, const float* gq, int64_t g_stride,
                        int64_t images, int64_t c, int64_t plane, int64_t wp, int64_t kh,
                        int64_t kw, int64_t oc, int64_t qn, float* dw);
    // The copies around them, one call per image (a call per row cost 8% of a LeNet step):
    // pad: c planes of h x w into planes of h + 2 ph rows of pitch w + pw (above), each
    // followed by pw zeros, then 16 zeros.
    void (*pad)(const float* x, int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw,
                float* xp);
    // to_grid: c planes of oh x ow onto the padded grid of pitch wp, planes qn apart, zeros
    // at every other q below qn.
    void (*to_grid)(const float* y, int64_t c, int64_t oh, int64_t ow, int64_t wp, int64_t qn,
                    float* yq);
    // The forward kernel's tail block (direct_block_size; 0: none).
    int64_t channel_tail;
};

#ifdef FASTNN_X86
extern const DirectConvKernels kDirectConvAvx512;  // conv_direct_avx512.cpp
extern const DirectConvKernels kDirectConvAvx2;    // conv_direct_avx2.cpp
#endif

}  // namespace fastnn
