/*
 * buf.h - one growable byte buffer and one string view.
 *
 * struct tr_buf follows git's strbuf: `buf` is never NULL after init, the
 * content is always NUL-terminated, `len` is explicit. Like curl's dynbuf it
 * has a hard maximum set at init: growing past it fails with TR_E2BIG and
 * leaves the content as it was.
 */
#ifndef TR_BUF_H
#define TR_BUF_H

#include "lib/base/error.h"

struct tr_buf
{
    char *buf;    /* content, NUL-terminated; points at a static "" until grown */
    size_t len;   /* bytes of content, excluding the NUL */
    size_t alloc; /* bytes allocated at buf, 0 while buf is the static "" */
    size_t max;   /* hard limit on len */
};

/* A read-only view into someone else's bytes; not NUL-terminated. */
struct tr_str
{
    const char *p;
    size_t len;
};

#define TR_STR(lit) ((struct tr_str){(lit), sizeof(lit) - 1})

/* Initialises an empty buffer that may grow to max bytes (0 = SIZE_MAX/2). */
void tr_buf_init(struct tr_buf *b, size_t max);

/* Frees the content; b is left initialised and empty. */
void tr_buf_release(struct tr_buf *b);

/* Empties the buffer, keeping its allocation. */
void tr_buf_reset(struct tr_buf *b);

/* Ensures room for `extra` more bytes. 0, TR_ENOMEM or TR_E2BIG. */
int tr_buf_grow(struct tr_buf *b, size_t extra) TR_MUST_CHECK;

/* Appends bytes, a C string, or formatted text. 0, TR_ENOMEM or TR_E2BIG. */
int tr_buf_add(struct tr_buf *b, const void *p, size_t n) TR_MUST_CHECK;
int tr_buf_addstr(struct tr_buf *b, const char *s) TR_MUST_CHECK;
int tr_buf_addch(struct tr_buf *b, char c) TR_MUST_CHECK;
int tr_buf_addf(struct tr_buf *b, const char *fmt, ...) TR_PRINTF(2, 3) TR_MUST_CHECK;
int tr_buf_vaddf(struct tr_buf *b, const char *fmt, va_list ap) TR_MUST_CHECK;

/*
 * Hands the content to the caller (to free with tr_free) and reinitialises b.
 * Returns NULL only when allocation of an empty string fails.
 */
char *tr_buf_detach(struct tr_buf *b, size_t *len) TR_MUST_CHECK;

/* True when the view equals the C string s. */
bool tr_str_eq(struct tr_str s, const char *c);

#endif
