/* fuzz_wordpiece.c: libFuzzer target for the WordPiece tokenizer: any bytes must encode
 * to [CLS] ... [SEP] within the limit, with valid ids, cased and uncased. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/wordpiece.h"

static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n##a\nb\n##b\n\xc3\xa9\n##\xc3\xa9\n"
                            "\xe4\xb8\xad\n,\n.\n##,\nab\n##ab\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static eng_wordpiece *wp[2];
    char err[128];
    for (int c = 0; c < 2; c++) {
        if (!wp[c] && eng_wordpiece_load_buffer(vocab, strlen(vocab), c, &wp[c], err, sizeof err))
            abort();
        int32_t ids[64];
        int n = 0, max = 2 + (int)(size % 62), trunc = 0;
        if (eng_wordpiece_encode(wp[c], (const char *)data, size, ids, max, &n, &trunc)) abort();
        if (n < 2 || n > max || ids[0] != 2 || ids[n - 1] != 3) abort();
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= eng_wordpiece_vocab_size(wp[c])) abort();
    }
    return 0;
}
