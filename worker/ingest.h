/*
 * ingest.h - the byte-level work of document ingestion: normalising text,
 * extracting text from HTML, chunking by structure, and file access kept
 * inside a root folder.
 *
 * Chunks are byte ranges of the input they were cut from, so a chunk's
 * offsets always point at its bytes in the source; the text stored for a
 * chunk is tr_ingest_normalize of that range.
 *
 * Pure functions of their arguments, except the file functions, which read
 * the file system. Any thread.
 */
#ifndef TR_INGEST_H
#define TR_INGEST_H

#include "lib/base/buf.h"

/* The largest file tr_ingest_read_file reads, and the most files a listing returns. */
#define TR_INGEST_FILE_MAX (64u << 20)
#define TR_INGEST_LIST_MAX 100000

/*
 * Appends the normalised form of p to out: CRLF and CR become LF; NBSP and
 * the other Unicode space characters (U+2000..U+200A, U+202F, U+205F,
 * U+3000) and tabs become spaces; zero-width characters (U+200B..U+200D,
 * U+2060, U+FEFF) and other C0 controls are removed; invalid UTF-8 becomes
 * U+FFFD; runs of spaces become one; spaces at line ends go; three or more
 * line breaks become two (a paragraph break survives); the result is
 * trimmed; then the text is composed into Unicode NFC (libunistring), so
 * canonically equivalent spellings index alike. 0, TR_ENOMEM or TR_E2BIG.
 */
int tr_ingest_normalize(const char *p, size_t len, struct tr_buf *out) TR_MUST_CHECK;

/*
 * Appends the text of an HTML document to out: tags dropped; script, style,
 * noscript, template and svg content dropped (a head yields only its title); comments
 * and CDATA dropped; block elements become line breaks (paragraph breaks
 * around p, div, section..., line breaks at br, li, tr...); h1..h6 start a heading line
 * ("## "), so that the Markdown chunker sees the structure; the named
 * entities amp, lt, gt, quot, apos, nbsp, ndash, mdash, hellip, copy, reg,
 * laquo, raquo, lsquo, rsquo, ldquo, rdquo and every numeric reference are
 * decoded. The output is not normalised. 0, TR_ENOMEM or TR_E2BIG.
 */
int tr_ingest_html_text(const char *p, size_t len, struct tr_buf *out) TR_MUST_CHECK;

struct tr_chunk_opts
{
    size_t size;    /* target bytes of new content per chunk (0 = 1000) */
    size_t overlap; /* bytes repeated from the previous chunk of the section (< size) */
    bool markdown;  /* headings (# ...) start sections; ``` fences stay whole when they fit */
};

/* One chunk: byte ranges into the chunked input. */
struct tr_chunk
{
    size_t start, end;           /* the chunk, overlap included */
    size_t heading_start;        /* its section's heading text (without the #s) */
    size_t heading_len;          /* 0 when the section has no heading */
    unsigned heading_level;      /* 1..6, or 0 */
};

/*
 * Cuts p into chunks: paragraphs (blank-line separated blocks) are packed
 * up to opts->size bytes; in Markdown mode a heading always starts a new
 * chunk (a heading with no content before the next heading joins that
 * next section's first chunk, whose heading is the inner one) and fenced
 * code stays whole unless it alone exceeds the size; a
 * block above the size is cut at the last line break, sentence end or
 * space in its second half, or at a UTF-8 boundary. Each chunk after the
 * first of a section starts up to opts->overlap bytes early, at a word
 * start. Chunks with no non-space byte are dropped. *out (tr_free) gets
 * *n chunks in order. 0, TR_EINVAL (overlap >= size) or TR_ENOMEM.
 */
int tr_ingest_chunk(const char *p, size_t len, const struct tr_chunk_opts *opts,
                    struct tr_chunk **out, size_t *n) TR_MUST_CHECK;

/*
 * Resolves rel inside root into out (the real path): rel must be relative
 * and hold no ".." component, and the real path (symbolic links followed)
 * must stay under the real path of root. 0, TR_EACCES (escapes root or
 * absolute), TR_ENOENT, TR_E2BIG or TR_ENOMEM.
 */
int tr_ingest_resolve(const char *root, const char *rel, struct tr_buf *out) TR_MUST_CHECK;

/*
 * Lists the regular files under root whose path relative to root matches
 * the fnmatch(3) pattern glob ("*" also crosses "/"; NULL matches all),
 * sorted by byte order. Names starting with "." and symbolic links are
 * skipped; at most 32 levels deep. *out gets *n paths (free each and the
 * array with tr_free). 0, TR_ENOENT, TR_EACCES, TR_E2BIG (above
 * TR_INGEST_LIST_MAX) or TR_ENOMEM.
 */
int tr_ingest_list(const char *root, const char *glob, char ***out, size_t *n) TR_MUST_CHECK;

/*
 * Reads the whole regular file at path into out (released and initialised
 * again with a maximum above TR_INGEST_FILE_MAX), with
 * its mtime (seconds) and size. 0, TR_ENOENT, TR_EACCES, TR_EIO, TR_E2BIG
 * (above TR_INGEST_FILE_MAX) or TR_ENOMEM.
 */
int tr_ingest_read_file(const char *path, struct tr_buf *out, int64_t *mtime,
                        int64_t *size) TR_MUST_CHECK;

/* The mtime (seconds) and size of the regular file at path: 0, TR_ENOENT or TR_EACCES. */
int tr_ingest_stat(const char *path, int64_t *mtime, int64_t *size) TR_MUST_CHECK;

#endif
