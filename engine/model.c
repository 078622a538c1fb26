/*
 * model.c: the llama-family decoder of model.h. Hyperparameters come from the GGUF keys
 * under the architecture's prefix (general.architecture: llama, mistral, qwen2), tensor
 * shapes are checked against them at load, and the forward step is a fixed sequence of
 * backend ops over buffers the runtime allocated once.
 */
#include "engine/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct eng_runtime {
    eng_llama *m;
    eng_backend *be;
    eng_kv *kv;
    int max_tokens, max_out, n_blocks;
    /* backend memory, rows of the step's tokens */
    float *x;      /* (max_tokens, dim) residual stream */
    float *xb;     /* (max_tokens, dim) normed input of a sub-block */
    float *q;      /* (max_tokens, n_head*head_dim) */
    float *k, *v;  /* (max_tokens, n_head_kv*head_dim) */
    float *att;    /* (max_tokens, n_head*head_dim) */
    float *tmp;    /* (max_tokens, dim) sub-block output */
    float *gate;   /* (max_tokens, ffn_dim) */
    float *up;     /* (max_tokens, ffn_dim) */
    float *logits; /* (max_out, n_vocab) */
};

typedef struct arch_info {
    const char *name;
    int neox; /* rope on halves */
} arch_info;

static const arch_info archs[] = {
    {"llama", 0},
    {"mistral", 0},
    {"qwen2", 1},
};

static lode_status key_u32(eng_gguf *g, const char *arch, const char *suffix, int required,
                           uint32_t def, uint32_t *out, char *err, size_t errlen)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    lode_status st = eng_gguf_get_u32(g, key, out);
    if (st == LODE_ERR_NOTFOUND) {
        if (required)
            return lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: required key '%s' is missing",
                               key);
        *out = def;
        return LODE_OK;
    }
    if (st) return lode_seterr(err, errlen, st, "model: %s", eng_gguf_errmsg(g));
    return LODE_OK;
}

static lode_status key_f32(eng_gguf *g, const char *arch, const char *suffix, float def, float *out,
                           char *err, size_t errlen)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    lode_status st = eng_gguf_get_f32(g, key, out);
    if (st == LODE_ERR_NOTFOUND) {
        *out = def;
        return LODE_OK;
    }
    if (st) return lode_seterr(err, errlen, st, "model: %s", eng_gguf_errmsg(g));
    if (!isfinite(*out))
        return lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: key '%s' is not finite", key);
    return LODE_OK;
}

static lode_status read_hparams(eng_gguf *g, eng_hparams *hp, char *err, size_t errlen)
{
    memset(hp, 0, sizeof *hp);
    const char *arch;
    if (eng_gguf_get_str(g, "general.architecture", &arch, NULL) != LODE_OK)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "model: key 'general.architecture' is missing or not a string");
    const arch_info *ai = NULL;
    for (size_t i = 0; i < LODE_ARRAY_LEN(archs); i++)
        if (!strcmp(arch, archs[i].name)) ai = &archs[i];
    if (!ai)
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                           "model: architecture '%.64s' is not supported (llama, mistral, qwen2)",
                           arch);
    snprintf(hp->arch, sizeof hp->arch, "%s", arch);
    uint32_t n_layer, dim, ffn, n_head, n_head_kv, n_ctx, head_dim, n_rot;
    lode_status st;
    if ((st = key_u32(g, arch, "block_count", 1, 0, &n_layer, err, errlen)) ||
        (st = key_u32(g, arch, "embedding_length", 1, 0, &dim, err, errlen)) ||
        (st = key_u32(g, arch, "feed_forward_length", 1, 0, &ffn, err, errlen)) ||
        (st = key_u32(g, arch, "attention.head_count", 1, 0, &n_head, err, errlen)) ||
        (st = key_u32(g, arch, "attention.head_count_kv", 0, n_head, &n_head_kv, err, errlen)) ||
        (st = key_u32(g, arch, "context_length", 0, 2048, &n_ctx, err, errlen)))
        return st;
    if (n_layer == 0 || n_layer > 1024 || dim == 0 || dim > 65536 || ffn == 0 || ffn > 262144 ||
        n_head == 0 || n_head > 1024 || n_head_kv == 0 || n_head % n_head_kv || n_ctx == 0)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "model: inconsistent shape: %u layers, dim %u, ffn %u, %u heads, %u kv "
                           "heads, context %u",
                           n_layer, dim, ffn, n_head, n_head_kv, n_ctx);
    if ((st = key_u32(g, arch, "attention.key_length", 0, dim / n_head, &head_dim, err, errlen)))
        return st;
    uint32_t vlen;
    if ((st = key_u32(g, arch, "attention.value_length", 0, head_dim, &vlen, err, errlen)))
        return st;
    if (head_dim == 0 || head_dim > 512 || head_dim % 2 || vlen != head_dim)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "model: head size %u (value %u) is not supported", head_dim, vlen);
    if ((st = key_u32(g, arch, "rope.dimension_count", 0, head_dim, &n_rot, err, errlen)))
        return st;
    if (n_rot == 0 || n_rot > head_dim || n_rot % 2)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "model: rope.dimension_count %u does not fit head size %u", n_rot,
                           head_dim);
    float eps, base, factor = 1.0f;
    if ((st = key_f32(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &eps, err, errlen)) ||
        (st = key_f32(g, arch, "rope.freq_base", 10000.0f, &base, err, errlen)))
        return st;
    if (!(eps > 0 && eps < 1) || !(base > 1))
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "model: rms epsilon %g or rope base %g out of range", eps, base);
    char key[128];
    const char *stype = NULL;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (eng_gguf_get_str(g, key, &stype, NULL) == LODE_OK && strcmp(stype, "none")) {
        if (strcmp(stype, "linear") && strcmp(stype, "llama3"))
            return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                               "model: rope scaling '%.32s' is not supported (linear, llama3)",
                               stype);
        if (!strcmp(stype, "linear") &&
            (st = key_f32(g, arch, "rope.scaling.factor", 1.0f, &factor, err, errlen)))
            return st;
    } else if (!stype) {
        if ((st = key_f32(g, arch, "rope.scale_linear", 1.0f, &factor, err, errlen))) return st;
    }
    if (!(factor > 0))
        return lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: rope scaling factor %g", factor);
    hp->n_layer = (int)n_layer;
    hp->dim = (int)dim;
    hp->ffn_dim = (int)ffn;
    hp->n_head = (int)n_head;
    hp->n_head_kv = (int)n_head_kv;
    hp->head_dim = (int)head_dim;
    hp->n_ctx_train = (int)n_ctx;
    hp->eps = eps;
    hp->rope_base = base;
    hp->rope_freq_scale = 1.0f / factor;
    hp->rope_n_rot = (int)n_rot;
    hp->rope_neox = ai->neox;
    return LODE_OK;
}

/* Loads a tensor and checks its shape: n_in x n_out (n_out 1 for vectors, which must be
 * F32). required 0: absent is fine (w stays empty). */
static lode_status load_w(eng_llama *m, const char *name, int64_t n_in, int64_t n_out, int required,
                          eng_weight *w, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    const eng_gguf_tensor *t = eng_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (!required) return LODE_OK;
        return lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: tensor '%s' is missing", name);
    }
    int64_t t_out = (int64_t)(t->n_elems / t->ne[0]);
    if ((int64_t)t->ne[0] != n_in || t_out != n_out || t->ne[2] != 1 || t->ne[3] != 1)
        return lode_seterr(err, errlen, LODE_ERR_FORMAT,
                           "model: tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, "
                           "%lld]",
                           name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                           (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                           (long long)n_in, (long long)n_out);
    if (n_out == 1 && t->type != LODE_F32)
        return lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                           "model: vector tensor '%s' has type %s (f32 expected)", name,
                           lode_dtype_name(t->type));
    lode_status st = m->be->ops->weight_load(m->be, t, w);
    if (st) return lode_seterr(err, errlen, st, "model: %s", m->be->err);
    return LODE_OK;
}

static void free_w(eng_llama *m, eng_weight *w)
{
    if (w->data) m->be->ops->weight_free(m->be, w);
}

void eng_llama_free(eng_llama *m)
{
    if (!m) return;
    if (m->layers)
        for (int l = 0; l < m->hp.n_layer; l++) {
            eng_layer *L = &m->layers[l];
            eng_weight *ws[] = {&L->attn_norm, &L->wq,     &L->wk,   &L->wv,
                                &L->bq,        &L->bk,     &L->bv,   &L->wo,
                                &L->ffn_norm,  &L->w_gate, &L->w_up, &L->w_down};
            for (size_t i = 0; i < LODE_ARRAY_LEN(ws); i++) free_w(m, ws[i]);
        }
    lode_free(m->layers);
    free_w(m, &m->tok_embd);
    free_w(m, &m->output_norm);
    if (!m->hp.tied_output) free_w(m, &m->output);
    if (m->freq_factors) m->be->ops->free(m->be, m->freq_factors);
    eng_gguf_close(m->gguf);
    lode_free(m);
}

lode_status eng_llama_load(eng_gguf *g, eng_backend *be, eng_llama **out, char *err, size_t errlen)
{
    *out = NULL;
    eng_llama *m = lode_calloc(1, sizeof *m);
    if (!m) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "model: out of memory");
    m->be = be;
    m->gguf = g;
    lode_status st = read_hparams(g, &m->hp, err, errlen);
    if (st) goto fail;
    eng_hparams *hp = &m->hp;
    const eng_gguf_tensor *te = eng_gguf_find_tensor(g, "token_embd.weight");
    if (!te) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                         "model: tensor 'token_embd.weight' is missing");
        goto fail;
    }
    if (te->ne[1] == 0 || te->ne[1] > (1u << 24)) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: vocabulary of %llu tokens",
                         (unsigned long long)te->ne[1]);
        goto fail;
    }
    hp->n_vocab = (int)te->ne[1];
    uint64_t n_tok;
    if (eng_gguf_get_arr_info(g, "tokenizer.ggml.tokens", NULL, &n_tok) == LODE_OK &&
        n_tok != (uint64_t)hp->n_vocab) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                         "model: tokenizer has %llu tokens but token_embd.weight %d rows",
                         (unsigned long long)n_tok, hp->n_vocab);
        goto fail;
    }
    if (eng_gguf_find_tensor(g, "blk.0.ffn_gate_inp.weight")) {
        st = lode_seterr(err, errlen, LODE_ERR_UNSUPPORTED,
                         "model: mixture-of-experts layers are not supported");
        goto fail;
    }
    int64_t dim = hp->dim, qdim = (int64_t)hp->n_head * hp->head_dim,
            kvdim = (int64_t)hp->n_head_kv * hp->head_dim, ffn = hp->ffn_dim;
    if ((st = load_w(m, "token_embd.weight", dim, hp->n_vocab, 1, &m->tok_embd, err, errlen)) ||
        (st = load_w(m, "output_norm.weight", dim, 1, 1, &m->output_norm, err, errlen)) ||
        (st = load_w(m, "output.weight", dim, hp->n_vocab, 0, &m->output, err, errlen)))
        goto fail;
    if (!m->output.data) {
        hp->tied_output = 1;
        m->output = m->tok_embd;
    }
    if (!(m->layers = lode_calloc((size_t)hp->n_layer, sizeof *m->layers))) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    for (int l = 0; l < hp->n_layer; l++) {
        eng_layer *L = &m->layers[l];
        char n[12][64];
        const char *sfx[12] = {"attn_norm.weight", "attn_q.weight",      "attn_k.weight",
                               "attn_v.weight",    "attn_q.bias",        "attn_k.bias",
                               "attn_v.bias",      "attn_output.weight", "ffn_norm.weight",
                               "ffn_gate.weight",  "ffn_up.weight",      "ffn_down.weight"};
        for (int i = 0; i < 12; i++) snprintf(n[i], sizeof n[i], "blk.%d.%s", l, sfx[i]);
        if ((st = load_w(m, n[0], dim, 1, 1, &L->attn_norm, err, errlen)) ||
            (st = load_w(m, n[1], dim, qdim, 1, &L->wq, err, errlen)) ||
            (st = load_w(m, n[2], dim, kvdim, 1, &L->wk, err, errlen)) ||
            (st = load_w(m, n[3], dim, kvdim, 1, &L->wv, err, errlen)) ||
            (st = load_w(m, n[4], qdim, 1, 0, &L->bq, err, errlen)) ||
            (st = load_w(m, n[5], kvdim, 1, 0, &L->bk, err, errlen)) ||
            (st = load_w(m, n[6], kvdim, 1, 0, &L->bv, err, errlen)) ||
            (st = load_w(m, n[7], qdim, dim, 1, &L->wo, err, errlen)) ||
            (st = load_w(m, n[8], dim, 1, 1, &L->ffn_norm, err, errlen)) ||
            (st = load_w(m, n[9], dim, ffn, 1, &L->w_gate, err, errlen)) ||
            (st = load_w(m, n[10], dim, ffn, 1, &L->w_up, err, errlen)) ||
            (st = load_w(m, n[11], ffn, dim, 1, &L->w_down, err, errlen)))
            goto fail;
        int nb = !!L->bq.data + !!L->bk.data + !!L->bv.data;
        if (nb != 0 && nb != 3) {
            st = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                             "model: layer %d has only some of the q/k/v biases", l);
            goto fail;
        }
        if (l == 0)
            hp->has_qkv_bias = nb == 3;
        else if (hp->has_qkv_bias != (nb == 3)) {
            st = lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: q/k/v biases differ by layer");
            goto fail;
        }
    }
    if (eng_gguf_find_tensor(g, "blk.0.attn_q.weight") &&
        eng_gguf_n_tensors(g) < 2 + 9 * (int64_t)hp->n_layer) {
        st = lode_seterr(err, errlen, LODE_ERR_FORMAT, "model: fewer tensors than layers need");
        goto fail;
    }
    const eng_gguf_tensor *ff = eng_gguf_find_tensor(g, "rope_freqs.weight");
    if (ff) {
        if (ff->type != LODE_F32 || ff->n_elems != (uint64_t)hp->rope_n_rot / 2) {
            st = lode_seterr(err, errlen, LODE_ERR_FORMAT,
                             "model: rope_freqs.weight has %llu %s elements, expected %d f32",
                             (unsigned long long)ff->n_elems, lode_dtype_name(ff->type),
                             hp->rope_n_rot / 2);
            goto fail;
        }
        if (!(m->freq_factors = be->ops->alloc(be, ff->nbytes)) ||
            be->ops->upload(be, m->freq_factors, ff->data, ff->nbytes) != LODE_OK) {
            st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "model: cannot place rope factors");
            goto fail;
        }
    }
    *out = m;
    return LODE_OK;
fail:
    m->gguf = NULL; /* the caller keeps g on failure */
    eng_llama_free(m);
    return st;
}

/* ---- runtime ----------------------------------------------------------------------- */
void eng_runtime_destroy(eng_runtime *rt)
{
    if (!rt) return;
    eng_backend *be = rt->be;
    float *bufs[] = {rt->x,   rt->xb,  rt->q,    rt->k,  rt->v,
                     rt->att, rt->tmp, rt->gate, rt->up, rt->logits};
    for (size_t i = 0; i < LODE_ARRAY_LEN(bufs); i++) be->ops->free(be, bufs[i]);
    be->ops->kv_destroy(be, rt->kv);
    lode_free(rt);
}

lode_status eng_runtime_create(eng_llama *m, int max_tokens, int max_out, int n_blocks,
                               eng_runtime **out, char *err, size_t errlen)
{
    *out = NULL;
    const eng_hparams *hp = &m->hp;
    if (max_tokens <= 0 || max_out <= 0 || max_out > max_tokens || n_blocks <= 0)
        return lode_seterr(err, errlen, LODE_ERR_INVALID, "runtime: bad sizes");
    eng_runtime *rt = lode_calloc(1, sizeof *rt);
    if (!rt) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "runtime: out of memory");
    rt->m = m;
    rt->be = m->be;
    rt->max_tokens = max_tokens;
    rt->max_out = max_out;
    rt->n_blocks = n_blocks;
    eng_backend *be = m->be;
    size_t T = (size_t)max_tokens, f = sizeof(float);
    size_t qdim = (size_t)hp->n_head * hp->head_dim, kvdim = (size_t)hp->n_head_kv * hp->head_dim;
    lode_status st = LODE_OK;
    rt->x = be->ops->alloc(be, T * hp->dim * f);
    rt->xb = be->ops->alloc(be, T * hp->dim * f);
    rt->q = be->ops->alloc(be, T * qdim * f);
    rt->k = be->ops->alloc(be, T * kvdim * f);
    rt->v = be->ops->alloc(be, T * kvdim * f);
    rt->att = be->ops->alloc(be, T * qdim * f);
    rt->tmp = be->ops->alloc(be, T * hp->dim * f);
    rt->gate = be->ops->alloc(be, T * hp->ffn_dim * f);
    rt->up = be->ops->alloc(be, T * hp->ffn_dim * f);
    rt->logits = be->ops->alloc(be, (size_t)max_out * hp->n_vocab * f);
    if (!rt->x || !rt->xb || !rt->q || !rt->k || !rt->v || !rt->att || !rt->tmp || !rt->gate ||
        !rt->up || !rt->logits) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "runtime: no memory for activations");
        goto fail;
    }
    eng_kv_desc d = {hp->n_layer, hp->n_head_kv, hp->head_dim, n_blocks};
    if ((st = be->ops->kv_create(be, &d, &rt->kv))) {
        lode_seterr(err, errlen, st, "runtime: %s", be->err);
        goto fail;
    }
    int width = LODE_MAX(hp->dim, LODE_MAX(hp->ffn_dim, (int)qdim));
    if ((st = be->ops->reserve(be, max_tokens, width))) {
        lode_seterr(err, errlen, st, "runtime: cannot reserve backend scratch");
        goto fail;
    }
    *out = rt;
    return LODE_OK;
fail:
    eng_runtime_destroy(rt);
    return st;
}

int eng_runtime_max_tokens(const eng_runtime *rt)
{
    return rt->max_tokens;
}
int eng_runtime_max_out(const eng_runtime *rt)
{
    return rt->max_out;
}
int eng_runtime_n_blocks(const eng_runtime *rt)
{
    return rt->n_blocks;
}

lode_status eng_runtime_kv_swap(eng_runtime *rt, int to_host, const int32_t *blocks,
                                const int32_t *slots, int n, void *host)
{
    if (!rt->be->ops->kv_swap) return LODE_ERR_UNSUPPORTED;
    if (n > 0) rt->be->ops->kv_swap(rt->be, rt->kv, to_host, blocks, slots, n, host);
    return LODE_OK;
}

size_t eng_runtime_kv_slot_bytes(const eng_runtime *rt)
{
    eng_kv_desc d = {rt->m->hp.n_layer, rt->m->hp.n_head_kv, rt->m->hp.head_dim, rt->n_blocks};
    return eng_kv_slot_bytes(&d);
}

lode_status eng_runtime_forward(eng_runtime *rt, const eng_batch *b, float *logits_host, char *err,
                                size_t errlen)
{
    eng_llama *m = rt->m;
    eng_backend *be = rt->be;
    const eng_backend_ops *o = be->ops;
    const eng_hparams *hp = &m->hp;
    if (b->n_tokens <= 0 || b->n_tokens > rt->max_tokens || b->n_out < 0 || b->n_out > rt->max_out)
        return lode_seterr(err, errlen, LODE_ERR_INVALID,
                           "forward: batch of %d tokens with %d outputs (limits %d, %d)",
                           b->n_tokens, b->n_out, rt->max_tokens, rt->max_out);
    for (int32_t t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= hp->n_vocab)
            return lode_seterr(err, errlen, LODE_ERR_RANGE, "forward: token id %d out of range",
                               b->tokens[t]);
    lode_status st = o->batch_begin(be, b);
    if (st) return lode_seterr(err, errlen, st, "forward: %s", be->err);
    int T = b->n_tokens, dim = hp->dim;
    eng_rope rope = {hp->rope_base, hp->rope_freq_scale, m->freq_factors, hp->rope_n_rot,
                     hp->rope_neox};
    float scale = 1.0f / sqrtf((float)hp->head_dim);
    o->embed(be, &m->tok_embd, b, rt->x);
    o->rmsnorm(be, rt->xb, rt->x, &m->layers[0].attn_norm, T, dim, hp->eps);
    for (int l = 0; l < hp->n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        const eng_weight *qkv[3] = {&L->wq, &L->wk, &L->wv};
        const eng_weight *bias[3] = {&L->bq, &L->bk, &L->bv};
        float *qkv_out[3] = {rt->q, rt->k, rt->v};
        o->matmul(be, 3, qkv, rt->xb, T, qkv_out, hp->has_qkv_bias ? bias : NULL);
        o->rope(be, rt->q, hp->n_head, hp->head_dim, b, &rope);
        o->rope(be, rt->k, hp->n_head_kv, hp->head_dim, b, &rope);
        o->kv_store(be, rt->kv, l, rt->k, rt->v, b);
        o->attention(be, rt->kv, l, rt->q, hp->n_head, b, scale, rt->att);
        const eng_weight *wo[1] = {&L->wo};
        float *wo_out[1] = {rt->tmp};
        o->matmul(be, 1, wo, rt->att, T, wo_out, NULL);
        o->add_rmsnorm(be, rt->xb, rt->x, rt->tmp, &L->ffn_norm, T, dim, hp->eps);
        const eng_weight *gu[2] = {&L->w_gate, &L->w_up};
        float *gu_out[2] = {rt->gate, rt->up};
        o->matmul(be, 2, gu, rt->xb, T, gu_out, NULL);
        o->swiglu(be, rt->gate, rt->gate, rt->up, (size_t)T * hp->ffn_dim);
        const eng_weight *wd[1] = {&L->w_down};
        float *wd_out[1] = {rt->tmp};
        o->matmul(be, 1, wd, rt->gate, T, wd_out, NULL);
        if (l + 1 < hp->n_layer)
            o->add_rmsnorm(be, rt->xb, rt->x, rt->tmp, &m->layers[l + 1].attn_norm, T, dim,
                           hp->eps);
        else
            o->add(be, rt->x, rt->x, rt->tmp, (size_t)T * dim);
    }
    if (b->n_out > 0)
        o->logits(be, &m->output, &m->output_norm, rt->x, dim, hp->eps, b, rt->logits);
    if ((st = o->sync(be))) return lode_seterr(err, errlen, st, "forward: %s", be->err);
    if (b->n_out > 0 && logits_host &&
        (st = o->download(be, logits_host, rt->logits,
                          (size_t)b->n_out * hp->n_vocab * sizeof(float))))
        return lode_seterr(err, errlen, st, "forward: %s", be->err);
    return LODE_OK;
}
