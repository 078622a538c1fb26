/*
 * routes_store.c: search and documents over the store.
 */
#include "server/srv_int.h"

int srv_has_store(srv_server *s)
{
    return 0;
}

lode_status srv_metrics_render_backends(srv_server *s, lode_buf *b)
{
    return LODE_OK;
}

void srv_h_search(srv_conn *c)
{
    srv_reply_unavailable(c, "search");
}
void srv_h_documents_get(srv_conn *c)
{
    srv_reply_unavailable(c, "the document store");
}
void srv_h_documents_post(srv_conn *c)
{
    srv_reply_unavailable(c, "the document store");
}
void srv_h_document_get(srv_conn *c)
{
    srv_reply_unavailable(c, "the document store");
}
void srv_h_document_delete(srv_conn *c)
{
    srv_reply_unavailable(c, "the document store");
}
