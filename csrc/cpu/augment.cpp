// Data augmentation for image batches: per image one affine map (shift, horizontal flip,
// rotation about the centre) sampled bilinearly with zeros outside, then Gaussian noise.
//
// Random numbers (random.h), image i of a call with (seed, offset), g = offset + 8 i
// (kAugmentStreamPerImage = 8, ops.h):
//   uniform elements g + 0..3 of stream 0 give dx = max_shift (2 u0 - 1),
//   dy = max_shift (2 u1 - 1), flip if u2 < 1/2, angle = max_rotation (2 u3 - 1) degrees
//   (positive turns clockwise as displayed, rows growing downward); g + 4..7 are reserved.
//   Its noise is normal elements 0.. of stream g | 2^63, which never meets stream 0.
//   So the result depends only on (seed, offset), not on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "../random.h"

namespace fastnn {
namespace {

constexpr uint64_t kNoiseStream = uint64_t{1} << 63;

// Output pixel p samples the input at q = M p + t (the inverse of the content's motion).
struct InverseMap {
    float m00, m01, m10, m11, t0, t1;
};

// Content moves by: flip about the centre, rotate by theta about it, then shift by (dx, dy).
// Inverting: q = F R(-theta) (p - c - d) + c. Identity and pure flips come out exact.
InverseMap inverse_map(int64_t h, int64_t w, double dx, double dy, bool flipped, double theta) {
    const double cx = 0.5 * double(w - 1), cy = 0.5 * double(h - 1);
    const double cs = std::cos(theta), sn = std::sin(theta), f = flipped ? -1.0 : 1.0;
    const double m00 = f * cs, m01 = f * sn, m10 = -sn, m11 = cs;
    const double ox = cx + dx, oy = cy + dy;
    return {float(m00), float(m01), float(m10), float(m11),
            float(cx - (m00 * ox + m01 * oy)), float(cy - (m10 * ox + m11 * oy))};
}

// One output row's bilinear taps: clamped indices and weights, a zero weight for every
// neighbour outside the image.
struct RowTaps {
    std::vector<int64_t> x0, x1, y0, y1;
    std::vector<float> wx0, wx1, wy0, wy1;
    explicit RowTaps(int64_t w) : x0(w), x1(w), y0(w), y1(w), wx0(w), wx1(w), wy0(w), wy1(w) {}
};

// Index and weight of the two taps around coordinate q along an axis of length len.
inline void taps(float q, int64_t len, int64_t& i0, int64_t& i1, float& w0, float& w1) {
    // Far outside, both taps are outside anyway; the clamp also keeps the int cast defined.
    if (!(q >= -2.0f)) q = -2.0f;
    if (!(q <= float(len) + 1.0f)) q = float(len) + 1.0f;
    const float fl = std::floor(q);
    const float a = q - fl;
    const int64_t i = static_cast<int64_t>(fl);
    const bool in0 = i >= 0 && i < len, in1 = i + 1 >= 0 && i + 1 < len;
    i0 = in0 ? i : 0;
    i1 = in1 ? i + 1 : 0;
    w0 = in0 ? 1.0f - a : 0.0f;
    w1 = in1 ? a : 0.0f;
}

// A tap's share of a sample: nothing at all when its weight is 0 (a tap outside the image,
// which reads pixel 0 in its place, or an exact shift or flip), so that an Inf or NaN there
// does not turn the sample into NaN through 0 * inf.
inline float tap(float weight, float value) { return weight == 0.0f ? 0.0f : weight * value; }

void warp_image(const float* src, float* dst, int64_t c, int64_t h, int64_t w,
                const InverseMap& m, RowTaps& t) {
    const int64_t plane = h * w;
    for (int64_t py = 0; py < h; ++py) {
        const float rx = m.m01 * float(py) + m.t0, ry = m.m11 * float(py) + m.t1;
        for (int64_t px = 0; px < w; ++px) {
            taps(m.m00 * float(px) + rx, w, t.x0[px], t.x1[px], t.wx0[px], t.wx1[px]);
            taps(m.m10 * float(px) + ry, h, t.y0[px], t.y1[px], t.wy0[px], t.wy1[px]);
        }
        for (int64_t ch = 0; ch < c; ++ch) {
            const float* s = src + ch * plane;
            float* d = dst + ch * plane + py * w;
            for (int64_t px = 0; px < w; ++px) {
                const float* r0 = s + t.y0[px] * w;
                const float* r1 = s + t.y1[px] * w;
                const float top = tap(t.wx0[px], r0[t.x0[px]]) + tap(t.wx1[px], r0[t.x1[px]]);
                const float bottom = tap(t.wx0[px], r1[t.x0[px]]) + tap(t.wx1[px], r1[t.x1[px]]);
                d[px] = tap(t.wy0[px], top) + tap(t.wy1[px], bottom);
            }
        }
    }
}

void add_noise(float* dst, int64_t len, float std, uint64_t seed, uint64_t stream) {
    float z[kRandomTile];
    for (int64_t j = 0; j < len; j += kRandomTile) {
        const int64_t k = std::min(kRandomTile, len - j);
        rng::normals(seed, stream, static_cast<uint64_t>(j), k, z);
        for (int64_t i = 0; i < k; ++i) dst[j + i] += std * z[i];
    }
}

}  // namespace

void augment_images(const float* x, float* out, int64_t n, int64_t c, int64_t h, int64_t w,
                    const AugmentSpec& spec, uint64_t seed, uint64_t offset) {
    const int64_t image = c * h * w;
    if (image == 0) return;
    const bool geometry = spec.max_shift != 0.0f || spec.flip || spec.max_rotation != 0.0f;
    const double deg = 3.14159265358979323846 / 180.0;
    parallel_for(n, std::max<int64_t>(1, (1 << 14) / image), [&](int64_t b, int64_t e) {
        RowTaps taps_buf(geometry ? w : 0);
        for (int64_t i = b; i < e; ++i) {
            const uint64_t g = offset + kAugmentStreamPerImage * static_cast<uint64_t>(i);
            const float* src = x + i * image;
            float* dst = out + i * image;
            if (geometry) {
                float u[4];
                rng::uniforms(seed, 0, g, 4, u);
                const InverseMap m = inverse_map(
                    h, w, double(spec.max_shift) * (2.0 * u[0] - 1.0),
                    double(spec.max_shift) * (2.0 * u[1] - 1.0), spec.flip && u[2] < 0.5f,
                    double(spec.max_rotation) * (2.0 * u[3] - 1.0) * deg);
                warp_image(src, dst, c, h, w, m, taps_buf);
            } else {
                std::copy(src, src + image, dst);
            }
            if (spec.noise_std != 0.0f) add_noise(dst, image, spec.noise_std, seed, g | kNoiseStream);
        }
    });
}

}  // namespace fastnn
