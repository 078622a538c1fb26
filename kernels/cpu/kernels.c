/*
 * kernels.c: the entry points of kernels.h on top of the dispatched kernel table:
 * argument checks, the matmul driver (activation quantization, splitting into tasks of
 * row blocks x token blocks for the pool, 4x4 tiles inside), the f32 row operations and
 * paged causal attention with an online softmax.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/kernels_int.h"

int krn_weight_type_ok(lode_dtype t)
{
    switch (t) {
    case LODE_F32:
    case LODE_F16:
    case LODE_BF16:
    case LODE_Q4_0:
    case LODE_Q4_1:
    case LODE_Q5_0:
    case LODE_Q5_1:
    case LODE_Q8_0:
    case LODE_Q4_K:
    case LODE_Q5_K:
    case LODE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

lode_dtype krn_vec_dot_type(lode_dtype wt)
{
    switch (wt) {
    case LODE_Q4_0:
    case LODE_Q5_0:
    case LODE_Q8_0:
        return LODE_Q8_0;
    case LODE_Q4_1:
    case LODE_Q5_1:
        return LODE_Q8_1;
    case LODE_Q4_K:
    case LODE_Q5_K:
    case LODE_Q6_K:
        return LODE_Q8_K;
    default:
        return LODE_F32;
    }
}

static int is_float_type(lode_dtype t)
{
    return t == LODE_F32 || t == LODE_F16 || t == LODE_BF16;
}

static int shape_ok(lode_dtype t, size_t n)
{
    return (unsigned)t < LODE_DTYPE_MAX && lode_dtype_block_elems(t) != 0 &&
           n % lode_dtype_block_elems(t) == 0;
}

lode_status krn_dequantize_row(lode_dtype t, const void *x, float *y, size_t n)
{
    if (!shape_ok(t, n) || !krn_ops_get()->dequant[t]) return LODE_ERR_INVALID;
    krn_ops_get()->dequant[t](x, y, n);
    return LODE_OK;
}

lode_status krn_quantize_row(lode_dtype t, const float *x, void *y, size_t n)
{
    if (!shape_ok(t, n) || !krn_ops_get()->quant[t]) return LODE_ERR_INVALID;
    krn_ops_get()->quant[t](x, y, n);
    return LODE_OK;
}

float krn_vec_dot(lode_dtype wt, size_t n, const void *w, const void *xq)
{
    return krn_ops_get()->dot[wt](n, w, xq);
}

float krn_vec_dot_f32(lode_dtype wt, size_t n, const void *w, const float *x)
{
    const krn_ops *o = krn_ops_get();
    if (is_float_type(wt)) return o->dot[wt](n, w, x);
    size_t be = lode_dtype_block_elems(wt), bb = lode_dtype_block_bytes(wt);
    float buf[QK_K];
    float s = 0;
    for (size_t i = 0; i < n; i += be) {
        o->dequant[wt]((const char *)w + i / be * bb, buf, be);
        s += o->dot_f32(buf, x + i, be);
    }
    return s;
}

/* ---- matmul ------------------------------------------------------------------------ */
size_t krn_matmul_wsize(lode_dtype wt, size_t n_tok, size_t n_in)
{
    if (is_float_type(wt)) return 0;
    return n_tok * lode_dtype_row_bytes(krn_vec_dot_type(wt), n_in);
}

typedef struct quant_job {
    krn_quant_fn fn;
    const float *x;
    size_t ldx, n_in, n_tok, per_task;
    char *out;
    size_t out_stride;
} quant_job;

static void quant_task(void *ctx, size_t task, int thread)
{
    const quant_job *j = ctx;
    size_t t0 = task * j->per_task, t1 = LODE_MIN(j->n_tok, t0 + j->per_task);
    for (size_t t = t0; t < t1; t++) j->fn(j->x + t * j->ldx, j->out + t * j->out_stride, j->n_in);
}

lode_status krn_quantize_acts(lode_pool *pool, lode_dtype wt, const float *X, size_t ldx,
                              size_t n_tok, size_t n_in, void *ws, size_t ws_size)
{
    if (!krn_weight_type_ok(wt) || !shape_ok(wt, n_in)) return LODE_ERR_INVALID;
    if (is_float_type(wt)) return LODE_OK;
    lode_dtype vt = krn_vec_dot_type(wt);
    if (!shape_ok(vt, n_in) || ws_size < krn_matmul_wsize(wt, n_tok, n_in) || ldx < n_in)
        return LODE_ERR_INVALID;
    quant_job j = {krn_ops_get()->quant[vt],      X, ldx, n_in, n_tok, 0, ws,
                   lode_dtype_row_bytes(vt, n_in)};
    if (n_tok < 8) {
        j.per_task = n_tok;
        quant_task(&j, 0, 0);
    } else {
        j.per_task = 4;
        lode_parallel_for(pool, (n_tok + 3) / 4, quant_task, &j);
    }
    return LODE_OK;
}

typedef struct mm_job {
    krn_tile_fn tile;
    krn_tile_fn panel;
    krn_dot_fn dot;
    const char *w;
    size_t wstride;
    const char *x;
    size_t xstride;
    float *y;
    size_t ldy, n_in, n_out, n_tok;
    size_t row_chunk, tok_chunk, n_row_chunks;
} mm_job;

static void mm_task(void *ctx, size_t task, int thread)
{
    const mm_job *j = ctx;
    size_t rc = task % j->n_row_chunks, tc = task / j->n_row_chunks;
    size_t r0 = rc * j->row_chunk, r1 = LODE_MIN(j->n_out, r0 + j->row_chunk);
    size_t t0 = tc * j->tok_chunk, t1 = LODE_MIN(j->n_tok, t0 + j->tok_chunk);
    if (j->panel && t1 - t0 >= 2) {
        for (size_t t = t0; t < t1; t += KRN_PANEL_T)
            j->panel(j->n_in, j->w + r0 * j->wstride, j->wstride, r1 - r0, j->x + t * j->xstride,
                     j->xstride, LODE_MIN((size_t)KRN_PANEL_T, t1 - t), j->y + t * j->ldy + r0,
                     j->ldy);
        return;
    }
    for (size_t r = r0; r < r1; r += KRN_TILE) {
        size_t nr = LODE_MIN((size_t)KRN_TILE, r1 - r);
        for (size_t t = t0; t < t1; t += KRN_TILE) {
            size_t nt = LODE_MIN((size_t)KRN_TILE, t1 - t);
            const char *w = j->w + r * j->wstride;
            const char *x = j->x + t * j->xstride;
            float *y = j->y + t * j->ldy + r;
            if (j->tile)
                j->tile(j->n_in, w, j->wstride, nr, x, j->xstride, nt, y, j->ldy);
            else
                krn_tile_from_dot(j->dot, j->n_in, w, j->wstride, nr, x, j->xstride, nt, y, j->ldy);
        }
    }
}

/* Fills j for one matmul (no pool work); LODE_ERR_INVALID on a bad type or shape. */
static lode_status mm_setup(mm_job *j, lode_dtype wt, const void *W, size_t n_out, size_t n_in,
                            const void *xq, size_t ldx, size_t n_tok, float *Y, size_t ldy)
{
    if (!krn_weight_type_ok(wt) || !shape_ok(wt, n_in) || ldy < n_out) return LODE_ERR_INVALID;
    const krn_ops *o = krn_ops_get();
    lode_dtype vt = krn_vec_dot_type(wt);
    if (!shape_ok(vt, n_in)) return LODE_ERR_INVALID;
    j->tile = o->tile[wt];
    j->panel = o->panel[wt];
    j->dot = o->dot[wt];
    j->w = W;
    j->wstride = lode_dtype_row_bytes(wt, n_in);
    j->x = xq;
    if (is_float_type(wt)) {
        if (ldx < n_in) return LODE_ERR_INVALID;
        j->xstride = ldx * sizeof(float);
    } else {
        j->xstride = lode_dtype_row_bytes(vt, n_in);
    }
    j->y = Y;
    j->ldy = ldy;
    j->n_in = n_in;
    j->n_out = n_out;
    j->n_tok = n_tok;
    return LODE_OK;
}

/* Splits j into tasks for nth threads, `share` being its fraction (in 1/1024) of the
 * rows of the region it runs in; returns the task count. Token blocks keep a slice of
 * activations in L2 while each 4-row weight tile is reused across it; row blocks are
 * small enough to balance the threads. */
static size_t mm_split(mm_job *j, int nth, size_t share)
{
    j->tok_chunk = j->n_tok <= 64 ? j->n_tok : 64;
    size_t n_tc = (j->n_tok + j->tok_chunk - 1) / j->tok_chunk;
    size_t want = ((size_t)nth * (j->n_tok == 1 ? 8 : 4) * share + 1023) / 1024;
    if (want < 1) want = 1;
    size_t per = n_tc >= want ? j->n_out : (j->n_out * n_tc + want - 1) / want;
    if (per < 16) per = 16;
    if (j->n_tok > 1 && per > 128) per = 128;
    j->row_chunk = (per + KRN_TILE - 1) / KRN_TILE * KRN_TILE;
    j->n_row_chunks = (j->n_out + j->row_chunk - 1) / j->row_chunk;
    return j->n_row_chunks * n_tc;
}

#define MM_MULTI_MAX 8

typedef struct mm_multi {
    mm_job jobs[MM_MULTI_MAX];
    size_t first[MM_MULTI_MAX + 1]; /* first task of each job; first[n] = total */
    size_t n;
} mm_multi;

static void mm_multi_task(void *ctx, size_t task, int thread)
{
    const mm_multi *m = ctx;
    size_t k = 0;
    while (task >= m->first[k + 1]) k++;
    mm_task((void *)&m->jobs[k], task - m->first[k], thread);
}

lode_status krn_matmul_q(lode_pool *pool, lode_dtype wt, const void *W, size_t n_out, size_t n_in,
                         const void *xq, size_t ldx, size_t n_tok, float *Y, size_t ldy)
{
    mm_job j;
    lode_status rc = mm_setup(&j, wt, W, n_out, n_in, xq, ldx, n_tok, Y, ldy);
    if (rc != LODE_OK) return rc;
    if (n_out == 0 || n_tok == 0) return LODE_OK;
    int nth = lode_pool_size(pool);
    size_t n_tasks = mm_split(&j, nth, 1024);
    if (nth == 1)
        for (size_t t = 0; t < n_tasks; t++) mm_task(&j, t, 0);
    else
        lode_parallel_for(pool, n_tasks, mm_task, &j);
    return LODE_OK;
}

lode_status krn_matmul_q_multi(lode_pool *pool, const krn_mm *mms, size_t n_mm, size_t n_in,
                               const void *xq, size_t ldx, size_t n_tok)
{
    if (!mms || n_mm == 0 || n_mm > MM_MULTI_MAX) return LODE_ERR_INVALID;
    mm_multi m;
    m.n = n_mm;
    size_t rows = 0;
    lode_dtype vt = krn_vec_dot_type(mms[0].wt);
    for (size_t k = 0; k < n_mm; k++) {
        if (krn_vec_dot_type(mms[k].wt) != vt) return LODE_ERR_INVALID;
        lode_status rc = mm_setup(&m.jobs[k], mms[k].wt, mms[k].W, mms[k].n_out, n_in, xq, ldx,
                                  n_tok, mms[k].Y, mms[k].ldy);
        if (rc != LODE_OK) return rc;
        rows += mms[k].n_out;
    }
    if (rows == 0 || n_tok == 0) return LODE_OK;
    int nth = lode_pool_size(pool);
    m.first[0] = 0;
    for (size_t k = 0; k < n_mm; k++) {
        size_t share = (m.jobs[k].n_out * 1024 + rows - 1) / rows;
        m.first[k + 1] = m.first[k] + (m.jobs[k].n_out ? mm_split(&m.jobs[k], nth, share) : 0);
    }
    lode_parallel_for(pool, m.first[n_mm], mm_multi_task, &m);
    return LODE_OK;
}

lode_status krn_matmul(lode_pool *pool, lode_dtype wt, const void *W, size_t n_out, size_t n_in,
                       const float *X, size_t ldx, size_t n_tok, float *Y, size_t ldy, void *ws,
                       size_t ws_size)
{
    if (!krn_weight_type_ok(wt)) return LODE_ERR_INVALID;
    if (is_float_type(wt)) return krn_matmul_q(pool, wt, W, n_out, n_in, X, ldx, n_tok, Y, ldy);
    lode_status rc = krn_quantize_acts(pool, wt, X, ldx, n_tok, n_in, ws, ws_size);
    if (rc != LODE_OK) return rc;
    return krn_matmul_q(pool, wt, W, n_out, n_in, ws, 0, n_tok, Y, ldy);
}

/* ---- f32 row operations ------------------------------------------------------------ */
/* As GGML's rms_norm followed by its mul: squares summed in double, the mean rounded to
 * float, x scaled first and multiplied by the weight second. */
void krn_rmsnorm(float *y, const float *x, const float *w, size_t n, float eps)
{
    const krn_ops *o = krn_ops_get();
    float mean = (float)(o->sumsq(x, n) / (double)n);
    float s = 1.f / sqrtf(mean + eps);
    o->mul_scale(y, x, w, s, n);
}

void krn_add_rmsnorm(float *y, float *x, const float *r, const float *w, size_t n, float eps)
{
    krn_ops_get()->add(x, x, r, n);
    krn_rmsnorm(y, x, w, n, eps);
}

/* As GGML's CPU rope: the angle of pair i is pos * base^(-2i/n_rot) built by repeated
 * float multiplication by theta_scale (not a power per pair), cosine and sine in float,
 * and each rotated value one fused multiply-add of a rounded product (as GCC contracts
 * GGML's x0*cos - x1*sin). */
size_t krn_rope_half(size_t head_dim, const krn_rope_params *p)
{
    size_t n_rot = p->n_rot ? p->n_rot : head_dim;
    if (n_rot > head_dim) n_rot = head_dim;
    return LODE_MIN(n_rot / 2, (size_t)256);
}

void krn_rope_angles(float *cs, float *sn, size_t head_dim, int64_t pos, const krn_rope_params *p)
{
    size_t n_rot = p->n_rot ? p->n_rot : head_dim;
    if (n_rot > head_dim) n_rot = head_dim;
    size_t half = krn_rope_half(head_dim, p);
    float scale = p->freq_scale > 0 ? p->freq_scale : 1.f;
    float theta_scale = powf(p->base, -2.0f / (float)n_rot);
    float theta = (float)pos;
    for (size_t i = 0; i < half; i++) {
        float ff = p->freq_factors ? p->freq_factors[i] : 1.0f;
        sincosf(scale * (theta / ff), &sn[i], &cs[i]);
        theta *= theta_scale;
    }
}

void krn_rope_apply(float *x, size_t n_head, size_t head_dim, const float *cs, const float *sn,
                    const krn_rope_params *p)
{
    krn_ops_get()->rope(x, n_head, head_dim, krn_rope_half(head_dim, p), p->neox, cs, sn);
}

void krn_rope(float *x, size_t n_head, size_t head_dim, int64_t pos, const krn_rope_params *p)
{
    float cs[256], sn[256];
    krn_rope_angles(cs, sn, head_dim, pos, p);
    krn_rope_apply(x, n_head, head_dim, cs, sn, p);
}

void krn_softmax(float *x, size_t n)
{
    if (n == 0) return;
    float m = x[0];
    for (size_t i = 1; i < n; i++) m = fmaxf(m, x[i]);
    float s = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    krn_ops_get()->scale(x, 1.f / s, n);
}

void krn_silu_mul(float *y, const float *g, const float *u, size_t n)
{
    krn_ops_get()->silu_mul(y, g, u, n);
}

void krn_add(float *y, const float *a, const float *b, size_t n)
{
    krn_ops_get()->add(y, a, b, n);
}

void krn_scale(float *x, float s, size_t n)
{
    krn_ops_get()->scale(x, s, n);
}

size_t krn_argmax(const float *x, size_t n)
{
    size_t best = 0;
    float bv = -INFINITY;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) continue;
        if (!found || x[i] > bv) {
            bv = x[i];
            best = i;
            found = 1;
        }
    }
    return best;
}

void krn_f16_to_f32(const lode_half *x, float *y, size_t n)
{
    krn_ops_get()->f16_to_f32(x, y, n);
}

void krn_f32_to_f16(const float *x, lode_half *y, size_t n)
{
    krn_ops_get()->f32_to_f16(x, y, n);
}

float krn_dot_f16_f32(const lode_half *x, const float *y, size_t n)
{
    return krn_ops_get()->dot_f16_f32(x, y, n);
}

/* ---- attention --------------------------------------------------------------------- */
static size_t kv_off(const int32_t *table, size_t n_kv_head, size_t head_dim, size_t kvh,
                     int64_t pos)
{
    size_t phys = (size_t)table[pos / KRN_KV_BLOCK];
    size_t slot = (size_t)(pos % KRN_KV_BLOCK);
    return ((phys * n_kv_head + kvh) * KRN_KV_BLOCK + slot) * head_dim;
}

void krn_kv_store(lode_half *k_cache, lode_half *v_cache, const int32_t *block_table,
                  size_t n_kv_head, size_t head_dim, int64_t pos, const float *k, const float *v)
{
    const krn_ops *o = krn_ops_get();
    for (size_t h = 0; h < n_kv_head; h++) {
        size_t off = kv_off(block_table, n_kv_head, head_dim, h, pos);
        o->f32_to_f16(k + h * head_dim, k_cache + off, head_dim);
        o->f32_to_f16(v + h * head_dim, v_cache + off, head_dim);
    }
}

/* Attention follows llama.cpp's CPU graph without flash attention, so that its roundings
 * are the same: q is rounded to half before q.k (the cache holds halves); the scores are
 * scaled in float, exponentiated as GGML's softmax does (exp_sum) and normalized by the
 * float of 1/sum; the probabilities are rounded to half before the product with V. Those
 * half x half products are exact in float, so each dot product is a sum of exact terms
 * whose order is GGML's (the caller says per position which, in several_end):
 *  - a step of several tokens (GGML's tinyBLAS): 16 partial sums, term i into sum i % 16
 *    in order, then the tree of _mm512_reduce_add_ps;
 *  - a single token (ggml_vec_dot_f16): 64 partial sums over the first n & ~63 terms (n
 *    padded as llama.cpp pads its KV view: to 32 tokens for V, the head size for K),
 *    folded to 16 as GGML's reduce does, the same tree, then the remaining terms added in
 *    double.
 * Terms of masked positions are zero in GGML and left out here. */
#define ATTN_MAX_CTX 32768

/* out[d] = the tree of _mm512_reduce_add_ps over the 16 partial sums p[i * hd + d] (i <
 * 16), for every d < hd at once: each d's sums in the tree's order, hd wide (p is
 * clobbered) */
static void tree16_rows(const krn_ops *o, float *out, float *p, size_t hd)
{
    for (size_t i = 0; i < 8; i++) o->add(p + i * hd, p + (i + 8) * hd, p + i * hd, hd);
    for (size_t i = 0; i < 4; i++) o->add(p + i * hd, p + (i + 4) * hd, p + i * hd, hd);
    o->add(p, p, p + 2 * hd, hd);
    o->add(p + hd, p + hd, p + 3 * hd, hd);
    o->add(out, p, p + hd, hd);
}

static void attn_one(const krn_attn_args *a, size_t task)
{
    const krn_ops *o = krn_ops_get();
    size_t qi = task / a->n_head, h = task % a->n_head;
    size_t hd = a->head_dim, kvh = h / (a->n_head / a->n_kv_head);
    size_t qs = a->q_stride ? a->q_stride : a->n_head * hd;
    size_t os = a->out_stride ? a->out_stride : a->n_head * hd;
    const float *q = a->q + qi * qs + h * hd;
    float *out = a->out + qi * os + h * hd;
    size_t n = (size_t)(a->pos0 + (int64_t)qi) + 1; /* keys 0..n-1 */
    int gemm = a->pos0 + (int64_t)qi < a->several_end;
    lode_half qh[512];
    float qf[512];
    float sc[ATTN_MAX_CTX + 16];
    lode_half ph[ATTN_MAX_CTX];
    o->f32_to_f16(q, qh, hd);
    o->f16_to_f32(qh, qf, hd);
    int kgemm = gemm && hd % 16 == 0; /* tinyBLAS needs k % 16 */
    float mx = -INFINITY;
    for (size_t j0 = 0; j0 < n; j0 += KRN_KV_BLOCK) {
        const lode_half *kb =
            a->k_cache + kv_off(a->block_table, a->n_kv_head, hd, kvh, (int64_t)j0);
        int ns = (int)LODE_MIN((size_t)KRN_KV_BLOCK, n - j0);
        if (o->kq_block)
            o->kq_block(kb, qf, hd, ns, kgemm, sc + j0);
        else
            for (int s = 0; s < ns; s++)
                sc[j0 + s] = o->dot_f16_ordered(kb + (size_t)s * hd, qf, hd, kgemm);
        for (int s = 0; s < ns; s++) {
            sc[j0 + s] *= a->scale;
            mx = fmaxf(mx, sc[j0 + s]);
        }
    }
    /* GGML exponentiates whole vectors; masked lanes give exactly 0 */
    size_t npad = (n + 15) & ~(size_t)15;
    for (size_t j = n; j < npad; j++) sc[j] = -INFINITY;
    double sum = o->exp_sum(sc, sc, mx, npad);
    float inv = (float)(1.0 / sum);
    o->scale(sc, inv, n);
    o->f32_to_f16(sc, ph, n);
    o->f16_to_f32(ph, sc, n);
    /* V: per output dim, the terms p_j * v_j[d] in GGML's order */
    int vgemm = gemm && hd % 4 == 0; /* tinyBLAS needs m % 4 */
    size_t n_kv = n < 32 ? 32 : (n + 31) & ~(size_t)31;
    size_t vnp = n_kv & ~(size_t)63;
    size_t ncls = vgemm ? 16 : 64, m = vgemm ? n : LODE_MIN(n, vnp);
    if (o->pv_ordered && hd % 16 == 0) {
        const lode_half *vblk[ATTN_MAX_CTX / KRN_KV_BLOCK];
        for (size_t j0 = 0; j0 < n; j0 += KRN_KV_BLOCK)
            vblk[j0 / KRN_KV_BLOCK] =
                a->v_cache + kv_off(a->block_table, a->n_kv_head, hd, kvh, (int64_t)j0);
        o->pv_ordered(out, sc, vblk, n, m, ncls, hd);
        return;
    }
    /* partial sums by class (j % ncls); p_j * v exact, so axpy's fma is the add */
    float part[64 * 512];
    memset(part, 0, ncls * hd * sizeof(float));
    for (size_t j0 = 0; j0 < m; j0 += KRN_KV_BLOCK) { /* a block's keys are consecutive classes */
        const lode_half *vb =
            a->v_cache + kv_off(a->block_table, a->n_kv_head, hd, kvh, (int64_t)j0);
        int ns = (int)LODE_MIN((size_t)KRN_KV_BLOCK, m - j0);
        float *pc = part + (j0 % ncls) * hd;
        if (o->pv_block)
            o->pv_block(pc, sc + j0, vb, hd, ns);
        else
            for (int s = 0; s < ns; s++)
                o->axpy_f16(pc + (size_t)s * hd, sc[j0 + s], vb + (size_t)s * hd, hd);
    }
    if (vgemm) {
        tree16_rows(o, out, part, hd);
        return;
    }
    /* GGML's fold of 64 sums to 16: (s[i] + s[32 + i]) + (s[16 + i] + s[48 + i]) */
    for (size_t i = 0; i < 16; i++) {
        o->add(part + i * hd, part + i * hd, part + (32 + i) * hd, hd);
        o->add(part + (16 + i) * hd, part + (16 + i) * hd, part + (48 + i) * hd, hd);
        o->add(part + i * hd, part + i * hd, part + (16 + i) * hd, hd);
    }
    tree16_rows(o, out, part, hd);
    if (m < n) { /* per d in the order of j, a row of V at a time */
        double s[512];
        float vf[512];
        for (size_t d = 0; d < hd; d++) s[d] = out[d];
        for (size_t j = m; j < n; j++) {
            o->f16_to_f32(a->v_cache + kv_off(a->block_table, a->n_kv_head, hd, kvh, (int64_t)j),
                          vf, hd);
            float p = sc[j];
            size_t d = 0;
            for (; d + 16 <= hd; d += 16)
                for (size_t k = 0; k < 16; k++) s[d + k] += (double)(p * vf[d + k]);
            for (; d < hd; d++) s[d] += (double)(p * vf[d]);
        }
        for (size_t d = 0; d < hd; d++) out[d] = (float)s[d];
    }
}

static int attn_args_ok(const krn_attn_args *a)
{
    return a && a->q && a->k_cache && a->v_cache && a->block_table && a->out && a->head_dim != 0 &&
           a->head_dim <= 512 && a->n_kv_head != 0 && a->n_head != 0 &&
           a->n_head % a->n_kv_head == 0 && a->pos0 >= 0 &&
           a->pos0 + (int64_t)a->n_q <= ATTN_MAX_CTX;
}

static void attn_task(void *ctx, size_t task, int thread)
{
    attn_one(ctx, task);
}

lode_status krn_attention(lode_pool *pool, const krn_attn_args *a)
{
    if (!attn_args_ok(a)) return LODE_ERR_INVALID;
    lode_parallel_for(pool, a->n_q * a->n_head, attn_task, (void *)a);
    return LODE_OK;
}

#define ATTN_MANY_MAX 256 /* attentions per parallel region */

typedef struct attn_many {
    const krn_attn_args *a;
    size_t first[ATTN_MANY_MAX + 1]; /* first task of each attention; first[n] = total */
    size_t n;
} attn_many;

static void attn_many_task(void *ctx, size_t task, int thread)
{
    const attn_many *m = ctx;
    size_t lo = 0, hi = m->n; /* the k with first[k] <= task < first[k + 1] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (m->first[mid] <= task)
            lo = mid;
        else
            hi = mid;
    }
    attn_one(&m->a[lo], task - m->first[lo]);
}

lode_status krn_attention_many(lode_pool *pool, const krn_attn_args *a, size_t n)
{
    if (n && !a) return LODE_ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        if (!attn_args_ok(&a[i])) return LODE_ERR_INVALID;
    attn_many m;
    for (size_t i0 = 0; i0 < n; i0 += ATTN_MANY_MAX) {
        m.a = a + i0;
        m.n = LODE_MIN((size_t)ATTN_MANY_MAX, n - i0);
        m.first[0] = 0;
        for (size_t k = 0; k < m.n; k++) m.first[k + 1] = m.first[k] + m.a[k].n_q * m.a[k].n_head;
        lode_parallel_for(pool, m.first[m.n], attn_many_task, &m);
    }
    return LODE_OK;
}
