/*
 * sampler.c: token sampling (penalties, top-k, top-p, min-p, temperature, seeded draw),
 * logprobs, stop-string matching and the per-request stop logic (see sampler.h).
 *
 * Candidates are (logit, id) pairs ordered by logit, then by lower id, so every step is
 * deterministic. top-p without top-k does not sort the whole vocabulary: it selects and
 * sorts a growing head of it until the head holds the probability mass asked for.
 */
#include "engine/sampler.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct eng_sampler {
    eng_sampler_params p;
    int32_t n_vocab;
    float *work;     /* [n_vocab] penalized logits */
    cand *cands;     /* [n_vocab] */
    float *probs;    /* [n_vocab] */
    int32_t *counts; /* [n_vocab] occurrences in the window */
    uint8_t *mark;   /* [n_vocab] scratch: penalty applied */
    int32_t *ring;   /* [penalty_last_n] */
    int32_t ring_n, ring_pos;
    uint64_t rng[4];
};

/* ---- PRNG: xoshiro256** seeded through splitmix64 ------------------------------------ */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- params -------------------------------------------------------------------------- */
void eng_sampler_params_default(eng_sampler_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->penalty_last_n = 64;
}

lode_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab, eng_sampler **out)
{
    *out = NULL;
    if (!p || n_vocab <= 0 || isnan(p->temperature) || isnan(p->top_p) || p->top_p < 0 ||
        isnan(p->min_p) || p->min_p > 1 || isnan(p->repeat_penalty) || p->repeat_penalty <= 0 ||
        !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty) ||
        p->penalty_last_n < 0 || p->penalty_last_n > (1 << 20) || p->n_logprobs < 0 ||
        p->n_logprobs > ENG_MAX_LOGPROBS)
        return LODE_ERR_INVALID;
    eng_sampler *s = lode_calloc(1, sizeof *s);
    if (!s) return LODE_ERR_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    s->work = lode_malloc(n * sizeof *s->work);
    s->cands = lode_malloc(n * sizeof *s->cands);
    s->probs = lode_malloc(n * sizeof *s->probs);
    s->counts = lode_calloc(n, sizeof *s->counts);
    s->mark = lode_calloc(n, 1);
    s->ring = lode_malloc(((size_t)p->penalty_last_n + 1) * sizeof *s->ring);
    if (!s->work || !s->cands || !s->probs || !s->counts || !s->mark || !s->ring) {
        eng_sampler_destroy(s);
        return LODE_ERR_NOMEM;
    }
    eng_sampler_reset(s);
    *out = s;
    return LODE_OK;
}

void eng_sampler_destroy(eng_sampler *s)
{
    if (!s) return;
    lode_free(s->work);
    lode_free(s->cands);
    lode_free(s->probs);
    lode_free(s->counts);
    lode_free(s->mark);
    lode_free(s->ring);
    lode_free(s);
}

void eng_sampler_reset(eng_sampler *s)
{
    for (int32_t i = 0; i < s->ring_n; i++) s->counts[s->ring[i]] = 0;
    s->ring_n = s->ring_pos = 0;
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

void eng_sampler_accept(eng_sampler *s, eng_token t)
{
    int32_t w = s->p.penalty_last_n;
    if (t < 0 || t >= s->n_vocab || w == 0) return;
    if (s->ring_n == w) {
        s->counts[s->ring[s->ring_pos]]--;
    } else {
        s->ring_n++;
    }
    s->ring[s->ring_pos] = t;
    s->counts[t]++;
    s->ring_pos = (s->ring_pos + 1) % w;
}

/* ---- candidate ordering ------------------------------------------------------------------ */
static bool better(const cand *a, const cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void swap_c(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi] around a median-of-three pivot; returns the pivot's final index.
 * Elements better than the pivot end up before it. */
static int32_t partition(cand *c, int32_t lo, int32_t hi)
{
    int32_t mid = lo + (hi - lo) / 2;
    if (better(&c[mid], &c[lo])) swap_c(&c[mid], &c[lo]);
    if (better(&c[hi], &c[lo])) swap_c(&c[hi], &c[lo]);
    if (better(&c[hi], &c[mid])) swap_c(&c[hi], &c[mid]);
    swap_c(&c[mid], &c[hi]); /* pivot (the median) at hi */
    cand pv = c[hi];
    int32_t st = lo;
    for (int32_t i = lo; i < hi; i++)
        if (better(&c[i], &pv)) swap_c(&c[i], &c[st++]);
    swap_c(&c[st], &c[hi]);
    return st;
}

/* Moves the k best of c[0..n) to c[0..k) (in no particular order). */
static void select_top(cand *c, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    if (k <= 0 || k >= n) return;
    while (lo < hi) {
        int32_t p = partition(c, lo, hi);
        if (p == k || p == k - 1) return;
        if (p < k)
            lo = p + 1;
        else
            hi = p - 1;
    }
}

static void sort_cands(cand *c, int32_t n)
{
    while (n > 16) {
        int32_t p = partition(c, 0, n - 1);
        /* recurse into the smaller side, loop on the larger */
        if (p < n - p - 1) {
            sort_cands(c, p);
            c += p + 1;
            n -= p + 1;
        } else {
            sort_cands(c + p + 1, n - p - 1);
            n = p;
        }
    }
    for (int32_t i = 1; i < n; i++) {
        cand x = c[i];
        int32_t j = i;
        while (j > 0 && better(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* ---- exp and logprobs ------------------------------------------------------------------ */
static float clean(float x)
{
    return isnan(x) ? -INFINITY : x;
}

/* e^x in float: libm's expf, twice as fast as exp in double, and exact enough for
 * probabilities (the sums below are kept in double). */
static inline float exp_neg(float x)
{
    return expf(x);
}

#if defined(__x86_64__)
/* The same sum, 8 lanes at a time with AVX2/FMA (chosen at run time): e^v as
 * 2^round(v log2 e) times a degree-7 polynomial for 2^f, |f| <= 1/2, relative error
 * ~3e-7. Over a 50k vocabulary libm's expf is most of a token's sampling time. Lanes
 * below -87 (also -inf) give 0, NaN gives 0. */
__attribute__((target("avx2,fma"))) static double exp_sum_avx2(const float *x, int32_t n, float mx,
                                                               float scale, int32_t *done)
{
    const __m256 vmx = _mm256_set1_ps(mx), vsc = _mm256_set1_ps(scale);
    const __m256 lo = _mm256_set1_ps(-87.0f), log2e = _mm256_set1_ps(1.44269504088896341f);
    __m256 acc = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx), vsc);
        __m256 keep = _mm256_cmp_ps(v, lo, _CMP_GE_OQ); /* false for NaN */
        v = _mm256_max_ps(v, lo);
        __m256 t = _mm256_mul_ps(v, log2e);
        __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 f = _mm256_sub_ps(t, r);
        __m256 p = _mm256_set1_ps(1.5252733804059841e-05f);
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381606e-04f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
        __m256i e =
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(127)), 23);
        __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        acc = _mm256_add_ps(acc, _mm256_and_ps(y, keep));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    double sum = 0;
    for (int k = 0; k < 8; k++) sum += lanes[k];
    *done = i;
    return sum;
}
#endif

/* Sum over i < n of e^((x[i] - mx) * scale) (mx the maximum, scale > 0); NaN counts 0. */
static double exp_sum(const float *x, int32_t n, float mx, float scale)
{
    double sum = 0;
    int32_t i = 0;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        sum = exp_sum_avx2(x, n, mx, scale, &i);
#endif
    for (; i < n; i++) sum += exp_neg((clean(x[i]) - mx) * scale);
    return sum;
}

float eng_logprobs(const float *logits, int32_t n, eng_token t, eng_token_logprob *top,
                   int32_t n_top)
{
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx; /* NaN never wins */
    float lse = mx > -INFINITY ? mx + (float)log(exp_sum(logits, n, mx, 1.0f)) : INFINITY;
    if (n_top > ENG_MAX_LOGPROBS) n_top = ENG_MAX_LOGPROBS;
    if (top && n_top > 0) {
        cand best[ENG_MAX_LOGPROBS];
        int32_t nb = 0;
        for (int32_t i = 0; i < n; i++) {
            if (nb == n_top && !(logits[i] > best[nb - 1].logit)) continue; /* quick reject */
            cand c = {clean(logits[i]), i};
            if (nb == n_top && !better(&c, &best[nb - 1])) continue;
            int32_t j = nb < n_top ? nb++ : nb - 1;
            while (j > 0 && better(&c, &best[j - 1])) {
                best[j] = best[j - 1];
                j--;
            }
            best[j] = c;
        }
        for (int32_t i = 0; i < n_top; i++) {
            top[i].token = i < nb ? best[i].id : ENG_TOKEN_NONE;
            top[i].logprob = i < nb ? best[i].logit - lse : -INFINITY;
        }
    }
    return t >= 0 && t < n ? clean(logits[t]) - lse : -INFINITY;
}

/* ---- sampling -------------------------------------------------------------------------- */
static const float *apply_penalties(eng_sampler *s, const float *logits)
{
    const eng_sampler_params *p = &s->p;
    if (s->ring_n == 0 ||
        (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f))
        return logits;
    memcpy(s->work, logits, sizeof(float) * (size_t)s->n_vocab);
    for (int32_t i = 0; i < s->ring_n; i++) {
        int32_t t = s->ring[i];
        if (s->mark[t]) continue;
        s->mark[t] = 1;
        float l = s->work[t];
        int32_t c = s->counts[t];
        /* dividing a negative logit would make the token more likely: multiply it */
        l = l <= 0 ? l * p->repeat_penalty : l / p->repeat_penalty;
        l -= (float)c * p->frequency_penalty + (c > 0 ? p->presence_penalty : 0.0f);
        s->work[t] = l;
    }
    for (int32_t i = 0; i < s->ring_n; i++) s->mark[s->ring[i]] = 0;
    return s->work;
}

/* The k best of L[0..n) into c[0..k), best first: one pass with a sorted window, most
 * values rejected by a single comparison with the current k-th. */
static int32_t top_k_scan(const float *L, int32_t n, int32_t k, cand *c)
{
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float l = clean(L[i]);
        if (m == k && !(l > c[m - 1].logit)) continue; /* ties keep the lower id */
        int32_t j = m < k ? m++ : m - 1;
        while (j > 0 && l > c[j - 1].logit) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = (cand){l, i};
    }
    return m;
}

eng_token eng_sampler_sample(eng_sampler *s, const float *logits, eng_sample_result *res)
{
    const eng_sampler_params *p = &s->p;
    const float *L = apply_penalties(s, logits);
    int32_t n = s->n_vocab;
    eng_token tok = 0;
    cand *c = s->cands;
    int32_t nc = 0;
    bool sorted = false;

    if (p->temperature <= 0) {
        float best = -INFINITY;
        for (int32_t i = 0; i < n; i++) {
            if (L[i] > best) { /* NaN never wins; the first of equals stays */
                best = L[i];
                tok = i;
            }
        }
        goto done;
    }
    if (p->top_k > 0 && p->top_k < n && p->top_k <= 4096) {
        nc = top_k_scan(L, n, p->top_k, c);
        sorted = true;
    } else {
        for (int32_t i = 0; i < n; i++) c[nc++] = (cand){clean(L[i]), i};
        if (p->top_k > 0 && p->top_k < nc) {
            select_top(c, nc, p->top_k);
            nc = p->top_k;
            sort_cands(c, nc);
            sorted = true;
        }
    }
    /* the logits of the candidates, contiguous, for the exp loops */
    float *cl = s->work == L ? s->probs : s->work;
    if (p->top_p < 1.0f && nc > 1) {
        float mx = -INFINITY;
        for (int32_t i = 0; i < nc; i++) mx = c[i].logit > mx ? c[i].logit : mx;
        if (mx == -INFINITY) goto pick;
        for (int32_t i = 0; i < nc; i++) cl[i] = c[i].logit;
        double z = exp_sum(cl, nc, mx, 1.0f);
        int32_t m = sorted ? nc : LODE_MIN(nc, 256);
        for (;;) {
            if (!sorted) {
                select_top(c, nc, m);
                sort_cands(c, m);
            }
            double cum = 0;
            int32_t cut = -1;
            for (int32_t i = 0; i < m; i++) {
                cum += exp_neg(c[i].logit - mx) / z;
                if (cum >= p->top_p) {
                    cut = i + 1;
                    break;
                }
            }
            if (cut > 0) {
                nc = cut;
                break;
            }
            if (m == nc) break; /* rounding: keep them all */
            m = (int32_t)LODE_MIN((int64_t)nc, (int64_t)m * 8);
        }
        sorted = true;
    }
    if (p->min_p > 0.0f && nc > 1) {
        float mx = -INFINITY;
        for (int32_t i = 0; i < nc; i++) mx = c[i].logit > mx ? c[i].logit : mx;
        float thr = mx + logf(p->min_p);
        int32_t k = 0;
        for (int32_t i = 0; i < nc; i++)
            if (c[i].logit >= thr) c[k++] = c[i];
        if (k > 0) nc = k;
    }
pick:;
    /* temperature, softmax, draw */
    int32_t arg = 0;
    for (int32_t i = 1; i < nc; i++)
        if (better(&c[i], &c[arg])) arg = i;
    float mx = c[arg].logit;
    tok = c[arg].id;
    if (mx == -INFINITY || nc == 1) goto done;
    float inv_t = 1.0f / p->temperature;
    for (int32_t i = 0; i < nc; i++) cl[i] = c[i].logit;
    double sum = exp_sum(cl, nc, mx, inv_t);
    /* the sum may come from the vectorized exp and the walk from libm's: when rounding
     * leaves r past the walked total, the last token with mass is taken */
    double r = rng_uniform(s->rng) * sum, acc = 0;
    for (int32_t i = 0; i < nc; i++) {
        float e = exp_neg((cl[i] - mx) * inv_t);
        if (e <= 0) continue;
        acc += e;
        tok = c[i].id;
        if (r < acc) break;
    }
done:
    if (res) {
        res->token = tok;
        res->n_top = p->n_logprobs;
        res->logprob = eng_logprobs(logits, n, tok, res->top, p->n_logprobs);
    }
    eng_sampler_accept(s, tok);
    return tok;
}

/* ---- stop strings ------------------------------------------------------------------------------
 */
struct eng_stop {
    int n;
    char str[ENG_STOP_MAX_STRINGS][ENG_STOP_MAX_LEN];
    uint16_t len[ENG_STOP_MAX_STRINGS];
    /* for each stop string, the lengths of its prefixes the stream now ends with */
    uint16_t act[ENG_STOP_MAX_STRINGS][ENG_STOP_MAX_LEN];
    uint16_t n_act[ENG_STOP_MAX_STRINGS];
    char held[ENG_STOP_MAX_LEN];
    size_t n_held;
};

lode_status eng_stop_create(const char *const *stops, size_t n, eng_stop **out)
{
    *out = NULL;
    if (n > ENG_STOP_MAX_STRINGS) return LODE_ERR_LIMIT;
    for (size_t i = 0; i < n; i++) {
        if (!stops[i] || !*stops[i]) return LODE_ERR_INVALID;
        if (strlen(stops[i]) > ENG_STOP_MAX_LEN) return LODE_ERR_LIMIT;
    }
    eng_stop *m = lode_calloc(1, sizeof *m);
    if (!m) return LODE_ERR_NOMEM;
    m->n = (int)n;
    for (size_t i = 0; i < n; i++) {
        m->len[i] = (uint16_t)strlen(stops[i]);
        memcpy(m->str[i], stops[i], m->len[i]);
    }
    *out = m;
    return LODE_OK;
}

void eng_stop_destroy(eng_stop *m)
{
    lode_free(m);
}

void eng_stop_reset(eng_stop *m)
{
    memset(m->n_act, 0, sizeof m->n_act);
    m->n_held = 0;
}

int eng_stop_feed(eng_stop *m, const char *text, size_t n, char *out, size_t cap, size_t *n_out)
{
    size_t o = 0;
    int hit = -1;
    for (size_t k = 0; k < n && hit < 0; k++) {
        char ch = text[k];
        size_t keep = 0;
        for (int i = 0; i < m->n && hit < 0; i++) {
            uint16_t na = 0;
            for (uint16_t j = 0; j < m->n_act[i]; j++) {
                uint16_t l = m->act[i][j];
                if (m->str[i][l] != ch) continue;
                if (l + 1 == m->len[i]) {
                    hit = i;
                    break;
                }
                m->act[i][na++] = (uint16_t)(l + 1);
            }
            if (hit < 0 && m->str[i][0] == ch) {
                if (m->len[i] == 1)
                    hit = i;
                else
                    m->act[i][na++] = 1;
            }
            m->n_act[i] = na;
            for (uint16_t j = 0; j < na; j++)
                if (m->act[i][j] > keep) keep = m->act[i][j];
        }
        /* held + ch, of which the last `keep` bytes stay held */
        m->held[m->n_held++] = ch;
        size_t drop = hit >= 0 ? m->n_held - m->len[hit] : m->n_held - keep;
        if (o + drop <= cap) memcpy(out + o, m->held, drop);
        o += drop;
        if (hit >= 0) {
            m->n_held = 0;
        } else {
            memmove(m->held, m->held + drop, keep);
            m->n_held = keep;
        }
    }
    *n_out = o <= cap ? o : cap;
    return hit;
}

size_t eng_stop_flush(eng_stop *m, char *out, size_t cap)
{
    size_t n = LODE_MIN(m->n_held, cap);
    memcpy(out, m->held, n);
    eng_stop_reset(m);
    return n;
}

/* ---- per-request stop logic ---------------------------------------------------------------------
 */
struct eng_textgen {
    const eng_vocab *v;
    eng_detok detok;
    eng_stop *stop; /* NULL without stop strings */
    int32_t max_tokens, n_tokens;
    int stop_index;
    bool done;
    char *chunk;
    size_t chunk_cap;
};

lode_status eng_textgen_create(const eng_vocab *v, const char *const *stops, size_t n_stops,
                               int32_t max_tokens, unsigned detok_flags, eng_textgen **out)
{
    *out = NULL;
    eng_textgen *g = lode_calloc(1, sizeof *g);
    if (!g) return LODE_ERR_NOMEM;
    lode_status st = LODE_OK;
    g->v = v;
    eng_detok_init(&g->detok, v, detok_flags);
    g->max_tokens = max_tokens;
    g->stop_index = -1;
    g->chunk_cap = eng_detok_bound(v) + 8;
    g->chunk = lode_malloc(g->chunk_cap);
    if (!g->chunk) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    if (n_stops && (st = eng_stop_create(stops, n_stops, &g->stop)) != LODE_OK) goto out;
    *out = g;
    g = NULL;
out:
    eng_textgen_destroy(g);
    return st;
}

void eng_textgen_destroy(eng_textgen *g)
{
    if (!g) return;
    eng_stop_destroy(g->stop);
    lode_free(g->chunk);
    lode_free(g);
}

size_t eng_textgen_bound(const eng_textgen *g)
{
    return g->chunk_cap + ENG_STOP_MAX_LEN + 8;
}
int eng_textgen_stop_index(const eng_textgen *g)
{
    return g->stop_index;
}
int32_t eng_textgen_n_tokens(const eng_textgen *g)
{
    return g->n_tokens;
}

/* Passes decoded text through the stop matcher into out at *o. True on a stop string. */
static bool pass(eng_textgen *g, const char *t, size_t n, char *out, size_t cap, size_t *o)
{
    if (!g->stop) {
        if (*o + n <= cap) memcpy(out + *o, t, n);
        *o += n;
        return false;
    }
    size_t k = 0;
    int hit = eng_stop_feed(g->stop, t, n, out + *o, *o <= cap ? cap - *o : 0, &k);
    *o += k;
    if (hit >= 0) {
        g->stop_index = hit;
        return true;
    }
    return false;
}

size_t eng_textgen_finish(eng_textgen *g, char *out, size_t cap)
{
    size_t o = 0;
    if (g->done) return 0;
    g->done = true;
    size_t k = eng_detok_flush(&g->detok, g->chunk, g->chunk_cap);
    if (pass(g, g->chunk, k, out, cap, &o)) return LODE_MIN(o, cap);
    if (g->stop && o < cap) o += eng_stop_flush(g->stop, out + o, cap - o);
    return LODE_MIN(o, cap);
}

eng_stop_reason eng_textgen_push(eng_textgen *g, eng_token t, char *out, size_t cap, size_t *n_out)
{
    size_t o = 0;
    *n_out = 0;
    if (g->done) return g->stop_index >= 0 ? ENG_STOP_STRING : ENG_STOP_EOG;
    g->n_tokens++;
    if (eng_vocab_is_eog(g->v, t)) {
        *n_out = eng_textgen_finish(g, out, cap);
        return g->stop_index >= 0 ? ENG_STOP_STRING : ENG_STOP_EOG;
    }
    size_t k = eng_detok_push(&g->detok, t, g->chunk, g->chunk_cap);
    if (pass(g, g->chunk, k, out, cap, &o)) {
        g->done = true;
        *n_out = LODE_MIN(o, cap);
        return ENG_STOP_STRING;
    }
    if (g->max_tokens > 0 && g->n_tokens >= g->max_tokens) {
        o += eng_textgen_finish(g, out + LODE_MIN(o, cap), o < cap ? cap - o : 0);
        *n_out = LODE_MIN(o, cap);
        return g->stop_index >= 0 ? ENG_STOP_STRING : ENG_STOP_MAX_TOKENS;
    }
    *n_out = LODE_MIN(o, cap);
    return ENG_STOP_NONE;
}
