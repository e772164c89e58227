// bf16 GEMM driver: gemm.cpp's loop nest (threads own blocks of C's rows, or of its columns
// when C has few rows; NC, KC, MC blocks from the cache model for 2-byte panels), with A and
// B rounded to bf16 as they are packed, so the fp32 operands are read once and no bf16 copy
// of them is ever made. The kernels accumulate in fp32 across a k-block and add it to C
// (beta for the first block, 1 after). The k-blocks depend on k and the path only, so every
// element of C sees the same summation order whatever the thread count.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../parallel.h"
#include "bf16.h"

namespace fastnn {
namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

void run_bf16(const Bf16Kernel& uk, const Blocking& bl, bool trans_a, bool trans_b, int64_t m,
              int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
              int64_t ldb, float beta, float* c, int64_t ldc, const Epilogue* ep) {
    const int mr = uk.mr, nr = uk.nr;
    const int64_t kc_max = round_up(k_block(k, bl.kc), uk.ka);
    const int64_t n_panels = (n + nr - 1) / nr, m_panels = (m + mr - 1) / mr;
    const int threads = threads_for(m * n * k, int64_t{1} << 18);
    const bool split_columns = m_panels < 4 * threads && n_panels >= 2 * threads;
    auto a_at = [&](int64_t i, int64_t p) { return trans_a ? a + p * lda + i : a + i * lda + p; };
    auto b_at = [&](int64_t p, int64_t j) { return trans_b ? b + j * ldb + p : b + p * ldb + j; };

    auto block = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
        thread_local std::unique_ptr<float, AlignedFree> a_buf, b_buf;
        thread_local size_t a_cap = 0, b_cap = 0;
        const int64_t nc_max = std::min(round_up(bl.nc, nr), round_up(j1 - j0, nr));
        const int64_t mc_max = std::min(round_up(bl.mc, mr), round_up(i1 - i0, mr));
        // bf16 elements, two to a float of scratch
        uint16_t* a_pack = reinterpret_cast<uint16_t*>(scratch(a_buf, a_cap, static_cast<size_t>(mc_max * kc_max / 2 + 1)));
        uint16_t* b_pack = reinterpret_cast<uint16_t*>(scratch(b_buf, b_cap, static_cast<size_t>(nc_max * kc_max / 2 + 1)));
        if (uk.begin) uk.begin();
        for (int64_t jc = j0; jc < j1; jc += nc_max) {
            const int64_t nc = std::min(nc_max, j1 - jc), b_panels = (nc + nr - 1) / nr;
            for (int64_t pc = 0; pc < k; pc += kc_max) {
                const int64_t kc = std::min(kc_max, k - pc), kp = round_up(kc, uk.ka);
                const float beta_k = pc == 0 ? beta : 1.0f;
                const Epilogue* ep_k = pc + kc >= k ? ep : nullptr;
                for (int64_t jp = 0; jp < b_panels; ++jp)
                    uk.pack_b(trans_b, b_at(pc, jc + jp * nr), ldb, kc,
                              std::min<int64_t>(nr, nc - jp * nr), b_pack + jp * nr * kp);
                for (int64_t ic = i0; ic < i1; ic += mc_max) {
                    const int64_t rows = std::min(mc_max, i1 - ic), a_panels = (rows + mr - 1) / mr;
                    for (int64_t ip = 0; ip < a_panels; ++ip)
                        uk.pack_a(trans_a, a_at(ic + ip * mr, pc), lda,
                                  std::min<int64_t>(mr, rows - ip * mr), kc, a_pack + ip * mr * kp);
                    for (int64_t jp = 0; jp < b_panels; ++jp) {
                        const int64_t j = jc + jp * nr, cols = std::min<int64_t>(nr, jc + nc - j);
                        for (int64_t ip = 0; ip < a_panels; ++ip) {
                            const int64_t i = ic + ip * mr, tile_rows = std::min<int64_t>(mr, ic + rows - i);
                            uk.fn(kp, a_pack + ip * mr * kp, b_pack + jp * nr * kp, c + i * ldc + j, ldc,
                                  alpha, beta_k, tile_rows, cols);
                            if (ep_k) apply_epilogue(*ep_k, c + i * ldc + j, ldc, tile_rows, cols, j);
                        }
                    }
                }
            }
        }
    };
    parallel_region(threads, [&](int64_t tid, int64_t nt) {
        if (split_columns) {
            const int64_t j0 = std::min(n, n_panels * tid / nt * nr), j1 = std::min(n, n_panels * (tid + 1) / nt * nr);
            if (j0 < j1) block(0, m, j0, j1);
        } else {
            const int64_t i0 = std::min(m, m_panels * tid / nt * mr), i1 = std::min(m, m_panels * (tid + 1) / nt * mr);
            if (i0 < i1) block(i0, i1, 0, n);
        }
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
        if (!amx_permitted()) return "Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    }
#endif
    return "";
}

Blocking g_blocking[kNumPaths];
std::atomic<int> g_path{kNumPaths - 1};

int index_of(const char* name) {
    for (int i = 0; i < kNumPaths; ++i)
        if (std::strcmp(kPaths[i].name, name) == 0) return i;
    return -1;
}

struct Init {
    Init() {
        for (int i = kNumPaths - 1; i >= 0; --i) {
            if (kPaths[i].uk) g_blocking[i] = model_blocking(cpu_info().caches, kPaths[i].uk->mr, kPaths[i].uk->nr, 2);
            if (!*missing_reason(i)) g_path = i;  // the best, listed first
        }
        const char* forced = std::getenv("FASTNN_BF16");
        if (forced && *forced) set_bf16_path(forced);
    }
} init;

}  // namespace

void bf16_convert(const float* x, uint16_t* y, int64_t n) {
#ifdef FASTNN_X86
    if (cpu_info().avx512f) {
        bf16_convert_avx512(x, y, n);
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

bool set_bf16_path(const char* name) {
    const int i = index_of(name);
    if (i < 0 || *missing_reason(i)) return false;
    g_path = i;
    return true;
}

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
