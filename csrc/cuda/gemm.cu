// The GEMM on the GPU: cuBLAS's SGEMM (TF32 off unless set_matmul_precision("tf32")) with
// fastnn's epilogue (bias, then the activation) in one pass over C after it; and the
// reference every GEMM is held to, one thread per element of C with a double accumulator, as
// cpu/gemm's gemm_reference. Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
// which is what cuBLAS is asked for: no copy of any operand.
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

__global__ void reference_kernel(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                                 float* c, int64_t ldc) {
    FASTNN_GRID_STRIDE(e, m * n) {
        const int64_t i = e / n, j = e % n;
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p)
            s += double(ta ? a[p * lda + i] : a[i * lda + p]) * double(tb ? b[j * ldb + p] : b[p * ldb + j]);
        float& out = c[i * ldc + j];
        out = beta == 0.0f ? float(double(alpha) * s) : float(double(alpha) * s + double(beta) * out);
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
    reference_kernel<<<grid_for(m * n), kThreads>>>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    check_launch("gemm_reference");
    epilogue(c, m, n, ldc, ep);
}

}  // namespace fastnn::cuda
