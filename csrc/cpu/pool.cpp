// 2-D pooling over planes (the n x c planes of an NCHW batch), as torch.nn.functional's
// max_pool2d and avg_pool2d (floor mode; avg counts the padding, torch's default). Threads
// take whole planes; the backward passes sum into each input value in a fixed order, so
// results do not depend on the thread count. These loops are the reference themselves.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "isa.h"
#include "window.h"

namespace fastnn {

namespace {

int64_t plane_grain(const PoolGeometry& g) {
    return std::max<int64_t>(1, kGrain / std::max<int64_t>(g.out_h() * g.out_w() * g.kh * g.kw, 1));
}

}  // namespace

namespace {

// One tap of a window over a row of outputs: value/best take row[ox * stride] where it is
// larger (the first of equal maxima) or NaN (the last one seen), as torch. Selects in a loop
// without branches, compiled per ISA (IsaCopies): the vectorizer blends them.
FASTNN_ISA_BODY void max_tap(const float* __restrict row, int64_t stride, float* __restrict value,
                             int64_t* __restrict best, int64_t base, int64_t lo, int64_t hi) {
    for (int64_t ox = lo; ox < hi; ++ox) {
        const float v = row[ox * stride], cur = value[ox];
        const bool take = (v > cur) | (v != v);
        value[ox] = take ? v : cur;
        best[ox] = take ? base + ox * stride : best[ox];
    }
}

// A float's bits and back (C++17 has no bit_cast); inlined into each ISA's copy.
[[gnu::always_inline]] inline uint32_t bits_of(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
[[gnu::always_inline]] inline float float_of(uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// 2x2 windows at stride 2 without padding on rows of even width (the usual pooling), planes
// [p0, p1): the two taps of a window row are neighbours, so one loop over the plane's rows
// takes each pair's larger value (a long loop that the vectorizer deinterleaves; a call per
// row and tap of 7-14 outputs took 23 ns), and a second loop combines the pairs of two rows.
// Each selection is max_tap's, in the same order, so the results are the same.
FASTNN_ISA_BODY void max_2x2_planes(const float* x, int64_t h, int64_t w, float* y, int64_t* argmax,
                                    int64_t p0, int64_t p1, float* __restrict pair_value,
                                    int32_t* __restrict pair_odd) {
    const int64_t half = w / 2, oh = h / 2, pairs = 2 * oh * half;
    for (int64_t p = p0; p < p1; ++p) {
        const float* __restrict in = x + p * h * w;
        for (int64_t t = 0; t < pairs; ++t) {
            // the first tap is always taken (only -inf is not, which leaves -inf at its index)
            const float a = in[2 * t], b = in[2 * t + 1];
            const bool take = (b > a) | (b != b);
            pair_value[t] = take ? b : a;
            pair_odd[t] = take;
        }
        for (int64_t oy = 0; oy < oh; ++oy) {
            float* __restrict value = y + (p * oh + oy) * half;
            int64_t* __restrict best = argmax + (p * oh + oy) * half;
            const int64_t t0 = 2 * oy * half, t1 = t0 + half;
            if (half > 8 || half % 4 != 0) {
                for (int64_t ox = 0; ox < half; ++ox) {
                    const float v0 = pair_value[t0 + ox], v1 = pair_value[t1 + ox];
                    const bool take = (v1 > v0) | (v1 != v1);
                    value[ox] = take ? v1 : v0;
                    best[ox] = take ? 2 * (t1 + ox) + pair_odd[t1 + ox] : 2 * (t0 + ox) + pair_odd[t0 + ox];
                }
                continue;
            }
            // Rows of 4 or 8 outputs: the same selection with masks. There `take ? v1 : v0`
            // compiled to a branch on each comparison, mispredicted half the time on real data:
            // an 8 x 8 plane took 11x a 32 x 32 plane's time per output, with masks 2.7x (Zen 5;
            // rows of 8 the same either way, rows of 5 10% slower with masks: the compiler's
            // code decides these, so measure any change here).
            for (int64_t ox = 0; ox < half; ++ox) {
                const float v0 = pair_value[t0 + ox], v1 = pair_value[t1 + ox];
                const int32_t take = (v1 > v0) | (v1 != v1);
                const uint32_t mask = 0u - static_cast<uint32_t>(take);
                value[ox] = float_of((bits_of(v1) & mask) | (bits_of(v0) & ~mask));
                const int64_t i0 = 2 * (t0 + ox) + pair_odd[t0 + ox], i1 = 2 * (t1 + ox) + pair_odd[t1 + ox];
                const int64_t wide = -static_cast<int64_t>(take);
                best[ox] = (i1 & wide) | (i0 & ~wide);
            }
        }
    }
}

FASTNN_ISA_BODY void add_tap(const float* __restrict row, int64_t stride, float* __restrict out,
                             int64_t lo, int64_t hi) {
    for (int64_t ox = lo; ox < hi; ++ox) out[ox] += row[ox * stride];
}

}  // namespace

// Row at a time: for each output row, the window's taps (ky, kx) in row-major order each
// update a whole row of outputs, a loop without branches that vectorizes (one output at a
// time, a branch per tap, mispredicted half the time on random data, took 16 ns per output).
void maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int64_t* argmax) {
    if (g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 && g.w % 2 == 0 &&
        g.h >= 2) {
        const auto planes = IsaCopies<max_2x2_planes>::pick();
        // each thread's pairs, allocated here: a failure is the caller's exception, not one
        // thrown inside the parallel region. A cache line apart at least: on 8 x 8 planes the
        // two threads' 32 pairs shared a line, rewritten for every plane, and 2 threads ran
        // slower than one (b32, 128 channels: 117 against 83 us on a Zen 5).
        const int64_t pairs = (g.h / 2) * g.w, stride = (pairs + 31) / 16 * 16;
        const int threads = threads_for(g.planes, plane_grain(g));
        std::vector<float> pair_value(static_cast<size_t>(threads * stride));
        std::vector<int32_t> pair_odd(static_cast<size_t>(threads * stride));
        float* values = pair_value.data();
        int32_t* odd = pair_odd.data();
        parallel_region(threads, [=](int64_t id, int64_t nt) {
            const int64_t p0 = g.planes * id / nt, p1 = g.planes * (id + 1) / nt;
            if (p0 < p1) planes(x, g.h, g.w, y, argmax, p0, p1, values + id * stride, odd + id * stride);
        });
        return;
    }
    const int64_t oh = g.out_h(), ow = g.out_w();
    const auto tap = IsaCopies<max_tap>::pick();
    parallel_for(g.planes, plane_grain(g), [=](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* in = x + p * g.h * g.w;
            for (int64_t oy = 0; oy < oh; ++oy) {
                float* __restrict value = y + (p * oh + oy) * ow;  // no alias: it vectorizes
                int64_t* __restrict best = argmax + (p * oh + oy) * ow;
                // As torch: start at the window's first pixel inside the image, at -inf
                const int64_t y0 = std::max<int64_t>(oy * g.sh - g.ph, 0);
                for (int64_t ox = 0; ox < ow; ++ox) {
                    value[ox] = -std::numeric_limits<float>::infinity();
                    best[ox] = y0 * g.w + std::max<int64_t>(ox * g.sw - g.pw, 0);
                }
                if (ow < 8) {  // few outputs a row: each its window, as avgpool2d_forward's
                    const int64_t y1 = std::min(oy * g.sh - g.ph + g.kh, g.h);
                    for (int64_t ox = 0; ox < ow; ++ox) {
                        const int64_t x0 = std::max<int64_t>(ox * g.sw - g.pw, 0);
                        const int64_t x1 = std::min(ox * g.sw - g.pw + g.kw, g.w);
                        float cur = value[ox];
                        int64_t at = best[ox];
                        for (int64_t iy = y0; iy < y1; ++iy)
                            for (int64_t ix = x0; ix < x1; ++ix) {  // max_tap's selection
                                const float v = in[iy * g.w + ix];
                                const bool take = (v > cur) | (v != v);
                                cur = take ? v : cur;
                                at = take ? iy * g.w + ix : at;
                            }
                        value[ox] = cur, best[ox] = at;
                    }
                    continue;
                }
                for (int64_t ky = 0; ky < g.kh; ++ky) {
                    const int64_t iy = oy * g.sh - g.ph + ky;
                    if (iy < 0 || iy >= g.h) continue;
                    for (int64_t kx = 0; kx < g.kw; ++kx) {
                        int64_t lo, hi;
                        const int64_t offset = kx - g.pw;
                        inside(ow, g.w, g.sw, offset, lo, hi);
                        tap(in + iy * g.w + offset, g.sw, value, best, iy * g.w + offset, lo, hi);
                    }
                }
            }
        }
    });
}

int64_t maxpool2d_backward(const PoolGeometry& g, const float* gy, const int64_t* argmax, float* dx) {
    const int64_t plane_out = g.out_h() * g.out_w(), plane_in = g.h * g.w;
    // Each thread's first out-of-range entry: threads take planes in order, so the least is
    // the array's first. (A separate pass over argmax first, on one thread, took 0.1 ms of a
    // batch-32 VGG step's 0.2 ms pooling backward.)
    std::atomic<int64_t> first_bad{-1};
    parallel_for(g.planes, plane_grain(g), [=, &first_bad](int64_t p0, int64_t p1) {
        int64_t bad = -1;
        for (int64_t p = p0; p < p1; ++p) {
            float* d = dx + p * plane_in;
            std::fill(d, d + plane_in, 0.0f);
            for (int64_t o = 0; o < plane_out; ++o) {
                const int64_t i = argmax[p * plane_out + o];  // one read: checked is used
                if (static_cast<uint64_t>(i) < static_cast<uint64_t>(plane_in))
                    d[i] += gy[p * plane_out + o];
                else if (bad < 0)
                    bad = p * plane_out + o;
            }
        }
        if (bad < 0) return;
        int64_t seen = first_bad.load();
        while ((seen < 0 || bad < seen) && !first_bad.compare_exchange_weak(seen, bad)) {
        }
    });
    return first_bad.load();
}

// With few outputs a row (a global average pool: one), a call per tap for a run of one or two
// outputs cost more than its add (GlobalAvgPool2d on 256 x 7 x 7, b32: 0.34x PyTorch; a 7 x 7
// max pool there 0.40x): each output then takes its window in a loop of its own, the taps in
// the same order. Windows of more than kFloatTaps taps sum in double (window_sum, or a double
// row in the row form): one float running sum per output lost 1.6e-3 of a 1024 x 1024 plane's
// mean (torch: 7e-8); a few dozen float adds lose a few ulps, as torch's do.
namespace {

constexpr int64_t kFloatTaps = 64;

// A window's sum in 8 double lanes carried across its rows (a row of 7 feeds 7 lanes, so
// that a 7 x 7 window is 7 short chains, not 49 adds one after the other). Fixed order.
double window_sum(const float* in, int64_t w, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
    double s[8] = {};
    for (int64_t iy = y0; iy < y1; ++iy) {
        const float* row = in + iy * w;
        int64_t ix = x0;
        for (; ix + 8 <= x1; ix += 8)
            for (int t = 0; t < 8; ++t) s[t] += row[ix + t];
        for (int t = 0; ix < x1; ++ix, ++t) s[t] += row[ix];
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace

void avgpool2d_forward(const PoolGeometry& g, const float* x, float* y) {
    const int64_t oh = g.out_h(), ow = g.out_w();
    const double inv = 1.0 / static_cast<double>(g.kh * g.kw);  // the padding counts (torch's default)
    const float inv_f = 1.0f / static_cast<float>(g.kh * g.kw);
    const auto tap = IsaCopies<add_tap>::pick();
    const bool wide = g.kh * g.kw > kFloatTaps;
    parallel_for(g.planes, plane_grain(g), [=](int64_t p0, int64_t p1) {
        thread_local std::vector<double> sums;  // a wide window's row of sums; grow-only
        if (wide && ow >= 8 && static_cast<int64_t>(sums.size()) < ow) sums.resize(static_cast<size_t>(ow));
        for (int64_t p = p0; p < p1; ++p) {
            const float* in = x + p * g.h * g.w;
            for (int64_t oy = 0; oy < oh; ++oy) {
                float* __restrict out = y + (p * oh + oy) * ow;
                if (ow < 8) {
                    const int64_t y0 = std::max<int64_t>(oy * g.sh - g.ph, 0);
                    const int64_t y1 = std::min(oy * g.sh - g.ph + g.kh, g.h);
                    for (int64_t ox = 0; ox < ow; ++ox) {
                        const int64_t x0 = std::max<int64_t>(ox * g.sw - g.pw, 0);
                        const int64_t x1 = std::min(ox * g.sw - g.pw + g.kw, g.w);
                        if (wide) {
                            out[ox] = static_cast<float>(window_sum(in, g.w, y0, y1, x0, x1) * inv);
                            continue;
                        }
                        float sum = 0.0f;
                        for (int64_t iy = y0; iy < y1; ++iy)
                            for (int64_t ix = x0; ix < x1; ++ix) sum += in[iy * g.w + ix];
                        out[ox] = sum * inv_f;
                    }
                    continue;
                }
                if (wide) {
                    double* acc = sums.data();
                    std::fill(acc, acc + ow, 0.0);
                    for (int64_t ky = 0; ky < g.kh; ++ky) {
                        const int64_t iy = oy * g.sh - g.ph + ky;
                        if (iy < 0 || iy >= g.h) continue;
                        for (int64_t kx = 0; kx < g.kw; ++kx) {
                            int64_t lo, hi;
                            inside(ow, g.w, g.sw, kx - g.pw, lo, hi);
                            const float* row = in + iy * g.w + kx - g.pw;
                            for (int64_t ox = lo; ox < hi; ++ox) acc[ox] += row[ox * g.sw];
                        }
                    }
                    for (int64_t ox = 0; ox < ow; ++ox) out[ox] = static_cast<float>(acc[ox] * inv);
                    continue;
                }
                std::fill(out, out + ow, 0.0f);
                for (int64_t ky = 0; ky < g.kh; ++ky) {  // the taps in row-major order
                    const int64_t iy = oy * g.sh - g.ph + ky;
                    if (iy < 0 || iy >= g.h) continue;
                    for (int64_t kx = 0; kx < g.kw; ++kx) {
                        int64_t lo, hi;
                        inside(ow, g.w, g.sw, kx - g.pw, lo, hi);
                        tap(in + iy * g.w + kx - g.pw, g.sw, out, lo, hi);
                    }
                }
                for (int64_t ox = 0; ox < ow; ++ox) out[ox] *= inv_f;
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
