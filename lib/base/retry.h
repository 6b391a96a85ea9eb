/*
 * retry.h - retry delays: exponential backoff with jitter.
 */
#ifndef TR_RETRY_H
#define TR_RETRY_H

#include "lib/base/base.h"

/* Longest delay ever returned, whatever backoff and failures say: one hour. */
#define TR_RETRY_MAX_DELAY_S 3600.0

/*
 * The delay before the retry that follows failure number `failures` (from 1):
 * base = backoff * 2^(failures-1), capped at TR_RETRY_MAX_DELAY_S, then
 * "equal jitter": base/2 + rand01 * base/2, so retries of many tasks that
 * failed together (a rate limit) spread out instead of returning in step.
 * rand01 is a uniform number in [0, 1). backoff <= 0 gives 0.
 */
double tr_retry_delay(double backoff, uint32_t failures, double rand01);

#endif
