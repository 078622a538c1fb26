/*
 * gemm.cu: the matrix product on tensor cores through cuBLAS. F16 and BF16 weights go straight
 * in; quantized weights are first dequantized into a reused bf16 buffer (one extra write and
 * read of the matrix, small next to the m x n x k product once m is in the hundreds). The
 * result is f32, optionally added to Y (the residual) by the GEMM itself.
 *
 * Products of at most TUNE_MAX_M rows (decode and serving steps) run through cuBLASLt with
 * the algorithm picked by timing: cuBLAS's own choice for 256 rows against the narrow outputs
 * of a decode step (llama3-8b's 6144-column QKV, 4096-column O) filled few multiprocessors and
 * ran at 9-22% of the copy bandwidth on an H200 (bench/RESULTS.md, serving core on the GPU).
 * krn_cuda_gemm_prepare (called for the decode step sizes before their graphs are captured)
 * times up to N_CAND of cuBLASLt's heuristic candidates (tiles, split-K, stages) on the real
 * operands into a private output buffer and keeps the fastest per (n, k, m, ldy, type);
 * krn_cuda_gemm then uses it. Shapes never prepared, and larger products, use cublasGemmEx
 * (so no step stalls on a timing run).
 */
#include "kernels/cuda/common.cuh"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <string.h>

#define WORKSPACE_BYTES (32u << 20)
#define TUNE_MAX_M      512
#define TUNE_Y_BYTES    ((size_t)64 << 20) /* 512 rows of 28672 f32 columns fit */
#define N_CAND          16
#define TUNE_REPS       5
#define CACHE_N         256

typedef struct tuned {
    int n, k, m, ldy, f16;
    unsigned align; /* pointer alignment the algorithm was chosen under */
    cublasLtMatmulDescOpaque_t desc;
    cublasLtMatrixLayoutOpaque_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} tuned;

struct krn_cuda_blas {
    cublasHandle_t h;
    cublasLtHandle_t lt;
    void *ws;
    void *tune_y;
    cudaEvent_t ev[2];
    tuned *cache; /* [CACHE_N] */
    int n_cache;
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
        (cs = cublasSetMathMode(b->h, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS ||
        (cs = cublasLtCreate(&b->lt)) != CUBLAS_STATUS_SUCCESS) {
        st = blas_fail(cs, "cublas setup");
        goto fail;
    }
    if (!(b->cache = (tuned *)lode_calloc(CACHE_N, sizeof *b->cache))) {
        st = LODE_ERR_NOMEM;
        goto fail;
    }
    if ((st = krn_cuda_malloc(&b->tune_y, TUNE_Y_BYTES)) ||
        (st = krn_cuda_memset(b->tune_y, 0, TUNE_Y_BYTES, stream)))
        goto fail;
    if (cudaEventCreate(&b->ev[0]) != cudaSuccess || cudaEventCreate(&b->ev[1]) != cudaSuccess) {
        st = krn_cuda_fail(cudaGetLastError(), "cudaEventCreate", __FILE__, __LINE__);
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
    if (b->lt) cublasLtDestroy(b->lt);
    if (b->ev[0]) cudaEventDestroy(b->ev[0]);
    if (b->ev[1]) cudaEventDestroy(b->ev[1]);
    krn_cuda_free(b->ws);
    krn_cuda_free(b->tune_y);
    lode_free(b->cache);
    lode_free(b);
}

extern "C" size_t krn_cuda_gemm_scratch_bytes(const krn_cuda_mat *w)
{
    return (size_t)w->rows * w->cols * 2;
}

/* Largest power of two (at most 256) dividing every address and row stride in bytes. */
static unsigned align_of(const void *a, const void *b, const void *c, int64_t k, int64_t ldy)
{
    uintptr_t v = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)(k * 2) |
                  (uintptr_t)(ldy * 4) | 256u;
    return (unsigned)(v & (~v + 1));
}

static tuned *find(krn_cuda_blas *h, int n, int k, int m, int ldy, int f16)
{
    for (int i = 0; i < h->n_cache; i++) {
        tuned *e = &h->cache[i];
        if (e->n == n && e->k == k && e->m == m && e->ldy == ldy && e->f16 == f16) return e;
    }
    return NULL;
}

static cublasStatus_t lt_run(krn_cuda_blas *h, tuned *e, const void *w, const void *x, float *y,
                             float beta, cudaStream_t st)
{
    const float alpha = 1.f;
    return cublasLtMatmul(h->lt, &e->desc, &alpha, w, &e->la, x, &e->lb, &beta, y, &e->lc, y,
                          &e->lc, &e->algo, h->ws, WORKSPACE_BYTES, st);
}

/* Describes the product in a new cache entry and times cuBLASLt's candidates for it on the
 * real operands (output into tune_y); returns the entry, or NULL (nothing cached) when no
 * candidate ran, so that the caller keeps cublasGemmEx. */
static tuned *tune(krn_cuda_blas *h, const void *w, const void *x, int f16, int n, int k, int m,
                   int ldy, float beta, unsigned align, cudaStream_t st, lode_status *err)
{
    *err = LODE_OK;
    if (h->n_cache >= CACHE_N || (size_t)ldy * m * 4 > TUNE_Y_BYTES) return NULL;
    tuned *e = &h->cache[h->n_cache];
    memset(e, 0, sizeof *e);
    const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulPreferenceOpaque_t pref;
    const uint64_t wsb = WORKSPACE_BYTES;
    const uint32_t al = align;
    /* column-major view: Y^T (n x m) = W (k x n, transposed) * X^T (k x m) */
    if (cublasLtMatmulDescInit(&e->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        cublasLtMatrixLayoutInit(&e->la, t, k, n, k) ||
        cublasLtMatrixLayoutInit(&e->lb, t, k, m, k) ||
        cublasLtMatrixLayoutInit(&e->lc, CUDA_R_32F, n, m, ldy) ||
        cublasLtMatmulPreferenceInit(&pref) ||
        cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                             sizeof wsb) ||
        cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al,
                                             sizeof al))
        return NULL;
    cublasLtMatmulHeuristicResult_t res[N_CAND];
    int nres = 0;
    if (cublasLtMatmulAlgoGetHeuristic(h->lt, &e->desc, &e->la, &e->lb, &e->lc, &e->lc, &pref,
                                       N_CAND, res, &nres) ||
        nres <= 0)
        return NULL;
    float best = 0.f, first = -1.f;
    int bi = -1;
    float *ty = (float *)h->tune_y;
    for (int i = 0; i < nres; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > WORKSPACE_BYTES)
            continue;
        e->algo = res[i].algo;
        if (lt_run(h, e, w, x, ty, beta, st) != CUBLAS_STATUS_SUCCESS) continue;
        cudaEventRecord(h->ev[0], st);
        int ok = 1;
        for (int r = 0; r < TUNE_REPS && ok; r++)
            ok = lt_run(h, e, w, x, ty, beta, st) == CUBLAS_STATUS_SUCCESS;
        cudaEventRecord(h->ev[1], st);
        cudaError_t ce = cudaEventSynchronize(h->ev[1]);
        if (ce != cudaSuccess) {
            *err = krn_cuda_fail(ce, "gemm tuning", __FILE__, __LINE__);
            return NULL;
        }
        float ms = 0.f;
        if (!ok || cudaEventElapsedTime(&ms, h->ev[0], h->ev[1]) != cudaSuccess) continue;
        if (first < 0.f) first = ms;
        if (bi < 0 || ms < best) best = ms, bi = i;
    }
    if (bi < 0) return NULL;
    e->algo = res[bi].algo;
    e->n = n, e->k = k, e->m = m, e->ldy = ldy, e->f16 = f16, e->align = align;
    if (getenv("LODE_CUDA_GEMM_TRACE"))
        fprintf(stderr, "gemm tune n %d k %d m %d: %d candidates, #%d best %.1f us (#0 %.1f us)\n",
                n, k, m, nres, bi, best * 1000.f / TUNE_REPS, first * 1000.f / TUNE_REPS);
    h->n_cache++;
    return e;
}

/* 1 unless LODE_CUDA_GEMM_TUNE=0 (read once): whether small products are tuned. */
static int tune_enabled(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("LODE_CUDA_GEMM_TUNE");
        v = !(e && !strcmp(e, "0"));
    }
    return v;
}

/* The cached entry for this product; when `tune_new`, a product not seen before is tuned
 * first (unless a graph is being captured). */
static tuned *entry_for(krn_cuda_blas *h, const void *wp, const void *x, int f16, int n, int k,
                        int m, const float *y, int ldy, float beta, cudaStream_t st, int tune_new,
                        lode_status *err)
{
    *err = LODE_OK;
    if (m > TUNE_MAX_M || !tune_enabled()) return NULL;
    unsigned al = align_of(wp, x, y, k, ldy);
    tuned *e = find(h, n, k, m, ldy, f16);
    if (!e && tune_new) {
        cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(st, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone)
            return NULL;
        e = tune(h, wp, x, f16, n, k, m, ldy, beta, al, st, err);
    }
    return e && al >= e->align ? e : NULL;
}

static lode_status gemm(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x, int x_f16,
                        int64_t m, float *y, int64_t ldy, int accumulate, void *scratch,
                        void *stream, int run)
{
    if (m <= 0) return LODE_OK;
    if (!w->fmt || w->rows > INT32_MAX || w->cols > INT32_MAX || m > INT32_MAX || ldy > INT32_MAX)
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemm: bad shape");
    cudaStream_t st = STREAM(stream);
    const void *wp = w->q;
    if (w->dtype != (x_f16 ? LODE_F16 : LODE_BF16)) {
        if (!scratch) return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemm: scratch needed");
        if (run) {
            lode_status ds = krn_cuda_mat_dequant(w, 0, w->rows, scratch, x_f16, stream);
            if (ds) return ds;
        }
        wp = scratch;
    }
    float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    int N = (int)w->rows, K = (int)w->cols, M = (int)m;
    lode_status err;
    tuned *e = entry_for(h, wp, x, x_f16, N, K, M, y, (int)ldy, beta, st, !run, &err);
    if (err) return err;
    if (!run) return LODE_OK;
    if (e) {
        cublasStatus_t cs = lt_run(h, e, wp, x, y, beta, st);
        if (cs != CUBLAS_STATUS_SUCCESS) return blas_fail(cs, "cublasLtMatmul");
        return LODE_OK;
    }
    cublasStatus_t cs = cublasSetStream(h->h, st);
    if (cs != CUBLAS_STATUS_SUCCESS) return blas_fail(cs, "cublasSetStream");
    cudaDataType_t t = x_f16 ? CUDA_R_16F : CUDA_R_16BF;
    /* column-major view: Y^T (N x M) = W (K x N, transposed) * X^T (K x M) */
    cs = cublasGemmEx(h->h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, wp, t, K, x, t, K, &beta, y,
                      CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (cs != CUBLAS_STATUS_SUCCESS) return blas_fail(cs, "cublasGemmEx");
    return LODE_OK;
}

extern "C" lode_status krn_cuda_gemm(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x,
                                     int x_f16, int64_t m, float *y, int64_t ldy, int accumulate,
                                     void *scratch, void *stream)
{
    return gemm(h, w, x, x_f16, m, y, ldy, accumulate, scratch, stream, 1);
}

extern "C" lode_status krn_cuda_gemm_prepare(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x,
                                             int x_f16, int64_t m, const float *y, int64_t ldy,
                                             int accumulate, void *scratch, void *stream)
{
    return gemm(h, w, x, x_f16, m, (float *)y, ldy, accumulate, scratch, stream, 0);
}
