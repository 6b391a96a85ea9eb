/*
 * vec.h - growth of arrays kept as (pointer, count, capacity) triples.
 *
 * One macro instead of a hand-written doubling at every site: the doubling,
 * the overflow check (tr_reallocarray) and the failure path are the same
 * everywhere, so they are written once. Any thread; no allocation is kept
 * when it fails (the array is unchanged).
 */
#ifndef TR_VEC_H
#define TR_VEC_H

#include "lib/base/alloc.h"
#include "lib/base/error.h"

/*
 * Makes room for at least `need` elements in arr (capacity *capp, doubled
 * from 16 or grown to need). 0, or TR_ENOMEM with arr unchanged.
 */
static inline int tr_vec_reserve_(void **arrp, size_t *capp, size_t need, size_t elem)
{
    if (need <= *capp)
        return 0;
    size_t ncap = *capp ? *capp : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return TR_ENOMEM;
        ncap *= 2;
    }
    void *p = tr_reallocarray(*arrp, ncap, elem);
    if (p == NULL)
        return TR_ENOMEM;
    *arrp = p;
    *capp = ncap;
    return 0;
}

/* Room for `need` elements: TR_VEC_RESERVE(arr, cap, need) -> 0 or TR_ENOMEM. */
#define TR_VEC_RESERVE(arr, cap, need)                                                     \
    tr_vec_reserve_((void **)&(arr), &(cap), (need), sizeof(*(arr)))

/* Appends val: TR_VEC_PUSH(arr, n, cap, val) -> 0 or TR_ENOMEM (arr unchanged). */
#define TR_VEC_PUSH(arr, n, cap, val)                                                      \
    (TR_VEC_RESERVE(arr, cap, (n) + 1) != 0 ? TR_ENOMEM : ((arr)[(n)++] = (val), 0))

#endif
