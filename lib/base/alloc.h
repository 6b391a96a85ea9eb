/*
 * alloc.h - every allocation of the project goes through here.
 *
 * So that failure can be tested: in builds with TR_TESTING the allocator can
 * be told to fail the Nth allocation from now (curl's torture, libuv's
 * replace_allocator). All functions may be called from any thread; the
 * failure counter is only meant for single-threaded unit tests.
 */
#ifndef TR_ALLOC_H
#define TR_ALLOC_H

#include "lib/base/base.h"

/* malloc(size); NULL on failure. */
void *tr_malloc(size_t size) TR_MUST_CHECK;

/* calloc(n, size) with the multiplication checked; NULL on failure or overflow. */
void *tr_calloc(size_t n, size_t size) TR_MUST_CHECK;

/* realloc(p, size); on failure returns NULL and p is untouched. */
void *tr_realloc(void *p, size_t size) TR_MUST_CHECK;

/* realloc of an array of n elements of size bytes, checked for overflow. */
void *tr_reallocarray(void *p, size_t n, size_t size) TR_MUST_CHECK;

/* free(p); p may be NULL. */
void tr_free(void *p);

/* Copies of strings and memory, owned by the caller; NULL on failure. */
char *tr_strdup(const char *s) TR_MUST_CHECK;
char *tr_strndup(const char *s, size_t n) TR_MUST_CHECK;
void *tr_memdup(const void *p, size_t n) TR_MUST_CHECK;

/* Frees *pp and sets it to NULL (HAProxy's ha_free). */
#define tr_free_null(pp)  \
    do {                  \
        tr_free(*(pp));   \
        *(pp) = NULL;     \
    } while (0)

#ifdef TR_TESTING
/*
 * Makes the nth allocation from now fail (1 = the next one), and every one
 * after it while `sticky`; n = 0 turns injection off.
 */
void tr_alloc_fail_at(long n, bool sticky);
#endif

#endif
