// GEMM driver in the GotoBLAS/BLIS shape, for row-major C. Each thread owns a block of
// C's rows (or, when C has few rows, of its columns) and packs what it needs itself, so
// the threads share no packed data and meet only at the end: on a VM two cores are
// sometimes far apart, and a cache line that crosses between them costs ~200 ns.
//   for each NC block of the thread's columns, for each KC block of k:
//     pack op(B) into NR-wide panels: the thread's KC x NC B block, sized for its L3 share
//     for each MC block of the thread's rows:
//       pack op(A) into MR-tall panels: the MC x KC A block, sized for its L2
//       for each B micro-panel (KC x NR, fetched from L3 once and reused from L2): run it
//       against every A panel of the block
// This is BLIS's loop nest (MC, KC, NC: blocking.h's cache model, or a tuned or overridden
// blocking, from the active ISA's context). Its point is what comes from beyond L2: B's
// micro-panels once per A block (1/(2 MC) floats per flop) and C's tiles once per k-block
// (1/KC). The order before it (A panel in L1, B streaming) moved 1/(2 MR) from L3.
// Packing absorbs transposes and leading dimensions and zero-pads edges, so the
// microkernel always runs full tiles; the last row and column panels go to the kernel's
// edge variant where it has one (only their rows and vectors computed), else through a
// small buffer.
// The k-blocks depend on k alone, so every element of C sees the same summation order
// whatever the thread count: results are bit-identical with 1 or many threads.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "../../parallel.h"
#include "small_gemm.h"

namespace fastnn {

float* scratch(std::unique_ptr<float, AlignedFree>& buf, size_t& cap, size_t floats) {
    if (floats > cap) {
        size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
        buf.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
        if (!buf) throw std::bad_alloc();
        cap = floats;
    }
    return buf.get();
}

namespace {

// kc rows of `width` contiguous floats, `ld` apart, into kc groups of width: the packing of
// a full panel that needs no transpose. The width is a compile-time constant in each case,
// so each row is a few vector moves rather than a call to memcpy (6.5% of a training step).
template <int W>
void copy_rows(const float* src, int64_t ld, int64_t kc, float* out) {
    for (int64_t p = 0; p < kc; ++p) std::memcpy(out + p * W, src + p * ld, W * sizeof(float));
}

bool copy_full_panel(int width, const float* src, int64_t ld, int64_t kc, float* out) {
    switch (width) {  // the MR and NR of the microkernels
        case 4: copy_rows<4>(src, ld, kc, out); return true;
        case 6: copy_rows<6>(src, ld, kc, out); return true;
        case 8: copy_rows<8>(src, ld, kc, out); return true;
        case 16: copy_rows<16>(src, ld, kc, out); return true;
        case 48: copy_rows<48>(src, ld, kc, out); return true;
        default: return false;
    }
}

}  // namespace

void pack_rows_tail(const float* src, int64_t ld, int64_t kc, float* out, int64_t width,
                    int64_t first, int64_t rows) {
    for (int64_t p = 0; p < kc; ++p)
        for (int64_t i = first; i < width; ++i) out[p * width + i] = i < rows ? src[i * ld + p] : 0.0f;
}

void apply_epilogue(const Epilogue& ep, float* c, int64_t ldc, int64_t rows, int64_t cols,
                    int64_t col0) {
    if (ep.act == Activation::Relu) {
        // Dense's own epilogue in one loop the compiler vectorizes: a call to the activation
        // per row of a tile (16 floats) cost 6-7% of b512 784 -> 512 with bias and relu (Zen 3,
        // 2 threads). The same bits: x < 0 ? 0 : x keeps NaN and -0, as activate's relu.
        for (int64_t i = 0; i < rows; ++i) {
            float* row = c + i * ldc;
            if (ep.bias) {
                const float* bias = ep.bias + col0;
                for (int64_t j = 0; j < cols; ++j) {
                    const float v = row[j] + bias[j];
                    row[j] = v < 0.0f ? 0.0f : v;
                }
            } else {
                for (int64_t j = 0; j < cols; ++j) row[j] = row[j] < 0.0f ? 0.0f : row[j];
            }
        }
        return;
    }
    for (int64_t i = 0; i < rows; ++i) {
        float* row = c + i * ldc;
        if (ep.bias)
            for (int64_t j = 0; j < cols; ++j) row[j] += ep.bias[col0 + j];
        if (ep.act != Activation::Identity) (ep.act_fn ? ep.act_fn : activate)(ep.act, row, row, cols, ep.act_alpha);
    }
}

bool has_epilogue(const Epilogue& ep) { return ep.bias || ep.act != Activation::Identity; }

int64_t k_block(int64_t k, int64_t kc_cap) {
    const int64_t k_blocks = (k + kc_cap - 1) / kc_cap;
    return (k + k_blocks - 1) / k_blocks;
}

namespace {

void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i) {
        float* row = c + i * ldc;
        if (beta == 0.0f)
            std::fill(row, row + n, 0.0f);
        else
            for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
}

// Panel `panel` of op(A) rows [i0, i0+mc), ks [p0, p0+kc) into out: kc groups of mr values.
void pack_a_panel(const Microkernel& uk, bool trans, const float* a, int64_t lda, int64_t i0,
                  int64_t mc, int64_t p0, int64_t kc, int64_t panel, float* out) {
    const int mr = uk.mr;
    int64_t r0 = panel * mr, rows = std::min<int64_t>(mr, mc - r0);
    if (!trans && uk.pack_a_rows) {
        uk.pack_a_rows(a + (i0 + r0) * lda + p0, lda, kc, out, rows);
        return;
    }
    if (trans && rows == mr && copy_full_panel(mr, a + p0 * lda + i0 + r0, lda, kc, out)) return;
    for (int64_t p = 0; p < kc; ++p) {
        float* o = out + p * mr;
        if (trans) {  // op(A)[i][p] = a[p][i]: a row of A is contiguous here
            const float* src = a + (p0 + p) * lda + i0 + r0;
            for (int64_t r = 0; r < rows; ++r) o[r] = src[r];
        } else {
            const float* src = a + (i0 + r0) * lda + p0 + p;
            for (int64_t r = 0; r < rows; ++r) o[r] = src[r * lda];
        }
        for (int64_t r = rows; r < mr; ++r) o[r] = 0.0f;
    }
}

// Panel `panel` of op(B) ks [p0, p0+kc), columns [j0, j0+nc) into out: kc groups of nr values.
void pack_b_panel(const Microkernel& uk, bool trans, const float* b, int64_t ldb, int64_t p0,
                  int64_t kc, int64_t j0, int64_t nc, int64_t panel, float* out) {
    const int nr = uk.nr;
    int64_t c0 = panel * nr, cols = std::min<int64_t>(nr, nc - c0);
    if (trans && uk.pack_b_rows) {
        uk.pack_b_rows(b + (j0 + c0) * ldb + p0, ldb, kc, out, cols);
        return;
    }
    if (!trans && cols == nr && copy_full_panel(nr, b + p0 * ldb + j0 + c0, ldb, kc, out)) return;
    for (int64_t p = 0; p < kc; ++p) {
        float* o = out + p * nr;
        if (trans) {  // op(B)[p][j] = b[j][p]
            const float* src = b + (j0 + c0) * ldb + p0 + p;
            for (int64_t j = 0; j < cols; ++j) o[j] = src[j * ldb];
        } else {
            std::memcpy(o, b + (p0 + p) * ldb + j0 + c0, static_cast<size_t>(cols) * sizeof(float));
        }
        for (int64_t j = cols; j < nr; ++j) o[j] = 0.0f;
    }
}

// One MR x NR tile at C(i, j); a partial tile goes through a local buffer. `ep` is given
// with the last k-block only.
void run_tile(const Microkernel& uk, int64_t kc, const float* ap, const float* bp, int64_t ldb,
              float* c, int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta,
              const Epilogue* ep, int64_t col0) {
    if (rows == uk.mr && cols == uk.nr) {
        uk.fn(kc, ap, bp, ldb, c, ldc, alpha, beta);
    } else if (uk.edge) {
        uk.edge(kc, ap, bp, ldb, c, ldc, alpha, beta, rows, cols);
    } else {
        alignas(64) float tile[16 * 64];
        uk.fn(kc, ap, bp, ldb, tile, uk.nr, 1.0f, 0.0f);
        for (int64_t i = 0; i < rows; ++i) {
            float* row = c + i * ldc;
            const float* t = tile + i * uk.nr;
            if (beta == 0.0f)
                for (int64_t j = 0; j < cols; ++j) row[j] = alpha * t[j];
            else
                for (int64_t j = 0; j < cols; ++j) row[j] = alpha * t[j] + beta * row[j];
        }
    }
    if (ep) apply_epilogue(*ep, c, ldc, rows, cols, col0);
}

// A few rows of C (a small batch): packing op(B) moves each of its elements once for only
// 2 m flops, as costly as the product itself at m = 32 (b32 784->512 ran at 0.68x PyTorch).
// As MKL does, the big operand is then read in place (thread count aside, so that the path,
// and hence the bits, never depend on it):
// - a transposed B by the transposed path (gemm_transposed), while all of op(A) fits one A
//   block (a_fits_one_block: op(A)^T, packed, then stays in L2 as a packed A block would)
//   and m is at most MC: the packing it saves, n x k moves, weighs 1/m of the product, and
//   its kernel (MR rows of B broadcast from where they lie, tiles stored transposed) runs
//   slower than the packed one. Xeon family 6 model 207 (MC 256), n 512, k 784, packed
//   against transposed, 25-40 rounds alternated: m 256 0.85-0.94x, m 320 0.96-1.00x, m 384
//   1.03-1.12x, m 512 1.18-1.19x (1 and 2 threads); m 512, k 512 1.03-1.06x. And while k
//   is long next to m (Microkernel::rows_a_k_per_row): the transposed store of each tile
//   weighs 1/k of the product, the packing 1/m (Zen 3, 1 thread: 68 x 1405 x 20 (TT) ran at
//   0.50x OpenBLAS transposed, 0.88x packed).
// - a non-transposed B by the packed path, its rows read as they are, while at most
//   kFewPanels MR-row panels of op(A) would reuse a packed copy and B's rows stay in L2
//   (strided_rows_fit_l2). At m = 128 in place ran 1.00x PyTorch and packed 0.85x; from
//   m = 192 both were within noise of each other (1 thread, Xeon with AMX).
constexpr int64_t kFewPanels = 16;

// The transposed path's condition: all of op(A), m rows by one k-block, fits in the packed A
// block that the blocking sized for L2, and m is at most 4 MC (its threads split only C's
// columns: a taller A with a short k goes to the packed path, whose threads split rows).
bool a_fits_one_block(const GemmContext& ctx, int64_t m, int64_t k) {
    return m <= 4 * ctx.blocking.mc && m * k_block(k, ctx.blocking.kc) <= ctx.blocking.mc * ctx.blocking.kc;
}

// C^T = B op(A)^T for a transposed B (B stored n x k, row j at row_of(j)): the kernel reads
// MR rows of B in place as its A operand (B is never packed), takes op(A)^T, packed, as its
// B operand (small: m x k), and the MR x NR tiles of C^T go back transposed (the kernel
// transposes them in registers). Threads split C's columns (B's rows), so each reads its
// part of B once. The kernel adds the bias and applies relu as it stores the last k-block (a
// pass over C afterwards cost 8% of b128 784->512); another activation runs on each thread's
// columns at the end. With segments > 1 (gemm_row_table's), each k-block packs every
// segment's part of op(A)^T, one after the other, and the kernel runs through them all.
template <class RowOf>
void gemm_transposed(const GemmContext& ctx, bool trans_a, int64_t m, int64_t n, int64_t k,
                     float alpha, const float* a, int64_t lda, RowOf row_of, float beta,
                     float* c, int64_t ldc, const Epilogue* ep, int64_t segments = 1,
                     int64_t a_segment = 0, int64_t b_segment = 0) {
    const Microkernel& uk = *ctx.uk;
    const int mr = uk.mr, nr = uk.nr;
    const int64_t kc_max = k_block(k, ctx.blocking.kc);
    const int64_t a_panels = (m + nr - 1) / nr, b_blocks = (n + mr - 1) / mr;
    const int threads = threads_for(m * n * k * segments, int64_t{1} << 18);
    parallel_region(threads, [&](int64_t tid, int64_t nt) {
        const int64_t j0 = std::min(n, b_blocks * tid / nt * mr);
        const int64_t j1 = std::min(n, b_blocks * (tid + 1) / nt * mr);
        if (j0 >= j1) return;
        thread_local std::unique_ptr<float, AlignedFree> at_buf;
        thread_local size_t at_cap = 0;
        float* at_pack = scratch(at_buf, at_cap, static_cast<size_t>(a_panels * nr * kc_max * segments));
        const bool relu = ep && ep->act == Activation::Relu;
        const float* brows[16];  // MR <= 16
        for (int64_t pc = 0; pc < k; pc += kc_max) {
            const int64_t kc = std::min(kc_max, k - pc);
            const float beta_k = pc == 0 ? beta : 1.0f;
            const bool last = pc + kc >= k;
            // op(A)^T[p][i] = op(A)[i][p]: a "B" panel, transposed exactly when A is not
            const int64_t panel = nr * kc * segments;
            for (int64_t ip = 0; ip < a_panels; ++ip)
                for (int64_t s = 0; s < segments; ++s)
                    pack_b_panel(uk, !trans_a, a + s * a_segment, lda, pc, kc, 0, m, ip,
                                 at_pack + ip * panel + s * nr * kc);
            for (int64_t j = j0; j < j1; j += mr) {
                // B's last rows: the kernel reads the last one again in place of those past
                // it (their results are never stored), so nothing past B is read
                const int64_t rows = std::min<int64_t>(mr, j1 - j);
                for (int64_t r = 0; r < mr; ++r) brows[r] = row_of(j + std::min(r, rows - 1)) + pc;
                for (int64_t ip = 0; ip < a_panels; ++ip) {
                    const int64_t cols = std::min<int64_t>(nr, m - ip * nr);
                    uk.rows_a(kc, brows, at_pack + ip * panel, c + ip * nr * ldc + j, ldc, alpha,
                              beta_k, rows, cols, last && ep && ep->bias ? ep->bias + j : nullptr,
                              last && relu, segments, b_segment);
                }
            }
        }
        if (ep && ep->act != Activation::Identity && !relu) {
            Epilogue act_only = *ep;
            act_only.bias = nullptr;
            apply_epilogue(act_only, c + j0, ldc, m, j1 - j0, j0);
        }
    });
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc, const Epilogue& epilogue) {
    if (m <= 0 || n <= 0) return;
    Epilogue picked = epilogue;  // the activation's copy picked once, not per tile row
    if (picked.act != Activation::Identity) picked.act_fn = activate_kernel();
    const Epilogue* ep = has_epilogue(picked) ? &picked : nullptr;
    if (k <= 0 || alpha == 0.0f) {
        scale_c(m, n, beta, c, ldc);
        if (ep) apply_epilogue(*ep, c, ldc, m, n, 0);
        return;
    }
    // One row of op(A) stored as a column (lda 1) is one contiguous row either way: taken as
    // not transposed, a 1 x n x k product with B transposed is dot products, not a thin B
    // packed (1 x 186 x 732, both transposed: 11 GFLOP/s, 0.21x OpenBLAS).
    if (m == 1 && trans_a && lda == 1) {
        trans_a = false;
        lda = k;
    }
    const GemmContext& ctx = *gemm_context();
    const Microkernel& uk = *ctx.uk;
    static const int64_t l1_floats = cache_floats(1, 8192), l2_floats = cache_floats(2, 65536);
    const SmallForm form = uk.small ? small_form(trans_a, trans_b, m, n, k, l1_floats, l2_floats, uk.lanes,
                                                 uk.rows_pass, uk.dot_overhead, ldb)
                                    : SmallForm::None;
    if (form != SmallForm::None) {
        // Threads take blocks of the form's rows (4, or 64 for SwappedRows), or, below 16 rows
        // and with columns for more than one block, of 64 columns: 10 rows (a layer of 10
        // outputs' weight gradient) made blocks of 8 and 2 rows, and 2 threads ran 1.2x one.
        // Columns too where op(B) outgrows half of L2 and has 8 blocks or more: by rows, each
        // thread streams all of it from L3 (Xeon family 6 model 207, 2 threads, 11 rounds
        // alternated: 16 x 784 x 1024 NN 1.6x, 32 x 784 x 1024 NN 1.4x, 64 x 784 x 1024 TN
        // 1.1x, 75 x 581 x 1924 TN 1.27x; 128 x 784 x 512 NN, 32 x 784 x 256 TN within 2%;
        // with fewer blocks, uneven: 100 x 200 x 1000 TN 0.86x, 64 x 300 x 500 NN 0.89x).
        // Whatever block a row or column falls in, each element of C is summed along k in one
        // lane (rows) or in the same 16- or 8-float chunks (dot products, by 4 rows and 4
        // columns from a block's start), so it comes out as with one thread.
        const bool by_columns = form != SmallForm::SwappedRows && n > 64 &&
                                (m < 16 || (n >= 8 * 64 && n * k > l2_floats / 2));
        const int64_t step = small_form_rows(form);
        const int64_t a_row = trans_a ? 1 : lda, b_col = trans_b ? ldb : 1;
        // k-block x strip: a quarter of L2, in whole blocks of the rows kernel's (Xeon family 6 model
        // 207, 1 thread, 9 rounds alternated, against half of L2 in multiples of 128: 64 x 784 x
        // 1024 TN +18%, 48 x 784 x 1024 TN +13%, 32 x 784 x 1024 NN +10%, 16 x 784 x 1024 NN
        // +9%, 96 x 784 x 512 TN +2%; 18 x 136 x 295 TN, 64 x 500 x 300 NN, 100 x 100 x 1000 TN
        // within 1%, on 2 threads within 2%: a strip of 256 had ended in a block of 16 columns, a
        // third as fast)
        const int64_t width = uk.rows_width;
        const int64_t kb = small_k_block(form, n, k, l2_floats);
        const int64_t strip = std::max<int64_t>(2 * width, l2_floats / 4 / kb / width * width);
        const int64_t blocks = by_columns ? (n + 63) / 64 : (m + step - 1) / step;
        const int64_t block_flops = by_columns ? m * 64 * k : step * n * k;
        parallel_for(blocks, std::max<int64_t>(1, (int64_t{1} << 18) / (block_flops + 1)),
                     [&](int64_t b0, int64_t b1) {
            if (by_columns) {
                const int64_t j0 = 64 * b0, cols = std::min(n, 64 * b1) - j0;
                uk.small(form, strip, kb, trans_a, trans_b, m, cols, k, alpha, a, lda, b + j0 * b_col, ldb, beta, c + j0, ldc);
                if (ep) apply_epilogue(*ep, c + j0, ldc, m, cols, j0);
            } else {
                const int64_t i0 = step * b0, rows = std::min(m, step * b1) - i0;
                uk.small(form, strip, kb, trans_a, trans_b, rows, n, k, alpha, a + i0 * a_row, lda, b, ldb, beta, c + i0 * ldc, ldc);
                if (ep) apply_epilogue(*ep, c + i0 * ldc, ldc, rows, n, 0);
            }
        });
        return;
    }
    if (uk.rows_a && trans_b && m <= ctx.blocking.mc && a_fits_one_block(ctx, m, k) &&
        k >= uk.rows_a_k_per_row * ((m + 15) / 16 * 16)) {
        gemm_transposed(ctx, trans_a, m, n, k, alpha, a, lda,
                        [b, ldb](int64_t j) { return b + j * ldb; }, beta, c, ldc, ep);
        return;
    }
    const int mr = uk.mr, nr = uk.nr;
    const int64_t kc_max = k_block(k, ctx.blocking.kc), nc_cap = ctx.blocking.nc, mc_cap = ctx.blocking.mc;
    const int64_t n_panels = (n + nr - 1) / nr, m_panels = (m + mr - 1) / mr;
    // Small products run on one thread: a fork costs more than they do.
    const int threads = threads_for(m * n * k, int64_t{1} << 18);
    // Rows, each thread packing all of B: measured faster than columns from m = 128 up
    // (each thread then writes whole rows of C). With fewer than four A panels per thread
    // that B pack would cost too much per row, so the threads take columns instead.
    const bool split_columns = m_panels < 4 * threads && n_panels >= 2 * threads;
    // A non-transposed B read in place (see kFewPanels): its full panels only; the last,
    // narrower one is packed, so that no kernel reads past a row of B.
    const bool direct_b = !trans_b && m_panels <= kFewPanels &&
                          strided_rows_fit_l2(cpu_info().caches, kc_max, ldb * int64_t{sizeof(float)});

    // C rows [i0, i1) x columns [j0, j1), j0 a multiple of NR; buffers of the calling thread.
    auto block = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
        thread_local std::unique_ptr<float, AlignedFree> a_buf, b_buf;
        thread_local size_t a_cap = 0, b_cap = 0;
        // Column blocks of equal width too (NC 912, 1500 columns: two of 768, not 912 and 588)
        const int64_t col_panels = (j1 - j0 + nr - 1) / nr;
        const int64_t col_blocks = (col_panels + nc_cap / nr - 1) / (nc_cap / nr);  // NC: a multiple of NR
        const int64_t nc_max = (col_panels + col_blocks - 1) / col_blocks * nr;
        // Row blocks that differ by one MR panel at most (MC 176, 2048 rows: 12 blocks of 21
        // or 22 panels, not 11 of 22 and one of 14, whose B micro-panels would serve fewer)
        const int64_t row_panels = (i1 - i0 + mr - 1) / mr;
        const int64_t row_blocks = (row_panels + mc_cap / mr - 1) / (mc_cap / mr);
        const int64_t mc_max = (row_panels + row_blocks - 1) / row_blocks * mr;
        const auto row_block_start = [&](int64_t rb) { return std::min(i1, i0 + row_panels * rb / row_blocks * mr); };
        // One A block: each B panel meets the A panels once, so it is packed just before
        // they run, while they are still in L2, not all of B first (2 MiB at 512 x 1024,
        // beyond L2 by the time the A panels read it back).
        const bool one_a_block = i1 - i0 <= mc_max;
        float* a_pack = scratch(a_buf, a_cap, static_cast<size_t>(mc_max * kc_max));
        float* b_pack = scratch(b_buf, b_cap, static_cast<size_t>((one_a_block ? nr : nc_max) * kc_max));
        for (int64_t jc = j0; jc < j1; jc += nc_max) {
            const int64_t nc = std::min(nc_max, j1 - jc), b_panels = (nc + nr - 1) / nr;
            for (int64_t pc = 0; pc < k; pc += kc_max) {
                const int64_t kc = std::min(kc_max, k - pc);
                const float beta_k = pc == 0 ? beta : 1.0f;
                const Epilogue* ep_k = pc + kc >= k ? ep : nullptr;
                auto in_place = [&](int64_t jp) { return direct_b && jp * nr + nr <= nc; };
                if (!one_a_block)
                    for (int64_t jp = 0; jp < b_panels; ++jp)
                        if (!in_place(jp)) pack_b_panel(uk, trans_b, b, ldb, pc, kc, jc, nc, jp, b_pack + jp * nr * kc);
                for (int64_t rb = 0; rb < row_blocks; ++rb) {
                    const int64_t ic = row_block_start(rb), rows = row_block_start(rb + 1) - ic;
                    const int64_t a_panels = (rows + mr - 1) / mr;
                    for (int64_t ip = 0; ip < a_panels; ++ip)
                        pack_a_panel(uk, trans_a, a, lda, ic, rows, pc, kc, ip, a_pack + ip * mr * kc);
                    for (int64_t jp = 0; jp < b_panels; ++jp) {
                        const int64_t j = jc + jp * nr;
                        const float* bp = b_pack + (one_a_block ? 0 : jp * nr * kc);
                        if (in_place(jp))
                            bp = b + pc * ldb + j;
                        else if (one_a_block)
                            pack_b_panel(uk, trans_b, b, ldb, pc, kc, jc, nc, jp, b_pack);
                        for (int64_t ip = 0; ip < a_panels; ++ip) {
                            const int64_t i = ic + ip * mr;
                            run_tile(uk, kc, a_pack + ip * mr * kc, bp, in_place(jp) ? ldb : nr,
                                     c + i * ldc + j, ldc, std::min<int64_t>(mr, ic + rows - i),
                                     std::min<int64_t>(nr, jc + nc - j), alpha, beta_k, ep_k, j);
                        }
                    }
                }
            }
        }
    };
    auto run = [&](int64_t tid, int64_t nt) {
        if (split_columns) {
            block(0, m, std::min(n, n_panels * tid / nt * nr),
                  std::min(n, n_panels * (tid + 1) / nt * nr));
        } else {
            const int64_t i0 = std::min(m, m_panels * tid / nt * mr);
            const int64_t i1 = std::min(m, m_panels * (tid + 1) / nt * mr);
            if (i0 < i1) block(i0, i1, 0, n);
        }
    };
    parallel_region(threads, run);
}

int64_t row_table_segments(int64_t m, int64_t k) {
    const GemmContext& ctx = *gemm_context();
    if (!ctx.uk->rows_a || m <= 0 || k <= 0 || !a_fits_one_block(ctx, m, k)) return 1;
    const int64_t kc = k_block(k, ctx.blocking.kc);
    return std::max<int64_t>(1, std::min(ctx.blocking.kc / kc, ctx.blocking.mc * ctx.blocking.kc / (m * kc)));
}

void gemm_row_table(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* const* b_rows, float beta, float* c, int64_t ldc,
                    int64_t segments, int64_t a_segment, int64_t b_segment) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f || segments <= 0) {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    const GemmContext& ctx = *gemm_context();
    if (ctx.uk->rows_a && a_fits_one_block(ctx, m, k)) {  // A^T packed whole, as gemm's transposed path
        gemm_transposed(ctx, false, m, n, k, alpha, a, lda,
                        [b_rows](int64_t j) { return b_rows[j]; }, beta, c, ldc, nullptr, segments,
                        a_segment, b_segment);
        return;
    }
    // No kernel that reads rows in place (or an A too tall to pack whole): B gathered, one
    // k-block at a time. This ran as fast as im2col blocks, the in-place rows faster (AVX2,
    // Zen 3, 1 thread, b32 weight gradients: 3 -> 32 on 32 x 32 1.40x, 32 -> 32 1.26x,
    // 64 -> 128 on 8 x 8 1.07x; LeNet's 1 -> 6 and 6 -> 16 within 5% either way).
    const int64_t kc_max = k_block(k, ctx.blocking.kc);
    thread_local std::unique_ptr<float, AlignedFree> rows_buf;
    thread_local size_t rows_cap = 0;
    float* gathered = scratch(rows_buf, rows_cap, static_cast<size_t>(n * kc_max));
    for (int64_t s = 0; s < segments; ++s)
        for (int64_t pc = 0; pc < k; pc += kc_max) {
            const int64_t kc = std::min(kc_max, k - pc);
            for (int64_t j = 0; j < n; ++j)
                std::memcpy(gathered + j * kc, b_rows[j] + s * b_segment + pc, kc * sizeof(float));
            gemm(false, true, m, n, kc, alpha, a + s * a_segment + pc, lda, gathered, kc,
                 s == 0 && pc == 0 ? beta : 1.0f, c, ldc);
        }
}

void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                    float* c, int64_t ldc, const Epilogue& epilogue) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            double sum = 0.0;
            for (int64_t p = 0; alpha != 0.0f && p < k; ++p) {  // alpha = 0: A, B unread (BLAS)
                double av = trans_a ? a[p * lda + i] : a[i * lda + p];
                double bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                sum += av * bv;
            }
            float& out = c[i * ldc + j];
            out = static_cast<float>((alpha == 0.0f ? 0.0 : alpha * sum) +
                                     (beta == 0.0f ? 0.0 : double(beta) * out));
            if (epilogue.bias) out += epilogue.bias[j];
        }
        activate(epilogue.act, c + i * ldc, c + i * ldc, n, epilogue.act_alpha);
    }
}

// ---- ISA selection and blocking ------------------------------------------------------

namespace {

bool cpu_runs(const Microkernel& uk) {
#ifdef FASTNN_X86
    const CpuInfo& cpu = cpu_info();
    if (&uk == &kAvx512Kernel) return cpu.avx512f;
    if (&uk == &kAvx2Kernel) return cpu.avx2 && cpu.fma;
#endif
    return &uk == &kGenericKernel;
}

const Microkernel* const kAll[] = {
#ifdef FASTNN_X86
    &kAvx512Kernel, &kAvx2Kernel,
#endif
    &kGenericKernel};
constexpr int kNumIsas = sizeof(kAll) / sizeof(kAll[0]);

// One context per ISA, published atomically. A replaced context is kept, as a product may
// still be reading it: each set_blocking costs 32 bytes for the life of the process.
std::atomic<const GemmContext*> g_contexts[kNumIsas];
std::atomic<int> g_active{kNumIsas - 1};
std::mutex g_contexts_mutex;
std::deque<GemmContext> g_context_store;  // guarded by g_contexts_mutex

int index_of(const char* name) {
    if (!name) return g_active.load();
    for (int i = 0; i < kNumIsas; ++i)
        if (std::strcmp(kAll[i]->isa, name) == 0 && cpu_runs(*kAll[i])) return i;
    return -1;
}

void publish(int i, Blocking blocking, const char* source) {
    std::lock_guard<std::mutex> lock(g_contexts_mutex);
    g_context_store.push_back(GemmContext{kAll[i], blocking, source});
    g_contexts[i].store(&g_context_store.back());
}

Blocking model_for(const Microkernel& uk) {
    return model_blocking(cpu_info().caches, uk.mr, uk.nr);
}

struct Init {
    Init() {
        for (int i = 0; i < kNumIsas; ++i) publish(i, model_for(*kAll[i]), "model");
        for (int i = kNumIsas - 1; i >= 0; --i)
            if (cpu_runs(*kAll[i])) g_active = i;  // the best, listed first
        const std::string forced = env_setting("FASTNN_ISA");  // "AVX2 " as avx2
        if (!forced.empty())
            if (int i = index_of(forced.c_str()); i >= 0) g_active = i;
    }
} init;

}  // namespace

const Microkernel* kernel_named(const char* name) {
    for (const Microkernel* uk : kAll)
        if (std::strcmp(uk->isa, name) == 0) return uk;
    return nullptr;
}

const char* active_isa() { return kAll[g_active.load()]->isa; }

bool set_isa(const char* name) {
    const int i = index_of(name);
    if (i < 0) return false;
    g_active = i;
    return true;
}

int supported_isas(const char** names) {
    int count = 0;
    for (const Microkernel* uk : kAll)
        if (cpu_runs(*uk)) names[count++] = uk->isa;
    return count;
}

const GemmContext* gemm_context(const char* isa) {
    const int i = index_of(isa);
    return i < 0 ? nullptr : g_contexts[i].load();
}

bool set_blocking(const char* isa, Blocking blocking, const char* source) {
    const int i = index_of(isa);
    if (i < 0 || blocking.kc < 1 || blocking.nc < 1 || blocking.mc < 1) return false;
    const int nr = kAll[i]->nr, mr = kAll[i]->mr;
    blocking.nc = (blocking.nc + nr - 1) / nr * nr;
    blocking.mc = (blocking.mc + mr - 1) / mr * mr;
    publish(i, blocking, source);
    return true;
}

bool reset_blocking(const char* isa) {
    const int i = index_of(isa);
    if (i < 0) return false;
    publish(i, model_for(*kAll[i]), "model");
    return true;
}

}  // namespace fastnn
