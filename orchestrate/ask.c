/*
 * ask.c: the direct RAG answer path (see ask.h): retrieval behind orc_retrieve, prompt
 * assembly within the context budget in real tokens, one engine request, and citation
 * extraction. The prompt is written for small instruction models: a short system
 * message, short numbered passages with their source above them, the question last.
 */
#include "orchestrate/ask.h"

#include "retrieval/qlog.h"
#include "retrieval/hybrid.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SYSTEM_PROMPT                                                                              \
    "You answer questions using only the numbered passages you are given. Cite the passages "      \
    "you use by their numbers in square brackets, like [1]. If the passages do not contain "       \
    "the answer, say that you do not know."
/* The answer starts with these words, written into the prompt after the assistant's turn
 * opens: small models follow "cite them like [1]" rarely, and a primed opening makes the
 * model choose the passage it answers from as its first tokens. The primer is part of the
 * answer the user sees (streamed first) and of the text citations are extracted from. */
#define ANSWER_PRIMER "According to ["
/* Passages cut to fit end with this. */
#define CUT_MARK " ..."
/* A passage cut to fit the budget must keep at least this many tokens of text. */
#define MIN_CUT_TOKENS 24

/* ---- modes ------------------------------------------------------------------------- */
lode_status orc_mode_parse(const char *s, orc_mode *out)
{
    int m = !s ? RET_MODE_AUTO : !strcmp(s, "bm25") ? RET_MODE_LEXICAL : ret_mode_parse(s);
    if (m < 0) return LODE_ERR_INVALID;
    *out = (orc_mode)m;
    return LODE_OK;
}

const char *orc_mode_name(orc_mode m)
{
    return ret_mode_name((ret_mode)m);
}

/* ---- retrieval --------------------------------------------------------------------- */
/* Words that carry no topic in a question. BM25 puts chunks with every query word first,
 * so "what does VACUUM do" would prefer chunks that happen to say "what" and "does" over
 * the page about VACUUM; the lexical query leaves them out. */
static const char *const QUESTION_WORDS[] = {
    "a",     "about", "an",    "and",  "are",  "as",    "at",  "be",     "by",     "can",
    "could", "do",    "does",  "for",  "from", "how",   "i",   "if",     "in",     "is",
    "it",    "its",   "me",    "my",   "of",   "on",    "or",  "please", "should", "tell",
    "that",  "the",   "there", "this", "to",   "was",   "we",  "what",   "when",   "where",
    "which", "who",   "why",   "will", "with", "would", "you", "your",
};

static int question_word(const char *w, size_t n)
{
    char low[16];
    if (n >= sizeof low) return 0;
    for (size_t i = 0; i < n; i++) low[i] = (char)((w[i] >= 'A' && w[i] <= 'Z') ? w[i] + 32 : w[i]);
    low[n] = 0;
    for (size_t i = 0; i < LODE_ARRAY_LEN(QUESTION_WORDS); i++)
        if (!strcmp(low, QUESTION_WORDS[i])) return 1;
    return 0;
}

/* The question without its question words (each word's surrounding punctuation ignored
 * for the test); the question itself when nothing else is left. */
static lode_status lexical_query(const char *question, lode_buf *out)
{
    lode_status st = LODE_OK;
    const char *p = question;
    int kept = 0;
    while (*p && !st) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        const char *w = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') p++;
        if (p == w) break;
        const char *a = w, *b = p;
        while (a < b && !(((unsigned char)*a | 32) >= 'a' && ((unsigned char)*a | 32) <= 'z') &&
               !(*a >= '0' && *a <= '9') && !((unsigned char)*a & 0x80))
            a++;
        while (b > a &&
               !(((unsigned char)b[-1] | 32) >= 'a' && ((unsigned char)b[-1] | 32) <= 'z') &&
               !(b[-1] >= '0' && b[-1] <= '9') && !((unsigned char)b[-1] & 0x80))
            b--;
        if (b > a && question_word(a, (size_t)(b - a))) continue;
        if (kept++) st = lode_buf_putc(out, ' ');
        if (!st) st = lode_buf_append(out, w, (size_t)(p - w));
    }
    if (!st && !kept) st = lode_buf_puts(out, question);
    if (!st && !out->data) st = lode_buf_puts(out, "");
    return st;
}

/* The one place that asks retrieval for chunks: the k best for the question under the
 * options' mode and filter, through retrieval's one search entry point (hybrid.h). dense
 * may be NULL (then AUTO means lexical). The lexical side gets the question without its
 * question words; so does the dense side, whose embedding they would only blur. */
static lode_status orc_retrieve(ret_store *s, ret_dense *dense, const char *question,
                                const orc_opts *o, int k, ret_results **out, char *err,
                                size_t errlen)
{
    ret_query q = {0};
    lode_buf text = LODE_BUF_INIT;
    lode_status st = lexical_query(question, &text);
    if (st) return lode_seterr(err, errlen, st, "out of memory");
    q.text = text.data;
    q.k = k;
    q.mode = (ret_mode)o->mode;
    q.filter.path_glob = o->uri;
    q.filter.media_type = o->media_type;
    q.hl_open = "";
    q.hl_close = "";
    q.ellipsis = "...";
    q.snippet_tokens = 32;
    q.vec = o->qvec;
    st = ret_hybrid_search(s, dense, &q, out);
    lode_buf_free(&text);
    if (st == LODE_ERR_UNSUPPORTED)
        return lode_seterr(err, errlen, st, "retrieval mode '%s' is not available: %s",
                           orc_mode_name(o->mode), ret_store_errmsg(s));
    if (st) return lode_seterr(err, errlen, st, "search failed: %s", ret_store_errmsg(s));
    return LODE_OK;
}

static int utf8_ok(const char *s);

lode_status orc_embed_question(ret_dense *dense, const char *question, float *out, char *err,
                               size_t errlen)
{
    if (!question || strlen(question) > ORC_MAX_QUESTION_BYTES || !utf8_ok(question))
        return lode_seterr(err, errlen, LODE_ERR_INVALID, "no valid question");
    /* what orc_retrieve gets: the question without surrounding blank space */
    size_t lead = strspn(question, " \t\r\n"), end = strlen(question);
    while (end > lead && strchr(" \t\r\n", question[end - 1])) end--;
    char *trimmed = lode_strndup(question + lead, end - lead);
    if (!trimmed) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
    lode_buf text = LODE_BUF_INIT;
    lode_status st = lexical_query(trimmed, &text);
    if (st)
        lode_seterr(err, errlen, st, "out of memory");
    else if ((st = ret_dense_embed(dense, text.data ? text.data : "", out)))
        lode_seterr(err, errlen, st, "%s", ret_dense_errmsg(dense));
    lode_buf_free(&text);
    lode_free(trimmed);
    return st;
}

/* ---- prompt ------------------------------------------------------------------------ */
static int count_tokens(eng_model *m, const char *text, size_t len, lode_status *st)
{
    int32_t *t = NULL;
    size_t n = 0;
    *st = eng_tokenize(m, text, len, 0, 0, &t, &n);
    lode_free(t);
    return (int)n;
}

/* The first max_tokens tokens of text, as text, ending at a word boundary when one is
 * near, in *out (lode_free). */
static lode_status cut_text(eng_model *m, const char *text, int max_tokens, char **out)
{
    int32_t *t = NULL;
    size_t n = 0;
    lode_buf b = LODE_BUF_INIT;
    lode_status st = eng_tokenize(m, text, strlen(text), 0, 0, &t, &n);
    if (!st) st = eng_detokenize(m, t, LODE_MIN(n, (size_t)max_tokens), 0, &b);
    if (!st) {
        size_t len = lode_utf8_valid_prefix(b.data ? b.data : "", b.len);
        size_t cut = len;
        while (cut > len / 2 && b.data[cut - 1] != ' ' && b.data[cut - 1] != '\n') cut--;
        if (cut <= len / 2) cut = len;
        while (cut && (b.data[cut - 1] == ' ' || b.data[cut - 1] == '\n')) cut--;
        b.len = cut;
        st = lode_buf_puts(&b, CUT_MARK);
    }
    if (!st) *out = lode_buf_take(&b);
    lode_buf_free(&b);
    lode_free(t);
    return st;
}

/* The source line of a passage: title (or the URI's last part) and heading path. */
static lode_status put_source(lode_buf *b, const orc_passage *p)
{
    const char *name = p->title;
    if (!*name) {
        const char *slash = strrchr(p->uri, '/');
        name = slash && slash[1] ? slash + 1 : p->uri;
    }
    lode_status st = lode_buf_puts(b, name);
    if (!st && *p->heading_path && strcmp(p->heading_path, name)) {
        st = lode_buf_puts(b, " > ");
        if (!st) st = lode_buf_puts(b, p->heading_path);
    }
    return st;
}

/* Appends passage p's block: "[n] source\ntext\n\n". */
static lode_status put_passage(lode_buf *b, const orc_passage *p, int n)
{
    lode_status st = lode_buf_printf(b, "[%d] ", n);
    if (!st) st = put_source(b, p);
    if (!st) st = lode_buf_putc(b, '\n');
    if (!st) st = lode_buf_puts(b, p->text);
    if (!st) st = lode_buf_puts(b, "\n\n");
    return st;
}

/* Appends the answer's opening: with one passage there is nothing to choose (a small
 * model may still write a number that names no passage), so it is cited outright. */
static lode_status put_primer(lode_buf *b, size_t n_used)
{
    return n_used == 1 ? lode_buf_puts(b, ANSWER_PRIMER "1], ") : lode_buf_puts(b, ANSWER_PRIMER);
}

/* Renders the whole prompt with passages[0..n_used) into a->prompt_text and its tokens
 * into a->prompt. frame: the words around the passages even when n_used is 0 (to measure
 * what the passages leave room for). */
static lode_status render(orc_answer *a, size_t n_used, int frame)
{
    lode_buf user = LODE_BUF_INIT, full = LODE_BUF_INIT;
    lode_status st = LODE_OK;
    frame |= n_used > 0;
    if (frame) st = lode_buf_puts(&user, "Passages:\n\n");
    for (size_t i = 0; !st && i < n_used; i++) st = put_passage(&user, &a->passages[i], (int)i + 1);
    if (!st) st = lode_buf_printf(&user, "Question: %s", a->question);
    if (!st && frame)
        st = lode_buf_puts(&user, "\nAnswer from the passages above and cite them like [1].");
    if (!st) {
        const char *roles[2] = {"system", "user"};
        const char *contents[2] = {SYSTEM_PROMPT, user.data};
        st = eng_chat_apply(a->model, roles, contents, 2, 1, &full);
        if (st == LODE_ERR_UNSUPPORTED) {
            /* no known chat template: a plain instruction prompt */
            lode_buf_reset(&full);
            st = lode_buf_printf(&full, "%s\n\n%s\n\nAnswer: ", SYSTEM_PROMPT, user.data);
        }
    }
    /* measured with the frame too (the one-passage primer is the longer one), so the
     * passages are fitted to the room the primer leaves */
    if (!st && frame) st = put_primer(&full, n_used ? n_used : 1);
    if (!st) {
        lode_free(a->prompt);
        a->prompt = NULL;
        size_t n = 0;
        st = eng_tokenize(a->model, full.data, full.len, 1, 1, &a->prompt, &n);
        a->n_prompt = (int)n;
    }
    if (!st) {
        lode_free(a->prompt_text);
        a->prompt_text = lode_buf_take(&full);
        if (!a->prompt_text) st = LODE_ERR_NOMEM;
    }
    lode_buf_free(&user);
    lode_buf_free(&full);
    return st;
}

/* Numbers passages in rank order while they fit the budget (context minus the answer's
 * tokens), each cut to passage_tokens, the last one cut to what is left. The final
 * rendering is checked whole, since tokens at the seams of separately counted pieces may
 * merge differently; passages are dropped from the end until it fits. */
static lode_status assemble(orc_answer *a, int passage_tokens, char *err, size_t errlen)
{
    int budget = a->n_ctx - a->max_tokens;
    lode_status st = render(a, 0, 1);
    if (st) return lode_seterr(err, errlen, st, "cannot render the prompt: %s", lode_strerror(st));
    if (a->n_prompt > budget)
        return lode_seterr(err, errlen, LODE_ERR_RANGE,
                           "the question takes %d tokens of the prompt; with %d reserved for the "
                           "answer that exceeds the model's context of %d tokens",
                           a->n_prompt, a->max_tokens, a->n_ctx);
    int used = a->n_prompt + 2; /* tokens at the seams may merge differently */
    size_t n_used = 0;
    lode_buf block = LODE_BUF_INIT;
    for (size_t i = 0; i < a->n_passages; i++) {
        orc_passage *p = &a->passages[i];
        int text_tokens = count_tokens(a->model, p->text, strlen(p->text), &st);
        if (st) break;
        if (text_tokens > passage_tokens) {
            char *cut = NULL;
            if ((st = cut_text(a->model, p->text, passage_tokens, &cut))) break;
            lode_free(p->text);
            p->text = cut;
            p->truncated = 1;
        }
        lode_buf_reset(&block);
        if ((st = put_passage(&block, p, (int)i + 1))) break;
        int bt = count_tokens(a->model, block.data, block.len, &st);
        if (st) break;
        if (used + bt > budget) {
            /* cut this one to what is left, if that leaves enough to be useful */
            lode_buf_reset(&block);
            char *saved = p->text;
            p->text = "";
            st = put_passage(&block, p, (int)i + 1);
            p->text = saved;
            if (st) break;
            int head = count_tokens(a->model, block.data, block.len, &st);
            if (st) break;
            int left = budget - used - head - 4;
            if (left < MIN_CUT_TOKENS) break;
            char *cut = NULL;
            if ((st = cut_text(a->model, p->text, left, &cut))) break;
            lode_free(p->text);
            p->text = cut;
            p->truncated = 1;
            lode_buf_reset(&block);
            if ((st = put_passage(&block, p, (int)i + 1))) break;
            bt = count_tokens(a->model, block.data, block.len, &st);
            if (st) break;
            p->tokens = bt;
            used += bt;
            n_used = i + 1;
            break;
        }
        p->tokens = bt;
        used += bt;
        n_used = i + 1;
    }
    lode_buf_free(&block);
    if (st)
        return lode_seterr(err, errlen, st, "cannot assemble the prompt: %s", lode_strerror(st));
    for (;;) {
        if ((st = render(a, n_used, 0)))
            return lode_seterr(err, errlen, st, "cannot render the prompt: %s", lode_strerror(st));
        if (a->n_prompt <= budget || n_used == 0) break;
        n_used--;
    }
    a->n_used = n_used;
    for (size_t i = 0; i < a->n_passages; i++) a->passages[i].n = i < n_used ? (int)i + 1 : 0;
    return LODE_OK;
}

/* ---- prepare ----------------------------------------------------------------------- */
static int utf8_ok(const char *s)
{
    size_t n = strlen(s);
    return lode_utf8_valid_prefix(s, n) == n;
}

static char *dup_or_empty(const char *s)
{
    return lode_strdup(s ? s : "");
}

lode_status orc_prepare(ret_store *store, ret_dense *dense, eng_model *model, const char *question,
                        const orc_opts *opts, orc_answer **out, char *err, size_t errlen)
{
    orc_opts o = {0};
    if (opts) o = *opts;
    *out = NULL;
    int64_t t0 = lode_now_ns();
    if (!store || !model) return lode_seterr(err, errlen, LODE_ERR_INVALID, "no store or no model");
    if (!question) return lode_seterr(err, errlen, LODE_ERR_INVALID, "no question");
    size_t qlen = strlen(question);
    if (qlen > ORC_MAX_QUESTION_BYTES)
        return lode_seterr(err, errlen, LODE_ERR_INVALID,
                           "the question is %zu bytes long; at most %d are accepted", qlen,
                           ORC_MAX_QUESTION_BYTES);
    if (!utf8_ok(question))
        return lode_seterr(err, errlen, LODE_ERR_INVALID, "the question is not valid UTF-8");
    size_t lead = strspn(question, " \t\r\n");
    if (lead == qlen) return lode_seterr(err, errlen, LODE_ERR_INVALID, "the question is empty");
    int k = o.k ? o.k : ORC_DEFAULT_K;
    if (k < 1 || k > ORC_MAX_K)
        return lode_seterr(err, errlen, LODE_ERR_INVALID, "k must be 1..%d", ORC_MAX_K);
    int max_tokens = o.max_tokens ? o.max_tokens : ORC_DEFAULT_MAX_TOKENS;
    int passage_tokens = o.passage_tokens ? o.passage_tokens : ORC_DEFAULT_PASSAGE_TOKNS;
    if (max_tokens < 1 || passage_tokens < 1)
        return lode_seterr(err, errlen, LODE_ERR_INVALID,
                           "max_tokens and passage_tokens must be positive");
    eng_model_info info;
    eng_model_info_get(model, &info);
    if (max_tokens >= info.n_ctx)
        return lode_seterr(err, errlen, LODE_ERR_RANGE,
                           "max_tokens %d does not leave room for a prompt in the model's context "
                           "of %d tokens",
                           max_tokens, info.n_ctx);

    lode_status st = LODE_OK;
    ret_results *res = NULL;
    orc_answer *a = lode_calloc(1, sizeof *a);
    if (!a) return lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
    a->t0_ns = t0;
    a->model = model;
    a->k = k;
    a->n_ctx = info.n_ctx;
    a->max_tokens = max_tokens;
    a->finish = ENG_FINISH_NONE;
    a->text.max = (size_t)max_tokens * 64 + 4096;
    if (o.has_sampling) {
        a->sampling = o.sampling;
    } else {
        eng_sampling_default(&a->sampling);
        a->sampling.repeat_penalty = 1.15f;
    }
    /* the question as asked, without surrounding blank space */
    size_t end = qlen;
    while (end > lead && strchr(" \t\r\n", question[end - 1])) end--;
    if (!(a->question = lode_strndup(question + lead, end - lead)) ||
        !(a->model_name = dup_or_empty(info.name))) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
        goto out;
    }

    /* retrieve */
    if ((st = orc_retrieve(store, dense, a->question, &o, k, &res, err, errlen))) goto out;
    a->mode = (orc_mode)res->mode;
    snprintf(a->retrieval_note, sizeof a->retrieval_note, "%s", res->note);
    if (res->n && !(a->passages = lode_calloc(res->n, sizeof *a->passages))) {
        st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < res->n; i++) {
        const ret_result *h = &res->r[i];
        orc_passage *p = &a->passages[a->n_passages++];
        p->chunk_id = h->chunk_id;
        p->document_id = h->document_id;
        p->score = h->score;
        if (!(p->text = dup_or_empty(h->text)) || !(p->uri = dup_or_empty(h->uri)) ||
            !(p->title = dup_or_empty(h->title)) ||
            !(p->heading_path = dup_or_empty(h->heading_path)) ||
            !(p->snippet = dup_or_empty(h->snippet))) {
            st = lode_seterr(err, errlen, LODE_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    int64_t t1 = lode_now_ns();
    a->t.retrieve_ms = (double)(t1 - t0) / 1e6;

    /* prompt */
    if ((st = assemble(a, passage_tokens, err, errlen))) goto out;
    a->no_passages = a->n_used == 0;
    if ((st = lode_buf_reserve(&a->text, (size_t)max_tokens * 8 + 64))) {
        lode_seterr(err, errlen, st, "out of memory");
        goto out;
    }
    a->t.prompt_ms = (double)(lode_now_ns() - t1) / 1e6;
    *out = a;
    a = NULL;
out:
    ret_results_free(res);
    orc_answer_free(a);
    return st;
}

/* ---- citations --------------------------------------------------------------------- */
static int add_cite(int *out, size_t max, size_t *n, int v)
{
    for (size_t i = 0; i < *n; i++)
        if (out[i] == v) return 0;
    if (*n < max) out[(*n)++] = v;
    return 0;
}

/* Parses one marker starting after '['; returns the bytes consumed up to and including
 * ']', or 0 when this is not a citation marker. Numbers go to nums[0..*nn). */
static size_t parse_marker(const char *p, size_t len, int *nums, size_t cap, size_t *nn)
{
    size_t i = 0;
    int in_range = 0, have = 0;
    long prev = 0;
    *nn = 0;
    while (i < len && p[i] == ' ') i++;
    /* an optional word before the numbers: [Passage 2], [source 1] */
    size_t w = i;
    while (i < len && ((p[i] | 32) >= 'a' && (p[i] | 32) <= 'z')) i++;
    if (i > w) {
        if (i - w > 12 || i >= len || p[i] != ' ') return 0;
        while (i < len && p[i] == ' ') i++;
    }
    for (;;) {
        if (i >= len || p[i] < '0' || p[i] > '9') return 0;
        long v = 0;
        while (i < len && p[i] >= '0' && p[i] <= '9') {
            v = v * 10 + (p[i] - '0');
            if (v > 100000) return 0;
            i++;
        }
        if (in_range) {
            for (long x = prev + 1; x <= v && x - prev <= 64; x++)
                if (*nn < cap) nums[(*nn)++] = (int)x;
        } else if (*nn < cap) {
            nums[(*nn)++] = (int)v;
        }
        have = 1;
        prev = v;
        in_range = 0;
        while (i < len && p[i] == ' ') i++;
        if (i >= len) return 0;
        if (p[i] == ']') return have ? i + 1 : 0;
        if (p[i] == ',' || p[i] == ';') {
            i++;
        } else if (p[i] == '-') {
            in_range = 1;
            i++;
        } else {
            return 0;
        }
        while (i < len && p[i] == ' ') i++;
    }
}

size_t orc_citations_extract(const char *text, size_t len, size_t n_used, int *out, size_t max)
{
    size_t n = 0;
    int nums[128];
    for (size_t i = 0; i < len; i++) {
        if ((text[i] | 32) == 'p' && (i == 0 || !isalnum((unsigned char)text[i - 1])) &&
            len - i > 9 && !strncasecmp(text + i, "passage ", 8)) {
            /* "passage 2", as small models often write instead of [2] */
            size_t j = i + 8;
            long v = 0;
            while (j < len && isdigit((unsigned char)text[j]) && v < 100000)
                v = v * 10 + (text[j++] - '0');
            if (j > i + 8 && (j == len || !isalnum((unsigned char)text[j])) && v >= 1 &&
                (size_t)v <= n_used)
                add_cite(out, max, &n, (int)v);
            continue;
        }
        if (text[i] != '[') continue;
        size_t nn = 0;
        size_t used = parse_marker(text + i + 1, len - i - 1, nums, LODE_ARRAY_LEN(nums), &nn);
        if (!used) continue;
        for (size_t j = 0; j < nn; j++)
            if (nums[j] >= 1 && (size_t)nums[j] <= n_used) add_cite(out, max, &n, nums[j]);
        i += used;
    }
    return n;
}

/* ---- generation -------------------------------------------------------------------- */
static int on_token(void *user, int32_t tok, const char *piece, size_t len, float logprob)
{
    orc_answer *a = user;
    a->n_tokens++;
    if (!len) return 0;
    if (lode_buf_append(&a->text, piece, len)) return 1; /* past the bound: stop */
    if (a->on_delta) a->on_delta(a->user, piece, len);
    return 0;
}

lode_status orc_answer_cite(orc_answer *a)
{
    int nums[ORC_MAX_K];
    size_t n = orc_citations_extract(a->text.data ? a->text.data : "", a->text.len, a->n_used, nums,
                                     LODE_ARRAY_LEN(nums));
    lode_free(a->cited);
    a->cited = NULL;
    a->n_cited = 0;
    for (size_t i = 0; i < a->n_passages; i++) a->passages[i].cited = 0;
    if (!n) return LODE_OK;
    if (!(a->cited = lode_malloc(n * sizeof *a->cited))) return LODE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        a->cited[i] = (size_t)nums[i] - 1;
        a->passages[nums[i] - 1].cited = 1;
    }
    a->n_cited = n;
    return LODE_OK;
}

static void finish_answer(orc_answer *a)
{
    if (orc_answer_cite(a) && a->status == LODE_OK) a->status = LODE_ERR_NOMEM;
    a->t.total_ms = (double)(lode_now_ns() - a->t0_ns) / 1e6;
}

static void on_done(void *user, lode_status st, eng_finish finish, const eng_stats *stats)
{
    orc_answer *a = user;
    a->status = st;
    a->finish = finish;
    a->t.queue_ms = stats->queue_ms;
    a->t.prefill_ms = stats->prefill_ms;
    a->t.decode_ms = stats->decode_ms;
    finish_answer(a);
    if (a->on_done) a->on_done(a->user, a);
}

lode_status orc_start(orc_answer *a, void (*on_delta)(void *user, const char *text, size_t len),
                      void (*done)(void *user, orc_answer *a), void *user)
{
    a->on_delta = on_delta;
    a->on_done = done;
    a->user = user;
    if (a->no_passages) {
        lode_status st = lode_buf_puts(&a->text, ORC_NO_PASSAGES_ANSWER);
        if (st) return st;
        a->finish = ENG_FINISH_STOP;
        a->status = LODE_OK;
        if (on_delta) on_delta(user, a->text.data, a->text.len);
        finish_answer(a);
        if (done) done(user, a);
        return LODE_OK;
    }
    lode_status pst = put_primer(&a->text, a->n_used);
    if (pst) return pst;
    if (on_delta) on_delta(user, a->text.data, a->text.len);
    eng_request r;
    memset(&r, 0, sizeof r);
    r.prompt = a->prompt;
    r.n_prompt = a->n_prompt;
    r.sampling = a->sampling;
    r.max_tokens = a->max_tokens;
    r.on_token = on_token;
    r.on_done = on_done;
    r.user = a;
    return eng_submit(a->model, &r, &a->eng_id);
}

void orc_cancel(orc_answer *a)
{
    if (a && !a->no_passages) eng_cancel(a->model, a->eng_id);
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    void (*on_delta)(void *user, const char *text, size_t len);
    void *user;
} waiter;

static void wait_delta(void *user, const char *text, size_t len)
{
    waiter *w = user;
    if (w->on_delta) w->on_delta(w->user, text, len);
}

static void wait_done(void *user, orc_answer *a)
{
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

lode_status orc_run(orc_answer *a, void (*on_delta)(void *user, const char *text, size_t len),
                    void *user)
{
    waiter w = {.on_delta = on_delta, .user = user};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    lode_status st = orc_start(a, wait_delta, wait_done, &w);
    if (!st) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        st = a->status;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return st;
}

const char *orc_finish_name(const orc_answer *a)
{
    if (a->no_passages) return "no_passages";
    switch (a->finish) {
    case ENG_FINISH_LENGTH:
        return "length";
    case ENG_FINISH_EOG:
    case ENG_FINISH_STOP:
        return "stop";
    case ENG_FINISH_CANCELLED:
        return "cancelled";
    default:
        return "error";
    }
}

/* ---- log and JSON ------------------------------------------------------------------ */
lode_status orc_log(ret_store *store, const orc_answer *a, int64_t *id)
{
    lode_status st = LODE_OK;
    ret_qlog_hit *hits = a->n_passages ? lode_calloc(a->n_passages, sizeof *hits) : NULL;
    int64_t *cited = a->n_cited ? lode_calloc(a->n_cited, sizeof *cited) : NULL;
    if ((a->n_passages && !hits) || (a->n_cited && !cited)) {
        st = LODE_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < a->n_passages; i++) {
        hits[i].chunk_id = a->passages[i].chunk_id;
        hits[i].score = a->passages[i].score;
        hits[i].n = a->passages[i].n;
    }
    for (size_t i = 0; i < a->n_cited; i++) cited[i] = a->passages[a->cited[i]].chunk_id;
    ret_qlog q = {
        .question = a->question,
        .mode = orc_mode_name(a->mode),
        .k = a->k,
        .hits = hits,
        .n_hits = a->n_passages,
        .answer = a->text.data ? a->text.data : "",
        .cited = cited,
        .n_cited = a->n_cited,
        .finish = orc_finish_name(a),
        .model = a->model_name,
        .prompt_tokens = a->no_passages ? 0 : a->n_prompt,
        .answer_tokens = a->n_tokens,
        .retrieve_ms = a->t.retrieve_ms,
        .prompt_ms = a->t.prompt_ms,
        .prefill_ms = a->t.prefill_ms,
        .decode_ms = a->t.decode_ms,
        .total_ms = a->t.total_ms,
    };
    st = ret_qlog_add(store, &q, id);
out:
    lode_free(hits);
    lode_free(cited);
    return st;
}

/* A JSON string of s, with invalid UTF-8 (which should not occur) left out. */
static json_t *jstr(const char *s, size_t len)
{
    size_t ok = lode_utf8_valid_prefix(s, len);
    json_t *v = json_stringn(s, ok);
    return v ? v : json_string("");
}

static json_t *passage_json(const orc_passage *p, int full)
{
    json_t *o = json_pack("{s:i, s:I, s:I, s:o, s:o, s:o, s:f}", "n", p->n, "chunk_id",
                          (json_int_t)p->chunk_id, "document_id", (json_int_t)p->document_id, "uri",
                          jstr(p->uri, strlen(p->uri)), "title", jstr(p->title, strlen(p->title)),
                          "heading_path", jstr(p->heading_path, strlen(p->heading_path)), "score",
                          p->score);
    if (!o) return NULL;
    if (full) {
        json_object_set_new(o, "snippet", jstr(p->snippet, strlen(p->snippet)));
    } else {
        json_object_set_new(o, "tokens", json_integer(p->tokens));
        json_object_set_new(o, "truncated", json_boolean(p->truncated));
        json_object_set_new(o, "cited", json_boolean(p->cited));
    }
    return o;
}

json_t *orc_answer_json(const orc_answer *a, int with_answer)
{
    json_t *cit = json_array(), *pas = json_array();
    for (size_t i = 0; cit && i < a->n_cited; i++)
        json_array_append_new(cit, passage_json(&a->passages[a->cited[i]], 1));
    for (size_t i = 0; pas && i < a->n_passages; i++)
        json_array_append_new(pas, passage_json(&a->passages[i], 0));
    json_t *tim =
        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "retrieve_ms", a->t.retrieve_ms, "prompt_ms",
                  a->t.prompt_ms, "queue_ms", a->t.queue_ms, "prefill_ms", a->t.prefill_ms,
                  "decode_ms", a->t.decode_ms, "total_ms", a->t.total_ms);
    int prompt_tokens = a->no_passages ? 0 : a->n_prompt;
    json_t *use = json_pack("{s:i, s:i, s:i}", "prompt_tokens", prompt_tokens, "completion_tokens",
                            a->n_tokens, "total_tokens", prompt_tokens + a->n_tokens);
    json_t *o = NULL;
    if (cit && pas && tim && use)
        o = json_pack("{s:s, s:o, s:s, s:s, s:i, s:O, s:O, s:O, s:O}", "object", "ask.answer",
                      "question", jstr(a->question, strlen(a->question)), "finish_reason",
                      orc_finish_name(a), "mode", orc_mode_name(a->mode), "k", a->k, "citations",
                      cit, "passages", pas, "timings", tim, "usage", use);
    if (o && with_answer)
        json_object_set_new(o, "answer", jstr(a->text.data ? a->text.data : "", a->text.len));
    json_decref(cit);
    json_decref(pas);
    json_decref(tim);
    json_decref(use);
    return o;
}

void orc_answer_free(orc_answer *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n_passages; i++) {
        orc_passage *p = &a->passages[i];
        lode_free(p->uri);
        lode_free(p->title);
        lode_free(p->heading_path);
        lode_free(p->snippet);
        lode_free(p->text);
    }
    lode_free(a->passages);
    lode_free(a->question);
    lode_free(a->model_name);
    lode_free(a->prompt_text);
    lode_free(a->prompt);
    lode_free(a->cited);
    lode_buf_free(&a->text);
    lode_free(a);
}
