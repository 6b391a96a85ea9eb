/*
 * base.h - what every Trellis translation unit includes first.
 *
 * Fixed-width types, a few macros, and the banned-function list. The system
 * headers that declare banned functions are included here, before banned.h,
 * so that the ban applies to calls only.
 */
#ifndef TR_BASE_H
#define TR_BASE_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TR_MUST_CHECK __attribute__((warn_unused_result))
#define TR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TR_UNUSED(x) ((void)(x))
#define TR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TR_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Static helpers that unit tests reach: visible in the tr_*_testing libraries only. */
#ifdef TR_TESTING
#define TR_TESTABLE
#else
#define TR_TESTABLE static
#endif

/*
 * Invariants the code itself guarantees. Never for anything derived from
 * input: input errors are returned and counted, never asserted.
 */
#define TR_ASSERT(cond)                                                                  \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Wall-clock seconds since the epoch, and a monotonic clock in nanoseconds. */
double tr_now(void);
uint64_t tr_mono_ns(void);

#include "lib/base/banned.h"

#endif
