/* fuzz_markdown.c: libFuzzer target for the Markdown (md4c) and plain-text loaders and the
 * chunker on their output: arbitrary bytes must load or fail cleanly, never crash or
 * leak. */
#include "fuzz_ingest_common.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ing_doc *d = NULL;
    lode_status st = ing_load_markdown((const char *)data, size, &d, NULL, 0);
    fuzz_check_doc(st, d);
    d = NULL;
    st = ing_load((const char *)data, size, ING_MEDIA_TEXT, &d, NULL, 0);
    fuzz_check_doc(st, d);
    return 0;
}
