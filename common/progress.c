/* progress.c: the terminal progress bar of progress.h. */
#include "common/progress.h"

#include "common/lode.h"

#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct lode_progress {
    FILE *out;
    int active; /* drawing a bar */
    int shown;  /* a bar is on screen now */
    char unit[32];
    int64_t items, items_total, bytes, bytes_total;
    int64_t t0, last_draw;
};

lode_progress *lode_progress_create(FILE *out, lode_progress_mode mode, const char *unit)
{
    lode_progress *p = lode_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->out = out;
    p->active =
        mode == LODE_PROGRESS_BAR || (mode == LODE_PROGRESS_AUTO && out && isatty(fileno(out)));
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "items");
    p->t0 = lode_now_ns();
    p->last_draw = 0;
    return p;
}

int lode_progress_active(const lode_progress *p)
{
    return p && p->active;
}

void lode_progress_set_total(lode_progress *p, int64_t items, int64_t bytes)
{
    if (!p) return;
    p->items_total = items;
    p->bytes_total = bytes;
}

static void fmt_eta(char *b, size_t n, double s)
{
    if (s < 0 || s > 359999)
        snprintf(b, n, "--");
    else if (s < 60)
        snprintf(b, n, "%ds", (int)(s + 0.5));
    else if (s < 3600)
        snprintf(b, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(b, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

char *lode_progress_format(char *buf, size_t len, int width, const char *unit, int64_t done,
                           int64_t total, int64_t bytes_done, int64_t bytes_total, double seconds)
{
    char tail[160], eta[24];
    double mb = (double)bytes_done / 1e6, mbt = (double)bytes_total / 1e6;
    double rate = seconds > 0 ? mb / seconds : 0;
    double frac = bytes_total > 0 ? (double)bytes_done / (double)bytes_total
                  : total > 0     ? (double)done / (double)total
                                  : 0;
    if (frac > 1) frac = 1;
    if (frac < 0) frac = 0;
    double left = rate > 0 && bytes_total > 0 ? (mbt - mb) / rate
                  : done > 0 && total > 0     ? seconds * (double)(total - done) / (double)done
                                              : -1;
    fmt_eta(eta, sizeof eta, left);
    snprintf(tail, sizeof tail, " %lld/%lld %s  %.1f/%.1f MB  %.1f MB/s  ETA %s", (long long)done,
             (long long)total, unit, mb, mbt, rate, eta);
    int bar = width - (int)strlen(tail) - 8;
    if (bar > 40) bar = 40;
    size_t o = 0;
    if (len == 0) return buf;
    buf[0] = 0;
    if (bar >= 10) {
        int fill = (int)(frac * bar + 0.5);
        o += (size_t)snprintf(buf + o, len - o, "%3d%% [", (int)(frac * 100));
        for (int i = 0; i < bar && o + 2 < len; i++) buf[o++] = i < fill ? '#' : '.';
        if (o + 1 < len) buf[o++] = ']';
        buf[o < len ? o : len - 1] = 0;
    }
    if (o < len) snprintf(buf + o, len - o, "%s", tail);
    return buf;
}

static int term_width(FILE *f)
{
    struct winsize ws;
    if (f && ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

static void draw(lode_progress *p)
{
    char line[512];
    int w = term_width(p->out);
    lode_progress_format(line, sizeof line, w - 1, p->unit, p->items, p->items_total, p->bytes,
                         p->bytes_total, (double)(lode_now_ns() - p->t0) * 1e-9);
    if ((int)strlen(line) > w - 1) line[w - 1 > 0 ? w - 1 : 0] = 0;
    fprintf(p->out, "\r\033[K%s", line);
    fflush(p->out);
    p->shown = 1;
    p->last_draw = lode_now_ns();
}

void lode_progress_update(lode_progress *p, int64_t items_done, int64_t bytes_done, int force)
{
    if (!p) return;
    p->items = items_done;
    p->bytes = bytes_done;
    if (!p->active) return;
    if (force || lode_now_ns() - p->last_draw >= 100000000) draw(p);
}

static void erase(lode_progress *p)
{
    if (p->shown) {
        fputs("\r\033[K", p->out);
        p->shown = 0;
    }
}

void lode_progress_printf(lode_progress *p, const char *fmt, ...)
{
    FILE *f = p ? p->out : stderr;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (p && p->active) erase(p);
    size_t n = strlen(line);
    fputs(line, f);
    if (!n || line[n - 1] != '\n') fputc('\n', f);
    if (p && p->active && p->last_draw) draw(p);
    fflush(f);
}

void lode_progress_finish(lode_progress *p)
{
    if (!p) return;
    if (p->active) {
        erase(p);
        fflush(p->out);
    }
    p->active = 0;
}

void lode_progress_destroy(lode_progress *p)
{
    if (!p) return;
    lode_progress_finish(p);
    lode_free(p);
}
