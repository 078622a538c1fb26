/*
 * gemm.cu: the matrix product on tensor cores through cuBLAS. F16 and BF16 weights go straight
 * in. Quantized weights for up to krn_cuda_qmm_limit() tokens go to qmm.cu, which decodes them
 * on the fly; for more, they are first dequantized into a reused bf16 buffer (one extra write
 * and read of the matrix, small next to the m x n x k product once m is in the hundreds). The
 * result is f32, optionally added to Y (the residual) by the GEMM itself, or 16-bit where the
 * next op reads it in that type.
 *
 * Shapes the caller prepares (krn_cuda_gemm_prepare: the decode steps' sizes and the full
 * prefill step, before their graphs are captured) are timed once over cublasGemmEx's default
 * and up to N_CAND of cuBLASLt's heuristic candidates (tiles, split-K, stages) on the real
 * operands, and the fastest is kept per (n, k, m, ldy, types). On an H200 for llama3-8b's O
 * projection (4096 x 4096) cuBLAS's default took 67.0 us at 16 rows where a cuBLASLt
 * candidate takes 15.8; at 256 rows the gains are a few percent (18.1 -> 16.6 us) and at 2048
 * rows gate/up 532 -> 507 us (bench/RESULTS.md, serving core on the GPU). Shapes never
 * prepared use cublasGemmEx.
 */
#include "kernels/cuda/common.cuh"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <string.h>

#define WORKSPACE_BYTES (32u << 20)
#define N_CAND          16
#define TUNE_REPS       5
#define CACHE_N         256

typedef struct tuned {
    int n, k, m, ldy, f16, y_type;
    int gemmex;     /* cublasGemmEx's default was fastest */
    unsigned align; /* pointer alignment the algorithm was chosen under */
    cublasLtMatmulDescOpaque_t desc;
    cublasLtMatrixLayoutOpaque_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} tuned;

struct krn_cuda_blas {
    cublasHandle_t h;
    cublasLtHandle_t lt;
    void *ws;
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
    lode_free(b->cache);
    lode_free(b);
}

extern "C" size_t krn_cuda_gemm_scratch_bytes(const krn_cuda_mat *w)
{
    return (size_t)w->rows * w->cols * 2;
}

static cudaDataType_t cuda_type(int t)
{
    return t == LODE_F32 ? CUDA_R_32F : t == LODE_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* Largest power of two (at most 256) dividing every address and row stride in bytes. */
static unsigned align_of(const void *a, const void *b, const void *c, int64_t k, int64_t ldy_b)
{
    uintptr_t v =
        (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)(k * 2) | (uintptr_t)ldy_b | 256u;
    return (unsigned)(v & (~v + 1));
}

static tuned *find(krn_cuda_blas *h, int n, int k, int m, int ldy, int f16, int y_type)
{
    for (int i = 0; i < h->n_cache; i++) {
        tuned *e = &h->cache[i];
        if (e->n == n && e->k == k && e->m == m && e->ldy == ldy && e->f16 == f16 &&
            e->y_type == y_type)
            return e;
    }
    return NULL;
}

static cublasStatus_t gemmex_run(krn_cuda_blas *h, const void *w, const void *x, int f16, int n,
                                 int k, int m, void *y, int y_type, int ldy, float beta,
                                 cudaStream_t st)
{
    const float alpha = 1.f;
    cublasStatus_t cs = cublasSetStream(h->h, st);
    if (cs != CUBLAS_STATUS_SUCCESS) return cs;
    const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
    /* column-major view: Y^T (n x m) = W (k x n, transposed) * X^T (k x m) */
    return cublasGemmEx(h->h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, t, k, x, t, k, &beta, y,
                        cuda_type(y_type), ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

static cublasStatus_t lt_run(krn_cuda_blas *h, tuned *e, const void *w, const void *x, void *y,
                             float beta, cudaStream_t st)
{
    if (e->gemmex)
        return gemmex_run(h, w, x, e->f16, e->n, e->k, e->m, y, e->y_type, e->ldy, beta, st);
    const float alpha = 1.f;
    return cublasLtMatmul(h->lt, &e->desc, &alpha, w, &e->la, x, &e->lb, &beta, y, &e->lc, y,
                          &e->lc, &e->algo, h->ws, WORKSPACE_BYTES, st);
}

/* Milliseconds of TUNE_REPS runs of e after one warm-up, or a negative value when it did not
 * run; *err is set only for a failure of the device itself. */
static float time_runs(krn_cuda_blas *h, tuned *e, const void *w, const void *x, void *y,
                       float beta, cudaStream_t st, lode_status *err)
{
    if (lt_run(h, e, w, x, y, beta, st) != CUBLAS_STATUS_SUCCESS) return -1.f;
    cudaEventRecord(h->ev[0], st);
    int ok = 1;
    for (int r = 0; r < TUNE_REPS && ok; r++) ok = lt_run(h, e, w, x, y, beta, st) == 0;
    cudaEventRecord(h->ev[1], st);
    cudaError_t ce = cudaEventSynchronize(h->ev[1]);
    if (ce != cudaSuccess) {
        *err = krn_cuda_fail(ce, "gemm tuning", __FILE__, __LINE__);
        return -1.f;
    }
    float ms = 0.f;
    if (!ok || cudaEventElapsedTime(&ms, h->ev[0], h->ev[1]) != cudaSuccess) return -1.f;
    return ms;
}

/* Describes the product in a new cache entry and times cublasGemmEx and cuBLASLt's candidates
 * for it on the real operands (writing y); returns the entry, or NULL (nothing cached) when
 * the cache is full or nothing ran. */
static tuned *tune(krn_cuda_blas *h, const void *w, const void *x, int f16, int n, int k, int m,
                   void *y, int y_type, int ldy, float beta, unsigned align, cudaStream_t st,
                   lode_status *err)
{
    *err = LODE_OK;
    if (h->n_cache >= CACHE_N) return NULL;
    tuned *e = &h->cache[h->n_cache];
    memset(e, 0, sizeof *e);
    e->n = n, e->k = k, e->m = m, e->ldy = ldy, e->f16 = f16, e->y_type = y_type;
    e->align = align;
    const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulPreferenceOpaque_t pref;
    const uint64_t wsb = WORKSPACE_BYTES;
    const uint32_t al = align;
    /* cublasGemmEx's default first: the bar the candidates must beat */
    e->gemmex = 1;
    const float t_ex = time_runs(h, e, w, x, y, beta, st, err);
    if (*err) return NULL;
    float best = t_ex, t0 = -1.f;
    int bi = -1, nres = 0;
    e->gemmex = 0;
    cublasLtMatmulHeuristicResult_t res[N_CAND];
    /* column-major view: Y^T (n x m) = W (k x n, transposed) * X^T (k x m) */
    if (cublasLtMatmulDescInit(&e->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatmulDescSetAttribute(&e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        cublasLtMatrixLayoutInit(&e->la, t, k, n, k) ||
        cublasLtMatrixLayoutInit(&e->lb, t, k, m, k) ||
        cublasLtMatrixLayoutInit(&e->lc, cuda_type(y_type), n, m, ldy) ||
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
                                             sizeof al) ||
        cublasLtMatmulAlgoGetHeuristic(h->lt, &e->desc, &e->la, &e->lb, &e->lc, &e->lc, &pref,
                                       N_CAND, res, &nres))
        nres = 0;
    for (int i = 0; i < nres; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > WORKSPACE_BYTES)
            continue;
        e->algo = res[i].algo;
        const float ms = time_runs(h, e, w, x, y, beta, st, err);
        if (*err) return NULL;
        if (ms < 0.f) continue;
        if (t0 < 0.f) t0 = ms;
        if (best < 0.f || ms < best) best = ms, bi = i;
    }
    if (best < 0.f) return NULL;
    e->gemmex = bi < 0;
    if (bi >= 0) e->algo = res[bi].algo;
    if (getenv("LODE_CUDA_GEMM_TRACE")) {
        char pick[32];
        if (bi < 0)
            snprintf(pick, sizeof pick, "cublasGemmEx");
        else
            snprintf(pick, sizeof pick, "#%d", bi);
        fprintf(stderr,
                "gemm tune n %d k %d m %d: cublasGemmEx %.1f us, cuBLASLt #0 %.1f us, best of %d "
                "candidates: %s %.1f us\n",
                n, k, m, t_ex * 1000.f / TUNE_REPS, t0 * 1000.f / TUNE_REPS, nres, pick,
                best * 1000.f / TUNE_REPS);
    }
    h->n_cache++;
    return e;
}

extern "C" int krn_cuda_qmm_limit(int set)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("LODE_CUDA_QMM_MAX");
        v = e && *e ? atoi(e) : KRN_CUDA_QMM_MAX;
        if (v < 0) v = 0;
    }
    const int old = v;
    if (set >= 0) v = set;
    return old;
}

/* 1 unless LODE_CUDA_GEMM_TUNE=0 (read once): whether prepared shapes are tuned. */
static int tune_enabled(void)
{
    static int v = -1;
    return krn_cuda_env_on("LODE_CUDA_GEMM_TUNE", &v);
}

static lode_status gemm(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x, int x_f16,
                        int64_t m, void *y, int y_type, int64_t ldy, int accumulate, void *scratch,
                        void *stream, int run)
{
    if (m <= 0) return LODE_OK;
    if (!w->fmt || w->rows > INT32_MAX || w->cols > INT32_MAX || m > INT32_MAX || ldy > INT32_MAX ||
        (y_type != LODE_F32 && y_type != LODE_F16 && y_type != LODE_BF16))
        return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemm: bad shape");
    cudaStream_t st = STREAM(stream);
    const void *wp = w->q;
    /* quantized weights times up to krn_cuda_qmm_limit bf16 rows: decoded on the fly (qmm.cu) */
    const size_t sb = krn_cuda_gemm_scratch_bytes(w);
    if (w->dtype != LODE_F32 && w->dtype != LODE_F16 && w->dtype != LODE_BF16 &&
        m <= krn_cuda_qmm_limit(-1) && scratch && krn_cuda_qmm_fits(w, x_f16, m, sb))
        return run ? krn_cuda_qmm(w, x, x_f16, m, y, y_type, ldy, accumulate, scratch, sb, stream)
                   : LODE_OK;
    if (w->dtype != (x_f16 ? LODE_F16 : LODE_BF16)) {
        if (!scratch) return krn_cuda_fail_msg(LODE_ERR_INVALID, "gemm: scratch needed");
        if (run) {
            lode_status ds = krn_cuda_mat_dequant(w, 0, w->rows, scratch, x_f16, stream);
            if (ds) return ds;
        }
        wp = scratch;
    }
    const float beta = accumulate ? 1.f : 0.f;
    const int N = (int)w->rows, K = (int)w->cols, M = (int)m;
    const unsigned al = align_of(wp, x, y, K, ldy * (y_type == LODE_F32 ? 4 : 2));
    tuned *e = NULL;
    if (tune_enabled()) {
        e = find(h, N, K, M, (int)ldy, x_f16, y_type);
        if (!e && !run) {
            cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
            if (cudaStreamIsCapturing(st, &cap) != cudaSuccess ||
                cap != cudaStreamCaptureStatusNone)
                return LODE_OK;
            lode_status err;
            e = tune(h, wp, x, x_f16, N, K, M, y, y_type, (int)ldy, beta, al, st, &err);
            if (err) return err;
        }
        if (e && al < e->align) e = NULL;
    }
    if (!run) return LODE_OK;
    cublasStatus_t cs = e ? lt_run(h, e, wp, x, y, beta, st)
                          : gemmex_run(h, wp, x, x_f16, N, K, M, y, y_type, (int)ldy, beta, st);
    if (cs != CUBLAS_STATUS_SUCCESS) return blas_fail(cs, e ? "cublasLtMatmul" : "cublasGemmEx");
    return LODE_OK;
}

extern "C" lode_status krn_cuda_gemm(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x,
                                     int x_f16, int64_t m, float *y, int64_t ldy, int accumulate,
                                     void *scratch, void *stream)
{
    return gemm(h, w, x, x_f16, m, y, LODE_F32, ldy, accumulate, scratch, stream, 1);
}

extern "C" lode_status krn_cuda_gemm_y(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x,
                                       int x_f16, int64_t m, void *y, int y_type, int64_t ldy,
                                       int accumulate, void *scratch, void *stream)
{
    return gemm(h, w, x, x_f16, m, y, y_type, ldy, accumulate, scratch, stream, 1);
}

extern "C" lode_status krn_cuda_gemm_prepare(krn_cuda_blas *h, const krn_cuda_mat *w, const void *x,
                                             int x_f16, int64_t m, void *y, int y_type, int64_t ldy,
                                             int accumulate, void *scratch, void *stream)
{
    return gemm(h, w, x, x_f16, m, y, y_type, ldy, accumulate, scratch, stream, 0);
}
