/*
 * task_log.c - the ctx.log lines of running tasks.
 *
 * Each task keeps its unsent lines in a ring of TR_EXEC_LOG_LINES; when it
 * is full the oldest line goes and is counted, and the count travels as a
 * note line with the next lines sent. Lines leave in LOG messages (at most
 * TR_PROTO_MAX_LOGS each) on every heartbeat tick, and the last ones with
 * the task's RESULT. The ring is allocated at a task's first line and kept
 * while the task struct is pooled; the lines themselves are copies freed
 * once sent.
 *
 * Loop thread only.
 */
#include "lib/base/alloc.h"
#include "worker/exec_int.h"
#include "worker/lua_worker.h"
#include "worker/secrets.h"

void task_logs_clear(struct tr_task *t)
{
    for (uint32_t i = 0; i < t->log_n; i++)
        tr_free(t->logs[(t->log_head + i) % TR_EXEC_LOG_LINES].p);
    t->log_head = 0;
    t->log_n = 0;
    t->log_dropped = 0;
}

static void task_log_line(struct tr_task *t, const char *line, size_t len);

/* A line holding a secret's value leaves with the value replaced (secrets.h). */
void tr_task_log(struct tr_task *t, const char *line, size_t len)
{
    if (!tr_secrets_any()) {
        task_log_line(t, line, len);
        return;
    }
    struct tr_buf b;
    tr_buf_init(&b, 0);
    int rc = tr_secrets_redact(line, len, &b);
    if (rc == 0)
        task_log_line(t, line, len);
    else if (rc > 0)
        task_log_line(t, b.buf, b.len);
    else
        t->log_dropped++; /* never the line in clear */
    tr_buf_release(&b);
}

static void task_log_line(struct tr_task *t, const char *line, size_t len)
{
    if (len > TR_TASK_LOG_LINE_MAX)
        len = TR_TASK_LOG_LINE_MAX;
    if (t->logs == NULL) {
        t->logs = tr_calloc(TR_EXEC_LOG_LINES, sizeof(*t->logs));
        if (t->logs == NULL) {
            t->log_dropped++;
            return;
        }
    }
    char *copy = tr_memdup(line, len ? len : 1);
    if (copy == NULL) {
        t->log_dropped++;
        return;
    }
    if (t->log_n == TR_EXEC_LOG_LINES) {
        /* Full: the oldest unsent line goes. */
        tr_free(t->logs[t->log_head].p);
        t->log_head = (t->log_head + 1) % TR_EXEC_LOG_LINES;
        t->log_n--;
        t->log_dropped++;
    }
    t->logs[(t->log_head + t->log_n) % TR_EXEC_LOG_LINES] = (struct log_line){copy,
                                                                               (uint32_t)len};
    t->log_n++;
}

uint32_t task_logs_take(struct tr_task *t, struct tr_str *views, char *note, size_t note_size,
                        uint32_t *taken)
{
    uint32_t n = 0;
    if (t->log_dropped > 0) {
        int w = snprintf(note, note_size,
                         "[trellis] %llu log lines dropped (a task keeps at most %d unsent lines)",
                         (unsigned long long)t->log_dropped, TR_EXEC_LOG_LINES);
        views[n++] = (struct tr_str){note, TR_MIN((size_t)TR_MAX(w, 0), note_size - 1)};
    }
    uint32_t k = 0;
    while (n < TR_PROTO_MAX_LOGS && k < t->log_n) {
        struct log_line *l = &t->logs[(t->log_head + k) % TR_EXEC_LOG_LINES];
        views[n++] = (struct tr_str){l->p, l->len};
        k++;
    }
    *taken = k;
    return n;
}

void task_logs_consume(struct tr_task *t, uint32_t taken)
{
    for (uint32_t i = 0; i < taken; i++) {
        tr_free(t->logs[t->log_head].p);
        t->log_head = (t->log_head + 1) % TR_EXEC_LOG_LINES;
    }
    t->log_n -= taken;
    t->log_dropped = 0;
}

void task_logs_flush(struct tr_executor *e, struct tr_task *t, uint32_t keep)
{
    while (t->log_n > keep || (keep == 0 && t->log_dropped > 0)) {
        struct tr_msg m = {.type = TR_MSG_LOG};
        char note[128];
        uint32_t taken;
        m.u.log.id = t->id;
        m.u.log.n_logs = task_logs_take(t, m.u.log.logs, note, sizeof(note), &taken);
        exec_send(e, &m);
        task_logs_consume(t, taken);
    }
}

