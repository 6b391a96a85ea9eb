/*
 * cron.h - five-field cron expressions in UTC, and when they fire next.
 *
 * "minute hour day-of-month month day-of-week", each field `*`, a number, a
 * range `a-b`, a list `a,b,c`, and a step `*\/n` or `a-b/n`; months and
 * days of the week also by name (`jan`, `mon`, case-insensitive); day of
 * week 0 or 7 is Sunday. As in Vixie cron, when both day fields are
 * restricted (neither starts with `*`) a day matches when either matches.
 * Times are seconds since the epoch in UTC: no time zones, no DST.
 *
 * Pure functions; any thread.
 */
#ifndef TR_CRON_H
#define TR_CRON_H

#include "lib/base/error.h"

/* A parsed expression: one bit per allowed value. */
struct tr_cron
{
    uint64_t minutes;  /* bits 0..59 */
    uint32_t hours;    /* bits 0..23 */
    uint32_t mdays;    /* bits 1..31 */
    uint16_t months;   /* bits 1..12 */
    uint8_t wdays;     /* bits 0..6, Sunday 0 */
    bool mday_star;    /* the day-of-month field starts with '*' */
    bool wday_star;    /* the day-of-week field starts with '*' */
};

/*
 * Parses expr into *out. Returns 0, or TR_ECRON with err saying which
 * field and why ("cron '0 25 * * *': hour 25 out of range 0-23").
 */
int tr_cron_parse(const char *expr, struct tr_cron *out, struct tr_error *err) TR_MUST_CHECK;

/*
 * The first time strictly after `after` (seconds, UTC) at which c fires,
 * on a whole minute; -1 when it never fires within eight years (for
 * example "0 0 30 2 *").
 */
double tr_cron_next(const struct tr_cron *c, double after);

#endif
