/*
 * gemm.c: packing and the blocked driver of krn_gemm_packed (see gemm.h), plus the
 * portable 4x16 tile. Work is split into tasks of (a block of rows, a group of panels);
 * inside a task each panel (k x nr floats) stays in L2 while the block's rows stream
 * past it in register tiles.
 */
#include "kernels/cpu/gemm.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ROW_BLOCK_TILES 8 /* register tiles of rows per task */

static int best_isa(void)
{
    int best = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
    if (best == 1 && __builtin_cpu_supports("avx512f")) best = 2;
    const char *e = getenv("LODE_KERNELS");
    if (e && !strcasecmp(e, "scalar")) return 0;
    if (e && !strcasecmp(e, "avx2") && best >= 1) return 1;
    return best;
}

int krn_gemm_isa(void)
{
    static _Atomic int cached = -1;
    int v = cached;
    if (v < 0) cached = v = best_isa();
    return v;
}

size_t krn_pack_size(size_t n_out, size_t n_in, int isa)
{
    size_t nr = isa == 2 ? 32 : 16;
    return (n_out + nr - 1) / nr * nr * n_in;
}

void krn_pack_into(const float *W, size_t so, size_t sk, size_t n_out, size_t n_in, int isa,
                   float *dst, krn_packed *out)
{
    size_t nr = isa == 2 ? 32 : 16;
    size_t n_panels = (n_out + nr - 1) / nr;
    if (isa == 2 && so < ((size_t)1 << 25)) {
        krn_pack_into_avx512(W, so, sk, n_out, n_in, dst);
        n_panels = 0;
    }
    for (size_t p = 0; p < n_panels; p++) {
        size_t live = LODE_MIN(nr, n_out - p * nr);
        for (size_t k = 0; k < n_in; k++) {
            float *d = dst + (p * n_in + k) * nr;
            const float *src = W + p * nr * so + k * sk;
            size_t j = 0;
            for (; j < live; j++) d[j] = src[j * so];
            for (; j < nr; j++) d[j] = 0.0f;
        }
    }
    out->data = dst;
    out->n_out = n_out;
    out->n_in = n_in;
    out->nr = (int)nr;
    out->mr = isa == 2 ? 8 : isa == 1 ? 6 : 4;
    out->isa = isa;
}

lode_status krn_pack(const float *W, size_t n_out, size_t n_in, int isa, krn_packed *out)
{
    memset(out, 0, sizeof *out);
    if (isa < 0) isa = best_isa();
    if (isa > 2 || (isa == 2 && !__builtin_cpu_supports("avx512f")) ||
        (isa == 1 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))))
        return LODE_ERR_UNSUPPORTED;
    float *d = lode_aligned_alloc(64, krn_pack_size(n_out, n_in, isa) * sizeof *d + 64);
    if (!d) return LODE_ERR_NOMEM;
    krn_pack_into(W, n_in, 1, n_out, n_in, isa, d, out);
    return LODE_OK;
}

void krn_packed_free(krn_packed *p)
{
    if (!p) return;
    lode_aligned_free(p->data);
    p->data = NULL;
}

void krn_gemm_tile_ref(size_t k, const float *const *a, const float *b, float *const *c, size_t m,
                       size_t n, const float *bias)
{
    float acc[4][16];
    memset(acc, 0, sizeof acc);
    for (size_t kk = 0; kk < k; kk++) {
        const float *bk = b + kk * 16;
        for (int i = 0; i < 4; i++) {
            float ai = a[i][kk];
            for (int j = 0; j < 16; j++) acc[i][j] += ai * bk[j];
        }
    }
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) c[i][j] = acc[i][j] + (bias ? bias[j] : 0.0f);
}

typedef void (*tile_fn)(size_t, const float *const *, const float *, float *const *, size_t, size_t,
                        const float *);

typedef struct gemm_job {
    const krn_packed *w;
    tile_fn tile;
    const float *x;
    size_t ldx, n_tok;
    float *y;
    size_t ldy;
    const float *bias;
    size_t rows_per_task, panels_per_task, n_row_tasks;
} gemm_job;

static void gemm_task(void *ctx, size_t task, int thread)
{
    const gemm_job *j = ctx;
    const krn_packed *w = j->w;
    size_t nr = (size_t)w->nr, mr = (size_t)w->mr;
    size_t n_panels = (w->n_out + nr - 1) / nr;
    size_t rt = task % j->n_row_tasks, pt = task / j->n_row_tasks;
    size_t r0 = rt * j->rows_per_task, r1 = LODE_MIN(j->n_tok, r0 + j->rows_per_task);
    size_t p0 = pt * j->panels_per_task, p1 = LODE_MIN(n_panels, p0 + j->panels_per_task);
    const float *a[8];
    float *c[8];
    for (size_t p = p0; p < p1; p++) {
        const float *b = w->data + p * w->n_in * nr;
        size_t col = p * nr, n = LODE_MIN(nr, w->n_out - col);
        const float *bias = j->bias ? j->bias + col : NULL;
        for (size_t r = r0; r < r1; r += mr) {
            size_t m = LODE_MIN(mr, r1 - r);
            for (size_t i = 0; i < mr; i++) {
                size_t row = r + (i < m ? i : 0); /* short tiles repeat row 0 */
                a[i] = j->x + row * j->ldx;
                c[i] = j->y + row * j->ldy + col;
            }
            j->tile(w->n_in, a, b, c, m, n, bias);
        }
    }
}

void krn_gemm_packed(lode_pool *pool, const krn_packed *W, const float *X, size_t ldx, size_t n_tok,
                     float *Y, size_t ldy, const float *bias)
{
    if (n_tok == 0 || W->n_out == 0) return;
    gemm_job j;
    j.w = W;
    j.tile = W->isa == 2   ? krn_gemm_tile_avx512
             : W->isa == 1 ? krn_gemm_tile_avx2
                           : krn_gemm_tile_ref;
    j.x = X;
    j.ldx = ldx;
    j.n_tok = n_tok;
    j.y = Y;
    j.ldy = ldy;
    j.bias = bias;
    size_t nr = (size_t)W->nr, mr = (size_t)W->mr;
    size_t n_panels = (W->n_out + nr - 1) / nr;
    j.rows_per_task = mr * ROW_BLOCK_TILES;
    j.n_row_tasks = (n_tok + j.rows_per_task - 1) / j.rows_per_task;
    /* enough tasks to balance the threads; panels grouped so a task is not tiny */
    size_t nth = (size_t)lode_pool_size(pool);
    size_t want = nth * 4;
    size_t groups = j.n_row_tasks >= want ? 1 : (want + j.n_row_tasks - 1) / j.n_row_tasks;
    if (groups > n_panels) groups = n_panels;
    j.panels_per_task = (n_panels + groups - 1) / groups;
    size_t n_tasks = j.n_row_tasks * ((n_panels + j.panels_per_task - 1) / j.panels_per_task);
    if (nth == 1)
        for (size_t t = 0; t < n_tasks; t++) gemm_task(&j, t, 0);
    else
        lode_parallel_for(pool, n_tasks, gemm_task, &j);
}

/* ---- 16-bit integer GEMM ------------------------------------------------------------ */

int krn_gemm_q16_supported(void)
{
    return krn_gemm_isa() == 2 && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("avx512bw");
}

lode_status krn_pack_q16(const float *W, size_t n_out, size_t n_in, krn_packed_q16 *out)
{
    memset(out, 0, sizeof *out);
    if (!krn_gemm_q16_supported()) return LODE_ERR_UNSUPPORTED;
    size_t n_pairs = (n_in + 1) / 2, n_panels = (n_out + 31) / 32;
    out->data = lode_aligned_alloc(64, n_panels * n_pairs * 64 * sizeof(int16_t));
    out->scale = lode_aligned_alloc(64, (n_out ? n_out : 1) * sizeof(float));
    if (!out->data || !out->scale) {
        krn_packed_q16_free(out);
        return LODE_ERR_NOMEM;
    }
    out->n_out = n_out;
    out->n_in = n_in;
    out->n_pairs = n_pairs;
    memset(out->data, 0, n_panels * n_pairs * 64 * sizeof(int16_t));
    for (size_t o = 0; o < n_out; o++) {
        const float *w = W + o * n_in;
        float amax = 0;
        for (size_t k = 0; k < n_in; k++) amax = fabsf(w[k]) > amax ? fabsf(w[k]) : amax;
        float inv = amax > 0 ? (float)KRN_Q16_MAX / amax : 0.0f;
        out->scale[o] = amax / (float)KRN_Q16_MAX;
        int16_t *panel = out->data + (o / 32) * n_pairs * 64;
        for (size_t k = 0; k < n_in; k++) {
            long q = lrintf(w[k] * inv);
            q = q > KRN_Q16_MAX ? KRN_Q16_MAX : q < -KRN_Q16_MAX ? -KRN_Q16_MAX : q;
            panel[(k / 2) * 64 + (o % 32) * 2 + k % 2] = (int16_t)q;
        }
    }
    return LODE_OK;
}

void krn_packed_q16_free(krn_packed_q16 *p)
{
    if (!p) return;
    lode_aligned_free(p->data);
    lode_aligned_free(p->scale);
    p->data = NULL;
    p->scale = NULL;
}

static size_t q16_row_stride(size_t n_in)
{
    return ((n_in + 1) / 2 * 2 + 31) / 32 * 32; /* int16 values, 64-byte rows */
}

size_t krn_gemm_q16_scratch(size_t n_tok, size_t n_in)
{
    return n_tok * q16_row_stride(n_in) * sizeof(int16_t) + (n_tok + 16) * sizeof(float);
}

void krn_q16_rows_set(void *rows, size_t n_tok, size_t n, size_t r, const float *x)
{
    size_t stride = q16_row_stride(n);
    int16_t *q = rows;
    float *s = (float *)(q + n_tok * stride);
    s[r] = krn_quant_row_q16_avx512(x, n, (n + 1) / 2 * 2, q + r * stride);
}

typedef struct q16_job {
    const krn_packed_q16 *w;
    const float *x;
    size_t ldx, n_tok;
    float *y;
    size_t ldy;
    const float *bias;
    int gelu;
    const int16_t *xq; /* (n_tok, stride) quantized rows */
    const float *xs;   /* (n_tok) their scales */
    size_t stride;     /* int16 values per quantized row */
    void *scratch;     /* where X is quantized when it came unquantized */
    void *yq;          /* Y's rows quantized too, or NULL */
    int yq_in_task;    /* each task covers whole rows and quantizes them itself */
    size_t rows_per_task, panels_per_task, n_row_tasks;
} q16_job;

static void q16_quant_task(void *ctx, size_t task, int thread)
{
    const q16_job *j = ctx;
    size_t r0 = task * j->rows_per_task, r1 = LODE_MIN(j->n_tok, r0 + j->rows_per_task);
    for (size_t r = r0; r < r1; r++)
        krn_q16_rows_set(j->scratch, j->n_tok, j->w->n_in, r, j->x + r * j->ldx);
}

/* quantizes rows of Y into yq, after the GEMM */
static void q16_quant_out_task(void *ctx, size_t task, int thread)
{
    const q16_job *j = ctx;
    size_t r0 = task * j->rows_per_task, r1 = LODE_MIN(j->n_tok, r0 + j->rows_per_task);
    for (size_t r = r0; r < r1; r++)
        krn_q16_rows_set(j->yq, j->n_tok, j->w->n_out, r, j->y + r * j->ldy);
}

static void q16_task(void *ctx, size_t task, int thread)
{
    const q16_job *j = ctx;
    const krn_packed_q16 *w = j->w;
    size_t n_panels = (w->n_out + 31) / 32;
    size_t rt = task % j->n_row_tasks, pt = task / j->n_row_tasks;
    size_t r0 = rt * j->rows_per_task, r1 = LODE_MIN(j->n_tok, r0 + j->rows_per_task);
    size_t p0 = pt * j->panels_per_task, p1 = LODE_MIN(n_panels, p0 + j->panels_per_task);
    const int16_t *a[8];
    float *c[8], xs[8];
    for (size_t p = p0; p < p1; p++) {
        const int16_t *b = w->data + p * w->n_pairs * 64;
        size_t col = p * 32, n = LODE_MIN((size_t)32, w->n_out - col);
        for (size_t r = r0; r < r1; r += 8) {
            size_t m = LODE_MIN((size_t)8, r1 - r);
            for (size_t i = 0; i < 8; i++) {
                size_t row = r + (i < m ? i : 0); /* short tiles repeat their first row */
                a[i] = j->xq + row * j->stride;
                c[i] = j->y + row * j->ldy + col;
                xs[i] = j->xs[row];
            }
            krn_gemm_tile_q16_avx512(w->n_pairs, a, b, c, m, n, xs, w->scale + col,
                                     j->bias ? j->bias + col : NULL, j->gelu);
        }
    }
    /* the task's rows were just written and are still in cache */
    if (j->yq_in_task) q16_quant_out_task(ctx, rt, thread);
}

void krn_gemm_q16_ex(lode_pool *pool, const krn_packed_q16 *W, const float *X, size_t ldx,
                     const void *xq, size_t n_tok, float *Y, size_t ldy, const float *bias,
                     int gelu, void *yq, void *scratch)
{
    if (n_tok == 0 || W->n_out == 0) return;
    q16_job j;
    j.w = W;
    j.x = X;
    j.ldx = ldx;
    j.n_tok = n_tok;
    j.y = Y;
    j.ldy = ldy;
    j.bias = bias;
    j.gelu = gelu;
    j.stride = q16_row_stride(W->n_in);
    j.xq = xq ? xq : scratch;
    j.xs = (const float *)(j.xq + n_tok * j.stride);
    j.scratch = scratch;
    j.yq = yq;
    size_t n_panels = (W->n_out + 31) / 32, nth = (size_t)lode_pool_size(pool);
    j.rows_per_task = 8 * ROW_BLOCK_TILES;
    j.n_row_tasks = (n_tok + j.rows_per_task - 1) / j.rows_per_task;
    if (!xq) {
        if (nth == 1)
            for (size_t t = 0; t < j.n_row_tasks; t++) q16_quant_task(&j, t, 0);
        else
            lode_parallel_for(pool, j.n_row_tasks, q16_quant_task, &j);
    }
    size_t want = nth * 4;
    size_t groups = j.n_row_tasks >= want ? 1 : (want + j.n_row_tasks - 1) / j.n_row_tasks;
    if (groups > n_panels) groups = n_panels;
    j.panels_per_task = (n_panels + groups - 1) / groups;
    j.yq_in_task = yq && j.panels_per_task == n_panels;
    size_t n_tasks = j.n_row_tasks * ((n_panels + j.panels_per_task - 1) / j.panels_per_task);
    if (nth == 1)
        for (size_t t = 0; t < n_tasks; t++) q16_task(&j, t, 0);
    else
        lode_parallel_for(pool, n_tasks, q16_task, &j);
    if (yq && !j.yq_in_task) {
        if (nth == 1)
            for (size_t t = 0; t < j.n_row_tasks; t++) q16_quant_out_task(&j, t, 0);
        else
            lode_parallel_for(pool, j.n_row_tasks, q16_quant_out_task, &j);
    }
}

void krn_gemm_q16(lode_pool *pool, const krn_packed_q16 *W, const float *X, size_t ldx,
                  size_t n_tok, float *Y, size_t ldy, const float *bias, void *scratch)
{
    krn_gemm_q16_ex(pool, W, X, ldx, NULL, n_tok, Y, ldy, bias, 0, NULL, scratch);
}
