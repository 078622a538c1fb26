/*
 * routes_gen.c: the OpenAI generation routes, /v1/chat/completions and /v1/completions,
 * plus /v1/embeddings and /v1/ask.
 */
#include "server/srv_int.h"

static void generate(srv_conn *c, srv_gen_kind kind)
{
    srv_gen_request req;
    srv_error e;
    if (srv_gen_request_parse(kind, c->body.data, c->body.len, &req, &e)) {
        srv_reply_error(c, &e);
        return;
    }
    srv_gen_request_clear(&req);
    srv_reply_unavailable(c, "text generation");
}

void srv_h_chat(srv_conn *c)
{
    generate(c, SRV_GEN_CHAT);
}

void srv_h_completions(srv_conn *c)
{
    generate(c, SRV_GEN_COMPLETION);
}

void srv_h_embeddings(srv_conn *c)
{
    srv_reply_unavailable(c, "/v1/embeddings (the engine has no embedding model yet)");
}

void srv_h_ask(srv_conn *c)
{
    srv_reply_unavailable(c, "/v1/ask (the RAG answer path, orchestrate/, is not built yet)");
}
