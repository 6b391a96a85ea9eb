/*
 * alloc.c - the allocator front end, with failure injection in test builds.
 */
#include "lib/base/alloc.h"

#ifdef TR_TESTING
static long fail_countdown; /* 0: off; otherwise allocations left before failing */
static bool fail_sticky;

void tr_alloc_fail_at(long n, bool sticky)
{
    fail_countdown = n;
    fail_sticky = sticky;
}

static bool should_fail(void)
{
    if (fail_countdown <= 0)
        return false;
    if (fail_countdown == 1) {
        if (!fail_sticky)
            fail_countdown = 0;
        return true;
    }
    fail_countdown--;
    return false;
}
#else
static inline bool should_fail(void)
{
    return false;
}
#endif

void *tr_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *tr_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    if (should_fail())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *tr_realloc(void *p, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(p, size ? size : 1);
}

void *tr_reallocarray(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return tr_realloc(p, n * size);
}

void tr_free(void *p)
{
    free(p);
}

char *tr_strndup(const char *s, size_t n)
{
    char *d = tr_malloc(n + 1);
    if (d == NULL)
        return NULL;
    /* s may be NULL when n is 0 (an absent field's view): memcpy must not see it. */
    if (n > 0)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *tr_strdup(const char *s)
{
    return tr_strndup(s, strlen(s));
}

void *tr_memdup(const void *p, size_t n)
{
    void *d = tr_malloc(n);
    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return d;
}
