/*
 * cmd_sql.c: `lode sql`, read-only SQL over the store: one statement (or several) from
 * the command line, a script on stdin, or an interactive prompt. Output is an aligned
 * table, CSV or JSON. The store is opened read-only and every statement is checked with
 * sqlite3_stmt_readonly before it runs, so nothing here can change the store; the stock
 * `sqlite3` shell is the tool for that.
 */
#include "cli/cli.h"
#include "common/lode.h"
#include "retrieval/store.h"

#include <getopt.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COL_WIDTH 64 /* table cells wider than this are cut with "..." */
#define MAX_INPUT     (16u << 20)

typedef enum { OUT_TABLE, OUT_CSV, OUT_JSON } out_mode;

static void usage(FILE *f)
{
    fprintf(f, "usage: lode sql [--db PATH] [--csv | --json] [SQL]\n\n"
               "Runs read-only SQL against the store and prints the rows. Without SQL it reads\n"
               "statements from standard input: a prompt on a terminal (end each statement\n"
               "with ';'; .tables, .schema [NAME], .help and .quit work there), a script\n"
               "otherwise. Statements that would write are refused; use the stock shell,\n"
               "`sqlite3 lode.db`, to change the store by hand.\n\n"
               "options:\n"
               "  --csv          comma-separated values with a header row (RFC 4180)\n"
               "  --json         each result as a JSON array of row objects, one per line\n"
               "  --db PATH      the store (default $LODE_DB or ./lode.db)\n"
               "  -h, --help     this text\n\n"
               "Views for people: v_documents (with chunk counts), v_chunks (chunks with\n"
               "their document), v_ingest_runs. Full-text search in SQL:\n"
               "  SELECT uri, snippet(chunks_fts, 0, '[', ']', '...', 12)\n"
               "  FROM chunks_fts JOIN v_chunks ON v_chunks.id = chunks_fts.rowid\n"
               "  WHERE chunks_fts MATCH 'vacuum' ORDER BY rank LIMIT 5;\n"
               "sql/examples.sql in the source tree has more.\n\n"
               "Exit status: 0 when every statement ran, 1 when one failed or would write,\n"
               "2 for a usage error.\n");
}

/* ---- cell text ---------------------------------------------------------------------- */
/* The text of a column as lode_malloc'ed UTF-8: NULL as "", a BLOB as x'hex'. */
static char *cell_text(sqlite3_stmt *q, int col)
{
    int t = sqlite3_column_type(q, col);
    if (t == SQLITE_NULL) return lode_strdup("");
    if (t == SQLITE_BLOB) {
        const unsigned char *p = sqlite3_column_blob(q, col);
        int n = sqlite3_column_bytes(q, col);
        lode_buf b = LODE_BUF_INIT;
        if (lode_buf_puts(&b, "x'")) return NULL;
        for (int i = 0; i < n; i++)
            if (lode_buf_printf(&b, "%02x", p[i])) return lode_buf_free(&b), NULL;
        if (lode_buf_putc(&b, '\'')) return lode_buf_free(&b), NULL;
        return lode_buf_take(&b);
    }
    const char *s = (const char *)sqlite3_column_text(q, col);
    return lode_utf8_clean(s ? s : "", (size_t)sqlite3_column_bytes(q, col));
}

/* Display width in characters (code points), control characters counted as one. */
static size_t width_of(const char *s)
{
    size_t w = 0;
    for (; *s; s++) w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* Prints s padded or cut to w characters, control characters as spaces. */
static void put_cell(const char *s, size_t w, int pad)
{
    size_t full = width_of(s), shown = 0;
    size_t limit = full > w ? (w >= 3 ? w - 3 : w) : full;
    for (const char *p = s; *p && shown < limit;) {
        size_t l = 1;
        while ((((unsigned char)p[l]) & 0xc0) == 0x80) l++;
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            putchar(' ');
        else
            fwrite(p, 1, l, stdout);
        p += l;
        shown++;
    }
    if (full > w) {
        for (size_t i = shown; i < w; i++) putchar('.');
        shown = w;
    }
    if (pad)
        for (; shown < w; shown++) putchar(' ');
}

static void put_csv(const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
}

/* ---- running statements ------------------------------------------------------------- */
typedef struct rows {
    int ncol;
    char **cell; /* row-major, ncol per row, the header first */
    size_t n, cap;
} rows;

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->n; i++) lode_free(r->cell[i]);
    lode_free(r->cell);
    memset(r, 0, sizeof *r);
}

static int rows_push(rows *r, char *c)
{
    if (!c) return -1;
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 256;
        char **nc = lode_realloc(r->cell, ncap * sizeof *nc);
        if (!nc) {
            lode_free(c);
            return -1;
        }
        r->cell = nc;
        r->cap = ncap;
    }
    r->cell[r->n++] = c;
    return 0;
}

static void print_table(const rows *r, int tty)
{
    size_t nrow = r->n / (size_t)r->ncol;
    size_t *w = lode_calloc((size_t)r->ncol, sizeof *w);
    if (!w) return;
    for (size_t i = 0; i < r->n; i++) {
        size_t c = i % (size_t)r->ncol, cw = width_of(r->cell[i]);
        w[c] = LODE_MAX(w[c], LODE_MIN(cw, (size_t)MAX_COL_WIDTH));
    }
    for (size_t row = 0; row < nrow; row++) {
        for (int c = 0; c < r->ncol; c++) {
            if (c) fputs("  ", stdout);
            put_cell(r->cell[row * (size_t)r->ncol + (size_t)c], w[c], c + 1 < r->ncol);
        }
        putchar('\n');
        if (row == 0) {
            for (int c = 0; c < r->ncol; c++) {
                if (c) fputs("  ", stdout);
                for (size_t i = 0; i < w[c]; i++) putchar('-');
            }
            putchar('\n');
        }
    }
    if (tty) printf("(%zu row%s)\n", nrow - 1, nrow == 2 ? "" : "s");
    lode_free(w);
}

static json_t *json_cell(sqlite3_stmt *q, int col)
{
    switch (sqlite3_column_type(q, col)) {
    case SQLITE_NULL:
        return json_null();
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_column_int64(q, col));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(q, col));
    default: {
        char *t = cell_text(q, col);
        json_t *j = t ? json_string(t) : NULL;
        lode_free(t);
        return j ? j : json_null();
    }
    }
}

/* Runs one prepared statement and prints its rows. Returns 0, or -1 after printing why. */
static int run_stmt(sqlite3 *db, sqlite3_stmt *q, out_mode mode)
{
    int ncol = sqlite3_column_count(q), rc, ret = 0;
    rows r = {.ncol = ncol};
    json_t *arr = mode == OUT_JSON && ncol ? json_array() : NULL;
    if (ncol && mode == OUT_TABLE) {
        for (int c = 0; c < ncol; c++)
            if (rows_push(&r, lode_utf8_clean(sqlite3_column_name(q, c),
                                              strlen(sqlite3_column_name(q, c)))))
                goto nomem;
    } else if (ncol && mode == OUT_CSV) {
        for (int c = 0; c < ncol; c++) {
            if (c) putchar(',');
            put_csv(sqlite3_column_name(q, c));
        }
        fputs("\r\n", stdout);
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (mode == OUT_TABLE) {
            for (int c = 0; c < ncol; c++)
                if (rows_push(&r, cell_text(q, c))) goto nomem;
        } else if (mode == OUT_CSV) {
            for (int c = 0; c < ncol; c++) {
                char *t = cell_text(q, c);
                if (!t) goto nomem;
                if (c) putchar(',');
                put_csv(t);
                lode_free(t);
            }
            fputs("\r\n", stdout);
        } else if (arr) {
            json_t *o = json_object();
            if (!o) goto nomem;
            for (int c = 0; c < ncol; c++) {
                char *name =
                    lode_utf8_clean(sqlite3_column_name(q, c), strlen(sqlite3_column_name(q, c)));
                if (name) json_object_set_new(o, name, json_cell(q, c));
                lode_free(name);
            }
            json_array_append_new(arr, o);
        }
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "lode sql: %s\n", sqlite3_errmsg(db));
        ret = -1;
    }
    if (ncol && mode == OUT_TABLE) print_table(&r, cli_is_tty(1));
    if (arr) {
        json_dumpf(arr, stdout, JSON_COMPACT);
        putchar('\n');
    }
    goto out;
nomem:
    fprintf(stderr, "lode sql: out of memory\n");
    ret = -1;
out:
    json_decref(arr);
    rows_free(&r);
    return ret;
}

/* Runs every statement in sql. Returns 0 when all ran, -1 when one failed (later ones are
 * not run). */
static int run_sql(sqlite3 *db, const char *sql, out_mode mode)
{
    const char *tail = sql;
    while (tail && *tail) {
        sqlite3_stmt *q = NULL;
        const char *next = NULL;
        int rc = sqlite3_prepare_v2(db, tail, -1, &q, &next);
        if (rc != SQLITE_OK) {
            fprintf(stderr, "lode sql: %s\n", sqlite3_errmsg(db));
            return -1;
        }
        if (!q) break; /* only whitespace or comments were left */
        while (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == '\r') tail++;
        if (!sqlite3_stmt_readonly(q)) {
            fprintf(stderr,
                    "lode sql: refusing a statement that would change the store: lode sql is "
                    "read-only (use `sqlite3 STORE` to modify it by hand)\n  %.*s\n",
                    (int)LODE_MIN((size_t)(next - tail), (size_t)200), tail);
            sqlite3_finalize(q);
            return -1;
        }
        int r = run_stmt(db, q, mode);
        sqlite3_finalize(q);
        if (r) return -1;
        tail = next;
    }
    return 0;
}

/* ---- the prompt --------------------------------------------------------------------- */
static int dot_command(sqlite3 *db, const char *line, out_mode mode)
{
    char cmd[32] = "", arg[256] = "";
    if (sscanf(line, ".%31s %255s", cmd, arg) < 1) return 0;
    if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit")) return 1;
    if (!strcmp(cmd, "help")) {
        printf(".tables          list tables and views\n"
               ".schema [NAME]   show CREATE statements\n"
               ".quit            leave\n"
               "Any SQL ending with ';' runs (read-only).\n");
    } else if (!strcmp(cmd, "tables")) {
        run_sql(db,
                "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') AND "
                "name NOT LIKE 'sqlite_%' AND name NOT LIKE 'chunks_fts_%' ORDER BY type, name",
                mode);
    } else if (!strcmp(cmd, "schema")) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(db,
                               "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND "
                               "(?1 = '' OR name = ?1 OR tbl_name = ?1) ORDER BY rowid",
                               -1, &q, NULL) == SQLITE_OK) {
            sqlite3_bind_text(q, 1, arg, -1, SQLITE_STATIC);
            while (sqlite3_step(q) == SQLITE_ROW) printf("%s;\n", sqlite3_column_text(q, 0));
        }
        sqlite3_finalize(q);
    } else if (!strcmp(cmd, "headers") || !strcmp(cmd, "mode") || !strcmp(cmd, "width") ||
               !strcmp(cmd, "timer") || !strcmp(cmd, "nullvalue")) {
        /* the sqlite3 shell's display settings, as in sql/examples.sql: not needed here */
    } else {
        fprintf(stderr, "lode sql: unknown command .%s (.help lists them)\n", cmd);
    }
    return 0;
}

/* Reads statements from stdin until EOF (or .quit on a terminal). Returns 0 when every
 * statement ran; on a terminal errors are reported and reading goes on. */
static int read_loop(sqlite3 *db, out_mode mode)
{
    int tty = cli_is_tty(0), failed = 0;
    lode_buf sql = {.max = MAX_INPUT};
    char *line = NULL;
    size_t cap = 0;
    if (tty)
        printf("lode sql (read-only). End statements with ';'. .help for help, .quit to "
               "leave.\n");
    for (;;) {
        if (tty) {
            fputs(sql.len ? "  ...> " : "lode> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        if (!sql.len) { /* blank and comment lines between statements are skipped */
            const char *p = line;
            while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
            if (!*p || (p[0] == '-' && p[1] == '-')) continue;
        }
        if (!sql.len && line[0] == '.') {
            if (dot_command(db, line, mode)) break;
            continue;
        }
        if (lode_buf_append(&sql, line, (size_t)n)) {
            fprintf(stderr, "lode sql: input over %u bytes\n", MAX_INPUT);
            failed = 1;
            break;
        }
        if (sqlite3_complete(sql.data)) {
            if (run_sql(db, sql.data, mode)) failed = 1;
            lode_buf_reset(&sql);
            if (failed && !tty) break;
        }
    }
    if (!failed && sql.len) {
        /* a last statement without ';' at EOF */
        const char *p = sql.data;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p && run_sql(db, sql.data, mode)) failed = 1;
    }
    if (tty) putchar('\n');
    free(line); /* from getline */
    lode_buf_free(&sql);
    return failed ? -1 : 0;
}

static int cmd_sql(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_CSV, OPT_DB };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"db", required_argument, NULL, OPT_DB},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = cli_default_db();
    out_mode mode = OUT_TABLE;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            mode = OUT_JSON;
            break;
        case OPT_CSV:
            mode = OUT_CSV;
            break;
        case OPT_DB:
            db = optarg;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        default:
            fprintf(stderr, "lode sql: unknown option or missing value: %s\n", argv[optind - 1]);
            return CLI_USAGE;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "lode sql: give the SQL as one argument (quote it)\n");
        return CLI_USAGE;
    }
    ret_store *s = NULL;
    char err[512];
    lode_status st =
        ret_store_open(db, RET_STORE_READONLY | RET_STORE_UPGRADE, &s, err, sizeof err);
    if (st) {
        fprintf(stderr, "lode sql: %s\n", err);
        return CLI_FAILED;
    }
    sqlite3 *h = ret_store_sqlite(s);
    /* a second lock besides the read-only open and the per-statement check */
    sqlite3_exec(h, "PRAGMA query_only = 1", NULL, NULL, NULL);
    int r = optind < argc ? run_sql(h, argv[optind], mode) : read_loop(h, mode);
    if (fflush(stdout) != 0) r = -1;
    ret_store_close(s);
    return r ? CLI_FAILED : CLI_OK;
}

LODE_CLI_COMMAND(sql, "sql", "run read-only SQL against the store (or open a prompt)", cmd_sql)
