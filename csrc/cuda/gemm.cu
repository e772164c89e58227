// The GEMM on the GPU: cuBLAS's SGEMM (TF32 off unless set_matmul_precision("tf32")) with
// fastnn's epilogue (bias, then the activation) in one pass over C after it; and fastnn's own
// SGEMM, the readable reference held to the same bound: tiles of C in shared memory, a micro
// tile per thread in registers (below). Row-major C = op(A) op(B) is column-major
// C^T = op(B)^T op(A)^T, which is what cuBLAS is asked for: no copy of any operand.
#include <cublas_v2.h>

#include <mutex>

#include "activation_math.cuh"
#include "launch.h"
#include "ops.h"

namespace fastnn::cuda {
namespace {

std::mutex handle_mutex;  // a cuBLAS handle serves one host thread at a time

cublasHandle_t handle() {
    static cublasHandle_t h = [] {
        cublasHandle_t made = nullptr;
        const cublasStatus_t s = cublasCreate(&made);
        if (s != CUBLAS_STATUS_SUCCESS)
            throw std::runtime_error(std::string("cublasCreate failed (") + cublasGetStatusName(s) + ")");
        return made;
    }();
    return h;
}

__global__ void epilogue_kernel(float* c, int64_t m, int64_t n, int64_t ldc, const float* bias,
                                Activation act, float alpha) {
    FASTNN_GRID_STRIDE(e, m * n) {
        const int64_t i = e / n, j = e % n;
        float v = c[i * ldc + j];
        if (bias) v += bias[j];
        c[i * ldc + j] = activate(act, v, alpha);
    }
}

__global__ void scale_kernel(float* c, int64_t m, int64_t n, int64_t ldc, float beta) {
    FASTNN_GRID_STRIDE(e, m * n) {
        float& v = c[(e / n) * ldc + e % n];
        v = beta == 0.0f ? 0.0f : beta * v;  // beta = 0 writes C without reading it
    }
}

// The tiled SGEMM. A block of 16 x 16 threads computes a 128 x 128 tile of C: per step of 8
// along k it stages op(A)'s 128 x 8 and op(B)'s 8 x 128 slices in shared memory (zeros past
// the edges), then each thread multiplies them into its 8 x 8 accumulators, rows tr + 16u and
// columns tc + 16v (strided, so that a warp's 16 columns read 16 neighbouring words of shared
// memory: no bank conflicts, and its stores to C are coalesced). Each element of C is a float
// sum in k order, as an SGEMM's.
constexpr int kTile = 128, kDepth = 8, kSide = 16, kMicro = kTile / kSide;  // 16 x 16 threads, 8 x 8 each

__global__ void __launch_bounds__(kSide * kSide)
tiled_kernel(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* c, int64_t ldc, int64_t col_tile0) {
    __shared__ float a_tile[kDepth][kTile + 4];  // [p][i]; the padding spreads the stores over the banks
    __shared__ float b_tile[kDepth][kTile + 4];  // [p][j]
    const int64_t row0 = int64_t(blockIdx.x) * kTile, col0 = (col_tile0 + blockIdx.y) * kTile;
    const int t = threadIdx.x, tr = t / kSide, tc = t % kSide;
    float acc[kMicro][kMicro] = {};
    for (int64_t p0 = 0; p0 < k; p0 += kDepth) {
        for (int l = t; l < kTile * kDepth; l += kSide * kSide) {
            // along k within a row of A (8 neighbours: whole 32-byte sectors), along the row of
            // a transposed A; the same for B
            const int ip = ta ? l / kTile : l % kDepth, ii = ta ? l % kTile : l / kDepth;
            const int64_t gi = row0 + ii, gpa = p0 + ip;
            a_tile[ip][ii] = gi < m && gpa < k ? (ta ? a[gpa * lda + gi] : a[gi * lda + gpa]) : 0.0f;
            const int jp = tb ? l % kDepth : l / kTile, jj = tb ? l / kDepth : l % kTile;
            const int64_t gj = col0 + jj, gpb = p0 + jp;
            b_tile[jp][jj] = gj < n && gpb < k ? (tb ? b[gj * ldb + gpb] : b[gpb * ldb + gj]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < kDepth; ++p) {
            float ra[kMicro], rb[kMicro];
#pragma unroll
            for (int u = 0; u < kMicro; ++u) {
                ra[u] = a_tile[p][tr + kSide * u];
                rb[u] = b_tile[p][tc + kSide * u];
            }
#pragma unroll
            for (int u = 0; u < kMicro; ++u)
#pragma unroll
                for (int v = 0; v < kMicro; ++v) acc[u][v] += ra[u] * rb[v];
        }
        __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < kMicro; ++u) {
        const int64_t i = row0 + tr + kSide * u;
        if (i >= m) continue;
#pragma unroll
        for (int v = 0; v < kMicro; ++v) {
            const int64_t j = col0 + tc + kSide * v;
            if (j >= n) continue;
            float& out = c[i * ldc + j];
            out = beta == 0.0f ? alpha * acc[u][v] : alpha * acc[u][v] + beta * out;  // beta = 0: C not read
        }
    }
}

void epilogue(float* c, int64_t m, int64_t n, int64_t ldc, const Epilogue& ep) {
    if (!ep.bias && ep.act == Activation::Identity) return;
    epilogue_kernel<<<grid_for(m * n), kThreads>>>(c, m, n, ldc, ep.bias, ep.act, ep.act_alpha);
    check_launch("gemm (epilogue)");
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const Epilogue& ep,
          bool tf32) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        scale_kernel<<<grid_for(m * n), kThreads>>>(c, m, n, ldc, beta);
        check_launch("gemm (C = beta C)");
    } else {
        std::lock_guard<std::mutex> lock(handle_mutex);
        cublasSetMathMode(handle(), tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
        const cublasStatus_t s = cublasSgemm(
            handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
            int(n), int(m), int(k), &alpha, b, int(ldb), a, int(lda), &beta, c, int(ldc));
        if (s != CUBLAS_STATUS_SUCCESS)
            throw std::runtime_error(std::string("gemm: cublasSgemm failed (") + cublasGetStatusName(s) + ")");
    }
    epilogue(c, m, n, ldc, ep);
}

void gemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc, const Epilogue& ep) {
    if (m <= 0 || n <= 0) return;
    // row tiles along x (up to 2^31 - 1 blocks), column tiles along y in launches of 65535 at most
    const int64_t row_tiles = (m + kTile - 1) / kTile, col_tiles = (n + kTile - 1) / kTile;
    for (int64_t first = 0; first < col_tiles; first += 65535) {
        const dim3 grid(unsigned(row_tiles), unsigned(std::min<int64_t>(col_tiles - first, 65535)));
        tiled_kernel<<<grid, kSide * kSide>>>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, first);
        check_launch("gemm_reference");
    }
    epilogue(c, m, n, ldc, ep);
}

}  // namespace fastnn::cuda
