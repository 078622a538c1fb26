/* fuzz_pdf.c: libFuzzer target for the PDF loader (poppler-glib) and the chunker on its
 * output: arbitrary bytes (truncated, encrypted, image-only or broken files) must load or
 * fail with a status, never crash, leak or hang. Seeds: tests/data/pdf. */
#include "fuzz_ingest_common.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ing_doc *d = NULL;
    char err[256];
    lode_status st = ing_load_pdf((const char *)data, size, &d, err, sizeof err);
    fuzz_check_doc(st, d);
    return 0;
}
