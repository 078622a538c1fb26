/*
 * eng_shapes.h: the model shapes `lode bench` and `lode synth` know by name (those of the
 * HF configs of SmolLM2-135M, Llama-3.2-1B and Llama-3-8B, as the peers use them).
 */
#ifndef LODE_CLI_ENG_SHAPES_H
#define LODE_CLI_ENG_SHAPES_H

#include <string.h>

typedef struct eng_shape {
    const char *name;
    int dim, ff, n_layer, n_head, n_kv_head, vocab, tied;
    float theta;
    const char *pre; /* tokenizer pre-split name */
} eng_shape;

static const eng_shape eng_shapes[] = {
    {"smollm2-135m", 576, 1536, 30, 9, 3, 49152, 1, 100000.f, "smollm"},
    {"llama3.2-1b", 2048, 8192, 16, 32, 8, 128256, 1, 500000.f, "llama-bpe"},
    {"llama3-8b", 4096, 14336, 32, 32, 8, 128256, 0, 500000.f, "llama-bpe"},
    {"tiny", 64, 256, 2, 4, 2, 512, 0, 10000.f, "default"},   /* for tests */
    {"small", 256, 512, 2, 4, 2, 512, 0, 10000.f, "default"}, /* tests: CUDA head size 64 */
};

static inline const eng_shape *eng_shape_find(const char *name)
{
    for (size_t i = 0; i < sizeof eng_shapes / sizeof eng_shapes[0]; i++)
        if (!strcmp(eng_shapes[i].name, name)) return &eng_shapes[i];
    return NULL;
}

#endif
