/*
 * log.c - stderr logging with a process tag and rate-limited protocol errors.
 *
 * The tag and level are set once at start-up by main() before threads exist,
 * and only read afterwards.
 */
#include "lib/base/log.h"

#include <ctype.h>
#include <sys/time.h>

static const char *log_tag = "trellis";
static enum tr_log_level log_min = TR_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static bool log_json;
static struct
{
    const char *key;
    const char *value;
} fields[4];
static size_t n_fields;
static void (*trace_fn)(const char *run_id, char out[33]);

void tr_log_init(const char *tag, enum tr_log_level min)
{
    log_tag = tag;
    log_min = min;
}

int tr_log_level_parse(const char *s)
{
    for (size_t i = 0; i < TR_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    }
    return -1;
}

void tr_log_set_json(bool on)
{
    log_json = on;
}

void tr_log_set_field(const char *key, const char *value)
{
    if (n_fields < TR_ARRAY_LEN(fields)) {
        fields[n_fields].key = key;
        fields[n_fields].value = value;
        n_fields++;
    }
}

void tr_log_set_trace_fn(void (*fn)(const char *run_id, char out[33]))
{
    trace_fn = fn;
}

/* Appends s (n bytes) as a JSON string; returns the new length (bounded by cap). */
static size_t json_str(char *out, size_t o, size_t cap, const char *s, size_t n)
{
    if (o + 2 >= cap)
        return o;
    out[o++] = '"';
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else if (c >= 0x80) {
            /* Valid UTF-8 is copied; any other byte becomes U+FFFD (JSON is UTF-8). */
            size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                       : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            bool ok = len > 0 && i + len <= n && o + len + 8 < cap;
            for (size_t k = 1; ok && k < len; k++)
                ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
            if (ok) {
                memcpy(out + o, s + i, len);
                o += len;
                i += len - 1;
            } else {
                o += (size_t)snprintf(out + o, cap - o, "\\ufffd");
            }
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

static size_t json_field(char *out, size_t o, size_t cap, const char *k, size_t kl,
                         const char *v, size_t vl)
{
    /* Room for the whole key and the quotes of a (maybe cut) value, or no field at all:
     * the line stays one valid object however long it gets. */
    if (o + kl + 16 >= cap)
        return o;
    out[o++] = ',';
    o = json_str(out, o, cap, k, kl);
    out[o++] = ':';
    return json_str(out, o, cap, v, vl);
}

/* The key=value words of msg as fields ("run", "task", "worker", ...). */
static size_t json_pairs(char *out, size_t o, size_t cap, const char *msg, const char **run,
                         size_t *run_len)
{
    static const char *const reserved[] = {"time", "level", "process", "msg", "trace_id"};
    const char *p = msg;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        const char *w = p;
        while (*p != '\0' && *p != ' ')
            p++;
        const char *eq = memchr(w, '=', (size_t)(p - w));
        if (eq == NULL || eq == w)
            continue;
        size_t kl = (size_t)(eq - w);
        bool ok = kl <= 32;
        for (size_t i = 0; ok && i < kl; i++)
            ok = islower((unsigned char)w[i]) || w[i] == '_';
        for (size_t i = 0; ok && i < TR_ARRAY_LEN(reserved); i++)
            ok = !(strlen(reserved[i]) == kl && memcmp(reserved[i], w, kl) == 0);
        for (size_t i = 0; ok && i < n_fields; i++) /* the process's own, set once */
            ok = !(strlen(fields[i].key) == kl && memcmp(fields[i].key, w, kl) == 0);
        if (!ok)
            continue;
        const char *v = eq + 1;
        size_t vl = (size_t)(p - v);
        while (vl > 0 && (v[vl - 1] == ':' || v[vl - 1] == ',' || v[vl - 1] == ';'))
            vl--; /* "run=r-1:" ends a clause */
        if (vl >= 2 && (v[0] == '\'' || v[0] == '"') && v[vl - 1] == v[0]) {
            v++;
            vl -= 2;
        }
        if (kl == 3 && memcmp(w, "run", 3) == 0) {
            *run = v;
            *run_len = vl;
        }
        o = json_field(out, o, cap, w, kl, v, vl);
    }
    return o;
}

static void log_json_line(struct timeval *tv, struct tm *tm, enum tr_log_level level,
                          const char *msg)
{
    char out[6144];
    size_t cap = sizeof(out) - 3; /* room for "}\n" */
    int n = snprintf(out, sizeof(out),
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\"",
                     tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min,
                     tm->tm_sec, (long)(tv->tv_usec / 1000), level_names[level]);
    size_t o = n > 0 ? (size_t)n : 0;
    o = json_field(out, o, cap, "process", 7, log_tag, strlen(log_tag));
    o = json_field(out, o, cap, "msg", 3, msg, strlen(msg));
    for (size_t i = 0; i < n_fields; i++)
        o = json_field(out, o, cap, fields[i].key, strlen(fields[i].key), fields[i].value,
                       strlen(fields[i].value));
    const char *run = NULL;
    size_t run_len = 0;
    o = json_pairs(out, o, cap, msg, &run, &run_len);
    if (run != NULL && trace_fn != NULL && run_len < 64) {
        char id[64], trace[33];
        memcpy(id, run, run_len);
        id[run_len] = '\0';
        trace_fn(id, trace);
        o = json_field(out, o, cap, "trace_id", 8, trace, strlen(trace));
    }
    out[o++] = '}';
    out[o++] = '\n';
    out[o] = '\0';
    fputs(out, stderr);
}

void tr_log(enum tr_log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[2048];
    if (log_json) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        log_json_line(&tv, &tm, level, line);
        return;
    }
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), log_tag, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

void tr_log_escape(char *out, size_t out_size, const void *p, size_t len)
{
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < out_size; i++) {
        if (isprint(s[i]) && s[i] != '\\') {
            out[o++] = (char)s[i];
        } else {
            snprintf(out + o, out_size - o, "\\x%02x", s[i]);
            o += 4;
        }
    }
    if (out_size)
        out[TR_MIN(o, out_size - 1)] = '\0';
}

void tr_log_limited(struct tr_log_limiter *lim, const char *what, const void *sample,
                    size_t sample_len)
{
    uint64_t now = tr_mono_ns();
    if (now - lim->window_start_ns > 1000000000ull) {
        lim->window_start_ns = now;
        lim->in_window = 0;
    }
    if (lim->in_window >= 5) {
        lim->suppressed++;
        return;
    }
    lim->in_window++;
    char esc[200];
    tr_log_escape(esc, sizeof(esc), sample, TR_MIN(sample_len, (size_t)48));
    if (lim->suppressed)
        tr_warn("%s (sample '%s', %zu bytes; %llu similar lines suppressed)", what, esc,
                sample_len, (unsigned long long)lim->suppressed);
    else
        tr_warn("%s (sample '%s', %zu bytes)", what, esc, sample_len);
    lim->suppressed = 0;
}
