// The one ISA switch for the kernels outside the GEMM (activations, softmax, losses,
// optimizers, reductions, dropout) is the GEMM's (gemm.h's active_isa: FASTNN_ISA, set_isa,
// else the best this CPU runs), so FASTNN_ISA=generic runs generic code everywhere.
//
// A hot loop is written once, as an always-inline body; IsaCopies<body> compiles it for
// AVX-512, AVX2 and the baseline, and pick() returns the copy of the ISA active now: set_isa
// may change it at any time, and only an ISA this CPU runs can become active. A pick costs a
// call, a load and two compares, once per call of a kernel (once per operation for kernels
// called row by row), never per element. The files using it are compiled with
// -ffp-contract=off (CMakeLists.txt) and the targets add no FMA: every copy rounds every
// element identically.
#pragma once
#include "gemm/gemm.h"

// A body that IsaCopies compiles per ISA: it must be inlined into every copy, or the copies
// would all call the one baseline body.
#define FASTNN_ISA_BODY [[gnu::always_inline]] inline

namespace fastnn {

enum class Isa { Generic, Avx2, Avx512 };

// The active ISA, read now.
inline Isa elementwise_isa() {
#if defined(FASTNN_X86) && defined(__GNUC__)
    // active_isa() is the active kernel table's `isa`: pointers compared, not strings (the
    // GEMM's epilogue calls activate() per tile row). The ISA tests check every name maps.
    const char* isa = active_isa();
    if (isa == kAvx2Kernel.isa) return Isa::Avx2;
    if (isa == kAvx512Kernel.isa) return Isa::Avx512;
#endif
    return Isa::Generic;
}

inline const char* isa_name(Isa isa) {
    return isa == Isa::Avx512 ? "avx512" : isa == Isa::Avx2 ? "avx2" : "generic";
}

template <auto body>
struct IsaCopies;

template <class R, class... A, R (*body)(A...)>
struct IsaCopies<body> {
    using Fn = R (*)(A...);

    static R baseline(A... a) { return body(a...); }
#if defined(FASTNN_X86) && defined(__GNUC__)
    __attribute__((target("avx512f"))) static R avx512(A... a) { return body(a...); }
    __attribute__((target("avx2"))) static R avx2(A... a) { return body(a...); }
#endif

    static Fn pick() {
#if defined(FASTNN_X86) && defined(__GNUC__)
        switch (elementwise_isa()) {
            case Isa::Avx512: return avx512;
            case Isa::Avx2: return avx2;
            case Isa::Generic: break;
        }
#endif
        return baseline;
    }

    static R run(A... a) { return pick()(a...); }
};

}  // namespace fastnn
