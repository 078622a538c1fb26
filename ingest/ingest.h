/*
 * ingest.h: turning files into normalized documents and documents into chunks.
 *
 * A loader (plain text, Markdown through md4c, HTML through libxml2, PDF through
 * poppler-glib) reads raw bytes and
 * produces an ing_doc: a title and ordered blocks (paragraph, heading, code, list item),
 * each a byte span of one normalized UTF-8 text in which blocks are separated by a blank
 * line, with the heading path ("Intro > Setup") it sits under. The chunker cuts a document
 * into chunks of a target size in tokens with an overlap, never across a heading, never
 * inside a word, preferring paragraph and then sentence boundaries. Every chunk's text is a
 * substring of the document's normalized text, so its offsets map straight back to it.
 *
 * Token counting is a seam (ing_token_counter): the default estimates tokens from words
 * and punctuation; the engine's tokenizer can be passed in instead.
 */
#ifndef LODE_INGEST_H
#define LODE_INGEST_H

#include "common/lode.h"

#include <stddef.h>
#include <stdint.h>

/* ---- documents --------------------------------------------------------------------- */
typedef enum ing_block_kind {
    ING_BLOCK_PARAGRAPH = 0,
    ING_BLOCK_HEADING,
    ING_BLOCK_CODE, /* whitespace kept as written (Markdown code, HTML <pre>) */
    ING_BLOCK_LIST, /* one list item */
} ing_block_kind;

typedef struct ing_block {
    ing_block_kind kind;
    int level;    /* heading level 1..6 for headings, else 0 */
    size_t start; /* byte offsets into ing_doc.text: [start, end) */
    size_t end;
    size_t path; /* index into ing_doc.paths: the heading path this block is under */
} ing_block;

typedef enum ing_media {
    ING_MEDIA_UNKNOWN = 0,
    ING_MEDIA_TEXT,
    ING_MEDIA_MARKDOWN,
    ING_MEDIA_HTML,
    ING_MEDIA_PDF, /* text per page; each page's blocks sit under the path "p. N" */
} ing_media;

typedef struct ing_doc {
    char *title;       /* never NULL; "" when the document has none */
    ing_media media;   /* what the loader read it as */
    char *text;        /* normalized UTF-8, NUL-terminated; blocks joined by "\n\n" */
    size_t len;        /* bytes of text */
    ing_block *blocks; /* in document order */
    size_t n_blocks;
    char **paths; /* heading paths, paths[0] = "" (no heading yet) */
    size_t n_paths;
    size_t utf8_repairs; /* invalid UTF-8 sequences replaced by U+FFFD */
} ing_doc;

void ing_doc_destroy(ing_doc *doc); /* accepts NULL */

/* Static MIME type for a media kind ("text/html" ...); "application/octet-stream" for
 * unknown. */
const char *ing_media_mime(ing_media m);

/* Media kind from a file name's extension (case-insensitive); ING_MEDIA_UNKNOWN when the
 * extension is not one lode reads. */
ing_media ing_media_from_name(const char *name);

/* Looks at the bytes: returns LODE_ERR_UNSUPPORTED (with a reason in why) for binary
 * content (NUL bytes, known binary signatures, or mostly control bytes / invalid UTF-8),
 * LODE_OK otherwise. When the name gave no kind, *media gets a guess from the content
 * (HTML markup, else plain text). why may be NULL. */
lode_status ing_sniff(const char *data, size_t len, ing_media *media /* IN/OUT */, char *why,
                      size_t whylen);

/* Loads data as the given kind (ING_MEDIA_UNKNOWN: sniffed; data that starts with
 * "%PDF-" is read as PDF whatever the kind says). Invalid UTF-8 is repaired
 * (U+FFFD) and counted in doc->utf8_repairs. On success *out owns a new document (free
 * with ing_doc_destroy). Errors: LODE_ERR_UNSUPPORTED for binary data, LODE_ERR_FORMAT
 * when the parser gives up, LODE_ERR_NOMEM; err (may be NULL) gets a one-line reason. */
lode_status ing_load(const char *data, size_t len, ing_media media, ing_doc **out /* OUT */,
                     char *err, size_t errlen);
lode_status ing_load_text(const char *data, size_t len, ing_doc **out /* OUT */, char *err,
                          size_t errlen);
lode_status ing_load_markdown(const char *data, size_t len, ing_doc **out /* OUT */, char *err,
                              size_t errlen);
lode_status ing_load_html(const char *data, size_t len, ing_doc **out /* OUT */, char *err,
                          size_t errlen);
/* PDF through poppler-glib: the text of every page, in reading order, paragraphs split at
 * blank lines; the blocks of page N (1-based, the page's index in the file, not its
 * printed label) have the heading path "p. N", so chunks never span pages and a citation
 * names the page. The title is the Info dictionary's, if any. Pages without text are
 * skipped. Errors (one-line reason in err): LODE_ERR_FORMAT for data that is not a PDF or
 * that poppler cannot read (damaged, truncated beyond repair), LODE_ERR_UNSUPPORTED for an
 * encrypted PDF that needs a password and for one with no text on any page (scanned or
 * image-only: lode does no OCR). */
lode_status ing_load_pdf(const char *data, size_t len, ing_doc **out /* OUT */, char *err,
                         size_t errlen);

/* Appends data to out with every invalid UTF-8 sequence (and NUL) replaced by U+FFFD.
 * Returns the status of the append; *repairs (may be NULL) is increased by the number of
 * replacements. */
lode_status ing_utf8_repair(const char *data, size_t len, lode_buf *out, size_t *repairs);

/* SHA-256 of data (OpenSSL EVP) as 64 lowercase hex digits plus NUL into hex. */
lode_status ing_sha256_hex(const void *data, size_t len, char hex[65] /* OUT */);

/* ---- chunking ---------------------------------------------------------------------- */
/* Returns the number of tokens in text[0..len). Must be additive enough that the count of
 * a span split at whitespace is close to the sum of its parts. */
typedef size_t (*ing_token_counter)(const char *text, size_t len, void *ctx);

/* The default estimate: one token per short word, longer words one per ~5 bytes, one per
 * punctuation or symbol character. */
size_t ing_token_estimate(const char *text, size_t len, void *ctx);

typedef struct ing_chunk_opts {
    int target_tokens;         /* default 256 */
    int overlap_tokens;        /* default 32; clamped to target/2 */
    ing_token_counter counter; /* NULL: ing_token_estimate */
    void *counter_ctx;
} ing_chunk_opts;
#define ING_CHUNK_TARGET_DEFAULT  256
#define ING_CHUNK_OVERLAP_DEFAULT 32

typedef struct ing_chunk {
    size_t start; /* byte span in ing_doc.text: text is doc->text + start, end - start bytes */
    size_t end;
    size_t char_start; /* the same span in code points */
    size_t char_end;
    size_t path; /* index into ing_doc.paths */
    int tokens;  /* counter's count for the chunk's text */
} ing_chunk;

/* Cuts doc into chunks: never across a change of heading path, never inside a word
 * (except a single word longer than the target, cut at a code point), long paragraphs at
 * sentence (code at line) boundaries; consecutive chunks of one section overlap by about
 * overlap_tokens. opts may be NULL for the defaults. On success *out is an array of *n
 * chunks in document order (free with lode_free; NULL when the document is empty). */
lode_status ing_chunk_doc(const ing_doc *doc, const ing_chunk_opts *opts, ing_chunk **out /* OUT */,
                          size_t *n /* OUT */);

#endif
