/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (and through it the
 * engine's JSON reader): any input must be accepted or refused with a status, never
 * crash, leak or read out of bounds; accepted tensors' bytes are touched and converted. */
#include <stdint.h>
#include <stdlib.h>

#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    eng_st *st = NULL;
    if (eng_st_open_buffer(data, size, &st, err, sizeof err) != LODE_OK) return 0;
    for (size_t i = 0; i < eng_st_count(st); i++) {
        const eng_st_tensor *t = eng_st_at(st, i);
        if (eng_st_find(st, t->name) != t) abort();
        uint8_t sum = 0;
        for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
        if (sum == 1 && t->nbytes == 0) abort(); /* cannot happen; keeps the reads */
        if (t->n_elems > 0 && t->n_elems < 4096) {
            float *f = malloc((size_t)t->n_elems * sizeof *f);
            if (f) eng_st_to_f32(t, f, (size_t)t->n_elems);
            free(f);
        }
    }
    (void)eng_st_metadata(st, "format");
    eng_st_close(st);
    return 0;
}
