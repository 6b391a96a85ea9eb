/*
 * retry.c - backoff arithmetic, kept apart so it can be tested exactly.
 */
#include "lib/base/retry.h"

double tr_retry_delay(double backoff, uint32_t failures, double rand01)
{
    if (!(backoff > 0) || failures == 0)
        return 0;
    double base = backoff;
    for (uint32_t i = 1; i < failures && base < TR_RETRY_MAX_DELAY_S; i++)
        base *= 2;
    if (base > TR_RETRY_MAX_DELAY_S)
        base = TR_RETRY_MAX_DELAY_S;
    if (rand01 < 0)
        rand01 = 0;
    if (rand01 >= 1)
        rand01 = 0.999999;
    return base / 2 + rand01 * base / 2;
}
