// The small and skinny path's outer loops, shared by the ISA files: each instantiates
// small_gemm<K> with its own kernels, K being a struct of
//   template <int R> static void rows(trans_a, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
//       R rows of C from the unpacked operands, B not transposed: R <= kRows, or R <= 8
//       where n <= kLanes;
//   template <int R, int Q> static void dots(k, alpha, a, lda, b, ldb, beta, c, ldc):
//       an R x Q block of C as dot products along k, A and B^T both row-major;
//   static constexpr int kDotRows: the most rows one dots call takes (its registers);
//   static constexpr int kLanes: floats in the rows kernels' vectors;
//   static constexpr int kRows: the most rows one rows call takes where n > kLanes (else 8);
//   static constexpr int kRowsWidth: the columns one rows call takes at once for kRows rows;
//   static constexpr int kDotOverhead: a dots block's reduction and stores, per value of C,
//       in vectors of FMAs (small_form weighs the dot and rows forms by it);
//   static constexpr bool kEvenPasses: rows_of_c's passes as equal as can be, else greedy.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>

#include "blocking.h"
#include "core/cpu.h"
#include "gemm.h"

namespace fastnn {

// How the small path computes a product, chosen for the whole product before the threads
// split it (a part of it must take the same path: asked of each thread's rows, a part of 12
// rows was taken and one of 16 refused, and the packed path then added beta C into the
// first part's rows a second time):
//   Rows        rows of C: op(A)'s values broadcast against rows of B (B not transposed);
//   Dots        dot products along k, A and B^T both row-major;
//   RowsPackedB Rows after op(B), k x n, is packed from a transposed B: a short k (a layer
//               with 3 to 16 inputs: its forward is n outputs of at most 16 products);
//   DotsPackedB Dots after B^T, n x k, is packed from B: a thin B (n <= 16) with A not
//               transposed (the input gradient of a layer with few inputs);
//   SwappedRows C^T = op(B)^T op(A)^T by Rows, stored transposed: a thin B with A
//               transposed (the weight gradient of such a layer), op(A)^T's rows being A's own.
// Rows of C with n <= 16 fill n lanes of a 16-float vector and run 4 dependent chains
// (m x n x k): 3072 x 1 x 1000 (TN) ran at 5.5 GFLOP/s and 1000 x 1 x 3072 (NN) at 8 against
// OpenBLAS's 81 and 85, 1000 x 3 x 100 (TN) at 12 against 76 (Zen 5, 2 threads). The thin
// forms use every lane.
// An op(B) of 32 columns or more that stays in L1 (half of it: A's and C's lines pass
// through too) goes by rows whatever the size: every pass of rows of C reads it there, and
// nothing of A is packed (a layer of 32 or 64 units: 512 x 32 x 64 (NT) ran at 0.74x
// OpenBLAS on the transposed path, whose threads each pack all of op(A)^T for its n = 32).
enum class SmallForm { None, Rows, Dots, RowsPackedB, DotsPackedB, SwappedRows };

// ldb: B's row stride (floats), for whether its rows share L2's sets without evicting each other.
inline SmallForm small_form(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            int64_t l1_floats, int64_t l2_floats, int lanes, int rows_pass,
                            int dot_overhead, int64_t ldb) {
    const bool small = n <= 16 || m <= 16 || k <= 16 || m * n * k <= (int64_t{1} << 18);
    const bool b_in_l1 = n >= 32 && 2 * n * k <= l1_floats;
    // A narrow B (17 to 64 columns) beside many rows of C: the packed path would pack all of
    // op(A), m k moves for 2 m n k flops, and run its 48-wide panels partly empty; passes of
    // 8 rows of C instead read op(B) (packed first where transposed) from L2. Xeon family 6
    // model 207, 1 thread, 20-25 rounds alternated in one process: 1000 x 20 x 200 NN +40%,
    // 500 x 24 x 700 NT +37%, 286 x 21 x 135 NT +35%, 1000 x 33 x 2000 NN +32%, 2000 x 40 x
    // 1000 NT +28%, 1000 x 64 x 700 NN +13%, 917 x 35 x 550 NT +8%, 200 x 40 x 500 NT +8%;
    // 1000 x 64 x 700 NT within 1%; with 32 or 64 rows 5% slower (64 x 40 x 500 NT), hence 128.
    const bool narrow_b = rows_pass >= 8 && n > lanes && n <= 4 * lanes && m >= 128 && 2 * n * k <= l2_floats / 2;
    if (trans_b) {
        // Packing op(B) costs n k per 2 m n k flops: m >= 32 (or k <= 16, when the product
        // writes C once for every few flops)
        if ((n >= 32 && (k <= 16 || (b_in_l1 && m >= 32))) || narrow_b) return SmallForm::RowsPackedB;
        if (!small) return SmallForm::None;
        if (trans_a && n <= lanes && m >= 16 && k >= 8) return SmallForm::SwappedRows;  // C^T = B A
        // A thin B^T (n within a vector or two) and a short k: rows of C, op(B) packed, use
        // n of each vector's lanes, where dot products spend on their reduction about
        // dot_overhead vectors of FMAs per value of C; rows when that is the larger waste.
        // Xeon family 6 model 207, 1 thread, rows against dots: AVX-512 1024 x 10 x 64 1.38x,
        // 1024 x 10 x 128 1.09x, 3000 x 16 x 60 2.1x, 512 x 10 x 256 0.95x, 256 x 4 x 500 0.35x;
        // AVX2 1024 x 8 x 64 1.55x, 1024 x 6 x 32 1.59x, 1024 x 10 x 64 1.0x, x 128 0.84x.
        const int64_t vecs = (n + lanes - 1) / lanes;
        if (!trans_a && m >= 16 && n <= 16 && n * (k + dot_overhead * lanes) > k * vecs * lanes)
            return SmallForm::RowsPackedB;
        // The dot-product form suits a thin B or a thin A: below 16 rows the transposed path
        // fills its 16-wide vectors with m columns (1 x 512 x 784 ran at 8.5 GFLOP/s there, 44
        // here; a conv layer's 6 x 25 x 25088 weight gradient 22 and 42; from 16 rows on it is
        // the faster again, 132 against 99).
        return !trans_a && (n <= 16 || m < 16) ? SmallForm::Dots : SmallForm::None;
    }
    // Passes of 8 rows (AVX-512's) read op(B) once each, from L2 while a strip of 128 of its
    // columns fits half of it, and pack nothing: faster than the packed path up to 128 rows
    // (Zen 5, 1 thread: 18 x 136 x 295 TN 152 -> 209 GFLOP/s, 32 x 300 x 1000 228 -> 253, 64 x
    // 500 x 300 240 -> 251, 100 x 100 x 1000 TN 188 -> 215; 48 x 2000 x 2000, its strip past
    // L2, 237 -> 181). AVX2's passes of 4 were not faster. Not where B's rows, a power of two
    // apart, crowd into a few of L2's sets: the strip then leaves L2 before the next pass
    // (Xeon family 6 model 207, 1 thread: 128 x 512 x 1024 TN, ldb 2 KiB, 88 GFLOP/s by rows,
    // 134 packed).
    const bool rows_from_l2 = rows_pass >= 8 && m <= 128 && 128 * k <= l2_floats / 2 &&
                              strided_rows_fit_l2(cpu_info().caches, k, ldb * int64_t{sizeof(float)});
    if (!small && !b_in_l1 && !rows_from_l2 && !narrow_b) return SmallForm::None;
    // Thin: a row of C fits one vector of the kernels' (AVX2's rows fill two for n = 16, 8
    // chains: 88 x 16 x 705 ran at 120 GFLOP/s, its dot products at 63, Zen 5, 1 thread).
    // The thin forms' dot products cost a reduction per vector of sums, and the swapped one a
    // transposed store per value of C: k long enough, C^T wide enough.
    // (B^T is packed per thread: at most four L2s, so that a B of millions of rows is not
    // copied twice more; past that, rows of C. 20 x 3 x 100000 ran at 40 GFLOP/s by dot
    // products, its B^T 5 L2s, and at 17 by rows)
    if (n <= lanes && !trans_a && k >= 64 && n * k <= 4 * l2_floats) return SmallForm::DotsPackedB;
    if (n <= lanes && trans_a && m >= 16 && k >= 8) return SmallForm::SwappedRows;
    return SmallForm::Rows;
}

// Rows of C that one call of the form takes at a time (a thread's share is a multiple).
inline int64_t small_form_rows(SmallForm form) { return form == SmallForm::SwappedRows ? 64 : 4; }
namespace small_detail {

// A grow-only scratch of the calling thread for a packed operand.
inline float* packed_buffer(int64_t floats) {
    thread_local std::unique_ptr<float[]> buf;
    thread_local int64_t cap = 0;
    if (floats > cap) {
        buf.reset(new float[static_cast<size_t>(floats)]);
        cap = floats;
    }
    return buf.get();
}

// stream_b: op(B) does not stay in L1 across the passes (see the kernels' rows).
template <class K>
void rows_of_c(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
               bool stream_b) {
    const int64_t a_row = trans_a ? 1 : lda;
    // Passes of up to K::kRows rows, each reading all of op(B), as equal as can be where
    // K::kEvenPasses (AVX-512: 5 x 2000 x 50 NN had run 4 rows and 1, the one row's pass
    // loading a vector of B per FMA; as 5: 138 -> 216 GFLOP/s, Zen 5, 1 thread), else the
    // remainder last (AVX2's 3 rows are 6 FMA chains, too few: 13 x 700 x 200 ran 109 as 4 +
    // 4 + 4 + 1, 99 as 4 + 3 + 3 + 3). A row of C within one vector: up to 8 rows, as many
    // FMA chains as the latency needs (4 waited on it: 3000 x 16 x 60 NN 145 -> 188 GFLOP/s).
    const int64_t most = n <= K::kLanes ? 8 : K::kRows;
    const int64_t passes = (m + most - 1) / most, fewer = m / passes, longer = m % passes;
    for (int64_t q = 0, i = 0, rows; q < passes; ++q, i += rows) {
        if (K::kEvenPasses)
            rows = q < longer ? fewer + 1 : fewer;
        else
            rows = m - i < most ? m - i : most;
        const float* ai = a + i * a_row;
        float* ci = c + i * ldc;
        switch (rows) {
            case 8: K::template rows<8>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            case 7: K::template rows<7>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            case 6: K::template rows<6>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            case 5: K::template rows<5>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            case 4: K::template rows<4>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            case 3: K::template rows<3>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            case 2: K::template rows<2>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b); break;
            default: K::template rows<1>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc, stream_b);
        }
    }
}

template <class K, int R>
void dots_row(int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
              int64_t ldb, float beta, float* c, int64_t ldc) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) K::template dots<R, 4>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
    switch (n - j) {
        case 3: K::template dots<R, 3>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc); break;
        case 2: K::template dots<R, 2>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc); break;
        case 1: K::template dots<R, 1>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc); break;
    }
}

// C = alpha A B^T + beta C, A (m x k) and B (n x k) row-major.
template <class K>
void dots_of_c(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    for (int64_t i = 0; i < m; i += K::kDotRows) {
        const int64_t left = m - i < K::kDotRows ? m - i : K::kDotRows;
        const float* ai = a + i * lda;
        float* ci = c + i * ldc;
        if constexpr (K::kDotRows >= 4)
            if (left == 4) { dots_row<K, 4>(n, k, alpha, ai, lda, b, ldb, beta, ci, ldc); continue; }
        if constexpr (K::kDotRows >= 3)
            if (left == 3) { dots_row<K, 3>(n, k, alpha, ai, lda, b, ldb, beta, ci, ldc); continue; }
        if (left == 2)
            dots_row<K, 2>(n, k, alpha, ai, lda, b, ldb, beta, ci, ldc);
        else
            dots_row<K, 1>(n, k, alpha, ai, lda, b, ldb, beta, ci, ldc);
    }
}

// C (m x n, n <= 16) = alpha op(A) op(B) + beta C with A stored k x m: C^T = op(B)^T A, 128
// rows of C (columns of C^T) at a time, their k x 128 strip of A read from L2 by every 4
// columns of C (one column: 8 vectors wide, see rows); each 8 x 128 block of C^T goes through
// a buffer and back transposed, with beta as the kernels apply it (one rounding of beta C +
// the block's value).
template <class K>
void swapped_rows(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    if (n == 1) {
        // A matrix-vector product: C's column sums A's rows, each read whole as it lies, into a
        // buffer in L1 (blocks of 128 walked all of k for each, 512 bytes of each row of A: 3000
        // x 1 x 1000 TN ran at 0.46x OpenBLAS, Zen 3, 1 thread). Each value of C still sums
        // along k in order, in one lane.
        float* y = packed_buffer(m);
        std::fill(y, y + m, 0.0f);
        const auto bv = [&](int64_t p) { return trans_b ? b[p] : b[p * ldb]; };
        int64_t p = 0;
        for (; p + 4 <= k; p += 4) {  // four rows of A a pass: a quarter of C's loads and stores
            const float b0 = bv(p), b1 = bv(p + 1), b2 = bv(p + 2), b3 = bv(p + 3);
            const float *a0 = a + p * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
            for (int64_t i = 0; i < m; ++i)
                y[i] = std::fma(b3, a3[i], std::fma(b2, a2[i], std::fma(b1, a1[i], std::fma(b0, a0[i], y[i]))));
        }
        for (; p < k; ++p) {
            const float b0 = bv(p);
            const float* a0 = a + p * lda;
            for (int64_t i = 0; i < m; ++i) y[i] = std::fma(b0, a0[i], y[i]);
        }
        for (int64_t i = 0; i < m; ++i)
            c[i * ldc] = beta == 0.0f ? alpha * y[i] : std::fma(beta, c[i * ldc], alpha * y[i]);
        return;
    }
    constexpr int64_t kCols = 128;
    float tile[8 * kCols];
    for (int64_t i = 0; i < m; i += kCols) {
        const int64_t cols = m - i < kCols ? m - i : kCols;
        for (int64_t j = 0; j < n; j += 8) {
            const int64_t rows = n - j < 8 ? n - j : 8;
            // op(B)^T's rows j..: B's columns (B stored k x n) or its rows (stored n x k)
            rows_of_c<K>(!trans_b, rows, cols, k, alpha, trans_b ? b + j * ldb : b + j, ldb, a + i, lda,
                         0.0f, tile, kCols, false);
            for (int64_t q = 0; q < cols; ++q) {
                float* out = c + (i + q) * ldc + j;
                for (int64_t r = 0; r < rows; ++r)
                    out[r] = beta == 0.0f ? tile[r * kCols + q] : std::fma(beta, out[r], tile[r * kCols + q]);
            }
        }
    }
}

// The small forms sum each element of C along k in blocks of at most kSmallKc (k_block's
// even split; the rows forms' smaller, small_k_block), each block's sum added to C: one
// running float sum along all of k (a rows form's lane) made 1 x 20,000,000 ones times ones
// 16,777,216 (2^24 + 1 rounds to 2^24). The dot forms' products of k <= kSmallKc are one
// block.
constexpr int64_t kSmallKc = 4096;
// The rows forms' strips are at least this many columns wide (1 KiB of each row of B): a
// strip of 32 columns read 128 bytes of each of k rows, every row in another 4 KiB page,
// where the hardware prefetchers do not follow, so a B from memory came at the latency's
// pace (Zen 3, against k-blocks of 4096, processes alternated: 9 x 3420 x 2508 TN 2.8x on 1
// thread, 1.9x on 2; 5 x 2249 x 2000 NN 2.2x, 1.9x; 1 x 4000 x 3000 NN 2.3x, 1.8x; 16 and 32 x
// 784 x 1024 NN, 64 x 784 x 1024 TN within the noise; 512 columns were no faster, 128 a little
// slower).
constexpr int64_t kRowsMinStrip = 256;
}  // namespace small_detail

// The k-block of a product that small_form chose `form` for: the rows forms' within a
// quarter of L2 for a strip of kRowsMinStrip columns (or all n, if fewer), so that a long k
// goes in several k-blocks of wide strips rather than narrow strips down all of k; at most
// kSmallKc. From the whole product's n, the machine and k, never a thread's share.
inline int64_t small_k_block(SmallForm form, int64_t n, int64_t k, int64_t l2_floats) {
    int64_t cap = small_detail::kSmallKc;
    if (form == SmallForm::Rows || form == SmallForm::RowsPackedB)
        cap = std::clamp<int64_t>(l2_floats / 4 / std::clamp<int64_t>(n, 1, small_detail::kRowsMinStrip), 16, cap);
    return k_block(k, cap);
}
namespace small_detail {

template <class K>
void small_gemm_block(SmallForm form, int64_t strip, bool trans_a, bool trans_b, int64_t m,
                      int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    switch (form) {
        case SmallForm::Rows: {
            static const int64_t l1_floats = cache_floats(1, 8192);
            // strips of about equal width, whole blocks of the kernel's: 512 columns under a
            // cap of 480 go as 288 + 224, not 480 + a strip of 32 read by passes of their own
            const int64_t strips = (n + strip - 1) / strip, width = K::kRowsWidth;
            const int64_t even = ((n + strips - 1) / strips + width - 1) / width * width;
            for (int64_t j = 0; j < n; j += even) {
                const int64_t cols = n - j < even ? n - j : even;
                rows_of_c<K>(trans_a, m, cols, k, alpha, a, lda, b + j, ldb, beta, c + j, ldc,
                             2 * k * cols > l1_floats);
            }
            return;
        }
        case SmallForm::Dots:
            return dots_of_c<K>(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case SmallForm::RowsPackedB: {  // each thread packs its own: no line crosses cores
            const int64_t width = n < strip ? n : strip;
            float* bt = packed_buffer(k * width);
            for (int64_t j = 0; j < n; j += strip) {
                const int64_t cols = n - j < strip ? n - j : strip;
                K::transpose(b + j * ldb, ldb, cols, k, bt);
                rows_of_c<K>(trans_a, m, cols, k, alpha, a, lda, bt, cols, beta, c + j, ldc, false);
            }
            return;
        }
        case SmallForm::DotsPackedB: {
            float* bt = packed_buffer(n * k);
            K::transpose(b, ldb, k, n, bt);
            return dots_of_c<K>(m, n, k, alpha, a, lda, bt, k, beta, c, ldc);
        }
        case SmallForm::SwappedRows:
            return swapped_rows<K>(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        case SmallForm::None: return;
    }
}

}  // namespace small_detail

// A SmallGemmFn (gemm.h): the part of a product that small_form chose `form` for, in k-blocks
// of kb (small_k_block). The rows forms go through op(B) a strip of `strip` columns at a time
// (sized by the caller for L2 with kb), every row of C against one strip before the next:
// each pass of rows of C (rows_of_c) reads all of the strip, from L2 only if it stays there.
template <class K>
void small_gemm(SmallForm form, int64_t strip, int64_t kb, bool trans_a, bool trans_b, int64_t m,
                int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
    for (int64_t p = 0; p < k; p += kb)
        small_detail::small_gemm_block<K>(form, strip, trans_a, trans_b, m, n, std::min(kb, k - p), alpha,
                                          trans_a ? a + p * lda : a + p, lda, trans_b ? b + p : b + p * ldb,
                                          ldb, p == 0 ? beta : 1.0f, c, ldc);
}

}  // namespace fastnn
