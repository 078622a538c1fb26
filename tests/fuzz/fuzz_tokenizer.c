/* fuzz_tokenizer.c: libFuzzer target for the tokenizers. The first input byte picks the
 * flags, the rest is text. On SmolLM2's vocabulary (models/, or LODE_MODEL) and on a small
 * SentencePiece vocabulary built from arrays: encoding never fails on any bytes, every id
 * is in range, the streaming decoder only ever emits valid UTF-8, and for valid UTF-8
 * of spellable bytes, without parsed special tokens, the byte-level BPE round trip gives
 * the text back. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

static eng_vocab *bpe, *spm;
/* bytes the BPE vocabulary can spell alone; text with another byte loses it when encoded
 * (llama.cpp drops it too), so the round trip is checked only without them */
static int spellable[256];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

static void load(void)
{
    char err[256];
    const char *path = getenv("LODE_MODEL");
    if (!path || !*path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    eng_gguf *g = NULL;
    if (eng_gguf_open(path, &g, err, sizeof err) == LODE_OK) {
        if (eng_vocab_from_gguf(g, &bpe, err, sizeof err) != LODE_OK) fail(err);
        eng_gguf_close(g);
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            eng_token ids[8];
            size_t n = 0, l = 0;
            if (eng_tok_encode(bpe, &c, 1, 0, ids, 8, &n) == LODE_OK && n == 1) {
                const char *p = eng_tok_piece(bpe, ids[0], 0, &l);
                spellable[b] = l == 1 && p[0] == c;
            }
        }
    } else {
        fprintf(stderr, "fuzz_tokenizer: %s; BPE part off\n", err);
    }
    static char bytes[256][8];
    static const char *toks[256 + 12];
    static float scores[256 + 12];
    static int32_t types[256 + 12];
    static const char *words[] = {"▁", "a", "b", "▁a", "ab", "ba", "▁ab", "é", "日本", "<x>"};
    int n = 0;
    toks[n] = "<unk>", types[n++] = 2;
    toks[n] = "<s>", types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], types[n++] = 6;
    }
    for (int i = 0; i < 10; i++)
        toks[n] = words[i], scores[n] = -(float)i, types[n++] = i == 9 ? 4 : 1;
    eng_vocab_desc d;
    eng_vocab_desc_init(&d);
    d.type = ENG_VOCAB_SPM;
    d.n_tokens = n;
    d.tokens = toks;
    d.scores = scores;
    d.token_types = types;
    if (eng_vocab_create(&d, &spm, err, sizeof err) != LODE_OK) fail(err);
}

static void check(const eng_vocab *v, const char *text, size_t n, unsigned flags, int round_trip)
{
    eng_token *ids = NULL;
    size_t ni = 0;
    if (eng_tok_encode_alloc(v, text, n, flags, &ids, &ni) != LODE_OK) fail("encode failed");
    for (size_t i = 0; i < ni; i++)
        if (ids[i] < 0 || ids[i] >= eng_vocab_n_tokens(v)) fail("id out of range");
    eng_detok d;
    eng_detok_init(&d, v, ENG_TOK_RENDER_SPECIAL);
    size_t cap = eng_detok_bound(v);
    char *chunk = malloc(cap);
    lode_buf s = LODE_BUF_INIT;
    for (size_t i = 0; i < ni; i++) {
        size_t k = eng_detok_push(&d, ids[i], chunk, cap);
        if (lode_utf8_valid_prefix(chunk, k) != k) fail("stream emitted invalid UTF-8");
        lode_buf_append(&s, chunk, k);
    }
    size_t k = eng_detok_flush(&d, chunk, cap);
    lode_buf_append(&s, chunk, k);
    if (round_trip && (s.len != n || (n && memcmp(s.data, text, n) != 0))) fail("round trip");
    lode_buf_free(&s);
    free(chunk);
    lode_free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!spm) load();
    if (size == 0) return 0;
    unsigned flags =
        (data[0] & 1 ? ENG_TOK_ADD_SPECIAL : 0) | (data[0] & 2 ? ENG_TOK_PARSE_SPECIAL : 0);
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    int valid = lode_utf8_valid_prefix(text, n) == n;
    for (size_t i = 0; i < n && valid; i++) valid = spellable[(unsigned char)text[i]];
    if (bpe) check(bpe, text, n, flags, valid && !(flags & ENG_TOK_PARSE_SPECIAL));
    check(spm, text, n, flags, 0);
    return 0;
}
