/*
 * backend_cpu.c: the CPU backend of backend.h on the kernels of kernels/cpu/kernels.h.
 * Weights stay in the GGUF mapping (zero copy); the KV pool and activations are host
 * memory; every op runs synchronously on the caller's thread plus the backend's thread
 * pool. Scratch (quantized activations, normed rows) is sized once in reserve.
 */
#include <string.h>

#include "engine/backend.h"
#include "kernels/cpu/kernels.h"

struct eng_kv {
    eng_kv_desc d;
    size_t block_halves; /* halves of one physical block of one layer (K or V) */
    lode_half **k;       /* (n_layer) -> (n_blocks, n_kv_head, ENG_KV_BLOCK, head_dim) */
    lode_half **v;
};

typedef struct cpu_backend {
    eng_backend base;
    lode_status status; /* first failure since the last sync */
    lode_pool *pool;
    void *ws; /* quantized activations */
    size_t ws_size;
    float *rows; /* (max_tokens, max_width) normed rows for logits */
    size_t rows_size;
    int max_tokens, max_width;
    /* the rope angles of the step's tokens, (max_tokens, 2 * ROPE_MAX) cos then sin: every
     * layer's q and k turn by the same ones */
    float *rope_tab;
    int rope_ok; /* rope_tab holds the current batch's angles for rope_p, rope_hd */
    krn_rope_params rope_p;
    int rope_hd;
} cpu_backend;

#define ROPE_MAX 256 /* pairs per head (krn_rope_half's bound) */

static cpu_backend *cpu(eng_backend *be)
{
    return (cpu_backend *)be;
}

static void latch(eng_backend *be, lode_status st, const char *what)
{
    cpu_backend *c = cpu(be);
    if (st == LODE_OK || c->status != LODE_OK) return;
    c->status = st;
    lode_seterr(be->err, sizeof be->err, st, "cpu backend: %s: %s", what, lode_strerror(st));
}

static void cpu_destroy(eng_backend *be)
{
    cpu_backend *c = cpu(be);
    lode_pool_destroy(c->pool);
    lode_aligned_free(c->ws);
    lode_aligned_free(c->rows);
    lode_aligned_free(c->rope_tab);
    lode_free(c);
}

static void *cpu_alloc(eng_backend *be, size_t n)
{
    void *p = lode_aligned_alloc(64, n ? n : 64);
    if (p) memset(p, 0, n);
    return p;
}

static void cpu_free(eng_backend *be, void *p)
{
    lode_aligned_free(p);
}

static lode_status cpu_copy(eng_backend *be, void *dst, const void *src, size_t n)
{
    if (n) memmove(dst, src, n);
    return LODE_OK;
}

static lode_status cpu_weight_load(eng_backend *be, const eng_gguf_tensor *t, eng_weight *out)
{
    memset(out, 0, sizeof *out);
    if (!krn_weight_type_ok((lode_dtype)t->type))
        return lode_seterr(be->err, sizeof be->err, LODE_ERR_UNSUPPORTED,
                           "cpu backend: tensor '%s' has type %s, which the kernels lack", t->name,
                           lode_dtype_name(t->type));
    out->type = (lode_dtype)t->type;
    out->n_in = (int64_t)t->ne[0];
    out->n_out = (int64_t)(t->n_elems / t->ne[0]);
    out->data = t->data;
    out->nbytes = (size_t)t->nbytes;
    return LODE_OK;
}

static void cpu_weight_free(eng_backend *be, eng_weight *w)
{
    memset(w, 0, sizeof *w);
}

static void cpu_kv_destroy(eng_backend *be, eng_kv *kv)
{
    if (!kv) return;
    for (int l = 0; l < kv->d.n_layer; l++) {
        if (kv->k) lode_aligned_free(kv->k[l]);
        if (kv->v) lode_aligned_free(kv->v[l]);
    }
    lode_free(kv->k);
    lode_free(kv->v);
    lode_free(kv);
}

static lode_status cpu_kv_create(eng_backend *be, const eng_kv_desc *d, eng_kv **out)
{
    *out = NULL;
    if (d->n_layer <= 0 || d->n_kv_head <= 0 || d->head_dim <= 0 || d->n_blocks <= 0)
        return lode_seterr(be->err, sizeof be->err, LODE_ERR_INVALID, "cpu backend: bad KV shape");
    eng_kv *kv = lode_calloc(1, sizeof *kv);
    if (!kv) return LODE_ERR_NOMEM;
    kv->d = *d;
    kv->block_halves = (size_t)d->n_kv_head * ENG_KV_BLOCK * (size_t)d->head_dim;
    size_t bytes = kv->block_halves * (size_t)d->n_blocks * sizeof(lode_half);
    kv->k = lode_calloc((size_t)d->n_layer, sizeof *kv->k);
    kv->v = lode_calloc((size_t)d->n_layer, sizeof *kv->v);
    if (!kv->k || !kv->v) goto nomem;
    for (int l = 0; l < d->n_layer; l++) {
        kv->k[l] = lode_aligned_alloc(64, bytes);
        kv->v[l] = lode_aligned_alloc(64, bytes);
        /* not cleared: attention reads only slots written before, and a large pool stays
         * untouched (not resident) until sequences fill it */
        if (!kv->k[l] || !kv->v[l]) goto nomem;
    }
    *out = kv;
    return LODE_OK;
nomem:
    cpu_kv_destroy(be, kv);
    return lode_seterr(be->err, sizeof be->err, LODE_ERR_NOMEM,
                       "cpu backend: no memory for a KV pool of %d blocks", d->n_blocks);
}

static void cpu_kv_copy_block(eng_backend *be, eng_kv *kv, int32_t dst, int32_t src)
{
    if (dst < 0 || src < 0 || dst >= kv->d.n_blocks || src >= kv->d.n_blocks) {
        latch(be, LODE_ERR_INVALID, "kv_copy_block out of range");
        return;
    }
    for (int l = 0; l < kv->d.n_layer; l++) {
        memcpy(kv->k[l] + (size_t)dst * kv->block_halves, kv->k[l] + (size_t)src * kv->block_halves,
               kv->block_halves * sizeof(lode_half));
        memcpy(kv->v[l] + (size_t)dst * kv->block_halves, kv->v[l] + (size_t)src * kv->block_halves,
               kv->block_halves * sizeof(lode_half));
    }
}

/* The host pool is ordinary memory here, so a swap is a memcpy per layer; the
 * bookkeeping is the scheduler's and the same for every backend. */
static void cpu_kv_swap(eng_backend *be, eng_kv *kv, int to_host, const int32_t *blocks,
                        const int32_t *slots, int n, void *host)
{
    size_t bb = kv->block_halves * sizeof(lode_half), slot = eng_kv_slot_bytes(&kv->d);
    for (int i = 0; i < n; i++) {
        if (blocks[i] < 0 || blocks[i] >= kv->d.n_blocks || slots[i] < 0) {
            latch(be, LODE_ERR_INVALID, "kv_swap block out of range");
            return;
        }
        char *h = (char *)host + (size_t)slots[i] * slot;
        for (int l = 0; l < kv->d.n_layer; l++) {
            char *k = (char *)(kv->k[l] + (size_t)blocks[i] * kv->block_halves);
            char *v = (char *)(kv->v[l] + (size_t)blocks[i] * kv->block_halves);
            char *hk = h + (size_t)l * 2 * bb, *hv = hk + bb;
            if (to_host) {
                memcpy(hk, k, bb);
                memcpy(hv, v, bb);
            } else {
                memcpy(k, hk, bb);
                memcpy(v, hv, bb);
            }
        }
    }
}

static lode_status cpu_reserve(eng_backend *be, int max_tokens, int max_width)
{
    cpu_backend *c = cpu(be);
    if (max_tokens <= 0 || max_width <= 0) return LODE_ERR_INVALID;
    size_t ws = 0;
    for (int t = 0; t < LODE_DTYPE_MAX; t++)
        if (krn_weight_type_ok((lode_dtype)t)) {
            size_t w = krn_matmul_wsize((lode_dtype)t, (size_t)max_tokens, (size_t)max_width);
            if (w > ws) ws = w;
        }
    size_t rows = (size_t)max_tokens * (size_t)max_width * sizeof(float);
    if (ws > c->ws_size) {
        void *p = lode_aligned_alloc(64, ws);
        if (!p) return LODE_ERR_NOMEM;
        lode_aligned_free(c->ws);
        c->ws = p;
        c->ws_size = ws;
    }
    if (rows > c->rows_size) {
        float *p = lode_aligned_alloc(64, rows);
        if (!p) return LODE_ERR_NOMEM;
        lode_aligned_free(c->rows);
        c->rows = p;
        c->rows_size = rows;
    }
    if (max_tokens > c->max_tokens) {
        float *p = lode_aligned_alloc(64, (size_t)max_tokens * 2 * ROPE_MAX * sizeof(float));
        if (!p) return LODE_ERR_NOMEM;
        lode_aligned_free(c->rope_tab);
        c->rope_tab = p;
        c->rope_ok = 0;
    }
    if (max_tokens > c->max_tokens) c->max_tokens = max_tokens;
    if (max_width > c->max_width) c->max_width = max_width;
    return LODE_OK;
}

static lode_status cpu_batch_begin(eng_backend *be, const eng_batch *b)
{
    cpu_backend *c = cpu(be);
    if (b->n_tokens <= 0 || b->n_tokens > c->max_tokens || b->n_out > b->n_tokens)
        return lode_seterr(be->err, sizeof be->err, LODE_ERR_INVALID,
                           "cpu backend: batch of %d tokens (reserved %d)", b->n_tokens,
                           c->max_tokens);
    c->rope_ok = 0;
    return LODE_OK;
}

static size_t row_bytes(const eng_weight *w)
{
    return lode_dtype_row_bytes(w->type, (size_t)w->n_in);
}

static void cpu_embed(eng_backend *be, const eng_weight *table, const eng_batch *b, float *x)
{
    size_t rb = row_bytes(table);
    for (int32_t t = 0; t < b->n_tokens; t++) {
        int32_t id = b->tokens[t];
        if (id < 0 || id >= table->n_out) {
            latch(be, LODE_ERR_RANGE, "token id out of the vocabulary");
            return;
        }
        latch(be,
              krn_dequantize_row(table->type, (const char *)table->data + (size_t)id * rb,
                                 x + (size_t)t * (size_t)table->n_in, (size_t)table->n_in),
              "embed");
    }
}

static void cpu_rmsnorm(eng_backend *be, float *y, const float *x, const eng_weight *w, int n_rows,
                        int dim, float eps)
{
    for (int r = 0; r < n_rows; r++)
        krn_rmsnorm(y + (size_t)r * dim, x + (size_t)r * dim, w->data, (size_t)dim, eps);
}

static void cpu_add_rmsnorm(eng_backend *be, float *y, float *x, const float *r,
                            const eng_weight *w, int n_rows, int dim, float eps)
{
    for (int i = 0; i < n_rows; i++)
        krn_add_rmsnorm(y + (size_t)i * dim, x + (size_t)i * dim, r + (size_t)i * dim, w->data,
                        (size_t)dim, eps);
}

static void add_bias(float *y, const eng_weight *bias, int n_rows, size_t n_out)
{
    for (int r = 0; r < n_rows; r++) krn_add(y + r * n_out, y + r * n_out, bias->data, n_out);
}

static void cpu_matmul(eng_backend *be, int n, const eng_weight *const *ws, const float *x,
                       int n_rows, float *const *ys, const eng_weight *const *biases)
{
    cpu_backend *c = cpu(be);
    if (n_rows > c->max_tokens || ws[0]->n_in > c->max_width) {
        latch(be, LODE_ERR_INVALID, "matmul larger than reserved");
        return;
    }
    size_t n_in = (size_t)ws[0]->n_in;
    lode_dtype act = krn_vec_dot_type(ws[0]->type);
    int shared = n > 1 && act != LODE_F32;
    for (int i = 1; i < n && shared; i++)
        if (krn_vec_dot_type(ws[i]->type) != act || (size_t)ws[i]->n_in != n_in) shared = 0;
    if (shared) {
        latch(be,
              krn_quantize_acts(c->pool, ws[0]->type, x, n_in, (size_t)n_rows, n_in, c->ws,
                                c->ws_size),
              "quantize activations");
        /* Q, K and V (or gate and up) in one parallel region: fewer waits at its end, and
         * the small K and V share their tasks' balance with Q */
        krn_mm mms[8];
        for (int i = 0; i < n && i < 8; i++)
            mms[i] = (krn_mm){ws[i]->type, ws[i]->data, (size_t)ws[i]->n_out, ys[i],
                              (size_t)ws[i]->n_out};
        latch(be,
              n <= 8
                  ? krn_matmul_q_multi(c->pool, mms, (size_t)n, n_in, c->ws, n_in, (size_t)n_rows)
                  : LODE_ERR_INVALID,
              "matmul");
    } else {
        for (int i = 0; i < n; i++)
            latch(be,
                  krn_matmul(c->pool, ws[i]->type, ws[i]->data, (size_t)ws[i]->n_out,
                             (size_t)ws[i]->n_in, x, (size_t)ws[i]->n_in, (size_t)n_rows, ys[i],
                             (size_t)ws[i]->n_out, c->ws, c->ws_size),
                  "matmul");
    }
    if (biases)
        for (int i = 0; i < n; i++)
            if (biases[i] && biases[i]->data)
                add_bias(ys[i], biases[i], n_rows, (size_t)ws[i]->n_out);
}

static void cpu_rope(eng_backend *be, float *x, int n_head, int head_dim, const eng_batch *b,
                     const eng_rope *r)
{
    cpu_backend *c = cpu(be);
    krn_rope_params p = {r->base, r->freq_scale, r->freq_factors, (size_t)r->n_rot, r->neox};
    size_t stride = (size_t)n_head * (size_t)head_dim;
    const krn_rope_params *o = &c->rope_p;
    if (!c->rope_ok || c->rope_hd != head_dim || o->base != p.base ||
        o->freq_scale != p.freq_scale || o->freq_factors != p.freq_factors || o->n_rot != p.n_rot ||
        o->neox != p.neox) {
        for (int32_t t = 0; t < b->n_tokens; t++) {
            float *cs = c->rope_tab + (size_t)t * 2 * ROPE_MAX;
            krn_rope_angles(cs, cs + ROPE_MAX, (size_t)head_dim, b->pos[t], &p);
        }
        c->rope_p = p;
        c->rope_hd = head_dim;
        c->rope_ok = 1;
    }
    for (int32_t t = 0; t < b->n_tokens; t++) {
        const float *cs = c->rope_tab + (size_t)t * 2 * ROPE_MAX;
        krn_rope_apply(x + (size_t)t * stride, (size_t)n_head, (size_t)head_dim, cs, cs + ROPE_MAX,
                       &p);
    }
}

static void cpu_kv_store(eng_backend *be, eng_kv *kv, int layer, const float *k, const float *v,
                         const eng_batch *b)
{
    size_t kvdim = (size_t)kv->d.n_kv_head * (size_t)kv->d.head_dim;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const eng_batch_seq *sq = &b->seqs[s];
        int64_t need = ((int64_t)sq->pos0 + sq->n_tokens + ENG_KV_BLOCK - 1) / ENG_KV_BLOCK;
        if (need > sq->n_blocks) {
            latch(be, LODE_ERR_RANGE, "block table shorter than the sequence");
            return;
        }
        for (int32_t i = 0; i < sq->n_tokens; i++) {
            int32_t t = sq->first + i;
            int32_t blk = sq->block_table[(sq->pos0 + i) / ENG_KV_BLOCK];
            if (blk < 0 || blk >= kv->d.n_blocks) {
                latch(be, LODE_ERR_RANGE, "physical block out of the pool");
                return;
            }
            krn_kv_store(kv->k[layer], kv->v[layer], sq->block_table, (size_t)kv->d.n_kv_head,
                         (size_t)kv->d.head_dim, sq->pos0 + i, k + (size_t)t * kvdim,
                         v + (size_t)t * kvdim);
        }
    }
}

static void cpu_attention(eng_backend *be, eng_kv *kv, int layer, const float *q, int n_head,
                          const eng_batch *b, float scale, float *out)
{
    cpu_backend *c = cpu(be);
    size_t qdim = (size_t)n_head * (size_t)kv->d.head_dim;
    krn_attn_args args[64];
    size_t n = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const eng_batch_seq *sq = &b->seqs[s];
        args[n++] = (krn_attn_args){
            .q = q + (size_t)sq->first * qdim,
            .q_stride = qdim,
            .k_cache = kv->k[layer],
            .v_cache = kv->v[layer],
            .block_table = sq->block_table,
            .n_q = (size_t)sq->n_tokens,
            .pos0 = sq->pos0,
            .n_head = (size_t)n_head,
            .n_kv_head = (size_t)kv->d.n_kv_head,
            .head_dim = (size_t)kv->d.head_dim,
            .scale = scale,
            .several_end = sq->n_prompt > 0   ? (sq->n_prompt >= 2 ? sq->n_prompt : 0)
                           : b->n_tokens >= 2 ? INT64_MAX
                                              : 0,
            .out = out + (size_t)sq->first * qdim,
            .out_stride = qdim,
        };
        if (n == LODE_ARRAY_LEN(args) || s + 1 == b->n_seqs) {
            latch(be, krn_attention_many(c->pool, args, n), "attention");
            n = 0;
        }
    }
}

static void cpu_swiglu(eng_backend *be, float *y, const float *g, const float *u, size_t n)
{
    krn_silu_mul(y, g, u, n);
}

static void cpu_add(eng_backend *be, float *y, const float *a, const float *b, size_t n)
{
    krn_add(y, a, b, n);
}

static void cpu_logits(eng_backend *be, const eng_weight *out, const eng_weight *norm_w,
                       const float *x, int dim, float eps, const eng_batch *b, float *logits)
{
    cpu_backend *c = cpu(be);
    if (b->n_out <= 0) return;
    if (b->n_out > c->max_tokens || dim > c->max_width) {
        latch(be, LODE_ERR_INVALID, "logits larger than reserved");
        return;
    }
    for (int32_t i = 0; i < b->n_out; i++)
        krn_rmsnorm(c->rows + (size_t)i * dim, x + (size_t)b->out_rows[i] * dim, norm_w->data,
                    (size_t)dim, eps);
    latch(be,
          krn_matmul(c->pool, out->type, out->data, (size_t)out->n_out, (size_t)dim, c->rows,
                     (size_t)dim, (size_t)b->n_out, logits, (size_t)out->n_out, c->ws, c->ws_size),
          "logits");
}

static lode_status cpu_sync(eng_backend *be)
{
    cpu_backend *c = cpu(be);
    lode_status st = c->status;
    c->status = LODE_OK;
    return st;
}

static const eng_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .weight_load = cpu_weight_load,
    .weight_free = cpu_weight_free,
    .kv_create = cpu_kv_create,
    .kv_destroy = cpu_kv_destroy,
    .kv_copy_block = cpu_kv_copy_block,
    .kv_swap = cpu_kv_swap,
    .reserve = cpu_reserve,
    .batch_begin = cpu_batch_begin,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .add_rmsnorm = cpu_add_rmsnorm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .logits = cpu_logits,
    .sync = cpu_sync,
};

lode_status eng_backend_cpu_create(const eng_backend_opts *o, eng_backend **out, char *err,
                                   size_t errlen)
{
    *out = NULL;
    cpu_backend *c = lode_calloc(1, sizeof *c);
    if (!c) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "cpu backend: out of memory");
    c->base.ops = &cpu_ops;
    lode_status st = lode_pool_create(o ? o->n_threads : 0, &c->pool);
    if (st) {
        lode_free(c);
        return lode_seterr(err, errlen, st, "cpu backend: cannot start its threads");
    }
    *out = &c->base;
    return LODE_OK;
}

/* The thread count of a CPU backend (for reports); 1 for other backends. */
int eng_backend_cpu_threads(const eng_backend *be)
{
    return be && be->ops == &cpu_ops ? lode_pool_size(((const cpu_backend *)be)->pool) : 1;
}

lode_pool *eng_backend_cpu_pool(eng_backend *be)
{
    return be && be->ops == &cpu_ops ? ((cpu_backend *)be)->pool : NULL;
}
