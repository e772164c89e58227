// bf16 GEMM driver. Threads own blocks of C's rows (or of its columns when C has few rows),
// as in gemm.cpp; A and B are rounded to bf16 as they are packed (the fp32 operands are read
// once; the packed bf16 panels are the only copy), the kernels accumulate the products in
// fp32, and C gets alpha, beta and the epilogue once, at the end (run_bf16 says why the loop
// nest differs from gemm.cpp's). The k-blocks depend on k and the path only, so every element
// of C sees the same summation order whatever the thread count.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#ifdef FASTNN_X86
#include <immintrin.h>
#endif

#include "../../parallel.h"
#include "bf16.h"

namespace fastnn {
namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// Panels [p0, p1) of an operand into out (panel q at out + q * width * kp_all), by `pack`
// (a kernel's pack_a or pack_b, `at(q, p)` pointing at panel q's k = p), a few ks at a time
// (a multiple of every kernel's KA), so that the few KiB of a panel being written stay in L1.
// An operand whose ks are rows (B, or a transposed A) goes 32 ks across all its panels, so
// its rows are read along (a panel's strip down all of k read a page per k at n = 2048); 32
// rows, not 64, are as many streams as the prefetchers follow (2048^3 and 4096^3 on AMX, 1
// thread: 3-14% faster). Another operand goes panel by panel, 64 ks at a time (two of the
// 32-k chunks that rows_as_pairs transposes together for an 8-wide panel): its rows,
// contiguous along k, read together (packing whole panels, each row's pairs scattered over
// all of a panel, ran 3x slower).
template <class Pack, class At>
void pack_panels(Pack pack, bool trans, At at, int64_t ld, int64_t p0, int64_t p1, int64_t k,
                 int64_t width, int64_t extent, bool k_in_rows, int64_t kp_all, uint16_t* out) {
    const int64_t ks = k_in_rows ? 32 : 64;
    auto chunk = [&](int64_t q, int64_t p) {
        pack(trans, at(q, p), ld, std::min<int64_t>(ks, k - p), std::min(width, extent - q * width),
             out + q * width * kp_all + p * width);
    };
    if (k_in_rows) {
        for (int64_t p = 0; p < k; p += ks)
            for (int64_t q = p0; q < p1; ++q) chunk(q, p);
    } else {
        for (int64_t q = p0; q < p1; ++q)
            for (int64_t p = 0; p < k; p += ks) chunk(q, p);
    }
}

// The operands are packed whole (all of k: bf16 copies of the thread's rows of op(A) and of
// op(B), which the threads pack together when they split C's rows), then multiplied block
// by block into an fp32 accumulator of MC x NC, which stays in L2 across the k-blocks (its
// rows padded off a power-of-two stride), each B micro-panel (KC x NR) in L1 across the
// block's A panels (in L2 where a short k runs as one longer block: see kc_max); the block
// goes to C once, with alpha, beta and the epilogue (whole tiles of a one-k-block product
// straight from the kernel: see to_c). (Packing
// each block just before its use, as gemm.cpp does, left the kernels waiting on C's tiles,
// read and written once per k-block: 2048^2 on AMX at 1 thread ran ~650 GFLOP/s, this ~770.)
void run_bf16(const Bf16Kernel& uk, const Blocking& bl, bool trans_a, bool trans_b, int64_t m,
              int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
              int64_t ldb, float beta, float* c, int64_t ldc, const Epilogue* ep) {
    const int mr = uk.mr, nr = uk.nr;
    // One k-block up to uk.one_block_kcs KCs (AMX: 4): on the Xeon family 6 model 207, in one
    // process alternated with KC-blocked k (medians of 10-16 rounds), 512^3 1.06x and 1024^3
    // 1.07x on 1 thread, 1024^3 1.12x on 2, the 784-512-256-10 Adam step at batch 512 1.06x
    // and 1.07x (batch 128 1.00x); 2048^3 and 4096^3 in k-blocks of 1024 lost 5-12%, so a
    // longer k stays in blocks of KC.
    const int64_t kc_max = k <= uk.one_block_kcs * bl.kc ? round_up(k, uk.ka)
                                                          : round_up(k_block(k, bl.kc), uk.ka);
    const int64_t kp_all = round_up(k, uk.ka);
    const int64_t n_panels = (n + nr - 1) / nr, m_panels = (m + mr - 1) / mr;
    const int threads = threads_for(m * n * k, int64_t{1} << 18);
    int64_t l2_bytes = 0;
    for (const CacheLevel& level : cpu_info().caches)
        if (level.level == 2 && !l2_bytes) l2_bytes = level.size_bytes;
    const bool split_columns = m_panels < 4 * threads && n_panels >= 2 * threads;
    auto pack_a = [&](bool t, const float* x, int64_t l, int64_t kc, int64_t rows, uint16_t* o) {
        uk.pack_a(t, x, l, rows, kc, o);
    };
    auto pack_b = [&](bool t, const float* x, int64_t l, int64_t kc, int64_t cols, uint16_t* o) {
        uk.pack_b(t, x, l, kc, cols, o);
    };
    // B's panels, packed by all the threads into the caller's buffer when they split rows
    thread_local std::unique_ptr<float, AlignedFree> shared_buf;
    thread_local size_t shared_cap = 0;
    uint16_t* shared_b = split_columns ? nullptr : reinterpret_cast<uint16_t*>(
        scratch(shared_buf, shared_cap, static_cast<size_t>(n_panels * nr * kp_all / 2 + 1)));

    auto block = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1, const uint16_t* b_pack) {
        thread_local std::unique_ptr<float, AlignedFree> a_buf, b_buf, acc_buf;
        thread_local size_t a_cap = 0, b_cap = 0, acc_cap = 0;
        const int64_t a_panels = (i1 - i0 + mr - 1) / mr, b_panels = (j1 - j0 + nr - 1) / nr;
        const int64_t nc_panels = std::min(b_panels, std::max<int64_t>(1, bl.nc / nr));
        const int64_t mc_panels = std::min(a_panels, std::max<int64_t>(1, bl.mc / mr));
        const int64_t ld = nc_panels * nr + 16;
        // bf16 elements, two to a float of scratch
        uint16_t* a_pack = reinterpret_cast<uint16_t*>(scratch(a_buf, a_cap, static_cast<size_t>(a_panels * mr * kp_all / 2 + 1)));
        float* acc = scratch(acc_buf, acc_cap, static_cast<size_t>(mc_panels * mr * ld));
        if (!b_pack) {
            uint16_t* own = reinterpret_cast<uint16_t*>(scratch(b_buf, b_cap, static_cast<size_t>(b_panels * nr * kp_all / 2 + 1)));
            pack_panels(pack_b, trans_b, [&](int64_t q, int64_t p) { return trans_b ? b + (j0 + q * nr) * ldb + p : b + p * ldb + j0 + q * nr; },
                        ldb, 0, b_panels, k, nr, j1 - j0, !trans_b, kp_all, own);
            b_pack = own;
        }
        pack_panels(pack_a, trans_a, [&](int64_t q, int64_t p) { return trans_a ? a + p * lda + i0 + q * mr : a + (i0 + q * mr) * lda + p; },
                    lda, 0, a_panels, k, mr, i1 - i0, trans_a, kp_all, a_pack);
        if (uk.begin) uk.begin();
        // With one k-block, alpha 1 and beta 0, a whole tile goes from the kernel straight to C:
        // through the accumulator and the copy it cost a tenth of a batch-32 step (the weight
        // gradient's k is the batch). In one process, alternated (Xeon family 6 model 207, 2
        // threads): 512 x 784 x 32 (TN) 1.20x, 512 x 784 x 128 1.27x, 128 x 512 x 256 (NN) 1.26x,
        // 1024 x 1024 x 256 1.14x; the 784-512-256-10 Adam step 1.10x / 1.06x / 1.02x at batch
        // 32 / 128 / 512. Partial tiles, and products of several k-blocks, still go through it.
        const bool one_pass = kc_max >= k && alpha == 1.0f && beta == 0.0f;
        // A C of several k-blocks larger than twice this core's L2, written (beta 0), goes
        // from the accumulator by streaming stores: it leaves the caches anyway, and the
        // copy had waited on its lines' reads for ownership (2048^3 and 4096^3 on AMX, 1
        // thread, alternated builds: 935-962 -> 1011-1040 and 906-971 -> 988-1020 GFLOP/s).
        const bool stream_c = !one_pass && beta == 0.0f && m * n * int64_t{sizeof(float)} > 2 * l2_bytes;
        const auto to_c = [&](int64_t ip, int64_t jp) {
            return one_pass && i0 + (ip + 1) * mr <= i1 && j0 + (jp + 1) * nr <= j1;
        };
        // alpha * t (rows x cols, ld apart) + beta * C into C at (ti, tj). A whole block goes a
        // row at a time: tile by tile, C's rows (a page apart at n = 2048) were read 128 bytes at
        // a time down a column of tiles, which kept the prefetchers from them (2048^3 on AMX, 1
        // thread: the copy took a sixth of the time).
        const auto to_c_rows = [&](const float* t, int64_t ti, int64_t tj, int64_t rows, int64_t cols) {
            for (int64_t r = 0; r < rows; ++r, t += ld) {
                float* row = c + (ti + r) * ldc + tj;
#ifdef FASTNN_X86
                if (stream_c) {
                    int64_t q = 0;
                    for (; q < cols && (reinterpret_cast<uintptr_t>(row + q) & 15); ++q) row[q] = alpha * t[q];
                    const __m128 a4 = _mm_set1_ps(alpha);
                    for (; q + 4 <= cols; q += 4) _mm_stream_ps(row + q, _mm_mul_ps(a4, _mm_loadu_ps(t + q)));
                    for (; q < cols; ++q) row[q] = alpha * t[q];
                    continue;
                }
#endif
                if (beta == 0.0f)
                    for (int64_t q = 0; q < cols; ++q) row[q] = alpha * t[q];
                else
                    for (int64_t q = 0; q < cols; ++q) row[q] = alpha * t[q] + beta * row[q];
            }
        };
        for (int64_t jb = 0; jb < b_panels; jb += nc_panels) {
            const int64_t jn = std::min(b_panels, jb + nc_panels);
            for (int64_t ib = 0; ib < a_panels; ib += mc_panels) {
                const int64_t in = std::min(a_panels, ib + mc_panels);
                for (int64_t pc = 0; pc < k; pc += kc_max) {
                    const int64_t kp = round_up(std::min(kc_max, k - pc), uk.ka);
                    for (int64_t jp = jb; jp < jn; ++jp) {
                        const uint16_t* bp = b_pack + jp * nr * kp_all + pc * nr;
                        for (int64_t ip = ib; ip < in; ++ip) {
                            const uint16_t* ap = a_pack + ip * mr * kp_all + pc * mr;
                            if (to_c(ip, jp))
                                uk.fn(kp, ap, bp, c + (i0 + ip * mr) * ldc + j0 + jp * nr, ldc, true);
                            else
                                uk.fn(kp, ap, bp, acc + (ip - ib) * mr * ld + (jp - jb) * nr, ld, pc == 0);
                        }
                    }
                }
                const int64_t i = i0 + ib * mr, rows = std::min(i1, i0 + in * mr) - i;
                const int64_t j = j0 + jb * nr, cols = std::min(j1, j0 + jn * nr) - j;
                if (!one_pass)  // every tile is in acc: whole rows of the block
                    to_c_rows(acc, i, j, rows, cols);
                else
                    for (int64_t jp = jb; jp < jn; ++jp)
                        for (int64_t ip = ib; ip < in; ++ip) {
                            if (to_c(ip, jp)) continue;
                            const int64_t ti = i0 + ip * mr, tj = j0 + jp * nr;
                            to_c_rows(acc + (ip - ib) * mr * ld + (jp - jb) * nr, ti, tj,
                                      std::min<int64_t>(mr, i1 - ti), std::min<int64_t>(nr, j1 - tj));
                        }
                if (ep) apply_epilogue(*ep, c + i * ldc + j, ldc, rows, cols, j);
            }
        }
#ifdef FASTNN_X86
        if (stream_c) _mm_sfence();  // the streamed stores before the region's end
#endif
    };
    parallel_region(threads, [&](int64_t tid, int64_t nt) {
        if (split_columns) {
            const int64_t j0 = std::min(n, n_panels * tid / nt * nr), j1 = std::min(n, n_panels * (tid + 1) / nt * nr);
            if (j0 < j1) block(0, m, j0, j1, nullptr);
            return;
        }
        pack_panels(pack_b, trans_b, [&](int64_t q, int64_t p) { return trans_b ? b + q * nr * ldb + p : b + p * ldb + q * nr; },
                    ldb, n_panels * tid / nt, n_panels * (tid + 1) / nt, k, nr, n, !trans_b, kp_all, shared_b);
        // only within this product's own team: on one thread, f may run inside a caller's
        // parallel region (conv's GEMMs), whose barrier this would otherwise be
        if (nt > 1) {
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
        const int64_t i0 = std::min(m, m_panels * tid / nt * mr), i1 = std::min(m, m_panels * (tid + 1) / nt * mr);
        if (i0 < i1) block(i0, i1, 0, n, shared_b);
    });
}

// ---- path selection -------------------------------------------------------------------

struct Path {
    const char* name;
    const Bf16Kernel* uk;  // nullptr: fp32
};

const Path kPaths[] = {
#ifdef FASTNN_X86
    {"amx", &kAmxBf16Kernel},
    {"avx512_bf16", &kAvx512Bf16Kernel},
#endif
    {"fp32", nullptr}};
constexpr int kNumPaths = sizeof(kPaths) / sizeof(kPaths[0]);

const char* missing_reason(int i) {
    const Bf16Kernel* uk = kPaths[i].uk;
    if (!uk) return "";
#ifdef FASTNN_X86
    const CpuInfo& cpu = cpu_info();
    if (uk == &kAvx512Bf16Kernel && !cpu.avx512_bf16) return "the CPU (or OS) has no AVX512_BF16";
    if (uk == &kAmxBf16Kernel) {
        if (!cpu.amx_bf16 || !cpu.avx512f) return "the CPU (or OS) has no AMX-BF16";
        // B's packing is the AVX512_BF16 path's (vcvtne2ps2bf16); every AMX CPU has it
        if (!cpu.avx512_bf16) return "the CPU (or OS) has AMX-BF16 but no AVX512_BF16";
        if (!amx_permitted()) return "Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    }
#endif
    return "";
}

Blocking g_blocking[kNumPaths];
std::atomic<int> g_path{kNumPaths - 1};
int g_auto = kNumPaths - 1;
std::string g_auto_reason;
// Why g_path is what it is, for config(): "" (picked for this CPU), or what chose it. Set
// under the GIL (the bindings), as set_bf16_path and set_isa are called.
std::string g_chosen_by;
bool g_forced = false;  // FASTNN_BF16 or set_bf16_path chose it: set_isa leaves it

int index_of(const char* name) {
    for (int i = 0; i < kNumPaths; ++i)
        if (std::strcmp(kPaths[i].name, name) == 0) return i;
    return -1;
}

// choose_bf16_path on this CPU; the peaks are measured (two probes of at least 10 ms) only
// where the rule needs them.
void choose_automatic_path() {
    const bool amx = index_of("amx") >= 0 && !*missing_reason(index_of("amx"));
    const bool dot = index_of("avx512_bf16") >= 0 && !*missing_reason(index_of("avx512_bf16"));
    double dot_gflops = 0.0, fma_gflops = 0.0;
#ifdef FASTNN_X86
    if (dot && !amx) {
        dot_gflops = measure_peak(bf16_dot_probe_avx512, 1, 0.01);
        fma_gflops = measure_fma_peak(kAvx512Kernel, 1, 0.01);
    }
#endif
    g_auto = index_of(choose_bf16_path(amx, dot, dot_gflops, fma_gflops));
    if (dot && g_auto == kNumPaths - 1) {
        char text[200];
        std::snprintf(text, sizeof text, "avx512_bf16 is no faster here: its dot products ran at %.0f "
                      "GFLOP/s a core, float32 FMAs at %.0f", dot_gflops, fma_gflops);
        g_auto_reason = text;
    }
}

struct Init {
    Init() {
        for (int i = kNumPaths - 1; i >= 0; --i)
            if (kPaths[i].uk) g_blocking[i] = model_blocking_bf16(cpu_info().caches, kPaths[i].uk->mr, kPaths[i].uk->nr);
        choose_automatic_path();
        g_path = g_auto;
        // Both kernels are AVX-512 code: FASTNN_ISA=avx2 or generic (a CPU without it, as
        // far as fastnn goes) leaves bf16 on fp32 too, unless FASTNN_BF16 asks otherwise.
        if (const std::string isa = env_setting("FASTNN_ISA"); kernel_named(isa.c_str()))
            bf16_follow_isa(isa.c_str());
        // "auto", as set_bf16_path takes it: the path picked above
        const std::string forced = env_setting("FASTNN_BF16");
        if (!forced.empty() && forced != "auto" && set_bf16_path(forced.c_str()))
            g_chosen_by = "forced by FASTNN_BF16=" + forced;
    }
} init;

}  // namespace

void bf16_convert(const float* x, uint16_t* y, int64_t n) {
#ifdef FASTNN_X86
    if (cpu_info().avx512_bf16) {
        bf16_convert_avx512_bf16(x, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) y[i] = bf16_from_float(x[i]);
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc, const Epilogue& epilogue) {
    const int path = g_path.load();
    const Bf16Kernel* uk = kPaths[path].uk;
    if (!uk || k <= 0 || alpha == 0.0f || m <= 0 || n <= 0) {  // nothing to round: fp32's
        gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
        return;
    }
    Epilogue picked = epilogue;  // the activation's copy picked once, not per tile
    if (picked.act != Activation::Identity) picked.act_fn = activate_kernel();
    run_bf16(*uk, g_blocking[path], trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
             has_epilogue(picked) ? &picked : nullptr);
}

void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float beta, float* c, int64_t ldc, const Epilogue& epilogue) {
    // The rounded operands, dense (ld = their column count), through the fp32 reference.
    const int64_t ar = trans_a ? k : m, ac = trans_a ? m : k, br = trans_b ? n : k, bc = trans_b ? k : n;
    std::vector<float> ra(static_cast<size_t>(std::max<int64_t>(ar * ac, 0)));
    std::vector<float> rb(static_cast<size_t>(std::max<int64_t>(br * bc, 0)));
    for (int64_t r = 0; r < ar; ++r)
        for (int64_t q = 0; q < ac; ++q) ra[r * ac + q] = float_from_bf16(bf16_from_float(a[r * lda + q]));
    for (int64_t r = 0; r < br; ++r)
        for (int64_t q = 0; q < bc; ++q) rb[r * bc + q] = float_from_bf16(bf16_from_float(b[r * ldb + q]));
    gemm_reference(trans_a, trans_b, m, n, k, alpha, ra.data(), std::max<int64_t>(ac, 1), rb.data(),
                   std::max<int64_t>(bc, 1), beta, c, ldc, epilogue);
}

const char* bf16_path() { return kPaths[g_path.load()].name; }

const char* choose_bf16_path(bool amx_runs, bool avx512_bf16_runs, double dot_gflops, double fma_gflops) {
    if (amx_runs) return "amx";
    if (avx512_bf16_runs && dot_gflops >= 1.5 * fma_gflops) return "avx512_bf16";
    return "fp32";
}

const char* bf16_auto_path() { return kPaths[g_auto].name; }

const char* bf16_auto_reason() { return g_auto_reason.c_str(); }

bool set_bf16_path(const char* name) {
    const int i = index_of(name);
    if (i < 0 || *missing_reason(i)) return false;
    g_path = i;
    g_forced = true;
    g_chosen_by = "set by set_bf16_path";
    return true;
}

void bf16_follow_isa(const char* isa) {
    if (g_forced) return;
    const bool avx512 = std::strcmp(isa, "avx512") == 0;
    g_path = avx512 ? g_auto : kNumPaths - 1;
    g_chosen_by = avx512 ? "" : std::string("ISA ") + isa + ", by FASTNN_ISA or set_isa: the bf16 kernels "
                                "are AVX-512 code";
}

void reset_bf16_path() {
    g_forced = false;
    bf16_follow_isa(active_isa());
}

const char* bf16_chosen_by() { return g_chosen_by.c_str(); }

int supported_bf16_paths(const char** names) {
    int count = 0;
    for (int i = 0; i < kNumPaths; ++i)
        if (!*missing_reason(i)) names[count++] = kPaths[i].name;
    return count;
}

const char* bf16_missing_reason(const char* name) {
    const int i = index_of(name);
    return i < 0 ? "not a bf16 path of this build" : missing_reason(i);
}

Blocking bf16_blocking(const char* name) {
    const int i = index_of(name);
    return i < 0 ? Blocking{} : g_blocking[i];
}

}  // namespace fastnn
