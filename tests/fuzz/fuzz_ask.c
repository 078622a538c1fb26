/* fuzz_ask.c: libFuzzer target for the body of POST /v1/ask: any bytes must parse into a
 * question within the documented limits or be refused with a 4xx error object that is
 * itself valid JSON, never crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "orchestrate/ask.h"
#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    srv_ask_request r;
    srv_error e;
    if (srv_ask_request_parse((const char *)data, size, &r, &e) == LODE_OK) {
        if (!r.question || !json_is_object(r.root)) abort();
        if (r.k < 1 || r.k > ORC_MAX_K) abort();
        if (r.max_tokens < 1 || r.max_tokens > SRV_ASK_MAX_TOKENS) abort();
        if (r.has_temperature && (r.temperature < 0 || r.temperature > 2)) abort();
        if (r.stream != 0 && r.stream != 1) abort();
        orc_mode m;
        (void)orc_mode_parse(r.mode, &m); /* any string: a status, never a crash */
    } else {
        lode_buf b = LODE_BUF_INIT;
        if (e.status < 400 || e.status > 499 || !e.type || !e.j.message[0]) abort();
        if (srv_error_append_json(&e, &b) != LODE_OK) abort();
        json_error_t je;
        json_t *v = json_loadb(b.data, b.len, 0, &je);
        if (!v) abort();
        json_decref(v);
        lode_buf_free(&b);
    }
    srv_ask_request_clear(&r);
    return 0;
}
