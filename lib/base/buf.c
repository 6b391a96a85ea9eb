/*
 * buf.c - struct tr_buf, the growable NUL-terminated buffer.
 */
#include "lib/base/buf.h"
#include "lib/base/alloc.h"

static char empty_buf[1];

void tr_buf_init(struct tr_buf *b, size_t max)
{
    b->buf = empty_buf;
    b->len = 0;
    b->alloc = 0;
    b->max = max ? max : SIZE_MAX / 2;
}

void tr_buf_release(struct tr_buf *b)
{
    if (b->alloc)
        tr_free(b->buf);
    tr_buf_init(b, b->max);
}

void tr_buf_reset(struct tr_buf *b)
{
    b->len = 0;
    if (b->alloc)
        b->buf[0] = '\0';
}

int tr_buf_grow(struct tr_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return TR_E2BIG;
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return 0;
    size_t cap = b->alloc ? b->alloc : 64;
    while (cap < need)
        cap = cap < SIZE_MAX / 2 ? cap * 2 : need;
    char *p = tr_realloc(b->alloc ? b->buf : NULL, cap);
    if (p == NULL)
        return TR_ENOMEM;
    if (!b->alloc)
        p[0] = '\0';
    b->buf = p;
    b->alloc = cap;
    return 0;
}

int tr_buf_add(struct tr_buf *b, const void *p, size_t n)
{
    int rc = tr_buf_grow(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return 0;
}

int tr_buf_addstr(struct tr_buf *b, const char *s)
{
    return tr_buf_add(b, s, strlen(s));
}

int tr_buf_addch(struct tr_buf *b, char c)
{
    return tr_buf_add(b, &c, 1);
}

int tr_buf_vaddf(struct tr_buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, cp);
    va_end(cp);
    if (n < 0)
        return TR_EINVAL;
    if ((size_t)n < sizeof(small))
        return tr_buf_add(b, small, (size_t)n);
    int rc = tr_buf_grow(b, (size_t)n);
    if (rc < 0)
        return rc;
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int tr_buf_addf(struct tr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tr_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

char *tr_buf_detach(struct tr_buf *b, size_t *len)
{
    char *p = b->alloc ? b->buf : tr_strdup("");
    if (len)
        *len = b->alloc ? b->len : 0;
    tr_buf_init(b, b->max);
    return p;
}

bool tr_str_eq(struct tr_str s, const char *c)
{
    size_t n = strlen(c);
    return n == s.len && memcmp(s.p, c, n) == 0;
}
