/*
 * backend_cuda.c: the llama-family decoder on one GPU (see backend_cuda.h). Everything the
 * model touches per token is allocated in eng_cuda_model_create; the decode step is captured
 * once per (batch, sampling) as a CUDA graph whose state (tokens, positions, cache slots,
 * step counter) lives on the device and is advanced by the graph itself, so queued steps
 * need no host round trip. A batch-1 step whose sequence fits krn_cuda_attn_o (256 tokens at
 * head size 128, 512 at 64) runs four kernels a layer, attention and o in one cluster kernel,
 * and is captured apart from the longer steps, which attend with the split kernel.
 */
#include "engine/backend_cuda.h"

#include "engine/backend.h"
#include "engine/gguf.h"

#include "kernels/quant.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if LODE_CUDA

#include "kernels/cuda/cuda_kernels.h"

#define HIST_ROWS  4096 /* decode steps whose tokens stay readable */
#define MAX_GRAPHS 8

typedef struct layer {
    krn_cuda_mat qkv;  /* [q | k | v] rows, or only the leading parts whose type matched */
    krn_cuda_mat k, v; /* separate when their type differs from q's */
    krn_cuda_mat o;
    krn_cuda_mat gu; /* [gate | up], or gate alone */
    krn_cuda_mat up; /* separate when its type differs from gate's */
    krn_cuda_mat down;
    float *attn_norm, *ffn_norm;
    int k_fused, v_fused, up_fused;
    unsigned set;  /* bit per eng_cuda_wkind */
    void *kc, *vc; /* f16 [n_blocks][KV][KV_BLOCK][hd] */
} layer;

typedef struct graph {
    void *exec;
    int batch;
    eng_cuda_sampling s;
    int ao; /* the layers attend with krn_cuda_attn_o */
} graph;

struct eng_cuda_model {
    eng_cuda_config c;
    char err[256];
    void *stream;
    krn_cuda_blas *blas;
    void *ev[2];
    int ev_n;
    krn_cuda_mat tok_embd, output;
    float *output_norm;
    unsigned gset;
    layer *L;
    int maxb, nsplit, act_f16, ready;
    int32_t *bt, *bt_host; /* block table [max_seqs][maxb] (device, host mirror) */
    /* activations */
    float *x, *qkv, *q32, *gu, *logits, *acc, *ml, *inv_freq, *lp;
    void *qh, *attn_out, *act, *scratch;
    size_t scratch_bytes;
    /* per-sequence decode state on the device */
    int32_t *d_tokens, *d_pos, *d_slot, *d_seqlen, *d_chosen, *d_pf, *d_hist;
    uint32_t *d_step, *d_step_pf;
    int32_t *h_stage; /* pinned */
    int *len;         /* host: tokens cached per sequence */
    uint64_t steps_total;
    int hist_batch;
    graph g[MAX_GRAPHS];
    int ng;
    /* batched steps (eng_cuda_step): the batch's integers at fixed offsets (see sv_off) on
     * the device and pinned on the host; the decode-only steps' graphs by batch size */
    int n_blocks;    /* blocks of the KV pool */
    size_t kv_bytes; /* their bytes, every layer */
    int32_t *sv_d, *sv_h, *sv_map;
    int32_t *sv_tok;
    float *sv_lp;
    void *sv_graph[KRN_CUDA_MAX_BATCH + 1];
    void *sv_graph_ao; /* the single-sequence decode step on krn_cuda_attn_o */
    int gemv_max;      /* decode-only steps of at most this many tokens run the GEMV graph */
    unsigned dg_tuned; /* bit b: the decoder's batch-b GEMM layers were tuned */
    /* decode-only steps of more tokens: graphs of the GEMM step by padded size */
    int gg_n, gg_next, gg_size[32];
    int gg_off;   /* decode GEMM steps run eagerly (LODE_CUDA_STEP_GRAPH=0, or a capture failed) */
    int gg_tuned; /* every step size's GEMMs were tuned (eng_cuda_model_tune) */
    unsigned char gb_tuned[160]; /* else: decode bucket i's GEMMs were (step_bucket_index) */
    /* steps of at least this many single-token rows attend with krn_cuda_attn_decode_rows
     * (LODE_CUDA_ATTN_ROWS, default 2: on an H200 it beat the split kernel at 4 and 16
     * sequences of 128..256 tokens too, 755 / 2768 against 726 / 2507 output tok/s); fewer
     * take the split kernel */
    int rows_min;
    void *gg_exec[32];
    int prof_min;   /* profile one eager step of at least this many tokens (0: never) */
    int prof_mixed; /* the same for a step with prefill chunks (LODE_CUDA_STEP_PROFILE_MIXED) */
    /* batch-1 decode steps run every layer in one persistent kernel (krn_cuda_layers_decode)
     * when persist is 1 (its layer table and grid-barrier words on the device), or each layer
     * as one cluster kernel (krn_cuda_clayer_decode) when it is 2 */
    krn_cuda_layer *d_layers;
    unsigned *d_bar;
    int persist;
    /* batch-1 decode steps of sequences of at most ao_len tokens attend and project with
     * one kernel a layer (krn_cuda_attn_o) when ao_ok; ao is the choice of the step being
     * recorded */
    int ao_ok, ao_len, ao;
    /* per-op timing of an eager decode step (eng_cuda_profile) */
    void **pev;
    const char **pname;
    int pn, pcap, prof;
};

/* Records an event after an op when profiling (not during graph capture). */
static void prof_mark(eng_cuda_model *m, const char *name)
{
    if (!m->prof || m->pn >= m->pcap) return;
    if (!krn_cuda_event_record(m->pev[m->pn], m->stream)) m->pname[m->pn++] = name;
}

static char create_err[256];

static lode_status fail(eng_cuda_model *m, lode_status st, const char *what)
{
    char *dst = m ? m->err : create_err;
    size_t n = m ? sizeof m->err : sizeof create_err;
    const char *detail = st == LODE_ERR_CUDA || st == LODE_ERR_NOMEM ? krn_cuda_errmsg() : "";
    return lode_seterr(dst, n, st, "%s%s%s", what, *detail ? ": " : "", detail);
}

#define TRY(m, call, what)                                                                         \
    do {                                                                                           \
        lode_status st_ = (call);                                                                  \
        if (st_ != LODE_OK) return fail((m), st_, (what));                                         \
    } while (0)

int eng_cuda_available(void)
{
    return krn_cuda_device_count() > 0;
}

const char *eng_cuda_errmsg(const eng_cuda_model *m)
{
    return m ? m->err : create_err;
}

static const krn_cuda_mat *head(const eng_cuda_model *m);

static int qkv_rows(const eng_cuda_config *c)
{
    return (c->n_head + 2 * c->n_kv_head) * c->head_dim;
}

/* Offsets of a batched step's integers in sv_d/sv_h, fixed so that captured graphs stay
 * valid: tokens, positions, cache slots and device rows of the logits rows (step_tokens
 * each), decode lengths and prefill descriptors (step_seqs, 4 x step_seqs), block tables
 * (step_seqs rows of maxb). */
enum { SV_TOK, SV_POS, SV_SLOT, SV_ROWS, SV_LEN, SV_VL, SV_BT };

static size_t sv_off(const eng_cuda_model *m, int what)
{
    size_t T = (size_t)m->c.step_tokens, S = (size_t)m->c.step_seqs;
    size_t off[] = {0, T, 2 * T, 3 * T, 4 * T, 4 * T + S, 4 * T + 5 * S};
    return off[what];
}

static size_t sv_ints(const eng_cuda_model *m)
{
    return sv_off(m, SV_BT) + (size_t)m->c.step_seqs * (size_t)m->maxb;
}

static lode_status dmalloc(eng_cuda_model *m, void *pp, size_t n)
{
    void **p = (void **)pp;
    lode_status st = krn_cuda_malloc(p, n);
    if (st) return fail(m, st, "GPU allocation");
    return LODE_OK;
}

/* Most pieces a decode attention splits a sequence into: KRN_CUDA_ATTN_SPLITS, or
 * LODE_CUDA_ATTN_SPLITS (1..KRN_CUDA_ATTN_SPLITS, read once) to measure the trade between
 * attention's parallelism and the combine in the o projection's input stage. */
static int attn_splits(void)
{
    static int n = 0;
    if (!n) {
        const char *e = getenv("LODE_CUDA_ATTN_SPLITS");
        n = e ? atoi(e) : KRN_CUDA_ATTN_SPLITS;
        if (n < 1 || n > KRN_CUDA_ATTN_SPLITS) n = KRN_CUDA_ATTN_SPLITS;
    }
    return n;
}

lode_status eng_cuda_model_create(const eng_cuda_config *c, int device, eng_cuda_model **out)
{
    *out = NULL;
    if (c->n_layer <= 0 || c->dim <= 0 || c->n_head <= 0 || c->n_kv_head <= 0 ||
        c->n_head % c->n_kv_head || c->head_dim <= 0 || c->ff <= 0 || c->vocab <= 0 ||
        c->max_ctx <= 0 || c->max_seqs <= 0 || c->max_seqs > KRN_CUDA_MAX_BATCH ||
        c->max_prefill <= 0 || c->n_head * 2 > 128 || c->step_tokens < 0 ||
        (c->step_tokens > 0 && (c->step_seqs <= 0 || c->step_seqs > c->step_tokens ||
                                c->step_out <= 0 || c->step_out > c->step_tokens)))
        return fail(NULL, LODE_ERR_INVALID, "CUDA model: bad configuration");
    if (c->head_dim != 64 && c->head_dim != 128)
        return fail(NULL, LODE_ERR_UNSUPPORTED, "CUDA model: head_dim must be 64 or 128");
    krn_cuda_devinfo di;
    if (krn_cuda_device_count() <= device)
        return fail(NULL, LODE_ERR_UNSUPPORTED, "CUDA model: no such GPU");
    lode_status st = krn_cuda_device_info(device, &di);
    if (st) return fail(NULL, st, "CUDA device");
    if ((st = krn_cuda_prepare())) return fail(NULL, st, "CUDA setup");

    eng_cuda_model *m = lode_calloc(1, sizeof *m);
    if (!m) return LODE_ERR_NOMEM;
    m->c = *c;
    m->c.rope_freq_factors = NULL;
    m->L = lode_calloc((size_t)c->n_layer, sizeof *m->L);
    m->len = lode_calloc((size_t)c->max_seqs, sizeof *m->len);
    m->bt_host = lode_calloc((size_t)c->max_seqs * ((c->max_ctx + 15) / 16), sizeof(int32_t));
    if (!m->L || !m->len || !m->bt_host) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    if ((st = krn_cuda_stream_create(&m->stream)) ||
        (st = krn_cuda_blas_create(&m->blas, m->stream)) ||
        (st = krn_cuda_event_create(&m->ev[0])) || (st = krn_cuda_event_create(&m->ev[1]))) {
        fail(m, st, "CUDA stream/cuBLAS");
        goto out;
    }
    const int H = c->n_head, KV = c->n_kv_head, hd = c->head_dim;
    /* S: rows of decode state and attention partials, P: rows of the prefill/step buffers,
     * O: logits rows */
    const size_t S = (size_t)LODE_MAX(c->max_seqs, c->step_seqs);
    const size_t P = (size_t)LODE_MAX(c->max_prefill, c->step_tokens);
    const size_t O = (size_t)LODE_MAX(c->max_seqs, c->step_out);
    const size_t T = LODE_MAX(S, P);
    m->maxb = (c->max_ctx + KRN_CUDA_KV_BLOCK - 1) / KRN_CUDA_KV_BLOCK;
    m->nsplit = LODE_MIN(attn_splits(), (c->max_ctx + 31) / 32);
    size_t wmax = (size_t)LODE_MAX(LODE_MAX(c->dim, c->ff), H * hd);
    if ((st = dmalloc(m, &m->x, T * c->dim * 4)) ||
        (st = dmalloc(m, &m->qkv, P * qkv_rows(c) * 4)) ||
        (st = dmalloc(m, &m->q32, S * H * hd * 4)) ||
        (st = dmalloc(m, &m->gu, T * 2 * c->ff * 4)) ||
        (st = dmalloc(m, &m->logits, O * c->vocab * 4)) ||
        (st = dmalloc(m, &m->acc, S * H * m->nsplit * hd * 4)) ||
        (st = dmalloc(m, &m->ml, S * H * m->nsplit * 2 * 4)) ||
        (st = dmalloc(m, &m->inv_freq, (size_t)hd / 2 * 4)) || (st = dmalloc(m, &m->lp, S * 4)) ||
        (st = dmalloc(m, &m->qh, P * H * hd * 2)) ||
        (st = dmalloc(m, &m->attn_out, P * H * hd * 2)) ||
        (st = dmalloc(m, &m->act, P * wmax * 2)) || (st = dmalloc(m, &m->d_tokens, S * 4)) ||
        (st = dmalloc(m, &m->d_pos, S * 4)) || (st = dmalloc(m, &m->d_slot, S * 4)) ||
        (st = dmalloc(m, &m->d_seqlen, S * 4)) || (st = dmalloc(m, &m->d_chosen, S * 4)) ||
        (st = dmalloc(m, &m->d_pf, (3 * P + 16) * 4)) ||
        (st = dmalloc(m, &m->d_hist, (size_t)HIST_ROWS * S * 4)) ||
        (st = dmalloc(m, &m->d_step, 4)) || (st = dmalloc(m, &m->d_step_pf, 4)))
        goto out;
    if (c->step_tokens > 0) {
        size_t n = sv_ints(m);
        if ((st = dmalloc(m, &m->sv_d, n * 4)) || (st = dmalloc(m, &m->sv_tok, O * 4)) ||
            (st = dmalloc(m, &m->sv_lp, O * 4)))
            goto out;
        if ((st = krn_cuda_host_alloc((void **)&m->sv_h, n * 4)) ||
            !(m->sv_map = lode_malloc((size_t)c->step_tokens * 4))) {
            fail(m, st ? st : LODE_ERR_NOMEM, "pinned memory");
            if (!st) st = LODE_ERR_NOMEM;
            goto out;
        }
    }
    /* the KV pool last, from what is left when it is sized by free memory */
    size_t block_bytes = (size_t)KV * KRN_CUDA_KV_BLOCK * hd * 2 * 2 * (size_t)c->n_layer;
    size_t nblocks = (size_t)c->max_seqs * (size_t)m->maxb;
    if (c->kv_blocks > 0) {
        nblocks = LODE_MAX(nblocks, (size_t)c->kv_blocks);
    } else if (c->kv_blocks < 0) {
        krn_cuda_devinfo now;
        if ((st = krn_cuda_device_info(device, &now))) {
            fail(m, st, "CUDA device");
            goto out;
        }
        size_t avail = now.mem_free > c->kv_keep ? now.mem_free - c->kv_keep : 0;
        /* per-layer allocations round up; keep 2% for that and fragmentation */
        size_t fit = (size_t)((double)avail * 0.98) / block_bytes;
        if (fit < nblocks) {
            st = fail(m, LODE_ERR_NOMEM, "CUDA model: no GPU memory left for the KV cache");
            goto out;
        }
        nblocks = LODE_MIN(fit, (size_t)1 << 24);
    }
    m->n_blocks = (int)nblocks;
    m->kv_bytes = nblocks * block_bytes;
    size_t kv_bytes = nblocks * KV * KRN_CUDA_KV_BLOCK * hd * 2;
    for (int l = 0; l < c->n_layer; l++) {
        if ((st = dmalloc(m, &m->L[l].kc, kv_bytes)) || (st = dmalloc(m, &m->L[l].vc, kv_bytes)))
            goto out;
    }
    if ((st = krn_cuda_host_alloc((void **)&m->h_stage, (3 * P + 64) * 4))) {
        fail(m, st, "pinned memory");
        goto out;
    }
    /* a fixed block table: sequence s owns blocks [s*maxb, (s+1)*maxb) */
    const size_t S0 = (size_t)c->max_seqs;
    for (size_t s = 0; s < S0; s++)
        for (int b = 0; b < m->maxb; b++) m->bt_host[s * m->maxb + b] = (int32_t)(s * m->maxb + b);
    if ((st = dmalloc(m, &m->bt, S0 * m->maxb * 4))) goto out;
    float *inv = lode_malloc((size_t)hd / 2 * sizeof(float));
    if (!inv) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < hd / 2; i++) {
        inv[i] = (float)pow((double)c->rope_theta, -2.0 * i / hd);
        if (c->rope_freq_factors) inv[i] /= c->rope_freq_factors[i];
    }
    st = krn_cuda_h2d(m->inv_freq, inv, (size_t)hd / 2 * 4, m->stream);
    if (!st) st = krn_cuda_h2d(m->bt, m->bt_host, S0 * m->maxb * 4, m->stream);
    if (!st) st = krn_cuda_memset(m->d_step, 0, 4, m->stream);
    if (!st) st = krn_cuda_memset(m->d_slot, 0xff, S * 4, m->stream);
    if (!st) st = krn_cuda_stream_sync(m->stream);
    lode_free(inv);
    if (st) {
        fail(m, st, "CUDA upload");
        goto out;
    }
    *out = m;
    m = NULL;
out:
    if (m) {
        memcpy(create_err, m->err, sizeof create_err);
        eng_cuda_model_destroy(m);
    }
    return st;
}

void eng_cuda_model_destroy(eng_cuda_model *m)
{
    if (!m) return;
    if (m->stream) krn_cuda_stream_sync(m->stream);
    for (int i = 0; i < m->ng; i++) krn_cuda_graph_destroy(m->g[i].exec);
    for (int i = 0; i <= KRN_CUDA_MAX_BATCH; i++) krn_cuda_graph_destroy(m->sv_graph[i]);
    krn_cuda_graph_destroy(m->sv_graph_ao);
    for (int i = 0; i < m->gg_n; i++) krn_cuda_graph_destroy(m->gg_exec[i]);
    if (m->L) {
        for (int l = 0; l < m->c.n_layer; l++) {
            layer *L = &m->L[l];
            krn_cuda_mat_free(&L->qkv);
            krn_cuda_mat_free(&L->k);
            krn_cuda_mat_free(&L->v);
            krn_cuda_mat_free(&L->o);
            krn_cuda_mat_free(&L->gu);
            krn_cuda_mat_free(&L->up);
            krn_cuda_mat_free(&L->down);
            krn_cuda_free(L->attn_norm);
            krn_cuda_free(L->ffn_norm);
            krn_cuda_free(L->kc);
            krn_cuda_free(L->vc);
        }
    }
    krn_cuda_mat_free(&m->tok_embd);
    krn_cuda_mat_free(&m->output);
    krn_cuda_free(m->output_norm);
    void *bufs[] = {m->x,       m->qkv,      m->q32,      m->gu,        m->logits,   m->acc,
                    m->ml,      m->inv_freq, m->lp,       m->qh,        m->attn_out, m->act,
                    m->scratch, m->d_tokens, m->d_pos,    m->d_slot,    m->d_seqlen, m->d_chosen,
                    m->d_pf,    m->d_hist,   m->d_step,   m->d_step_pf, m->bt,       m->sv_d,
                    m->sv_tok,  m->sv_lp,    m->d_layers, m->d_bar};
    for (size_t i = 0; i < LODE_ARRAY_LEN(bufs); i++) krn_cuda_free(bufs[i]);
    krn_cuda_host_free(m->h_stage);
    krn_cuda_host_free(m->sv_h);
    lode_free(m->sv_map);
    for (int i = 0; i < m->pcap; i++) krn_cuda_event_destroy(m->pev[i]);
    lode_free(m->pev);
    lode_free(m->pname);
    krn_cuda_event_destroy(m->ev[0]);
    krn_cuda_event_destroy(m->ev[1]);
    krn_cuda_blas_destroy(m->blas);
    krn_cuda_stream_destroy(m->stream);
    lode_free(m->L);
    lode_free(m->len);
    lode_free(m->bt_host);
    lode_free(m);
}

/* ---- weights --------------------------------------------------------------------------- */

static void wshape(const eng_cuda_config *c, eng_cuda_wkind k, int64_t *rows, int64_t *cols)
{
    int64_t D = c->dim, Q = (int64_t)c->n_head * c->head_dim,
            KVd = (int64_t)c->n_kv_head * c->head_dim;
    *cols = D;
    switch (k) {
    case ENG_CW_TOK_EMBD:
    case ENG_CW_OUTPUT:
        *rows = c->vocab;
        break;
    case ENG_CW_Q:
        *rows = Q;
        break;
    case ENG_CW_K:
    case ENG_CW_V:
        *rows = KVd;
        break;
    case ENG_CW_O:
        *rows = D;
        *cols = Q;
        break;
    case ENG_CW_GATE:
    case ENG_CW_UP:
        *rows = c->ff;
        break;
    case ENG_CW_DOWN:
        *rows = D;
        *cols = c->ff;
        break;
    default:
        *rows = 1; /* norms: a vector of dim */
        break;
    }
}

/* Allocates (when needed) and uploads a matrix; `tmp` sized by the caller. */
static lode_status put_mat(eng_cuda_model *m, krn_cuda_mat *mat, int dtype, int64_t rows,
                           int64_t cols, int64_t row0, int64_t nrows, const void *data)
{
    lode_status st;
    if (!mat->fmt && (st = krn_cuda_mat_alloc(mat, dtype, rows, cols)))
        return fail(m, st, "weight");
    if (mat->dtype != dtype) return fail(m, LODE_ERR_INTERNAL, "weight type mismatch");
    cols = mat->cols;
    void *tmp = NULL;
    size_t need = krn_cuda_ggml_bytes(dtype, nrows, cols);
    if ((st = dmalloc(m, &tmp, need))) return st;
    st = krn_cuda_mat_upload(mat, row0, nrows, data, tmp, m->stream);
    if (!st) st = krn_cuda_stream_sync(m->stream);
    krn_cuda_free(tmp);
    if (st) return fail(m, st, "weight upload");
    return LODE_OK;
}

static lode_status put_norm(eng_cuda_model *m, float **dst, const void *data, int dim)
{
    lode_status st;
    if (!*dst && (st = dmalloc(m, dst, (size_t)dim * 4))) return st;
    TRY(m, krn_cuda_h2d(*dst, data, (size_t)dim * 4, m->stream), "norm upload");
    TRY(m, krn_cuda_stream_sync(m->stream), "norm upload");
    return LODE_OK;
}

lode_status eng_cuda_model_set_weight(eng_cuda_model *m, eng_cuda_wkind kind, int layer_i,
                                      int dtype, const void *data, size_t nbytes)
{
    const eng_cuda_config *c = &m->c;
    int per_layer = kind >= ENG_CW_ATTN_NORM;
    if ((unsigned)kind >= ENG_CW_COUNT || (per_layer && (layer_i < 0 || layer_i >= c->n_layer)))
        return fail(m, LODE_ERR_INVALID, "set_weight: bad kind or layer");
    int64_t rows, cols;
    wshape(c, kind, &rows, &cols);
    int is_norm = kind == ENG_CW_OUTPUT_NORM || kind == ENG_CW_ATTN_NORM || kind == ENG_CW_FFN_NORM;
    if (is_norm) {
        if (dtype != LODE_F32 || nbytes != (size_t)c->dim * 4)
            return fail(m, LODE_ERR_FORMAT, "set_weight: norms must be f32 [dim]");
    } else {
        if (!krn_cuda_dtype_supported(dtype))
            return fail(m, LODE_ERR_UNSUPPORTED, "set_weight: weight type has no CUDA kernel");
        if (nbytes != krn_cuda_ggml_bytes(dtype, rows, cols))
            return fail(m, LODE_ERR_FORMAT, "set_weight: size does not match the shape");
    }
    m->ready = 0;
    layer *L = per_layer ? &m->L[layer_i] : NULL;
    int64_t Q = (int64_t)c->n_head * c->head_dim, KVd = (int64_t)c->n_kv_head * c->head_dim;
    lode_status st = LODE_OK;
    switch (kind) {
    case ENG_CW_TOK_EMBD:
        st = put_mat(m, &m->tok_embd, dtype, rows, cols, 0, rows, data);
        break;
    case ENG_CW_OUTPUT:
        st = put_mat(m, &m->output, dtype, rows, cols, 0, rows, data);
        break;
    case ENG_CW_OUTPUT_NORM:
        st = put_norm(m, &m->output_norm, data, c->dim);
        break;
    case ENG_CW_ATTN_NORM:
        st = put_norm(m, &L->attn_norm, data, c->dim);
        break;
    case ENG_CW_FFN_NORM:
        st = put_norm(m, &L->ffn_norm, data, c->dim);
        break;
    case ENG_CW_Q:
        st = put_mat(m, &L->qkv, dtype, qkv_rows(c), cols, 0, rows, data);
        break;
    case ENG_CW_K:
    case ENG_CW_V: {
        int is_k = kind == ENG_CW_K;
        if (!(L->set & (1u << ENG_CW_Q)))
            return fail(m, LODE_ERR_INVALID, "set_weight: set attn_q before attn_k/attn_v");
        int fuse = L->qkv.dtype == dtype && (is_k || L->k_fused);
        if (fuse) {
            st = put_mat(m, &L->qkv, dtype, 0, 0, Q + (is_k ? 0 : KVd), rows, data);
            if (is_k)
                L->k_fused = 1;
            else
                L->v_fused = 1;
        } else {
            st = put_mat(m, is_k ? &L->k : &L->v, dtype, rows, cols, 0, rows, data);
        }
        break;
    }
    case ENG_CW_O:
        st = put_mat(m, &L->o, dtype, rows, cols, 0, rows, data);
        break;
    case ENG_CW_GATE:
        st = put_mat(m, &L->gu, dtype, 2 * rows, cols, 0, rows, data);
        break;
    case ENG_CW_UP:
        if (!(L->set & (1u << ENG_CW_GATE)))
            return fail(m, LODE_ERR_INVALID, "set_weight: set ffn_gate before ffn_up");
        if (L->gu.dtype == dtype) {
            st = put_mat(m, &L->gu, dtype, 0, 0, rows, rows, data);
            L->up_fused = 1;
        } else {
            st = put_mat(m, &L->up, dtype, rows, cols, 0, rows, data);
        }
        break;
    case ENG_CW_DOWN:
        st = put_mat(m, &L->down, dtype, rows, cols, 0, rows, data);
        break;
    default:
        break;
    }
    if (st) return st;
    if (L)
        L->set |= 1u << kind;
    else
        m->gset |= 1u << kind;
    return LODE_OK;
}

const eng_cuda_config *eng_cuda_model_config(const eng_cuda_model *m)
{
    return &m->c;
}

int eng_cuda_gguf_supported(eng_gguf *g)
{
    const char *arch = NULL, *stype = NULL;
    uint32_t D = 0, H = 0, hd = 0, rot = 0;
    float lin = 1.f;
    if (!eng_cuda_available()) return 0;
    if (eng_gguf_get_str(g, "general.architecture", &arch, NULL) || strcmp(arch, "llama") ||
        eng_gguf_get_u32(g, "llama.embedding_length", &D) ||
        eng_gguf_get_u32(g, "llama.attention.head_count", &H) || H == 0 || D % H)
        return 0;
    if (eng_gguf_get_u32(g, "llama.attention.key_length", &hd)) hd = D / H;
    if (eng_gguf_get_u32(g, "llama.rope.dimension_count", &rot)) rot = hd;
    if (hd != D / H || (hd != 64 && hd != 128) || rot != hd) return 0;
    if (!eng_gguf_get_str(g, "llama.rope.scaling.type", &stype, NULL) && strcmp(stype, "none"))
        return 0;
    if (!eng_gguf_get_f32(g, "llama.rope.scale_linear", &lin) && lin != 1.f) return 0;
    const eng_gguf_tensor *ff = eng_gguf_find_tensor(g, "rope_freqs.weight");
    if (ff && (ff->type != LODE_F32 || ff->n_elems != hd / 2)) return 0;
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        size_t n = strlen(t->name);
        if (n > 5 && !strcmp(t->name + n - 5, ".bias")) return 0;
        if (t->n_dims == 2 && !krn_cuda_dtype_supported(t->type)) return 0;
    }
    return 1;
}

lode_status eng_cuda_model_from_gguf(const char *path, int max_ctx, int max_seqs, int max_prefill,
                                     int device, eng_cuda_model **out, char *err, size_t errlen)
{
    eng_cuda_config z;
    memset(&z, 0, sizeof z);
    z.max_ctx = max_ctx;
    z.max_seqs = max_seqs;
    z.max_prefill = max_prefill;
    return eng_cuda_model_open(path, &z, device, out, err, errlen);
}

/* GPU bytes the weights of g take, with the largest dequantization scratch, cuBLAS and a
 * margin: what a KV pool sized by free memory leaves. */
static size_t weights_keep(eng_gguf *g)
{
    size_t w = 0, scr = 0;
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        w += (size_t)t->nbytes + (size_t)t->nbytes / 16; /* repacked scales, alignment */
        if (t->n_dims == 2 && t->type != LODE_BF16 && t->type != LODE_F16)
            scr = LODE_MAX(scr, (size_t)t->n_elems * 2);
    }
    return w + scr + ((size_t)1 << 30);
}

lode_status eng_cuda_model_open(const char *path, const eng_cuda_config *sizes, int device,
                                eng_cuda_model **out, char *err, size_t errlen)
{
    *out = NULL;
    int max_ctx = sizes->max_ctx, max_seqs = sizes->max_seqs, max_prefill = sizes->max_prefill;
    eng_gguf *g = NULL;
    eng_cuda_model *m = NULL;
    lode_status st = eng_gguf_open(path, &g, err, errlen);
    if (st) return st;
    const char *arch = NULL;
    uint32_t D = 0, L = 0, F = 0, H = 0, KV = 0;
    float theta = 10000.f, eps = 1e-5f;
    if (eng_gguf_get_str(g, "general.architecture", &arch, NULL) || strcmp(arch, "llama")) {
        st = lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED, "%s: not a llama GGUF", path);
        goto out;
    }
    if (eng_gguf_get_u32(g, "llama.embedding_length", &D) ||
        eng_gguf_get_u32(g, "llama.block_count", &L) ||
        eng_gguf_get_u32(g, "llama.feed_forward_length", &F) ||
        eng_gguf_get_u32(g, "llama.attention.head_count", &H)) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT, "%s: llama.* sizes missing", path);
        goto out;
    }
    if (eng_gguf_get_u32(g, "llama.attention.head_count_kv", &KV)) KV = H;
    eng_gguf_get_f32(g, "llama.rope.freq_base", &theta);
    eng_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps);
    const eng_gguf_tensor *emb = eng_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || H == 0 || D % H) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT, "%s: token_embd.weight missing or bad heads",
                         path);
        goto out;
    }
    const eng_gguf_tensor *outw = eng_gguf_find_tensor(g, "output.weight");
    const eng_gguf_tensor *ff = eng_gguf_find_tensor(g, "rope_freqs.weight");
    const float *factors =
        ff && ff->type == LODE_F32 && ff->n_elems == D / H / 2 ? (const float *)ff->data : NULL;
    eng_cuda_config c = {(int)L,
                         (int)D,
                         (int)H,
                         (int)KV,
                         (int)(D / H),
                         (int)F,
                         (int)emb->ne[1],
                         eps,
                         theta,
                         factors,
                         outw == NULL,
                         max_ctx,
                         max_seqs,
                         max_prefill,
                         0,
                         0,
                         0,
                         0,
                         0};
    c.step_tokens = sizes->step_tokens;
    c.step_seqs = sizes->step_seqs;
    c.step_out = sizes->step_out;
    c.kv_blocks = sizes->kv_blocks;
    c.kv_keep = sizes->kv_keep + (sizes->kv_blocks < 0 ? weights_keep(g) : 0);
    if ((st = eng_cuda_model_create(&c, device, &m))) {
        lode_seterr(err, errlen, st, "%s", eng_cuda_errmsg(NULL));
        goto out;
    }
    static const char *const names[ENG_CW_COUNT] = {
        "token_embd", "output_norm", "output",   "attn_norm", "attn_q", "attn_k",
        "attn_v",     "attn_output", "ffn_norm", "ffn_gate",  "ffn_up", "ffn_down"};
    for (int k = 0; k < ENG_CW_COUNT; k++) {
        int per = k >= ENG_CW_ATTN_NORM;
        if (k == ENG_CW_OUTPUT && !outw) continue;
        for (int l = 0; l < (per ? (int)L : 1); l++) {
            char nm[96];
            if (per)
                snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, names[k]);
            else
                snprintf(nm, sizeof nm, "%s.weight", names[k]);
            const eng_gguf_tensor *t = eng_gguf_find_tensor(g, nm);
            if (!t) {
                st = lode_seterr(err, errlen, LODE_ERR_FORMAT, "%s: tensor %s missing", path, nm);
                goto out;
            }
            if ((st = eng_cuda_model_set_weight(m, (eng_cuda_wkind)k, l, t->type, t->data,
                                                t->nbytes))) {
                lode_seterr(err, errlen, st, "%s: %s", nm, eng_cuda_errmsg(m));
                goto out;
            }
        }
    }
    if ((st = eng_cuda_model_ready(m))) {
        lode_seterr(err, errlen, st, "%s", eng_cuda_errmsg(m));
        goto out;
    }
    *out = m;
    m = NULL;
out:
    eng_cuda_model_destroy(m);
    eng_gguf_close(g);
    return st;
}

lode_status eng_cuda_model_random(eng_cuda_model *m, int dtype, uint64_t seed)
{
    const eng_cuda_config *c = &m->c;
    if (!krn_cuda_dtype_supported(dtype))
        return fail(m, LODE_ERR_UNSUPPORTED, "random model: weight type has no CUDA kernel");
    int64_t D = c->dim, Q = (int64_t)c->n_head * c->head_dim;
    float *ones = lode_malloc((size_t)D * sizeof(float));
    if (!ones) return LODE_ERR_NOMEM;
    for (int64_t i = 0; i < D; i++) ones[i] = 1.f;
    lode_status st = LODE_OK;
    uint64_t s = seed * 1000003u;
#define MAT(mat, r, cc)                                                                            \
    do {                                                                                           \
        if (!(mat)->fmt && (st = krn_cuda_mat_alloc((mat), dtype, (r), (cc)))) goto out;           \
        if ((st = krn_cuda_mat_random((mat), ++s, 0.02f, m->stream))) goto out;                    \
    } while (0)
    MAT(&m->tok_embd, c->vocab, D);
    if (!c->tied) MAT(&m->output, c->vocab, D);
    if ((st = put_norm(m, &m->output_norm, ones, c->dim))) goto out;
    for (int l = 0; l < c->n_layer; l++) {
        layer *L = &m->L[l];
        MAT(&L->qkv, qkv_rows(c), D);
        MAT(&L->o, D, Q);
        MAT(&L->gu, 2 * (int64_t)c->ff, D);
        MAT(&L->down, D, c->ff);
        L->k_fused = L->v_fused = L->up_fused = 1;
        if ((st = put_norm(m, &L->attn_norm, ones, c->dim)) ||
            (st = put_norm(m, &L->ffn_norm, ones, c->dim)))
            goto out;
        L->set = ~0u;
    }
#undef MAT
    m->gset = ~0u;
    st = krn_cuda_stream_sync(m->stream);
out:
    lode_free(ones);
    if (st) return fail(m, st, "random model");
    return eng_cuda_model_ready(m);
}

/* LODE_CUDA_PERSIST=1 (read when a model becomes ready) runs batch-1 decode steps on the
 * persistent layers kernel wherever it supports the model (quantized layouts with one scale
 * array). It is off by default: on an H200 it was 10% slower than the five kernels a layer for
 * llama3-8b Q4_0 and 32% for smollm2-135m Q4_1 (bench/RESULTS.md, 2026-11-27), so it stays an
 * option to measure. */
static int persist_env(void)
{
    const char *e = getenv("LODE_CUDA_PERSIST");
    return e && !strcmp(e, "1");
}

/* LODE_CUDA_CLUSTER=1 (read when a model becomes ready) runs batch-1 decode steps of a model
 * whose layers fit a cluster's shared memory (krn_cuda_clayer_decode: 4-bit weights of small
 * models such as smollm2-135m) one cluster kernel a layer. It is off by default: on an H200 it
 * was 13% slower than the five kernels a layer for smollm2-135m Q4_1 (1441 against 1654
 * tok/s, bench/RESULTS.md, 2026-11-27), so it stays an option to measure. */
static int cluster_env(void)
{
    const char *e = getenv("LODE_CUDA_CLUSTER");
    return e && !strcmp(e, "1");
}

/* The device view of layer l that the layer kernels take. */
static krn_cuda_layer layer_view(const eng_cuda_model *m, int l)
{
    const layer *L = &m->L[l];
    krn_cuda_layer v;
    memset(&v, 0, sizeof v);
    v.qkv = L->qkv;
    v.o = L->o;
    v.gu = L->gu;
    v.down = L->down;
    v.attn_norm = L->attn_norm;
    v.ffn_norm = L->ffn_norm;
    v.k_cache = L->kc;
    v.v_cache = L->vc;
    return v;
}

static krn_cuda_layers_cfg layers_cfg(const eng_cuda_model *m)
{
    const eng_cuda_config *c = &m->c;
    krn_cuda_layers_cfg k;
    memset(&k, 0, sizeof k);
    k.layers = m->d_layers;
    k.n_layer = c->n_layer;
    k.dim = c->dim;
    k.ff = c->ff;
    k.n_head = c->n_head;
    k.n_kv_head = c->n_kv_head;
    k.head_dim = c->head_dim;
    k.fmt = m->L[0].qkv.fmt;
    k.eps = c->eps;
    k.inv_freq = m->inv_freq;
    k.x = m->x;
    k.q = m->q32;
    k.h = m->gu;
    k.att_acc = m->acc;
    k.att_ml = m->ml;
    k.att_splits = m->nsplit;
    k.bar = m->d_bar;
    return k;
}

/* Decides m->persist and uploads the layer table the persistent kernel reads. */
static lode_status persist_setup(eng_cuda_model *m)
{
    const eng_cuda_config *c = &m->c;
    m->persist = 0;
    const int want = persist_env() ? 1 : cluster_env() ? 2 : 0;
    if (!want) return LODE_OK;
    const int fmt = m->L[0].qkv.fmt;
    for (int l = 0; l < c->n_layer; l++) {
        const layer *L = &m->L[l];
        if (!L->k_fused || !L->v_fused || !L->up_fused || L->qkv.fmt != fmt || L->o.fmt != fmt ||
            L->gu.fmt != fmt || L->down.fmt != fmt ||
            L->qkv.rows < (int64_t)(c->n_head + 2 * c->n_kv_head) * c->head_dim ||
            L->gu.rows < 2 * (int64_t)c->ff)
            return LODE_OK;
    }
    krn_cuda_layers_cfg k = layers_cfg(m);
    if (want == 2) {
        m->persist = krn_cuda_clayer_supported(&k) ? 2 : 0;
        return LODE_OK;
    }
    if (!krn_cuda_layers_supported(&k)) return LODE_OK;
    krn_cuda_layer *h = lode_calloc((size_t)c->n_layer, sizeof *h);
    if (!h) return LODE_ERR_NOMEM;
    for (int l = 0; l < c->n_layer; l++) h[l] = layer_view(m, l);
    lode_status st = LODE_OK;
    if (!m->d_layers) st = dmalloc(m, &m->d_layers, (size_t)c->n_layer * sizeof *h);
    if (!st && !m->d_bar) st = dmalloc(m, &m->d_bar, 2 * sizeof(unsigned));
    if (!st) st = krn_cuda_h2d(m->d_layers, h, (size_t)c->n_layer * sizeof *h, m->stream);
    if (!st) st = krn_cuda_memset(m->d_bar, 0, 2 * sizeof(unsigned), m->stream);
    if (!st) st = krn_cuda_stream_sync(m->stream);
    lode_free(h);
    if (st) return fail(m, st, "persistent layers setup");
    m->persist = 1;
    return LODE_OK;
}

/* LODE_CUDA_ATTN_O=0 (read when a model becomes ready) keeps batch-1 decode on the split
 * attention kernel and the o GEMV at every length; by default sequences short enough for
 * krn_cuda_attn_o take it. LODE_CUDA_ATTN_O_MAX=n lowers that length (tests cross it). */
static int attn_o_env(void)
{
    const char *e = getenv("LODE_CUDA_ATTN_O");
    return !(e && !strcmp(e, "0"));
}

static krn_cuda_attn_cfg attn_for(const eng_cuda_model *m, const layer *L, const int32_t *bt);

/* Decides m->ao_ok: every layer's o projection and attention shape runs krn_cuda_attn_o. */
static void attn_o_setup(eng_cuda_model *m)
{
    m->ao_ok = 0;
    m->ao_len = krn_cuda_attn_o_max_len(m->c.head_dim);
    const char *e = getenv("LODE_CUDA_ATTN_O_MAX");
    if (e && atoi(e) > 0) m->ao_len = LODE_MIN(m->ao_len, atoi(e));
    if (!attn_o_env() || m->ao_len <= 0) return;
    for (int l = 0; l < m->c.n_layer; l++) {
        krn_cuda_attn_cfg a = attn_for(m, &m->L[l], m->bt);
        if (!krn_cuda_attn_o_supported(&a, &m->L[l].o)) return;
    }
    m->ao_ok = 1;
}

/* Whether a decode step of `batch` sequences takes krn_cuda_attn_o: batch 1, not the
 * persistent or cluster layer kernels, and the sequence no longer than the kernel holds
 * after the step (len: its tokens then). */
static int attn_o_for(const eng_cuda_model *m, int batch, int len)
{
    return m->ao_ok && batch == 1 && !m->persist && len <= m->ao_len;
}

lode_status eng_cuda_model_ready(eng_cuda_model *m)
{
    const eng_cuda_config *c = &m->c;
    if (!(m->gset & (1u << ENG_CW_TOK_EMBD)) || !(m->gset & (1u << ENG_CW_OUTPUT_NORM)) ||
        (!c->tied && !(m->gset & (1u << ENG_CW_OUTPUT))))
        return fail(m, LODE_ERR_INVALID, "CUDA model: embedding, output norm or head missing");
    unsigned need = 0;
    for (int k = ENG_CW_ATTN_NORM; k < ENG_CW_COUNT; k++) need |= 1u << k;
    int all16 = 1, anyf16 = 0;
    size_t scratch = 0;
    for (int l = 0; l < c->n_layer; l++) {
        layer *L = &m->L[l];
        if ((L->set & need) != need)
            return fail(m, LODE_ERR_INVALID, "CUDA model: a layer weight is missing");
        const krn_cuda_mat *ms[] = {&L->qkv, &L->k, &L->v, &L->o, &L->gu, &L->up, &L->down};
        for (size_t i = 0; i < LODE_ARRAY_LEN(ms); i++) {
            if (!ms[i]->fmt) continue;
            if (ms[i]->dtype != LODE_F16) all16 = 0;
            if (ms[i]->dtype == LODE_F16) anyf16 = 1;
            scratch = LODE_MAX(scratch, krn_cuda_gemm_scratch_bytes(ms[i]));
        }
    }
    m->act_f16 = all16 && anyf16;
    /* batched steps of more than one logits row run the head as a GEMM, and so does the
     * decoder's batched decode past the GEMV limit (where the head needs converting) */
    if (c->step_out > 1) scratch = LODE_MAX(scratch, krn_cuda_gemm_scratch_bytes(head(m)));
    if (c->max_seqs > 1 && head(m)->dtype != (m->act_f16 ? LODE_F16 : LODE_BF16))
        scratch = LODE_MAX(scratch, krn_cuda_gemm_scratch_bytes(head(m)));
    if (scratch > m->scratch_bytes) {
        krn_cuda_free(m->scratch);
        m->scratch = NULL;
        m->scratch_bytes = 0;
        lode_status st = dmalloc(m, &m->scratch, scratch);
        if (st) return st;
        m->scratch_bytes = scratch;
    }
    lode_status st = persist_setup(m);
    if (st) return st;
    attn_o_setup(m);
    m->ready = 1;
    return LODE_OK;
}

int eng_cuda_model_persistent(const eng_cuda_model *m)
{
    return m->persist;
}

int eng_cuda_model_attn_o(const eng_cuda_model *m)
{
    return m->ao_ok;
}

size_t eng_cuda_model_weight_bytes(const eng_cuda_model *m)
{
    size_t n = krn_cuda_mat_bytes(m->c.tied ? &m->tok_embd : &m->output) + (size_t)m->c.dim * 4;
    for (int l = 0; l < m->c.n_layer; l++) {
        const layer *L = &m->L[l];
        n += krn_cuda_mat_bytes(&L->qkv) + krn_cuda_mat_bytes(&L->k) + krn_cuda_mat_bytes(&L->v) +
             krn_cuda_mat_bytes(&L->o) + krn_cuda_mat_bytes(&L->gu) + krn_cuda_mat_bytes(&L->up) +
             krn_cuda_mat_bytes(&L->down) + (size_t)m->c.dim * 8;
    }
    return n;
}

/* The leading rows of a fused matrix that are really set (a shallow view). */
static krn_cuda_mat qkv_view(const eng_cuda_config *c, const layer *L)
{
    krn_cuda_mat v = L->qkv;
    int64_t Q = (int64_t)c->n_head * c->head_dim, KVd = (int64_t)c->n_kv_head * c->head_dim;
    v.rows = Q + (L->k_fused ? KVd : 0) + (L->v_fused ? KVd : 0);
    return v;
}

static krn_cuda_mat gu_view(const eng_cuda_config *c, const layer *L)
{
    krn_cuda_mat v = L->gu;
    v.rows = (int64_t)c->ff * (L->up_fused ? 2 : 1);
    return v;
}

/* ---- running ------------------------------------------------------------------------------ */

lode_status eng_cuda_seq_reset(eng_cuda_model *m, int seq)
{
    if (seq < 0 || seq >= m->c.max_seqs) return fail(m, LODE_ERR_INVALID, "bad sequence");
    m->len[seq] = 0;
    return LODE_OK;
}

int eng_cuda_seq_len(const eng_cuda_model *m, int seq)
{
    return seq >= 0 && seq < m->c.max_seqs ? m->len[seq] : -1;
}

static krn_cuda_sample_cfg sample_cfg(const eng_cuda_sampling *s, const uint32_t *step)
{
    krn_cuda_sample_cfg k;
    memset(&k, 0, sizeof k);
    if (s) {
        k.temperature = s->temperature;
        k.top_k = s->top_k;
        k.top_p = s->top_p > 0.f ? s->top_p : 1.f;
        k.seed = s->seed;
    }
    k.step = step;
    return k;
}

static int32_t slot_of(const eng_cuda_model *m, int seq, int pos)
{
    int b = pos / KRN_CUDA_KV_BLOCK;
    if (b >= m->maxb) return -1;
    return m->bt_host[(size_t)seq * m->maxb + b] * KRN_CUDA_KV_BLOCK + pos % KRN_CUDA_KV_BLOCK;
}

static krn_cuda_rope rope_for(const eng_cuda_model *m, const layer *L, const int32_t *pos,
                              const int32_t *slot)
{
    krn_cuda_rope r;
    memset(&r, 0, sizeof r);
    r.n_head = m->c.n_head;
    r.n_kv_head = m->c.n_kv_head;
    r.head_dim = m->c.head_dim;
    r.inv_freq = m->inv_freq;
    r.pos = pos;
    r.slot = slot;
    r.k_cache = L->kc;
    r.v_cache = L->vc;
    return r;
}

static krn_cuda_attn_cfg attn_for(const eng_cuda_model *m, const layer *L, const int32_t *bt)
{
    krn_cuda_attn_cfg a;
    memset(&a, 0, sizeof a);
    a.n_head = m->c.n_head;
    a.n_kv_head = m->c.n_kv_head;
    a.head_dim = m->c.head_dim;
    a.scale = 1.f / sqrtf((float)m->c.head_dim);
    a.k_cache = L->kc;
    a.v_cache = L->vc;
    a.block_table = bt;
    a.max_blocks = m->maxb;
    return a;
}

/* One prefill chunk of n tokens of sequence seq at positions pos0..; tokens/pos/slot are in
 * d_pf already. Leaves the residual stream in m->x. */
static lode_status prefill_chunk(eng_cuda_model *m, int seq, int n, int pos0)
{
    const eng_cuda_config *c = &m->c;
    const int H = c->n_head, KV = c->n_kv_head, hd = c->head_dim, QR = qkv_rows(c);
    const int at = m->act_f16 ? LODE_F16 : LODE_BF16, f16 = m->act_f16;
    void *s = m->stream;
    const int32_t *tok = m->d_pf, *pos = m->d_pf + n, *slot = m->d_pf + 2 * n;
    prof_mark(m, "start");
    TRY(m, krn_cuda_embed(&m->tok_embd, tok, n, m->x, s), "prefill embed");
    prof_mark(m, "embed");
    for (int l = 0; l < c->n_layer; l++) {
        layer *L = &m->L[l];
        krn_cuda_mat qv = qkv_view(c, L), gv = gu_view(c, L);
        krn_cuda_rope r = rope_for(m, L, pos, slot);
        krn_cuda_attn_cfg a = attn_for(m, L, m->bt + (size_t)seq * m->maxb);
        TRY(m, krn_cuda_rmsnorm(m->x, L->attn_norm, c->eps, n, c->dim, m->act, at, s), "rmsnorm");
        prof_mark(m, "rmsnorm");
        TRY(m, krn_cuda_gemm(m->blas, &qv, m->act, f16, n, m->qkv, QR, 0, m->scratch, s),
            "gemm qkv");
        if (!L->k_fused)
            TRY(m,
                krn_cuda_gemm(m->blas, &L->k, m->act, f16, n, m->qkv + H * hd, QR, 0, m->scratch,
                              s),
                "gemm k");
        if (!L->v_fused)
            TRY(m,
                krn_cuda_gemm(m->blas, &L->v, m->act, f16, n, m->qkv + (H + KV) * hd, QR, 0,
                              m->scratch, s),
                "gemm v");
        prof_mark(m, "gemm qkv");
        TRY(m, krn_cuda_rope_kv(m->qkv, n, &r, m->qh, s), "rope");
        prof_mark(m, "rope + kv write");
        TRY(m, krn_cuda_attn_prefill(&a, m->qh, n, pos0, m->attn_out, f16, s), "attention");
        prof_mark(m, "attention prefill");
        TRY(m, krn_cuda_gemm(m->blas, &L->o, m->attn_out, f16, n, m->x, c->dim, 1, m->scratch, s),
            "gemm o");
        prof_mark(m, "gemm o (+residual)");
        TRY(m, krn_cuda_rmsnorm(m->x, L->ffn_norm, c->eps, n, c->dim, m->act, at, s), "rmsnorm");
        prof_mark(m, "rmsnorm");
        /* gate/up in the activations' 16-bit type, as in the serving step: half the bytes
         * of f32 for the GEMM to write and SwiGLU to read (235 MB a layer at 2048 tokens of
         * llama3-8b) */
        TRY(m,
            krn_cuda_gemm_y(m->blas, &gv, m->act, f16, n, m->gu, at, 2 * c->ff, 0, m->scratch, s),
            "gemm gate/up");
        if (!L->up_fused)
            TRY(m,
                krn_cuda_gemm_y(m->blas, &L->up, m->act, f16, n, (uint16_t *)m->gu + c->ff, at,
                                2 * c->ff, 0, m->scratch, s),
                "gemm up");
        prof_mark(m, "gemm gate/up");
        TRY(m, krn_cuda_swiglu16(m->gu, at, n, c->ff, m->act, at, s), "swiglu");
        prof_mark(m, "swiglu");
        TRY(m, krn_cuda_gemm(m->blas, &L->down, m->act, f16, n, m->x, c->dim, 1, m->scratch, s),
            "gemm down");
        prof_mark(m, "gemm down (+residual)");
    }
    return LODE_OK;
}

static const krn_cuda_mat *head(const eng_cuda_model *m)
{
    return m->c.tied ? &m->tok_embd : &m->output;
}

lode_status eng_cuda_prefill(eng_cuda_model *m, int seq, const int32_t *tokens, int n,
                             const eng_cuda_sampling *smp, int32_t *next, float *logits)
{
    const eng_cuda_config *c = &m->c;
    if (!m->ready) return fail(m, LODE_ERR_INVALID, "prefill: model not ready");
    if (seq < 0 || seq >= c->max_seqs || n <= 0)
        return fail(m, LODE_ERR_INVALID, "prefill: bad sequence");
    if (m->len[seq] + n >= c->max_ctx) return fail(m, LODE_ERR_RANGE, "prefill: context full");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return fail(m, LODE_ERR_RANGE, "prefill: token id");
    void *s = m->stream;
    TRY(m, krn_cuda_stream_sync(s), "prefill");
    for (int done = 0; done < n;) {
        int k = LODE_MIN(n - done, c->max_prefill), pos0 = m->len[seq];
        for (int i = 0; i < k; i++) {
            m->h_stage[i] = tokens[done + i];
            m->h_stage[k + i] = pos0 + i;
            m->h_stage[2 * k + i] = slot_of(m, seq, pos0 + i);
        }
        TRY(m, krn_cuda_h2d(m->d_pf, m->h_stage, (size_t)3 * k * 4, s), "prefill upload");
        lode_status st = prefill_chunk(m, seq, k, pos0);
        if (st) return st;
        TRY(m, krn_cuda_stream_sync(s), "prefill");
        m->len[seq] += k;
        done += k;
    }
    int last = (n - 1) % c->max_prefill;
    krn_cuda_gemv_args g;
    memset(&g, 0, sizeof g);
    g.w = head(m);
    g.batch = 1;
    g.xmode = KRN_X_RMSNORM;
    g.x = m->x + (size_t)last * c->dim;
    g.ldx = c->dim;
    g.norm_w = m->output_norm;
    g.eps = c->eps;
    g.ymode = KRN_Y_STORE;
    g.y = m->logits + (size_t)seq * c->vocab;
    g.ldy = c->vocab;
    TRY(m, krn_cuda_gemv(&g, s), "head");
    krn_cuda_sample_cfg sc = sample_cfg(smp, m->d_step_pf);
    TRY(m, krn_cuda_sample(g.y, 1, c->vocab, &sc, m->d_chosen + seq, NULL, s), "sample");
    /* the sequence's decode state: pending token = chosen, at position len */
    int len = m->len[seq];
    m->h_stage[0] = len;
    m->h_stage[1] = len + 1;
    m->h_stage[2] = slot_of(m, seq, len);
    TRY(m, krn_cuda_h2d(m->d_pos + seq, &m->h_stage[0], 4, s), "state");
    TRY(m, krn_cuda_h2d(m->d_seqlen + seq, &m->h_stage[1], 4, s), "state");
    TRY(m, krn_cuda_h2d(m->d_slot + seq, &m->h_stage[2], 4, s), "state");
    TRY(m, krn_cuda_d2d(m->d_tokens + seq, m->d_chosen + seq, 4, s), "state");
    TRY(m, krn_cuda_d2h(&m->h_stage[3], m->d_chosen + seq, 4, s), "state");
    if (logits) TRY(m, krn_cuda_d2h(logits, g.y, (size_t)c->vocab * 4, s), "logits");
    TRY(m, krn_cuda_stream_sync(s), "prefill");
    if (next) *next = m->h_stage[3];
    return LODE_OK;
}

/* 1 unless LODE_CUDA_KV_EARLY=0 (read once): decode attention requests the cached keys and
 * values before waiting for the QKV kernel (krn_cuda_attn_cfg.kv_early). */
static int kv_early(void)
{
    static int on = -1;
    return krn_cuda_env_on("LODE_CUDA_KV_EARLY", &on);
}

/* The step knobs, read once a model (serving steps and the decoder's batched decode).
 * The GEMV reads the weights once per row group of the batch: on an H100 llama3-8b BF16
 * decoded 170 tok/s at batch 1 but 303 at batch 16 (53 ms a step), where a cuBLAS GEMM
 * reads them once (about 6 ms). So single-token steps of 16-bit weights take the GEMV
 * graph. Quantized weights meet steps of more tokens in qmm.cu, which reads them once and
 * decodes them on the fly; on an H200, llama3-8b Q4_0 served 2 streams at 640 output
 * tok/s on the GEMV against 508 there, 4 at 722 against 1038 and 8 at 818 against 1943
 * (bench/RESULTS.md). So their steps of up to 2 tokens take the GEMV; the same limit
 * serves the small models best too (smollm2-135m Q4_1 at 8 streams: 5972 against 3582 with
 * the GEMV up to 8 tokens; llama3.2-1b Q4_0: 7330 against 2851), although their matrices
 * alone favour the GEMV at 4-8 tokens. LODE_CUDA_GEMV_BATCH sets the limit (at most
 * KRN_CUDA_MAX_BATCH). */
static void step_knobs(eng_cuda_model *m)
{
    if (m->gemv_max) return;
    const char *e = getenv("LODE_CUDA_GEMV_BATCH");
    const int dt = m->L[0].gu.dtype, q = dt != LODE_F32 && dt != LODE_F16 && dt != LODE_BF16;
    m->gemv_max = e && atoi(e) > 0 ? LODE_MIN(atoi(e), KRN_CUDA_MAX_BATCH) : q ? 2 : 1;
    e = getenv("LODE_CUDA_STEP_GRAPH");
    m->gg_off = e && !strcmp(e, "0");
    e = getenv("LODE_CUDA_STEP_PROFILE");
    m->prof_min = e && atoi(e) > 0 ? atoi(e) : -1;
    e = getenv("LODE_CUDA_ATTN_ROWS");
    m->rows_min = e && atoi(e) > 0 ? atoi(e) : 2;
    e = getenv("LODE_CUDA_STEP_PROFILE_MIXED");
    m->prof_mixed = e && atoi(e) > 0 ? atoi(e) : -1;
}

static lode_status gemm_layers(eng_cuda_model *m, int T, int D, int P, int maxn, const int32_t *pos,
                               const int32_t *slot, const int32_t *len, const int32_t *vl,
                               const int32_t *bt);
static lode_status step_gemm_prepare(eng_cuda_model *m, int T);

/* m->logits of `rows` rows of the residual stream x (f32 [rows][dim]): the final RMSNorm and
 * the head, on the GEMV up to the GEMV limit (step_knobs), else normed into the 16-bit
 * activations for a GEMM. */
static lode_status head_logits(eng_cuda_model *m, const float *x, int rows)
{
    const eng_cuda_config *c = &m->c;
    void *s = m->stream;
    if (rows <= m->gemv_max) {
        krn_cuda_gemv_args g;
        memset(&g, 0, sizeof g);
        g.w = head(m);
        g.batch = rows;
        g.xmode = KRN_X_RMSNORM;
        g.x = x;
        g.ldx = c->dim;
        g.norm_w = m->output_norm;
        g.eps = c->eps;
        g.ymode = KRN_Y_STORE;
        g.y = m->logits;
        g.ldy = c->vocab;
        TRY(m, krn_cuda_gemv(&g, s), "head");
        return LODE_OK;
    }
    const int at = m->act_f16 ? LODE_F16 : LODE_BF16;
    TRY(m, krn_cuda_rmsnorm(x, m->output_norm, c->eps, rows, c->dim, m->act, at, s), "rmsnorm");
    TRY(m,
        krn_cuda_gemm(m->blas, head(m), m->act, m->act_f16, rows, m->logits, c->vocab, 0,
                      m->scratch, s),
        "gemm head");
    return LODE_OK;
}

/* Whether the decode GEMV of a fused gate/up matrix writes silu(gate) * up itself
 * (KRN_Y_SWIGLU); LODE_CUDA_GU_SWIGLU=0 (read once) writes gate and up for the down
 * projection's input stage to combine, for comparison. */
static int gu_swiglu_on(void)
{
    static int on = -1;
    return krn_cuda_env_on("LODE_CUDA_GU_SWIGLU", &on);
}

/* Records the embedding and every layer of a decode step of `batch` single tokens (device
 * arrays: token, position, cache slot, sequence length after it, block table row of stride
 * maxb) on the stream, leaving the residual stream in m->x. More tokens than the GEMV limit
 * (step_knobs) take the GEMM layers, as the serving steps do. */
static lode_status decode_layers(eng_cuda_model *m, int batch, const int32_t *tokens,
                                 const int32_t *pos, const int32_t *slot, const int32_t *seqlen,
                                 const int32_t *bt, int ao)
{
    const eng_cuda_config *c = &m->c;
    const int H = c->n_head, KV = c->n_kv_head, hd = c->head_dim;
    void *s = m->stream;
    prof_mark(m, "start");
    TRY(m, krn_cuda_embed(&m->tok_embd, tokens, batch, m->x, s), "embed");
    prof_mark(m, "embed");
    if (batch > m->gemv_max) return gemm_layers(m, batch, batch, 0, 0, pos, slot, seqlen, NULL, bt);
    if (batch == 1 && m->persist) {
        krn_cuda_layers_cfg k = layers_cfg(m);
        k.pos = pos;
        k.slot = slot;
        k.seq_len = seqlen;
        k.block_table = bt;
        if (m->persist == 2) {
            for (int l = 0; l < c->n_layer; l++) {
                krn_cuda_layer v = layer_view(m, l);
                TRY(m, krn_cuda_clayer_decode(&k, &v, l, s), "cluster layer");
                prof_mark(m, "layer (cluster kernel)");
            }
            return LODE_OK;
        }
        TRY(m, krn_cuda_layers_decode(&k, s), "persistent layers");
        prof_mark(m, "layers (persistent kernel)");
        return LODE_OK;
    }
    krn_cuda_attn_parts parts = {m->acc, m->ml, seqlen, H, hd, m->nsplit};
    for (int l = 0; l < c->n_layer; l++) {
        layer *L = &m->L[l];
        krn_cuda_mat qv = qkv_view(c, L), gv = gu_view(c, L);
        krn_cuda_rope r = rope_for(m, L, pos, slot);
        krn_cuda_attn_cfg a = attn_for(m, L, bt);
        krn_cuda_gemv_args g;
        memset(&g, 0, sizeof g);
        g.batch = batch;
        g.xmode = KRN_X_RMSNORM;
        g.x = m->x;
        g.ldx = c->dim;
        g.norm_w = L->attn_norm;
        g.eps = c->eps;
        g.ymode = KRN_Y_ROPE_KV;
        g.y = m->q32;
        g.ldy = (int64_t)H * hd;
        g.rope = &r;
        g.w = &qv;
        TRY(m, krn_cuda_gemv(&g, s), "gemv qkv");
        if (!L->k_fused) {
            r.row0 = H * hd;
            g.w = &L->k;
            TRY(m, krn_cuda_gemv(&g, s), "gemv k");
        }
        if (!L->v_fused) {
            r.row0 = (H + KV) * hd;
            g.w = &L->v;
            TRY(m, krn_cuda_gemv(&g, s), "gemv v");
        }
        prof_mark(m, "gemv qkv (+norm, rope, kv write)");
        /* only this step's keys and values come from the QKV kernel just ahead */
        a.kv_early = kv_early();
        memset(&g, 0, sizeof g);
        g.batch = batch;
        if (ao) {
            TRY(m, krn_cuda_attn_o(&a, m->q32, seqlen, &L->o, m->x, s), "attention + o");
            prof_mark(m, "attention + o (+residual)");
        } else {
            TRY(m, krn_cuda_attn_decode(&a, m->q32, batch, seqlen, m->nsplit, m->acc, m->ml, s),
                "attention");
            prof_mark(m, "attention decode");
            g.w = &L->o;
            g.xmode = KRN_X_ATTN;
            g.attn = &parts;
            g.ymode = KRN_Y_ADD;
            g.y = m->x;
            g.ldy = c->dim;
            TRY(m, krn_cuda_gemv(&g, s), "gemv o");
            prof_mark(m, "gemv o (+split combine, residual)");
        }
        g.w = &gv;
        g.xmode = KRN_X_RMSNORM;
        g.x = m->x;
        g.ldx = c->dim;
        g.norm_w = L->ffn_norm;
        g.eps = c->eps;
        g.attn = NULL;
        /* with gate and up in one matrix, each warp of the GEMV takes a gate row and its up
         * row and writes h = silu(gate) * up: the down projection stages h alone */
        const int hmode = L->up_fused && gu_swiglu_on();
        g.ymode = hmode ? KRN_Y_SWIGLU : KRN_Y_STORE;
        g.y = m->gu;
        g.ldy = (hmode ? 1 : 2) * (int64_t)c->ff;
        TRY(m, krn_cuda_gemv(&g, s), "gemv gate/up");
        if (!L->up_fused) {
            g.w = &L->up;
            g.y = m->gu + c->ff;
            TRY(m, krn_cuda_gemv(&g, s), "gemv up");
        }
        prof_mark(m, hmode ? "gemv gate/up (+norm, swiglu)" : "gemv gate/up (+norm)");
        g.w = &L->down;
        g.xmode = hmode ? KRN_X_PLAIN : KRN_X_SWIGLU;
        g.x = m->gu;
        g.ldx = (hmode ? 1 : 2) * (int64_t)c->ff;
        g.ymode = KRN_Y_ADD;
        g.y = m->x;
        g.ldy = c->dim;
        TRY(m, krn_cuda_gemv(&g, s), "gemv down");
        prof_mark(m, hmode ? "gemv down (+residual)" : "gemv down (+swiglu, residual)");
    }
    return LODE_OK;
}

/* Records one decode step of `batch` sequences on the stream (for capture). */
static lode_status decode_step(eng_cuda_model *m, int batch, const eng_cuda_sampling *smp)
{
    step_knobs(m); /* the GEMV limit: eng_cuda_profile comes here first too */
    const eng_cuda_config *c = &m->c;
    void *s = m->stream;
    lode_status st =
        decode_layers(m, batch, m->d_tokens, m->d_pos, m->d_slot, m->d_seqlen, m->bt, m->ao);
    if (st) return st;
    if ((st = head_logits(m, m->x, batch))) return st;
    prof_mark(m, "head (+norm)");
    krn_cuda_sample_cfg sc = sample_cfg(smp, m->d_step);
    TRY(m, krn_cuda_sample(m->logits, batch, c->vocab, &sc, m->d_chosen, m->lp, s), "sample");
    prof_mark(m, "sample");
    TRY(m,
        krn_cuda_decode_advance(batch, m->d_chosen, m->d_tokens, m->d_pos, m->d_seqlen, m->d_slot,
                                m->bt, m->maxb, m->d_hist, HIST_ROWS, c->max_seqs, m->d_step, s),
        "advance");
    prof_mark(m, "advance");
    return LODE_OK;
}

static int same_sampling(const eng_cuda_sampling *a, const eng_cuda_sampling *b)
{
    return a->temperature == b->temperature && a->top_k == b->top_k && a->top_p == b->top_p &&
           a->seed == b->seed;
}

lode_status eng_cuda_decode(eng_cuda_model *m, int batch, const eng_cuda_sampling *smp)
{
    const eng_cuda_config *c = &m->c;
    if (!m->ready) return fail(m, LODE_ERR_INVALID, "decode: model not ready");
    if (batch <= 0 || batch > c->max_seqs) return fail(m, LODE_ERR_INVALID, "decode: bad batch");
    for (int b = 0; b < batch; b++) {
        if (m->len[b] <= 0) return fail(m, LODE_ERR_INVALID, "decode: sequence not prefilled");
        if (m->len[b] + 1 >= c->max_ctx) return fail(m, LODE_ERR_RANGE, "decode: context full");
    }
    eng_cuda_sampling greedy = {0.f, 0, 1.f, 0};
    if (!smp) smp = &greedy;
    step_knobs(m);
    if (batch > m->gemv_max && !(m->dg_tuned & (1u << batch))) {
        /* the GEMM layers' algorithms are chosen before their first capture */
        lode_status st = step_gemm_prepare(m, batch);
        if (st) return st;
        m->dg_tuned |= 1u << batch;
    }
    graph *gr = NULL;
    const int ao = attn_o_for(m, batch, m->len[0] + 1);
    for (int i = 0; i < m->ng; i++)
        if (m->g[i].batch == batch && m->g[i].ao == ao && same_sampling(&m->g[i].s, smp))
            gr = &m->g[i];
    if (!gr) {
        if (m->ng == MAX_GRAPHS) {
            krn_cuda_graph_destroy(m->g[0].exec);
            memmove(&m->g[0], &m->g[1], sizeof m->g[0] * (MAX_GRAPHS - 1));
            m->ng--;
        }
        gr = &m->g[m->ng];
        memset(gr, 0, sizeof *gr);
        TRY(m, krn_cuda_graph_begin(m->stream), "graph capture");
        m->ao = ao;
        lode_status st = decode_step(m, batch, smp);
        m->ao = 0;
        void *exec = NULL;
        lode_status st2 = krn_cuda_graph_end(m->stream, &exec);
        if (st) {
            krn_cuda_graph_destroy(exec);
            return st;
        }
        if (st2) return fail(m, st2, "graph capture");
        gr->exec = exec;
        gr->batch = batch;
        gr->s = *smp;
        gr->ao = ao;
        m->ng++;
    }
    TRY(m, krn_cuda_graph_launch(gr->exec, m->stream), "graph launch");
    for (int b = 0; b < batch; b++) m->len[b]++;
    if (m->hist_batch != batch) m->hist_batch = batch;
    m->steps_total++;
    return LODE_OK;
}

/* The profiling events, created on first use. */
static lode_status prof_events(eng_cuda_model *m)
{
    if (m->pev) return LODE_OK;
    int cap = 16 * m->c.n_layer + 32;
    m->pev = lode_calloc((size_t)cap, sizeof *m->pev);
    m->pname = lode_calloc((size_t)cap, sizeof *m->pname);
    if (!m->pev || !m->pname) return LODE_ERR_NOMEM;
    for (int i = 0; i < cap; i++) {
        TRY(m, krn_cuda_event_create(&m->pev[i]), "event");
        m->pcap = i + 1;
    }
    return LODE_OK;
}

static lode_status prof_report(eng_cuda_model *m, eng_cuda_prof_fn fn, void *arg);

lode_status eng_cuda_profile(eng_cuda_model *m, int batch, eng_cuda_prof_fn fn, void *arg)
{
    const eng_cuda_config *c = &m->c;
    if (!m->ready || batch <= 0 || batch > c->max_seqs)
        return fail(m, LODE_ERR_INVALID, "profile: bad batch or model not ready");
    for (int b = 0; b < batch; b++)
        if (m->len[b] <= 0 || m->len[b] + 1 >= c->max_ctx)
            return fail(m, LODE_ERR_INVALID, "profile: sequences must be prefilled with room left");
    lode_status st = prof_events(m);
    if (st) return st;
    m->pn = 0;
    m->prof = 1;
    m->ao = attn_o_for(m, batch, m->len[0] + 1);
    st = decode_step(m, batch, NULL);
    m->ao = 0;
    m->prof = 0;
    if (st) return st;
    TRY(m, krn_cuda_stream_sync(m->stream), "profile");
    for (int b = 0; b < batch; b++) m->len[b]++;
    m->hist_batch = batch;
    m->steps_total++;
    return prof_report(m, fn, arg);
}

lode_status eng_cuda_profile_prefill(eng_cuda_model *m, int seq, const int32_t *tokens, int n,
                                     eng_cuda_prof_fn fn, void *arg)
{
    if (n > m->c.max_prefill)
        return fail(m, LODE_ERR_INVALID, "profile: prompt longer than one prefill chunk");
    lode_status st = prof_events(m);
    if (st) return st;
    m->pn = 0;
    m->prof = 1;
    st = eng_cuda_prefill(m, seq, tokens, n, NULL, NULL, NULL);
    m->prof = 0;
    if (st) return st;
    return prof_report(m, fn, arg);
}

/* Sums the time of each op name over the layers, in order of first appearance. */
static lode_status prof_report(eng_cuda_model *m, eng_cuda_prof_fn fn, void *arg)
{
    for (int i = 1; i < m->pn; i++) {
        int first = 1;
        for (int j = 1; j < i; j++)
            if (!strcmp(m->pname[j], m->pname[i])) first = 0;
        if (!first) continue;
        float tot = 0;
        int n = 0;
        for (int j = i; j < m->pn; j++) {
            if (strcmp(m->pname[j], m->pname[i])) continue;
            float ms = 0;
            if (krn_cuda_event_ms(m->pev[j - 1], m->pev[j], &ms))
                return fail(m, LODE_ERR_CUDA, "event");
            tot += ms;
            n++;
        }
        fn(arg, m->pname[i], n, tot);
    }
    return LODE_OK;
}

lode_status eng_cuda_forward(eng_cuda_model *m, int seq, const int32_t *tokens, int n, int pos0,
                             int n_out, int out_first, float *logits)
{
    const eng_cuda_config *c = &m->c;
    if (!m->ready) return fail(m, LODE_ERR_INVALID, "forward: model not ready");
    if (seq < 0 || seq >= c->max_seqs || n <= 0 || n_out < 0 || out_first < 0 ||
        out_first + n_out > n || (n_out && !logits))
        return fail(m, LODE_ERR_INVALID, "forward: bad arguments");
    if (pos0 < 0 || pos0 > m->len[seq])
        return fail(m, LODE_ERR_RANGE, "forward: position past the sequence");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return fail(m, LODE_ERR_RANGE, "forward: token id");
    m->len[seq] = pos0;
    if (n == 1 && n_out == 1 && seq == 0 && pos0 > 0 && pos0 + 1 < c->max_ctx) {
        /* decode: the host's token becomes sequence 0's pending input, then one graph step */
        TRY(m, krn_cuda_stream_sync(m->stream), "forward");
        m->h_stage[0] = tokens[0];
        m->h_stage[1] = pos0;
        m->h_stage[2] = pos0 + 1;
        m->h_stage[3] = slot_of(m, 0, pos0);
        TRY(m, krn_cuda_h2d(m->d_tokens, &m->h_stage[0], 4, m->stream), "state");
        TRY(m, krn_cuda_h2d(m->d_pos, &m->h_stage[1], 4, m->stream), "state");
        TRY(m, krn_cuda_h2d(m->d_seqlen, &m->h_stage[2], 4, m->stream), "state");
        TRY(m, krn_cuda_h2d(m->d_slot, &m->h_stage[3], 4, m->stream), "state");
        lode_status st = eng_cuda_decode(m, 1, NULL);
        if (st) return st;
        return eng_cuda_read_tokens(m, 0, NULL, logits);
    }
    lode_status st = LODE_OK;
    if (n_out == 0) return eng_cuda_prefill(m, seq, tokens, n, NULL, NULL, NULL);
    /* up to and including the first output row, then one row at a time, then the rest */
    int done = out_first + 1;
    if ((st = eng_cuda_prefill(m, seq, tokens, done, NULL, NULL, logits))) return st;
    for (int i = 1; i < n_out; i++, done++)
        if ((st = eng_cuda_prefill(m, seq, tokens + done, 1, NULL, NULL,
                                   logits + (size_t)i * c->vocab)))
            return st;
    if (done < n) st = eng_cuda_prefill(m, seq, tokens + done, n - done, NULL, NULL, NULL);
    return st;
}

lode_status eng_cuda_read_tokens(eng_cuda_model *m, int steps, int32_t *out, float *logits)
{
    const eng_cuda_config *c = &m->c;
    if (steps < 0 || steps > HIST_ROWS || (uint64_t)steps > m->steps_total)
        return fail(m, LODE_ERR_RANGE, "read_tokens: more steps than kept");
    int B = m->hist_batch, S = c->max_seqs;
    for (int i = 0; i < steps; i++) {
        uint64_t st = m->steps_total - (uint64_t)steps + (uint64_t)i;
        int row = (int)(st % HIST_ROWS);
        TRY(m,
            krn_cuda_d2h(out + (size_t)i * B, m->d_hist + (size_t)row * S, (size_t)B * 4,
                         m->stream),
            "read tokens");
    }
    if (logits)
        TRY(m, krn_cuda_d2h(logits, m->logits, (size_t)B * c->vocab * 4, m->stream), "logits");
    TRY(m, krn_cuda_stream_sync(m->stream), "read tokens");
    return LODE_OK;
}

lode_status eng_cuda_mark(eng_cuda_model *m)
{
    void *e = m->ev[m->ev_n & 1];
    m->ev_n++;
    TRY(m, krn_cuda_event_record(e, m->stream), "event");
    return LODE_OK;
}

lode_status eng_cuda_elapsed_ms(eng_cuda_model *m, float *ms)
{
    if (m->ev_n < 2) return fail(m, LODE_ERR_INVALID, "elapsed: mark twice first");
    void *a = m->ev[m->ev_n & 1], *b = m->ev[(m->ev_n + 1) & 1];
    TRY(m, krn_cuda_event_ms(a, b, ms), "event");
    return LODE_OK;
}

lode_status eng_cuda_sync(eng_cuda_model *m)
{
    TRY(m, krn_cuda_stream_sync(m->stream), "sync");
    return LODE_OK;
}

/* ---- batched steps of the serving scheduler ---------------------------------------------- */

int eng_cuda_kv_blocks(const eng_cuda_model *m)
{
    return m->n_blocks;
}

size_t eng_cuda_kv_bytes(const eng_cuda_model *m)
{
    return m->kv_bytes;
}

/* A decode-only step of `batch` tokens on the fused GEMVs, rows in batch order: the layers,
 * the head, and argmax and logprob of every row. Recorded on the stream (captured once per
 * batch size: every pointer is fixed). */
static lode_status step_gemv(eng_cuda_model *m, int batch, int ao)
{
    const eng_cuda_config *c = &m->c;
    const int32_t *d = m->sv_d;
    void *s = m->stream;
    lode_status st =
        decode_layers(m, batch, d + sv_off(m, SV_TOK), d + sv_off(m, SV_POS),
                      d + sv_off(m, SV_SLOT), d + sv_off(m, SV_LEN), d + sv_off(m, SV_BT), ao);
    if (st || (st = head_logits(m, m->x, batch))) return st;
    TRY(m, krn_cuda_argmax(m->logits, batch, c->vocab, m->sv_tok, s), "argmax");
    TRY(m, krn_cuda_logprobs(m->logits, batch, c->vocab, m->sv_tok, m->sv_lp, s), "logprobs");
    return LODE_OK;
}

/* Any step on tensor cores: T rows, the first D single-token sequences (split decode
 * attention), then P prefill chunks of at most maxn rows (flash prefill, one launch for
 * all); the head runs on the n_out gathered logits rows. */
/* Every layer of a step of T tokens on the GEMMs (quantized weights through qmm.cu up to its
 * limit): D single-token rows first, then P prefill chunks of at most maxn tokens (vl: their
 * lengths). Device arrays as in decode_layers; the residual stream in m->x holds the
 * embeddings on entry and the layers' output on return. */
static lode_status gemm_layers(eng_cuda_model *m, int T, int D, int P, int maxn, const int32_t *pos,
                               const int32_t *slot, const int32_t *len, const int32_t *vl,
                               const int32_t *bt)
{
    const eng_cuda_config *c = &m->c;
    const int H = c->n_head, KV = c->n_kv_head, hd = c->head_dim, QR = qkv_rows(c);
    const int at = m->act_f16 ? LODE_F16 : LODE_BF16, f16 = m->act_f16;
    void *s = m->stream;
    krn_cuda_attn_parts parts = {m->acc, m->ml, len, H, hd, m->nsplit};
    for (int l = 0; l < c->n_layer; l++) {
        layer *L = &m->L[l];
        krn_cuda_mat qv = qkv_view(c, L), gv = gu_view(c, L);
        krn_cuda_rope r = rope_for(m, L, pos, slot);
        krn_cuda_attn_cfg a = attn_for(m, L, bt);
        TRY(m, krn_cuda_rmsnorm(m->x, L->attn_norm, c->eps, T, c->dim, m->act, at, s), "rmsnorm");
        prof_mark(m, "rmsnorm");
        TRY(m, krn_cuda_gemm(m->blas, &qv, m->act, f16, T, m->qkv, QR, 0, m->scratch, s),
            "gemm qkv");
        if (!L->k_fused)
            TRY(m,
                krn_cuda_gemm(m->blas, &L->k, m->act, f16, T, m->qkv + H * hd, QR, 0, m->scratch,
                              s),
                "gemm k");
        if (!L->v_fused)
            TRY(m,
                krn_cuda_gemm(m->blas, &L->v, m->act, f16, T, m->qkv + (H + KV) * hd, QR, 0,
                              m->scratch, s),
                "gemm v");
        prof_mark(m, "gemm qkv");
        TRY(m, krn_cuda_rope_kv(m->qkv, T, &r, m->qh, s), "rope");
        prof_mark(m, "rope + kv write");
        if (D > 0 && D >= m->rows_min) {
            /* many single tokens: a block per sequence and KV head, f16 queries in, the
             * attention output in the GEMM's type */
            TRY(m, krn_cuda_attn_decode_rows(&a, m->qh, D, len, m->attn_out, f16, s),
                "attention decode");
            prof_mark(m, "attention decode (rows kernel)");
        } else if (D > 0) {
            /* few single tokens: f32 queries for the split decode kernel, combined back into
             * the rows of the attention output */
            int64_t nq = (int64_t)D * H * hd;
            TRY(m, krn_cuda_convert(m->qh, LODE_F16, m->q32, LODE_F32, nq, s), "convert q");
            TRY(m, krn_cuda_attn_decode(&a, m->q32, D, len, m->nsplit, m->acc, m->ml, s),
                "attention decode");
            TRY(m, krn_cuda_attn_combine(&parts, D, m->q32, s), "attention combine");
            TRY(m, krn_cuda_convert(m->q32, LODE_F32, m->attn_out, at, nq, s), "convert attn");
            prof_mark(m, "attention decode (+q/out conversions, combine)");
        }
        if (P > 0) {
            TRY(m, krn_cuda_attn_prefill_varlen(&a, m->qh, vl, P, maxn, m->attn_out, f16, s),
                "attention prefill");
            prof_mark(m, "attention prefill");
        }
        TRY(m, krn_cuda_gemm(m->blas, &L->o, m->attn_out, f16, T, m->x, c->dim, 1, m->scratch, s),
            "gemm o");
        prof_mark(m, "gemm o (+residual)");
        TRY(m, krn_cuda_rmsnorm(m->x, L->ffn_norm, c->eps, T, c->dim, m->act, at, s), "rmsnorm");
        prof_mark(m, "rmsnorm");
        /* gate/up in the activations' 16-bit type: half the bytes of f32 for the GEMM to
         * write and swiglu to read (58 MB a layer at 256 rows of llama3-8b) */
        TRY(m,
            krn_cuda_gemm_y(m->blas, &gv, m->act, f16, T, m->gu, at, 2 * c->ff, 0, m->scratch, s),
            "gemm gate/up");
        if (!L->up_fused)
            TRY(m,
                krn_cuda_gemm_y(m->blas, &L->up, m->act, f16, T, (uint16_t *)m->gu + c->ff, at,
                                2 * c->ff, 0, m->scratch, s),
                "gemm up");
        prof_mark(m, "gemm gate/up");
        TRY(m, krn_cuda_swiglu16(m->gu, at, T, c->ff, m->act, at, s), "swiglu");
        prof_mark(m, "swiglu");
        TRY(m, krn_cuda_gemm(m->blas, &L->down, m->act, f16, T, m->x, c->dim, 1, m->scratch, s),
            "gemm down");
        prof_mark(m, "gemm down (+residual)");
    }
    return LODE_OK;
}

static lode_status step_gemm(eng_cuda_model *m, int T, int D, int P, int maxn, int n_out)
{
    const eng_cuda_config *c = &m->c;
    void *s = m->stream;
    const int32_t *d = m->sv_d;
    const int32_t *tok = d + sv_off(m, SV_TOK), *pos = d + sv_off(m, SV_POS);
    const int32_t *slot = d + sv_off(m, SV_SLOT), *len = d + sv_off(m, SV_LEN);
    const int32_t *vl = d + sv_off(m, SV_VL), *bt = d + sv_off(m, SV_BT);
    prof_mark(m, "start");
    TRY(m, krn_cuda_embed(&m->tok_embd, tok, T, m->x, s), "step embed");
    prof_mark(m, "embed");
    lode_status st = gemm_layers(m, T, D, P, maxn, pos, slot, len, vl, bt);
    if (st) return st;
    if (n_out <= 0) return LODE_OK;
    /* the logits rows: gathered (into the gate/up buffer, free now), normed, projected */
    float *xo = m->gu;
    TRY(m, krn_cuda_gather_rows(xo, m->x, d + sv_off(m, SV_ROWS), n_out, c->dim, s), "rows");
    if ((st = head_logits(m, xo, n_out))) return st;
    prof_mark(m, "head (+gather, norm)");
    TRY(m, krn_cuda_argmax(m->logits, n_out, c->vocab, m->sv_tok, s), "argmax");
    TRY(m, krn_cuda_logprobs(m->logits, n_out, c->vocab, m->sv_tok, m->sv_lp, s), "logprobs");
    prof_mark(m, "argmax, logprobs");
    return LODE_OK;
}

static void print_prof(void *arg, const char *op, int count, float ms)
{
    fprintf(stderr, "step profile (%d tokens): %-48s x%-3d %8.3f ms\n", *(const int *)arg, op,
            count, ms);
}

/* Runs the GEMM step eagerly with an event after each op and prints where its time went
 * (LODE_CUDA_STEP_PROFILE=N: once, for the first decode-only step of at least N tokens;
 * LODE_CUDA_STEP_PROFILE_MIXED=N: once, for the first step with prefill chunks of at least N). */
static lode_status step_profile(eng_cuda_model *m, int T, int D, int P, int maxn, int n_out)
{
    lode_status st = prof_events(m);
    if (!st) st = step_gemm_prepare(m, T); /* tuning stays out of the timed step */
    if (st) return st;
    m->pn = 0;
    m->prof = 1;
    st = step_gemm(m, T, D, P, maxn, n_out);
    m->prof = 0;
    if (P == 0) m->prof_min = -1;
    if (st) return st;
    TRY(m, krn_cuda_stream_sync(m->stream), "profile");
    fprintf(stderr, "step profile: %d tokens (%d single, %d prefill chunks), %d logits rows\n", T,
            D, P, n_out);
    return prof_report(m, print_prof, &T);
}

/* Padded sizes of decode-only GEMM steps that are captured as graphs: powers of two up to
 * 64, then multiples of 32 (padding rows cost little next to reading the weights). */
static int step_bucket(const eng_cuda_model *m, int d)
{
    int b = 2;
    while (b < d && b < 64) b *= 2;
    if (b < d) b = (d + 31) / 32 * 32;
    return LODE_MIN(b, m->c.step_seqs);
}

/* Chooses the algorithms of a step's GEMMs for T rows (the layers share shapes). Between
 * steps the outputs it writes (qkv, x, gu) hold nothing live: each step starts from its
 * embedding. */
static lode_status step_gemm_prepare(eng_cuda_model *m, int T)
{
    const eng_cuda_config *c = &m->c;
    const layer *L = &m->L[0];
    const int f16 = m->act_f16, at = f16 ? LODE_F16 : LODE_BF16, F = LODE_F32;
    krn_cuda_mat qv = qkv_view(c, L), gv = gu_view(c, L);
    void *s = m->stream, *sc = m->scratch;
    krn_cuda_blas *h = m->blas;
    TRY(m, krn_cuda_gemm_prepare(h, &qv, m->act, f16, T, m->qkv, F, qkv_rows(c), 0, sc, s),
        "gemm qkv");
    TRY(m, krn_cuda_gemm_prepare(h, &L->o, m->attn_out, f16, T, m->x, F, c->dim, 1, sc, s),
        "gemm o");
    TRY(m, krn_cuda_gemm_prepare(h, &gv, m->act, f16, T, m->gu, at, 2 * c->ff, 0, sc, s),
        "gemm gate/up");
    TRY(m, krn_cuda_gemm_prepare(h, &L->down, m->act, f16, T, m->x, F, c->dim, 1, sc, s),
        "gemm down");
    return LODE_OK;
}

/* Index of decode bucket b (step_bucket) in gb_tuned: 2..64 by powers of two, then by 32. */
static int step_bucket_index(int b)
{
    if (b <= 64) {
        int i = 0;
        while ((2 << i) < b) i++;
        return i;
    }
    return 6 + (b - 96) / 32;
}

/* The GEMMs of every decode bucket and of a full prefill step (eng_cuda_model_tune). */
static lode_status step_tune(eng_cuda_model *m)
{
    lode_status st;
    for (int b = step_bucket(m, 2);; b = step_bucket(m, b + 1)) {
        if ((st = step_gemm_prepare(m, b))) return st;
        if (b >= m->c.step_seqs) break;
    }
    if (m->c.step_tokens > m->c.step_seqs && (st = step_gemm_prepare(m, m->c.step_tokens)))
        return st;
    return LODE_OK;
}

lode_status eng_cuda_model_tune(eng_cuda_model *m)
{
    if (!m->ready || m->c.step_tokens <= 0)
        return fail(m, LODE_ERR_INVALID, "tune: the model was not made for batched steps");
    if (m->gg_tuned) return LODE_OK;
    step_knobs(m);
    lode_status st = step_tune(m);
    if (!st) st = krn_cuda_stream_sync(m->stream);
    if (st) return st;
    m->gg_tuned = 1;
    return LODE_OK;
}

/* A decode-only step of D tokens (already staged for upload, rows in batch order) as a graph
 * of the GEMM step padded to its bucket: padding rows write no K/V (slot -1) and attend to
 * one position of block 0. Returns LODE_ERR_UNSUPPORTED (nothing queued) when graphs cannot
 * be used, so that the caller runs the step eagerly. */
static lode_status step_graph(eng_cuda_model *m, int D)
{
    int Db = step_bucket(m, D);
    if (Db < D) return LODE_ERR_UNSUPPORTED;
    int32_t *h = m->sv_h;
    for (int r = D; r < Db; r++) {
        h[sv_off(m, SV_TOK) + r] = 0;
        h[sv_off(m, SV_POS) + r] = 0;
        h[sv_off(m, SV_SLOT) + r] = -1;
        h[sv_off(m, SV_ROWS) + r] = r;
        h[sv_off(m, SV_LEN) + r] = 1;
        h[sv_off(m, SV_BT) + (size_t)r * m->maxb] = 0;
    }
    void *exec = NULL;
    for (int i = 0; i < m->gg_n; i++)
        if (m->gg_size[i] == Db) exec = m->gg_exec[i];
    void *s = m->stream;
    if (!exec) {
        if (krn_cuda_graph_begin(s)) {
            m->gg_off = 1;
            return LODE_ERR_UNSUPPORTED;
        }
        lode_status st = step_gemm(m, Db, Db, 0, 0, Db);
        lode_status st2 = krn_cuda_graph_end(s, &exec);
        if (st || st2) { /* not tried again: the steps run eagerly */
            krn_cuda_graph_destroy(exec);
            m->gg_off = 1;
            return LODE_ERR_UNSUPPORTED;
        }
        int i = m->gg_n < 32 ? m->gg_n++ : m->gg_next++ % 32;
        if (m->gg_exec[i]) krn_cuda_graph_destroy(m->gg_exec[i]);
        m->gg_exec[i] = exec;
        m->gg_size[i] = Db;
    }
    /* the padding rows' inputs (the caller uploaded the first D) */
    const int what[] = {SV_TOK, SV_POS, SV_SLOT, SV_ROWS, SV_LEN};
    for (int i = 0; i < 5; i++)
        TRY(m,
            krn_cuda_h2d(m->sv_d + sv_off(m, what[i]) + D, h + sv_off(m, what[i]) + D,
                         (size_t)(Db - D) * 4, s),
            "step upload");
    TRY(m,
        krn_cuda_h2d(m->sv_d + sv_off(m, SV_BT) + (size_t)D * m->maxb,
                     h + sv_off(m, SV_BT) + (size_t)D * m->maxb, (size_t)(Db - D) * m->maxb * 4, s),
        "step upload");
    TRY(m, krn_cuda_graph_launch(exec, s), "graph launch");
    return LODE_OK;
}

lode_status eng_cuda_step(eng_cuda_model *m, const eng_batch *b, const uint8_t *host_rows,
                          int32_t *tok, float *lp, float *logits)
{
    const eng_cuda_config *c = &m->c;
    if (!m->ready || c->step_tokens <= 0)
        return fail(m, LODE_ERR_INVALID, "step: the model was not made for batched steps");
    const int T = b->n_tokens, NS = b->n_seqs, NO = b->n_out;
    if (T <= 0 || T > c->step_tokens || NS <= 0 || NS > c->step_seqs || NO < 0 || NO > c->step_out)
        return fail(m, LODE_ERR_INVALID, "step: batch larger than the step buffers");
    int32_t *h = m->sv_h, *map = m->sv_map;
    int32_t *htok = h + sv_off(m, SV_TOK), *hpos = h + sv_off(m, SV_POS);
    int32_t *hslot = h + sv_off(m, SV_SLOT), *hrows = h + sv_off(m, SV_ROWS);
    int32_t *hlen = h + sv_off(m, SV_LEN), *hvl = h + sv_off(m, SV_VL), *hbt = h + sv_off(m, SV_BT);
    for (int i = 0; i < T; i++) map[i] = -1;
    /* device order: the single-token sequences first, then the prefill chunks */
    int D = 0, P = 0, maxn = 0, r = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < NS; i++) {
            const eng_batch_seq *q = &b->seqs[i];
            int n = q->n_tokens;
            if ((n == 1) != (pass == 0)) continue;
            if (n <= 0 || q->first < 0 || q->first + n > T || q->pos0 < 0 ||
                q->n_blocks > m->maxb || q->pos0 + n > q->n_blocks * KRN_CUDA_KV_BLOCK)
                return fail(m, LODE_ERR_RANGE, "step: sequence outside its block table");
            int row = D + P;
            int32_t *bt = hbt + (size_t)row * m->maxb;
            for (int k = 0; k < q->n_blocks; k++) {
                int32_t blk = q->block_table[k];
                if (blk < 0 || blk >= m->n_blocks)
                    return fail(m, LODE_ERR_RANGE, "step: block outside the KV pool");
                bt[k] = blk;
            }
            for (int t = 0; t < n; t++, r++) {
                int bi = q->first + t;
                int32_t p = q->pos0 + t, id = b->tokens[bi];
                if (id < 0 || id >= c->vocab || map[bi] >= 0)
                    return fail(m, LODE_ERR_RANGE, "step: bad token id or overlapping sequences");
                htok[r] = id;
                hpos[r] = p;
                hslot[r] = bt[p / KRN_CUDA_KV_BLOCK] * KRN_CUDA_KV_BLOCK + p % KRN_CUDA_KV_BLOCK;
                map[bi] = r;
            }
            if (pass == 0) {
                hlen[D++] = q->pos0 + 1;
            } else {
                hvl[4 * P] = r - n;
                hvl[4 * P + 1] = n;
                hvl[4 * P + 2] = q->pos0;
                hvl[4 * P + 3] = row;
                P++;
                maxn = LODE_MAX(maxn, n);
            }
        }
    if (r != T) return fail(m, LODE_ERR_INVALID, "step: the sequences do not cover the batch");
    int in_order = NO == D;
    for (int i = 0; i < NO; i++) {
        int32_t o = b->out_rows[i];
        if (o < 0 || o >= T) return fail(m, LODE_ERR_RANGE, "step: logits row outside the batch");
        hrows[i] = map[o];
        in_order &= hrows[i] == i;
    }
    void *s = m->stream;
    const int what[] = {SV_TOK, SV_POS, SV_SLOT, SV_ROWS, SV_LEN, SV_VL, SV_BT};
    const size_t cnt[] = {(size_t)T,
                          (size_t)T,
                          (size_t)T,
                          (size_t)NO,
                          (size_t)D,
                          4 * (size_t)P,
                          (size_t)(D + P) * m->maxb};
    for (int i = 0; i < 7; i++)
        if (cnt[i])
            TRY(m,
                krn_cuda_h2d(m->sv_d + sv_off(m, what[i]), h + sv_off(m, what[i]), cnt[i] * 4, s),
                "step upload");
    lode_status st;
    step_knobs(m);
    if (!m->gg_tuned && P == 0 && D > m->gemv_max && in_order && !m->gg_off) {
        /* not tuned at load: this decode bucket's GEMMs, before its graph is captured (a step
         * that runs eagerly instead has its own row count: cuBLAS's default, as prefill) */
        const int Db = step_bucket(m, D), bi = step_bucket_index(Db);
        if (bi < (int)sizeof m->gb_tuned && !m->gb_tuned[bi]) {
            m->gb_tuned[bi] = 1;
            if ((st = step_gemm_prepare(m, Db))) return st;
        }
    }
    if ((m->prof_min > 0 && P == 0 && T >= m->prof_min) ||
        (m->prof_mixed > 0 && P > 0 && T >= m->prof_mixed)) {
        if (P > 0) m->prof_mixed = -1;
        if ((st = step_profile(m, T, D, P, maxn, NO))) return st;
    } else if (P == 0 && D <= m->gemv_max && in_order) {
        /* one sequence short enough attends with krn_cuda_attn_o, in a graph of its own */
        const int ao = attn_o_for(m, D, h[sv_off(m, SV_LEN)]);
        void **exec = ao ? &m->sv_graph_ao : &m->sv_graph[D];
        if (!*exec) {
            TRY(m, krn_cuda_graph_begin(s), "graph capture");
            st = step_gemv(m, D, ao);
            void *e = NULL;
            lode_status st2 = krn_cuda_graph_end(s, &e);
            if (st) {
                krn_cuda_graph_destroy(e);
                return st;
            }
            if (st2) return fail(m, st2, "graph capture");
            *exec = e;
        }
        TRY(m, krn_cuda_graph_launch(*exec, s), "graph launch");
    } else if (P == 0 && in_order && !m->gg_off && step_graph(m, D) == LODE_OK) {
        /* queued as a graph */
    } else if ((st = step_gemm(m, T, D, P, maxn, NO))) {
        return st;
    }
    if (NO > 0) {
        TRY(m, krn_cuda_d2h(tok, m->sv_tok, (size_t)NO * 4, s), "step tokens");
        TRY(m, krn_cuda_d2h(lp, m->sv_lp, (size_t)NO * 4, s), "step tokens");
    }
    if (host_rows && logits)
        for (int i = 0; i < NO;) {
            if (!host_rows[i]) {
                i++;
                continue;
            }
            int j = i;
            while (j < NO && host_rows[j]) j++;
            size_t V = (size_t)c->vocab;
            TRY(m, krn_cuda_d2h(logits + i * V, m->logits + i * V, (size_t)(j - i) * V * 4, s),
                "step logits");
            i = j;
        }
    TRY(m, krn_cuda_stream_sync(s), "step");
    return LODE_OK;
}

/* ==== the generic backend (engine/backend.h) on the same kernels ============================
 * The engine's model code drives this op by op with f32 activations; it is correct for any
 * batch of sequences (prefill chunks and decode tokens mixed) but neither fused nor
 * graph-captured: eng_cuda_model above is the fast decoder. Attention runs every query
 * token through the split decode kernel with its own causal length and block table. */

typedef struct cuda_be {
    eng_backend base; /* first: the engine sees an eng_backend */
    void *stream;
    krn_cuda_blas *blas;
    lode_status st;
    int32_t *d_i32; /* tokens | pos | slot | seq_len | out_rows | block tables [n][maxb] */
    size_t cap_i32;
    int32_t *h_i32; /* pinned staging of the same */
    size_t cap_h;
    int n_tok, maxb, max_len;
    void *scratch;
    size_t cap_scratch;
    float *acc;
    size_t cap_acc;
} cuda_be;

struct eng_kv {
    eng_kv_desc d;
    void **k, **v;
};

#define BE(be) ((cuda_be *)(be))

static void be_fail(cuda_be *c, lode_status st, const char *what)
{
    if (c->st) return;
    c->st = st;
    lode_seterr(c->base.err, sizeof c->base.err, st, "%s: %s", what, krn_cuda_errmsg());
}

#define BT(c, call, what)                                                                          \
    do {                                                                                           \
        if (!(c)->st) {                                                                            \
            lode_status s_ = (call);                                                               \
            if (s_) be_fail((c), s_, (what));                                                      \
        }                                                                                          \
    } while (0)

/* Grows a device buffer (rare: on the first batches of a larger size). */
static int ensure(cuda_be *c, void **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 1;
    krn_cuda_stream_sync(c->stream);
    krn_cuda_free(*p);
    *p = NULL;
    *cap = 0;
    lode_status st = krn_cuda_malloc(p, need);
    if (st) {
        be_fail(c, st, "GPU scratch");
        return 0;
    }
    *cap = need;
    return 1;
}

static void be_destroy(eng_backend *b)
{
    cuda_be *c = BE(b);
    if (c->stream) krn_cuda_stream_sync(c->stream);
    krn_cuda_free(c->d_i32);
    krn_cuda_host_free(c->h_i32);
    krn_cuda_free(c->scratch);
    krn_cuda_free(c->acc);
    krn_cuda_blas_destroy(c->blas);
    krn_cuda_stream_destroy(c->stream);
    lode_free(c);
}

static void *be_alloc(eng_backend *b, size_t n)
{
    void *p = NULL;
    if (krn_cuda_malloc(&p, n ? n : 16)) return NULL;
    if (krn_cuda_memset(p, 0, n ? n : 16, BE(b)->stream) || krn_cuda_stream_sync(BE(b)->stream)) {
        krn_cuda_free(p);
        return NULL;
    }
    return p;
}

static void be_free(eng_backend *b, void *p)
{
    if (p) krn_cuda_stream_sync(BE(b)->stream);
    krn_cuda_free(p);
}

static lode_status be_upload(eng_backend *b, void *dst, const void *src, size_t n)
{
    cuda_be *c = BE(b);
    lode_status st = krn_cuda_h2d(dst, src, n, c->stream);
    if (!st) st = krn_cuda_stream_sync(c->stream);
    if (st) lode_seterr(b->err, sizeof b->err, st, "upload: %s", krn_cuda_errmsg());
    return st;
}

static lode_status be_download(eng_backend *b, void *dst, const void *src, size_t n)
{
    cuda_be *c = BE(b);
    lode_status st = krn_cuda_d2h(dst, src, n, c->stream);
    if (!st) st = krn_cuda_stream_sync(c->stream);
    if (st) lode_seterr(b->err, sizeof b->err, st, "download: %s", krn_cuda_errmsg());
    return st;
}

/* 1-D F32 tensors (norms, biases) become a device float array; matrices a krn_cuda_mat. */
static int is_vec(const eng_weight *w)
{
    return w->n_out == 1 && w->type == LODE_F32;
}

static lode_status be_weight_load(eng_backend *b, const eng_gguf_tensor *t, eng_weight *out)
{
    cuda_be *c = BE(b);
    memset(out, 0, sizeof *out);
    out->type = (lode_dtype)t->type;
    out->n_in = (int64_t)t->ne[0];
    out->n_out = (int64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    out->data = t->data;
    out->nbytes = (size_t)t->nbytes;
    lode_status st;
    if (is_vec(out)) {
        void *d = NULL;
        if ((st = krn_cuda_malloc(&d, out->nbytes)) ||
            (st = be_upload(b, d, t->data, out->nbytes))) {
            krn_cuda_free(d);
            return lode_seterr(b->err, sizeof b->err, st, "%s: %s", t->name, krn_cuda_errmsg());
        }
        out->priv = d;
        return LODE_OK;
    }
    krn_cuda_mat *m = lode_calloc(1, sizeof *m);
    void *tmp = NULL;
    if (!m) return LODE_ERR_NOMEM;
    if ((st = krn_cuda_mat_alloc(m, t->type, out->n_out, out->n_in)) ||
        (st = krn_cuda_malloc(&tmp, out->nbytes)) ||
        (st = krn_cuda_mat_upload(m, 0, out->n_out, t->data, tmp, c->stream)) ||
        (st = krn_cuda_stream_sync(c->stream))) {
        lode_seterr(b->err, sizeof b->err, st, "%s (%s): %s", t->name, lode_dtype_name(t->type),
                    krn_cuda_errmsg());
        krn_cuda_free(tmp);
        krn_cuda_mat_free(m);
        lode_free(m);
        return st;
    }
    krn_cuda_free(tmp);
    out->priv = m;
    return LODE_OK;
}

static void be_weight_free(eng_backend *b, eng_weight *w)
{
    if (!w->priv) return;
    krn_cuda_stream_sync(BE(b)->stream);
    if (is_vec(w)) {
        krn_cuda_free(w->priv);
    } else {
        krn_cuda_mat_free(w->priv);
        lode_free(w->priv);
    }
    w->priv = NULL;
}

static void be_kv_destroy(eng_backend *b, eng_kv *kv)
{
    if (!kv) return;
    krn_cuda_stream_sync(BE(b)->stream);
    for (int l = 0; l < kv->d.n_layer; l++) {
        if (kv->k) krn_cuda_free(kv->k[l]);
        if (kv->v) krn_cuda_free(kv->v[l]);
    }
    lode_free(kv->k);
    lode_free(kv->v);
    lode_free(kv);
}

static size_t kv_block_bytes(const eng_kv_desc *d)
{
    return (size_t)d->n_kv_head * ENG_KV_BLOCK * d->head_dim * 2;
}

static lode_status be_kv_create(eng_backend *b, const eng_kv_desc *d, eng_kv **out)
{
    *out = NULL;
    eng_kv *kv = lode_calloc(1, sizeof *kv);
    if (!kv) return LODE_ERR_NOMEM;
    kv->d = *d;
    kv->k = lode_calloc((size_t)d->n_layer, sizeof *kv->k);
    kv->v = lode_calloc((size_t)d->n_layer, sizeof *kv->v);
    if (!kv->k || !kv->v) {
        be_kv_destroy(b, kv);
        return LODE_ERR_NOMEM;
    }
    size_t n = kv_block_bytes(d) * (size_t)d->n_blocks;
    for (int l = 0; l < d->n_layer; l++) {
        if (!(kv->k[l] = be_alloc(b, n)) || !(kv->v[l] = be_alloc(b, n))) {
            be_kv_destroy(b, kv);
            return lode_seterr(b->err, sizeof b->err, LODE_ERR_NOMEM, "KV cache: %s",
                               krn_cuda_errmsg());
        }
    }
    *out = kv;
    return LODE_OK;
}

static void be_kv_copy_block(eng_backend *b, eng_kv *kv, int32_t dst, int32_t src)
{
    cuda_be *c = BE(b);
    size_t bb = kv_block_bytes(&kv->d);
    for (int l = 0; l < kv->d.n_layer; l++) {
        BT(c,
           krn_cuda_d2d((char *)kv->k[l] + (size_t)dst * bb, (char *)kv->k[l] + (size_t)src * bb,
                        bb, c->stream),
           "kv copy");
        BT(c,
           krn_cuda_d2d((char *)kv->v[l] + (size_t)dst * bb, (char *)kv->v[l] + (size_t)src * bb,
                        bb, c->stream),
           "kv copy");
    }
}

/* Swap for preemption: one async copy per layer and K/V on the stream, so the copies
 * are ordered with the steps around them. The host pool is the engine's ordinary
 * memory (pageable: the copies stage through the driver; pinned would overlap). */
static void be_kv_swap(eng_backend *b, eng_kv *kv, int to_host, const int32_t *blocks,
                       const int32_t *slots, int n, void *host)
{
    cuda_be *c = BE(b);
    size_t bb = kv_block_bytes(&kv->d), slot = eng_kv_slot_bytes(&kv->d);
    for (int i = 0; i < n; i++) {
        char *h = (char *)host + (size_t)slots[i] * slot;
        for (int l = 0; l < kv->d.n_layer; l++) {
            char *k = (char *)kv->k[l] + (size_t)blocks[i] * bb;
            char *v = (char *)kv->v[l] + (size_t)blocks[i] * bb;
            char *hk = h + (size_t)l * 2 * bb, *hv = hk + bb;
            if (to_host) {
                BT(c, krn_cuda_d2h(hk, k, bb, c->stream), "kv swap out");
                BT(c, krn_cuda_d2h(hv, v, bb, c->stream), "kv swap out");
            } else {
                BT(c, krn_cuda_h2d(k, hk, bb, c->stream), "kv swap in");
                BT(c, krn_cuda_h2d(v, hv, bb, c->stream), "kv swap in");
            }
        }
    }
}

/* offsets into the int arrays of a batch */
#define I_TOK(c)  (0)
#define I_POS(c)  ((c)->n_tok)
#define I_SLOT(c) (2 * (c)->n_tok)
#define I_LEN(c)  (3 * (c)->n_tok)
#define I_ROWS(c) (4 * (c)->n_tok)
#define I_BT(c)   (5 * (c)->n_tok)

static lode_status be_batch_begin(eng_backend *b, const eng_batch *bt)
{
    cuda_be *c = BE(b);
    lode_status st = c->st;
    c->st = LODE_OK;
    if (st) krn_cuda_stream_sync(c->stream);
    int n = bt->n_tokens, maxb = 1, max_len = 1;
    for (int s = 0; s < bt->n_seqs; s++) maxb = LODE_MAX(maxb, bt->seqs[s].n_blocks);
    size_t need = (size_t)n * (5 + (size_t)maxb);
    if (need > c->cap_h) {
        krn_cuda_stream_sync(c->stream);
        krn_cuda_host_free(c->h_i32);
        c->h_i32 = NULL;
        c->cap_h = 0;
        if ((st = krn_cuda_host_alloc((void **)&c->h_i32, need * 4)))
            return lode_seterr(b->err, sizeof b->err, st, "pinned memory");
        c->cap_h = need;
    }
    if (!ensure(c, (void **)&c->d_i32, &c->cap_i32, need * 4)) return c->st;
    krn_cuda_stream_sync(c->stream); /* the staging may still feed the last batch */
    c->n_tok = n;
    c->maxb = maxb;
    int32_t *h = c->h_i32;
    for (int s = 0; s < bt->n_seqs; s++) {
        const eng_batch_seq *q = &bt->seqs[s];
        for (int i = 0; i < q->n_tokens; i++) {
            int t = q->first + i;
            int32_t p = bt->pos[t];
            h[I_TOK(c) + t] = bt->tokens[t];
            h[I_POS(c) + t] = p;
            int blk = p / ENG_KV_BLOCK;
            h[I_SLOT(c) + t] =
                blk < q->n_blocks ? q->block_table[blk] * ENG_KV_BLOCK + p % ENG_KV_BLOCK : -1;
            h[I_LEN(c) + t] = p + 1;
            max_len = LODE_MAX(max_len, p + 1);
            int32_t *row = h + I_BT(c) + (size_t)t * maxb;
            memcpy(row, q->block_table, sizeof(int32_t) * (size_t)q->n_blocks);
            for (int k = q->n_blocks; k < maxb; k++) row[k] = 0;
        }
    }
    for (int i = 0; i < bt->n_out; i++) h[I_ROWS(c) + i] = bt->out_rows[i];
    c->max_len = max_len;
    if ((st = krn_cuda_h2d(c->d_i32, h, need * 4, c->stream)))
        return lode_seterr(b->err, sizeof b->err, st, "batch upload: %s", krn_cuda_errmsg());
    return LODE_OK;
}

static void be_embed(eng_backend *b, const eng_weight *table, const eng_batch *bt, float *x)
{
    cuda_be *c = BE(b);
    BT(c, krn_cuda_embed(table->priv, c->d_i32 + I_TOK(c), bt->n_tokens, x, c->stream), "embed");
}

static void be_rmsnorm(eng_backend *b, float *y, const float *x, const eng_weight *w, int n_rows,
                       int dim, float eps)
{
    cuda_be *c = BE(b);
    BT(c, krn_cuda_rmsnorm(x, w->priv, eps, n_rows, dim, y, LODE_F32, c->stream), "rmsnorm");
}

static void be_add_rmsnorm(eng_backend *b, float *y, float *x, const float *r, const eng_weight *w,
                           int n_rows, int dim, float eps)
{
    cuda_be *c = BE(b);
    BT(c, krn_cuda_add_rmsnorm(y, x, r, w->priv, n_rows, dim, eps, c->stream), "add_rmsnorm");
}

static void be_matmul(eng_backend *b, int n, const eng_weight *const *ws, const float *x,
                      int n_rows, float *const *ys, const eng_weight *const *biases)
{
    cuda_be *c = BE(b);
    if (n_rows <= 0) return;
    int64_t n_in = ws[0]->n_in;
    if (n_rows <= KRN_CUDA_MAX_BATCH && n_in % 4 == 0 && !((uintptr_t)x & 15)) {
        for (int i = 0; i < n; i++) {
            krn_cuda_gemv_args a;
            memset(&a, 0, sizeof a);
            a.w = ws[i]->priv;
            a.batch = n_rows;
            a.x = x;
            a.ldx = n_in;
            a.y = ys[i];
            a.ldy = ws[i]->n_out;
            BT(c, krn_cuda_gemv(&a, c->stream), "matmul (gemv)");
        }
    } else {
        size_t xb = (size_t)n_rows * n_in * 2, wsz = 0;
        for (int i = 0; i < n; i++) wsz = LODE_MAX(wsz, krn_cuda_gemm_scratch_bytes(ws[i]->priv));
        if (!ensure(c, &c->scratch, &c->cap_scratch, xb + wsz + 256)) return;
        BT(c,
           krn_cuda_convert(x, LODE_F32, c->scratch, LODE_BF16, (int64_t)n_rows * n_in, c->stream),
           "matmul (convert)");
        void *wscr = (char *)c->scratch + (xb + 255) / 256 * 256;
        for (int i = 0; i < n; i++)
            BT(c,
               krn_cuda_gemm(c->blas, ws[i]->priv, c->scratch, 0, n_rows, ys[i], ws[i]->n_out, 0,
                             wscr, c->stream),
               "matmul (gemm)");
    }
    if (biases)
        for (int i = 0; i < n; i++)
            if (biases[i] && biases[i]->priv)
                BT(c, krn_cuda_add_bias(ys[i], biases[i]->priv, n_rows, ws[i]->n_out, c->stream),
                   "bias");
}

static void be_rope(eng_backend *b, float *x, int n_head, int head_dim, const eng_batch *bt,
                    const eng_rope *r)
{
    cuda_be *c = BE(b);
    BT(c,
       krn_cuda_rope_f32(x, bt->n_tokens, n_head, head_dim, c->d_i32 + I_POS(c), r->base,
                         r->freq_scale, r->freq_factors, r->n_rot, r->neox, c->stream),
       "rope");
}

static void be_kv_store(eng_backend *b, eng_kv *kv, int li, const float *k, const float *v,
                        const eng_batch *bt)
{
    cuda_be *c = BE(b);
    BT(c,
       krn_cuda_kv_store(kv->k[li], kv->v[li], k, v, bt->n_tokens, kv->d.n_kv_head, kv->d.head_dim,
                         c->d_i32 + I_SLOT(c), c->stream),
       "kv_store");
}

static void be_attention(eng_backend *b, eng_kv *kv, int li, const float *q, int n_head,
                         const eng_batch *bt, float scale, float *out)
{
    cuda_be *c = BE(b);
    int n = bt->n_tokens, hd = kv->d.head_dim;
    int ns = LODE_MIN(KRN_CUDA_ATTN_SPLITS, (c->max_len + 31) / 32);
    size_t accn = (size_t)n * n_head * ns * (hd + 2);
    if (!ensure(c, (void **)&c->acc, &c->cap_acc, accn * 4)) return;
    float *acc = c->acc, *ml = c->acc + (size_t)n * n_head * ns * hd;
    krn_cuda_attn_cfg a;
    memset(&a, 0, sizeof a);
    a.n_head = n_head;
    a.n_kv_head = kv->d.n_kv_head;
    a.head_dim = hd;
    a.scale = scale;
    a.k_cache = kv->k[li];
    a.v_cache = kv->v[li];
    a.block_table = c->d_i32 + I_BT(c);
    a.max_blocks = c->maxb;
    const int32_t *len = c->d_i32 + I_LEN(c);
    BT(c, krn_cuda_attn_decode(&a, q, n, len, ns, acc, ml, c->stream), "attention");
    krn_cuda_attn_parts p = {acc, ml, len, n_head, hd, ns};
    BT(c, krn_cuda_attn_combine(&p, n, out, c->stream), "attention combine");
}

static void be_swiglu(eng_backend *b, float *y, const float *g, const float *u, size_t n)
{
    cuda_be *c = BE(b);
    BT(c, krn_cuda_swiglu2(y, g, u, (int64_t)n, c->stream), "swiglu");
}

static void be_add(eng_backend *b, float *y, const float *a, const float *x, size_t n)
{
    cuda_be *c = BE(b);
    BT(c, krn_cuda_add(y, a, x, (int64_t)n, c->stream), "add");
}

static void be_logits(eng_backend *b, const eng_weight *out, const eng_weight *norm_w,
                      const float *x, int dim, float eps, const eng_batch *bt, float *logits)
{
    cuda_be *c = BE(b);
    int n = bt->n_out;
    if (n <= 0) return;
    if (!ensure(c, &c->scratch, &c->cap_scratch, (size_t)n * dim * 4 + 256)) return;
    BT(c, krn_cuda_gather_rows(c->scratch, x, c->d_i32 + I_ROWS(c), n, dim, c->stream),
       "logits rows");
    for (int r0 = 0; r0 < n; r0 += KRN_CUDA_MAX_BATCH) {
        krn_cuda_gemv_args a;
        memset(&a, 0, sizeof a);
        a.w = out->priv;
        a.batch = LODE_MIN(KRN_CUDA_MAX_BATCH, n - r0);
        a.xmode = KRN_X_RMSNORM;
        a.x = (const float *)c->scratch + (size_t)r0 * dim;
        a.ldx = dim;
        a.norm_w = norm_w->priv;
        a.eps = eps;
        a.y = logits + (size_t)r0 * out->n_out;
        a.ldy = out->n_out;
        BT(c, krn_cuda_gemv(&a, c->stream), "logits");
    }
}

static lode_status be_sync(eng_backend *b)
{
    cuda_be *c = BE(b);
    lode_status st = krn_cuda_stream_sync(c->stream);
    if (st) be_fail(c, st, "sync");
    st = c->st;
    c->st = LODE_OK;
    return st;
}

/* Sizes the activation scratch; the dequantization scratch of the largest quantized matrix
 * and the attention partials grow on the first batches that need them. */
static lode_status be_reserve(eng_backend *b, int max_tokens, int max_width)
{
    cuda_be *c = BE(b);
    size_t need = (size_t)max_tokens * (size_t)max_width * 4 + 256;
    if (!ensure(c, &c->scratch, &c->cap_scratch, need)) {
        lode_status st = c->st;
        c->st = LODE_OK;
        return st;
    }
    return LODE_OK;
}

static const eng_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = be_destroy,
    .alloc = be_alloc,
    .free = be_free,
    .upload = be_upload,
    .download = be_download,
    .weight_load = be_weight_load,
    .weight_free = be_weight_free,
    .kv_create = be_kv_create,
    .kv_destroy = be_kv_destroy,
    .kv_copy_block = be_kv_copy_block,
    .kv_swap = be_kv_swap,
    .reserve = be_reserve,
    .batch_begin = be_batch_begin,
    .embed = be_embed,
    .rmsnorm = be_rmsnorm,
    .add_rmsnorm = be_add_rmsnorm,
    .matmul = be_matmul,
    .rope = be_rope,
    .kv_store = be_kv_store,
    .attention = be_attention,
    .swiglu = be_swiglu,
    .add = be_add,
    .logits = be_logits,
    .sync = be_sync,
};

int eng_backend_cuda_available(void)
{
    return krn_cuda_device_count() > 0;
}

lode_status eng_backend_cuda_create(const eng_backend_opts *o, eng_backend **out, char *err,
                                    size_t errlen)
{
    *out = NULL;
    int dev = o ? o->device : 0;
    krn_cuda_devinfo di;
    if (krn_cuda_device_count() <= dev)
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED, "no CUDA GPU %d", dev);
    lode_status st = krn_cuda_device_info(dev, &di);
    if (!st) st = krn_cuda_prepare();
    if (st) return lode_seterr(err, errlen, st, "CUDA: %s", krn_cuda_errmsg());
    cuda_be *c = lode_calloc(1, sizeof *c);
    if (!c) return LODE_ERR_NOMEM;
    c->base.ops = &cuda_ops;
    if ((st = krn_cuda_stream_create(&c->stream)) ||
        (st = krn_cuda_blas_create(&c->blas, c->stream))) {
        lode_seterr(err, errlen, st, "CUDA: %s", krn_cuda_errmsg());
        be_destroy(&c->base);
        return st;
    }
    *out = &c->base;
    return LODE_OK;
}

#else /* no CUDA in this build */

static const char no_cuda[] = "this lode was built without CUDA (make CUDA=1)";

int eng_cuda_available(void)
{
    return 0;
}
lode_status eng_cuda_model_create(const eng_cuda_config *c, int device, eng_cuda_model **out)
{
    *out = NULL;
    return LODE_ERR_UNSUPPORTED;
}
void eng_cuda_model_destroy(eng_cuda_model *m) {}
const char *eng_cuda_errmsg(const eng_cuda_model *m)
{
    return no_cuda;
}
lode_status eng_cuda_model_set_weight(eng_cuda_model *m, eng_cuda_wkind kind, int layer, int dtype,
                                      const void *data, size_t nbytes)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_model_random(eng_cuda_model *m, int dtype, uint64_t seed)
{
    return LODE_ERR_UNSUPPORTED;
}
int eng_cuda_gguf_supported(eng_gguf *g)
{
    (void)g;
    return 0;
}
lode_status eng_cuda_model_from_gguf(const char *path, int max_ctx, int max_seqs, int max_prefill,
                                     int device, eng_cuda_model **out, char *err, size_t errlen)
{
    *out = NULL;
    return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED, "%s", no_cuda);
}
lode_status eng_cuda_model_open(const char *path, const eng_cuda_config *sizes, int device,
                                eng_cuda_model **out, char *err, size_t errlen)
{
    *out = NULL;
    return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED, "%s", no_cuda);
}
int eng_cuda_kv_blocks(const eng_cuda_model *m)
{
    return 0;
}
size_t eng_cuda_kv_bytes(const eng_cuda_model *m)
{
    return 0;
}
lode_status eng_cuda_step(eng_cuda_model *m, const eng_batch *b, const uint8_t *host_rows,
                          int32_t *tok, float *lp, float *logits)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_model_tune(eng_cuda_model *m)
{
    return LODE_ERR_UNSUPPORTED;
}
const eng_cuda_config *eng_cuda_model_config(const eng_cuda_model *m)
{
    return NULL;
}
lode_status eng_cuda_model_ready(eng_cuda_model *m)
{
    return LODE_ERR_UNSUPPORTED;
}
int eng_cuda_model_persistent(const eng_cuda_model *m)
{
    return 0;
}
int eng_cuda_model_attn_o(const eng_cuda_model *m)
{
    return 0;
}
size_t eng_cuda_model_weight_bytes(const eng_cuda_model *m)
{
    return 0;
}
lode_status eng_cuda_seq_reset(eng_cuda_model *m, int seq)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_prefill(eng_cuda_model *m, int seq, const int32_t *tokens, int n,
                             const eng_cuda_sampling *s, int32_t *next, float *logits)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_decode(eng_cuda_model *m, int batch, const eng_cuda_sampling *s)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_read_tokens(eng_cuda_model *m, int steps, int32_t *out, float *logits)
{
    return LODE_ERR_UNSUPPORTED;
}
int eng_cuda_seq_len(const eng_cuda_model *m, int seq)
{
    return -1;
}
lode_status eng_cuda_forward(eng_cuda_model *m, int seq, const int32_t *tokens, int n, int pos0,
                             int n_out, int out_first, float *logits)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_mark(eng_cuda_model *m)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_elapsed_ms(eng_cuda_model *m, float *ms)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_sync(eng_cuda_model *m)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_profile(eng_cuda_model *m, int batch, eng_cuda_prof_fn fn, void *arg)
{
    return LODE_ERR_UNSUPPORTED;
}
lode_status eng_cuda_profile_prefill(eng_cuda_model *m, int seq, const int32_t *tokens, int n,
                                     eng_cuda_prof_fn fn, void *arg)
{
    return LODE_ERR_UNSUPPORTED;
}

#endif
