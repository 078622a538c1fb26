/*
 * eng_synth.c: `lode synth`, a valid GGUF llama model of a named shape with reproducible
 * random weights (no download), with a tokenizer section (a synthetic byte-level BPE vocab
 * of the shape's size with merges, ChatML specials and template) so the engine loads it
 * unchanged. --hf DIR also writes the same weights as safetensors + config.json that HF
 * transformers' LlamaForCausalLM loads (float types only); Q and K rows are written in HF's
 * order (GGUF stores them permuted for RoPE on adjacent pairs, HF rotates halves).
 */
#include "cli/cli.h"
#include "cli/eng_shapes.h"
#include "common/lode.h"
#include "engine/gguf_write.h"
#include "kernels/quant.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct synth {
    const eng_shape *sh;
    int type;
    uint64_t seed;
    int64_t n_t;
    int kind[512]; /* per tensor: 0 matrix, 1 norm */
    int64_t rows[512], cols[512];
    char names[512][64];
} synth;

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float unif(uint64_t h)
{
    return (float)(h >> 40) * (1.f / 16777216.f);
}

/* Element e of float tensor t: matrices ~N(0, 0.02^2) (sum of 4 uniforms), norms near 1;
 * rounded to bf16 so the bf16 safetensors copy holds exactly the same numbers. */
static float value(const synth *s, int64_t t, uint64_t e)
{
    uint64_t h = mix(s->seed ^ mix(((uint64_t)t << 40) ^ e));
    float v;
    if (s->kind[t])
        v = 1.f + 0.2f * (unif(h) - 0.5f);
    else
        v = 0.02f * 1.7320508f *
            (unif(h) + unif(mix(h ^ 1)) + unif(mix(h ^ 2)) + unif(mix(h ^ 3)) - 2.f);
    return lode_bf16_to_float(lode_float_to_bf16(v));
}

/* Random GGML block b of a quantized tensor (random quants, scales of a 0.02 spread). */
static void qblock(const synth *s, int64_t t, uint64_t b, uint8_t *out)
{
    size_t bb = lode_dtype_block_bytes(s->type);
    uint64_t h = mix(s->seed ^ mix(((uint64_t)t << 40) ^ b ^ 0x5555));
    for (size_t i = 0; i < bb; i += 8) {
        uint64_t r = mix(h + i);
        memcpy(out + i, &r, LODE_MIN((size_t)8, bb - i));
    }
    float f = 0.5f + unif(h);
    switch (s->type) {
    case LODE_Q4_0:
        ((block_q4_0 *)out)->d = lode_float_to_half(f * 0.02f / 4.6f);
        break;
    case LODE_Q4_1:
        ((block_q4_1 *)out)->d = lode_float_to_half(f * 0.02f / 4.6f);
        ((block_q4_1 *)out)->m = lode_float_to_half(-7.5f * f * 0.02f / 4.6f);
        break;
    case LODE_Q8_0:
        ((block_q8_0 *)out)->d = lode_float_to_half(f * 0.02f / 74.f);
        break;
    case LODE_Q4_K:
        ((block_q4_K *)out)->d = lode_float_to_half(f * 0.02f / 4.6f / 32.f);
        ((block_q4_K *)out)->dmin = lode_float_to_half(f * 0.02f / 4.6f / 32.f);
        break;
    case LODE_Q6_K:
        ((block_q6_K *)out)->d = lode_float_to_half(f * 0.02f / 18.5f / 64.f);
        break;
    }
}

/* Units [u0, u1) of a piece: elements of a float tensor, blocks of a quantized one. */
typedef struct fill_part {
    const synth *s;
    int64_t t;
    int type;
    uint64_t off; /* bytes of the tensor before the piece */
    void *buf;
    size_t u0, u1;
} fill_part;

static void *fill_range(void *arg)
{
    const fill_part *f = arg;
    const synth *s = f->s;
    if (f->type == LODE_F32 || f->type == LODE_F16 || f->type == LODE_BF16) {
        size_t es = f->type == LODE_F32 ? 4 : 2;
        for (size_t i = f->u0; i < f->u1; i++) {
            float v = value(s, f->t, f->off / es + i);
            if (f->type == LODE_F32)
                ((float *)f->buf)[i] = v;
            else if (f->type == LODE_F16)
                ((uint16_t *)f->buf)[i] = lode_float_to_half(v);
            else
                ((uint16_t *)f->buf)[i] = lode_float_to_bf16(v);
        }
        return NULL;
    }
    size_t bb = lode_dtype_block_bytes(f->type);
    for (size_t i = f->u0; i < f->u1; i++)
        qblock(s, f->t, f->off / bb + i, (uint8_t *)f->buf + i * bb);
    return NULL;
}

/* Fills a piece of tensor t. Every value depends only on (seed, tensor, index), so the
 * piece is cut among threads (an 8B model is 16 GB of values: minutes on one core). */
static lode_status fill(void *arg, int64_t t, uint64_t off, void *buf, size_t n)
{
    const synth *s = arg;
    int type = s->kind[t] ? LODE_F32 : s->type;
    size_t unit = type == LODE_F32 ? 4 : type == LODE_F16 || type == LODE_BF16 ? 2 : 0;
    if (!unit) {
        unit = lode_dtype_block_bytes(type);
        if (off % unit || n % unit) return LODE_ERR_INTERNAL; /* pieces are 4 MiB */
    }
    enum { MAXT = 32 };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t units = n / unit, nt = (size_t)LODE_MAX(1, LODE_MIN((long)MAXT, ncpu));
    if (units < 65536) nt = 1;
    fill_part parts[MAXT];
    pthread_t th[MAXT];
    size_t started = 0;
    for (size_t i = 0; i < nt; i++) {
        parts[i] = (fill_part){s, t, type, off, buf, units * i / nt, units * (i + 1) / nt};
        if (i + 1 < nt && pthread_create(&th[i], NULL, fill_range, &parts[i]) == 0)
            started |= (size_t)1 << i;
        else
            fill_range(&parts[i]);
    }
    for (size_t i = 0; i + 1 < nt; i++)
        if (started & ((size_t)1 << i)) pthread_join(th[i], NULL);
    return LODE_OK;
}

/* ---- the synthetic tokenizer ------------------------------------------------------------ */

typedef struct strset {
    char **slot;
    size_t cap;
} strset;

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* 1 when inserted, 0 when present */
static int strset_add(strset *ss, char *s)
{
    size_t i = fnv(s) & (ss->cap - 1);
    while (ss->slot[i]) {
        if (!strcmp(ss->slot[i], s)) return 0;
        i = (i + 1) & (ss->cap - 1);
    }
    ss->slot[i] = s;
    return 1;
}

/* GPT-2's byte -> code point map, UTF-8 encoded into out (returns length). */
static int byte_sym(int b, char *out)
{
    int cp;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
        cp = b;
    } else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

typedef struct vocab {
    char **tok, **merges;
    int32_t *types;
    int n_tok, n_merges;
} vocab;

static void vocab_free(vocab *v)
{
    for (int i = 0; i < v->n_tok; i++) lode_free(v->tok[i]);
    for (int i = 0; i < v->n_merges; i++) lode_free(v->merges[i]);
    lode_free(v->tok);
    lode_free(v->merges);
    lode_free(v->types);
}

static lode_status make_vocab(int n, uint64_t seed, vocab *v)
{
    memset(v, 0, sizeof *v);
    static const char *specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    const int ns = 3, nb = 256;
    strset ss = {NULL, 1};
    while (ss.cap < (size_t)n * 2) ss.cap <<= 1;
    v->tok = lode_calloc((size_t)n, sizeof *v->tok);
    v->merges = lode_calloc((size_t)n, sizeof *v->merges);
    v->types = lode_calloc((size_t)n, sizeof *v->types);
    ss.slot = lode_calloc(ss.cap, sizeof *ss.slot);
    if (!v->tok || !v->merges || !v->types || !ss.slot) goto nomem;
    for (int b = 0; b < nb; b++) {
        char s[4] = {0};
        byte_sym(b, s);
        if (!(v->tok[v->n_tok] = lode_strdup(s))) goto nomem;
        strset_add(&ss, v->tok[v->n_tok]);
        v->types[v->n_tok++] = 1;
    }
    uint64_t h = seed ^ 0xC0FFEE;
    while (v->n_tok < n - ns) {
        int lim = LODE_MIN(v->n_tok, 4096);
        h = mix(h);
        int a = (int)(h % (uint64_t)lim), b = (int)((h >> 32) % (uint64_t)lim);
        size_t la = strlen(v->tok[a]), lb = strlen(v->tok[b]);
        if (la + lb > 24) continue;
        char *cat = lode_malloc(la + lb + 1), *mg = lode_malloc(la + lb + 2);
        if (!cat || !mg) {
            lode_free(cat);
            lode_free(mg);
            goto nomem;
        }
        memcpy(cat, v->tok[a], la);
        memcpy(cat + la, v->tok[b], lb + 1);
        if (!strset_add(&ss, cat)) {
            lode_free(cat);
            lode_free(mg);
            continue;
        }
        snprintf(mg, la + lb + 2, "%s %s", v->tok[a], v->tok[b]);
        v->merges[v->n_merges++] = mg;
        v->types[v->n_tok] = 1;
        v->tok[v->n_tok++] = cat;
    }
    for (int i = 0; i < ns; i++) {
        if (!(v->tok[v->n_tok] = lode_strdup(specials[i]))) goto nomem;
        v->types[v->n_tok++] = 3; /* control */
    }
    lode_free(ss.slot);
    return LODE_OK;
nomem:
    lode_free(ss.slot);
    vocab_free(v);
    return LODE_ERR_NOMEM;
}

/* ---- HF safetensors ---------------------------------------------------------------------- */

static const char *hf_name(const synth *s, int64_t t, char *buf, size_t n)
{
    const char *g = s->names[t];
    int l;
    char part[48];
    if (!strcmp(g, "token_embd.weight")) return "model.embed_tokens.weight";
    if (!strcmp(g, "output_norm.weight")) return "model.norm.weight";
    if (!strcmp(g, "output.weight")) return "lm_head.weight";
    if (sscanf(g, "blk.%d.%47[^.]", &l, part) != 2) return NULL;
    static const char *const map[][2] = {
        {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
        {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
        {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"}};
    for (size_t i = 0; i < LODE_ARRAY_LEN(map); i++)
        if (!strcmp(part, map[i][0])) {
            snprintf(buf, n, "model.layers.%d.%s.weight", l, map[i][1]);
            return buf;
        }
    return NULL;
}

/* HF row r of a Q or K matrix is GGUF row perm(r): GGUF pairs (2i, 2i+1) are HF (i, i+hd/2). */
static int64_t gguf_row(const synth *s, int64_t t, int64_t r)
{
    const char *g = s->names[t];
    if (!strstr(g, "attn_q.") && !strstr(g, "attn_k.")) return r;
    int hd = s->sh->dim / s->sh->n_head, half = hd / 2;
    int64_t h = r / hd, w = r % hd, j = w / half, i = w % half;
    return h * hd + 2 * i + j;
}

static lode_status write_hf(const synth *s, const char *dir, int bos, int eos)
{
    char path[4096], nb[96];
    lode_buf hdr = LODE_BUF_INIT;
    hdr.max = (size_t)64 << 20;
    FILE *f = NULL;
    uint16_t *row = NULL;
    lode_status st = LODE_OK;
    const char *dt = s->type == LODE_F16 ? "F16" : "BF16";
    if (mkdir(dir, 0755) && errno != EEXIST) return LODE_ERR_IO;
    uint64_t off = 0;
    lode_buf_putc(&hdr, '{');
    for (int64_t t = 0; t < s->n_t; t++) {
        uint64_t nbytes = (uint64_t)s->rows[t] * s->cols[t] * 2;
        if (s->kind[t])
            lode_buf_printf(
                &hdr, "\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]},",
                hf_name(s, t, nb, sizeof nb), dt, (long long)s->cols[t], (unsigned long long)off,
                (unsigned long long)(off + nbytes));
        else
            lode_buf_printf(
                &hdr,
                "\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]},",
                hf_name(s, t, nb, sizeof nb), dt, (long long)s->rows[t], (long long)s->cols[t],
                (unsigned long long)off, (unsigned long long)(off + nbytes));
        off += nbytes;
    }
    if ((st = lode_buf_puts(&hdr, "\"__metadata__\":{\"format\":\"pt\"}}"))) goto out;
    while (hdr.len % 8) lode_buf_putc(&hdr, ' ');
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!(f = fopen(path, "wb"))) {
        st = LODE_ERR_IO;
        goto out;
    }
    uint64_t hl = hdr.len;
    if (fwrite(&hl, 8, 1, f) != 1 || fwrite(hdr.data, 1, hdr.len, f) != hdr.len) goto io;
    int64_t maxc = 0;
    for (int64_t t = 0; t < s->n_t; t++) maxc = LODE_MAX(maxc, s->cols[t]);
    if (!(row = lode_malloc((size_t)maxc * 2))) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    for (int64_t t = 0; t < s->n_t; t++) {
        for (int64_t r = 0; r < s->rows[t]; r++) {
            int64_t gr = gguf_row(s, t, r);
            for (int64_t c = 0; c < s->cols[t]; c++) {
                float v = value(s, t, (uint64_t)(gr * s->cols[t] + c));
                row[c] = s->type == LODE_F16 ? lode_float_to_half(v) : lode_float_to_bf16(v);
            }
            if (fwrite(row, 2, (size_t)s->cols[t], f) != (size_t)s->cols[t]) goto io;
        }
    }
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    f = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!(f = fopen(path, "w"))) goto io;
    const eng_shape *sh = s->sh;
    fprintf(
        f,
        "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
        "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
        "  \"vocab_size\": %d,\n  \"tie_word_embeddings\": %s,\n  \"rope_theta\": %.1f,\n"
        "  \"rms_norm_eps\": 1e-05,\n  \"hidden_act\": \"silu\",\n"
        "  \"max_position_embeddings\": 8192,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
        "  \"torch_dtype\": \"%s\"\n}\n",
        sh->dim, sh->ff, sh->n_layer, sh->n_head, sh->n_kv_head, sh->dim / sh->n_head, sh->vocab,
        sh->tied ? "true" : "false", sh->theta, bos, eos,
        s->type == LODE_F16 ? "float16" : "bfloat16");
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    f = NULL;
    goto out;
io:
    st = LODE_ERR_IO;
out:
    if (f) fclose(f);
    lode_free(row);
    lode_buf_free(&hdr);
    return st;
}

/* ---- the command --------------------------------------------------------------------------- */

static int parse_type(const char *s)
{
    for (int t = 0; t < LODE_DTYPE_MAX; t++)
        if (lode_dtype_block_elems(t) && !strcasecmp(lode_dtype_name(t), s)) return t;
    return -1;
}

static void add_t(synth *s, const char *name, int kind, int64_t rows, int64_t cols)
{
    snprintf(s->names[s->n_t], sizeof s->names[0], "%s", name);
    s->kind[s->n_t] = kind;
    s->rows[s->n_t] = rows;
    s->cols[s->n_t] = cols;
    s->n_t++;
}

static int synth_main(int argc, char **argv)
{
    const char *shape = NULL, *type_name = "bf16", *out = NULL, *hf = NULL;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf(
                "usage: lode synth --shape smollm2-135m|llama3.2-1b|llama3-8b [--type bf16|f16|f32|"
                "q4_0|q4_1|q8_0|q4_K|q6_K]\n"
                "                  [--seed N] -o FILE.gguf [--hf DIR]\n"
                "A GGUF llama model of the shape with reproducible random weights and a synthetic\n"
                "tokenizer; --hf DIR also writes them as safetensors + config.json (float "
                "types).\n");
            return CLI_OK;
        }
        if (!v) {
            fprintf(stderr, "synth: %s needs a value\n", a);
            return CLI_USAGE;
        }
        i++;
        if (!strcmp(a, "--shape"))
            shape = v;
        else if (!strcmp(a, "--type"))
            type_name = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--hf"))
            hf = v;
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "synth: unknown option %s\n", a);
            return CLI_USAGE;
        }
    }
    const eng_shape *sh = shape ? eng_shape_find(shape) : NULL;
    int type = parse_type(type_name);
    if (!sh || type < 0 || !out || type == LODE_Q8_1 || type == LODE_Q8_K || type == LODE_Q5_0 ||
        type == LODE_Q5_1 || type == LODE_Q5_K) {
        fprintf(stderr, "synth: need --shape (known name), a supported --type and -o FILE\n");
        return CLI_USAGE;
    }
    if (hf && type != LODE_BF16 && type != LODE_F16) {
        fprintf(stderr, "synth: --hf needs --type bf16 or f16\n");
        return CLI_USAGE;
    }
    synth *s = lode_calloc(1, sizeof *s);
    eng_gguf_writer *w = NULL;
    vocab v = {0};
    int rc = CLI_FAILED;
    lode_status st;
    if (!s) return CLI_FAILED;
    s->sh = sh;
    s->type = type;
    s->seed = seed;
    const int D = sh->dim, hd = sh->dim / sh->n_head, Q = sh->n_head * hd, KVd = sh->n_kv_head * hd;
    if (lode_dtype_row_bytes(type, (size_t)D) == 0 ||
        lode_dtype_row_bytes(type, (size_t)sh->ff) == 0) {
        fprintf(stderr, "synth: %s rows of %d or %d are not whole blocks\n", type_name, D, sh->ff);
        goto done;
    }
    add_t(s, "token_embd.weight", 0, sh->vocab, D);
    add_t(s, "output_norm.weight", 1, 1, D);
    if (!sh->tied) add_t(s, "output.weight", 0, sh->vocab, D);
    for (int l = 0; l < sh->n_layer; l++) {
        char n[64];
#define T(suffix, kind, r, c)                                                                      \
    snprintf(n, sizeof n, "blk.%d." suffix ".weight", l);                                          \
    add_t(s, n, kind, r, c)
        T("attn_norm", 1, 1, D);
        T("attn_q", 0, Q, D);
        T("attn_k", 0, KVd, D);
        T("attn_v", 0, KVd, D);
        T("attn_output", 0, D, Q);
        T("ffn_norm", 1, 1, D);
        T("ffn_gate", 0, sh->ff, D);
        T("ffn_up", 0, sh->ff, D);
        T("ffn_down", 0, D, sh->ff);
#undef T
    }
    if ((st = make_vocab(sh->vocab, seed, &v)) || (st = eng_gguf_writer_create(32, &w))) goto fail;
    char name[80];
    snprintf(name, sizeof name, "lode-synth-%s-%s", sh->name, lode_dtype_name(type));
    const int bos = v.n_tok - 3, eos = v.n_tok - 1;
    static const char tmpl[] =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\\n' }}{% endif %}";
    if ((st = eng_gguf_w_str(w, "general.architecture", "llama")) ||
        (st = eng_gguf_w_str(w, "general.name", name)) ||
        (st = eng_gguf_w_u32(w, "llama.context_length", 8192)) ||
        (st = eng_gguf_w_u32(w, "llama.embedding_length", (uint32_t)D)) ||
        (st = eng_gguf_w_u32(w, "llama.block_count", (uint32_t)sh->n_layer)) ||
        (st = eng_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)sh->ff)) ||
        (st = eng_gguf_w_u32(w, "llama.attention.head_count", (uint32_t)sh->n_head)) ||
        (st = eng_gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)sh->n_kv_head)) ||
        (st = eng_gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)hd)) ||
        (st = eng_gguf_w_f32(w, "llama.rope.freq_base", sh->theta)) ||
        (st = eng_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) ||
        (st = eng_gguf_w_u32(w, "llama.vocab_size", (uint32_t)sh->vocab)) ||
        (st = eng_gguf_w_str(w, "tokenizer.ggml.model", "gpt2")) ||
        (st = eng_gguf_w_str(w, "tokenizer.ggml.pre", sh->pre)) ||
        (st = eng_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok,
                                 (uint64_t)v.n_tok)) ||
        (st = eng_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", v.types, (uint64_t)v.n_tok)) ||
        (st = eng_gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges,
                                 (uint64_t)v.n_merges)) ||
        (st = eng_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos)) ||
        (st = eng_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos)) ||
        (st = eng_gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)bos)) ||
        (st = eng_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 0)) ||
        (st = eng_gguf_w_str(w, "tokenizer.chat_template", tmpl)))
        goto fail;
    for (int64_t t = 0; t < s->n_t; t++) {
        uint64_t ne[2] = {(uint64_t)s->cols[t], (uint64_t)s->rows[t]};
        if ((st = eng_gguf_w_tensor(w, s->names[t], s->kind[t] ? LODE_F32 : type,
                                    s->kind[t] ? 1 : 2, ne, NULL)))
            goto fail;
    }
    if ((st = eng_gguf_writer_save(w, out, fill, s))) goto fail;
    if (hf && (st = write_hf(s, hf, bos, eos))) {
        fprintf(stderr, "synth: writing %s failed: %s\n", hf, lode_strerror(st));
        goto done;
    }
    printf("synth: wrote %s (%s %s, %lld tensors, vocab %d with %d merges)%s%s\n", out, sh->name,
           lode_dtype_name(type), (long long)s->n_t, v.n_tok, v.n_merges, hf ? " and " : "",
           hf ? hf : "");
    rc = CLI_OK;
    goto done;
fail:
    fprintf(stderr, "synth: %s%s%s\n", lode_strerror(st), w ? ": " : "",
            w ? eng_gguf_writer_errmsg(w) : "");
done:
    eng_gguf_writer_destroy(w);
    vocab_free(&v);
    lode_free(s);
    return rc;
}

LODE_CLI_COMMAND(synth, "synth", "write a GGUF model of a named shape with random weights",
                 synth_main)
