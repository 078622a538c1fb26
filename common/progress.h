/*
 * progress.h: a one-line progress bar for long commands (ingest, later embedding): items
 * done of total, MB done of total, MB/s and ETA, redrawn in place on a terminal at most
 * ten times a second. On anything that is not a terminal it draws nothing, so logs and
 * pipes get only the lines the command prints itself. Messages printed through
 * lode_progress_printf appear above the bar without tearing it.
 */
#ifndef LODE_COMMON_PROGRESS_H
#define LODE_COMMON_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct lode_progress lode_progress;

/* Mode of lode_progress_create. */
typedef enum lode_progress_mode {
    LODE_PROGRESS_AUTO = 0, /* a bar when out is a terminal, else nothing */
    LODE_PROGRESS_BAR,      /* always a bar (tests) */
    LODE_PROGRESS_OFF,      /* never */
} lode_progress_mode;

/* A progress display on out (usually stderr); unit names the items ("files"). Returns
 * NULL only when out of memory; the caller destroys it. unit is copied. */
lode_progress *lode_progress_create(FILE *out, lode_progress_mode mode, const char *unit);
/* Ends the bar (erasing it) and frees; NULL is fine. */
void lode_progress_destroy(lode_progress *p);
/* 1 when a bar is being drawn. */
int lode_progress_active(const lode_progress *p);
/* Sets the totals (either may grow later). */
void lode_progress_set_total(lode_progress *p, int64_t items, int64_t bytes);
/* Records progress and redraws when 100 ms have passed since the last drawing (or
 * force). */
void lode_progress_update(lode_progress *p, int64_t items_done, int64_t bytes_done, int force);
/* Prints a line (a newline is added when missing) above the bar, then redraws it. */
void lode_progress_printf(lode_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Erases the bar; later updates draw nothing. */
void lode_progress_finish(lode_progress *p);
/* Formats the bar line for these numbers into buf (for tests and the drawing itself);
 * width is the terminal's columns. Returns buf. */
char *lode_progress_format(char *buf, size_t len, int width, const char *unit, int64_t done,
                           int64_t total, int64_t bytes_done, int64_t bytes_total, double seconds);

#endif
