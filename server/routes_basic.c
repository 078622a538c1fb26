/*
 * routes_basic.c: the routes that need no backend work: /health, /metrics and the model
 * list of the OpenAI API (/v1/models, /v1/models/{id}).
 */
#include "server/srv_int.h"

#include <string.h>

void srv_h_health(srv_conn *c)
{
    srv_server *s = c->srv;
    json_t *o =
        json_pack("{s:s, s:o, s:b, s:f}", "status", "ok", "model",
                  s->be && s->be->model_id ? json_string(s->be->model_id) : json_null(), "store",
                  srv_has_store(s), "uptime_s", (double)(lode_now_ns() - s->started_ns) / 1e9);
    if (!o) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_json(c, 200, o);
    json_decref(o);
}

void srv_h_metrics(srv_conn *c)
{
    lode_buf b = LODE_BUF_INIT;
    if (srv_metrics_render(c->srv, &b)) {
        lode_buf_free(&b);
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

static json_t *model_object(const char *id, int64_t created)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", "model", "created",
                     (json_int_t)created, "owned_by", "lode");
}

void srv_h_models(srv_conn *c)
{
    srv_server *s = c->srv;
    json_t *data = json_array();
    if (data && s->be && s->be->model_id)
        json_array_append_new(data, model_object(s->be->model_id, s->be->created));
    if (data && s->be && s->be->embed_model_id && s->emb)
        json_array_append_new(data, model_object(s->be->embed_model_id, s->be->embed_created));
    json_t *o = data ? json_pack("{s:s, s:o}", "object", "list", "data", data) : NULL;
    if (!o) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_json(c, 200, o);
    json_decref(o);
}

void srv_h_model(srv_conn *c)
{
    srv_server *s = c->srv;
    json_t *o = NULL;
    if (srv_model_matches(s, c->arg))
        o = model_object(s->be->model_id, s->be->created);
    else if (s->be && s->be->embed_model_id && s->emb && !strcmp(c->arg, s->be->embed_model_id))
        o = model_object(s->be->embed_model_id, s->be->embed_created);
    else {
        srv_reply_errorf(c, 404, "invalid_request_error", "model_not_found", "model",
                         "the model '%.100s' does not exist", c->arg);
        return;
    }
    if (!o) {
        srv_reply_errorf(c, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    srv_reply_json(c, 200, o);
    json_decref(o);
}

int srv_model_matches(srv_server *s, const char *name)
{
    if (!s->be || !s->be->model_id || !name) return 0;
    return strcmp(name, s->be->model_id) == 0;
}

void srv_reply_unavailable(srv_conn *c, const char *what)
{
    srv_reply_errorf(c, 501, "not_implemented_error", "not_available", NULL,
                     "%s is not available in this build", what);
}
