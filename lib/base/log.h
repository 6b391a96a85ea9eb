/*
 * log.h - levelled logs on stderr.
 *
 * One line per event, git style: lowercase, no final full stop, the failure
 * first, the subject quoted, and the run, task or worker id on the line.
 * Secrets are never passed to these functions. Lines carry a UTC timestamp
 * and the process tag set with tr_log_init. Thread-safe (one fprintf each).
 */
#ifndef TR_LOG_H
#define TR_LOG_H

#include "lib/base/base.h"

enum tr_log_level
{
    TR_LOG_DEBUG = 0,
    TR_LOG_INFO = 1,
    TR_LOG_WARN = 2,
    TR_LOG_ERROR = 3
};

/* Sets the process tag ("scheduler", "worker") and the minimum level. */
void tr_log_init(const char *tag, enum tr_log_level min);

/*
 * JSON lines instead of text (--log-format json): one object per line with
 * "time", "level", "process", "msg", the process-wide fields below, and each
 * key=value pair of the message as a field of its own ("run", "task",
 * "worker", ...). With trace_fn set, a line naming a run also carries its
 * "trace_id" (the OTLP trace of the run). Call before threads exist.
 */
void tr_log_set_json(bool on);
void tr_log_set_field(const char *key, const char *value); /* at most 4; copied pointers */
void tr_log_set_trace_fn(void (*trace_fn)(const char *run_id, char out[33]));

/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int tr_log_level_parse(const char *s);

void tr_log(enum tr_log_level level, const char *fmt, ...) TR_PRINTF(2, 3);

#define tr_debug(...) tr_log(TR_LOG_DEBUG, __VA_ARGS__)
#define tr_info(...) tr_log(TR_LOG_INFO, __VA_ARGS__)
#define tr_warn(...) tr_log(TR_LOG_WARN, __VA_ARGS__)
#define tr_err(...) tr_log(TR_LOG_ERROR, __VA_ARGS__)

/*
 * For input errors that a peer may repeat at line rate: logs at most a few
 * lines per second per `limiter` (a caller-owned counter pair), and counts the
 * rest. The sample is escaped (non-printable bytes as \xNN) and truncated.
 */
struct tr_log_limiter
{
    uint64_t window_start_ns; /* start of the current one-second window */
    uint32_t in_window;       /* lines logged in that window */
    uint64_t suppressed;      /* lines not logged since the last one that was */
};

void tr_log_limited(struct tr_log_limiter *lim, const char *what, const void *sample,
                    size_t sample_len);

/* Escapes up to max bytes of p into out (always NUL-terminated). */
void tr_log_escape(char *out, size_t out_size, const void *p, size_t len);

#endif
