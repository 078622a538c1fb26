/* test_orchestrate.c: the RAG answer path (orchestrate/ask.h) on a small store written by
 * the test and the real default model (models/SmolLM2-135M-Instruct.Q4_1.gguf, loaded with
 * a 512-token context so that budgets bind): citation extraction, prompt assembly within
 * the budget in real token counts, retrieval filters, generation with streamed deltas, the
 * answer without passages, and the question-log row. Tests that need the model skip when
 * it is missing (make model fetches it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/bert.h"
#include "engine/engine.h"
#include "orchestrate/ask.h"
#include "retrieval/dense.h"
#include "retrieval/qlog.h"
#include "retrieval/store.h"

#define MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define EMBED_PATH "models/all-MiniLM-L6-v2"
#define N_CTX      512
#define SHA        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static eng_model *model;
static char dir[64];
static char db[128];

/* ---- fixtures ---------------------------------------------------------------------- */

static void add_doc(ret_store *s, const char *uri, const char *title, const char *heading,
                    const char *text)
{
    ret_doc d = {uri, title, "text/plain", SHA, (int64_t)strlen(text), 1};
    ret_chunk_in c = {text, heading, 0, (int64_t)strlen(text), 10};
    lode_status st = ret_store_doc_replace(s, &d, &c, 1, NULL);
    if (st) fprintf(stderr, "add %s: %s\n", uri, ret_store_errmsg(s));
    assert_int_equal(st, LODE_OK);
}

/* A long paragraph on one topic, repeated sentences with the topic word. */
static char *long_text(const char *topic, int sentences)
{
    size_t cap = (size_t)sentences * 160 + 1;
    char *t = malloc(cap);
    size_t n = 0;
    for (int i = 0; i < sentences; i++)
        n += (size_t)snprintf(t + n, cap - n,
                              "The %s keeps sentence number %d about its pages, locks and "
                              "journals in order. ",
                              topic, i + 1);
    return t;
}

static void populate(ret_store *s)
{
    add_doc(s, "file:///docs/vacuum.html", "VACUUM", "How VACUUM works",
            "The VACUUM command rebuilds the database file, repacking it into a minimal "
            "amount of disk space.");
    add_doc(s, "file:///docs/wal.html", "Write-Ahead Logging", "Overview",
            "In WAL mode, changes are appended to a separate write-ahead log file and later "
            "moved into the database by a checkpoint.");
    add_doc(s, "file:///docs/fk.html", "Foreign Keys", "Enabling",
            "Foreign key constraints are disabled by default and are enabled with PRAGMA "
            "foreign_keys = ON.");
    for (int i = 0; i < 4; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "file:///docs/pager%d.txt", i);
        char *t = long_text("pager", 12 + i);
        add_doc(s, uri, "The Pager", "Pages", t);
        free(t);
    }
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/lode-test-orc-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(db, sizeof db, "%s/lode.db", dir);
    ret_store *s = NULL;
    char err[256];
    if (ret_store_open(db, 0, &s, err, sizeof err)) return -1;
    populate(s);
    ret_store_close(s);
    if (access(MODEL_PATH, R_OK) == 0) {
        eng_model_opts o = {0};
        o.n_ctx = N_CTX;
        o.n_threads = 2;
        if (eng_model_load(MODEL_PATH, &o, &model, err, sizeof err)) {
            fprintf(stderr, "cannot load %s: %s\n", MODEL_PATH, err);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    eng_model_free(model);
    model = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static ret_store *open_store(void)
{
    ret_store *s = NULL;
    char err[256];
    assert_int_equal(ret_store_open(db, 0, &s, err, sizeof err), LODE_OK);
    return s;
}

#define NEED_MODEL()                                                                               \
    do {                                                                                           \
        if (!model) {                                                                              \
            fprintf(stderr, "skipped: %s is missing (make model fetches it)\n", MODEL_PATH);       \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- citations --------------------------------------------------------------------- */

static void expect_cites(const char *text, size_t n_used, const int *want, size_t n_want)
{
    int got[16];
    size_t n = orc_citations_extract(text, strlen(text), n_used, got, 16);
    if (n != n_want) fprintf(stderr, "'%s': %zu citations, want %zu\n", text, n, n_want);
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) assert_int_equal(got[i], want[i]);
}

static void test_citations(void **state)
{
    expect_cites("VACUUM rebuilds the file [2].", 3, (int[]){2}, 1);
    expect_cites("See [3] and [1], also [3] again.", 3, (int[]){3, 1}, 2);
    expect_cites("Both [1, 2] say so; [2;3] too.", 3, (int[]){1, 2, 3}, 3);
    expect_cites("Adjacent [2][1].", 4, (int[]){2, 1}, 2);
    expect_cites("A range [1-3].", 4, (int[]){1, 2, 3}, 3);
    expect_cites("Words first [Passage 2] and [source 1].", 2, (int[]){2, 1}, 2);
    expect_cites("Passage 2: it rebuilds the file, as passage 1 says.", 3, (int[]){2, 1}, 2);
    expect_cites("passage 4 is not given; passage 12a and passages 1 are no citations", 3, NULL, 0);
    /* passages that do not exist, and things that are not markers */
    expect_cites("Out of range [7] and [0].", 3, NULL, 0);
    expect_cites("Not markers: [a], [1 2], [x1], [], [1, and a[i] index [2", 3, NULL, 0);
    expect_cites("No passages given [1].", 0, NULL, 0);
    /* the number bound is respected, and max caps the output */
    int got[2];
    assert_int_equal(orc_citations_extract("[1][2][3]", 9, 3, got, 2), 2);
    assert_int_equal(got[1], 2);
}

/* ---- modes and options ------------------------------------------------------------- */

static void test_modes_and_bad_input(void **state)
{
    orc_mode m;
    assert_int_equal(orc_mode_parse("lexical", &m), LODE_OK);
    assert_int_equal(m, ORC_MODE_LEXICAL);
    assert_int_equal(orc_mode_parse(NULL, &m), LODE_OK);
    assert_int_equal(m, ORC_MODE_AUTO);
    assert_int_equal(orc_mode_parse("semantic", &m), LODE_ERR_INVALID);
    NEED_MODEL();
    ret_store *s = open_store();
    orc_answer *a = NULL;
    char err[512];
    assert_int_equal(orc_prepare(s, NULL, model, "   \n", NULL, &a, err, sizeof err),
                     LODE_ERR_INVALID);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(orc_prepare(s, NULL, model, "bad \xff utf8", NULL, &a, err, sizeof err),
                     LODE_ERR_INVALID);
    orc_opts o = {.k = ORC_MAX_K + 1};
    assert_int_equal(orc_prepare(s, NULL, model, "vacuum", &o, &a, err, sizeof err),
                     LODE_ERR_INVALID);
    o = (orc_opts){.mode = ORC_MODE_DENSE};
    assert_int_equal(orc_prepare(s, NULL, model, "vacuum", &o, &a, err, sizeof err),
                     LODE_ERR_UNSUPPORTED);
    o = (orc_opts){.max_tokens = N_CTX};
    assert_int_equal(orc_prepare(s, NULL, model, "vacuum", &o, &a, err, sizeof err),
                     LODE_ERR_RANGE);
    /* a question that alone overflows the context once the answer is reserved */
    char *q = long_text("question", 30);
    o = (orc_opts){.max_tokens = 200};
    assert_int_equal(orc_prepare(s, NULL, model, q, &o, &a, err, sizeof err), LODE_ERR_RANGE);
    assert_non_null(strstr(err, "context"));
    free(q);
    assert_null(a);
    ret_store_close(s);
}

/* ---- prompt assembly --------------------------------------------------------------- */

static int count_tokens(const char *text)
{
    int32_t *t = NULL;
    size_t n = 0;
    assert_int_equal(eng_tokenize(model, text, strlen(text), 1, 1, &t, &n), LODE_OK);
    lode_free(t);
    return (int)n;
}

static void test_prompt_budget(void **state)
{
    NEED_MODEL();
    ret_store *s = open_store();
    char err[512];
    /* four long pager passages (about 250 tokens each) against a 512-token context with
     * 100 to 300 reserved for the answer: not all of them fit */
    size_t last_used = 4;
    for (int max_tokens = 100; max_tokens <= 300; max_tokens += 100) {
        orc_answer *a = NULL;
        orc_opts o = {.k = 4, .max_tokens = max_tokens, .passage_tokens = 400};
        lode_status st = orc_prepare(s, NULL, model, "pager journals", &o, &a, err, sizeof err);
        if (st) fprintf(stderr, "prepare: %s\n", err);
        assert_int_equal(st, LODE_OK);
        assert_int_equal(a->n_passages, 4);
        assert_int_equal(a->n_ctx, N_CTX);
        /* the prompt's real token count, and it fits with the answer's budget */
        assert_int_equal(a->n_prompt, count_tokens(a->prompt_text));
        assert_true(a->n_prompt + max_tokens <= N_CTX);
        /* some passages were cut or dropped, and what is in the prompt is numbered */
        assert_true(a->n_used >= 1);
        int cut = a->n_used < a->n_passages;
        for (size_t i = 0; i < a->n_passages; i++) {
            const orc_passage *p = &a->passages[i];
            cut |= p->truncated;
            if (i < a->n_used) {
                char mark[64];
                snprintf(mark, sizeof mark, "[%zu] The Pager > Pages\n", i + 1);
                assert_int_equal(p->n, (int)i + 1);
                assert_non_null(strstr(a->prompt_text, mark));
                assert_non_null(strstr(a->prompt_text, p->text));
                assert_true(p->tokens > 0);
            } else {
                assert_int_equal(p->n, 0);
            }
        }
        assert_true(cut);
        /* a tighter budget never holds more passages */
        assert_true(a->n_used <= last_used);
        last_used = a->n_used;
        assert_non_null(strstr(a->prompt_text, "Question: pager journals"));
        assert_non_null(strstr(a->prompt_text, "only the numbered passages"));
        orc_answer_free(a);
    }
    /* short passages: each is cut to passage_tokens */
    orc_answer *a = NULL;
    orc_opts o = {.k = 2, .max_tokens = 16, .passage_tokens = 20};
    assert_int_equal(orc_prepare(s, NULL, model, "pager journals", &o, &a, err, sizeof err),
                     LODE_OK);
    assert_int_equal(a->n_used, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_true(a->passages[i].truncated);
        assert_true(count_tokens(a->passages[i].text) <= 20 + 4);
    }
    orc_answer_free(a);
    ret_store_close(s);
}

static void test_uri_filter(void **state)
{
    NEED_MODEL();
    ret_store *s = open_store();
    char err[512];
    orc_answer *a = NULL;
    orc_opts o = {.k = 3, .uri = "*/pager2.txt", .max_tokens = 16};
    assert_int_equal(orc_prepare(s, NULL, model, "pager", &o, &a, err, sizeof err), LODE_OK);
    assert_int_equal(a->n_passages, 1);
    assert_string_equal(a->passages[0].uri, "file:///docs/pager2.txt");
    orc_answer_free(a);
    ret_store_close(s);
}

/* ---- answering and the log --------------------------------------------------------- */

typedef struct deltas {
    char buf[8192];
    size_t len;
    int calls;
} deltas;

static void collect(void *user, const char *text, size_t len)
{
    deltas *d = user;
    if (d->len + len < sizeof d->buf) {
        memcpy(d->buf + d->len, text, len);
        d->len += len;
        d->buf[d->len] = 0;
    }
    d->calls++;
}

static void test_answer_and_log(void **state)
{
    NEED_MODEL();
    ret_store *s = open_store();
    char err[512];
    orc_answer *a = NULL;
    orc_opts o = {.k = 3, .max_tokens = 8};
    assert_int_equal(
        orc_prepare(s, NULL, model, "What does the VACUUM command do?", &o, &a, err, sizeof err),
        LODE_OK);
    assert_string_equal(a->passages[0].uri, "file:///docs/vacuum.html");
    assert_string_equal(a->passages[0].title, "VACUUM");
    assert_string_equal(a->passages[0].heading_path, "How VACUUM works");
    assert_non_null(strstr(a->passages[0].snippet, "VACUUM"));
    deltas d = {0};
    assert_int_equal(orc_run(a, collect, &d), LODE_OK);
    assert_true(a->n_tokens >= 1 && a->n_tokens <= 8);
    assert_true(a->finish == ENG_FINISH_LENGTH || a->finish == ENG_FINISH_EOG);
    assert_true(a->text.len > 0);
    /* the deltas are the answer, in order */
    assert_int_equal(d.len, a->text.len);
    assert_memory_equal(d.buf, a->text.data, d.len);
    /* the answer opens with the primer the prompt ends with, so its first tokens name a
     * passage; with passages this short the model's pick is one of them */
    assert_true(!strncmp(a->text.data, "According to [", 14));
    assert_true(strstr(a->prompt_text, "According to [") != NULL);
    assert_int_equal(orc_answer_cite(a), LODE_OK);
    if (a->n_cited < 1) print_message("answer: %s\n", a->text.data);
    assert_true(a->n_cited >= 1);
    assert_true(a->t.retrieve_ms > 0 && a->t.prompt_ms > 0 && a->t.prefill_ms > 0);
    assert_true(a->t.total_ms >= a->t.prefill_ms + a->t.decode_ms);

    /* what it cites is whatever its text says: give it a known text to check the log */
    lode_buf_reset(&a->text);
    assert_int_equal(lode_buf_puts(&a->text, "It rebuilds the file [1], see also [1] and [9]."),
                     LODE_OK);
    assert_int_equal(orc_answer_cite(a), LODE_OK);
    assert_int_equal(a->n_cited, 1);
    assert_true(a->passages[0].cited);
    int64_t id = 0;
    assert_int_equal(orc_log(s, a, &id), LODE_OK);
    assert_true(id > 0);

    sqlite3 *sq = ret_store_sqlite(s);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(sq,
                                        "SELECT question, answer, cited, n_retrieved, n_passages, "
                                        "n_cited, finish, mode, k, answer_tokens, prefill_ms, "
                                        "retrieved ->> '$[0].chunk_id', retrieved ->> '$[0].n' "
                                        "FROM v_questions WHERE id = ?1",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(q, 1, id);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(q, 0), "What does the VACUUM command do?");
    assert_string_equal(sqlite3_column_text(q, 1), a->text.data);
    char cited[64];
    snprintf(cited, sizeof cited, "[%lld]", (long long)a->passages[0].chunk_id);
    assert_string_equal(sqlite3_column_text(q, 2), cited);
    assert_int_equal(sqlite3_column_int(q, 3), (int)a->n_passages);
    assert_int_equal(sqlite3_column_int(q, 4), (int)a->n_used);
    assert_int_equal(sqlite3_column_int(q, 5), 1);
    assert_string_equal(sqlite3_column_text(q, 6), orc_finish_name(a));
    assert_string_equal(sqlite3_column_text(q, 7), "lexical");
    assert_int_equal(sqlite3_column_int(q, 8), 3);
    assert_int_equal(sqlite3_column_int(q, 9), a->n_tokens);
    assert_true(sqlite3_column_double(q, 10) > 0);
    assert_int_equal(sqlite3_column_int64(q, 11), a->passages[0].chunk_id);
    assert_int_equal(sqlite3_column_int(q, 12), 1);
    sqlite3_finalize(q);

    /* the JSON the API returns */
    json_t *j = orc_answer_json(a, 1);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "answer")), a->text.data);
    json_t *c = json_object_get(j, "citations");
    assert_int_equal(json_array_size(c), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(c, 0), "n")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(c, 0), "chunk_id")),
                     a->passages[0].chunk_id);
    assert_non_null(json_object_get(json_object_get(j, "timings"), "decode_ms"));
    json_decref(j);
    orc_answer_free(a);
    ret_store_close(s);
}

static void test_no_passages(void **state)
{
    NEED_MODEL();
    ret_store *s = open_store();
    char err[512];
    orc_answer *a = NULL;
    assert_int_equal(orc_prepare(s, NULL, model, "zyxwv qqqq", NULL, &a, err, sizeof err), LODE_OK);
    assert_int_equal(a->n_passages, 0);
    assert_true(a->no_passages);
    deltas d = {0};
    assert_int_equal(orc_run(a, collect, &d), LODE_OK);
    assert_string_equal(a->text.data, ORC_NO_PASSAGES_ANSWER);
    assert_string_equal(d.buf, ORC_NO_PASSAGES_ANSWER);
    assert_string_equal(orc_finish_name(a), "no_passages");
    assert_int_equal(a->n_tokens, 0);
    int64_t id = 0;
    assert_int_equal(orc_log(s, a, &id), LODE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(ret_store_sqlite(s),
                                        "SELECT finish, retrieved, cited FROM questions "
                                        "WHERE id = ?1",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(q, 1, id);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(q, 0), "no_passages");
    assert_string_equal(sqlite3_column_text(q, 1), "[]");
    assert_string_equal(sqlite3_column_text(q, 2), "[]");
    sqlite3_finalize(q);
    orc_answer_free(a);
    ret_store_close(s);
}

static void test_qlog_bad_input(void **state)
{
    ret_store *s = open_store();
    ret_qlog q = {.question = "q", .answer = NULL};
    assert_int_equal(ret_qlog_add(s, &q, NULL), LODE_ERR_INVALID);
    q.answer = "a \xc3";
    assert_int_equal(ret_qlog_add(s, &q, NULL), LODE_ERR_UTF8);
    /* scores that JSON cannot hold are written as 0, so the row stays valid JSON */
    ret_qlog_hit h = {42, 1.0 / 0.0, 0};
    q.answer = "ok";
    q.hits = &h;
    q.n_hits = 1;
    int64_t id = 0;
    assert_int_equal(ret_qlog_add(s, &q, &id), LODE_OK);
    ret_store_close(s);
}

/* With the store embedded (the default embedding model), AUTO retrieves hybrid, and a
 * paraphrase without the document's words finds it through the dense side. */
static void test_hybrid(void **state)
{
    NEED_MODEL();
    if (access(EMBED_PATH "/model.safetensors", R_OK) != 0) {
        fprintf(stderr, "skipped: %s is missing (make model fetches it)\n", EMBED_PATH);
        skip();
    }
    char err[1024];
    eng_bert *bert = NULL;
    eng_bert_opts bo = {.n_threads = 2};
    assert_int_equal(eng_bert_load(EMBED_PATH, &bo, &bert, err, sizeof err), LODE_OK);
    ret_store *s = open_store();
    assert_int_equal(
        ret_store_embed_set(s, eng_bert_name(bert), eng_bert_dim(bert), EMBED_PATH, NULL), LODE_OK);
    assert_int_equal(ret_vectors_fill(s, bert, NULL, NULL, NULL, NULL), LODE_OK);
    ret_dense *d = NULL;
    ret_dense_opts dopts = {.model = bert, .no_save = 1};
    assert_int_equal(ret_dense_open(s, &dopts, &d, err, sizeof err), LODE_OK);

    orc_answer *a = NULL;
    orc_opts o = {.k = 2, .max_tokens = 8};
    assert_int_equal(
        orc_prepare(s, d, model, "How can I reclaim unused disk space?", &o, &a, err, sizeof err),
        LODE_OK);
    assert_int_equal(a->mode, ORC_MODE_HYBRID);
    assert_string_equal(a->retrieval_note, "");
    assert_string_equal(a->passages[0].uri, "file:///docs/vacuum.html");
    orc_answer_free(a);
    /* dense alone: words the document does not have */
    o.mode = ORC_MODE_DENSE;
    assert_int_equal(orc_prepare(s, d, model, "shrinking a bloated file", &o, &a, err, sizeof err),
                     LODE_OK);
    assert_int_equal(a->mode, ORC_MODE_DENSE);
    assert_true(a->n_passages >= 1);
    json_t *j = orc_answer_json(a, 0);
    assert_string_equal(json_string_value(json_object_get(j, "mode")), "dense");
    json_decref(j);
    orc_answer_free(a);
    ret_dense_close(d);
    ret_store_close(s);
    eng_bert_destroy(bert);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_citations),      cmocka_unit_test(test_modes_and_bad_input),
        cmocka_unit_test(test_prompt_budget),  cmocka_unit_test(test_uri_filter),
        cmocka_unit_test(test_answer_and_log), cmocka_unit_test(test_no_passages),
        cmocka_unit_test(test_qlog_bad_input), cmocka_unit_test(test_hybrid),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
