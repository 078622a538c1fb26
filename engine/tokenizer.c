/*
 * tokenizer.c: GGUF vocabularies and their tokenizers (see tokenizer.h).
 *
 * The behaviour follows llama.cpp's (the reference of the fixtures), step by step:
 *  1. special tokens (control, user-defined, unknown; control and unknown only when
 *     parse_special) are cut out of the raw bytes, longest token text first, each at every
 *     leftmost non-overlapping occurrence in the text that is left;
 *  2. BPE: each remaining fragment is read as code points (a bad byte is U+FFFD), split by
 *     the pre-tokenizer regexes in turn (matches and the gaps between them both become
 *     pieces), each piece is mapped byte -> printable code point (GPT-2's byte-level
 *     alphabet) and merged pairwise by lowest merge rank, leftmost first;
 *     SPM: spaces become U+2581 (with a prefix space after BOS/special tokens), characters
 *     are merged pairwise by highest token score, and what forms no token falls back to
 *     <0xXX> byte tokens.
 */
#include "engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/gguf.h"

#define MAX_REGEX 6

/* ---- hashing ---------------------------------------------------------------------- */
static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}
#define HASH_SEED 14695981039346656037ull

static size_t table_size_for(size_t n)
{
    size_t sz = 16;
    while (sz < n * 2 + 1) sz <<= 1;
    return sz;
}

/* A BPE merge: left and right slices of the merge blob, and its rank. */
typedef struct merge_ent {
    uint32_t loff, llen, roff, rlen;
    int32_t rank;
} merge_ent;

/* A pre-tokenizer: the llama.cpp names that select it and its regexes, applied in turn. */
typedef struct pre_def {
    const char *names;                /* '|'-separated */
    const char *regex[MAX_REGEX + 1]; /* NULL-terminated */
    bool ignore_merges;
    bool add_bos;
} pre_def;

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_BLOOM " ?[^(\\s|.,!?…。，、।۔،)]+"
#define RE_TEKKEN                                                                                  \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?(" \
    "(?=["                                                                                         \
    "\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| "                                           \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|"                                    \
    "\\s+"
#define RE_GPT4O                                                                                   \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]" \
    "|'[vV][eE]|"                                                                                  \
    "'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" \
    "(?:'[sS]|"                                                                                    \
    "'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| "                              \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|"                                                \
    "\\s+(?!\\S)|\\s+"
#define RE_BAILING                                                                                 \
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "            \
    "?[^\\s\\p{L}\\p{N}]+["                                                                        \
    "\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"
#define RE_SEED_CODER                                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{" \
    "N}{1}| ?[^"                                                                                   \
    "\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const pre_def PRE_DEFS[] = {
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}, 0, 0},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", {RE_LLAMA3, NULL}, 1, 1},
    {"dbrx|smaug-bpe|glm4|chatglm-bpe", {RE_LLAMA3, NULL}, 0, 0},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|jina-v1-en|"
     "jina-v2-code|roberta-bpe|mpt|olmo|jais|trillion|exaone4",
     {RE_GPT2, NULL},
     0,
     0},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b",
     {"\\p{N}", RE_GPT2, NULL},
     0,
     0},
    {"qwen2|deepseek-r1-qwen|stablelm2|hunyuan|megrez", {RE_QWEN2, NULL}, 0, 0},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL}, 0, 0},
    {"poro-chat|bloom|gpt3-finnish", {RE_BLOOM, NULL}, 0, 0},
    {"viking", {RE_BLOOM, "\\p{N}", NULL}, 0, 0},
    {"tekken", {RE_TEKKEN, NULL}, 1, 1},
    {"gpt-4o|llama4", {RE_GPT4O, NULL}, 0, 0},
    {"bailingmoe", {RE_BAILING, NULL}, 0, 0},
    {"seed-coder", {RE_SEED_CODER, NULL}, 0, 0},
    /* the long patterns stay whole, as llama.cpp writes them */
    // clang-format off
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+", NULL},
     0,
     0},
    {"deepseek-coder",
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}", NULL},
     0,
     0},
    /* llama.cpp's tables leave '~' out of \p{S}: so does this copy */
    {"deepseek-v3|hunyuan-dense",
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|(?:[^\r\n\\p{L}\\p{P}\\p{S}]|~)?[\\p{L}\\p{M}]+| ?(?:(?!~)[\\p{P}\\p{S}])+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
      NULL},
     0,
     0},
    // clang-format on
};

/* Texts llama.cpp treats as end of generation (and forces to control type). */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",        "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>",   "_<EOT>",     "<|end_of_text|>", "<end_of_utterance>",
};
/* Texts searched, in this order, for the end-of-turn id when the GGUF names none. */
static const char *const EOT_TEXTS[] = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<EOT>",      "_<EOT>",  "<end_of_utterance>",
};

struct eng_vocab {
    eng_vocab_type type;
    int32_t n;
    char *text;      /* all token texts, back to back */
    uint32_t *toff;  /* [n+1] offsets into text */
    uint8_t *ttype;  /* [n] eng_token_type */
    float *scores;   /* [n] */
    char *piece;     /* all pieces (special ones rendered), back to back */
    uint32_t *poff;  /* [n+1] */
    uint8_t *is_eog; /* [n] */
    size_t max_piece;
    int32_t *tok_table; /* open addressing, text -> id, -1 empty */
    size_t tok_cap;
    /* BPE merges */
    char *mtext;
    merge_ent *merges;
    int32_t n_merges;
    int32_t *merge_table; /* index into merges, -1 empty */
    size_t merge_cap;
    /* special tokens in matching order (longest text first) */
    int32_t *special;
    int32_t n_special;
    /* pre-tokenizer */
    pcre2_general_context *gctx;
    pcre2_code *re[MAX_REGEX];
    int n_re;
    bool ignore_merges;
    /* byte-level alphabet: byte -> UTF-8 of its code point; code point -> byte */
    char byte_utf8[256][3];
    uint8_t byte_utf8_len[256];
    int16_t cp_to_byte[512];
    eng_token bos, eos, unk, pad, eot, eom;
    bool add_bos, add_eos, add_space_prefix;
};

/* ---- small utilities ---------------------------------------------------------------- */
static void *pcre_alloc(size_t n, void *ud)
{
    (void)ud;
    return lode_malloc(n);
}
static void pcre_free(void *p, void *ud)
{
    (void)ud;
    lode_free(p);
}

static size_t utf8_put(char *dst, uint32_t cp)
{
    unsigned char *d = (unsigned char *)dst;
    if (cp < 0x80) {
        d[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (unsigned char)(0xC0 | (cp >> 6));
        d[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (unsigned char)(0xE0 | (cp >> 12));
        d[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (unsigned char)(0xF0 | ((cp >> 18) & 0x07));
    d[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the UTF-8 sequence a lead byte announces, read leniently (llama.cpp's
 * unicode_len_utf8): continuation and invalid bytes count as 1. */
static size_t utf8_len_lenient(unsigned char c)
{
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* Decodes one code point the way llama.cpp does: continuation bits are checked but not
 * overlongs or surrogates; a bad sequence consumes one byte and yields U+FFFD. */
static uint32_t utf8_next_lenient(const unsigned char *s, size_t n, size_t *i)
{
    size_t k = *i;
    unsigned c = s[k];
    if (c < 0x80) {
        *i = k + 1;
        return c;
    }
    size_t len;
    uint32_t cp;
    if (!(c & 0x40)) {
        goto bad;
    } else if (!(c & 0x20)) {
        len = 2, cp = c & 0x1F;
    } else if (!(c & 0x10)) {
        len = 3, cp = c & 0x0F;
    } else if (!(c & 0x08)) {
        len = 4, cp = c & 0x07;
    } else {
        goto bad;
    }
    if (k + len > n) goto bad;
    for (size_t j = 1; j < len; j++) {
        if ((s[k + j] & 0xC0) != 0x80) goto bad;
        cp = (cp << 6) | (s[k + j] & 0x3F);
    }
    *i = k + len;
    return cp;
bad:
    *i = k + 1;
    return 0xFFFD;
}

static lode_status seterr(char *err, size_t errlen, lode_status st, const char *fmt, const char *a)
{
    if (err && errlen) snprintf(err, errlen, fmt, a ? a : "");
    return st;
}

/* ---- lookups ------------------------------------------------------------------------ */
eng_token eng_vocab_find(const eng_vocab *v, const char *s, size_t n)
{
    if (!v || (!s && n)) return ENG_TOKEN_NONE;
    size_t mask = v->tok_cap - 1;
    for (size_t i = hash_bytes(HASH_SEED, s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = v->tok_table[i];
        if (id < 0) return ENG_TOKEN_NONE;
        size_t len = v->toff[id + 1] - v->toff[id];
        if (len == n && memcmp(v->text + v->toff[id], s, n) == 0) return id;
    }
}

static uint64_t merge_hash(const char *l, size_t ln, const char *r, size_t rn)
{
    uint64_t h = hash_bytes(HASH_SEED, l, ln);
    h = hash_bytes(h ^ 0x9E3779B97F4A7C15ull, "\xff", 1);
    return hash_bytes(h, r, rn);
}

static int32_t merge_rank(const eng_vocab *v, const char *l, size_t ln, const char *r, size_t rn)
{
    size_t mask = v->merge_cap - 1;
    for (size_t i = merge_hash(l, ln, r, rn) & mask;; i = (i + 1) & mask) {
        int32_t k = v->merge_table[i];
        if (k < 0) return -1;
        const merge_ent *m = &v->merges[k];
        if (m->llen == ln && m->rlen == rn && memcmp(v->mtext + m->loff, l, ln) == 0 &&
            memcmp(v->mtext + m->roff, r, rn) == 0)
            return m->rank;
    }
}

/* ---- construction -------------------------------------------------------------------- */
void eng_vocab_desc_init(eng_vocab_desc *d)
{
    memset(d, 0, sizeof *d);
    d->bos = d->eos = d->unk = d->pad = d->eot = d->eom = ENG_TOKEN_NONE;
    d->add_bos = d->add_eos = d->add_space_prefix = -1;
}

static const pre_def *find_pre(const char *name)
{
    if (!name || !*name) name = "default";
    size_t nl = strlen(name);
    for (size_t i = 0; i < LODE_ARRAY_LEN(PRE_DEFS); i++) {
        const char *p = PRE_DEFS[i].names;
        while (*p) {
            const char *e = strchr(p, '|');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == nl && memcmp(p, name, nl) == 0) return &PRE_DEFS[i];
            p += l + (e ? 1 : 0);
        }
    }
    return NULL;
}

static void build_byte_map(eng_vocab *v)
{
    int n = 0;
    for (int i = 0; i < 512; i++) v->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            cp = (uint32_t)b;
        else
            cp = 256u + (uint32_t)n++;
        v->byte_utf8_len[b] = (uint8_t)utf8_put(v->byte_utf8[b], cp);
        v->cp_to_byte[cp] = (int16_t)b;
    }
}

static size_t tok_len(const eng_vocab_desc *d, int32_t i)
{
    return d->token_lens ? d->token_lens[i] : (d->tokens[i] ? strlen(d->tokens[i]) : 0);
}

/* The piece of token i, written into dst (at most 4 * text length + 8 bytes). */
static size_t make_piece(const eng_vocab *v, int32_t i, char *dst)
{
    const char *t = v->text + v->toff[i];
    size_t n = v->toff[i + 1] - v->toff[i];
    int ty = v->ttype[i];
    if (ty == ENG_TOKTYPE_CONTROL || ty == ENG_TOKTYPE_UNKNOWN || ty == ENG_TOKTYPE_USER_DEFINED) {
        memcpy(dst, t, n);
        return n;
    }
    if (v->type == ENG_VOCAB_SPM) {
        if (ty == ENG_TOKTYPE_NORMAL) {
            size_t o = 0;
            for (size_t k = 0; k < n; k++) {
                if (k + 3 <= n && memcmp(t + k, "\xe2\x96\x81", 3) == 0) {
                    dst[o++] = ' ';
                    k += 2;
                } else {
                    dst[o++] = t[k];
                }
            }
            return o;
        }
        if (ty == ENG_TOKTYPE_BYTE) {
            /* "<0xXX>": llama.cpp reads the hex digits after "<0x" */
            if (n >= 4) {
                char hex[3] = {0};
                memcpy(hex, t + 3, n >= 5 ? 2 : 1);
                dst[0] = (char)strtol(hex, NULL, 16);
                return 1;
            }
            return 0;
        }
        return 0;
    }
    if (ty != ENG_TOKTYPE_NORMAL) return 0;
    /* BPE: byte-level code points back to bytes; others (not of the alphabet) as is */
    size_t o = 0, k = 0;
    while (k < n) {
        size_t s = k;
        uint32_t cp = utf8_next_lenient((const unsigned char *)t, n, &k);
        if (cp < 512 && v->cp_to_byte[cp] >= 0) {
            dst[o++] = (char)v->cp_to_byte[cp];
        } else {
            memcpy(dst + o, t + s, k - s);
            o += k - s;
        }
    }
    return o;
}

static lode_status compile_pre(eng_vocab *v, const pre_def *pd, char *err, size_t errlen)
{
    v->gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    if (!v->gctx) return seterr(err, errlen, LODE_ERR_NOMEM, "out of memory%s", NULL);
    pcre2_compile_context *cctx = pcre2_compile_context_create(v->gctx);
    if (!cctx) return seterr(err, errlen, LODE_ERR_NOMEM, "out of memory%s", NULL);
    lode_status st = LODE_OK;
    for (int i = 0; pd->regex[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        v->re[i] = pcre2_compile((PCRE2_SPTR)pd->regex[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_NO_UTF_CHECK | PCRE2_DOLLAR_ENDONLY |
                                     (strstr(pd->regex[i], "\\p{") ? PCRE2_UCP : 0),
                                 &ec, &eo, cctx);
        if (!v->re[i]) {
            st = seterr(err, errlen, LODE_ERR_INTERNAL, "pre-tokenizer regex does not compile: %s",
                        pd->regex[i]);
            break;
        }
        /* without JIT the interpreter runs the same pattern, only slower */
        (void)pcre2_jit_compile(v->re[i], PCRE2_JIT_COMPLETE);
        v->n_re = i + 1;
    }
    pcre2_compile_context_free(cctx);
    return st;
}

lode_status eng_vocab_create(const eng_vocab_desc *d, eng_vocab **out, char *err, size_t errlen)
{
    lode_status st = LODE_OK;
    eng_vocab *v = NULL;
    char *pbuf = NULL;
    *out = NULL;
    if (!d || d->n_tokens <= 0 || !d->tokens)
        return seterr(err, errlen, LODE_ERR_INVALID, "vocabulary has no tokens%s", NULL);
    if (d->type != ENG_VOCAB_BPE && d->type != ENG_VOCAB_SPM)
        return seterr(err, errlen, LODE_ERR_UNSUPPORTED, "unsupported vocabulary type%s", NULL);
    if (d->type == ENG_VOCAB_BPE && d->n_merges > 0 && !d->merges)
        return seterr(err, errlen, LODE_ERR_INVALID, "merges missing%s", NULL);
    const pre_def *pd = NULL;
    if (d->type == ENG_VOCAB_BPE) {
        pd = find_pre(d->pre);
        if (!pd)
            return seterr(err, errlen, LODE_ERR_UNSUPPORTED, "unknown pre-tokenizer '%s'", d->pre);
    }
    v = lode_calloc(1, sizeof *v);
    if (!v) goto nomem;
    v->type = d->type;
    int32_t n = v->n = d->n_tokens;

    /* token texts (an empty text becomes "[EMPTY_i]", as llama.cpp names it) */
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t l = tok_len(d, i);
        total += l ? l : 24;
        if (total > UINT32_MAX / 2)
            return eng_vocab_destroy(v),
                   seterr(err, errlen, LODE_ERR_LIMIT, "token texts too large%s", NULL);
    }
    v->text = lode_malloc(total + 1);
    v->toff = lode_malloc(sizeof(uint32_t) * ((size_t)n + 1));
    v->ttype = lode_malloc((size_t)n);
    v->scores = lode_calloc((size_t)n, sizeof(float));
    v->is_eog = lode_calloc((size_t)n, 1);
    v->poff = lode_malloc(sizeof(uint32_t) * ((size_t)n + 1));
    v->tok_cap = table_size_for((size_t)n);
    v->tok_table = lode_malloc(sizeof(int32_t) * v->tok_cap);
    if (!v->text || !v->toff || !v->ttype || !v->scores || !v->is_eog || !v->poff || !v->tok_table)
        goto nomem;
    size_t o = 0, max_text = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t l = tok_len(d, i);
        v->toff[i] = (uint32_t)o;
        if (l) {
            memcpy(v->text + o, d->tokens[i], l);
            o += l;
        } else {
            o += (size_t)snprintf(v->text + o, 24, "[EMPTY_%d]", (int)i);
        }
        if (o - v->toff[i] > max_text) max_text = o - v->toff[i];
        int32_t ty = d->token_types ? d->token_types[i] : ENG_TOKTYPE_NORMAL;
        v->ttype[i] = (uint8_t)(ty >= 0 && ty <= ENG_TOKTYPE_BYTE ? ty : ENG_TOKTYPE_UNDEFINED);
        if (d->scores) v->scores[i] = d->scores[i];
    }
    v->toff[n] = (uint32_t)o;
    /* text -> id; a repeated text maps to its last id, as in llama.cpp */
    memset(v->tok_table, 0xff, sizeof(int32_t) * v->tok_cap);
    for (int32_t i = 0; i < n; i++) {
        const char *t = v->text + v->toff[i];
        size_t l = v->toff[i + 1] - v->toff[i];
        size_t mask = v->tok_cap - 1;
        for (size_t h = hash_bytes(HASH_SEED, t, l) & mask;; h = (h + 1) & mask) {
            int32_t id = v->tok_table[h];
            if (id < 0 ||
                (v->toff[id + 1] - v->toff[id] == l && memcmp(v->text + v->toff[id], t, l) == 0)) {
                v->tok_table[h] = i;
                break;
            }
        }
    }

    /* merges: "left right", split at the first space after the first byte */
    if (d->type == ENG_VOCAB_BPE && d->n_merges > 0) {
        size_t mt = 0;
        for (int32_t i = 0; i < d->n_merges; i++) {
            mt += d->merge_lens ? d->merge_lens[i] : (d->merges[i] ? strlen(d->merges[i]) : 0);
            if (mt > UINT32_MAX / 2)
                return eng_vocab_destroy(v),
                       seterr(err, errlen, LODE_ERR_LIMIT, "merges too large%s", NULL);
        }
        v->mtext = lode_malloc(mt + 1);
        v->merges = lode_malloc(sizeof(merge_ent) * (size_t)d->n_merges);
        v->merge_cap = table_size_for((size_t)d->n_merges);
        v->merge_table = lode_malloc(sizeof(int32_t) * v->merge_cap);
        if (!v->mtext || !v->merges || !v->merge_table) goto nomem;
        memset(v->merge_table, 0xff, sizeof(int32_t) * v->merge_cap);
        size_t mo = 0;
        for (int32_t i = 0; i < d->n_merges; i++) {
            const char *s = d->merges[i];
            size_t l = d->merge_lens ? d->merge_lens[i] : (s ? strlen(s) : 0);
            if (!s) l = 0;
            memcpy(v->mtext + mo, s ? s : "", l);
            const char *sp = l > 1 ? memchr(s + 1, ' ', l - 1) : NULL;
            merge_ent m = {(uint32_t)mo, 0, (uint32_t)mo, 0, i};
            if (sp) {
                m.llen = (uint32_t)(sp - s);
                m.roff = (uint32_t)(mo + m.llen + 1);
                m.rlen = (uint32_t)(l - m.llen - 1);
            }
            mo += l;
            const char *ls = v->mtext + m.loff, *rs = v->mtext + m.roff;
            size_t mask = v->merge_cap - 1;
            for (size_t h = merge_hash(ls, m.llen, rs, m.rlen) & mask;; h = (h + 1) & mask) {
                int32_t k = v->merge_table[h];
                if (k < 0) {
                    v->merges[v->n_merges] = m;
                    v->merge_table[h] = v->n_merges++;
                    break;
                }
                const merge_ent *e = &v->merges[k];
                if (e->llen == m.llen && e->rlen == m.rlen &&
                    memcmp(v->mtext + e->loff, ls, m.llen) == 0 &&
                    memcmp(v->mtext + e->roff, rs, m.rlen) == 0)
                    break; /* the first rank of a pair wins */
            }
        }
    }

    /* special ids and flags, with llama.cpp's defaults */
    bool spm = d->type == ENG_VOCAB_SPM;
#define ID_OR(x, def) ((x) >= 0 && (x) < n ? (x) : (def))
    v->bos = ID_OR(d->bos, spm && n > 1 ? 1 : ENG_TOKEN_NONE);
    v->eos = ID_OR(d->eos, spm && n > 2 ? 2 : ENG_TOKEN_NONE);
    v->unk = ID_OR(d->unk, spm ? 0 : ENG_TOKEN_NONE);
    v->pad = ID_OR(d->pad, ENG_TOKEN_NONE);
    v->eot = ID_OR(d->eot, ENG_TOKEN_NONE);
    v->eom = ID_OR(d->eom, ENG_TOKEN_NONE);
#undef ID_OR
    v->add_bos = d->add_bos >= 0 ? d->add_bos != 0 : (spm || (pd && pd->add_bos));
    v->add_eos = d->add_eos >= 0 ? d->add_eos != 0 : false;
    v->add_space_prefix = d->add_space_prefix >= 0 ? d->add_space_prefix != 0 : spm;
    v->ignore_merges = pd && pd->ignore_merges;
    if (v->eot == ENG_TOKEN_NONE) {
        for (size_t k = 0; k < LODE_ARRAY_LEN(EOT_TEXTS) && v->eot < 0; k++)
            v->eot = eng_vocab_find(v, EOT_TEXTS[k], strlen(EOT_TEXTS[k]));
    }
    for (size_t k = 0; k < LODE_ARRAY_LEN(EOG_TEXTS); k++) {
        eng_token t = eng_vocab_find(v, EOG_TEXTS[k], strlen(EOG_TEXTS[k]));
        if (t >= 0) {
            v->is_eog[t] = 1;
            v->ttype[t] = ENG_TOKTYPE_CONTROL;
        }
    }
    if (v->eot >= 0 && v->ttype[v->eot] != ENG_TOKTYPE_CONTROL)
        v->ttype[v->eot] = ENG_TOKTYPE_CONTROL;
    if (v->eos >= 0) v->is_eog[v->eos] = 1;
    if (v->eot >= 0) v->is_eog[v->eot] = 1;
    if (v->eom >= 0) v->is_eog[v->eom] = 1;

    /* special tokens, longest text first (ties by id) */
    int32_t ns = 0;
    for (int32_t i = 0; i < n; i++) {
        int ty = v->ttype[i];
        ns += ty == ENG_TOKTYPE_CONTROL || ty == ENG_TOKTYPE_USER_DEFINED ||
              ty == ENG_TOKTYPE_UNKNOWN;
    }
    v->special = lode_malloc(sizeof(int32_t) * (size_t)(ns ? ns : 1));
    if (!v->special) goto nomem;
    for (int32_t i = 0; i < n; i++) {
        int ty = v->ttype[i];
        if (ty == ENG_TOKTYPE_CONTROL || ty == ENG_TOKTYPE_USER_DEFINED ||
            ty == ENG_TOKTYPE_UNKNOWN) {
            /* insertion into place: the list is short (tens to a few hundred) */
            size_t li = v->toff[i + 1] - v->toff[i];
            int32_t j = v->n_special++;
            while (j > 0) {
                int32_t p = v->special[j - 1];
                if (v->toff[p + 1] - v->toff[p] >= li) break;
                v->special[j] = p;
                j--;
            }
            v->special[j] = i;
        }
    }

    /* pieces */
    build_byte_map(v);
    pbuf = lode_malloc(4 * max_text + 16);
    size_t ptotal = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t pl = make_piece(v, i, pbuf);
        ptotal += pl;
    }
    v->piece = lode_malloc(ptotal + 1);
    if (!pbuf || !v->piece) goto nomem;
    size_t po = 0;
    for (int32_t i = 0; i < n; i++) {
        v->poff[i] = (uint32_t)po;
        size_t pl = make_piece(v, i, v->piece + po);
        if (pl > v->max_piece) v->max_piece = pl;
        po += pl;
    }
    v->poff[n] = (uint32_t)po;

    if (pd && (st = compile_pre(v, pd, err, errlen)) != LODE_OK) goto out;
    *out = v;
    v = NULL;
    goto out;
nomem:
    st = seterr(err, errlen, LODE_ERR_NOMEM, "out of memory building the vocabulary%s", NULL);
out:
    lode_free(pbuf);
    eng_vocab_destroy(v);
    return st;
}

void eng_vocab_destroy(eng_vocab *v)
{
    if (!v) return;
    for (int i = 0; i < v->n_re; i++) pcre2_code_free(v->re[i]);
    pcre2_general_context_free(v->gctx);
    lode_free(v->text);
    lode_free(v->toff);
    lode_free(v->ttype);
    lode_free(v->scores);
    lode_free(v->piece);
    lode_free(v->poff);
    lode_free(v->is_eog);
    lode_free(v->tok_table);
    lode_free(v->mtext);
    lode_free(v->merges);
    lode_free(v->merge_table);
    lode_free(v->special);
    lode_free(v);
}

/* ---- queries ----------------------------------------------------------------------- */
eng_vocab_type eng_vocab_kind(const eng_vocab *v)
{
    return v->type;
}
int32_t eng_vocab_n_tokens(const eng_vocab *v)
{
    return v->n;
}
eng_token eng_vocab_bos(const eng_vocab *v)
{
    return v->bos;
}
eng_token eng_vocab_eos(const eng_vocab *v)
{
    return v->eos;
}
eng_token eng_vocab_eot(const eng_vocab *v)
{
    return v->eot;
}
bool eng_vocab_adds_bos(const eng_vocab *v)
{
    return v->add_bos && v->bos >= 0;
}
bool eng_vocab_adds_eos(const eng_vocab *v)
{
    return v->add_eos && v->eos >= 0;
}
size_t eng_vocab_max_piece(const eng_vocab *v)
{
    return v->max_piece;
}

bool eng_vocab_is_eog(const eng_vocab *v, eng_token t)
{
    return t >= 0 && t < v->n && v->is_eog[t];
}

eng_token_type eng_vocab_token_type(const eng_vocab *v, eng_token t)
{
    return t >= 0 && t < v->n ? (eng_token_type)v->ttype[t] : ENG_TOKTYPE_UNDEFINED;
}

const char *eng_vocab_token_text(const eng_vocab *v, eng_token t, size_t *len)
{
    if (t < 0 || t >= v->n) {
        *len = 0;
        return NULL;
    }
    *len = v->toff[t + 1] - v->toff[t];
    return v->text + v->toff[t];
}

/* ---- encoding: output and scratch --------------------------------------------------- */
typedef struct tok_out {
    eng_token *ids;
    size_t cap, n;
} tok_out;

static void out_push(tok_out *o, eng_token t)
{
    if (o->n < o->cap) o->ids[o->n] = t;
    o->n++;
}

typedef struct span {
    size_t off, len;
    eng_token tok; /* ENG_TOKEN_NONE for text */
} span;

typedef struct span_list {
    span *a;
    size_t n, cap;
} span_list;

static lode_status spans_push(span_list *l, size_t off, size_t len, eng_token tok)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        span *na = lode_realloc(l->a, nc * sizeof *na);
        if (!na) return LODE_ERR_NOMEM;
        l->a = na;
        l->cap = nc;
    }
    l->a[l->n++] = (span){off, len, tok};
    return LODE_OK;
}

/* A symbol of a word being merged, and a candidate pair (heap entry). */
typedef struct sym {
    int32_t start, n, prev, next;
} sym;

typedef struct bigram {
    double key; /* lower first: BPE rank, or -score for SPM */
    int32_t left, right;
    int32_t size;
} bigram;

typedef struct scratch {
    sym *syms;
    size_t syms_cap;
    bigram *heap;
    size_t heap_n, heap_cap;
    char *buf; /* byte-level encoded word / escaped SPM text */
    size_t buf_cap;
} scratch;

static lode_status grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return LODE_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = lode_realloc(*p, nc * elem);
    if (!np) return LODE_ERR_NOMEM;
    *p = np;
    *cap = nc;
    return LODE_OK;
}

static bool bigram_less(const bigram *a, const bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static lode_status heap_push(scratch *s, bigram b)
{
    if (grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof(bigram)) != LODE_OK)
        return LODE_ERR_NOMEM;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_less(&b, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
    return LODE_OK;
}

static bigram heap_pop(scratch *s)
{
    bigram top = s->heap[0];
    bigram last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!bigram_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* ---- BPE ------------------------------------------------------------------------------ */
typedef lode_status (*add_bigram_fn)(const eng_vocab *v, scratch *s, const char *w, int32_t l,
                                     int32_t r);
static lode_status merge_symbols(const eng_vocab *v, scratch *s, const char *w, size_t wn,
                                 add_bigram_fn add_bigram, int32_t *ns_out);

static lode_status bpe_add_bigram(const eng_vocab *v, scratch *s, const char *w, int32_t l,
                                  int32_t r)
{
    if (l < 0 || r < 0) return LODE_OK;
    const sym *a = &s->syms[l], *b = &s->syms[r];
    int32_t rank = merge_rank(v, w + a->start, (size_t)a->n, w + b->start, (size_t)b->n);
    if (rank < 0) return LODE_OK;
    return heap_push(s, (bigram){(double)rank, l, r, a->n + b->n});
}

/* Merges one pre-tokenized piece (raw bytes) and appends its ids. */
static lode_status bpe_word(const eng_vocab *v, scratch *s, const char *raw, size_t rn, tok_out *o)
{
    lode_status st;
    if ((st = grow((void **)&s->buf, &s->buf_cap, rn * 2 + 1, 1)) != LODE_OK) return st;
    char *w = s->buf;
    size_t wn = 0;
    for (size_t i = 0; i < rn; i++) {
        unsigned char b = (unsigned char)raw[i];
        memcpy(w + wn, v->byte_utf8[b], v->byte_utf8_len[b]);
        wn += v->byte_utf8_len[b];
    }
    if (v->ignore_merges) {
        eng_token t = eng_vocab_find(v, w, wn);
        if (t >= 0) {
            out_push(o, t);
            return LODE_OK;
        }
    }
    int32_t ns = 0;
    if ((st = merge_symbols(v, s, w, wn, bpe_add_bigram, &ns)) != LODE_OK) return st;
    for (int32_t i = 0; i != -1 && ns > 0; i = s->syms[i].next) {
        const sym *y = &s->syms[i];
        if (y->n == 0) continue;
        eng_token t = eng_vocab_find(v, w + y->start, (size_t)y->n);
        if (t >= 0) {
            out_push(o, t);
        } else {
            /* no token for the symbol: its single bytes that are tokens, like llama.cpp */
            for (int32_t k = 0; k < y->n; k++) {
                eng_token bt = eng_vocab_find(v, w + y->start + k, 1);
                if (bt >= 0) out_push(o, bt);
            }
        }
    }
    return LODE_OK;
}

/* Splits one fragment of raw text with the pre-tokenizer regexes and merges each piece. */
static lode_status bpe_fragment(const eng_vocab *v, scratch *s, const char *raw, size_t rn,
                                tok_out *o)
{
    lode_status st = LODE_OK;
    /* subj: the fragment as valid UTF-8 for PCRE2 (bad bytes, surrogates and code points
     * past U+10FFFF as U+FFFD); word: llama.cpp's re-encoding of its code points, which the
     * BPE merges see. cp_s/cp_w: byte offsets of each code point in both. */
    char *subj = lode_malloc(rn * 3 + 1), *word = lode_malloc(rn * 3 + 1);
    uint32_t *cp_s = lode_malloc(sizeof(uint32_t) * (rn + 1));
    uint32_t *cp_w = lode_malloc(sizeof(uint32_t) * (rn + 1));
    int32_t *s2cp = lode_malloc(sizeof(int32_t) * (rn * 3 + 1));
    span_list cur = {0}, nxt = {0};
    pcre2_match_data *md = NULL;
    if (!subj || !word || !cp_s || !cp_w || !s2cp) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    size_t ncp = 0, sn = 0, wn = 0;
    for (size_t i = 0; i < rn;) {
        uint32_t cp = utf8_next_lenient((const unsigned char *)raw, rn, &i);
        cp_s[ncp] = (uint32_t)sn;
        cp_w[ncp] = (uint32_t)wn;
        uint32_t scp = (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ? 0xFFFD : cp;
        size_t l = utf8_put(subj + sn, scp);
        for (size_t k = 0; k < l; k++) s2cp[sn + k] = (int32_t)ncp;
        sn += l;
        wn += utf8_put(word + wn, cp > 0x1FFFFF ? 0xFFFD : cp);
        ncp++;
    }
    cp_s[ncp] = (uint32_t)sn;
    cp_w[ncp] = (uint32_t)wn;
    s2cp[sn] = (int32_t)ncp;

    if ((st = spans_push(&cur, 0, sn, ENG_TOKEN_NONE)) != LODE_OK) goto out;
    md = pcre2_match_data_create(4, v->gctx);
    if (!md) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    for (int r = 0; r < v->n_re; r++) {
        nxt.n = 0;
        for (size_t f = 0; f < cur.n; f++) {
            const char *fs = subj + cur.a[f].off;
            size_t fl = cur.a[f].len, pos = 0, last = 0;
            while (pos < fl) {
                int rc =
                    pcre2_match(v->re[r], (PCRE2_SPTR)fs, fl, pos, PCRE2_NO_UTF_CHECK, md, NULL);
                if (rc < 0) break; /* no match (or a resource limit): the rest is a gap */
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                size_t ms = ov[0], me = ov[1];
                if (me == ms) { /* empty match: step one code point */
                    pos = ms + 1;
                    while (pos < fl && ((unsigned char)fs[pos] & 0xC0) == 0x80) pos++;
                    continue;
                }
                if (ms > last &&
                    (st = spans_push(&nxt, cur.a[f].off + last, ms - last, ENG_TOKEN_NONE)))
                    goto out;
                if ((st = spans_push(&nxt, cur.a[f].off + ms, me - ms, ENG_TOKEN_NONE))) goto out;
                last = pos = me;
            }
            if (fl > last &&
                (st = spans_push(&nxt, cur.a[f].off + last, fl - last, ENG_TOKEN_NONE)))
                goto out;
        }
        span_list t = cur;
        cur = nxt;
        nxt = t;
    }
    for (size_t f = 0; f < cur.n; f++) {
        int32_t c0 = s2cp[cur.a[f].off], c1 = s2cp[cur.a[f].off + cur.a[f].len];
        if ((st = bpe_word(v, s, word + cp_w[c0], cp_w[c1] - cp_w[c0], o)) != LODE_OK) goto out;
    }
out:
    pcre2_match_data_free(md);
    lode_free(cur.a);
    lode_free(nxt.a);
    lode_free(subj);
    lode_free(word);
    lode_free(cp_s);
    lode_free(cp_w);
    lode_free(s2cp);
    return st;
}

/* ---- SPM ------------------------------------------------------------------------------ */
static lode_status spm_add_bigram(const eng_vocab *v, scratch *s, const char *w, int32_t l,
                                  int32_t r)
{
    if (l < 0 || r < 0) return LODE_OK;
    const sym *a = &s->syms[l], *b = &s->syms[r];
    eng_token t = eng_vocab_find(v, w + a->start, (size_t)(a->n + b->n));
    if (t < 0) return LODE_OK;
    return heap_push(s, (bigram){-(double)v->scores[t], l, r, a->n + b->n});
}

/* Splits w into UTF-8 symbols and merges neighbours best-first (the heap order that
 * add_bigram gives: merge rank for BPE, score for SPM). Sets *ns to the symbol count; the
 * merged symbols are the chain from s->syms[0] on, empty ones (n == 0) skipped. */
static lode_status merge_symbols(const eng_vocab *v, scratch *s, const char *w, size_t wn,
                                 add_bigram_fn add_bigram, int32_t *ns_out)
{
    lode_status st;
    if ((st = grow((void **)&s->syms, &s->syms_cap, wn + 1, sizeof(sym))) != LODE_OK) return st;
    int32_t ns = 0;
    for (size_t off = 0; off < wn;) {
        size_t cl = utf8_len_lenient((unsigned char)w[off]);
        if (cl > wn - off) cl = wn - off;
        s->syms[ns] = (sym){(int32_t)off, (int32_t)cl, ns - 1, off + cl == wn ? -1 : ns + 1};
        ns++;
        off += cl;
    }
    s->heap_n = 0;
    for (int32_t i = 1; i < ns; i++)
        if ((st = add_bigram(v, s, w, i - 1, i)) != LODE_OK) return st;
    while (s->heap_n) {
        bigram bg = heap_pop(s);
        sym *l = &s->syms[bg.left], *r = &s->syms[bg.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = bg.left;
        if ((st = add_bigram(v, s, w, l->prev, bg.left)) != LODE_OK) return st;
        if ((st = add_bigram(v, s, w, bg.left, l->next)) != LODE_OK) return st;
    }
    *ns_out = ns;
    return LODE_OK;
}

static eng_token spm_byte_token(const eng_vocab *v, unsigned char b)
{
    static const char hex[] = "0123456789ABCDEF";
    char buf[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
    eng_token t = eng_vocab_find(v, buf, 6);
    if (t < 0) t = eng_vocab_find(v, (const char *)&b, 1);
    if (t < 0) t = v->unk;
    return t;
}

static lode_status spm_fragment(const eng_vocab *v, scratch *s, const char *raw, size_t rn,
                                bool prefix_space, tok_out *o)
{
    lode_status st;
    if ((st = grow((void **)&s->buf, &s->buf_cap, (rn + 1) * 3 + 1, 1)) != LODE_OK) return st;
    char *w = s->buf;
    size_t wn = 0;
    if (prefix_space) {
        memcpy(w, "\xe2\x96\x81", 3);
        wn = 3;
    }
    for (size_t i = 0; i < rn; i++) {
        if (raw[i] == ' ') {
            memcpy(w + wn, "\xe2\x96\x81", 3);
            wn += 3;
        } else {
            w[wn++] = raw[i];
        }
    }
    int32_t ns = 0;
    if ((st = merge_symbols(v, s, w, wn, spm_add_bigram, &ns)) != LODE_OK) return st;
    for (int32_t i = 0; i != -1 && ns > 0; i = s->syms[i].next) {
        const sym *y = &s->syms[i];
        if (y->n == 0) continue;
        eng_token t = eng_vocab_find(v, w + y->start, (size_t)y->n);
        if (t >= 0) {
            out_push(o, t);
            continue;
        }
        for (int32_t k = 0; k < y->n; k++) {
            eng_token bt = spm_byte_token(v, (unsigned char)w[y->start + k]);
            if (bt >= 0) out_push(o, bt);
        }
    }
    return LODE_OK;
}

/* ---- special tokens ------------------------------------------------------------------- */
static lode_status split_special(const eng_vocab *v, const char *text, size_t n, bool parse,
                                 span_list *cur)
{
    lode_status st;
    span_list nxt = {0};
    if ((st = spans_push(cur, 0, n, ENG_TOKEN_NONE)) != LODE_OK) return st;
    for (int32_t k = 0; k < v->n_special; k++) {
        eng_token id = v->special[k];
        int ty = v->ttype[id];
        if (!parse && (ty == ENG_TOKTYPE_CONTROL || ty == ENG_TOKTYPE_UNKNOWN)) continue;
        const char *tt = v->text + v->toff[id];
        size_t tl = v->toff[id + 1] - v->toff[id];
        if (tl > n || !memmem(text, n, tt, tl)) continue;
        nxt.n = 0;
        for (size_t f = 0; f < cur->n; f++) {
            span sp = cur->a[f];
            if (sp.tok != ENG_TOKEN_NONE) {
                if ((st = spans_push(&nxt, sp.off, sp.len, sp.tok))) goto out;
                continue;
            }
            size_t off = sp.off, end = sp.off + sp.len;
            for (;;) {
                const char *m = end - off >= tl ? memmem(text + off, end - off, tt, tl) : NULL;
                if (!m) break;
                size_t mo = (size_t)(m - text);
                if (mo > off && (st = spans_push(&nxt, off, mo - off, ENG_TOKEN_NONE))) goto out;
                if ((st = spans_push(&nxt, mo, tl, id))) goto out;
                off = mo + tl;
            }
            if (end > off && (st = spans_push(&nxt, off, end - off, ENG_TOKEN_NONE))) goto out;
        }
        span_list t = *cur;
        *cur = nxt;
        nxt = t;
    }
out:
    lode_free(nxt.a);
    return st;
}

/* ---- encode ---------------------------------------------------------------------------- */
static lode_status encode(const eng_vocab *v, const char *text, size_t n, unsigned flags,
                          tok_out *o)
{
    lode_status st = LODE_OK;
    span_list frags = {0};
    scratch s = {0};
    bool add = (flags & ENG_TOK_ADD_SPECIAL) != 0;
    if (!text) n = 0;
    if (n && (st = split_special(v, text, n, (flags & ENG_TOK_PARSE_SPECIAL) != 0, &frags)))
        goto out;
    if (add && v->add_bos && v->bos >= 0) out_push(o, v->bos);
    bool prev_special = true;
    for (size_t f = 0; f < frags.n; f++) {
        span sp = frags.a[f];
        if (sp.tok != ENG_TOKEN_NONE) {
            out_push(o, sp.tok);
            prev_special = true;
            continue;
        }
        if (v->type == ENG_VOCAB_BPE) {
            st = bpe_fragment(v, &s, text + sp.off, sp.len, o);
        } else {
            st = spm_fragment(v, &s, text + sp.off, sp.len, v->add_space_prefix && prev_special, o);
            prev_special = false;
        }
        if (st != LODE_OK) goto out;
    }
    if (add && v->add_eos && v->eos >= 0) out_push(o, v->eos);
out:
    lode_free(frags.a);
    lode_free(s.syms);
    lode_free(s.heap);
    lode_free(s.buf);
    return st;
}

lode_status eng_tok_encode(const eng_vocab *v, const char *text, size_t n, unsigned flags,
                           eng_token *out, size_t cap, size_t *n_out)
{
    tok_out o = {out, out ? cap : 0, 0};
    *n_out = 0;
    if (!v) return LODE_ERR_INVALID;
    lode_status st = encode(v, text, n, flags, &o);
    if (st != LODE_OK) return st;
    *n_out = o.n;
    return o.n > o.cap ? LODE_ERR_RANGE : LODE_OK;
}

lode_status eng_tok_encode_alloc(const eng_vocab *v, const char *text, size_t n, unsigned flags,
                                 eng_token **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    /* byte-level BPE never yields more ids than bytes, SPM at most bytes + prefix */
    size_t cap = n + 4;
    eng_token *ids = lode_malloc(cap * sizeof *ids);
    if (!ids) return LODE_ERR_NOMEM;
    size_t need = 0;
    lode_status st = eng_tok_encode(v, text, n, flags, ids, cap, &need);
    if (st == LODE_ERR_RANGE) {
        lode_free(ids);
        cap = need;
        ids = lode_malloc((cap ? cap : 1) * sizeof *ids);
        if (!ids) return LODE_ERR_NOMEM;
        st = eng_tok_encode(v, text, n, flags, ids, cap, &need);
    }
    if (st != LODE_OK) {
        lode_free(ids);
        return st;
    }
    *out = ids;
    *n_out = need;
    return LODE_OK;
}

/* ---- decode ---------------------------------------------------------------------------- */
const char *eng_tok_piece(const eng_vocab *v, eng_token t, unsigned flags, size_t *len)
{
    if (!v || t < 0 || t >= v->n) {
        *len = 0;
        return "";
    }
    int ty = v->ttype[t];
    if (!(flags & ENG_TOK_RENDER_SPECIAL) &&
        (ty == ENG_TOKTYPE_CONTROL || ty == ENG_TOKTYPE_UNKNOWN)) {
        *len = 0;
        return "";
    }
    *len = v->poff[t + 1] - v->poff[t];
    return v->piece + v->poff[t];
}

lode_status eng_tok_decode(const eng_vocab *v, const eng_token *toks, size_t n, unsigned flags,
                           lode_buf *out)
{
    bool strip = (flags & ENG_TOK_STRIP_LEADING) != 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = eng_tok_piece(v, toks[i], flags, &len);
        if (strip && len) {
            if (p[0] == ' ') p++, len--;
            strip = false;
        }
        lode_status st = lode_buf_append(out, p, len);
        if (st != LODE_OK) return st;
    }
    if (!out->data) return lode_buf_append(out, "", 0);
    return LODE_OK;
}

void eng_detok_init(eng_detok *d, const eng_vocab *v, unsigned flags)
{
    memset(d, 0, sizeof *d);
    d->v = v;
    d->flags = flags;
}

size_t eng_detok_bound(const eng_vocab *v)
{
    return 3 * (v->max_piece + 4);
}

static size_t put_fffd(char *out, size_t o, size_t cap)
{
    if (o + 3 <= cap) memcpy(out + o, "\xef\xbf\xbd", 3);
    return o + 3;
}

size_t eng_detok_push(eng_detok *d, eng_token t, char *out, size_t cap)
{
    size_t len;
    const char *p = eng_tok_piece(d->v, t, d->flags, &len);
    const unsigned char *b = (const unsigned char *)p;
    size_t o = 0;
    if (len) {
        if ((d->flags & ENG_TOK_STRIP_LEADING) && !d->started && b[0] == ' ') b++, len--;
        d->started = true;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned c = b[i];
        if (d->n_held) {
            unsigned lo = 0x80, hi = 0xBF;
            if (d->n_held == 1) {
                unsigned lead = d->held[0];
                if (lead == 0xE0) lo = 0xA0;
                if (lead == 0xED) hi = 0x9F;
                if (lead == 0xF0) lo = 0x90;
                if (lead == 0xF4) hi = 0x8F;
            }
            if (c >= lo && c <= hi) {
                d->held[d->n_held++] = (unsigned char)c;
                if (d->n_held == d->need) {
                    if (o + d->need <= cap) memcpy(out + o, d->held, d->need);
                    o += d->need;
                    d->n_held = 0;
                }
                continue;
            }
            /* the held sequence cannot complete: one U+FFFD for it, then c anew */
            o = put_fffd(out, o, cap);
            d->n_held = 0;
        }
        if (c < 0x80) {
            if (o < cap) out[o] = (char)c;
            o++;
        } else if (c >= 0xC2 && c <= 0xF4) {
            d->held[0] = (unsigned char)c;
            d->n_held = 1;
            d->need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        } else {
            o = put_fffd(out, o, cap);
        }
    }
    return o <= cap ? o : cap;
}

size_t eng_detok_flush(eng_detok *d, char *out, size_t cap)
{
    size_t o = 0;
    if (d->n_held) {
        o = put_fffd(out, 0, cap);
        d->n_held = 0;
    }
    return o <= cap ? o : 0;
}

/* ---- from GGUF metadata ---------------------------------------------------------------- */
static eng_token gguf_id(eng_gguf *g, const char *key)
{
    uint32_t id;
    return eng_gguf_get_u32(g, key, &id) == LODE_OK && id <= INT32_MAX ? (eng_token)id
                                                                       : ENG_TOKEN_NONE;
}

static int gguf_flag(eng_gguf *g, const char *key)
{
    int b;
    return eng_gguf_get_bool(g, key, &b) == LODE_OK ? (b != 0) : -1;
}

lode_status eng_vocab_from_gguf(eng_gguf *g, eng_vocab **out, char *err, size_t errlen)
{
    lode_status st;
    eng_vocab_desc d;
    const char *model = NULL, *pre = NULL;
    const eng_gguf_str *toks = NULL, *merges = NULL;
    uint64_t n_tok = 0, n_merges = 0, n_arr = 0;
    eng_gguf_type et;
    const char **tp = NULL, **mp = NULL;
    size_t *tl = NULL, *ml = NULL;
    int32_t *types = NULL;
    float *scores = NULL;

    *out = NULL;
    eng_vocab_desc_init(&d);
    if (eng_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL) != LODE_OK)
        return seterr(err, errlen, LODE_ERR_UNSUPPORTED, "GGUF has no tokenizer.ggml.model%s",
                      NULL);
    if (strcmp(model, "gpt2") == 0)
        d.type = ENG_VOCAB_BPE;
    else if (strcmp(model, "llama") == 0)
        d.type = ENG_VOCAB_SPM;
    else
        return seterr(err, errlen, LODE_ERR_UNSUPPORTED, "unsupported tokenizer model '%s'", model);
    if (eng_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL) == LODE_OK) d.pre = pre;
    if ((st = eng_gguf_get_arr_strs(g, "tokenizer.ggml.tokens", &toks, &n_tok)) != LODE_OK ||
        n_tok == 0 || n_tok > INT32_MAX)
        return seterr(err, errlen, st == LODE_OK ? LODE_ERR_FORMAT : st,
                      "tokenizer.ggml.tokens missing, empty or not strings%s", NULL);
    tp = lode_malloc(n_tok * sizeof *tp);
    tl = lode_malloc(n_tok * sizeof *tl);
    if (!tp || !tl) goto nomem;
    for (uint64_t i = 0; i < n_tok; i++) {
        tp[i] = toks[i].ptr;
        tl[i] = (size_t)toks[i].len;
    }
    d.n_tokens = (int32_t)n_tok;
    d.tokens = tp;
    d.token_lens = tl;
    if (eng_gguf_get_arr_info(g, "tokenizer.ggml.token_type", &et, &n_arr) == LODE_OK) {
        if (n_arr != n_tok) {
            st = seterr(err, errlen, LODE_ERR_FORMAT,
                        "tokenizer.ggml.token_type length differs from the token count%s", NULL);
            goto out;
        }
        if (!(types = lode_malloc(n_tok * sizeof *types))) goto nomem;
        if ((st = eng_gguf_copy_arr_i32(g, "tokenizer.ggml.token_type", types, n_tok))) {
            seterr(err, errlen, st, "tokenizer.ggml.token_type: %s", eng_gguf_errmsg(g));
            goto out;
        }
        d.token_types = types;
    }
    if (eng_gguf_get_arr_info(g, "tokenizer.ggml.scores", &et, &n_arr) == LODE_OK) {
        if (n_arr != n_tok) {
            st = seterr(err, errlen, LODE_ERR_FORMAT,
                        "tokenizer.ggml.scores length differs from the token count%s", NULL);
            goto out;
        }
        if (!(scores = lode_malloc(n_tok * sizeof *scores))) goto nomem;
        if ((st = eng_gguf_copy_arr_f32(g, "tokenizer.ggml.scores", scores, n_tok))) {
            seterr(err, errlen, st, "tokenizer.ggml.scores: %s", eng_gguf_errmsg(g));
            goto out;
        }
        d.scores = scores;
    }
    if (d.type == ENG_VOCAB_BPE) {
        if ((st = eng_gguf_get_arr_strs(g, "tokenizer.ggml.merges", &merges, &n_merges)) !=
                LODE_OK ||
            n_merges > INT32_MAX) {
            st = seterr(err, errlen, st == LODE_OK ? LODE_ERR_FORMAT : st,
                        "tokenizer.ggml.merges missing or not strings%s", NULL);
            goto out;
        }
        mp = lode_malloc((n_merges ? n_merges : 1) * sizeof *mp);
        ml = lode_malloc((n_merges ? n_merges : 1) * sizeof *ml);
        if (!mp || !ml) goto nomem;
        for (uint64_t i = 0; i < n_merges; i++) {
            mp[i] = merges[i].ptr;
            ml[i] = (size_t)merges[i].len;
        }
        d.n_merges = (int32_t)n_merges;
        d.merges = mp;
        d.merge_lens = ml;
    }
    d.bos = gguf_id(g, "tokenizer.ggml.bos_token_id");
    d.eos = gguf_id(g, "tokenizer.ggml.eos_token_id");
    d.unk = gguf_id(g, "tokenizer.ggml.unknown_token_id");
    d.pad = gguf_id(g, "tokenizer.ggml.padding_token_id");
    d.eot = gguf_id(g, "tokenizer.ggml.eot_token_id");
    d.eom = gguf_id(g, "tokenizer.ggml.eom_token_id");
    d.add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token");
    d.add_eos = gguf_flag(g, "tokenizer.ggml.add_eos_token");
    d.add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix");
    st = eng_vocab_create(&d, out, err, errlen);
    goto out;
nomem:
    st = seterr(err, errlen, LODE_ERR_NOMEM, "out of memory reading the vocabulary%s", NULL);
out:
    lode_free(tp);
    lode_free(tl);
    lode_free(mp);
    lode_free(ml);
    lode_free(types);
    lode_free(scores);
    return st;
}
