/*
 * flags.c - flags and TRELLIS_* variables from one table (see flags.h).
 *
 * The order of application is defaults, environment, command line: each
 * step overwrites the one before, so the command line wins without any
 * bookkeeping except for lists, whose command-line values replace (rather
 * than extend) those of the environment.
 */
#include "lib/base/flags.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"

#define ENV_NAME_MAX 96
#define HELP_COLUMN 30 /* where the help text starts */

/* ---------------------------------------------------------------------- */
/* numbers */

/* NULL and *out set, or why s is not a decimal integer in [min, max]. */
static const char *long_reason(const char *s, long min, long max, long *out)
{
    const char *p = s;
    bool neg = *p == '-';
    if (neg)
        p++;
    if (*p < '0' || *p > '9')
        return "not a decimal number";
    unsigned long long v = 0;
    bool big = false;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return "not a decimal number";
        if (v > (ULLONG_MAX - 9) / 10)
            big = true; /* keep checking the digits: "99...9x" is not a number */
        else
            v = v * 10 + (unsigned long long)(*p - '0');
    }
    long val;
    if (big || (!neg && v > (unsigned long long)LONG_MAX) ||
        (neg && v > (unsigned long long)LONG_MAX + 1))
        return "out of range";
    val = neg ? (long)(0 - v) : (long)v;
    if (val < min || val > max)
        return "out of range";
    *out = val;
    return NULL;
}

int tr_parse_long(const char *s, long min, long max, long *out)
{
    return long_reason(s, min, max, out) == NULL ? 0 : TR_EINVAL;
}

int tr_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    long v;
    if (s[0] == '-' || long_reason(s, (long)min, (long)max, &v) != NULL)
        return TR_EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* [-]digits[.digits][e[+-]digits]: no hexadecimal, inf, nan or spaces, as strtod takes. */
static bool is_decimal(const char *s)
{
    const char *p = s + (*s == '-');
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (*p == '.') {
        size_t frac = strspn(p + 1, "0123456789");
        digits += frac;
        p += 1 + frac;
    }
    if (digits == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        size_t exp = strspn(p, "0123456789");
        if (exp == 0)
            return false;
        p += exp;
    }
    return *p == '\0';
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < TR_ARRAY_LEN(yes); i++) {
        if (strcmp(s, yes[i]) == 0 || strcmp(s, no[i]) == 0) {
            *out = strcmp(s, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------------- */
/* names */

void tr_flag_env_name(const struct tr_flag *fl, const char *prefix, char *out, size_t size)
{
    if (size == 0)
        return;
    out[0] = '\0';
    if (fl->env != NULL) {
        snprintf(out, size, "%s", fl->env);
        return;
    }
    if (prefix == NULL)
        return;
    size_t n = (size_t)snprintf(out, size, "%s", prefix);
    for (const char *p = fl->name; *p && n + 1 < size; p++)
        out[n++] = *p == '-' ? '_' : (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
    if (n < size)
        out[n] = '\0';
}

/* A short, printable copy of a value for messages (it may come from anywhere). */
static void sample(const char *v, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = v; *p && n + 4 < size; p++)
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    if (strlen(v) > n && n + 4 <= size) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static void *slot_of(const struct tr_flag_set *s, const struct tr_flag *fl)
{
    TR_ASSERT(fl->var != NULL || s->base != NULL);
    return fl->var ? fl->var : (char *)s->base + fl->off;
}

/* ---------------------------------------------------------------------- */
/* storing one value */

static void list_clear(struct tr_flag_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        tr_free(l->items[i]);
    l->n = 0;
}

void tr_flag_list_release(struct tr_flag_list *l)
{
    list_clear(l);
    tr_free(l->items);
    l->items = NULL;
    l->cap = 0;
}

/* 0, TR_ENOMEM, or TR_EINVAL with *why set. */
static int list_add(const struct tr_flag *fl, struct tr_flag_list *l, const char *v, size_t len,
                    const char **why)
{
    if (fl->max_items != 0 && l->n >= fl->max_items) {
        /* Single-threaded (see flags.h): the reason may live in a static buffer. */
        static char too_many[64];
        snprintf(too_many, sizeof(too_many), "too many values (at most %zu)", fl->max_items);
        *why = too_many;
        return TR_EINVAL;
    }
    char *c = tr_strndup(v, len);
    if (c == NULL)
        return TR_ENOMEM;
    if (fl->check != NULL && (*why = fl->check(c)) != NULL) {
        tr_free(c);
        return TR_EINVAL;
    }
    if (TR_VEC_PUSH(l->items, l->n, l->cap, c) != 0) {
        tr_free(c);
        return TR_ENOMEM;
    }
    return 0;
}

/*
 * Stores v into fl's slot. A list from the environment or a default is
 * comma-separated; from the command line it is one value. 0, TR_ENOMEM, or
 * TR_EINVAL with *why set.
 */
static int store(const struct tr_flag_set *s, const struct tr_flag *fl, const char *v,
                 enum tr_flag_source from, const char **why)
{
    void *dst = slot_of(s, fl);
    *why = NULL;
    switch (fl->type) {
    case TR_FLAG_STR: {
        if (fl->check != NULL && (*why = fl->check(v)) != NULL)
            return TR_EINVAL;
        char *c = tr_strdup(v);
        if (c == NULL)
            return TR_ENOMEM;
        tr_free(*(char **)dst);
        *(char **)dst = c;
        return 0;
    }
    case TR_FLAG_UINT: {
        long min = fl->min, max = fl->max;
        if (min == 0 && max == 0)
            max = (long)UINT32_MAX;
        long val;
        if (v[0] == '-')
            *why = "not a decimal number";
        else
            *why = long_reason(v, min, max, &val);
        if (*why != NULL)
            return TR_EINVAL;
        *(uint32_t *)dst = (uint32_t)val;
        return 0;
    }
    case TR_FLAG_INT: {
        long min = fl->min, max = fl->max;
        if (min == 0 && max == 0) {
            min = LONG_MIN;
            max = LONG_MAX;
        }
        long val;
        if ((*why = long_reason(v, min, max, &val)) != NULL)
            return TR_EINVAL;
        *(long *)dst = val;
        return 0;
    }
    case TR_FLAG_DOUBLE: {
        if (!is_decimal(v)) {
            *why = "not a decimal number";
            return TR_EINVAL;
        }
        double d = strtod(v, NULL);
        bool bounded = fl->dmin != 0 || fl->dmax != 0;
        if (!isfinite(d) || (bounded && (d < fl->dmin || d > fl->dmax))) {
            *why = "out of range";
            return TR_EINVAL;
        }
        *(double *)dst = d;
        return 0;
    }
    case TR_FLAG_BOOL:
        if (!parse_bool(v, (bool *)dst)) {
            *why = "not one of 1, 0, true, false, yes, no, on, off";
            return TR_EINVAL;
        }
        return 0;
    case TR_FLAG_ENUM: {
        /* Single-threaded (see flags.h): the reason may live in a static buffer. */
        static char names[256];
        size_t n = (size_t)snprintf(names, sizeof(names), "not one of");
        for (int i = 0; fl->choices[i] != NULL; i++) {
            if (strcmp(v, fl->choices[i]) == 0) {
                *(int *)dst = i;
                return 0;
            }
            if (n < sizeof(names))
                n += (size_t)snprintf(names + n, sizeof(names) - n, "%s %s", i ? "," : "",
                                      fl->choices[i]);
        }
        *why = names;
        return TR_EINVAL;
    }
    case TR_FLAG_LIST: {
        struct tr_flag_list *l = dst;
        if (from == TR_FLAG_FROM_ARGV)
            return list_add(fl, l, v, strlen(v), why);
        list_clear(l);
        for (const char *p = v; *p;) {
            size_t len = strcspn(p, ",");
            if (len > 0) {
                int rc = list_add(fl, l, p, len, why);
                if (rc != 0)
                    return rc;
            }
            p += len + (p[len] == ',');
        }
        return 0;
    }
    }
    return TR_EINVAL;
}

/* The bounds of a number flag for a message: " (from 1 to 100000)". */
static void bounds_text(const struct tr_flag *fl, char *out, size_t size)
{
    out[0] = '\0';
    if (fl->type == TR_FLAG_UINT && (fl->min != 0 || fl->max != 0))
        snprintf(out, size, " (from %ld to %ld)", fl->min, fl->max);
    else if (fl->type == TR_FLAG_UINT)
        snprintf(out, size, " (from 0 to %lu)", (unsigned long)UINT32_MAX);
    else if (fl->type == TR_FLAG_INT && (fl->min != 0 || fl->max != 0))
        snprintf(out, size, " (from %ld to %ld)", fl->min, fl->max);
    else if (fl->type == TR_FLAG_DOUBLE && (fl->dmin != 0 || fl->dmax != 0))
        snprintf(out, size, " (from %g to %g)", fl->dmin, fl->dmax);

}

/* Stores, recording the source; on failure the message names the flag and its variable. */
static int apply(const struct tr_flags *f, size_t si, size_t i, const char *v,
                 enum tr_flag_source from, struct tr_error *err)
{
    const struct tr_flag_set *s = &f->sets[si];
    const struct tr_flag *fl = &s->flags[i];
    const char *why;
    int rc = store(s, fl, v, from, &why);
    if (rc == TR_ENOMEM)
        return tr_error_set(err, rc, "out of memory");
    if (rc != 0) {
        char env[ENV_NAME_MAX], val[80], bounds[64];
        tr_flag_env_name(fl, s->env_prefix, env, sizeof(env));
        sample(v, val, sizeof(val));
        bounds_text(fl, bounds, sizeof(bounds));
        if (from == TR_FLAG_FROM_ENV)
            return tr_error_set(err, TR_EINVAL, "bad value '%s' in %s (the variable of --%s): "
                                "%s%s", val, env, fl->name, why, bounds);
        if (from == TR_FLAG_FROM_DEFAULT)
            return tr_error_set(err, TR_EINVAL, "bad default '%s' of --%s: %s%s", val,
                                fl->name, why, bounds);
        if (env[0] != '\0')
            return tr_error_set(err, TR_EINVAL, "bad value '%s' for --%s (or %s): %s%s", val,
                                fl->name, env, why, bounds);
        return tr_error_set(err, TR_EINVAL, "bad value '%s' for --%s: %s%s", val, fl->name,
                            why, bounds);
    }
    if (s->source != NULL)
        s->source[i] = (uint8_t)from;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* the command line */

static bool find_long(const struct tr_flags *f, const char *name, size_t len, size_t *si,
                      size_t *i)
{
    for (size_t a = 0; a < TR_FLAGS_MAX_SETS; a++) {
        for (size_t b = 0; b < f->sets[a].n; b++) {
            const char *n = f->sets[a].flags[b].name;
            if (strlen(n) == len && memcmp(n, name, len) == 0) {
                *si = a;
                *i = b;
                return true;
            }
        }
    }
    return false;
}

static bool find_short(const struct tr_flags *f, char c, size_t *si, size_t *i)
{
    for (size_t a = 0; a < TR_FLAGS_MAX_SETS; a++) {
        for (size_t b = 0; b < f->sets[a].n; b++) {
            if (f->sets[a].flags[b].short_name == c) {
                *si = a;
                *i = b;
                return true;
            }
        }
    }
    return false;
}

/* Levenshtein distance, capped: names are short. */
static size_t distance(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b);
    if (la > 63 || lb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = TR_MIN(best, row[j - 1] + 1);
            best = TR_MIN(best, up + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The known name nearest to an unknown one (a prefix of it counts as near), or NULL. */
static const char *suggest(const struct tr_flags *f, const char *name, size_t len)
{
    const char *best = NULL;
    size_t best_d = len < 4 ? 1 : 2;
    for (size_t a = 0; a < TR_FLAGS_MAX_SETS; a++) {
        for (size_t b = 0; b < f->sets[a].n; b++) {
            const char *n = f->sets[a].flags[b].name;
            size_t d = strncmp(n, name, len) == 0 ? 1 : distance(name, len, n);
            if (d <= best_d && (best == NULL || d < best_d)) {
                best = n;
                best_d = d;
            }
        }
    }
    return best;
}

static int unknown(const struct tr_flags *f, const char *arg, size_t len, struct tr_error *err)
{
    const char *near = arg[1] == '-' ? suggest(f, arg + 2, len - 2) : NULL;
    if (near != NULL)
        return tr_error_set(err, TR_EINVAL, "unknown flag '%.*s'; did you mean --%s? (see %s "
                            "--help)", (int)len, arg, near, f->prog);
    return tr_error_set(err, TR_EINVAL, "unknown flag '%.*s' (see %s --help)", (int)len, arg,
                        f->prog);
}

static int parse_argv(const struct tr_flags *f, int argc, char **argv, char **ops, int *n_ops,
                      struct tr_error *err)
{
    bool cleared[TR_FLAGS_MAX_SETS][64] = {{false}};
    for (int k = 1; k < argc; k++) {
        char *arg = argv[k];
        if (strcmp(arg, "--") == 0) {
            while (++k < argc)
                ops[(*n_ops)++] = argv[k];
            break;
        }
        if (arg[0] != '-' || arg[1] == '\0') {
            if (f->mode & TR_FLAGS_STOP_AT_OPERAND) {
                while (k < argc)
                    ops[(*n_ops)++] = argv[k++];
                break;
            }
            ops[(*n_ops)++] = arg;
            continue;
        }
        size_t si = 0, i = 0;
        const char *value = NULL;
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (!find_long(f, name, len, &si, &i)) {
                if (len == 4 && memcmp(name, "help", 4) == 0)
                    return TR_FLAGS_HELP;
                return unknown(f, arg, (size_t)(2 + len), err);
            }
            if (eq != NULL)
                value = eq + 1;
            else if (f->sets[si].flags[i].type == TR_FLAG_BOOL)
                value = "true";
        } else {
            /* -x, -xVALUE, -x VALUE; flags that take no value may be bundled (-wj). */
            const char *p = arg + 1;
            for (;;) {
                if (!find_short(f, *p, &si, &i)) {
                    if (*p == 'h')
                        return TR_FLAGS_HELP;
                    return tr_error_set(err, TR_EINVAL, "unknown flag '-%c' (see %s --help)",
                                        *p, f->prog);
                }
                if (f->sets[si].flags[i].type != TR_FLAG_BOOL) {
                    value = p[1] ? p + 1 : NULL;
                    break;
                }
                if (p[1] == '\0') {
                    value = "true";
                    break;
                }
                int rc = apply(f, si, i, "true", TR_FLAG_FROM_ARGV, err);
                if (rc != 0)
                    return rc;
                p++;
            }
        }
        const struct tr_flag *fl = &f->sets[si].flags[i];
        if (value == NULL) {
            if (k + 1 >= argc)
                return tr_error_set(err, TR_EINVAL, "flag --%s needs a value (%s)", fl->name,
                                    fl->arg ? fl->arg : "see --help");
            value = argv[++k];
        }
        /* A list from the command line replaces the environment's, once. */
        if (fl->type == TR_FLAG_LIST && i < 64 && !cleared[si][i]) {
            list_clear(slot_of(&f->sets[si], fl));
            cleared[si][i] = true;
        }
        int rc = apply(f, si, i, value, TR_FLAG_FROM_ARGV, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int tr_flags_parse(const struct tr_flags *f, int argc, char **argv, int *n_operands,
                   struct tr_error *err)
{
    for (size_t si = 0; si < TR_FLAGS_MAX_SETS; si++) {
        const struct tr_flag_set *s = &f->sets[si];
        TR_ASSERT(s->n <= 64);
        for (size_t i = 0; i < s->n; i++) {
            if (s->source != NULL)
                s->source[i] = TR_FLAG_FROM_DEFAULT;
            if (s->flags[i].dflt == NULL)
                continue;
            int rc = apply(f, si, i, s->flags[i].dflt, TR_FLAG_FROM_DEFAULT, err);
            if (rc != 0)
                return rc;
        }
    }
    for (size_t si = 0; si < TR_FLAGS_MAX_SETS; si++) {
        const struct tr_flag_set *s = &f->sets[si];
        for (size_t i = 0; i < s->n; i++) {
            char env[ENV_NAME_MAX];
            tr_flag_env_name(&s->flags[i], s->env_prefix, env, sizeof(env));
            const char *v = env[0] ? getenv(env) : NULL;
            if (v == NULL || v[0] == '\0')
                continue;
            int rc = apply(f, si, i, v, TR_FLAG_FROM_ENV, err);
            if (rc != 0)
                return rc;
        }
    }
    char **ops = tr_calloc((size_t)(argc > 0 ? argc : 1), sizeof(*ops));
    if (ops == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int n_ops = 0;
    int rc = parse_argv(f, argc, argv, ops, &n_ops, err);
    if (rc == 0 && n_ops > 0 && n_operands == NULL) {
        char val[80];
        sample(ops[0], val, sizeof(val));
        rc = tr_error_set(err, TR_EINVAL, "unexpected argument '%s' (see %s --help)", val,
                          f->prog);
    }
    if (rc == 0) {
        for (int k = 0; k < n_ops; k++)
            argv[1 + k] = ops[k];
        if (n_operands != NULL)
            *n_operands = n_ops;
    }
    tr_free(ops);
    return rc;
}

void tr_flag_set_release(const struct tr_flag_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct tr_flag *fl = &s->flags[i];
        if (fl->type == TR_FLAG_STR) {
            char **p = slot_of(s, fl);
            tr_free(*p);
            *p = NULL;
        } else if (fl->type == TR_FLAG_LIST) {
            tr_flag_list_release(slot_of(s, fl));
        }
    }
}

void tr_flags_release(const struct tr_flags *f)
{
    for (size_t si = 0; si < TR_FLAGS_MAX_SETS; si++)
        tr_flag_set_release(&f->sets[si]);
}

/* ---------------------------------------------------------------------- */
/* help */

void tr_flags_help_set(const struct tr_flag_set *s, FILE *out)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct tr_flag *fl = &s->flags[i];
        char left[128];
        int n;
        if (fl->short_name)
            n = snprintf(left, sizeof(left), "  -%c, --%s", fl->short_name, fl->name);
        else
            n = snprintf(left, sizeof(left), "      --%s", fl->name);
        if (fl->type != TR_FLAG_BOOL && n > 0 && (size_t)n < sizeof(left)) {
            if (fl->arg != NULL) {
                snprintf(left + n, sizeof(left) - (size_t)n, " %s", fl->arg);
            } else if (fl->type == TR_FLAG_ENUM) {
                for (int c = 0; fl->choices[c] != NULL && (size_t)n < sizeof(left); c++)
                    n += snprintf(left + n, sizeof(left) - (size_t)n, "%c%s", c ? '|' : ' ',
                                  fl->choices[c]);
            } else {
                snprintf(left + n, sizeof(left) - (size_t)n, " VALUE");
            }
        }
        char env[ENV_NAME_MAX];
        tr_flag_env_name(fl, s->env_prefix, env, sizeof(env));
        fprintf(out, "%-*s %s", HELP_COLUMN - 1, left, fl->help ? fl->help : "");
        bool dflt = fl->dflt != NULL && fl->dflt[0] != '\0';
        if (fl->type == TR_FLAG_LIST)
            fprintf(out, " [repeatable%s%s%s]", env[0] ? "; " : "", env,
                    env[0] ? ", comma-separated" : "");
        else if (env[0] != '\0')
            fprintf(out, " [%s%s%s]", env, dflt ? "=" : "", dflt ? fl->dflt : "");
        else if (dflt)
            fprintf(out, " [default %s]", fl->dflt);
        fputc('\n', out);
    }
}

void tr_flags_help(const struct tr_flags *f, FILE *out)
{
    for (size_t si = 0; si < TR_FLAGS_MAX_SETS; si++)
        tr_flags_help_set(&f->sets[si], out);
    fprintf(out, "%-*s %s\n", HELP_COLUMN - 1, "  -h, --help", "print this help");
}

/* ---------------------------------------------------------------------- */
/* the default id */

char *tr_default_id(const char *prefix)
{
    char host[256];
    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    char pid[32];
    snprintf(pid, sizeof(pid), "-%ld", (long)getpid());
    size_t fixed = strlen(prefix) + strlen(pid);
    if (fixed >= TR_ID_MAX)
        return NULL;
    char id[TR_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s%.*s%s", prefix, (int)(TR_ID_MAX - fixed), host, pid);
    return tr_strdup(id);
}
