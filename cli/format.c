/*
 * format.c - how the CLI shows things: aligned tables, durations, ages,
 * task counts and JSON.
 *
 * Times from the API are RFC 3339 in UTC; they are shown as durations and
 * ages ("2m03s", "12s ago") the way kubectl and docker do, because absolute
 * UTC stamps are hard to read at a glance. `status` still shows the stamps.
 */
#include "cli/cli.h"
#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/vec.h"

/* ====================================================================== */
/* {=== JSON and times */

int tr_cli_print_json(FILE *f, const json_t *j)
{
    int flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
    if (json_dumpf(j, f, flags) != 0 || fputc('\n', f) == EOF)
        return TR_EIO;
    return 0;
}

bool tr_cli_parse_time(const char *s, double *out)
{
    if (s == NULL)
        return false;
    int y, mo, d, h, mi, sec, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 ||
        used == 0)
        return false;
    double frac = 0;
    const char *p = s + used;
    if (*p == '.') {
        double scale = 0.1;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p != 'Z' && *p != 'z')
        return false;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (double)t + frac;
    return true;
}

void tr_cli_fmt_duration(double secs, char *out, size_t n)
{
    if (secs < 0)
        secs = 0;
    if (secs < 1) {
        snprintf(out, n, "%dms", (int)(secs * 1000 + 0.5));
    } else if (secs < 60) {
        snprintf(out, n, "%.1fs", secs);
    } else if (secs < 3600) {
        long s = (long)secs;
        snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    } else if (secs < 86400) {
        long s = (long)secs;
        snprintf(out, n, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    } else {
        long s = (long)secs;
        snprintf(out, n, "%ldd%02ldh", s / 86400, (s % 86400) / 3600);
    }
}

void tr_cli_fmt_between(const json_t *from, const json_t *to, char *out, size_t n)
{
    double a, b;
    if (!tr_cli_parse_time(json_string_value(from), &a) ||
        !tr_cli_parse_time(json_string_value(to), &b)) {
        snprintf(out, n, "-");
        return;
    }
    tr_cli_fmt_duration(b - a, out, n);
}

void tr_cli_fmt_age(const json_t *when, char *out, size_t n)
{
    double t;
    if (!tr_cli_parse_time(json_string_value(when), &t)) {
        snprintf(out, n, "-");
        return;
    }
    double age = tr_now() - t;
    long s = age > 0 ? (long)age : 0;
    if (s < 60)
        snprintf(out, n, "%lds ago", s);
    else if (s < 3600)
        snprintf(out, n, "%ldm ago", s / 60);
    else if (s < 86400)
        snprintf(out, n, "%ldh ago", s / 3600);
    else
        snprintf(out, n, "%ldd ago", s / 86400);
}

void tr_cli_task_counts(const json_t *tasks, long long *done, long long *total)
{
    static const char *const finished[] = {"succeeded", "failed", "skipped", "cancelled"};
    *done = 0;
    for (size_t i = 0; i < TR_ARRAY_LEN(finished); i++)
        *done += json_integer_value(json_object_get(tasks, finished[i]));
    *total = json_integer_value(json_object_get(tasks, "total"));
}

/* ====================================================================== */
/* {=== tables */

struct tr_table
{
    size_t ncols;   /* cells per row */
    size_t nrows;   /* rows, the header row included */
    size_t cap;     /* cells allocated */
    char **cells;   /* nrows * ncols owned strings, row-major */
};

struct tr_table *tr_table_new(size_t ncols, const char *const *headers)
{
    struct tr_table *t = tr_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->ncols = ncols;
    if (tr_table_add(t, headers) < 0) {
        tr_table_free(t);
        return NULL;
    }
    return t;
}

void tr_table_free(struct tr_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        tr_free(t->cells[i]);
    tr_free(t->cells);
    tr_free(t);
}

int tr_table_add(struct tr_table *t, const char *const *cells)
{
    if (TR_VEC_RESERVE(t->cells, t->cap, (t->nrows + 1) * t->ncols) != 0)
        return TR_ENOMEM;
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = tr_strdup(cells[i] != NULL ? cells[i] : "-");
        if (row[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                tr_free(row[j]);
            return TR_ENOMEM;
        }
    }
    t->nrows++;
    return 0;
}

size_t tr_table_rows(const struct tr_table *t)
{
    return t->nrows - 1;
}

/* Display width of a UTF-8 string: code points, not bytes. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

void tr_table_print(const struct tr_table *t, FILE *f)
{
    size_t widths[16] = {0};
    size_t ncols = TR_MIN(t->ncols, TR_ARRAY_LEN(widths));
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < ncols; c++)
            widths[c] = TR_MAX(widths[c], width(t->cells[r * t->ncols + c]));
    }
    struct tr_buf line;
    tr_buf_init(&line, 0);
    for (size_t r = 0; r < t->nrows; r++) {
        tr_buf_reset(&line);
        bool ok = true;
        for (size_t c = 0; c < ncols && ok; c++) {
            const char *s = t->cells[r * t->ncols + c];
            ok = tr_buf_addstr(&line, s) == 0;
            for (size_t pad = width(s); ok && c + 1 < ncols && pad < widths[c] + 2; pad++)
                ok = tr_buf_addch(&line, ' ') == 0;
        }
        /* Empty trailing cells leave no trailing blanks. */
        while (line.len > 0 && line.buf[line.len - 1] == ' ')
            line.buf[--line.len] = '\0';
        fprintf(f, "%s\n", ok ? line.buf : "(out of memory)");
    }
    tr_buf_release(&line);
}
