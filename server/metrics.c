/*
 * metrics.c: the counters behind GET /metrics and their Prometheus text exposition:
 * requests by route and status, a latency histogram per route, generation counts, tokens
 * and decode time (so tokens/s is a rate of two counters, plus the last request's rate as
 * a gauge), in-flight requests, the engine's batch, queue and KV cache pool, the embedding
 * queue, and the store's size when one is open.
 */
#include "server/srv_int.h"

#include "engine/engine.h"

#include <string.h>

static const unsigned status_slots[SRV_N_STATUS - 1] = {200, 201, 204, 400, 401, 403, 404, 405,
                                                        408, 413, 429, 499, 500, 501, 503};
static const double lat_bounds[SRV_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};

void srv_metrics_init(srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_destroy(srv_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

static int status_slot(unsigned status)
{
    for (int i = 0; i < SRV_N_STATUS - 1; i++)
        if (status_slots[i] == status) return i;
    return SRV_N_STATUS - 1; /* "other" */
}

void srv_metrics_request(srv_metrics *m, srv_route r, unsigned status, double seconds)
{
    int b = 0;
    while (b < SRV_LAT_BUCKETS && seconds > lat_bounds[b]) b++;
    pthread_mutex_lock(&m->mu);
    m->requests[r][status_slot(status)]++;
    m->lat_bucket[r][b]++;
    m->lat_sum[r] += seconds;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_generation(srv_metrics *m, int64_t prompt_tokens, int64_t completion_tokens,
                            double prefill_s, double decode_s, int cancelled, int failed)
{
    pthread_mutex_lock(&m->mu);
    m->gen_requests++;
    if (cancelled) m->gen_cancelled++;
    if (failed) m->gen_failed++;
    m->prompt_tokens += (uint64_t)(prompt_tokens > 0 ? prompt_tokens : 0);
    m->completion_tokens += (uint64_t)(completion_tokens > 0 ? completion_tokens : 0);
    m->prefill_seconds += prefill_s;
    m->decode_seconds += decode_s;
    if (completion_tokens > 1 && decode_s > 0) m->last_tokens_per_s = completion_tokens / decode_s;
    pthread_mutex_unlock(&m->mu);
}

static lode_status head(lode_buf *b, const char *name, const char *type, const char *help)
{
    return lode_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

lode_status srv_metrics_render(srv_server *s, lode_buf *b)
{
    srv_metrics *m = &s->m;
    srv_metrics c;
    pthread_mutex_lock(&m->mu);
    memcpy(&c, m, sizeof c); /* a consistent snapshot; the copied mutex is never used */
    pthread_mutex_unlock(&m->mu);
    lode_status st = LODE_OK;
#define P(...)                                                                                     \
    do {                                                                                           \
        if ((st = lode_buf_printf(b, __VA_ARGS__))) return st;                                     \
    } while (0)
#define H(n, t, h)                                                                                 \
    do {                                                                                           \
        if ((st = head(b, n, t, h))) return st;                                                    \
    } while (0)

    H("lode_http_requests_total", "counter", "HTTP requests by route and status.");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++)
        for (int i = 0; i < SRV_N_STATUS; i++) {
            if (!c.requests[r][i]) continue;
            if (i < SRV_N_STATUS - 1)
                P("lode_http_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
                  srv_route_label((srv_route)r), status_slots[i],
                  (unsigned long long)c.requests[r][i]);
            else
                P("lode_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                  srv_route_label((srv_route)r), (unsigned long long)c.requests[r][i]);
        }
    H("lode_http_request_duration_seconds", "histogram",
      "Time from request headers to the end of the response, by route.");
    for (int r = 0; r < SRV_ROUTE_COUNT; r++) {
        uint64_t total = 0;
        for (int i = 0; i <= SRV_LAT_BUCKETS; i++) total += c.lat_bucket[r][i];
        if (!total) continue;
        const char *label = srv_route_label((srv_route)r);
        uint64_t cum = 0;
        for (int i = 0; i < SRV_LAT_BUCKETS; i++) {
            cum += c.lat_bucket[r][i];
            P("lode_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", label,
              lat_bounds[i], (unsigned long long)cum);
        }
        P("lode_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", label,
          (unsigned long long)total);
        P("lode_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", label, c.lat_sum[r]);
        P("lode_http_request_duration_seconds_count{route=\"%s\"} %llu\n", label,
          (unsigned long long)total);
    }
    H("lode_http_requests_in_flight", "gauge", "Requests being served now, /metrics included.");
    P("lode_http_requests_in_flight %d\n", atomic_load(&s->active));
    H("lode_http_concurrency_used", "gauge",
      "Requests holding a concurrency slot (all but /health and /metrics).");
    P("lode_http_concurrency_used %d\n", atomic_load(&s->slots));
    H("lode_http_concurrency_limit", "gauge", "The --max-concurrent limit; beyond it, 429.");
    P("lode_http_concurrency_limit %d\n", s->cfg.max_concurrent);

    H("lode_http_stream_keepalives_total", "counter",
      "Keep-alive comments written into event streams that waited without output.");
    P("lode_http_stream_keepalives_total %llu\n", (unsigned long long)atomic_load(&s->keepalives));

    H("lode_generation_requests_total", "counter", "Generations (choices) that ended.");
    P("lode_generation_requests_total %llu\n", (unsigned long long)c.gen_requests);
    H("lode_generation_cancelled_total", "counter",
      "Generations cancelled (client disconnect or shutdown).");
    P("lode_generation_cancelled_total %llu\n", (unsigned long long)c.gen_cancelled);
    H("lode_generation_failed_total", "counter", "Generations that ended in an error.");
    P("lode_generation_failed_total %llu\n", (unsigned long long)c.gen_failed);
    H("lode_prompt_tokens_total", "counter", "Prompt tokens processed.");
    P("lode_prompt_tokens_total %llu\n", (unsigned long long)c.prompt_tokens);
    H("lode_tokens_generated_total", "counter", "Completion tokens generated.");
    P("lode_tokens_generated_total %llu\n", (unsigned long long)c.completion_tokens);
    H("lode_generation_prefill_seconds_total", "counter", "Time spent in prompt processing.");
    P("lode_generation_prefill_seconds_total %.6f\n", c.prefill_seconds);
    H("lode_generation_decode_seconds_total", "counter",
      "Time spent decoding; tokens/s = rate(tokens_generated) / rate(decode_seconds).");
    P("lode_generation_decode_seconds_total %.6f\n", c.decode_seconds);
    H("lode_generation_tokens_per_second", "gauge",
      "Decode rate of the most recent finished generation.");
    P("lode_generation_tokens_per_second %.3f\n", c.last_tokens_per_s);
    int jobs = 0;
    pthread_mutex_lock(&s->mu);
    for (srv_job_link *l = s->jobs.next; l != &s->jobs; l = l->next) jobs++;
    pthread_mutex_unlock(&s->mu);
    H("lode_generation_active", "gauge",
      "Generations submitted and not yet finished (queue depth).");
    P("lode_generation_active %d\n", jobs);
    if (s->be && s->be->model) {
        eng_serving_stats es;
        eng_serving_stats_get(s->be->model, &es);
        H("lode_engine_running", "gauge", "Sequences in the engine's running batch.");
        P("lode_engine_running %d\n", es.running);
        H("lode_engine_queue_depth", "gauge",
          "Requests admitted to the engine and waiting to run (queued or preempted).");
        P("lode_engine_queue_depth %d\n", es.waiting);
        H("lode_engine_rejected_total", "counter",
          "Requests the engine refused because its queue was full (answered 429).");
        P("lode_engine_rejected_total %llu\n", (unsigned long long)es.rejected_busy);
        H("lode_kv_blocks", "gauge",
          "KV cache pool blocks by state (used: held by sequences; "
          "cached: free but holding a reusable prefix).");
        P("lode_kv_blocks{state=\"total\"} %d\n", es.kv_blocks_total);
        P("lode_kv_blocks{state=\"used\"} %d\n", es.kv_blocks_used);
        P("lode_kv_blocks{state=\"cached\"} %d\n", es.kv_blocks_cached);
        H("lode_kv_pool_bytes", "gauge",
          "Bytes of the KV cache pool (GPU memory on the CUDA path, sized from free memory "
          "unless --kv-mb is given).");
        P("lode_kv_pool_bytes %zu\n", es.kv_bytes);
        H("lode_kv_block_tokens", "gauge", "Tokens per KV cache block.");
        P("lode_kv_block_tokens %d\n", es.kv_block_tokens);
        H("lode_kv_usage_ratio", "gauge", "Share of the KV cache pool held by sequences.");
        P("lode_kv_usage_ratio %.4f\n",
          es.kv_blocks_total ? (double)es.kv_blocks_used / es.kv_blocks_total : 0.0);
        H("lode_prefix_cache_lookup_tokens_total", "counter",
          "Prompt tokens looked up in the prefix cache.");
        P("lode_prefix_cache_lookup_tokens_total %llu\n",
          (unsigned long long)es.prefix_lookup_tokens);
        H("lode_prefix_cache_hit_tokens_total", "counter",
          "Prompt tokens found in the prefix cache (not computed again).");
        P("lode_prefix_cache_hit_tokens_total %llu\n", (unsigned long long)es.prefix_hit_tokens);
        H("lode_engine_preemptions_total", "counter",
          "Sequences preempted to make room in the KV cache, by mode (recompute: KV "
          "released; swap: KV copied to the host pool).");
        P("lode_engine_preemptions_total{mode=\"recompute\"} %llu\n",
          (unsigned long long)(es.preemptions - es.swapped_out));
        P("lode_engine_preemptions_total{mode=\"swap\"} %llu\n",
          (unsigned long long)es.swapped_out);
        H("lode_kv_swap_blocks", "gauge",
          "Host swap pool blocks (0 unless --preempt swap), total and held by swapped-out "
          "sequences.");
        P("lode_kv_swap_blocks{state=\"total\"} %d\n", es.swap_slots_total);
        P("lode_kv_swap_blocks{state=\"used\"} %d\n", es.swap_slots_used);
        H("lode_kv_swap_resumes_total", "counter",
          "Swapped-out sequences resumed from the host pool.");
        P("lode_kv_swap_resumes_total %llu\n", (unsigned long long)es.swapped_in);
        H("lode_kv_swap_copied_blocks_total", "counter",
          "KV blocks copied between the pool and the host, both ways.");
        P("lode_kv_swap_copied_blocks_total %llu\n", (unsigned long long)es.swap_blocks);
        H("lode_engine_steps_total", "counter", "Forward steps the engine ran.");
        P("lode_engine_steps_total %llu\n", (unsigned long long)es.steps);
        H("lode_engine_step_tokens_total", "counter",
          "Tokens computed by those steps (prompt and generated).");
        P("lode_engine_step_tokens_total %llu\n", (unsigned long long)es.step_tokens);
    }
    if ((st = srv_metrics_render_backends(s, b))) return st;
    H("lode_uptime_seconds", "gauge", "Seconds since the server started.");
    P("lode_uptime_seconds %.3f\n", (double)(lode_now_ns() - s->started_ns) / 1e9);
#undef P
#undef H
    return LODE_OK;
}
