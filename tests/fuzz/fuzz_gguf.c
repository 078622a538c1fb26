/* fuzz_gguf.c: libFuzzer target for the GGUF reader: any bytes must give a status (and
 * for valid files, tensors inside the input), never a crash, leak or sanitizer report. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eng_gguf *g = NULL;
    char err[256];
    if (eng_gguf_open_memory(data, size, &g, err, sizeof err) != LODE_OK) return 0;
    /* touch everything the accessors expose */
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < eng_gguf_n_kv(g); i++) {
        const char *k = eng_gguf_key(g, i);
        sink += strlen(k) + eng_gguf_arr_len(g, i);
        uint32_t u;
        float f;
        const char *s;
        const eng_gguf_str *strs;
        uint64_t n;
        if (eng_gguf_get_u32(g, k, &u) == LODE_OK) sink += u;
        if (eng_gguf_get_f32(g, k, &f) == LODE_OK) sink += (uint64_t)(f != 0);
        if (eng_gguf_get_str(g, k, &s, NULL) == LODE_OK) sink += strlen(s);
        if (eng_gguf_get_arr_strs(g, k, &strs, &n) == LODE_OK)
            for (uint64_t j = 0; j < n; j++)
                sink += strs[j].len ? (uint8_t)strs[j].ptr[strs[j].len - 1] : 0;
    }
    for (int64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        const uint8_t *p = t->data;
        sink += p[0] + p[t->nbytes - 1];
    }
    (void)sink;
    eng_gguf_close(g);
    return 0;
}
