/*
 * job.c: the life cycle that every generation-backed route shares (/v1/chat/completions,
 * /v1/completions, /v1/ask): a reference-counted job tied to its connection, answered
 * either later in one piece (the connection deferred) or as server-sent events on a
 * srv_stream; listed with the server so shutdown can cancel it; cancelled when its
 * client goes away. The routes keep only what differs: what runs and how it answers.
 */
#include "server/srv_int.h"

#include <string.h>
#include <time.h>

static void on_shutdown(void *arg)
{
    srv_job *j = arg;
    j->shutdown_cancel = 1;
    j->ops->cancel(j);
}

static void on_client_gone(void *arg)
{
    srv_job *j = arg;
    j->ops->cancel(j);
}

/* The connection ended (its response is complete, or the client went away). */
static void on_conn_done(void *arg, int client_gone)
{
    srv_job *j = arg;
    pthread_mutex_lock(&j->mu);
    j->conn = NULL;
    pthread_mutex_unlock(&j->mu);
    j->ops->ended(j, client_gone);
    srv_job_unref(j);
}

void srv_job_init(srv_job *j, srv_conn *c, const srv_job_ops *ops, int stream)
{
    pthread_mutex_init(&j->mu, NULL);
    atomic_init(&j->refs, 1); /* the connection's */
    j->srv = c->srv;
    j->conn = c;
    j->ops = ops;
    j->stream = stream;
    j->created = (int64_t)time(NULL);
    c->job = j;
    c->job_release = on_conn_done;
}

lode_status srv_job_open(srv_job *j)
{
    if (!j->stream) {
        srv_defer(j->conn);
        return LODE_OK;
    }
    if (!(j->out = srv_stream_create(0))) return LODE_ERR_NOMEM;
    srv_stream_on_close(j->out, on_client_gone, j);
    return LODE_OK;
}

void srv_job_list(srv_job *j)
{
    j->link.cancel = on_shutdown;
    j->link.arg = j;
    srv_job_add(j->srv, &j->link);
    j->linked = 1;
}

void srv_job_unlist(srv_job *j)
{
    if (j->linked) srv_job_remove(j->srv, &j->link);
}

void srv_job_ref(srv_job *j)
{
    atomic_fetch_add(&j->refs, 1);
}

void srv_job_unref(srv_job *j)
{
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    srv_stream *out = j->out;
    pthread_mutex_destroy(&j->mu);
    j->ops->destroy(j);
    srv_stream_release(out);
}

srv_conn *srv_job_conn(srv_job *j)
{
    pthread_mutex_lock(&j->mu);
    srv_conn *c = j->conn;
    pthread_mutex_unlock(&j->mu);
    return c;
}

lode_status srv_job_event(srv_job *j, json_t *v)
{
    lode_buf b = LODE_BUF_INIT;
    lode_status st = v ? LODE_OK : LODE_ERR_NOMEM;
    if (!st) st = lode_buf_puts(&b, "data: ");
    if (!st) st = lode_json_append(&b, v);
    if (!st) st = lode_buf_puts(&b, "\n\n");
    if (!st) st = srv_stream_write(j->out, b.data, b.len);
    lode_buf_free(&b);
    json_decref(v);
    return st;
}

void srv_job_event_error(srv_job *j, const srv_error *e)
{
    lode_buf b = LODE_BUF_INIT;
    if (!lode_buf_puts(&b, "data: ") && !srv_error_append_json(e, &b) && !lode_buf_puts(&b, "\n\n"))
        srv_stream_write(j->out, b.data, b.len);
    lode_buf_free(&b);
}

void srv_job_event_end(srv_job *j)
{
    srv_stream_write(j->out, "data: [DONE]\n\n", 14);
    srv_stream_finish(j->out);
}

void srv_job_answer(srv_job *j, json_t *v)
{
    srv_conn *c = srv_job_conn(j);
    if (!c) return;
    if (v) {
        srv_deliver_json(c, 200, v);
    } else {
        srv_error e;
        srv_error_set(&e, LODE_ERR_NOMEM, 500, "server_error", NULL, NULL, "out of memory");
        srv_deliver_error(c, &e);
    }
}

void srv_error_engine_refused(srv_error *e, lode_status st, const char *detail)
{
    /* BUSY: the engine's bounded queue is full; CANCELLED: the engine is stopping */
    int status = st == LODE_ERR_RANGE || st == LODE_ERR_INVALID ? 400
                 : st == LODE_ERR_BUSY                          ? 429
                 : st == LODE_ERR_CANCELLED                     ? 503
                                                                : 500;
    srv_error_set(e, st, status, status >= 500 ? "server_error" : "invalid_request_error",
                  st == LODE_ERR_RANGE ? "context_length_exceeded" : NULL, NULL,
                  "the engine refused the request: %s", detail);
}
