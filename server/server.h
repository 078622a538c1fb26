/*
 * server.h: lode's HTTP API (`lode serve`): an OpenAI-compatible generation API plus
 * search and document routes over the store, on libmicrohttpd with a thread pool,
 * server-sent events through suspend/resume, API keys, size and concurrency limits, a
 * request log and Prometheus metrics. The caller loads the model and opens the store and
 * lends them to the server; the server never owns them.
 */
#ifndef LODE_SERVER_H
#define LODE_SERVER_H

#include <stddef.h>
#include <stdio.h>

#include "common/lode.h"

typedef struct srv_server srv_server;

typedef struct srv_config {
    const char *host;     /* numeric address or name to bind; NULL: 127.0.0.1 */
    int port;             /* 0: an ephemeral port (srv_port says which) */
    int threads;          /* HTTP worker threads; <= 0: 4 */
    const char *api_key;  /* NULL or "": no authentication. Copied; never logged */
    size_t max_body;      /* request body limit in bytes; 0: 8 MiB */
    int max_concurrent;   /* requests served at once (excluding /health and /metrics); 0: 64 */
    int shutdown_grace_s; /* on shutdown, how long in-flight requests may finish; <0: 10 */
    int fetch_timeout_s;  /* POST /v1/documents {url}: whole-transfer limit; <= 0: 30 */
    /* Event streams: a keep-alive comment after this many milliseconds without output,
     * so a client that left is noticed and its generation cancelled; 0: 1000; <0: none. */
    int keepalive_ms;
    FILE *log;                     /* request log, one line per request; NULL: stderr */
    int quiet;                     /* no request log */
    struct srv_backends *backends; /* model and store, borrowed; NULL: none (see srv_int.h) */
} srv_config;

/* Starts serving (the listening socket is bound when this returns). Returns NULL and a
 * message in err on failure (port in use, bad host). Destroy with srv_destroy. */
srv_server *srv_create(const srv_config *cfg, char *err, size_t errlen);

/* The port the server listens on (the bound one when cfg->port was 0). */
int srv_port(const srv_server *s);

/* Graceful shutdown: stop accepting connections, let in-flight requests finish within the
 * grace period, then cancel what is left (streams end, waiting requests get 503), and stop
 * the worker threads. Safe to call once from any thread but a worker; srv_destroy calls
 * it when it was not called. */
void srv_shutdown(srv_server *s);

/* Shuts down (if not yet) and frees the server. Accepts NULL. */
void srv_destroy(srv_server *s);

#endif
