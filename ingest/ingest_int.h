/*
 * ingest_int.h: the document builder the loaders share. A loader opens a block, feeds it
 * text (collapsed to single spaces, or kept as written for code), closes it; the builder
 * joins non-empty blocks with a blank line and keeps the heading path up to date.
 */
#ifndef LODE_INGEST_INT_H
#define LODE_INGEST_INT_H

#include "ingest/ingest.h"

#define DOCB_MAX_HEADING    256               /* bytes of one heading kept in a path */
#define DOCB_MAX_PATH_BYTES ((size_t)8 << 20) /* bytes of all of a document's paths */

typedef struct docb {
    lode_buf text;  /* the document's normalized text so far */
    lode_buf cur;   /* the open block's text */
    lode_buf title; /* set by the loader, else the first h1 */
    ing_block_kind kind;
    int level;
    int open;          /* a block is open */
    int space;         /* a collapsed space is pending in cur */
    int title_from_h1; /* no explicit title: take the first level-1 heading */
    char *heads[7];    /* heading stack by level 1..6 */
    size_t path;       /* current index into paths */
    ing_block *blocks;
    size_t n_blocks, cap_blocks;
    char **paths;
    size_t n_paths, cap_paths;
    size_t path_bytes;
    size_t repairs;
    lode_status st; /* first error; later calls do nothing */
} docb;

lode_status docb_init(docb *b);
void docb_free(docb *b);
/* Closes the open block (if any) and opens one of this kind. */
void docb_begin(docb *b, ing_block_kind kind, int level);
/* Appends text to the open block (opening a paragraph when none is). Text is valid
 * UTF-8. */
void docb_text(docb *b, const char *s, size_t n);
/* A word break: a pending space in collapsing blocks, "\n" in code blocks. */
void docb_space(docb *b);
/* Closes the open block and puts the blocks that follow under the heading path path
 * (replacing the heading stack), without adding a heading block to the text: for
 * sections a loader knows from the format rather than from headings (a PDF's pages). */
void docb_section(docb *b, const char *path);
/* Closes the open block; an empty one leaves no trace. */
void docb_end(docb *b);
/* Finishes: closes the open block and moves everything into a new document. */
lode_status docb_finish(docb *b, ing_media media, ing_doc **out);

/* Code point of an HTML named entity without & and ; (libxml2's table), or -1. */
int ing_entity_lookup(const char *name, size_t n);
/* Encodes a code point as UTF-8 into out (4 bytes room); returns the length (0 if
 * invalid). */
size_t ing_utf8_encode(uint32_t cp, char *out);

#endif
