// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, with leading dimensions.
// op(A) is m x k (A is stored k x m when trans_a), op(B) is k x n (n x k when trans_b).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "blocking.h"

namespace fastnn {

enum class Activation { Identity, Sigmoid, Relu, Tanh, LeakyRelu, Elu, Gelu, Softplus };

// The activations by name: the one table that the bindings, the layers (through
// _C.activations()) and the stubs' test read. "linear" is identity's Keras spelling.
struct ActivationInfo {
    const char* name;
    Activation act;
    float default_alpha;        // leaky_relu's slope, elu's alpha; 0 where there is none
    bool backward_needs_input;  // f' needs x, not only y = f(x): Dense keeps z, applies f apart
    bool he_init;               // a rectifier: Dense initializes its weights as He does
};
extern const ActivationInfo kActivations[];
extern const int kNumActivations;
const ActivationInfo* find_activation(const char* name);  // nullptr for an unknown name

// y = f(x) on one thread; x == y is allowed (cpu/activation.cpp).
void activate(Activation act, const float* x, float* y, int64_t n, float alpha);
// activate's copy for the ISA active now: for a caller that applies it many times (the
// epilogue, once per tile row) and picks once.
using ActivateFn = void (*)(Activation act, const float* x, float* y, int64_t n, float alpha);
ActivateFn activate_kernel();

// What happens to C after the product, while each tile is still in cache:
// C = act(C + bias), bias broadcast along the rows (a Dense layer's forward pass).
struct Epilogue {
    const float* bias = nullptr;  // n values, or none
    Activation act = Activation::Identity;
    float act_alpha = 0.0f;       // leaky_relu's negative slope, elu's scale
    ActivateFn act_fn = nullptr;  // the copy that runs act; gemm sets it (nullptr: activate)
};

// Packed, cache-blocked, OpenMP-parallel GEMM on the active microkernel, with a direct
// path for small and skinny products.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc, const Epilogue& epilogue = Epilogue{});

// C = alpha * A * B^T + beta * C for a B whose n rows lie anywhere: row j, k contiguous
// floats, at b_rows[j] (A is m x k, lda apart; C is m x n). A convolution's weight gradient
// reads its patches this way, straight from the padded image, with no im2col block: on the
// transposed path's kernel, whose tiles read B's rows in place, or, on an ISA without one (or
// for an A too tall for one A block), through the packed path with B's rows gathered a
// k-block at a time. With `segments` > 1 it sums that many such products, A and B's rows
// moved by a_segment and b_segment floats from one to the next (a convolution's images): the
// transposed path's tiles then carry their sums across the segments, C read and written
// once a k-block for all of them. Every element of C sums in k-blocks of k and the machine
// only, as gemm's do.
void gemm_row_table(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* const* b_rows, float beta, float* c, int64_t ldc,
                    int64_t segments = 1, int64_t a_segment = 0, int64_t b_segment = 0);
// How many segments of an m x k A one gemm_row_table call should take: as many as keep the
// segments' k-blocks within one KC and their packed A within one A block (1 without the
// transposed path's kernel, or for a k of more than KC / 2).
int64_t row_table_segments(int64_t m, int64_t k);

// The plain triple loop (double accumulator) that the fast path is held to.
void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                    float* c, int64_t ldc, const Epilogue& epilogue = Epilogue{});

// A microkernel computes one MR x NR tile of C from kc steps of panels: a holds kc groups
// of MR values of op(A) (packed); b holds kc rows of NR values of op(B), ldb apart (NR when
// packed, B's own row stride when a non-transposed B is read in place).
// C = alpha * sum + beta * C; with beta == 0, C is written without being read.
using MicrokernelFn = void (*)(int64_t kc, const float* a, const float* b, int64_t ldb,
                               float* c, int64_t ldc, float alpha, float beta);

// Optional fast packing of a panel that packing has to transpose: rows [0, rows) x columns
// [0, kc) of a row-major matrix into kc groups of W values, W being MR for a non-transposed
// A and NR for a transposed B (rows <= W; the values past `rows` are zeros). The ISA packs
// whole groups of rows in registers and leaves the rest to pack_rows_tail.
using PackRowsFn = void (*)(const float* src, int64_t ld, int64_t kc, float* out, int64_t rows);
// Rows [first, W) of such a panel, one value at a time (zeros from `rows` on).
void pack_rows_tail(const float* src, int64_t ld, int64_t kc, float* out, int64_t width,
                    int64_t first, int64_t rows);

// Optional path for small and skinny products, where packing costs more than it saves:
// works on the unpacked operands (or a thin one packed), on one thread, on the products
// small_form (small_gemm.h) chose a form for, k-blocks of kb (small_k_block).
enum class SmallForm;
using SmallGemmFn = void (*)(SmallForm form, int64_t strip, int64_t kb, bool trans_a, bool trans_b, int64_t m,
                             int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                             const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Optional kernel for an edge tile, rows x cols of C (0 < rows <= MR, 0 < cols <= NR, not
// both full; B's rows ldb apart as for the full kernel), written to C in place; without it
// such tiles run the full kernel into a buffer.
using EdgeKernelFn = void (*)(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                              int64_t ldc, float alpha, float beta, int64_t rows, int64_t cols);

// Shared by the drivers (gemm.cpp, gemm_bf16.cpp).
struct AlignedFree {
    void operator()(float* p) const { std::free(p); }
};
// Grow-only 64-byte aligned scratch of at least `floats` floats, in `buf` (of capacity `cap`).
float* scratch(std::unique_ptr<float, AlignedFree>& buf, size_t& cap, size_t floats);
// C = act(C + bias) on rows x cols of C, whose first column is column col0 of the product.
void apply_epilogue(const Epilogue& ep, float* c, int64_t ldc, int64_t rows, int64_t cols,
                    int64_t col0);
bool has_epilogue(const Epilogue& ep);
// k in equal blocks of at most KC (784 -> 2 x 392, not 384 + 384 + 16): on k and the machine
// only, so every element of C sees one summation order whatever the threads.
int64_t k_block(int64_t k, int64_t kc_cap);

// The table of one ISA: its kernels and the shape they are written for. Block sizes are
// not here: they come from the machine (blocking.h) and live in the ISA's GemmContext.
struct Microkernel {
    const char* isa;
    int mr, nr;
    MicrokernelFn fn;
    PackRowsFn pack_a_rows, pack_b_rows;  // nullptr: the portable packing loop
    SmallGemmFn small;                    // nullptr: every product is packed
    EdgeKernelFn edge = nullptr;
    // Flops done by `iters` rounds of independent FMAs (or multiply-adds) of this ISA's
    // widest vectors, no loads: measures the core's peak for this path.
    double (*fma_probe)(int64_t iters) = nullptr;
    // Optional, for the transposed path (gemm.cpp): MR rows read in place (row i at a[i],
    // kc floats contiguous along k; the rows past `rows` are read, never stored) times kc
    // rows of a packed B panel make a tile of C^T, stored back transposed:
    // C[q][r] = alpha * tile[r][q] + beta * C[q][r], plus bias[r] where bias is given, then
    // relu where asked (as activate's), for r < rows <= MR, q < cols <= NR (c at C's row 0
    // of the tile, ldc its row stride). With segments > 1 the tile sums that many runs of
    // kc steps, the rows read from a[i] + s * segment_stride in run s, B's panel going on
    // (segments x kc rows).
    void (*rows_a)(int64_t kc, const float* const* a, const float* b, float* c, int64_t ldc,
                   float alpha, float beta, int64_t rows, int64_t cols, const float* bias,
                   bool relu, int64_t segments, int64_t segment_stride) = nullptr;
    // Floats in a vector of the small path's kernels: a thinner B is "thin" (small_form).
    int lanes = 16;
    // The most rows of C one pass of the small path's rows form takes (small_form), and the
    // columns its kernel takes at once for that many rows: the rows form's strips of op(B)
    // are cut in multiples of them, so that no strip ends in narrower blocks.
    int rows_pass = 4;
    int rows_width = 16;
    // A dot product's reduction and store in the small path, in vectors of FMAs (small_form).
    int dot_overhead = 5;
    // The transposed path's least k per row of C (m rounded up to 16, the columns of C^T the
    // kernels fill): it stores each tile back transposed, which costs more per float than
    // packing op(B) does, and short products have more tiles per flop (gemm.cpp).
    int rows_a_k_per_row = 0;
    // (The ISA tables initialize these fields in this order: a field goes in at the end.)
};

// One per ISA translation unit; avx512/avx2 exist only on x86-64 builds.
extern const Microkernel kGenericKernel;
#ifdef FASTNN_X86
extern const Microkernel kAvx2Kernel;
extern const Microkernel kAvx512Kernel;
#endif

// ISA selection: the best this CPU runs, unless FASTNN_ISA or set_isa says otherwise.
// This is the one switch for every kernel family (cpu/isa.h dispatches the others on it).
const char* active_isa();
bool set_isa(const char* name);           // false if unknown or unsupported here
int supported_isas(const char** names);   // fills up to 3 names, best first
const Microkernel* kernel_named(const char* name);  // any ISA built in, run here or not
// Best-of-rounds rate in GFLOP/s of `probe` (the flops done by `iters` rounds of independent
// vector multiply-adds, no loads) on `threads` threads for `seconds` (cpu/gemm/peak.cpp);
// measure_fma_peak: of `uk`'s float32 FMA probe (0 without one).
double measure_peak(double (*probe)(int64_t iters), int threads, double seconds);
double measure_fma_peak(const Microkernel& uk, int threads, double seconds);

// What the GEMM runs for one ISA: the kernel table and the blocking in use, with where
// that blocking came from: "model" (derived from cpu_info()'s caches), "tuned" (fastnn.tune's
// cache file) or "override" (set by hand).
struct GemmContext {
    const Microkernel* uk;
    Blocking blocking;
    const char* source;
};
// The context of `isa` (nullptr: the active one); nullptr if that ISA does not run here.
const GemmContext* gemm_context(const char* isa = nullptr);
// Replaces the blocking of `isa` (nullptr: the active ISA): kc, nc, mc >= 1, nc rounded up
// to a multiple of NR and mc of MR; source "tuned" or "override". reset_blocking restores the model's.
// Safe while other threads multiply: each product reads the context once.
bool set_blocking(const char* isa, Blocking blocking, const char* source);
bool reset_blocking(const char* isa);

}  // namespace fastnn
