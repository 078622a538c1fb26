/* fuzz_html.c: libFuzzer target for the HTML loader (libxml2 SAX) and the chunker on its
 * output: arbitrary bytes must load or fail cleanly, never crash or leak. */
#include "fuzz_ingest_common.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ing_doc *d = NULL;
    lode_status st = ing_load_html((const char *)data, size, &d, NULL, 0);
    fuzz_check_doc(st, d);
    return 0;
}
