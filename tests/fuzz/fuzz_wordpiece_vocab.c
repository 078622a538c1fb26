/* fuzz_wordpiece_vocab.c: libFuzzer target for loading a WordPiece vocabulary (an
 * embedding model's vocab.txt, a file from outside): any bytes must load or be refused
 * with a status; a loaded vocabulary maps ids and tokens both ways, and encoding its own
 * text and a fixed sentence gives [CLS] ... [SEP] with ids in range, cased and uncased. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/wordpiece.h"

static void check_encode(const eng_wordpiece *wp, const char *text, size_t len)
{
    int32_t ids[48];
    int n = 0, trunc = 0;
    if (eng_wordpiece_encode(wp, text, len, ids, 48, &n, &trunc)) abort();
    if (n < 2 || n > 48 || ids[0] != eng_wordpiece_cls(wp) || ids[n - 1] != eng_wordpiece_sep(wp))
        abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= eng_wordpiece_vocab_size(wp)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char sentence[] = "Hello, WORLD: caf\xc3\xa9 ##ab unaffable \xe4\xb8\xad!";
    for (int lower = 0; lower < 2; lower++) {
        eng_wordpiece *wp = NULL;
        char err[256];
        if (eng_wordpiece_load_buffer((const char *)data, size, lower, &wp, err, sizeof err)) {
            if (wp) abort(); /* refused: nothing handed out */
            continue;
        }
        int32_t nv = eng_wordpiece_vocab_size(wp);
        if (nv < 4) abort(); /* [CLS], [SEP], [UNK], [PAD] at least */
        int32_t specials[4] = {eng_wordpiece_cls(wp), eng_wordpiece_sep(wp), eng_wordpiece_unk(wp),
                               eng_wordpiece_pad(wp)};
        for (int i = 0; i < 4; i++)
            if (specials[i] < 0 || specials[i] >= nv) abort();
        for (int32_t id = 0; id < nv && id < 64; id++) {
            const char *t = eng_wordpiece_token(wp, id);
            if (!t) abort();
            int32_t back = eng_wordpiece_id(wp, t);
            if (back < 0 || back >= nv) abort(); /* a duplicate line may map to its first id */
        }
        if (eng_wordpiece_token(wp, nv) || eng_wordpiece_token(wp, -1)) abort();
        check_encode(wp, sentence, sizeof sentence - 1);
        check_encode(wp, (const char *)data, size);
        eng_wordpiece_destroy(wp);
    }
    return 0;
}
