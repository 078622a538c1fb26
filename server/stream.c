/*
 * stream.c: chunked response bodies written by another thread (server-sent events of a
 * generation). The producer appends to a bounded buffer; libmicrohttpd's content reader
 * drains it and, when it is empty, suspends the connection so no worker thread blocks or
 * spins; the next write or the end resumes it. When the request ends early (the client
 * went away) the stream calls its close hook once, which cancels the generation.
 * Event streams that wait without output get a keep-alive comment from a timer thread
 * (srv_keepalive_start), so that a client that left is noticed while nothing is written.
 */
#include "server/srv_int.h"

#include <string.h>
#include <sys/types.h>
#include <time.h>

#define KEEPALIVE ": keep-alive\n\n"

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
    int64_t last_write_ns; /* when the producer (or the keep-alive) last wrote */
    /* In the server's keep-alive list (under srv->streams_mu) while srv != NULL. */
    srv_server *srv;
    srv_stream *prev, *next;
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
    pthread_mutex_lock(&s->mu);
    s->mhd = c->mhd;
    s->conn = c;
    s->last_write_ns = lode_now_ns();
    pthread_mutex_unlock(&s->mu);
    c->stream = s;
    if (c->srv->keepalive_ns > 0 && !strcmp(content_type, "text/event-stream")) {
        srv_server *srv = c->srv;
        pthread_mutex_lock(&srv->streams_mu);
        s->srv = srv;
        s->prev = NULL;
        s->next = srv->streams;
        if (srv->streams) srv->streams->prev = s;
        srv->streams = s;
        pthread_cond_signal(&srv->streams_cv);
        pthread_mutex_unlock(&srv->streams_mu);
    }
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
    } else if ((st = lode_buf_append(&s->buf, p, n)) == LODE_OK) {
        s->last_write_ns = lode_now_ns();
        if (s->suspended) {
            s->suspended = 0;
            MHD_resume_connection(s->mhd);
        }
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
    srv_server *srv = s->srv; /* set before the request could end; cleared only here */
    if (srv) {
        pthread_mutex_lock(&srv->streams_mu);
        if (s->prev)
            s->prev->next = s->next;
        else
            srv->streams = s->next;
        if (s->next) s->next->prev = s->prev;
        s->prev = s->next = NULL;
        s->srv = NULL;
        pthread_mutex_unlock(&srv->streams_mu);
    }
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

/* ---- keep-alive ------------------------------------------------------------------------ */

/* Under srv->streams_mu: one stream waiting for its producer longer than the interval
 * gets a comment, which resumes its connection; the write to a gone client fails there. */
static void keepalive_one(srv_server *srv, srv_stream *s, int64_t now)
{
    pthread_mutex_lock(&s->mu);
    if (!s->gone && !s->finished && s->suspended && now - s->last_write_ns >= srv->keepalive_ns &&
        lode_buf_append(&s->buf, KEEPALIVE, sizeof KEEPALIVE - 1) == LODE_OK) {
        s->last_write_ns = now;
        s->suspended = 0;
        MHD_resume_connection(s->mhd);
        atomic_fetch_add(&srv->keepalives, 1);
    }
    pthread_mutex_unlock(&s->mu);
}

static void *keepalive_main(void *arg)
{
    srv_server *srv = arg;
    /* Four looks per interval: a stream waits at most 1.25 intervals for its comment. */
    int64_t tick = srv->keepalive_ns / 4;
    int64_t next = lode_now_ns() + tick;
    pthread_mutex_lock(&srv->streams_mu);
    while (!srv->keepalive_stop) {
        if (!srv->streams) { /* nothing to watch: sleep until a stream starts */
            pthread_cond_wait(&srv->streams_cv, &srv->streams_mu);
            next = lode_now_ns() + tick;
            continue;
        }
        int64_t now = lode_now_ns();
        if (now >= next) {
            for (srv_stream *s = srv->streams; s; s = s->next) keepalive_one(srv, s, now);
            next = now + tick;
        }
        /* CLOCK_MONOTONIC, as lode_now_ns and the condition variable (srv_create) */
        struct timespec ts = {(time_t)(next / 1000000000), (long)(next % 1000000000)};
        pthread_cond_timedwait(&srv->streams_cv, &srv->streams_mu, &ts);
    }
    pthread_mutex_unlock(&srv->streams_mu);
    return NULL;
}

lode_status srv_keepalive_start(srv_server *srv)
{
    if (srv->keepalive_ns <= 0) return LODE_OK;
    if (pthread_create(&srv->keepalive_thread, NULL, keepalive_main, srv)) return LODE_ERR_IO;
    srv->keepalive_running = 1;
    return LODE_OK;
}

void srv_keepalive_stop(srv_server *srv)
{
    if (!srv->keepalive_running) return;
    pthread_mutex_lock(&srv->streams_mu);
    srv->keepalive_stop = 1;
    pthread_cond_signal(&srv->streams_cv);
    pthread_mutex_unlock(&srv->streams_mu);
    pthread_join(srv->keepalive_thread, NULL);
    srv->keepalive_running = 0;
}
