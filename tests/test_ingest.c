/*
 * test_ingest.c: the ingest module: each loader on the fixtures in tests/data/ingest/,
 * the chunker's properties on generated documents, incremental runs through ing_run,
 * and, through the real `lode` binary as a process: bad inputs and exit codes, kill -9
 * in the middle of a run (then integrity and complete chunk sets), two runs at once on
 * one store, and the SQLite documentation (sqlite3-doc) searched for phrases of known
 * pages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/lode.h"
#include "common/progress.h"
#include "ingest/ingest.h"
#include "ingest/run.h"
#include "ingest/walk.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Paths here are built in fixed buffers from short mkdtemp names; GCC cannot see that. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define DATA        "tests/data/ingest/"
#define SQLITE_DOCS "/usr/share/doc/sqlite3"

/* ---- helpers ----------------------------------------------------------------------- */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    lode_buf b = LODE_BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) lode_buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    return lode_buf_take(&b);
}

static void spit(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void spits(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    spit(path, text, strlen(text));
}

static ing_doc *load_fixture(const char *name)
{
    size_t len;
    char path[512];
    snprintf(path, sizeof path, DATA "%s", name);
    char *data = slurp(path, &len);
    assert_non_null(data);
    ing_doc *doc = NULL;
    char err[256] = "";
    lode_status st = ing_load(data, len, ing_media_from_name(name), &doc, err, sizeof err);
    lode_free(data);
    if (st) fail_msg("%s: %s", name, err);
    return doc;
}

static const ing_block *find_block(const ing_doc *d, const char *needle)
{
    for (size_t i = 0; i < d->n_blocks; i++) {
        const ing_block *b = &d->blocks[i];
        char *t = lode_strndup(d->text + b->start, b->end - b->start);
        int hit = strstr(t, needle) != NULL;
        lode_free(t);
        if (hit) return b;
    }
    return NULL;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/lode-test-ingest-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return lode_strdup(d);
}

static const char *lode_bin(void)
{
    static char path[512];
    const char *b = getenv("LODE_BUILD");
    snprintf(path, sizeof path, "%s/lode", b && *b ? b : "build");
    return path;
}

/* Starts `lode args...` with stdout and stderr to files (NULL: /dev/null); returns the
 * pid. */
static pid_t spawn_lode(const char *const *args, const char *out, const char *err)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0) _exit(127);
        dup2(o, 1);
        dup2(e, 2);
        char *argv[64];
        size_t n = 0;
        argv[n++] = (char *)lode_bin();
        for (; args[n - 1] && n < 63; n++) argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int run_lode(const char *const *args, const char *out, const char *err)
{
    return wait_exit(spawn_lode(args, out, err));
}

static int64_t sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int have_binary(void)
{
    if (access(lode_bin(), X_OK) == 0) return 1;
    print_message("no %s (build it first: make)\n", lode_bin());
    return 0;
}

/* ---- loaders ----------------------------------------------------------------------- */
static void test_html_loader(void **state)
{
    ing_doc *d = load_fixture("page.html");
    assert_int_equal(d->media, ING_MEDIA_HTML);
    assert_string_equal(d->title, "Fixture Page");
    /* dropped: head, script, style, noscript, nav, header, footer, aside, forms, svg,
     * elements named as menus */
    static const char *const gone[] = {
        "secretScript",  "color: red",       "Navigation link", "Header banner", "Footer text",
        "Sidebar aside", "Search box label", "Vector text",     "Menu entry",    "Enable scripts"};
    for (size_t i = 0; i < LODE_ARRAY_LEN(gone); i++)
        if (strstr(d->text, gone[i])) fail_msg("'%s' should be dropped", gone[i]);
    /* entities decoded, no-break spaces and runs of whitespace collapsed */
    assert_non_null(
        strstr(d->text, "Fish & Chips < 3 \xE2\x80\x94 caf\xC3\xA9 au lait \xE2\x98\xBA."));
    assert_non_null(strstr(d->text, "Some spaced text with a link inside."));
    /* headings make the path */
    const ing_block *b = find_block(d, "Install it first");
    assert_non_null(b);
    assert_int_equal(b->kind, ING_BLOCK_PARAGRAPH);
    assert_string_equal(d->paths[b->path], "Intro > Setup");
    b = find_block(d, "Deep detail");
    assert_string_equal(d->paths[b->path], "Intro > Setup > Details");
    b = find_block(d, "Run it.");
    assert_string_equal(d->paths[b->path], "Intro > Usage");
    b = find_block(d, "Details");
    assert_int_equal(b->kind, ING_BLOCK_HEADING);
    assert_int_equal(b->level, 3);
    /* pre keeps its lines and indentation */
    b = find_block(d, "indented");
    assert_int_equal(b->kind, ING_BLOCK_CODE);
    assert_non_null(strstr(d->text + b->start, "{\n    indented();\n}"));
    b = find_block(d, "Second bold item");
    assert_int_equal(b->kind, ING_BLOCK_LIST);
    assert_non_null(find_block(d, "cell one cell two"));
    /* blocks are in order, separated by a blank line, and the text is valid UTF-8 */
    for (size_t i = 1; i < d->n_blocks; i++) {
        assert_int_equal(d->blocks[i].start, d->blocks[i - 1].end + 2);
        assert_memory_equal(d->text + d->blocks[i - 1].end, "\n\n", 2);
    }
    assert_int_equal(lode_utf8_valid_prefix(d->text, d->len), d->len);
    assert_int_equal(d->utf8_repairs, 0);
    ing_doc_destroy(d);
}

/* Script, style and SVG content is cut before parsing; what surrounds it, and text that
 * only looks like such a tag (in a comment, in an attribute-less inline run, after an
 * unterminated element), comes out as the parser alone would give it. */
static void test_html_opaque_elements(void **state)
{
    static const struct {
        const char *html, *want;
    } cases[] = {
        {"<p>a<svg width=1><text>diagram</text><svg><text>inner</text></svg>"
         "<title>t</title></svg>b</p>",
         "ab"},
        {"<p>x<SCRIPT type=x>if (a<b) document.write('</p>')</script >y</p>", "xy"},
        {"<p>one</p><!-- <svg> --><p>two</p><svg/><p>three</p>", "one\n\ntwo\n\nthree"},
        {"<p>k<style>p{}</style>l<svgx>m</svgx></p>", "klm"},
        {"<p>before</p><svg><text>never closed", "before"},
        {"<p>s</p><script>never closed", "s"},
    };
    for (size_t i = 0; i < LODE_ARRAY_LEN(cases); i++) {
        ing_doc *d = NULL;
        assert_int_equal(ing_load_html(cases[i].html, strlen(cases[i].html), &d, NULL, 0), LODE_OK);
        if (strcmp(d->text, cases[i].want))
            fail_msg("case %zu: got '%s', want '%s'", i, d->text, cases[i].want);
        ing_doc_destroy(d);
    }
}

static void test_html_edge_cases(void **state)
{
    static const char *const cases[] = {
        "",
        "<",
        "<html",
        "<p>unclosed <b>bold",
        "<script>never closed",
        "<h1>a<h2>b</h1>c",
        "<pre>\r\n\r\n</pre>",
        "<title></title><h1>Head</h1>x",
        "&#0;&#xD800;&#x110000;&bogus;",
        "<div><div><div><div><p>deep</div>",
    };
    for (size_t i = 0; i < LODE_ARRAY_LEN(cases); i++) {
        ing_doc *d = NULL;
        lode_status st = ing_load_html(cases[i], strlen(cases[i]), &d, NULL, 0);
        assert_int_equal(st, LODE_OK);
        assert_int_equal(lode_utf8_valid_prefix(d->text, d->len), d->len);
        ing_doc_destroy(d);
    }
    /* a page in another declared charset is decoded, not repaired; undeclared bad bytes
     * are repaired */
    ing_doc *d = NULL;
    const char *l1 = "<meta http-equiv=\"content-type\" content=\"text/html; charset=ISO-8859-1\">"
                     "<title>Caf\xe9</title><p>na\xefve \xa9</p>";
    assert_int_equal(ing_load_html(l1, strlen(l1), &d, NULL, 0), LODE_OK);
    assert_string_equal(d->title, "Caf\xC3\xA9");
    assert_string_equal(d->text, "na\xC3\xAFve \xC2\xA9");
    assert_int_equal(d->utf8_repairs, 0);
    ing_doc_destroy(d);
    const char *bad = "<p>bad \xff byte</p>";
    assert_int_equal(ing_load_html(bad, strlen(bad), &d, NULL, 0), LODE_OK);
    assert_string_equal(d->text, "bad \xEF\xBF\xBD byte");
    assert_int_equal(d->utf8_repairs, 1);
    ing_doc_destroy(d);
    /* long pages with raw UTF-8 and no declared charset keep all their text, to the end */
    lode_buf big = LODE_BUF_INIT;
    for (int i = 0; i < 3000; i++)
        lode_buf_printf(&big,
                        "<p>na\xC3\xAFve caf\xC3\xA9 %d \xE2\x80\x94</p>\n<pre>x(c.n)\n</pre>", i);
    lode_buf_puts(&big, "<p>final marker</p>");
    assert_int_equal(ing_load_html(big.data, big.len, &d, NULL, 0), LODE_OK);
    assert_non_null(strstr(d->text, "na\xC3\xAFve caf\xC3\xA9 2999 \xE2\x80\x94"));
    assert_int_equal(d->len > 12 && !strcmp(d->text + d->len - 12, "final marker"), 1);
    assert_int_equal(d->n_blocks, 6001);
    ing_doc_destroy(d);
    lode_buf_free(&big);
    /* a page of nothing but deep headings keeps its heading paths bounded */
    lode_buf hb = LODE_BUF_INIT;
    for (int l = 1; l <= 5; l++) {
        lode_buf_printf(&hb, "<h%d>", l);
        for (int i = 0; i < 300; i++) lode_buf_putc(&hb, (char)('A' + l));
        lode_buf_printf(&hb, "</h%d>", l);
    }
    for (int i = 0; i < 40000; i++) lode_buf_printf(&hb, "<h6>%d</h6>", i);
    assert_int_equal(ing_load_html(hb.data, hb.len, &d, NULL, 0), LODE_OK);
    size_t path_bytes = 0;
    for (size_t i = 0; i < d->n_paths; i++) path_bytes += strlen(d->paths[i]) + 1;
    assert_true(path_bytes <= ((size_t)8 << 20) + 4096);
    assert_int_equal(d->n_blocks, 40005);
    ing_doc_destroy(d);
    lode_buf_free(&hb);
    /* no <title>: the first h1 */
    const char *h = "<h2>Not this</h2><h1>Real  title</h1><p>x</p>";
    assert_int_equal(ing_load_html(h, strlen(h), &d, NULL, 0), LODE_OK);
    assert_string_equal(d->title, "Real title");
    ing_doc_destroy(d);
    /* very deep nesting neither crashes nor loses the text */
    lode_buf b = LODE_BUF_INIT;
    for (int i = 0; i < 20000; i++) lode_buf_puts(&b, "<div><span>");
    lode_buf_puts(&b, "bottom text");
    assert_int_equal(ing_load_html(b.data, b.len, &d, NULL, 0), LODE_OK);
    assert_non_null(strstr(d->text, "bottom text"));
    ing_doc_destroy(d);
    lode_buf_free(&b);
}

static void test_markdown_loader(void **state)
{
    ing_doc *d = load_fixture("doc.md");
    assert_int_equal(d->media, ING_MEDIA_MARKDOWN);
    assert_string_equal(d->title, "Guide");
    const ing_block *b = find_block(d, "Welcome");
    assert_non_null(b);
    /* link text kept, URL dropped, entity decoded, emphasis markers gone */
    assert_non_null(
        strstr(d->text, "Welcome to the guide, see the website for more \xC2\xA9 2024."));
    assert_null(strstr(d->text, "example.com"));
    assert_null(strstr(d->text, "raw html block"));
    b = find_block(d, "tar xf");
    assert_int_equal(b->kind, ING_BLOCK_CODE);
    assert_string_equal(d->paths[b->path], "Guide > Install > Linux");
    assert_non_null(strstr(d->text, "tar xf lode.tar.gz\n    cd lode && make"));
    b = find_block(d, "apt install two");
    assert_int_equal(b->kind, ING_BLOCK_LIST);
    assert_string_equal(d->paths[b->path], "Guide > Install > Linux");
    b = find_block(d, "Run lode ingest on a folder.");
    assert_string_equal(d->paths[b->path], "Guide > Use");
    ing_doc_destroy(d);
}

static void test_text_loader_repairs_utf8(void **state)
{
    ing_doc *d = load_fixture("bad_utf8.txt");
    assert_int_equal(d->media, ING_MEDIA_TEXT);
    assert_string_equal(d->title, "Title line of the text");
    assert_int_equal(d->utf8_repairs, 2);
    assert_int_equal(lode_utf8_valid_prefix(d->text, d->len), d->len);
    assert_int_equal(d->n_blocks, 4); /* paragraphs by blank lines */
    assert_non_null(strstr(d->text, "bad byte \xEF\xBF\xBD here and continues."));
    assert_non_null(strstr(d->text, "Second paragraph \xEF\xBF\xBD( broken"));
    assert_non_null(strstr(d->text, "caf\xC3\xA9."));
    ing_doc_destroy(d);

    lode_buf b = LODE_BUF_INIT;
    size_t fixed = 0;
    assert_int_equal(ing_utf8_repair("a\0b\xC0\xAF", 5, &b, &fixed), LODE_OK);
    assert_int_equal(fixed, 3); /* NUL, overlong lead, stray continuation */
    assert_int_equal(b.len, 2 + 9);
    lode_buf_free(&b);
}

static void test_sniff_and_media(void **state)
{
    ing_media m = ING_MEDIA_UNKNOWN;
    char why[128];
    assert_int_equal(ing_sniff("a\0b", 3, &m, why, sizeof why), LODE_ERR_UNSUPPORTED);
    assert_non_null(strstr(why, "NUL"));
    assert_int_equal(ing_sniff("\x89PNG\r\n\x1a\n", 8, &m, why, sizeof why), LODE_ERR_UNSUPPORTED);
    assert_non_null(strstr(why, "PNG"));
    assert_int_equal(ing_sniff("%PDF-1.7\n", 9, &m, why, sizeof why), LODE_ERR_UNSUPPORTED);
    char junk[400];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(0x80 + (i * 7) % 0x40);
    assert_int_equal(ing_sniff(junk, sizeof junk, &m, why, sizeof why), LODE_ERR_UNSUPPORTED);
    m = ING_MEDIA_UNKNOWN;
    assert_int_equal(ing_sniff("  <!DOCTYPE html><p>x", 21, &m, NULL, 0), LODE_OK);
    assert_int_equal(m, ING_MEDIA_HTML);
    m = ING_MEDIA_UNKNOWN;
    assert_int_equal(ing_sniff("plain words", 11, &m, NULL, 0), LODE_OK);
    assert_int_equal(m, ING_MEDIA_TEXT);
    assert_int_equal(ing_media_from_name("a/b/C.HTM"), ING_MEDIA_HTML);
    assert_int_equal(ing_media_from_name("x.markdown"), ING_MEDIA_MARKDOWN);
    assert_int_equal(ing_media_from_name("notes.txt"), ING_MEDIA_TEXT);
    assert_int_equal(ing_media_from_name("image.png"), ING_MEDIA_UNKNOWN);
    assert_int_equal(ing_media_from_name(".bashrc"), ING_MEDIA_UNKNOWN);
    char hex[65];
    assert_int_equal(ing_sha256_hex("abc", 3, hex), LODE_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* ---- chunking ---------------------------------------------------------------------- */
static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void random_words(lode_buf *b, int n)
{
    static const char *const words[] = {
        "alpha",        "beta", "gamma",    "delta",        "epsilon", "zeta",    "caf\xC3\xA9",
        "na\xC3\xAFve", "x",    "database", "transactions", "42",      "(paren)", "end,"};
    for (int i = 0; i < n; i++) {
        lode_buf_puts(b, words[rnd() % LODE_ARRAY_LEN(words)]);
        lode_buf_puts(b, rnd() % 9 == 0 ? ". " : " ");
    }
}

static int is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\t';
}

/* Tokens of the whitespace-delimited word around position p. */
static size_t word_tokens_at(const ing_doc *d, size_t p)
{
    size_t s = p, e = p;
    while (s > 0 && !is_ws(d->text[s - 1])) s--;
    while (e < d->len && !is_ws(d->text[e])) e++;
    return ing_token_estimate(d->text + s, e - s, NULL);
}

/* Checks every property the chunker promises on doc with these options. */
static void check_chunks(const ing_doc *d, int target, int overlap)
{
    ing_chunk_opts o = {target, overlap, NULL, NULL};
    ing_chunk *c = NULL;
    size_t n = 0;
    assert_int_equal(ing_chunk_doc(d, &o, &c, &n), LODE_OK);
    assert_true(n > 0);
    size_t covered_to = 0; /* every byte of every block lies in some chunk */
    for (size_t i = 0; i < n; i++) {
        const ing_chunk *k = &c[i];
        assert_true(k->start < k->end && k->end <= d->len);
        assert_true(k->tokens > 0 && k->tokens <= target);
        assert_int_equal((size_t)k->tokens,
                         ing_token_estimate(d->text + k->start, k->end - k->start, NULL));
        /* never inside a word, unless the word alone is over the target */
        if (!(k->start == 0 || is_ws(d->text[k->start - 1])))
            assert_true(word_tokens_at(d, k->start) > (size_t)target);
        if (!(k->end == d->len || is_ws(d->text[k->end])) &&
            word_tokens_at(d, k->end) <= (size_t)target)
            fail_msg("chunk %zu (target %d) ends inside a word: ...%.*s|%.10s", i, target, 30,
                     d->text + k->end - 30, d->text + k->end);
        assert_false(is_ws(d->text[k->start]));
        /* offsets in code points map back to the same text */
        size_t cp = 0;
        for (size_t j = 0; j < k->start; j++) cp += ((unsigned char)d->text[j] & 0xC0) != 0x80;
        assert_int_equal(k->char_start, cp);
        for (size_t j = k->start; j < k->end; j++) cp += ((unsigned char)d->text[j] & 0xC0) != 0x80;
        assert_int_equal(k->char_end, cp);
        /* a chunk stays under one heading path: its blocks all have the chunk's path, or
         * are headings whose own section had no text */
        for (size_t b = 0; b < d->n_blocks; b++) {
            const ing_block *bl = &d->blocks[b];
            if (bl->end <= k->start || bl->start >= k->end) continue;
            if (bl->path != k->path) {
                assert_int_equal(bl->kind, ING_BLOCK_HEADING);
                assert_true(bl->end <= k->end);
            }
        }
        if (i > 0 && c[i - 1].path == k->path) {
            /* consecutive chunks of a section overlap by at most the overlap */
            assert_true(k->start >= c[i - 1].start);
            if (k->start < c[i - 1].end) {
                assert_true(overlap > 0);
                assert_true((int)ing_token_estimate(d->text + k->start, c[i - 1].end - k->start,
                                                    NULL) <= overlap);
            }
        } else if (i > 0) {
            assert_true(k->start >= c[i - 1].end); /* sections never overlap */
        }
        if (k->start > covered_to) {
            for (size_t j = covered_to; j < k->start; j++) assert_true(is_ws(d->text[j]));
        }
        if (k->end > covered_to) covered_to = k->end;
    }
    assert_int_equal(covered_to, d->len);
    lode_free(c);
}

static void test_chunker_properties(void **state)
{
    for (int round = 0; round < 12; round++) {
        lode_buf md = LODE_BUF_INIT;
        int sections = 1 + (int)(rnd() % 6);
        for (int s = 0; s < sections; s++) {
            lode_buf_printf(&md, "%.*s Section %d\n\n", 1 + (int)(rnd() % 3), "###", s);
            int paras = (int)(rnd() % 5);
            for (int p = 0; p < paras; p++) {
                if (rnd() % 5 == 0) {
                    lode_buf_puts(&md, "```\n");
                    for (int l = 0; l < (int)(rnd() % 40); l++)
                        lode_buf_puts(&md, "  code line here;\n");
                    lode_buf_puts(&md, "```\n\n");
                } else {
                    random_words(&md, 1 + (int)(rnd() % 400));
                    lode_buf_puts(&md, "\n\n");
                }
            }
        }
        if (round == 0)
            lode_buf_puts(&md, "averyveryveryveryverylongwordwithoutanyspacesatall "
                               "repeated averyveryveryveryverylongwordwithoutspaces\n");
        ing_doc *d = NULL;
        assert_int_equal(ing_load_markdown(md.data, md.len, &d, NULL, 0), LODE_OK);
        check_chunks(d, 64, 8);
        check_chunks(d, 256, 32);
        check_chunks(d, 16, 0);
        check_chunks(d, 8, 4);
        ing_doc_destroy(d);
        lode_buf_free(&md);
    }
}

static void test_chunker_long_inputs(void **state)
{
    /* one paragraph without sentence ends: cut between words */
    lode_buf t = LODE_BUF_INIT;
    for (int i = 0; i < 3000; i++) lode_buf_puts(&t, "word ");
    ing_doc *d = NULL;
    assert_int_equal(ing_load_text(t.data, t.len, &d, NULL, 0), LODE_OK);
    check_chunks(d, 100, 10);
    ing_doc_destroy(d);
    /* one word longer than the target: the only cut inside a word, at a code point */
    lode_buf_reset(&t);
    for (int i = 0; i < 2000; i++) lode_buf_puts(&t, "\xC3\xA9");
    assert_int_equal(ing_load_text(t.data, t.len, &d, NULL, 0), LODE_OK);
    ing_chunk *c = NULL;
    size_t n = 0;
    ing_chunk_opts o = {32, 4, NULL, NULL};
    assert_int_equal(ing_chunk_doc(d, &o, &c, &n), LODE_OK);
    assert_true(n > 1);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(c[i].tokens <= 32);
        assert_int_equal(((unsigned char)d->text[c[i].start] & 0xC0) != 0x80, 1);
        if (i) assert_int_equal(c[i].start, c[i - 1].end); /* no overlap inside a word */
        total += c[i].end - c[i].start;
    }
    assert_int_equal(total, d->len);
    lode_free(c);
    ing_doc_destroy(d);
    /* megabytes in one paragraph (a text file without blank lines), one sentence, or one
     * word: linear time (each used to rescan the rest of the paragraph for every chunk) */
    static const char *const units[] = {"word ", "word word. ", "abcdefgh"};
    for (size_t u = 0; u < LODE_ARRAY_LEN(units); u++) {
        lode_buf_reset(&t);
        while (t.len < (4u << 20)) lode_buf_puts(&t, units[u]);
        double t0 = lode_now_s();
        assert_int_equal(ing_load_text(t.data, t.len, &d, NULL, 0), LODE_OK);
        c = NULL;
        n = 0;
        assert_int_equal(ing_chunk_doc(d, NULL, &c, &n), LODE_OK);
        size_t covered = 0;
        for (size_t i = 0; i < n; i++) {
            assert_true(c[i].tokens <= ING_CHUNK_TARGET_DEFAULT);
            assert_true(c[i].start <= covered && c[i].end > covered);
            covered = c[i].end;
        }
        assert_int_equal(covered, d->len);
        print_message("%zu MB of '%s': %zu chunks in %.2f s\n", t.len >> 20, units[u], n,
                      lode_now_s() - t0);
        lode_free(c);
        ing_doc_destroy(d);
    }
    /* sentences: a long paragraph is cut after a sentence end when one is near */
    lode_buf_reset(&t);
    for (int i = 0; i < 200; i++) lode_buf_puts(&t, "This is one short sentence. ");
    assert_int_equal(ing_load_text(t.data, t.len, &d, NULL, 0), LODE_OK);
    assert_int_equal(ing_chunk_doc(d, &o, &c, &n), LODE_OK);
    for (size_t i = 0; i + 1 < n; i++) assert_int_equal(d->text[c[i].end - 1], '.');
    lode_free(c);
    ing_doc_destroy(d);
    lode_buf_free(&t);
}

static size_t count_bytes(const char *text, size_t len, void *ctx)
{
    (*(int *)ctx)++;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += text[i] != ' ' && text[i] != '\n';
    return n;
}

static void test_chunker_counter_seam(void **state)
{
    ing_doc *d = load_fixture("page.html");
    int calls = 0;
    ing_chunk_opts o = {40, 5, count_bytes, &calls};
    ing_chunk *c = NULL;
    size_t n = 0;
    assert_int_equal(ing_chunk_doc(d, &o, &c, &n), LODE_OK);
    assert_true(calls > 0);
    for (size_t i = 0; i < n; i++) {
        int dummy = 0;
        assert_true(c[i].tokens <= 40);
        assert_int_equal((size_t)c[i].tokens,
                         count_bytes(d->text + c[i].start, c[i].end - c[i].start, &dummy));
    }
    lode_free(c);
    ing_doc_destroy(d);
}

static void test_progress_format(void **state)
{
    char line[256];
    lode_progress_format(line, sizeof line, 100, "files", 50, 100, 5000000, 10000000, 2.0);
    assert_non_null(strstr(line, " 50%"));
    assert_non_null(strstr(line, "50/100 files"));
    assert_non_null(strstr(line, "5.0/10.0 MB"));
    assert_non_null(strstr(line, "2.5 MB/s"));
    assert_non_null(strstr(line, "ETA 2s"));
    assert_true(strlen(line) < 100);
    lode_progress_format(line, sizeof line, 30, "files", 0, 0, 0, 0, 0);
    assert_non_null(strstr(line, "ETA --"));
    /* off a terminal: nothing is drawn */
    FILE *f = tmpfile();
    lode_progress *p = lode_progress_create(f, LODE_PROGRESS_AUTO, "files");
    assert_false(lode_progress_active(p));
    lode_progress_update(p, 1, 1, 1);
    lode_progress_printf(p, "a line");
    lode_progress_destroy(p);
    assert_int_equal(ftell(f), 7);
    fclose(f);
}

/* ---- incremental runs through the API ---------------------------------------------- */
typedef struct msgs {
    char text[4096];
    int failed, warned;
} msgs;

static void collect(void *ctx, const char *path, const char *reason, int failed)
{
    msgs *m = ctx;
    size_t l = strlen(m->text);
    snprintf(m->text + l, sizeof m->text - l, "%s: %s\n", path, reason);
    if (failed)
        m->failed++;
    else
        m->warned++;
}

static void test_incremental(void **state)
{
    char *dir = make_tmpdir();
    char db[4200], sub[4200], path[4200];
    snprintf(db, sizeof db, "%s/store.db", dir);
    snprintf(sub, sizeof sub, "%s/docs", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    spits(sub, "a.md", "# A\n\nAlpha text about apples.\n");
    spits(sub, "b.txt", "Beta text about bananas.\n");
    spits(sub, "c.html", "<title>C</title><p>Cherry text.</p>");
    spits(sub, "skip.png", "\x89PNG not really");
    ret_store *s = NULL;
    assert_int_equal(ret_store_open(db, 0, &s, NULL, 0), LODE_OK);
    msgs m = {0};
    ing_run_opts o = {0};
    o.on_message = collect;
    o.ctx = &m;
    o.threads = 2;
    const char *roots[] = {sub};
    ing_run_stats S;
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_added, 3);
    assert_int_equal(S.files_failed, 0);
    assert_int_equal(S.files_ignored, 1);
    ret_store_counts cnt;
    assert_int_equal(ret_store_get_counts(s, &cnt), LODE_OK);
    assert_int_equal(cnt.documents, 3);
    sqlite3 *q = ret_store_sqlite(s);
    assert_int_equal(
        sql_int(q, "SELECT count(*) FROM ingest_runs WHERE status = 'ok' AND files_added = 3"), 1);

    /* nothing changed: nothing read */
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_unchanged, 3);
    assert_int_equal(S.files_added + S.files_updated, 0);
    assert_int_equal(S.bytes_read, 0);

    /* new mtime, same content: hashed, still unchanged */
    snprintf(path, sizeof path, "%s/b.txt", sub);
    struct timespec ts[2] = {{1000000, 0}, {1000000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_unchanged, 3);
    assert_int_equal(S.bytes_read, 25);
    assert_int_equal(sql_int(q, "SELECT mtime_ns FROM documents WHERE uri LIKE '%/b.txt'"),
                     (int64_t)1000000 * 1000000000);

    /* changed content: replaced, old chunks gone */
    int64_t old_id = sql_int(q, "SELECT id FROM chunks WHERE text LIKE '%bananas%'");
    spits(sub, "b.txt", "Beta text about blueberries now.\n\nAnd a second paragraph.\n");
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_updated, 1);
    assert_int_equal(S.files_unchanged, 2);
    assert_int_equal(sql_int(q, "SELECT count(*) FROM chunks WHERE text LIKE '%bananas%'"), 0);
    assert_int_equal(sql_int(q, "SELECT count(*) FROM chunks WHERE text LIKE '%blueberries%'"), 1);
    char sqlq[128];
    snprintf(sqlq, sizeof sqlq, "SELECT count(*) FROM chunks WHERE id = %lld", (long long)old_id);
    assert_int_equal(sql_int(q, sqlq), 0);
    assert_int_equal(sql_int(q, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'bananas'"),
                     0);

    /* --rehash reads everything */
    o.rehash = 1;
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_unchanged, 3);
    assert_int_equal(S.bytes_read > 0, 1);
    o.rehash = 0;

    /* prune: a deleted file's document goes, others stay */
    snprintf(path, sizeof path, "%s/a.md", sub);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_pruned, 0); /* not without --prune */
    o.prune = 1;
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_pruned, 1);
    assert_int_equal(ret_store_get_counts(s, &cnt), LODE_OK);
    assert_int_equal(cnt.documents, 2);
    assert_int_equal(sql_int(q, "SELECT count(*) FROM chunks WHERE text LIKE '%apples%'"), 0);
    /* a root that is gone entirely: everything under it is pruned, no failure */
    rm_rf(sub);
    assert_int_equal(ing_run(s, roots, 1, &o, &S), LODE_OK);
    assert_int_equal(S.files_pruned, 2);
    assert_int_equal(S.files_failed, 0);
    assert_int_equal(m.failed, 0);
    ret_store_close(s);
    rm_rf(dir);
    lode_free(dir);
}

static void test_walk_globs_and_links(void **state)
{
    char *dir = make_tmpdir();
    char p[4200], q[4200];
    snprintf(p, sizeof p, "%s/sub", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/.hidden", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    spits(dir, "one.md", "x");
    spits(dir, "two.txt", "x");
    spits(dir, "README", "x");
    spits(dir, "style.css", "x");
    spits(dir, "sub/three.html", "x");
    spits(dir, "sub/four.md", "x");
    spits(dir, ".hidden/five.md", "x");
    snprintf(p, sizeof p, "%s/sub/loop", dir);
    assert_int_equal(symlink(dir, p), 0); /* a loop back to the root */
    snprintf(p, sizeof p, "%s/same.md", dir);
    snprintf(q, sizeof q, "%s/one.md", dir);
    assert_int_equal(symlink(q, p), 0); /* the same file twice */
    const char *roots[] = {dir};
    ing_walk_opts o = {0};
    ing_walk_result r;
    assert_int_equal(ing_walk(roots, 1, &o, &r), LODE_OK);
    assert_int_equal(r.n_files, 5); /* README one.md two.txt sub/four.md sub/three.html */
    assert_int_equal(r.ignored, 1);
    assert_non_null(strstr(r.files[0].path, "/README"));
    assert_non_null(strstr(r.files[3].path, "/sub/four.md"));
    ing_walk_free(&r);
    const char *exc[] = {"sub"};
    const char *inc[] = {"*.md", "*.css"};
    o.excludes = exc;
    o.n_excludes = 1;
    o.includes = inc;
    o.n_includes = 2;
    assert_int_equal(ing_walk(roots, 1, &o, &r), LODE_OK);
    assert_int_equal(r.n_files, 2); /* one.md style.css */
    ing_walk_free(&r);
    char *a = ing_abs_path("/no/such/../dir/./x//y");
    assert_string_equal(a, "/no/dir/x/y");
    lode_free(a);
    rm_rf(dir);
    lode_free(dir);
}

/* ---- the binary: bad inputs, exit codes, JSON --------------------------------------- */
static void test_cli_bad_inputs(void **state)
{
    if (!have_binary()) skip();
    char *dir = make_tmpdir();
    char db[4200], in[4200], out[4200], err[4200], p[4200];
    snprintf(db, sizeof db, "%s/store.db", dir);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(err, sizeof err, "%s/err", dir);
    assert_int_equal(mkdir(in, 0755), 0);
    spits(in, "good.md", "# Good\n\nA good document.\n");
    spit(strcat(strcpy(p, in), "/binary.txt"), "text\0more", 9);
    spits(in, "empty.txt", "");
    lode_buf big = LODE_BUF_INIT;
    for (int i = 0; i < 300; i++) lode_buf_puts(&big, "big words ");
    spits(in, "big.txt", big.data);
    lode_buf_free(&big);
    spits(in, "scripts.html", "<script>only code</script>");
    size_t blen;
    char *bad = slurp(DATA "bad_utf8.txt", &blen);
    spit(strcat(strcpy(p, in), "/repaired.txt"), bad, blen);
    lode_free(bad);
    snprintf(p, sizeof p, "%s/dangling.md", in);
    assert_int_equal(symlink("/nonexistent/target.md", p), 0);

    const char *args[] = {"ingest", "--lexical-only",    "--db", db, "--max-size", "1K",
                          in,       "/nonexistent/path", NULL};
    assert_int_equal(run_lode(args, out, err), 1);
    size_t n;
    char *e = slurp(err, &n);
    static const char *const expect[][2] = {
        {"binary.txt: ", "binary file"},
        {"empty.txt: ", "empty file"},
        {"big.txt: ", "over the size limit"},
        {"scripts.html: ", "no text"},
        {"dangling.md: ", "cannot stat"},
        {"/nonexistent/path: ", "cannot read"},
        {"repaired.txt: ", "warning: invalid UTF-8 repaired"},
    };
    for (size_t i = 0; i < LODE_ARRAY_LEN(expect); i++) {
        const char *line = strstr(e, expect[i][0]);
        if (!line) fail_msg("no line for %s in:\n%s", expect[i][0], e);
        const char *eol = strchr(line, '\n');
        char *l = lode_strndup(line, eol ? (size_t)(eol - line) : strlen(line));
        if (!strstr(l, expect[i][1])) fail_msg("'%s' lacks '%s'", l, expect[i][1]);
        lode_free(l);
    }
    /* the summary counts them: 2 good (one repaired), 6 failed */
    assert_non_null(strstr(e, "2 added"));
    assert_non_null(strstr(e, "6 failed"));
    lode_free(e);

    /* only good (and repaired) files: exit 0; --json reports the same numbers */
    snprintf(p, sizeof p, "%s/good.md", in);
    char rep[4200];
    snprintf(rep, sizeof rep, "%s/repaired.txt", in);
    const char *args2[] = {"ingest", "--lexical-only", "--db", db, "--json", "--rehash", p, rep,
                           NULL};
    assert_int_equal(run_lode(args2, out, err), 0);
    char *o = slurp(out, &n);
    assert_non_null(strstr(o, "\"files_unchanged\":2"));
    assert_non_null(strstr(o, "\"files_failed\":0"));
    lode_free(o);
    /* usage errors: exit 2 */
    const char *args3[] = {"ingest", "--lexical-only", "--db", db, NULL};
    assert_int_equal(run_lode(args3, out, err), 2);
    const char *args4[] = {"ingest", "--lexical-only", "--bogus", p, NULL};
    assert_int_equal(run_lode(args4, out, err), 2);
    rm_rf(dir);
    lode_free(dir);
}

/* A corpus of n small files of all three kinds under dir; returns its size in bytes. */
static size_t make_corpus(const char *dir, int n)
{
    size_t total = 0;
    lode_buf b = LODE_BUF_INIT;
    char name[64];
    for (int i = 0; i < n; i++) {
        lode_buf_reset(&b);
        int kind = i % 3;
        if (kind == 0)
            lode_buf_printf(&b, "<html><title>Page %d</title><h1>Page %d</h1><p>", i, i);
        else if (kind == 1)
            lode_buf_printf(&b, "# Note %d\n\n", i);
        int paras = 1 + i % 7;
        for (int p = 0; p < paras; p++) {
            random_words(&b, 30 + (int)(rnd() % 200));
            lode_buf_puts(&b, kind == 0 ? "</p><p>" : "\n\n");
        }
        lode_buf_printf(&b, "unique%dmarker\n", i);
        snprintf(name, sizeof name, "d%02d/f%05d.%s", i % 16, i,
                 kind == 0   ? "html"
                 : kind == 1 ? "md"
                             : "txt");
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/d%02d", dir, i % 16);
        mkdir(sub, 0755);
        spits(dir, name, b.data);
        total += b.len;
    }
    lode_buf_free(&b);
    return total;
}

/* Every document has exactly the chunks the chunker makes of its file. */
static void check_store_complete(const char *db, int expect_docs)
{
    ret_store *s = NULL;
    assert_int_equal(ret_store_open(db, 0, &s, NULL, 0), LODE_OK);
    sqlite3 *q = ret_store_sqlite(s);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(q, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_int_equal(
        sqlite3_prepare_v2(q,
                           "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)",
                           -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    assert_int_equal(
        sqlite3_prepare_v2(q,
                           "SELECT d.uri, count(c.id), coalesce(max(c.ordinal), -1) "
                           "FROM documents d LEFT JOIN chunks c ON c.document_id = d.id "
                           "GROUP BY d.id",
                           -1, &st, NULL),
        SQLITE_OK);
    int docs = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *uri = (const char *)sqlite3_column_text(st, 0);
        int64_t n = sqlite3_column_int64(st, 1), maxo = sqlite3_column_int64(st, 2);
        size_t len;
        char *data = slurp(uri, &len);
        assert_non_null(data);
        ing_doc *d = NULL;
        assert_int_equal(ing_load(data, len, ing_media_from_name(uri), &d, NULL, 0), LODE_OK);
        ing_chunk *c = NULL;
        size_t nc = 0;
        assert_int_equal(ing_chunk_doc(d, NULL, &c, &nc), LODE_OK);
        if ((int64_t)nc != n || maxo != n - 1)
            fail_msg("%s: %lld chunks stored, %zu expected", uri, (long long)n, nc);
        lode_free(c);
        ing_doc_destroy(d);
        lode_free(data);
        docs++;
    }
    sqlite3_finalize(st);
    if (expect_docs >= 0) assert_int_equal(docs, expect_docs);
    ret_store_close(s);
}

static void test_crash_safety(void **state)
{
    if (!have_binary()) skip();
    char *dir = make_tmpdir();
    char db[4200], corpus[4200];
    snprintf(db, sizeof db, "%s/store.db", dir);
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    assert_int_equal(mkdir(corpus, 0755), 0);
    const int N = 3000;
    make_corpus(corpus, N);
    /* one loader thread keeps the run long enough to be caught in the middle */
    const char *args[] = {"ingest", "--lexical-only", "--quiet", "--threads", "1", "--db",
                          db,       corpus,           NULL};
    pid_t pid = spawn_lode(args, NULL, NULL);
    /* wait until some documents are committed, then kill -9 */
    int64_t docs = 0;
    double t0 = lode_now_s();
    while (lode_now_s() - t0 < 30) {
        sqlite3 *q = NULL;
        if (sqlite3_open_v2(db, &q, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
            sqlite3_busy_timeout(q, 1000);
            docs = sql_int(q, "SELECT count(*) FROM documents");
        }
        sqlite3_close(q);
        if (docs > 0) break;
        usleep(5000);
    }
    kill(pid, SIGKILL);
    assert_int_equal(wait_exit(pid), 128 + SIGKILL);
    if (docs <= 0) fail_msg("no document was committed within 30 s");
    sqlite3 *q = NULL;
    assert_int_equal(sqlite3_open(db, &q), SQLITE_OK);
    int64_t after = sql_int(q, "SELECT count(*) FROM documents");
    sqlite3_close(q);
    print_message("killed with %lld of %d documents committed\n", (long long)after, N);
    assert_true(after >= docs);
    assert_true(after < N); /* it really was killed mid-run */
    check_store_complete(db, -1);
    /* the run log says it never finished */
    assert_int_equal(sqlite3_open(db, &q), SQLITE_OK);
    assert_int_equal(sql_int(q, "SELECT count(*) FROM ingest_runs WHERE status = 'running'"), 1);
    sqlite3_close(q);
    /* a rerun completes the rest */
    const char *args2[] = {"ingest", "--lexical-only", "--quiet", "--db", db, corpus, NULL};
    assert_int_equal(run_lode(args2, NULL, NULL), 0);
    check_store_complete(db, N);
    rm_rf(dir);
    lode_free(dir);
}

static void test_concurrent_runs(void **state)
{
    if (!have_binary()) skip();
    char *dir = make_tmpdir();
    char db[4200], c1[4200], c2[4200];
    snprintf(db, sizeof db, "%s/store.db", dir);
    snprintf(c1, sizeof c1, "%s/one", dir);
    snprintf(c2, sizeof c2, "%s/two", dir);
    assert_int_equal(mkdir(c1, 0755), 0);
    assert_int_equal(mkdir(c2, 0755), 0);
    make_corpus(c1, 400);
    make_corpus(c2, 400);
    /* the two overlap on c1, so they also race on the same documents */
    const char *a1[] = {"ingest", "--lexical-only", "--quiet", "--db", db, c1, c2, NULL};
    const char *a2[] = {"ingest", "--lexical-only", "--quiet", "--db", db, c2, c1, NULL};
    char e1[4200], e2[4200];
    snprintf(e1, sizeof e1, "%s/err1", dir);
    snprintf(e2, sizeof e2, "%s/err2", dir);
    pid_t p1 = spawn_lode(a1, NULL, e1);
    pid_t p2 = spawn_lode(a2, NULL, e2);
    int r1 = wait_exit(p1), r2 = wait_exit(p2);
    if (r1 || r2) {
        size_t n;
        char *t1 = slurp(e1, &n), *t2 = slurp(e2, &n);
        fail_msg("exit %d and %d:\n%s\n%s", r1, r2, t1, t2);
    }
    check_store_complete(db, 800);
    rm_rf(dir);
    lode_free(dir);
}

/* ---- the SQLite documentation ------------------------------------------------------ */
static void test_sqlite_docs(void **state)
{
    if (!have_binary()) skip();
    if (access(SQLITE_DOCS "/lang_vacuum.html", R_OK) != 0) {
        print_message("no %s (Debian package sqlite3-doc; make deps installs it)\n", SQLITE_DOCS);
        skip();
    }
    char *dir = make_tmpdir();
    char db[4200], out[4200];
    snprintf(db, sizeof db, "%s/store.db", dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    const char *args[] = {"ingest", "--lexical-only", "--json", "--db", db, SQLITE_DOCS, NULL};
    assert_int_equal(run_lode(args, out, NULL), 0);
    size_t n;
    char *o = slurp(out, &n);
    print_message("%s", o);
    assert_non_null(strstr(o, "\"files_failed\":0"));
    lode_free(o);
    /* phrases read off these pages; each page must come first */
    static const char *const cases[][2] = {
        {"\"rebuilds the database file, repacking it into a minimal amount of disk space\"",
         "/lang_vacuum.html"},
        {"\"WAL does not work over a network filesystem\"", "/wal.html"},
        {"\"enumerates the missing features and limits of the current implementation\"",
         "/foreignkeys.html"},
        {"\"UPSERT in SQLite follows the syntax established by PostgreSQL\"", "/lang_upsert.html"},
        {"Toni Guttman Dynamic Index Structure for Spatial Searching", "/rtree.html"},
        {"\"error to add types, constraints or PRIMARY KEY declarations\" FTS5", "/fts5.html"},
        {"\"unique among all rows in the same table\" ROWID AUTOINCREMENT", "/autoinc.html"},
    };
    ret_store *s = NULL;
    assert_int_equal(ret_store_open(db, RET_STORE_READONLY, &s, NULL, 0), LODE_OK);
    for (size_t i = 0; i < LODE_ARRAY_LEN(cases); i++) {
        ret_hits *h = NULL;
        ret_search_opts so = {.k = 5};
        assert_int_equal(ret_search_bm25(s, cases[i][0], &so, &h), LODE_OK);
        if (h->n == 0) fail_msg("no hit for %s", cases[i][0]);
        const char *uri = h->hit[0].uri;
        size_t ul = strlen(uri), el = strlen(cases[i][1]);
        if (ul < el || strcmp(uri + ul - el, cases[i][1]))
            fail_msg("%s: first hit %s, want %s", cases[i][0], uri, cases[i][1]);
        ret_hits_free(h);
    }
    ret_store_close(s);
    rm_rf(dir);
    lode_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_html_loader),
        cmocka_unit_test(test_html_opaque_elements),
        cmocka_unit_test(test_html_edge_cases),
        cmocka_unit_test(test_markdown_loader),
        cmocka_unit_test(test_text_loader_repairs_utf8),
        cmocka_unit_test(test_sniff_and_media),
        cmocka_unit_test(test_chunker_properties),
        cmocka_unit_test(test_chunker_long_inputs),
        cmocka_unit_test(test_chunker_counter_seam),
        cmocka_unit_test(test_progress_format),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_walk_globs_and_links),
        cmocka_unit_test(test_cli_bad_inputs),
        cmocka_unit_test(test_crash_safety),
        cmocka_unit_test(test_concurrent_runs),
        cmocka_unit_test(test_sqlite_docs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
