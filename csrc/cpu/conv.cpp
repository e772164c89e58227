// 2-D convolution, NCHW with torch's weight layout (OC, C / groups, KH, KW), as a GEMM per
// image over its im2col block: one row per kernel tap (c, ky, kx), in the weight's order, one
// column per output pixel (oy, ox), each row built from runs of contiguous input (copies at
// stride 1). W (OC x C KH KW) times the block is the image's output in NCHW as it stands.
// Backward: the weight's gradient G x block^T summed over the batch in a fixed order, the
// patches' gradient W^T x G, and col2im. The batch's whole matrix (one row per pixel) was
// 4.5 ms to build for a batch-32 LeNet layer and went to memory and back; a block per image
// stays in L2.
// The depthwise case (groups == channels) has its own direct loops: its GEMMs would have k =
// KH x KW (9) and n = the channel multiplier (1), far too thin for the microkernel.
// At stride 1 and dilation 1 the direct kernels of conv_direct.h (AVX-512 and AVX2) run the
// forward pass and the input's gradient, and with few output channels (LeNet's 6 and 16,
// where each im2col value would feed only that many FMAs) the weight's gradient too; with
// more, on images whose padded grid wastes little, the weight's gradient multiplies the
// padded image's rows in place (table_weight_grad), with no im2col block.
// The weight's gradient sums parts of 4 to 8 images (images_per_partial: on the batch and the
// CPU count), each part in a fixed order, then the parts in order: the same bits on any
// number of threads of one machine.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "../core/cpu.h"
#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "conv_direct.h"
#include "gemm/bf16.h"
#include "isa.h"
#include "window.h"

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

// ---- the convolution, image by image -------------------------------------------------------

namespace {

// One image's im2col block: (c kh kw) rows of ld floats (oh ow used), and its adjoint. Its
// copies are compiled per ISA, stride 2 with a constant stride (a permute of two vectors; the
// runtime stride's loads went one float at a time).
template <int64_t SW>  // 1 or 2 when compiled, 0: g.sw
FASTNN_ISA_BODY void im2col_rows(const ConvGeometry& g, const float* img, float* col, int64_t ld) {
    const int64_t oh = g.out_h(), ow = g.out_w(), sw = SW ? SW : g.sw;
    for (int64_t r = 0; r < g.c * g.kh * g.kw; ++r) {
        const int64_t c = r / (g.kh * g.kw), ky = r / g.kw % g.kh, kx = r % g.kw;
        const float* plane = img + c * g.h * g.w;
        float* out = col + r * ld;
        int64_t lo, hi;
        const int64_t offset = kx * g.dw - g.pw;
        inside(ow, g.w, sw, offset, lo, hi);
        for (int64_t oy = 0; oy < oh; ++oy, out += ow) {
            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
            if (iy < 0 || iy >= g.h) {
                for (int64_t ox = 0; ox < ow; ++ox) out[ox] = 0.0f;
                continue;
            }
            const float* __restrict src = plane + iy * g.w + offset;
            float* __restrict dst = out;
            for (int64_t ox = 0; ox < lo; ++ox) dst[ox] = 0.0f;
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox] = src[ox * sw];
            for (int64_t ox = hi; ox < ow; ++ox) dst[ox] = 0.0f;
        }
    }
}

FASTNN_ISA_BODY void im2col_body(const ConvGeometry& g, const float* img, float* col, int64_t ld) {
    if (g.sw == 1)
        im2col_rows<1>(g, img, col, ld);
    else if (g.sw == 2)
        im2col_rows<2>(g, img, col, ld);
    else
        im2col_rows<0>(g, img, col, ld);
}

void image_im2col(const ConvGeometry& g, const float* img, float* col, int64_t ld) {
    IsaCopies<im2col_body>::run(g, img, col, ld);
}

void image_col2im(const ConvGeometry& g, const float* col, int64_t ld, float* img) {
    const int64_t oh = g.out_h(), ow = g.out_w();
    std::fill(img, img + g.c * g.h * g.w, 0.0f);
    for (int64_t r = 0; r < g.c * g.kh * g.kw; ++r) {  // taps in order: the same sums always
        const int64_t c = r / (g.kh * g.kw), ky = r / g.kw % g.kh, kx = r % g.kw;
        float* plane = img + c * g.h * g.w;
        const float* in = col + r * ld;
        int64_t lo, hi;
        const int64_t offset = kx * g.dw - g.pw;
        inside(ow, g.w, g.sw, offset, lo, hi);
        for (int64_t oy = 0; oy < oh; ++oy) {
            const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            float* dst = plane + iy * g.w + offset;
            const float* src = in + oy * ow;
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox * g.sw] += src[ox];
        }
    }
}

// A grow-only, 64-byte aligned buffer of the calling thread (`which` < 3).
float* thread_buffer(int which, size_t floats) {
    thread_local std::unique_ptr<float, AlignedFree> buf[3];
    thread_local size_t cap[3] = {0, 0, 0};
    if (floats > cap[which]) {
        buf[which].reset(static_cast<float*>(std::aligned_alloc(64, (floats * 4 + 63) / 64 * 64)));
        if (!buf[which]) throw std::bad_alloc();
        cap[which] = floats;
    }
    return buf[which].get();
}

// The im2col block's row stride: the pixels, padded so that no power-of-two stride (32 x 32
// images: 4 KiB) maps its rows onto the same cache sets, which would keep the GEMM from
// reading them in place (gemm.cpp: strided_rows_fit_l2).
int64_t block_ld(int64_t pixels) { return (pixels + 15) / 16 * 16 + 16; }

// Images per partial sum of the weight gradient: 4 to 8, at least two parts per CPU where
// the batch allows. On the batch and the machine only, never the thread count, so that the
// partials, added in order, give the same bits on any number of threads. Fewer, larger
// parts went faster (b128, 2 threads, 8 against 4 images: 128 -> 128 channels on 8 x 8
// 11.6 against 12.8 ms, 64 -> 64 on 16 x 16 10.3 against 10.8): fewer partials written and
// added up, longer products; beyond 8, a many-core machine would run short of parts at b32.
int64_t images_per_partial(int64_t n) {
    const int64_t cpus = std::max(1u, std::thread::hardware_concurrency());
    return std::clamp<int64_t>(n / (2 * cpus), 4, 8);
}

// Images side by side in one im2col block of the backward pass: an 8 x 8 image made products
// of k = 64 pixels whose C, the weight gradient, was read and written for every image, and
// input-gradient products 64 wide (a 48-wide panel and a 16-wide one): 49 GFLOP/s for a
// (128, 128) layer. As many of a part's images as keep the block in L2, split evenly (7 of 8
// fitting would leave a block of one): on the machine and the geometry only. Measured, b128,
// 2 threads: 128 -> 128 on 8 x 8 (0.3 MiB an image) 8 a block 10.7 ms, 4 11.0, 3 11.4; the
// stride-2 64 -> 128 on 32 x 32 (0.6 MiB) 3 a block 21.8 ms, 4 22.6, 8 23.0.
int64_t images_per_block(int64_t rows, int64_t pixels, int64_t per_part) {
    int64_t l2 = int64_t{1} << 20;
    for (const CacheLevel& c : cpu_info().caches)
        if (c.level == 2) l2 = c.size_bytes;
    const int64_t budget = l2 / int64_t{sizeof(float)};
    const int64_t fit = std::clamp<int64_t>(budget / std::max<int64_t>(rows * pixels, 1), 1, per_part);
    const int64_t blocks = (per_part + fit - 1) / fit;
    return (per_part + blocks - 1) / blocks;
}

// Each image's output channel: + bias, then the activation (while it is in cache).
void finish_channels(float* out, int64_t channels, int64_t pixels, const float* bias,
                     Activation act, float alpha, ActivateFn activate_fn) {
    for (int64_t o = 0; o < channels; ++o) {
        float* row = out + o * pixels;
        if (bias)
            for (int64_t p = 0; p < pixels; ++p) row[p] += bias[o];
        if (act != Activation::Identity) activate_fn(act, row, row, pixels, alpha);
    }
}

// ---- the direct path (conv_direct.h) -----------------------------------------------------

// The direct kernels for this convolution, or nullptr: stride 1, dilation 1, padding under
// the kernel size (so that the input's gradient is a direct convolution too), and an ISA that
// has them (AVX-512 or AVX2; the portable build takes the GEMM). They then run the forward
// pass and the input's gradient whatever the channels (batch 128, 2 threads, on the Xeon:
// VGG-style layers forward 58.6 ms against 63.5 on the GEMM, (32, 32) on 32 x 32 13.5
// against 17.6; the input-gradient parts 14 against 24 ms there), and the weight's gradient
// up to kDirectWeightGradChannels output channels per group: beyond, the GEMM's was faster
// (44 against 31 ms for (32, 32) on 32 x 32, 1 thread): the direct blocks load 7 vectors per
// 12 FMAs, from L2 once a part's images outgrow L1, and 8 x 3 blocks would need 33 registers.
constexpr int64_t kDirectWeightGradChannels = 16;

// The ISA's direct kernels (AVX-512, AVX2), or nullptr on the portable ISA.
const DirectConvKernels* isa_direct_kernels() {
#ifdef FASTNN_X86
    switch (elementwise_isa()) {
        case Isa::Avx512: return &kDirectConvAvx512;
        case Isa::Avx2: return &kDirectConvAvx2;
        case Isa::Generic: break;
    }
#endif
    return nullptr;
}

const DirectConvKernels* direct_kernels(const ConvGeometry& g) {
    if (g.sh != 1 || g.sw != 1 || g.dh != 1 || g.dw != 1 || g.ph >= g.kh || g.pw >= g.kw)
        return nullptr;
    return isa_direct_kernels();
}

// `c` planes of h x w padded by (ph, pw) on each side, as the direct kernels read them
// (DirectConvKernels::pad): planes of h + 2 ph rows of pitch w + pw and pw zeros, then 16 zeros.
struct PaddedImage {
    int64_t wp, plane, size;
    PaddedImage(int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw)
        : wp(w + pw), plane((h + 2 * ph) * wp + pw), size((c * plane + 16 + 15) / 16 * 16) {}
    // The q range the kernels compute for an output of oh x ow on this grid.
    int64_t qn(int64_t oh, int64_t ow) const { return ((oh - 1) * wp + ow + 15) / 16 * 16; }
};

// The number of blocks direct_block_size makes of og channels.
int64_t direct_blocks(int64_t og, int64_t b, int64_t tail) {
    int64_t blocks = 0;
    for (int64_t o = 0; o < og; o += direct_block_size(og - o, b, tail)) ++blocks;
    return blocks;
}

// Weights as the direct kernels take them, in blocks of at most b channels (DirectConvKernels::
// channel_block and direct_block_size's tail, or pixel_block and none), group after group:
// weight(grp, o, t) for o < og and t < k, channel j of the group's block i at ((grp blocks +
// i) k + t) b + j, in a grow-only buffer of the calling thread (packed once a call, then read
// by every thread). Packed on one thread: split between two, the lines each packed then
// crossed to the other core, and a 128 -> 128 layer's forward on one 8 x 8 image went from
// 0.14 to 0.28 ms.
template <class Weight>
const float* packed_weights(int64_t b, int64_t tail, int64_t groups, int64_t og, int64_t k, Weight weight) {
    const int64_t blocks = direct_blocks(og, b, tail);
    const size_t size = static_cast<size_t>(groups * blocks * k * b);
    thread_local std::unique_ptr<float, AlignedFree> buf;
    thread_local size_t cap = 0;
    if (size > cap) {
        buf.reset(static_cast<float*>(std::aligned_alloc(64, (size * 4 + 63) / 64 * 64)));
        if (!buf) throw std::bad_alloc();
        cap = size;
    }
    float* out = buf.get();
    for (int64_t grp = 0; grp < groups; ++grp)
        for (int64_t blk = 0, o0 = 0, n = 0; blk < blocks; ++blk, o0 += n) {
            n = direct_block_size(og - o0, b, tail);
            for (int64_t t = 0; t < k; ++t)
                for (int64_t j = 0; j < b; ++j)
                    out[((grp * blocks + blk) * k + t) * b + j] = j < n ? weight(grp, o0 + j, t) : 0.0f;
        }
    return out;
}

// Whether the direct kernels take the output channels along the vectors (forward_pixels) for
// an output of oh x ow, og channels a group, whose padded grid has qn positions: where the ISA
// has that kernel, the channels fill its blocks, and the grid wastes more than 15% (8 x 8
// images: 80 positions for 64 outputs).
bool by_pixels(const DirectConvKernels& dk, int64_t og, int64_t oh, int64_t ow, int64_t qn) {
    return dk.forward_pixels && og % dk.pixel_block == 0 && 20 * oh * ow < 17 * qn;
}

void direct_forward(const DirectConvKernels& dk, const ConvGeometry& g, int64_t out_channels,
                    int64_t groups, const float* x, const float* w, const float* bias,
                    Activation act, float alpha, float* y) {
    const int64_t oh = g.out_h(), ow = g.out_w(), cg = g.c / groups, og = out_channels / groups;
    const int64_t k = cg * g.kh * g.kw;
    const PaddedImage pad(g.c, g.h, g.w, g.ph, g.pw);
    const int64_t qn = pad.qn(oh, ow), span = (oh - 1) * pad.wp + ow;
    const ActivateFn activate_fn = activate_kernel();
    const bool pixels = by_pixels(dk, og, oh, ow, qn);
    const int64_t block = pixels ? dk.pixel_block : dk.channel_block, tail = pixels ? 0 : dk.channel_tail;
    const float* packed = packed_weights(block, tail, groups, og, k, [&](int64_t grp, int64_t o, int64_t t) {
        return w[(grp * og + o) * k + t];
    });
    const int64_t group_weights = direct_blocks(og, block, tail) * block * k;
    parallel_for(g.n, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(out_channels * k * qn, 1)),
                 [=, &dk](int64_t n0, int64_t n1) {
        float* xp = thread_buffer(0, static_cast<size_t>(pad.size));
        for (int64_t n = n0; n < n1; ++n) {
            dk.pad(x + n * g.c * g.h * g.w, g.c, g.h, g.w, g.ph, g.pw, xp);
            float* out = y + n * out_channels * oh * ow;
            for (int64_t grp = 0; grp < groups; ++grp) {
                const DirectOutput to{out + grp * og * oh * ow, oh * ow, ow, span,
                                      bias ? bias + grp * og : nullptr};
                if (pixels)
                    dk.forward_pixels(xp + grp * cg * pad.plane, cg, pad.plane, pad.wp, g.kh, g.kw,
                                      packed + grp * group_weights, og, oh, to);
                else
                    dk.forward(xp + grp * cg * pad.plane, cg, pad.plane, pad.wp, g.kh, g.kw,
                               packed + grp * group_weights, og, qn, to);
            }
            finish_channels(out, out_channels, oh * ow, nullptr, act, alpha, activate_fn);
        }
    });
}

// The input's gradient as a direct convolution: the output's gradient, padded by
// (kh - 1 - ph, kw - 1 - pw), convolved with the weight flipped in both axes and with its two
// channel axes swapped. The flipped weights are packed once by the calling thread; image()
// then runs one image whose padded gradient is at gp.
struct DirectInputGrad {
    const DirectConvKernels& dk;
    const ConvGeometry& g;
    int64_t groups, out_channels, og, cg;
    PaddedImage gpad;
    int64_t dqn;
    bool pixels;
    const float* flipped;
    int64_t group_weights;

    DirectInputGrad(const DirectConvKernels& kernels, const ConvGeometry& geometry,
                    int64_t out_channels_, int64_t groups_, const float* w)
        : dk(kernels), g(geometry), groups(groups_), out_channels(out_channels_),
          og(out_channels_ / groups_), cg(geometry.c / groups_),
          gpad(out_channels_, geometry.out_h(), geometry.out_w(), geometry.kh - 1 - geometry.ph,
               geometry.kw - 1 - geometry.pw),
          dqn(gpad.qn(geometry.h, geometry.w)), pixels(by_pixels(kernels, cg, g.h, g.w, dqn)) {
        // Output channel ci, tap t = (o, ky, kx) of group grp: w[grp og + o][ci][kh - 1 - ky][kw
        // - 1 - kx], at grp og cg taps + ci taps + from[t]. The offsets from a table: the
        // packing is serial, and two divisions per weight took 0.25 ms of a 128 -> 128 layer's
        // call (a tenth of its input gradient at batch 32, 2 threads).
        const int64_t taps = g.kh * g.kw, k_in = og * taps;
        thread_local std::vector<int64_t> from;
        from.resize(static_cast<size_t>(k_in));
        for (int64_t o = 0, t = 0; o < og; ++o)
            for (int64_t tap = 0; tap < taps; ++tap, ++t) from[t] = o * cg * taps + taps - 1 - tap;
        const int64_t block = pixels ? dk.pixel_block : dk.channel_block, tail = pixels ? 0 : dk.channel_tail;
        flipped = packed_weights(block, tail, groups, cg, k_in, [&](int64_t grp, int64_t ci, int64_t t) {
            return w[(grp * og * cg + ci) * taps + from[t]];
        });
        group_weights = direct_blocks(cg, block, tail) * block * k_in;
    }
    // Image n's output gradient padded into gp (gpad.size floats).
    void pad(const float* gy, int64_t n, float* gp) const {
        const int64_t oh = g.out_h(), ow = g.out_w();
        dk.pad(gy + n * out_channels * oh * ow, out_channels, oh, ow, g.kh - 1 - g.ph, g.kw - 1 - g.pw, gp);
    }
    // Image n's input gradient from its padded output gradient.
    void image(const float* gp, int64_t n, float* dx) const {
        float* dxn = dx + n * g.c * g.h * g.w;
        for (int64_t grp = 0; grp < groups; ++grp) {
            const DirectOutput to{dxn + grp * cg * g.h * g.w, g.h * g.w, g.w,
                                  (g.h - 1) * gpad.wp + g.w, nullptr};
            if (pixels)
                dk.forward_pixels(gp + grp * og * gpad.plane, og, gpad.plane, gpad.wp, g.kh, g.kw,
                                  flipped + grp * group_weights, cg, g.h, to);
            else
                dk.forward(gp + grp * og * gpad.plane, og, gpad.plane, gpad.wp, g.kh, g.kw,
                           flipped + grp * group_weights, cg, dqn, to);
        }
    }
    int64_t flops_per_image() const { return 2 * out_channels * cg * g.kh * g.kw * dqn; }
};

// Threads take images.
void direct_input_grad(const DirectConvKernels& dk, const ConvGeometry& g, int64_t out_channels,
                       int64_t groups, const float* w, const float* gy, float* dx) {
    const DirectInputGrad plan(dk, g, out_channels, groups, w);
    parallel_for(g.n, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(plan.flops_per_image(), 1)),
                 [&plan, gy, dx](int64_t n0, int64_t n1) {
        float* gp = thread_buffer(2, static_cast<size_t>(plan.gpad.size));
        for (int64_t n = n0; n < n1; ++n) {
            plan.pad(gy, n, gp);
            plan.image(gp, n, dx);
        }
    });
}

// The weight's gradient: partials of per_part images, as the GEMM path's.
void direct_weight_grad(const DirectConvKernels& dk, const ConvGeometry& g, int64_t out_channels,
                        int64_t groups, const float* x, const float* gy, float* partial,
                        int64_t parts, int64_t per_part) {
    const int64_t oh = g.out_h(), ow = g.out_w(), cg = g.c / groups, og = out_channels / groups;
    const int64_t k = cg * g.kh * g.kw, wsize = out_channels * k;
    const PaddedImage pad(g.c, g.h, g.w, g.ph, g.pw);
    const int64_t qn = pad.qn(oh, ow);
    const int64_t flops = 2 * out_channels * k * qn * per_part;
    parallel_for(parts, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(flops, 1)),
                 [=, &dk](int64_t c0, int64_t c1) {
        const int64_t gsize = out_channels * qn;
        float* xp = thread_buffer(0, static_cast<size_t>(per_part * pad.size));
        float* gq = thread_buffer(1, static_cast<size_t>(per_part * gsize));
        for (int64_t part = c0; part < c1; ++part) {
            const int64_t first = part * per_part;
            const int64_t images = std::min(g.n, first + per_part) - first;
            for (int64_t i = 0; i < images; ++i) {
                dk.pad(x + (first + i) * g.c * g.h * g.w, g.c, g.h, g.w, g.ph, g.pw,
                       xp + i * pad.size);
                dk.to_grid(gy + (first + i) * out_channels * oh * ow, out_channels, oh, ow, pad.wp,
                           qn, gq + i * gsize);
            }
            for (int64_t grp = 0; grp < groups; ++grp)
                dk.weight_grad(xp + grp * cg * pad.plane, pad.size, gq + grp * og * qn, gsize,
                               images, cg, pad.plane, pad.wp, g.kh, g.kw, og, qn,
                               partial + part * wsize + grp * og * k);
        }
    });
}

// Where table_weight_grad beats im2col (batch 128, 2 threads; 3 x 3, padding 1): its grid
// multiplies span = (oh - 1) wp + ow positions per patch row for oh ow outputs, at most a
// fifth more (Xeon, when a row's padding was not shared (wp = w + 2 pw): 32 x 32 1.26x
// im2col's speed, 16 x 16 1.15x, 10 x 10 1.19x; 8 x 8, a 0.22 more, 0.97x; 6 x 6 0.87x), and
// at least 24 of them: each image's product reads and writes the partial sum (og x patch
// rows) once for `span` steps, and 4 x 4 images (span 19) went 0.90x at 128 channels (Zen 5;
// 5 x 5, span 29: 1.06-1.12x, 6 x 6, 41: 1.10x); and 24 patch rows or more (fewer fill few of
// the kernel's 8-row tiles, and the product is small next to packing its other operand: one
// channel's 9 rows went 0.62x, two channels' 18 0.83-0.90x, three's 27 1.01-1.10x).
bool weight_grad_by_table(const ConvGeometry& g, int64_t patch_rows) {
    const int64_t oh = g.out_h(), ow = g.out_w(), span = (oh - 1) * PaddedImage(1, g.h, g.w, g.ph, g.pw).wp + ow;
    return patch_rows >= 24 && span >= 24 && 5 * span <= 6 * oh * ow;
}

// The weight's gradient with no im2col block (the direct path's geometries, more than
// kDirectWeightGradChannels output channels per group): on the padded grid, patch row
// (c, ky, kx) of an image is its padded plane c read in place from ky wp + kx, and the
// output's gradient, on the same grid, is zero at the grid's columns past the output's; so
// the group's gradient is gq (og x span) times the rows' table transposed, added into its
// part's partial sum (gemm_row_table). The grid's (wp - ow) columns a row are multiplied for
// nothing: what writing and reading back the patches cost was more. A small image's product
// is short (71 steps on 8 x 8) next to reading and writing the partial sum, so as many images
// as row_table_segments allows are padded side by side and go in one product as segments.
// With `input_grad`, the same pass runs the input's gradient: each image's output gradient,
// padded for it, is the grid that the weight's product takes (both have pitch w + pw, and the
// padding's zeros fall on the grid's columns past the output's), so it is padded once and
// multiplied from L2 twice, not also copied onto a grid (to_grid: 2% of a b32 VGG step).
// Threads then take the parts' images for both gradients.
void table_weight_grad(const DirectConvKernels& dk, const ConvGeometry& g, int64_t out_channels,
                       int64_t groups, const float* x, const float* gy, float* partial,
                       int64_t parts, int64_t per_part, const DirectInputGrad* input_grad, float* dx) {
    const int64_t oh = g.out_h(), ow = g.out_w(), cg = g.c / groups, og = out_channels / groups;
    const int64_t taps = g.kh * g.kw, k = cg * taps, wsize = out_channels * k;
    const PaddedImage pad(g.c, g.h, g.w, g.ph, g.pw);
    const int64_t qn = pad.qn(oh, ow), span = (oh - 1) * pad.wp + ow;  // the grid's q that hold outputs
    const int64_t flops = (2 * wsize * span + (input_grad ? input_grad->flops_per_image() : 0)) * per_part;
    const int64_t together = std::min(per_part, row_table_segments(og, span));
    // The output gradient's grid: gq, og x span from `at`, rows `ld` apart, images gsize apart
    const int64_t gsize = input_grad ? input_grad->gpad.size : out_channels * qn;
    const int64_t ld = input_grad ? input_grad->gpad.plane : qn;
    const int64_t at = input_grad ? (g.kh - 1 - g.ph) * pad.wp + g.kw - 1 - g.pw : 0;
    parallel_for(parts, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(flops, 1)),
                 [=, &dk](int64_t c0, int64_t c1) {
        float* xp = thread_buffer(0, static_cast<size_t>(together * pad.size));
        float* gq = thread_buffer(1, static_cast<size_t>(together * gsize));
        thread_local std::vector<const float*> table;
        table.resize(static_cast<size_t>(g.c * taps));
        for (int64_t c = 0; c < g.c; ++c)
            for (int64_t t = 0; t < taps; ++t)
                table[c * taps + t] = xp + c * pad.plane + t / g.kw * pad.wp + t % g.kw;
        for (int64_t part = c0; part < c1; ++part) {
            const int64_t first = part * per_part;
            const int64_t last = std::min(g.n, first + per_part);
            for (int64_t n0 = first; n0 < last; n0 += together) {
                const int64_t count = std::min(together, last - n0);
                for (int64_t i = 0; i < count; ++i) {
                    dk.pad(x + (n0 + i) * g.c * g.h * g.w, g.c, g.h, g.w, g.ph, g.pw, xp + i * pad.size);
                    if (input_grad) {
                        input_grad->pad(gy, n0 + i, gq + i * gsize);
                        input_grad->image(gq + i * gsize, n0 + i, dx);
                    } else {
                        dk.to_grid(gy + (n0 + i) * out_channels * oh * ow, out_channels, oh, ow, pad.wp,
                                   qn, gq + i * gsize);
                    }
                }
                for (int64_t grp = 0; grp < groups; ++grp)
                    gemm_row_table(og, k, span, 1.0f, gq + at + grp * og * ld, ld, table.data() + grp * k,
                                   n0 == first ? 0.0f : 1.0f, partial + part * wsize + grp * og * k, k,
                                   count, gsize, pad.size);
            }
        }
    });
}

}  // namespace

void conv2d_forward(const ConvGeometry& g, int64_t out_channels, int64_t groups, const float* x,
                    const float* w, const float* bias, Activation act, float alpha, float* y,
                    bool bf16) {
    // Image by image, threads taking whole images: the image's im2col block (c kh kw x oh ow)
    // stays in L2 between being written and being multiplied (the batch's whole matrix went to
    // memory and back: 3.7 ms of a 32 x 32 x 32-channel layer's 11.5 ms at batch 32), and the
    // product W x block is the image's NCHW output as it stands.
    const int64_t oh = g.out_h(), ow = g.out_w(), pixels = oh * ow, ld = block_ld(pixels);
    const int64_t k = g.c / groups * g.kh * g.kw, og = out_channels / groups;
    if (const DirectConvKernels* dk = direct_kernels(g))
        return direct_forward(*dk, g, out_channels, groups, x, w, bias, act, alpha, y);
    const ActivateFn activate_fn = activate_kernel();
    const auto product = bf16 ? gemm_bf16 : gemm;
    const int64_t flops = out_channels * k * pixels;
    parallel_for(g.n, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(flops, 1)),
                 [=](int64_t n0, int64_t n1) {
        float* col = thread_buffer(0, static_cast<size_t>(g.c * g.kh * g.kw * ld));
        for (int64_t n = n0; n < n1; ++n) {
            image_im2col(g, x + n * g.c * g.h * g.w, col, ld);
            float* out = y + n * out_channels * pixels;
            for (int64_t grp = 0; grp < groups; ++grp)
                product(false, false, og, pixels, k, 1.0f, w + grp * og * k, k, col + grp * k * ld,
                        ld, 0.0f, out + grp * og * pixels, pixels, Epilogue{});
            finish_channels(out, out_channels, pixels, bias, act, alpha, activate_fn);
        }
    });
}

void conv2d_backward(const ConvGeometry& g, int64_t out_channels, int64_t groups, const float* x,
                     const float* w, const float* gy, float* dx, float* dw, float dw_beta,
                     float* db, bool bf16) {
    const int64_t oh = g.out_h(), ow = g.out_w(), pixels = oh * ow;
    const int64_t k = g.c / groups * g.kh * g.kw, og = out_channels / groups;
    const int64_t rows = g.c * g.kh * g.kw, wsize = out_channels * k;
    if (db) add_channel_sums(gy, g.n, out_channels, pixels, db);
    if (g.n == 0) {  // no images, no partial sums to add: dW = beta dW
        for (int64_t i = 0; i < wsize; ++i) dw[i] = dw_beta == 0.0f ? 0.0f : dw_beta * dw[i];
        return;
    }
    // dW: one partial sum per per_part images (each block's gy x block^T added in
    // order), the partials then added in order; dx: W^T x gy, back through col2im.
    const int64_t per_part = images_per_partial(g.n), parts = (g.n + per_part - 1) / per_part;
    thread_local std::unique_ptr<float, AlignedFree> partial_buf;
    thread_local size_t partial_cap = 0;
    const size_t want = static_cast<size_t>(std::max<int64_t>(parts, 1) * wsize);
    if (want > partial_cap) {
        partial_buf.reset(static_cast<float*>(std::aligned_alloc(64, (want * 4 + 63) / 64 * 64)));
        if (!partial_buf) throw std::bad_alloc();
        partial_cap = want;
    }
    float* partial = partial_buf.get();
    const int64_t flops = 2 * out_channels * k * pixels * per_part;
    // The input's gradient direct needs no patches' gradient block (rows x pixels floats an
    // image, written, then read back by col2im), which took half of a VGG layer's backward.
    const DirectConvKernels* dk = direct_kernels(g);
    if (dk && og > kDirectWeightGradChannels && !bf16 && weight_grad_by_table(g, k)) {
        const std::optional<DirectInputGrad> input_grad =
            dx ? std::optional<DirectInputGrad>(std::in_place, *dk, g, out_channels, groups, w) : std::nullopt;
        table_weight_grad(*dk, g, out_channels, groups, x, gy, partial, parts, per_part,
                          input_grad ? &*input_grad : nullptr, dx);
    } else if (dk && og <= kDirectWeightGradChannels) {
        if (dx) direct_input_grad(*dk, g, out_channels, groups, w, gy, dx);
        direct_weight_grad(*dk, g, out_channels, groups, x, gy, partial, parts, per_part);
    } else {
        if (dk && dx) {
            direct_input_grad(*dk, g, out_channels, groups, w, gy, dx);
            dx = nullptr;
        }
        // `per_block` images side by side in each product (see images_per_block).
        const int64_t per_block = images_per_block(rows, pixels, per_part), span = per_block * pixels;
        const int64_t ld = block_ld(span);
        const auto product = bf16 ? gemm_bf16 : gemm;
        parallel_for(parts, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(flops, 1)),
                     [=](int64_t c0, int64_t c1) {
            float* col = thread_buffer(0, static_cast<size_t>(rows * ld));
            float* dcol = thread_buffer(1, static_cast<size_t>(rows * ld));
            float* gyb = per_block > 1 ? thread_buffer(2, static_cast<size_t>(out_channels * span)) : nullptr;
            for (int64_t part = c0; part < c1; ++part) {
                float* pw = partial + part * wsize;
                const int64_t first = part * per_part;
                const int64_t last = std::min(g.n, first + per_part);
                for (int64_t n0 = first; n0 < last; n0 += per_block) {
                    const int64_t count = std::min(per_block, last - n0), cols = count * pixels;
                    for (int64_t i = 0; i < count; ++i)
                        image_im2col(g, x + (n0 + i) * g.c * g.h * g.w, col + i * pixels, ld);
                    // The images' output gradients side by side (one image: as it stands).
                    const float* gb = gy + n0 * out_channels * pixels;
                    int64_t ldg = pixels;
                    if (count > 1) {
                        for (int64_t o = 0; o < out_channels; ++o)
                            for (int64_t i = 0; i < count; ++i)
                                std::copy(gb + (i * out_channels + o) * pixels,
                                          gb + (i * out_channels + o + 1) * pixels,
                                          gyb + o * cols + i * pixels);
                        gb = gyb;
                        ldg = cols;
                    }
                    const float beta = n0 == first ? 0.0f : 1.0f;
                    for (int64_t grp = 0; grp < groups; ++grp)
                        product(false, true, og, k, cols, 1.0f, gb + grp * og * ldg, ldg,
                                col + grp * k * ld, ld, beta, pw + grp * og * k, k, Epilogue{});
                    if (!dx) continue;
                    for (int64_t grp = 0; grp < groups; ++grp)
                        product(true, false, k, cols, og, 1.0f, w + grp * og * k, k,
                                gb + grp * og * ldg, ldg, 0.0f, dcol + grp * k * ld, ld, Epilogue{});
                    for (int64_t i = 0; i < count; ++i)
                        image_col2im(g, dcol + i * pixels, ld, dx + (n0 + i) * g.c * g.h * g.w);
                }
            }
        });
    }
    // Each element's partials added in order, then to beta dW, a chunk of elements at a time
    // in vectors (a scalar loop that tested beta at every element took half of a 128 -> 128
    // layer's backward on one 8 x 8 image).
    parallel_for(wsize, kGrain, [=](int64_t b, int64_t e) {
        constexpr int64_t kChunk = 256;
        float sum[kChunk];
        const float beta = dw_beta;
        for (int64_t i0 = b; i0 < e; i0 += kChunk) {
            const int64_t len = std::min(kChunk, e - i0);
            const float* __restrict first = partial + i0;
            for (int64_t j = 0; j < len; ++j) sum[j] = first[j];
            for (int64_t part = 1; part < parts; ++part) {
                const float* __restrict next = partial + part * wsize + i0;
                for (int64_t j = 0; j < len; ++j) sum[j] += next[j];
            }
            float* __restrict out = dw + i0;
            if (beta == 0.0f)
                for (int64_t j = 0; j < len; ++j) out[j] = sum[j];
            else
                for (int64_t j = 0; j < len; ++j) out[j] = beta * out[j] + sum[j];
        }
    });
}

// ---- depthwise: output channel o reads input channel o / multiplier only -----------------
// Each input plane is first copied with its zero padding into a buffer of the thread's (a
// few KiB: L1), laid out as the direct kernels' (conv_direct.h: rows of pitch wp = w + pw, a
// row's right padding the next row's left), so that every tap reads inside it and no loop
// has bounds to check. At stride 1, with a padding within the kernel's reach, an output
// plane is the padded grid's q = oy wp + ox below span = (oh - 1) wp + ow, tap (ky, kx)
// reading xp[q + ky dh wp + kx dw]: one run of span multiply-adds a tap whatever the row's
// width (8 x 8: 78 positions for 64 outputs), the grid's gap columns computed for nothing;
// and the input's gradient is the same sums over the output's gradient padded by the
// kernel's reach less the padding, with the taps flipped. Otherwise each row of outputs is a
// run over a row of the padded plane (strided at stride 2). The scalar loops with a bounds
// check per tap that these replaced ran 2-9x slower than PyTorch (2 threads, b32, 3 x 3).

namespace {

// The sums of kGridChunk consecutive positions at a time, over all the taps, stay in
// registers (a pass over the output per tap loaded and stored each sum at every tap). The
// reads run up to kGridChunk floats past the span: the padded plane has that room after it.
constexpr int64_t kGridChunk = 64;

// grid[q0 .. q0 + L) (+)= the taps k (kh x kw) over xp: each position's taps in (ky, kx)
// order, in float, after what grid holds where `add`. Whole chunks are loaded and stored (a
// copy of a chunk's length kept the sums in memory).
template <int64_t L>
FASTNN_ISA_BODY void grid_chunk(const float* xp, int64_t wp, int64_t q0, int64_t dh, int64_t dw,
                                int64_t kh, int64_t kw, const float* k, bool add, float* grid) {
    float acc[L];
    for (int64_t l = 0; l < L; ++l) acc[l] = add ? grid[q0 + l] : 0.0f;
    for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx) {
            const float wk = k[ky * kw + kx];
            const float* __restrict r = xp + ky * dh * wp + kx * dw + q0;
            for (int64_t l = 0; l < L; ++l) acc[l] += wk * r[l];
        }
    for (int64_t l = 0; l < L; ++l) grid[q0 + l] = acc[l];
}

// grid[q] (+)= the taps over xp for q < span, in chunks of kGridChunk, the rest in vectors of
// 16 (an 8 x 8 plane's 71 positions: 80 computed, not 128). grid has kGridChunk floats of
// room past span.
FASTNN_ISA_BODY void depthwise_grid(const float* xp, int64_t wp, int64_t span, int64_t dh,
                                    int64_t dw, int64_t kh, int64_t kw, const float* k, bool add,
                                    float* grid) {
    int64_t q0 = 0;
    for (; q0 + kGridChunk <= span; q0 += kGridChunk)
        grid_chunk<kGridChunk>(xp, wp, q0, dh, dw, kh, kw, k, add, grid);
    for (; q0 < span; q0 += 16) grid_chunk<16>(xp, wp, q0, dh, dw, kh, kw, k, add, grid);
}

// sums[t][l] += lane l of the sum over q < span of gq[q] times what tap t reads at q: gq is the
// output's gradient on the grid, zero in its gaps. Each tap's products in kDotLanes float
// lanes (q into lane q % kDotLanes, so that the loop vectorizes), added lane by lane into the
// double ones, which the caller adds up in order once for the batch (a chain of 16 double
// adds per tap and plane cost an 8 x 8 plane more than its products).
constexpr int64_t kDotLanes = 16;

FASTNN_ISA_BODY void depthwise_grid_weight_grad(const float* xp, const float* gq, int64_t wp,
                                                int64_t span, int64_t dh, int64_t dw, int64_t kh,
                                                int64_t kw, double* sums) {
    for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx) {
            float lane[kDotLanes] = {};
            const float* __restrict r = xp + ky * dh * wp + kx * dw;
            int64_t q = 0;
            for (; q + kDotLanes <= span; q += kDotLanes)
                for (int64_t l = 0; l < kDotLanes; ++l) lane[l] += gq[q + l] * r[q + l];
            if (q < span)  // the last lanes selected, not multiplied by zero (an infinity stays one)
                for (int64_t l = 0; l < kDotLanes; ++l) lane[l] += q + l < span ? gq[q + l] * r[q + l] : 0.0f;
            double* s = sums + (ky * kw + kx) * kDotLanes;
            for (int64_t l = 0; l < kDotLanes; ++l) s[l] += lane[l];
        }
}

// The row form, any stride. At stride sw the padded plane is first split by column phase:
// phases[f][r][j] = the padded plane's value at row r, column j sw + f (j < wq, past the row's
// end the next row's, as the plane's own layout reads), so that tap (ky, kx) of outputs ox..
// reads phase (kx dw) % sw from column ox + (kx dw) / sw on: contiguous, where the strided
// loads had gathered 16 values one by one (stride 2: 0.68x PyTorch). At stride 1 the plane is
// its own single phase.
FASTNN_ISA_BODY void split_phases(const float* xp, int64_t wp, int64_t hp, int64_t sw, int64_t wq,
                                  float* phases) {
    if (sw == 2) {  // both phases in one loop of constant stride: it vectorizes (a permute)
        for (int64_t r = 0; r < hp; ++r) {
            const float* __restrict from = xp + r * wp;
            float* __restrict even = phases + r * wq;
            float* __restrict odd = phases + (hp + r) * wq;
            for (int64_t j = 0; j < wq; ++j) {
                even[j] = from[2 * j];
                odd[j] = from[2 * j + 1];
            }
        }
        return;
    }
    for (int64_t f = 0; f < sw; ++f)
        for (int64_t r = 0; r < hp; ++r) {
            const float* from = xp + r * wp + f;
            float* to = phases + (f * hp + r) * wq;
            for (int64_t j = 0; j < wq; ++j) to[j] = from[j * sw];
        }
}

// out (oh x ow) = the taps over the phases (hp rows of wq each), each output's taps in (ky, kx)
// order in float, 16 outputs of a row at a time with their sums in registers. Whole chunks
// are read and written: the phases have kRowsRoom floats of room past them, out 16 past its
// end (a chunk past a row's end writes into the next row, computed after it).
constexpr int64_t kRowsRoom = 64;

FASTNN_ISA_BODY void depthwise_rows(const float* phases, int64_t wq, int64_t hp, int64_t oh, int64_t ow,
                                    int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t kh,
                                    int64_t kw, const float* k, float* out) {
    for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox0 = 0; ox0 < ow; ox0 += 16) {
            float acc[16] = {};
            for (int64_t ky = 0; ky < kh; ++ky) {
                const float* row = phases + (oy * sh + ky * dh) * wq + ox0;
                // tap kx reads phase f = kx dw % sw from column j = kx dw / sw on (no division
                // per tap: it cost more than the tap's 16 multiply-adds)
                for (int64_t kx = 0, f = 0, j = 0; kx < kw; ++kx) {
                    const float wk = k[ky * kw + kx];
                    const float* __restrict r = row + f * hp * wq + j;
                    for (int64_t l = 0; l < 16; ++l) acc[l] += wk * r[l];
                    for (f += dw; f >= sw; f -= sw) ++j;
                }
            }
            for (int64_t l = 0; l < 16; ++l) out[oy * ow + ox0 + l] = acc[l];
        }
}

// The gradient of the padded plane's phases dq (the row form's layout, added into) from one
// output plane's gradient go: each output's gradient times each tap into the value the tap
// read, in (oy, ky, kx) order, contiguous runs as the forward's (a strided scatter of 16
// values took a twelfth of a depthwise-separable network's step).
FASTNN_ISA_BODY void depthwise_rows_input_grad(const float* go, int64_t wq, int64_t hp, int64_t oh,
                                               int64_t ow, int64_t sh, int64_t sw, int64_t dh,
                                               int64_t dw, int64_t kh, int64_t kw, const float* k,
                                               float* dq) {
    for (int64_t oy = 0; oy < oh; ++oy) {
        const float* __restrict g = go + oy * ow;
        for (int64_t ky = 0; ky < kh; ++ky) {
            float* row = dq + (oy * sh + ky * dh) * wq;
            for (int64_t kx = 0, f = 0, j = 0; kx < kw; ++kx) {
                const float wk = k[ky * kw + kx];
                float* __restrict r = row + f * hp * wq + j;
                for (int64_t ox = 0; ox < ow; ++ox) r[ox] += wk * g[ox];
                for (f += dw; f >= sw; f -= sw) ++j;
            }
        }
    }
}

// The plane's h x w values (from row ph, column pw of the padded plane) out of its phases:
// column c of the padded plane is phase c % sw, column c / sw.
FASTNN_ISA_BODY void merge_phases(const float* dq, int64_t wq, int64_t hp, int64_t sw, int64_t ph,
                                  int64_t pw, int64_t h, int64_t w, float* out) {
    for (int64_t iy = 0; iy < h; ++iy) {
        const float* row = dq + (ph + iy) * wq;
        for (int64_t ix = 0, f = pw % sw, j = pw / sw; ix < w; ++ix) {  // no division a value
            out[iy * w + ix] = row[f * hp * wq + j];
            if (++f == sw) f = 0, ++j;
        }
    }
}

// As depthwise_grid_weight_grad, the output's gradient as it stands (oh x ow), over the phases
// of the row form.
FASTNN_ISA_BODY void depthwise_rows_weight_grad(const float* phases, const float* go, int64_t wq,
                                                int64_t hp, int64_t oh, int64_t ow, int64_t sh,
                                                int64_t sw, int64_t dh, int64_t dw, int64_t kh,
                                                int64_t kw, double* sums) {
    for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx) {
            float lane[kDotLanes] = {};
            const int64_t f = kx * dw % sw, j = kx * dw / sw;
            for (int64_t oy = 0; oy < oh; ++oy) {
                const float* __restrict g = go + oy * ow;
                const float* __restrict r = phases + (f * hp + oy * sh + ky * dh) * wq + j;
                int64_t ox = 0;
                for (; ox + kDotLanes <= ow; ox += kDotLanes)
                    for (int64_t l = 0; l < kDotLanes; ++l) lane[l] += g[ox + l] * r[ox + l];
                for (int64_t l = 0; ox + l < ow; ++l) lane[l] += g[ox + l] * r[ox + l];
            }
            double* s = sums + (ky * kw + kx) * kDotLanes;
            for (int64_t l = 0; l < kDotLanes; ++l) s[l] += lane[l];
        }
}

// One plane of h x w, padded by (ph, pw), into xp as the direct kernels' pad lays it out
// (PaddedImage's size), then `room` zeros; the portable ISA, which has no direct kernels, copies row by row.
void pad_plane(const DirectConvKernels* dk, const float* x, int64_t h, int64_t w, int64_t ph,
               int64_t pw, int64_t room, float* xp) {
    const PaddedImage pad(1, h, w, ph, pw);
    if (dk) {
        dk->pad(x, 1, h, w, ph, pw, xp);
    } else {
        std::fill(xp, xp + pad.plane, 0.0f);
        for (int64_t y = 0; y < h; ++y) std::copy(x + y * w, x + y * w + w, xp + (ph + y) * pad.wp + pw);
    }
    std::fill(xp + pad.plane, xp + pad.plane + room, 0.0f);
}

// The grid form: stride 1, a padding within the kernel's reach (the grid's rows hold the
// output's), and the direct kernels' copies.
bool depthwise_by_grid(const ConvGeometry& g, const DirectConvKernels* dk) {
    return dk && g.sh == 1 && g.sw == 1 && g.ph <= (g.kh - 1) * g.dh && g.pw <= (g.kw - 1) * g.dw;
}

// rows x cols values `pitch` apart from `from` into dst (+ bias).
FASTNN_ISA_BODY void rows_out(const float* from, int64_t pitch, int64_t rows, int64_t cols, float bias,
                              float* dst) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) dst[r * cols + j] = from[r * pitch + j] + bias;
}

}  // namespace

namespace {

// The row form's phases of the padded plane xp (split at stride 2 and up, else xp itself):
// sw phases of hp rows of wq, then room for the runs past a row's end (pw at stride 1) and
// for whole chunks of 16.
struct RowPhases {
    int64_t sw, hp, wq, pw;
    RowPhases(const ConvGeometry& g, const PaddedImage& pad)
        : sw(g.sw), hp(g.h + 2 * g.ph), wq(g.sw == 1 ? pad.wp : (pad.wp + g.pw + g.sw - 1) / g.sw), pw(g.pw) {}
    size_t floats() const { return static_cast<size_t>(sw * hp * wq + pw + kRowsRoom); }
    const float* split(const float* xp, int64_t wp, float* buf) const {
        if (sw == 1) return xp;
        IsaCopies<split_phases>::run(xp, wp, hp, sw, wq, buf);
        std::fill(buf + sw * hp * wq, buf + floats(), 0.0f);
        return buf;
    }
};

// Whether the padded plane the depthwise paths copy each input plane into is far larger than
// the plane and its output (padding and dilation of 2**14 around a 4 x 4 image: 4 GB, where
// the grouped im2col path, which pads nothing, needs a few floats): that path then.
bool depthwise_pads_too_much(const ConvGeometry& g) {
    const PaddedImage pad(1, g.h, g.w, g.ph, g.pw);
    const int64_t copied = std::max<int64_t>(pad.size, static_cast<int64_t>(RowPhases(g, pad).floats()));
    return copied > 8 * (g.h * g.w + g.out_h() * g.out_w()) + (int64_t{1} << 16);
}

}  // namespace

void depthwise_forward(const ConvGeometry& g, int64_t multiplier, const float* x, const float* w,
                       const float* bias, float* y) {
    if (depthwise_pads_too_much(g))
        return conv2d_forward(g, g.c * multiplier, g.c, x, w, bias, Activation::Identity, 0.0f, y, false);
    const int64_t oh = g.out_h(), ow = g.out_w(), oc = g.c * multiplier, kk = g.kh * g.kw;
    const DirectConvKernels* dk = isa_direct_kernels();
    const PaddedImage pad(1, g.h, g.w, g.ph, g.pw);
    const bool by_grid = depthwise_by_grid(g, dk);
    const RowPhases phases(g, pad);
    const int64_t span = (oh - 1) * pad.wp + ow, room = std::max(kGridChunk, g.sw);
    const auto grid_fn = IsaCopies<depthwise_grid>::pick();
    const auto rows_fn = IsaCopies<depthwise_rows>::pick();
    const auto out_fn = IsaCopies<rows_out>::pick();
    // Threads take input planes (n, c), each padded once for its multiplier outputs.
    parallel_for(g.n * g.c, grain_rows(multiplier * oh * ow * kk), [=](int64_t p0, int64_t p1) {
        float* xp = thread_buffer(0, static_cast<size_t>(pad.size + room));
        float* grid = thread_buffer(1, static_cast<size_t>((by_grid ? span : oh * ow) + kGridChunk));
        float* split = by_grid || g.sw == 1 ? nullptr : thread_buffer(2, phases.floats());
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t n = p / g.c, c = p % g.c;
            pad_plane(dk, x + p * g.h * g.w, g.h, g.w, g.ph, g.pw, room, xp);
            const float* rows = by_grid ? nullptr : phases.split(xp, pad.wp, split);
            for (int64_t m = 0; m < multiplier; ++m) {
                const int64_t o = c * multiplier + m;
                if (by_grid)
                    grid_fn(xp, pad.wp, span, g.dh, g.dw, g.kh, g.kw, w + o * kk, false, grid);
                else
                    rows_fn(rows, phases.wq, phases.hp, oh, ow, g.sh, g.sw, g.dh, g.dw, g.kh, g.kw,
                            w + o * kk, grid);
                out_fn(grid, by_grid ? pad.wp : ow, oh, ow, bias ? bias[o] : 0.0f,
                       y + (n * oc + o) * oh * ow);
            }
        }
    });
}

void depthwise_backward(const ConvGeometry& g, int64_t multiplier, const float* x,
                        const float* w, const float* gy, float* dx, float* dw, float dw_beta,
                        float* db) {
    if (depthwise_pads_too_much(g))
        return conv2d_backward(g, g.c * multiplier, g.c, x, w, gy, dx, dw, dw_beta, db, false);
    const int64_t oh = g.out_h(), ow = g.out_w(), oc = g.c * multiplier, kk = g.kh * g.kw;
    const DirectConvKernels* dk = isa_direct_kernels();
    const PaddedImage pad(1, g.h, g.w, g.ph, g.pw);
    const bool by_grid = depthwise_by_grid(g, dk);
    const int64_t span = (oh - 1) * pad.wp + ow;
    if (db) add_channel_sums(gy, g.n, oc, oh * ow, db);
    // dx: threads take input planes (n, c), each summing its multiplier outputs' parts in order.
    if (dx) {
        // The grid form: the output's gradient padded by (kh - 1) dh - ph rows and (kw - 1) dw
        // - pw columns, whose pitch is wp again, and the taps flipped.
        const int64_t rh = (g.kh - 1) * g.dh - g.ph, rw = (g.kw - 1) * g.dw - g.pw;
        const PaddedImage gpad(1, oh, ow, by_grid ? rh : 0, by_grid ? rw : 0);
        const int64_t dspan = (g.h - 1) * pad.wp + g.w;
        // The row form: into the phases' gradient (RowPhases' layout), merged at the end.
        const RowPhases phases(g, pad);
        const auto grid_fn = IsaCopies<depthwise_grid>::pick();
        const auto rows_fn = IsaCopies<depthwise_rows_input_grad>::pick();
        const auto out_fn = IsaCopies<rows_out>::pick();
        const auto merge_fn = IsaCopies<merge_phases>::pick();
        parallel_for(g.n * g.c, grain_rows(multiplier * oh * ow * kk), [=](int64_t p0, int64_t p1) {
            float* buf = thread_buffer(1, by_grid ? static_cast<size_t>(gpad.size + kGridChunk) : phases.floats());
            float* grid = thread_buffer(2, static_cast<size_t>(dspan + kGridChunk));
            thread_local std::vector<float> flipped;
            flipped.resize(static_cast<size_t>(kk));
            for (int64_t p = p0; p < p1; ++p) {
                const int64_t n = p / g.c, c = p % g.c;
                if (!by_grid) std::fill(buf, buf + phases.floats(), 0.0f);
                for (int64_t m = 0; m < multiplier; ++m) {
                    const int64_t o = c * multiplier + m;
                    const float* go = gy + (n * oc + o) * oh * ow;
                    if (!by_grid) {
                        rows_fn(go, phases.wq, phases.hp, oh, ow, g.sh, g.sw, g.dh, g.dw, g.kh, g.kw,
                                w + o * kk, buf);
                        continue;
                    }
                    pad_plane(dk, go, oh, ow, rh, rw, kGridChunk, buf);
                    std::reverse_copy(w + o * kk, w + (o + 1) * kk, flipped.begin());
                    grid_fn(buf, gpad.wp, dspan, g.dh, g.dw, g.kh, g.kw, flipped.data(), m > 0, grid);
                }
                float* out = dx + p * g.h * g.w;
                if (by_grid)
                    out_fn(grid, pad.wp, g.h, g.w, 0.0f, out);
                else if (g.sw == 1)
                    out_fn(buf + g.ph * pad.wp + g.pw, pad.wp, g.h, g.w, 0.0f, out);
                else
                    merge_fn(buf, phases.wq, phases.hp, g.sw, g.ph, g.pw, g.h, g.w, out);
            }
        });
    }
    // dw: threads take input channels; each sums its multiplier outputs' taps over the batch in
    // order, image by image (a float sum per image and tap, added in double).
    const int64_t qn = (span + 15) / 16 * 16, room = std::max(kGridChunk, g.sw);
    const RowPhases phases(g, pad);
    const auto grid_fn = IsaCopies<depthwise_grid_weight_grad>::pick();
    const auto rows_fn = IsaCopies<depthwise_rows_weight_grad>::pick();
    parallel_for(g.c, grain_rows(g.n * multiplier * oh * ow * kk), [=](int64_t c0, int64_t c1) {
        float* xp = thread_buffer(0, static_cast<size_t>(pad.size + room));
        float* gq = by_grid ? thread_buffer(2, static_cast<size_t>(qn)) : nullptr;
        float* split = by_grid || g.sw == 1 ? nullptr : thread_buffer(1, phases.floats());
        thread_local std::vector<double> sums;  // grow-only: nothing allocated in a steady state
        sums.resize(static_cast<size_t>(multiplier * kk * kDotLanes));
        for (int64_t c = c0; c < c1; ++c) {
            std::fill(sums.begin(), sums.end(), 0.0);
            for (int64_t n = 0; n < g.n; ++n) {
                pad_plane(dk, x + (n * g.c + c) * g.h * g.w, g.h, g.w, g.ph, g.pw, room, xp);
                const float* rows = by_grid ? nullptr : phases.split(xp, pad.wp, split);
                for (int64_t m = 0; m < multiplier; ++m) {
                    const int64_t o = c * multiplier + m;
                    const float* go = gy + (n * oc + o) * oh * ow;
                    if (by_grid) {
                        dk->to_grid(go, 1, oh, ow, pad.wp, qn, gq);
                        grid_fn(xp, gq, pad.wp, span, g.dh, g.dw, g.kh, g.kw, sums.data() + m * kk * kDotLanes);
                    } else {
                        rows_fn(rows, go, phases.wq, phases.hp, oh, ow, g.sh, g.sw, g.dh, g.dw, g.kh, g.kw,
                                sums.data() + m * kk * kDotLanes);
                    }
                }
            }
            for (int64_t i = 0; i < multiplier * kk; ++i) {
                double total = 0.0;
                for (int64_t l = 0; l < kDotLanes; ++l) total += sums[i * kDotLanes + l];
                float& out = dw[c * multiplier * kk + i];
                out = dw_beta == 0.0f ? static_cast<float>(total) : dw_beta * out + static_cast<float>(total);
            }
        }
    });
}

}  // namespace fastnn
