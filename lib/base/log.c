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

void tr_log(enum tr_log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[2048];
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
