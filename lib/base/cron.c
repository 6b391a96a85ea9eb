/*
 * cron.c - five-field cron expressions (cron.h).
 *
 * A field is parsed into a bit set; the next firing is found by walking
 * forward: a month that does not match skips to the next month's first
 * day, a day to the next day, an hour to the next hour, a minute to the
 * next minute. Each skip moves at least to the next unit, so the walk ends
 * after at most a few thousand steps for any expression; a bound of eight
 * years catches expressions that never match (30 February).
 *
 * Calendar arithmetic is done here on civil dates (Howard Hinnant's
 * days_from_civil), so no libc time zone state is touched.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base/cron.h"

struct field
{
    const char *name;
    int lo, hi;
    const char *const *names; /* NULL, or hi - lo + 1 names from lo */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const wday_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},       {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL}, {"month", 1, 12, month_names},
    {"day of week", 0, 7, wday_names},
};

/* A number or a name at *p; advances *p. -1 when there is none. */
static int read_value(const struct field *f, const char **p)
{
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        while (isdigit((unsigned char)*s) && v < 1000)
            v = v * 10 + (*s++ - '0');
        *p = s;
        return (int)v;
    }
    if (f->names != NULL && isalpha((unsigned char)s[0]) && isalpha((unsigned char)s[1]) &&
        isalpha((unsigned char)s[2])) {
        for (int i = 0; i <= f->hi - f->lo; i++) {
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *p = s + 3;
                return f->lo + i;
            }
        }
    }
    return -1;
}

/* One field (its text in [s, e)) into *bits. */
static int parse_field(const char *expr, int fi, const char *s, const char *e, uint64_t *bits,
                       struct tr_error *err)
{
    const struct field *f = &fields[fi];
    *bits = 0;
    while (s < e) {
        const char *comma = memchr(s, ',', (size_t)(e - s));
        const char *end = comma ? comma : e;
        int lo, hi, step = 1;
        const char *p = s;
        if (*p == '*') {
            lo = f->lo;
            hi = f->hi;
            p++;
        } else {
            lo = read_value(f, &p);
            hi = lo;
            if (lo >= 0 && p < end && *p == '-') {
                p++;
                hi = read_value(f, &p);
            }
            if (lo < 0 || hi < 0)
                return tr_error_set(err, TR_ECRON, "cron '%s': %s: '%.*s' is not a number%s",
                                    expr, f->name, (int)(end - s), s,
                                    f->names ? " or a name" : "");
            if (lo < f->lo || hi > f->hi || lo > f->hi || hi < f->lo)
                return tr_error_set(err, TR_ECRON, "cron '%s': %s '%.*s' out of range %d-%d",
                                    expr, f->name, (int)(end - s), s, f->lo,
                                    fi == 4 ? 6 : f->hi);
            if (lo > hi)
                return tr_error_set(err, TR_ECRON, "cron '%s': %s range '%.*s' runs backwards",
                                    expr, f->name, (int)(end - s), s);
        }
        if (p < end && *p == '/') {
            p++;
            const char *q = p;
            step = 0;
            while (q < end && isdigit((unsigned char)*q) && step < 1000)
                step = step * 10 + (*q++ - '0');
            if (q == p || step == 0)
                return tr_error_set(err, TR_ECRON, "cron '%s': %s: bad step in '%.*s'", expr,
                                    f->name, (int)(end - s), s);
            p = q;
            if (lo == hi && s[0] != '*')
                hi = f->hi; /* "5/15" means 5-max/15, as Vixie cron reads it */
        }
        if (p != end)
            return tr_error_set(err, TR_ECRON, "cron '%s': %s: cannot read '%.*s'", expr,
                                f->name, (int)(end - s), s);
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << (fi == 4 && v == 7 ? 0 : v);
        s = comma ? comma + 1 : e;
        if (comma && s == e)
            return tr_error_set(err, TR_ECRON, "cron '%s': %s ends with ','", expr, f->name);
    }
    return 0;
}

int tr_cron_parse(const char *expr, struct tr_cron *out, struct tr_error *err)
{
    memset(out, 0, sizeof(*out));
    if (expr == NULL)
        return tr_error_set(err, TR_ECRON, "cron expression missing");
    if (strlen(expr) > 256)
        return tr_error_set(err, TR_ECRON, "cron expression longer than 256 bytes");
    const char *p = expr;
    uint64_t bits[5];
    int n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        const char *s = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
        if (n == 5)
            return tr_error_set(err, TR_ECRON, "cron '%s': more than five fields", expr);
        if (n == 2)
            out->mday_star = *s == '*';
        if (n == 4)
            out->wday_star = *s == '*';
        int rc = parse_field(expr, n, s, p, &bits[n], err);
        if (rc < 0)
            return rc;
        n++;
    }
    if (n != 5)
        return tr_error_set(err, TR_ECRON, "cron '%s': %d field%s, not five (minute hour "
                            "day-of-month month day-of-week)", expr, n, n == 1 ? "" : "s");
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->mdays = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->wdays = (uint8_t)bits[4];
    return 0;
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool day_matches(const struct tr_cron *c, int64_t days, unsigned mday)
{
    unsigned wday = (unsigned)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
    bool md = (c->mdays >> mday) & 1u;
    bool wd = (c->wdays >> wday) & 1u;
    if (c->mday_star || c->wday_star)
        return md && wd;
    return md || wd;
}

double tr_cron_next(const struct tr_cron *c, double after)
{
    if (!isfinite(after))
        return -1;
    int64_t t = (int64_t)floor(after / 60.0) * 60 + 60; /* the next whole minute */
    int64_t limit = t + 8LL * 366 * 86400;
    while (t < limit) {
        int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
        int64_t sod = t - days * 86400;
        int64_t y;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        if (!((c->months >> m) & 1u)) {
            unsigned nm = m == 12 ? 1 : m + 1;
            int64_t ny = m == 12 ? y + 1 : y;
            t = days_from_civil(ny, nm, 1) * 86400;
            continue;
        }
        if (!day_matches(c, days, d)) {
            t = (days + 1) * 86400;
            continue;
        }
        unsigned hour = (unsigned)(sod / 3600);
        if (!((c->hours >> hour) & 1u)) {
            t = days * 86400 + (int64_t)(hour + 1) * 3600;
            continue;
        }
        unsigned minute = (unsigned)((sod % 3600) / 60);
        if (!((c->minutes >> minute) & 1ull)) {
            t += 60;
            continue;
        }
        return (double)t;
    }
    return -1;
}
