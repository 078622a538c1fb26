/*
 * bert.c: the BERT-family sentence encoder behind bert.h. Weights stay in the mmapped
 * safetensors file when they are aligned F32 (converted copies otherwise); projection
 * matrices are packed into GEMM panels at load, Q, K and V into one matrix so one GEMM
 * serves all three; on CPUs with AVX-512 VNNI they are quantized to 16 bits instead and
 * run through krn_gemm_q16, 1.5x to 2x the f32 rate at a cosine distance of at most 2e-5
 * from the f32 vectors (LODE_KERNELS=avx2 keeps f32). A batch is the texts'
 * tokens packed back to back: every projection runs over all tokens of the batch at once
 * (kernels/cpu/gemm.h on pre-packed weights, the embedder's pool), and attention runs per
 * (text, head) over that text's tokens only, so no padding is computed and no mask is
 * needed. Pooling (mean over the text's tokens, or its [CLS] row) and L2 normalization
 * finish each vector.
 */
#include "engine/bert.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/threadpool.h"
#include "engine/ejson.h"
#include "engine/safetensors.h"
#include "engine/wordpiece.h"
#include "kernels/cpu/encoder.h"
#include "kernels/cpu/gemm.h"

#define DEFAULT_BATCH_TOKENS 2048
#define ROWS_PER_TASK        8

typedef struct bert_layer {
    /* projections: f32 panels, or 16-bit ones (m->q16) on CPUs with AVX-512 VNNI */
    krn_packed wqkv;                          /* (3*dim, dim): query, key, value rows */
    float *bqkv;                              /* (3*dim) owned */
    krn_packed wo;                            /* (dim, dim) attention output */
    const float *bo;                          /* (dim) */
    const float *ln1_w;                       /* (dim) */
    const float *ln1_b;                       /* (dim) */
    krn_packed wi;                            /* (n_ff, dim) intermediate */
    const float *bi;                          /* (n_ff) */
    krn_packed wout;                          /* (dim, n_ff) output */
    const float *bout;                        /* (dim) */
    const float *ln2_w;                       /* (dim) */
    const float *ln2_b;                       /* (dim) */
    krn_packed_q16 qkv_q, wo_q, wi_q, wout_q; /* the same four matrices in 16 bits */
} bert_layer;

struct eng_bert {
    char err[256];
    char name[128];
    eng_st *st;
    eng_wordpiece *wp;
    lode_pool *pool;
    int dim, n_layer, n_head, head_dim, n_ff, n_pos, n_types, n_vocab;
    int max_seq, max_tok, max_seqs, pool_cls;
    int q16; /* projections run as 16-bit integer GEMMs (krn_gemm_q16) */
    float eps;
    const char *prefix;    /* "" or "bert." before tensor names */
    const float *tok_emb;  /* (n_vocab, dim) */
    const float *pos_emb;  /* (n_pos, dim) */
    const float *type_emb; /* (n_types, dim) */
    const float *emb_ln_w, *emb_ln_b;
    bert_layer *layers; /* (n_layer) */
    void **owned;       /* converted weights, freed with the model */
    size_t n_owned, cap_owned;
    /* activations, sized for max_tok tokens */
    float *x;       /* (max_tok, dim) hidden state */
    float *qkv;     /* (max_tok, 3*dim) */
    float *ctx;     /* (max_tok, dim) attention output */
    float *tmp;     /* (max_tok, dim) sublayer projection */
    float *ffn;     /* (max_tok, n_ff) */
    float *scratch; /* (pool size, attn_scratch) attention scores and packed K, V */
    void *qscratch; /* krn_gemm_q16_ex's quantized activations, when q16 */
    void *xq;       /* (max_tok, dim) x quantized by the row ops, when q16 */
    void *ffnq;     /* (max_tok, n_ff) ffn quantized by the GEMM that wrote it, when q16 */
    size_t attn_scratch;
    int32_t *ids;                 /* (max_tok) */
    int32_t *pos;                 /* (max_tok) */
    int32_t *stage;               /* (max_seq) one text's ids before it joins the batch */
    int32_t *seq_start, *seq_len; /* (max_seqs) */
};

/* ---- loading ----------------------------------------------------------------------- */

static void *own(eng_bert *m, size_t bytes)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **p = lode_realloc(m->owned, cap * sizeof *p);
        if (!p) return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    void *b = lode_aligned_alloc(64, bytes ? bytes : 64);
    if (b) m->owned[m->n_owned++] = b;
    return b;
}

/* The tensor prefix+name with shape (d0) or (d0, d1) (d1 == 0: 1-D), or NULL with m->err. */
static const eng_st_tensor *find(eng_bert *m, const char *name, int64_t d0, int64_t d1)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", m->prefix, name);
    const eng_st_tensor *t = eng_st_find(m->st, full);
    if (!t) {
        lode_seterr(m->err, sizeof m->err, LODE_ERR_FORMAT, "bert: tensor %s missing", full);
        return NULL;
    }
    int want_dims = d1 ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        lode_seterr(m->err, sizeof m->err, LODE_ERR_FORMAT,
                    "bert: tensor %s has shape [%lld%s%lld], expected [%lld%s%lld]", full,
                    (long long)t->shape[0], t->n_dims > 1 ? ", " : "",
                    t->n_dims > 1 ? (long long)t->shape[1] : 0LL, (long long)d0, d1 ? ", " : "",
                    (long long)d1);
        return NULL;
    }
    if (t->dtype != ENG_ST_F32 && t->dtype != ENG_ST_F16 && t->dtype != ENG_ST_BF16) {
        lode_seterr(m->err, sizeof m->err, LODE_ERR_UNSUPPORTED,
                    "bert: tensor %s is %s (F32, F16 or BF16 needed)", full,
                    eng_st_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

/* The tensor as f32: in the mapping when it is aligned F32, else a converted copy. */
static const float *weight(eng_bert *m, const char *name, int64_t d0, int64_t d1)
{
    const eng_st_tensor *t = find(m, name, d0, d1);
    if (!t) return NULL;
    if (t->dtype == ENG_ST_F32 && ((uintptr_t)t->data & 63) == 0) return t->data;
    float *f = own(m, (size_t)t->n_elems * sizeof *f);
    if (!f) {
        lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "bert: out of memory");
        return NULL;
    }
    eng_st_to_f32(t, f, (size_t)t->n_elems);
    return f;
}

/* Copies a tensor's values, converted to f32, into dst. */
static int copy_into(eng_bert *m, const char *name, int64_t d0, int64_t d1, float *dst)
{
    const eng_st_tensor *t = find(m, name, d0, d1);
    if (!t) return -1;
    eng_st_to_f32(t, dst, (size_t)t->n_elems);
    return 0;
}

/* Packs a projection matrix for krn_gemm_q16 (into q) when m->q16, else for
 * krn_gemm_packed (into out). */
static int pack(eng_bert *m, const float *w, int64_t n_out, int64_t n_in, krn_packed *out,
                krn_packed_q16 *q)
{
    lode_status st = m->q16 ? krn_pack_q16(w, (size_t)n_out, (size_t)n_in, q)
                            : krn_pack(w, (size_t)n_out, (size_t)n_in, -1, out);
    if (st != LODE_OK) {
        lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "bert: out of memory");
        return -1;
    }
    return 0;
}

static lode_status read_json(eng_bert *m, const char *path, int optional, eng_json_doc **out)
{
    *out = NULL;
    lode_status rc = LODE_OK;
    lode_buf b = LODE_BUF_INIT;
    b.max = 16 << 20;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (optional && errno == ENOENT) return LODE_OK;
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_IO, "bert: cannot open %s: %s", path,
                           strerror(errno));
    }
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if ((rc = lode_buf_append(&b, chunk, got))) {
            rc = lode_seterr(m->err, sizeof m->err, rc, "bert: %s is too large", path);
            goto out;
        }
    char jerr[160];
    if ((rc = eng_json_parse(b.data ? b.data : "", b.len, out, jerr, sizeof jerr)))
        rc = lode_seterr(m->err, sizeof m->err, rc, "bert: %s: %s", path, jerr);
    else if (eng_json_root(*out)->type != ENG_JSON_OBJECT) {
        eng_json_free(*out);
        *out = NULL;
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_FORMAT, "bert: %s is not an object", path);
    }
out:
    fclose(f);
    lode_buf_free(&b);
    return rc;
}

static lode_status read_config(eng_bert *m, const char *dir, int want_seq, int *lowercase)
{
    char path[3200];
    eng_json_doc *cfg = NULL, *tok = NULL, *sbert = NULL, *pool = NULL;
    lode_status rc;
    snprintf(path, sizeof path, "%.3000s/config.json", dir);
    if ((rc = read_json(m, path, 0, &cfg))) goto out;
    const eng_json *c = eng_json_root(cfg);
    const char *type = eng_json_get_str(c, "model_type", "bert");
    const char *act = eng_json_get_str(c, "hidden_act", "gelu");
    const char *pet = eng_json_get_str(c, "position_embedding_type", "absolute");
    if (strcmp(type, "bert") != 0 || strcmp(act, "gelu") != 0 || strcmp(pet, "absolute") != 0) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_UNSUPPORTED,
                         "bert: %s: model_type %s, hidden_act %s, position_embedding_type %s "
                         "(bert, gelu, absolute supported)",
                         path, type, act, pet);
        goto out;
    }
    m->dim = (int)eng_json_get_int(c, "hidden_size", 0);
    m->n_layer = (int)eng_json_get_int(c, "num_hidden_layers", 0);
    m->n_head = (int)eng_json_get_int(c, "num_attention_heads", 0);
    m->n_ff = (int)eng_json_get_int(c, "intermediate_size", 0);
    m->n_pos = (int)eng_json_get_int(c, "max_position_embeddings", 0);
    m->n_types = (int)eng_json_get_int(c, "type_vocab_size", 2);
    m->n_vocab = (int)eng_json_get_int(c, "vocab_size", 0);
    m->eps = (float)eng_json_get_num(c, "layer_norm_eps", 1e-12);
    if (m->dim <= 0 || m->dim > 16384 || m->n_layer <= 0 || m->n_layer > 256 || m->n_head <= 0 ||
        m->dim % m->n_head != 0 || m->n_ff <= 0 || m->n_ff > 65536 || m->n_pos < 2 ||
        m->n_pos > 65536 || m->n_types < 1 || m->n_types > 1024 || m->n_vocab <= 0 ||
        m->n_vocab > (1 << 22) || !(m->eps > 0 && m->eps < 1)) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_FORMAT,
                         "bert: %s: sizes missing or out of range", path);
        goto out;
    }
    m->head_dim = m->dim / m->n_head;

    snprintf(path, sizeof path, "%.3000s/tokenizer_config.json", dir);
    if ((rc = read_json(m, path, 1, &tok))) goto out;
    *lowercase = eng_json_get_bool(eng_json_root(tok), "do_lower_case", 1);

    snprintf(path, sizeof path, "%.3000s/sentence_bert_config.json", dir);
    if ((rc = read_json(m, path, 1, &sbert))) goto out;
    int seq = (int)eng_json_get_int(eng_json_root(sbert), "max_seq_length", m->n_pos);
    if (want_seq > 0) seq = want_seq;
    if (seq < 2 || seq > m->n_pos) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_RANGE,
                         "bert: max sequence length %d outside 2..%d", seq, m->n_pos);
        goto out;
    }
    m->max_seq = seq;

    snprintf(path, sizeof path, "%.3000s/1_Pooling/config.json", dir);
    if ((rc = read_json(m, path, 1, &pool))) goto out;
    const eng_json *p = eng_json_root(pool);
    m->pool_cls = eng_json_get_bool(p, "pooling_mode_cls_token", 0);
    int mean = eng_json_get_bool(p, "pooling_mode_mean_tokens", !m->pool_cls);
    if (m->pool_cls == mean || eng_json_get_bool(p, "pooling_mode_max_tokens", 0) ||
        eng_json_get_bool(p, "pooling_mode_mean_sqrt_len_tokens", 0)) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_UNSUPPORTED,
                         "bert: %s: only mean or CLS pooling (one of them) is supported", path);
        goto out;
    }
out:
    eng_json_free(cfg);
    eng_json_free(tok);
    eng_json_free(sbert);
    eng_json_free(pool);
    return rc;
}

static lode_status load_weights(eng_bert *m)
{
    const int64_t d = m->dim, f = m->n_ff;
    m->prefix = eng_st_find(m->st, "embeddings.word_embeddings.weight") ? "" : "bert.";
    if (!(m->tok_emb = weight(m, "embeddings.word_embeddings.weight", m->n_vocab, d)) ||
        !(m->pos_emb = weight(m, "embeddings.position_embeddings.weight", m->n_pos, d)) ||
        !(m->type_emb = weight(m, "embeddings.token_type_embeddings.weight", m->n_types, d)) ||
        !(m->emb_ln_w = weight(m, "embeddings.LayerNorm.weight", d, 0)) ||
        !(m->emb_ln_b = weight(m, "embeddings.LayerNorm.bias", d, 0)))
        return LODE_ERR_FORMAT;
    if (!(m->layers = lode_calloc((size_t)m->n_layer, sizeof *m->layers)))
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "bert: out of memory");
    static const char *const qkv[3] = {"query", "key", "value"};
    for (int l = 0; l < m->n_layer; l++) {
        bert_layer *L = &m->layers[l];
        char n[128];
        const float *w;
#define LW(field, suffix, d0, d1)                                                                  \
    do {                                                                                           \
        snprintf(n, sizeof n, "encoder.layer.%d.%s", l, suffix);                                   \
        if (!(L->field = weight(m, n, d0, d1))) return LODE_ERR_FORMAT;                            \
    } while (0)
#define LP(field, suffix, d0, d1)                                                                  \
    do {                                                                                           \
        snprintf(n, sizeof n, "encoder.layer.%d.%s", l, suffix);                                   \
        if (!(w = weight(m, n, d0, d1)) || pack(m, w, d0, d1, &L->field, &L->field##_q))           \
            return LODE_ERR_FORMAT;                                                                \
    } while (0)
        float *wqkv = own(m, (size_t)(3 * d * d) * sizeof(float));
        L->bqkv = own(m, (size_t)(3 * d) * sizeof(float));
        if (!wqkv || !L->bqkv)
            return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "bert: out of memory");
        for (int k = 0; k < 3; k++) {
            snprintf(n, sizeof n, "encoder.layer.%d.attention.self.%s.weight", l, qkv[k]);
            if (copy_into(m, n, d, d, wqkv + k * d * d)) return LODE_ERR_FORMAT;
            snprintf(n, sizeof n, "encoder.layer.%d.attention.self.%s.bias", l, qkv[k]);
            if (copy_into(m, n, d, 0, L->bqkv + k * d)) return LODE_ERR_FORMAT;
        }
        if (pack(m, wqkv, 3 * d, d, &L->wqkv, &L->qkv_q)) return LODE_ERR_NOMEM;
        LP(wo, "attention.output.dense.weight", d, d);
        LW(bo, "attention.output.dense.bias", d, 0);
        LW(ln1_w, "attention.output.LayerNorm.weight", d, 0);
        LW(ln1_b, "attention.output.LayerNorm.bias", d, 0);
        LP(wi, "intermediate.dense.weight", f, d);
        LW(bi, "intermediate.dense.bias", f, 0);
        LP(wout, "output.dense.weight", d, f);
        LW(bout, "output.dense.bias", d, 0);
        LW(ln2_w, "output.LayerNorm.weight", d, 0);
        LW(ln2_b, "output.LayerNorm.bias", d, 0);
#undef LW
#undef LP
    }
    return LODE_OK;
}

static lode_status alloc_buffers(eng_bert *m)
{
    size_t t = (size_t)m->max_tok, d = (size_t)m->dim;
    m->max_seqs = m->max_tok / 2;
    m->x = own(m, t * d * sizeof(float));
    m->qkv = own(m, t * 3 * d * sizeof(float));
    m->ctx = own(m, t * d * sizeof(float));
    m->tmp = own(m, t * d * sizeof(float));
    m->ffn = own(m, t * (size_t)m->n_ff * sizeof(float));
    m->attn_scratch = krn_attention_scratch((size_t)m->max_seq, (size_t)m->head_dim);
    m->scratch = own(m, (size_t)lode_pool_size(m->pool) * m->attn_scratch * sizeof(float));
    if (m->q16 &&
        (!(m->qscratch = own(m, krn_gemm_q16_scratch(t, (size_t)LODE_MAX(m->n_ff, m->dim)))) ||
         !(m->xq = own(m, krn_gemm_q16_scratch(t, d))) ||
         !(m->ffnq = own(m, krn_gemm_q16_scratch(t, (size_t)m->n_ff)))))
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM, "bert: out of memory");
    m->ids = own(m, t * sizeof(int32_t));
    m->pos = own(m, t * sizeof(int32_t));
    m->stage = own(m, (size_t)m->max_seq * sizeof(int32_t));
    m->seq_start = own(m, (size_t)m->max_seqs * sizeof(int32_t));
    m->seq_len = own(m, (size_t)m->max_seqs * sizeof(int32_t));
    if (!m->x || !m->qkv || !m->ctx || !m->tmp || !m->ffn || !m->scratch || !m->ids || !m->pos ||
        !m->stage || !m->seq_start || !m->seq_len)
        return lode_seterr(m->err, sizeof m->err, LODE_ERR_NOMEM,
                           "bert: out of memory for %d-token batches", m->max_tok);
    return LODE_OK;
}

void eng_bert_destroy(eng_bert *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_owned; i++) lode_aligned_free(m->owned[i]);
    lode_free(m->owned);
    for (int l = 0; m->layers && l < m->n_layer; l++) {
        krn_packed_free(&m->layers[l].wqkv);
        krn_packed_free(&m->layers[l].wo);
        krn_packed_free(&m->layers[l].wi);
        krn_packed_free(&m->layers[l].wout);
        krn_packed_q16_free(&m->layers[l].qkv_q);
        krn_packed_q16_free(&m->layers[l].wo_q);
        krn_packed_q16_free(&m->layers[l].wi_q);
        krn_packed_q16_free(&m->layers[l].wout_q);
    }
    lode_free(m->layers);
    lode_pool_destroy(m->pool);
    eng_wordpiece_destroy(m->wp);
    eng_st_close(m->st);
    lode_free(m);
}

lode_status eng_bert_load(const char *path, const eng_bert_opts *o, eng_bert **out, char *err,
                          size_t errlen)
{
    lode_status rc;
    eng_bert_opts def = {0, 0, 0};
    char dir[4096], file[4096];
    *out = NULL;
    if (!o) o = &def;
    eng_bert *m = lode_calloc(1, sizeof *m);
    if (!m) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "bert: out of memory");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_IO, "bert: cannot open %s: %s", path,
                         strerror(errno));
        goto out;
    }
    size_t pl = strlen(path);
    while (pl > 1 && path[pl - 1] == '/') pl--;
    if (pl > 3000) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID, "bert: model path too long");
        goto out;
    }
    if (S_ISDIR(sb.st_mode)) {
        snprintf(dir, sizeof dir, "%.*s", (int)pl, path);
    } else {
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    }
    if (S_ISDIR(sb.st_mode))
        snprintf(file, sizeof file, "%.3000s/model.safetensors", dir);
    else
        snprintf(file, sizeof file, "%.3000s", path);
    const char *base = strrchr(dir, '/');
    snprintf(m->name, sizeof m->name, "%.100s", base ? base + 1 : dir);

    int lowercase = 1;
    if ((rc = read_config(m, dir, o->max_seq_len, &lowercase))) goto out;
    m->max_tok = o->max_batch_tokens > 0 ? o->max_batch_tokens : DEFAULT_BATCH_TOKENS;
    if (m->max_tok < m->max_seq) m->max_tok = m->max_seq;
    char sub[256];
    if ((rc = eng_st_open(file, &m->st, sub, sizeof sub))) {
        lode_seterr(m->err, sizeof m->err, rc, "bert: %s", sub);
        goto out;
    }
    snprintf(file, sizeof file, "%.3000s/vocab.txt", dir);
    if ((rc = eng_wordpiece_load(file, lowercase, &m->wp, sub, sizeof sub))) {
        lode_seterr(m->err, sizeof m->err, rc, "bert: %s", sub);
        goto out;
    }
    if (eng_wordpiece_vocab_size(m->wp) > m->n_vocab) {
        rc = lode_seterr(m->err, sizeof m->err, LODE_ERR_FORMAT,
                         "bert: vocab.txt has %d tokens, the model %d",
                         eng_wordpiece_vocab_size(m->wp), m->n_vocab);
        goto out;
    }
    m->q16 = krn_gemm_q16_supported();
    if ((rc = load_weights(m))) goto out;
    if ((rc = lode_pool_create(o->n_threads, &m->pool))) {
        lode_seterr(m->err, sizeof m->err, rc, "bert: cannot start %d threads", o->n_threads);
        goto out;
    }
    if ((rc = alloc_buffers(m))) goto out;
out:
    if (rc) {
        lode_seterr(err, errlen, rc, "%s", m->err);
        eng_bert_destroy(m);
        return rc;
    }
    *out = m;
    return LODE_OK;
}

int eng_bert_dim(const eng_bert *m)
{
    return m->dim;
}

int eng_bert_max_seq_len(const eng_bert *m)
{
    return m->max_seq;
}

const char *eng_bert_name(const eng_bert *m)
{
    return m->name;
}

const char *eng_bert_errmsg(const eng_bert *m)
{
    return m->err;
}

lode_status eng_bert_tokenize(const eng_bert *m, const char *text, size_t len, int32_t *ids,
                              int max_ids, int *n_ids)
{
    return eng_wordpiece_encode(m->wp, text, len, ids, LODE_MIN(max_ids, m->max_seq), n_ids, NULL);
}

/* ---- forward ----------------------------------------------------------------------- */

typedef enum row_op { OP_EMBED, OP_ADD_LN1, OP_ADD_LN2, OP_GELU } row_op;

typedef struct row_job {
    eng_bert *m;
    const bert_layer *L;
    row_op op;
    int n_rows;
} row_job;

static void row_task(void *ctx, size_t task, int thread)
{
    const row_job *j = ctx;
    eng_bert *m = j->m;
    const bert_layer *L = j->L;
    size_t d = (size_t)m->dim, f = (size_t)m->n_ff;
    int r0 = (int)task * ROWS_PER_TASK, r1 = LODE_MIN(j->n_rows, r0 + ROWS_PER_TASK);
    for (int r = r0; r < r1; r++) {
        float *x = m->x + (size_t)r * d;
        switch (j->op) {
        case OP_EMBED: {
            const float *te = m->tok_emb + (size_t)m->ids[r] * d;
            const float *pe = m->pos_emb + (size_t)m->pos[r] * d;
            for (size_t i = 0; i < d; i++) x[i] = te[i] + pe[i] + m->type_emb[i];
            krn_layernorm(x, x, m->emb_ln_w, m->emb_ln_b, d, m->eps);
            break;
        }
        case OP_ADD_LN1:
            krn_add_bias_layernorm(x, m->tmp + (size_t)r * d, NULL, L->ln1_w, L->ln1_b, d, m->eps);
            break;
        case OP_ADD_LN2:
            krn_add_bias_layernorm(x, m->tmp + (size_t)r * d, NULL, L->ln2_w, L->ln2_b, d, m->eps);
            break;
        case OP_GELU:
            krn_bias_gelu(m->ffn + (size_t)r * f, NULL, f);
            break;
        }
        /* the next GEMM's input, quantized while the row is in cache */
        if (m->xq && j->op != OP_GELU) krn_q16_rows_set(m->xq, (size_t)j->n_rows, d, (size_t)r, x);
    }
}

static void rows(eng_bert *m, const bert_layer *L, row_op op, int n_rows)
{
    row_job j = {m, L, op, n_rows};
    lode_parallel_for(m->pool, (size_t)(n_rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK, row_task, &j);
}

typedef struct attn_job {
    eng_bert *m;
    int n_seqs;
} attn_job;

static void attn_task(void *ctx, size_t task, int thread)
{
    const attn_job *j = ctx;
    eng_bert *m = j->m;
    size_t d = (size_t)m->dim, hd = (size_t)m->head_dim;
    int s = (int)(task / (size_t)m->n_head), h = (int)(task % (size_t)m->n_head);
    size_t start = (size_t)m->seq_start[s];
    const float *q = m->qkv + start * 3 * d + (size_t)h * hd;
    krn_attention_full(q, q + d, q + 2 * d, 3 * d, (size_t)m->seq_len[s], hd,
                       1.0f / sqrtf((float)hd), m->ctx + start * d + (size_t)h * hd, d,
                       m->scratch + (size_t)thread * m->attn_scratch);
}

/* y (n_tok, w->n_out) = x (n_tok, w->n_in) * w^T + bias, then GELU when gelu. With the
 * 16-bit weights q (when the model was packed so): xq, when not NULL, holds x's rows
 * already quantized (krn_gemm_q16_ex), and yq, when not NULL, receives y's; GELU runs
 * inside the GEMM's tiles. */
static void gemm(eng_bert *m, const krn_packed *w, const krn_packed_q16 *q, const float *x,
                 const void *xq, int n_tok, float *y, const float *bias, int gelu, void *yq)
{
    if (m->q16) {
        krn_gemm_q16_ex(m->pool, q, x, q->n_in, xq, (size_t)n_tok, y, q->n_out, bias, gelu, yq,
                        m->qscratch);
        return;
    }
    krn_gemm_packed(m->pool, w, x, w->n_in, (size_t)n_tok, y, w->n_out, bias);
    if (gelu) rows(m, NULL, OP_GELU, n_tok);
}

/* Runs the batch staged in ids/pos/seq_* and writes its n_seqs vectors to out. */
static lode_status forward(eng_bert *m, int n_tok, int n_seqs, float *out)
{
    const int d = m->dim;
    rows(m, NULL, OP_EMBED, n_tok);
    for (int l = 0; l < m->n_layer; l++) {
        const bert_layer *L = &m->layers[l];
        gemm(m, &L->wqkv, &L->qkv_q, m->x, m->xq, n_tok, m->qkv, L->bqkv, 0, NULL);
        attn_job aj = {m, n_seqs};
        lode_parallel_for(m->pool, (size_t)n_seqs * (size_t)m->n_head, attn_task, &aj);
        gemm(m, &L->wo, &L->wo_q, m->ctx, NULL, n_tok, m->tmp, L->bo, 0, NULL);
        rows(m, L, OP_ADD_LN1, n_tok);
        gemm(m, &L->wi, &L->wi_q, m->x, m->xq, n_tok, m->ffn, L->bi, 1, m->ffnq);
        gemm(m, &L->wout, &L->wout_q, m->ffn, m->ffnq, n_tok, m->tmp, L->bout, 0, NULL);
        rows(m, L, OP_ADD_LN2, n_tok);
    }
    for (int s = 0; s < n_seqs; s++) {
        float *o = out + (size_t)s * (size_t)d;
        const float *x = m->x + (size_t)m->seq_start[s] * (size_t)d;
        int n = m->pool_cls ? 1 : m->seq_len[s];
        for (int i = 0; i < d; i++) o[i] = 0;
        for (int t = 0; t < n; t++)
            for (int i = 0; i < d; i++) o[i] += x[(size_t)t * (size_t)d + (size_t)i];
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)o[i] * o[i];
        /* mean pooling's 1/n cancels in the normalization */
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int i = 0; i < d; i++) o[i] *= inv;
    }
    return LODE_OK;
}

/* Appends text i's ids (k of them) to the staged batch, running the staged batch first
 * when this one would not fit. */
static lode_status stage(eng_bert *m, const int32_t *ids, int k, size_t i, float *out, int *n_tok,
                         int *n_seqs, size_t *first)
{
    if (*n_tok + k > m->max_tok || *n_seqs == m->max_seqs) {
        lode_status rc = forward(m, *n_tok, *n_seqs, out + *first * (size_t)m->dim);
        if (rc) return rc;
        *first = i;
        *n_tok = *n_seqs = 0;
    }
    m->seq_start[*n_seqs] = *n_tok;
    m->seq_len[*n_seqs] = k;
    (*n_seqs)++;
    for (int j = 0; j < k; j++) {
        m->ids[*n_tok + j] = ids[j];
        m->pos[*n_tok + j] = j;
    }
    *n_tok += k;
    return LODE_OK;
}

lode_status eng_bert_embed(eng_bert *m, const char *const *texts, const size_t *lens, size_t n,
                           float *out)
{
    lode_status rc;
    int n_tok = 0, n_seqs = 0;
    size_t first = 0; /* text index of the batch's first sequence */
    for (size_t i = 0; i < n; i++) {
        int k = 0;
        const char *t = texts[i] ? texts[i] : "";
        size_t len = lens ? lens[i] : strlen(t);
        if ((rc = eng_wordpiece_encode(m->wp, t, len, m->stage, m->max_seq, &k, NULL)))
            return lode_seterr(m->err, sizeof m->err, rc, "bert: tokenizing text %zu failed", i);
        if ((rc = stage(m, m->stage, k, i, out, &n_tok, &n_seqs, &first))) return rc;
    }
    if (n_seqs) return forward(m, n_tok, n_seqs, out + first * (size_t)m->dim);
    return LODE_OK;
}

lode_status eng_bert_embed_ids(eng_bert *m, const int32_t *const *ids, const int *n_ids, size_t n,
                               float *out)
{
    lode_status rc;
    int n_tok = 0, n_seqs = 0;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        if (n_ids[i] < 1 || n_ids[i] > m->max_seq)
            return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID,
                               "bert: text %zu has %d tokens (1..%d)", i, n_ids[i], m->max_seq);
        for (int j = 0; j < n_ids[i]; j++)
            if (ids[i][j] < 0 || ids[i][j] >= m->n_vocab)
                return lode_seterr(m->err, sizeof m->err, LODE_ERR_INVALID,
                                   "bert: text %zu: token %d outside the vocabulary", i, ids[i][j]);
        if ((rc = stage(m, ids[i], n_ids[i], i, out, &n_tok, &n_seqs, &first))) return rc;
    }
    if (n_seqs) return forward(m, n_tok, n_seqs, out + first * (size_t)m->dim);
    return LODE_OK;
}
