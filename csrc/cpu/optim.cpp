// Optimizer updates, elementwise and in place, with torch.optim's formulas (float32
// state, as there), and the L1/L2 penalty gradient. Lambdas capture by value: scalars the
// compiler knows the stores cannot alias, so the loops vectorize.
#include <algorithm>
#include <cmath>

#include "../core/optim_math.h"
#include "../core/work_split.h"
#include "../ops.h"
#include "../parallel.h"
#include "isa.h"
#include "vmath.h"

namespace fastnn {

namespace {

// f(begin, end) over the thread's ranges of the buffer. With segments, each thread takes of
// every parameter the rows that the GEMM's row split gives the same thread (whole MR-row
// panels, panels * t / nt): the weight gradient's rows its core wrote, and the weight rows
// its core reads in the next forward pass (the transposed path splits W's rows alike), so
// neither crosses between cores. An even split of the whole buffer gave the first thread
// a third of the second's rows of the first layer (2-3% of a batch-32 step, Xeon).
template <class F>
void for_thread_ranges(int64_t n, const ParamSegments* segments, F&& f) {
    if (!segments || segments->empty()) {
        parallel_for(n, kGrain, f);
        return;
    }
    const int64_t mr = gemm_context()->uk->mr;
    parallel_region(threads_for(n, kGrain), [&](int64_t t, int64_t nt) {
        for (const ParamSegment& s : *segments) {
            const int64_t panels = (s.rows + mr - 1) / mr;
            const int64_t r0 = std::min(s.rows, panels * t / nt * mr);
            const int64_t r1 = std::min(s.rows, panels * (t + 1) / nt * mr);
            if (r0 < r1 && s.cols > 0) f(s.offset + r0 * s.cols, s.offset + r1 * s.cols);
        }
    });
}

}  // namespace

void sgd_step(float* p, const float* grad, float* v, int64_t n, float lr, float momentum,
              bool nesterov, float wd, const ParamSegments* segments) {
    // One branch-free loop per variant: a branch inside the loop keeps it scalar.
    for_thread_ranges(n, segments, [=](int64_t b, int64_t e) {
        // Locals, not the closure's members: a store through v or p could otherwise
        // change them as far as the compiler knows, and the loops would stay scalar.
        float* __restrict p_ = p;  // the arrays never overlap (checked by the bindings)
        float* __restrict v_ = v;
        const float* __restrict g_ = grad;
        const float rate = lr, mu = momentum, decay = wd;
        if (mu == 0.0f) {
            for (int64_t i = b; i < e; ++i) p_[i] -= rate * decayed(g_[i], p_[i], decay);
        } else if (!nesterov) {
            for (int64_t i = b; i < e; ++i) {
                v_[i] = mu * v_[i] + decayed(g_[i], p_[i], decay);
                p_[i] -= rate * v_[i];
            }
        } else {
            for (int64_t i = b; i < e; ++i) {
                const float g = decayed(g_[i], p_[i], decay);
                v_[i] = mu * v_[i] + g;
                p_[i] -= rate * (g + mu * v_[i]);
            }
        }
    });
}

// The Adam update of n elements. Its square root and division bind it to the vector width:
// the AVX2 copy took half the baseline's time (535k parameters, Zen 3: 1 thread 0.46 ->
// 0.20-0.25 ms, 2 threads 0.21 -> 0.13).
FASTNN_ISA_BODY static void adam_range(float* __restrict p, const float* __restrict grad,
                                       float* __restrict m, float* __restrict v, int64_t n,
                                       AdamScalars s) {
    for (int64_t i = 0; i < n; ++i) adam_element(p[i], grad[i], m[i], v[i], s);
}

void adam_step(float* p, const float* grad, float* m, float* v, int64_t n, float lr, double beta1,
               double beta2, float eps, float wd, int64_t step, bool decoupled,
               const ParamSegments* segments) {
    const AdamScalars s = adam_scalars(lr, beta1, beta2, eps, wd, step, decoupled);
    const auto range = IsaCopies<adam_range>::pick();
    for_thread_ranges(n, segments, [=](int64_t b, int64_t e) { range(p + b, grad + b, m + b, v + b, e - b, s); });
}

FASTNN_ISA_BODY static void adagrad_range(float* __restrict p, const float* __restrict grad,
                                          float* __restrict sum_sq, int64_t n, float clr,
                                          float eps, float wd) {
    for (int64_t i = 0; i < n; ++i) adagrad_element(p, grad, sum_sq, i, clr, eps, wd);
}

void adagrad_step(float* p, const float* grad, float* sum_sq, int64_t n, float lr, float eps,
                  float wd, float lr_decay, int64_t step, const ParamSegments* segments) {
    const float clr = adagrad_lr(lr, lr_decay, step);
    const auto range = IsaCopies<adagrad_range>::pick();
    for_thread_ranges(n, segments, [=](int64_t b, int64_t e) {
        range(p + b, grad + b, sum_sq + b, e - b, clr, eps, wd);
    });
}

// One loop per variant, with restrict pointers: a branch or a possible alias inside the
// loop kept RMSprop scalar (10x Adam's time).
template <bool kCentered, bool kMomentum>
FASTNN_ISA_BODY void rmsprop_range(float* __restrict p, const float* __restrict grad,
                                   float* __restrict sq, float* __restrict buf,
                                   float* __restrict gavg, int64_t n, float lr, float alpha,
                                   float w, float eps, float wd, float momentum) {  // w = 1 - alpha
    for (int64_t i = 0; i < n; ++i)
        rmsprop_element<kCentered, kMomentum>(p, grad, sq, buf, gavg, i, lr, alpha, w, eps, wd, momentum);
}

void rmsprop_step(float* p, const float* grad, float* sq, float* buf, float* gavg, int64_t n,
                  float lr, double alpha, float eps, float wd, float momentum, bool centered,
                  const ParamSegments* segments) {
    const auto range = centered ? (momentum > 0.0f ? IsaCopies<rmsprop_range<true, true>>::pick()
                                                   : IsaCopies<rmsprop_range<true, false>>::pick())
                                : (momentum > 0.0f ? IsaCopies<rmsprop_range<false, true>>::pick()
                                                   : IsaCopies<rmsprop_range<false, false>>::pick());
    for_thread_ranges(n, segments, [=](int64_t b, int64_t e) {
        range(p + b, grad + b, sq + b, buf ? buf + b : nullptr, gavg ? gavg + b : nullptr, e - b,
              lr, float(alpha), float(1.0 - alpha), eps, wd, momentum);
    });
}

namespace {

// grad += l1 sign(p) + 2 l2 p over n values; returns (sum |p|, sum p^2) in double.
FASTNN_ISA_BODY void penalty_range(const float* p, float* grad, int64_t n, float l1f,
                                   float two_l2, double* abs_sum, double* sq_sum) {
    for (int64_t i = 0; i < n; ++i) {
        const float sign = static_cast<float>((p[i] > 0.0f) - (p[i] < 0.0f));
        grad[i] += l1f * sign + two_l2 * p[i];
    }
    *abs_sum = sum_lanes_f64(0, n, [=](int64_t i) { return std::fabs(static_cast<double>(p[i])); });
    *sq_sum = sum_lanes_f64(0, n, [=](int64_t i) { return static_cast<double>(p[i]) * p[i]; });
}

}  // namespace

double add_penalty_grad(const float* p, float* grad, int64_t n, double l1, double l2) {
    // float coefficients for the float32 gradient, the exact ones for the reported penalty
    const float l1f = static_cast<float>(l1), two_l2 = static_cast<float>(2.0 * l2);
    const auto range = IsaCopies<penalty_range>::pick();
    return chunked_sum(n, kSumChunk, [=](int64_t b, int64_t e) {
        double abs_sum, sq_sum;
        range(p + b, grad + b, e - b, l1f, two_l2, &abs_sum, &sq_sum);
        return l1 * abs_sum + l2 * sq_sum;
    });
}

}  // namespace fastnn
