// The small and skinny path's outer loops, shared by the ISA files: each instantiates
// small_gemm<K> with its own kernels, K being a struct of
//   template <int R> static void rows(trans_a, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
//       R <= 4 rows of C from the unpacked operands, B not transposed;
//   template <int R, int Q> static void dots(k, alpha, a, lda, b, ldb, beta, c, ldc):
//       an R x Q block of C as dot products along k, A and B^T both row-major;
//   static constexpr int kDotRows: the most rows one dots call takes (its registers).
#pragma once
#include <cstdint>

namespace fastnn {

template <class K, int R>
void small_dots_row(int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) K::template dots<R, 4>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
    switch (n - j) {
        case 3: K::template dots<R, 3>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc); break;
        case 2: K::template dots<R, 2>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc); break;
        case 1: K::template dots<R, 1>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc); break;
    }
}

// Whether the small path takes an m x n product; the others are packed. With B transposed
// the dot-product form suits a thin B (few columns of C) or a thin A: below 16 rows the
// transposed path fills its 16-wide vectors with m columns (1 x 512 x 784 ran at 8.5 GFLOP/s
// there, 44 here; a conv layer's 6 x 25 x 25088 weight gradient 22 and 42; from 16 rows on it
// is the faster again, 132 against 99). Asked of the whole product, before the threads split
// it: a part of what it takes is taken too. (Asked of each thread's rows, a part of 12 rows
// was taken and one of 16 refused, and the packed path then added beta C into the first
// part's rows a second time.)
inline bool small_gemm_takes(bool trans_a, bool trans_b, int64_t m, int64_t n) {
    return !(trans_b && (trans_a || (n > 16 && m >= 16)));
}

// A SmallGemmFn (gemm.h) over groups of 4 rows of C; the remainder rows get kernels of
// their own height.
template <class K>
void small_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc) {
    const int64_t a_row = trans_a ? 1 : lda;
    for (int64_t i = 0; i < m; i += 4) {
        const float* ai = a + i * a_row;
        float* ci = c + i * ldc;
        const int64_t rows = m - i < 4 ? m - i : 4;
        if (!trans_b) {
            switch (rows) {
                case 4: K::template rows<4>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc); break;
                case 3: K::template rows<3>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc); break;
                case 2: K::template rows<2>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc); break;
                default: K::template rows<1>(trans_a, n, k, alpha, ai, lda, b, ldb, beta, ci, ldc);
            }
            continue;
        }
        for (int64_t r = 0; r < rows; r += K::kDotRows) {
            const int64_t left = rows - r < K::kDotRows ? rows - r : K::kDotRows;
            const float* ar = ai + r * lda;
            float* cr = ci + r * ldc;
            if constexpr (K::kDotRows >= 4)
                if (left == 4) { small_dots_row<K, 4>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc); continue; }
            if constexpr (K::kDotRows >= 3)
                if (left == 3) { small_dots_row<K, 3>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc); continue; }
            if (left == 2)
                small_dots_row<K, 2>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc);
            else
                small_dots_row<K, 1>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc);
        }
    }
}

}  // namespace fastnn
