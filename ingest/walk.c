/* walk.c: the file walker of walk.h. */
#include "ingest/walk.h"

#include "ingest/ingest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a set of (device, inode) pairs -------------------------------------------------- */
typedef struct idset {
    uint64_t *k; /* pairs: dev, ino; (0, 0) is empty */
    size_t cap, n;
} idset;

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
    h ^= h >> 31;
    return h * 0xBF58476D1CE4E5B9ull;
}

/* Adds (dev, ino); returns 1 if new, 0 if present, -1 when out of memory. */
static int idset_add(idset *s, uint64_t dev, uint64_t ino)
{
    if (dev == 0 && ino == 0) ino = 1; /* keep the empty marker free */
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        uint64_t *k = lode_calloc(cap * 2, sizeof *k);
        if (!k) return -1;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->k[2 * i] && !s->k[2 * i + 1]) continue;
            size_t j = mix(s->k[2 * i], s->k[2 * i + 1]) & (cap - 1);
            while (k[2 * j] || k[2 * j + 1]) j = (j + 1) & (cap - 1);
            k[2 * j] = s->k[2 * i];
            k[2 * j + 1] = s->k[2 * i + 1];
        }
        lode_free(s->k);
        s->k = k;
        s->cap = cap;
    }
    size_t j = mix(dev, ino) & (s->cap - 1);
    while (s->k[2 * j] || s->k[2 * j + 1]) {
        if (s->k[2 * j] == dev && s->k[2 * j + 1] == ino) return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->k[2 * j] = dev;
    s->k[2 * j + 1] = ino;
    s->n++;
    return 1;
}

/* ---- paths ------------------------------------------------------------------------- */
char *ing_abs_path(const char *path)
{
    char *rp = realpath(path, NULL); /* libc's allocation: copied, then free()d */
    if (rp) {
        char *r = lode_strdup(rp);
        free(rp);
        return r;
    }
    lode_buf b = LODE_BUF_INIT;
    if (path[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
        lode_buf_puts(&b, cwd);
    }
    lode_buf_putc(&b, '/');
    lode_buf_puts(&b, path);
    if (!b.data) return NULL;
    /* resolve ".", ".." and repeated slashes by name */
    char *s = b.data, *o = b.data;
    size_t i = 0, n = b.len;
    while (i < n) {
        while (i < n && s[i] == '/') i++;
        size_t e = i;
        while (e < n && s[e] != '/') e++;
        size_t k = e - i;
        if (k == 0) break;
        if (k == 1 && s[i] == '.') {
        } else if (k == 2 && s[i] == '.' && s[i + 1] == '.') {
            while (o > b.data && *--o != '/') {
            }
        } else {
            *o++ = '/';
            memmove(o, s + i, k);
            o += k;
        }
        i = e;
    }
    if (o == b.data) *o++ = '/';
    *o = 0;
    b.len = (size_t)(o - b.data);
    return lode_buf_take(&b);
}

/* ---- the walk ---------------------------------------------------------------------- */
typedef struct walker {
    const ing_walk_opts *o;
    ing_walk_result *r;
    size_t cap_files;
    idset dirs, files;
    lode_status st;
} walker;

static void report(walker *w, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(walker *w, const char *path, const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    w->r->errors++;
    if (w->o->on_error) w->o->on_error(w->o->ctx, path, reason);
}

static int glob_any(const char *const *globs, size_t n, const char *rel, const char *base)
{
    for (size_t i = 0; i < n; i++)
        if (!fnmatch(globs[i], rel, 0) || !fnmatch(globs[i], base, 0)) return 1;
    return 0;
}

static void add_file(walker *w, const char *path, const struct stat *st, int is_root)
{
    int fresh = idset_add(&w->files, (uint64_t)st->st_dev, (uint64_t)st->st_ino);
    if (fresh < 0) {
        w->st = LODE_ERR_NOMEM;
        return;
    }
    if (!fresh) return; /* the same file through another link */
    ing_walk_result *r = w->r;
    if (r->n_files == w->cap_files) {
        size_t cap = w->cap_files ? w->cap_files * 2 : 256;
        ing_file *f = lode_realloc(r->files, cap * sizeof *f);
        if (!f) {
            w->st = LODE_ERR_NOMEM;
            return;
        }
        r->files = f;
        w->cap_files = cap;
    }
    ing_file *f = &r->files[r->n_files];
    if (!(f->path = lode_strdup(path))) {
        w->st = LODE_ERR_NOMEM;
        return;
    }
    f->size = (int64_t)st->st_size;
    f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    f->is_root = is_root;
    r->bytes += f->size;
    r->n_files++;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks one directory tree below root (absolute) without recursion. */
static void walk_dir(walker *w, const char *root)
{
    size_t rootlen = strlen(root);
    char **stack = NULL, **names = NULL;
    size_t n_stack = 0, cap_stack = 0, cap_names = 0;
    char *first = lode_strdup(root);
    if (!first) goto nomem;
    stack = lode_malloc(16 * sizeof *stack);
    if (!stack) {
        lode_free(first);
        goto nomem;
    }
    cap_stack = 16;
    stack[n_stack++] = first;
    while (n_stack && !w->st) {
        char *dir = stack[--n_stack];
        size_t n_names = 0;
        DIR *d = opendir(dir);
        if (!d) {
            report(w, dir, "cannot read directory: %s", strerror(errno));
            lode_free(dir);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue; /* ".", "..", hidden files and folders */
            if (n_names == cap_names) {
                size_t cap = cap_names ? cap_names * 2 : 64;
                char **p = lode_realloc(names, cap * sizeof *p);
                if (!p) break;
                names = p;
                cap_names = cap;
            }
            if (!(names[n_names] = lode_strdup(e->d_name))) break;
            n_names++;
        }
        if (e) w->st = LODE_ERR_NOMEM;
        qsort(names, n_names, sizeof *names, name_cmp);
        size_t first_sub = n_stack;
        for (size_t i = 0; i < n_names && !w->st; i++) {
            const char *name = names[i];
            lode_buf path = LODE_BUF_INIT;
            if (lode_buf_printf(&path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
                                name)) {
                w->st = LODE_ERR_NOMEM;
                break;
            }
            const char *rel = path.data + rootlen + (path.data[rootlen] == '/');
            struct stat st;
            if (fstatat(dirfd(d), name, &st, 0) != 0) {
                report(w, path.data, "cannot stat: %s", strerror(errno));
                lode_buf_free(&path);
                continue;
            }
            if (glob_any(w->o->excludes, w->o->n_excludes, rel, name)) {
                lode_buf_free(&path);
                continue;
            }
            if (S_ISDIR(st.st_mode)) {
                int fresh = idset_add(&w->dirs, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
                if (fresh < 0) w->st = LODE_ERR_NOMEM;
                if (fresh > 0) {
                    if (n_stack == cap_stack) {
                        char **p = lode_realloc(stack, cap_stack * 2 * sizeof *p);
                        if (!p) {
                            w->st = LODE_ERR_NOMEM;
                            lode_buf_free(&path);
                            break;
                        }
                        stack = p;
                        cap_stack *= 2;
                    }
                    stack[n_stack++] = lode_buf_take(&path);
                }
            } else if (S_ISREG(st.st_mode)) {
                int take = w->o->n_includes ? glob_any(w->o->includes, w->o->n_includes, rel, name)
                                            : ing_media_from_name(name) != ING_MEDIA_UNKNOWN ||
                                                  !strchr(name, '.');
                if (take)
                    add_file(w, path.data, &st, 0);
                else
                    w->r->ignored++;
            }
            lode_buf_free(&path);
        }
        /* subdirectories come off the stack in name order */
        for (size_t a = first_sub, b = n_stack; b > a + 1; a++, b--) {
            char *t = stack[a];
            stack[a] = stack[b - 1];
            stack[b - 1] = t;
        }
        for (size_t i = 0; i < n_names; i++) lode_free(names[i]);
        closedir(d);
        lode_free(dir);
    }
    goto out;
nomem:
    w->st = LODE_ERR_NOMEM;
out:
    while (n_stack) lode_free(stack[--n_stack]);
    lode_free(stack);
    lode_free(names);
}

lode_status ing_walk(const char *const *roots, size_t n_roots, const ing_walk_opts *o,
                     ing_walk_result *out)
{
    walker w = {.o = o, .r = out};
    memset(out, 0, sizeof *out);
    out->roots = lode_calloc(n_roots ? n_roots : 1, sizeof *out->roots);
    if (!out->roots) return LODE_ERR_NOMEM;
    for (size_t i = 0; i < n_roots && !w.st; i++) {
        char *abs = ing_abs_path(roots[i]);
        if (!abs) {
            w.st = LODE_ERR_NOMEM;
            break;
        }
        out->roots[out->n_roots++] = abs;
        struct stat st;
        if (stat(abs, &st) != 0) {
            if (!(o->missing_ok && errno == ENOENT))
                report(&w, roots[i], "cannot read: %s", strerror(errno));
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (idset_add(&w.dirs, (uint64_t)st.st_dev, (uint64_t)st.st_ino) < 0) {
                w.st = LODE_ERR_NOMEM;
                break;
            }
            walk_dir(&w, abs);
        } else if (S_ISREG(st.st_mode)) {
            add_file(&w, abs, &st, 1);
        } else {
            report(&w, roots[i], "not a regular file or directory");
        }
    }
    lode_free(w.dirs.k);
    lode_free(w.files.k);
    if (w.st) ing_walk_free(out);
    return w.st;
}

void ing_walk_free(ing_walk_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_files; i++) lode_free(r->files[i].path);
    lode_free(r->files);
    for (size_t i = 0; i < r->n_roots; i++) lode_free(r->roots[i]);
    lode_free(r->roots);
    memset(r, 0, sizeof *r);
}
