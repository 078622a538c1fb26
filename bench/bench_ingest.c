/*
 * bench_ingest.c: ingest throughput and lexical search latency on a real collection (the
 * SQLite documentation from Debian's sqlite3-doc by default).
 *
 *   bench_ingest [--docs DIR] [--runs N] [--queries N] [--work DIR]
 *
 * Ingest: N runs (default 3), each into a fresh store, through ing_run as `lode ingest`
 * does; prints MB/s and documents/s of each (wall clock) and of the median run, with the
 * process CPU time beside it (the box is shared: wall time also shows the neighbours),
 * then the time of a second, incremental run that finds everything unchanged.
 * Search: 1,000 queries built from the store's own chunks (seeded, so the same every
 * time): single words, word pairs and quoted three-word phrases, each searched for the
 * top 10 through ret_search_bm25 after a warm-up; prints p50, p90, p99 and mean latency.
 * Output is a Markdown block for bench/RESULTS.md (bench/bench_ingest.sh puts it there).
 */
#include "common/lode.h"
#include "ingest/run.h"
#include "retrieval/search.h"
#include "retrieval/store.h"

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Up to max words of at least 3 letters from text, starting at a random word. */
static int pick_words(const char *text, char words[][48], int max)
{
    size_t len = strlen(text);
    if (len == 0) return 0;
    size_t p = rnd() % len;
    int n = 0;
    while (p < len && n < max) {
        while (p < len && !((text[p] | 0x20) >= 'a' && (text[p] | 0x20) <= 'z')) p++;
        size_t s = p;
        while (p < len && (((text[p] | 0x20) >= 'a' && (text[p] | 0x20) <= 'z'))) p++;
        size_t wl = p - s;
        if (wl >= 3 && wl < 48) {
            memcpy(words[n], text + s, wl);
            words[n][wl] = 0;
            n++;
        } else if (n > 0) {
            break; /* keep the words of a phrase adjacent */
        }
    }
    return n;
}

static int build_queries(ret_store *s, char **q, int n)
{
    sqlite3 *db = ret_store_sqlite(s);
    sqlite3_stmt *st = NULL;
    int64_t max = 0;
    if (sqlite3_prepare_v2(db, "SELECT max(id) FROM chunks", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        max = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (max <= 0 || sqlite3_prepare_v2(db, "SELECT text FROM chunks WHERE id >= ?1 LIMIT 1", -1,
                                       &st, NULL) != SQLITE_OK)
        return -1;
    int made = 0, tries = 0;
    while (made < n && tries++ < n * 20) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, 1 + (int64_t)(rnd() % (uint32_t)max));
        if (sqlite3_step(st) != SQLITE_ROW) continue;
        const char *text = (const char *)sqlite3_column_text(st, 0);
        char w[3][48];
        int kind = made % 5; /* 2 of 5 single words, 2 of 5 pairs, 1 of 5 phrases */
        int want = kind < 2 ? 1 : kind < 4 ? 2 : 3;
        if (pick_words(text ? text : "", w, want) < want) continue;
        char buf[200];
        if (want == 1)
            snprintf(buf, sizeof buf, "%s", w[0]);
        else if (want == 2)
            snprintf(buf, sizeof buf, "%s %s", w[0], w[1]);
        else
            snprintf(buf, sizeof buf, "\"%s %s %s\"", w[0], w[1], w[2]);
        q[made++] = lode_strdup(buf);
    }
    sqlite3_finalize(st);
    return made;
}

int main(int argc, char **argv)
{
    const char *docs = "/usr/share/doc/sqlite3", *work_arg = NULL;
    int runs = 3, nq = 1000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--docs") && i + 1 < argc)
            docs = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
            nq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--work") && i + 1 < argc)
            work_arg = argv[++i];
        else {
            fprintf(stderr,
                    "usage: bench_ingest [--docs DIR] [--runs N] [--queries N] [--work DIR]\n");
            return 2;
        }
    }
    if (runs < 1) runs = 1;
    if (nq < 1) nq = 1;
    char tmpl[] = "/tmp/lode-bench-XXXXXX";
    const char *work = work_arg ? work_arg : mkdtemp(tmpl);
    if (!work) {
        perror("bench_ingest: mkdtemp");
        return 1;
    }
    char db[4096];
    const char *roots[] = {docs};
    double *wall = calloc((size_t)runs, sizeof *wall);
    ing_run_stats S = {0};
    double cpu = 0, write_s = 0, write_cpu = 0;
    int rc = 1;
    fprintf(stderr, "bench_ingest: ingesting %s %d times\n", docs, runs);
    for (int r = 0; r < runs; r++) {
        snprintf(db, sizeof db, "%s/bench-%d.db", work, r);
        ret_store *s = NULL;
        char err[512];
        if (ret_store_open(db, 0, &s, err, sizeof err)) {
            fprintf(stderr, "bench_ingest: %s\n", err);
            goto out;
        }
        ing_run_opts o = {0};
        o.chunk.target_tokens = ING_CHUNK_TARGET_DEFAULT;
        o.chunk.overlap_tokens = ING_CHUNK_OVERLAP_DEFAULT;
        double c0 = cpu_seconds();
        lode_status st = ing_run(s, roots, 1, &o, &S);
        double c1 = cpu_seconds();
        ret_store_close(s);
        if (st || S.files_failed || S.files_added == 0) {
            fprintf(stderr, "bench_ingest: ingest failed (%s, %lld files failed)\n",
                    lode_strerror(st), (long long)S.files_failed);
            goto out;
        }
        wall[r] = S.seconds;
        if (r == runs / 2 || runs == 1) {
            cpu = c1 - c0;
            write_s = S.write_seconds;
            write_cpu = S.write_cpu_seconds;
        }
        fprintf(stderr, "  run %d: %.2f s, %.1f MB/s\n", r + 1, S.seconds,
                (double)S.bytes_read / 1e6 / S.seconds);
    }
    double sorted[64];
    int ns = runs < 64 ? runs : 64;
    memcpy(sorted, wall, (size_t)ns * sizeof *sorted);
    qsort(sorted, (size_t)ns, sizeof *sorted, cmp_double);
    double med = sorted[ns / 2], best = sorted[0];
    double mb = (double)S.bytes_read / 1e6;

    /* a second run over the same store: nothing changed */
    ret_store *s = NULL;
    if (ret_store_open(db, 0, &s, NULL, 0)) goto out;
    ing_run_opts o = {0};
    ing_run_stats S2;
    if (ing_run(s, roots, 1, &o, &S2) || S2.files_unchanged != S.files_added) {
        fprintf(stderr, "bench_ingest: the unchanged rerun did not skip everything\n");
        ret_store_close(s);
        goto out;
    }
    ing_run_stats S3;
    o.rehash = 1;
    if (ing_run(s, roots, 1, &o, &S3)) {
        ret_store_close(s);
        goto out;
    }

    /* search latency */
    char **q = calloc((size_t)nq, sizeof *q);
    double *lat = calloc((size_t)nq, sizeof *lat);
    int made = build_queries(s, q, nq);
    if (made < nq) {
        fprintf(stderr, "bench_ingest: could only build %d queries\n", made);
        ret_store_close(s);
        goto out;
    }
    ret_search_opts so = {.k = 10};
    size_t hits = 0;
    for (int i = 0; i < 50; i++) { /* warm-up: statements prepared, pages cached */
        ret_hits *h = NULL;
        if (ret_search_bm25(s, q[i], &so, &h) == LODE_OK) ret_hits_free(h);
    }
    fprintf(stderr, "bench_ingest: %d searches\n", nq);
    for (int i = 0; i < nq; i++) {
        ret_hits *h = NULL;
        int64_t t0 = lode_now_ns();
        lode_status st = ret_search_bm25(s, q[i], &so, &h);
        lat[i] = (double)(lode_now_ns() - t0) * 1e-6;
        if (st) {
            fprintf(stderr, "bench_ingest: search '%s' failed: %s\n", q[i], ret_store_errmsg(s));
            ret_store_close(s);
            goto out;
        }
        hits += h->n;
        ret_hits_free(h);
    }
    ret_store_close(s);
    double sum = 0;
    for (int i = 0; i < nq; i++) sum += lat[i];
    /* by kind (query i is a word, a pair or a phrase by i % 5, as built) */
    char kinds[3][96];
    static const char *const kname[3] = {"words", "pairs", "phrases"};
    for (int k = 0; k < 3; k++) {
        double *v = calloc((size_t)nq, sizeof *v);
        int m = 0;
        for (int i = 0; i < nq; i++) {
            int kind = i % 5 < 2 ? 0 : i % 5 < 4 ? 1 : 2;
            if (kind == k) v[m++] = lat[i];
        }
        qsort(v, (size_t)m, sizeof *v, cmp_double);
        snprintf(kinds[k], sizeof kinds[k], "%s p50 %.3f / p99 %.3f ms", kname[k], m ? v[m / 2] : 0,
                 m ? v[m * 99 / 100] : 0);
        free(v);
    }
    qsort(lat, (size_t)nq, sizeof *lat, cmp_double);

    printf("- ingest of %s: %lld HTML and text files, %.1f MB -> %lld chunks, fresh store, "
           "%d runs\n",
           docs, (long long)S.files_added, mb, (long long)S.chunks, runs);
    printf("  - median run: %.2f s = **%.1f MB/s**, %.0f documents/s (best %.2f s = %.1f MB/s); "
           "%.2f s of process CPU (%.1f MB per CPU-second), writer %.2f s in the store\n",
           med, mb / med, (double)S.files_added / med, best, mb / best, cpu, mb / cpu, write_s);
    /* what two idle cores would give: the loaders' CPU spread over both, unless the
     * single writer thread needs longer */
    double bound = cpu / 2 > write_cpu ? cpu / 2 : write_cpu;
    printf("  - CPU: writer thread %.2f s, loaders and the rest %.2f s; on 2 idle cores the "
           "run could take max(CPU/2, writer) = %.2f s = %.1f MB/s (an estimate, not a "
           "measurement)\n",
           write_cpu, cpu - write_cpu, bound, mb / bound);
    printf("  - rerun, nothing changed: %.3f s (size and mtime); with --rehash %.2f s "
           "(%.1f MB/s hashed)\n",
           S2.seconds, S3.seconds, (double)S3.bytes_read / 1e6 / S3.seconds);
    printf("- search (ret_search_bm25, k=10) over %d queries from the corpus (words, pairs, "
           "phrases; %.1f hits each): p50 **%.3f ms**, p90 %.3f ms, p99 **%.3f ms**, "
           "mean %.3f ms (%s; %s; %s)\n",
           nq, (double)hits / nq, lat[nq / 2], lat[nq * 9 / 10], lat[nq * 99 / 100], sum / nq,
           kinds[0], kinds[1], kinds[2]);
    for (int i = 0; i < nq; i++) lode_free(q[i]);
    free(q);
    free(lat);
    rc = 0;
out:
    free(wall);
    if (!work_arg) nftw(work, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
