/*
 * gemm.cu: the prefill matrix product on tensor cores through cuBLAS. F16 and BF16 weights
 * go straight in; quantized weights are first dequantized into a reused bf16 buffer (one
 * extra write and read of the matrix, small next to the m x n x k product once m is in the
 * hundreds). The result is f32, optionally added to Y (the residual) by the GEMM itself.
 */
#include "kernels/cuda/common.cuh"

#include <cublas_v2.h>
#include <stdio.h>

#define WORKSPACE_BYTES (32u << 20)

struct krn_cuda_blas {
    cublasHandle_t h;
    void *ws;
};

static lode_status blas_fail(cublasStatus_t s, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s: cuBLAS status %d", what, (int)s);
    return krn_cuda_fail_msg(LODE_ERR_CUDA, msg);
}

extern "C" lode_status krn_cuda_blas_create(krn_cuda_blas **out, void *stream)
{
    *out = NULL;
    krn_cuda_blas *b = (krn_cuda_blas *)lode_calloc(1, sizeof *b);
    if (!b) return LODE_ERR_NOMEM;
    lode_status st;
    cublasStatus_t cs = cublasCreate(&b->h);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        lode_free(b);
        return blas_fail(cs, "cublasCreate");
    }
    if ((st = krn_cuda_malloc(&b->ws, WORKSPACE_BYTES)) != LODE_OK) goto fail;
    if ((cs = cublasSetStream(b->h, STREAM(stream))) != CUBLAS_STATUS_SUCCESS ||
        (cs = cublasSetWorkspace(b->h, b->ws, WORKSPACE_BYTES)) != CUBLAS_STATUS_SUCCESS ||
        (cs = cublasSetMathMode(b->h, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
        st = blas_fail(cs, "cublas setup");
        goto fail;
    }
    *out = b;
    return LODE_OK;
fail:
    krn_cuda_blas_destroy(b);
    return st;
}

extern "C" void krn_cuda_blas_destroy(krn_cuda_blas *b)
{
    if (!b) return;
    if (b->h) cublasDestroy(b->h);
    krn_cuda_free(b->ws);
    lode_free(b);
}

extern "C" size_t krn_cuda_gemm_scratch_bytes(const krn_cuda_mat *w)
{
    return (size_t)w->rows * w->cols * 2;
}

extern "C" lode_status krn_cuda_gemm(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x,
                                     int x_f16, int64_t m, float *y, int64_t ldy, int accumulate,
                                     void *scratch, void *stream)
{
    if (m <= 0) return LODE_OK;
    if (!w->fmt || w->rows > INT32_MAX || w->cols > INT32_MAX || m > INT32_MAX)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemm: bad shape");
    cublasStatus_t cs = cublasSetStream(h->h, STREAM(stream));
    if (cs != CUBLAS_STATUS_SUCCESS) return blas_fail(cs, "cublasSetStream");
    const void *wp = w->q;
    cudaDataType_t t = x_f16 ? CUDA_R_16F : CUDA_R_16BF;
    if (w->dtype != (x_f16 ? LODE_F16 : LODE_BF16)) {
        if (!scratch) return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemm: scratch needed");
        lode_status st = krn_cuda_mat_dequant(w, 0, w->rows, scratch, x_f16, stream);
        if (st) return st;
        wp = scratch;
    }
    float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    int N = (int)w->rows, K = (int)w->cols, M = (int)m;
    /* column-major view: Y^T (N x M) = W (K x N, transposed) * X^T (K x M) */
    cs = cublasGemmEx(h->h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, wp, t, K, x, t, K, &beta, y,
                      CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (cs != CUBLAS_STATUS_SUCCESS) return blas_fail(cs, "cublasGemmEx");
    return LODE_OK;
}
