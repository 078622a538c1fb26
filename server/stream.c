/*
 * stream.c: chunked response bodies written by another thread (server-sent events of a
 * generation). The producer appends to a bounded buffer; libmicrohttpd's content reader
 * drains it and, when it is empty, suspends the connection so no worker thread blocks or
 * spins; the next write or the end resumes it. When the request ends early (the client
 * went away) the stream calls its close hook once, which cancels the generation.
 */
#include "server/srv_int.h"

#include <string.h>
#include <sys/types.h>

struct srv_stream {
    pthread_mutex_t mu;
    atomic_int refs;
    lode_buf buf; /* bytes not yet read are buf[pos, len) */
    size_t pos;
    int finished;  /* producer is done */
    int gone;      /* the request ended (client gone or response complete) */
    int suspended; /* the connection is suspended waiting for data */
    struct MHD_Connection *mhd;
    srv_conn *conn; /* valid while !gone */
    void (*on_close)(void *arg);
    void *on_close_arg;
};

srv_stream *srv_stream_create(size_t max_buffered)
{
    srv_stream *s = lode_calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->refs, 1);
    s->buf.max = max_buffered ? max_buffered : (size_t)8 << 20;
    return s;
}

void srv_stream_release(srv_stream *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    lode_buf_free(&s->buf);
    pthread_mutex_destroy(&s->mu);
    lode_free(s);
}

static ssize_t reader(void *cls, uint64_t offset, char *out, size_t max)
{
    srv_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    size_t avail = s->buf.len - s->pos;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(out, s->buf.data + s->pos, n);
        s->pos += n;
        if (s->pos == s->buf.len) {
            lode_buf_reset(&s->buf);
            s->pos = 0;
        }
        if (s->conn) atomic_fetch_add(&s->conn->bytes, n);
        pthread_mutex_unlock(&s->mu);
        return (ssize_t)n;
    }
    if (s->finished) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing yet: park the connection until the producer writes or finishes. */
    s->suspended = 1;
    MHD_suspend_connection(s->mhd);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void reader_free(void *cls)
{
    srv_stream_release(cls);
}

lode_status srv_stream_start(srv_conn *c, srv_stream *s, const char *content_type)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, s, reader_free);
    if (!r) return LODE_ERR_NOMEM;
    atomic_fetch_add(&s->refs, 2); /* one for the response, one for the connection */
    s->mhd = c->mhd;
    s->conn = c;
    c->stream = s;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    c->status = 200;
    c->answered = 1;
    MHD_queue_response(c->mhd, 200, r);
    MHD_destroy_response(r);
    return LODE_OK;
}

lode_status srv_stream_write(srv_stream *s, const void *p, size_t n)
{
    lode_status st = LODE_OK;
    pthread_mutex_lock(&s->mu);
    if (s->gone) {
        st = LODE_ERR_CANCELLED;
    } else if ((st = lode_buf_append(&s->buf, p, n)) == LODE_OK && s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->mhd);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

void srv_stream_finish(srv_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->finished = 1;
    if (s->suspended && !s->gone) {
        s->suspended = 0;
        MHD_resume_connection(s->mhd);
    }
    pthread_mutex_unlock(&s->mu);
}

void srv_stream_on_close(srv_stream *s, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&s->mu);
    s->on_close = fn;
    s->on_close_arg = arg;
    pthread_mutex_unlock(&s->mu);
}

int srv_stream_client_gone(srv_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int g = s->gone && !s->finished;
    pthread_mutex_unlock(&s->mu);
    return g;
}

void srv_stream_closed_by_http(srv_stream *s)
{
    void (*fn)(void *) = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&s->mu);
    s->gone = 1;
    s->conn = NULL;
    s->suspended = 0;
    if (!s->finished) {
        fn = s->on_close;
        arg = s->on_close_arg;
    }
    s->on_close = NULL;
    pthread_mutex_unlock(&s->mu);
    if (fn) fn(arg);
}
