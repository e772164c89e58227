// exp, expm1 and log1p (on [0, 1]) for float32, written so that gcc vectorizes the loops that call them (no
// branches, no library calls; libm's expf keeps a loop scalar: 4-15 ns per element for
// sigmoid or tanh). Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, expm1(r) by its
// Taylor polynomial to r^7 (truncation < 2e-9 relative), and 2^n applied as two factors so
// that results underflow gradually and overflow to inf as expf does. Error: a few ulp,
// held to float64 by the activation tests.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

// On x86-64, loops of these functions get AVX-512 and AVX2 copies, picked by the ISA switch
// (isa.h). The files using them are compiled with -ffp-contract=off (CMakeLists.txt): every
// copy and every part of a vectorized loop then rounds an element the same way, whatever the
// thread split.
namespace fastnn {

struct ExpParts {
    float pm1;    // expm1(r)
    float scale;  // 2^n, as scale_a * scale_b (either factor alone stays finite)
    float scale_a, scale_b;
};

inline float pow2i(int32_t e) {  // 2^e for -126 <= e <= 127
    const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline ExpParts exp_parts(float x) {
    // Past these, e^x is 0 or inf in float32 anyway; NaN passes through (as r).
    x = std::min(std::max(x, -150.0f), 128.0f);
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float n = (x * 1.44269504088896341f + shifter) - shifter;
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    // A NaN n (from a NaN x) would make the conversion undefined: 0 instead, r stays NaN.
    const int32_t ni = static_cast<int32_t>(n == n ? n : 0.0f), half = ni / 2;
    const float a = pow2i(half), b = pow2i(ni - half);
    return {r + r * r * p, a * b, a, b};
}

inline float exp_f(float x) {
    const ExpParts e = exp_parts(x);
    return (1.0f + e.pm1) * e.scale_a * e.scale_b;
}

// e^x - 1 = 2^n expm1(r) + (2^n - 1): exact at n = 0, no cancellation for small |x|. Past
// x = 80 the -1 is invisible and 2^n may overflow on its own, so e^x is returned there.
inline float expm1_f(float x) {
    const ExpParts e = exp_parts(x);
    const float big = (1.0f + e.pm1) * e.scale_a * e.scale_b;
    return x > 80.0f ? big : e.scale * e.pm1 + (e.scale - 1.0f);
}

// log(1 + t) for 0 <= t <= 1 (softplus's log1p(e^-|x|)): 2 atanh(s) with s = t / (2 + t)
// <= 1/3, by its odd series to s^17 (truncation < 3e-10 relative). Exact at t = 0.
inline float log1p_unit_f(float t) {
    const float s = t / (2.0f + t), s2 = s * s;
    float p = 1.0f / 17.0f;
    p = p * s2 + 1.0f / 15.0f;
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    return 2.0f * (s + s * s2 * p);
}

// Max and sum of n floats in 16 interleaved lanes: a single running max or sum is a chain
// of dependent instructions (3-4 cycles each); lanes vectorize. The order is fixed by n.
inline float max_lanes(const float* x, int64_t n) {
    float m[16];
    for (int t = 0; t < 16; ++t) m[t] = -__builtin_inff();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int t = 0; t < 16; ++t) m[t] = std::max(m[t], x[j + t]);
    for (; j < n; ++j) m[0] = std::max(m[0], x[j]);
    for (int t = 1; t < 16; ++t) m[0] = std::max(m[0], m[t]);
    return m[0];
}

// The sum of term(j) for j < n, in the same lanes and order.
template <class Term>
inline float sum_lanes_of(int64_t n, Term&& term) {
    float s[16] = {};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int t = 0; t < 16; ++t) s[t] += term(j + t);
    for (; j < n; ++j) s[0] += term(j);
    for (int t = 1; t < 16; ++t) s[0] += s[t];
    return s[0];
}

inline float sum_lanes(const float* x, int64_t n) {
    return sum_lanes_of(n, [x](int64_t j) { return x[j]; });
}

// Sum of term(i) over [b, e) in double, in 8 interleaved lanes: one running double sum
// is a chain of dependent adds (4 cycles per element); lanes vectorize. Fixed order.
template <class Term>
inline double sum_lanes_f64(int64_t b, int64_t e, Term&& term) {
    double s[8] = {};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
        for (int t = 0; t < 8; ++t) s[t] += term(i + t);
    for (; i < e; ++i) s[0] += term(i);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace fastnn
