/*
 * sse.c - incremental server-sent events parser (see sse.h).
 *
 * Work is per line: bytes accumulate in s->line until a CR, LF or CRLF, then
 * the line is interpreted. A CR at the end of one feed and a LF at the start
 * of the next are one line end, which the skip_lf flag remembers.
 */
#include "worker/sse.h"

#include <string.h>

void tr_sse_init(struct tr_sse *s, size_t max, tr_sse_event_fn fn, void *arg)
{
    tr_buf_init(&s->line, max);
    tr_buf_init(&s->event, max);
    tr_buf_init(&s->data, max);
    s->has_data = false;
    s->skip_lf = false;
    s->fn = fn;
    s->arg = arg;
}

void tr_sse_release(struct tr_sse *s)
{
    if (s == NULL)
        return;
    tr_buf_release(&s->line);
    tr_buf_release(&s->event);
    tr_buf_release(&s->data);
}

static int dispatch(struct tr_sse *s)
{
    int rc = 0;
    if (s->has_data) {
        struct tr_str ev = s->event.len ? (struct tr_str){s->event.buf, s->event.len}
                                        : TR_STR("message");
        rc = s->fn(s->arg, ev, (struct tr_str){s->data.buf, s->data.len});
    }
    tr_buf_reset(&s->event);
    tr_buf_reset(&s->data);
    s->has_data = false;
    return rc;
}

/* Interprets one complete line (without its end). */
static int take_line(struct tr_sse *s, const char *p, size_t n)
{
    if (n == 0)
        return dispatch(s);
    if (p[0] == ':')
        return 0;
    const char *colon = memchr(p, ':', n);
    size_t fl = colon ? (size_t)(colon - p) : n;
    const char *v = colon ? colon + 1 : p + n;
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl > 0 && v[0] == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && memcmp(p, "data", 4) == 0) {
        int rc = 0;
        if (s->has_data)
            rc = tr_buf_addch(&s->data, '\n');
        if (rc == 0)
            rc = tr_buf_add(&s->data, v, vl);
        s->has_data = true;
        return rc;
    }
    if (fl == 5 && memcmp(p, "event", 5) == 0) {
        tr_buf_reset(&s->event);
        return tr_buf_add(&s->event, v, vl);
    }
    return 0;
}

int tr_sse_feed(struct tr_sse *s, const char *p, size_t n)
{
    size_t i = 0;
    if (n > 0 && s->skip_lf) {
        if (p[0] == '\n')
            i = 1;
        s->skip_lf = false;
    }
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r')
            j++;
        if (j == n) {
            return tr_buf_add(&s->line, p + i, n - i);
        }
        int rc;
        if (s->line.len > 0) {
            rc = tr_buf_add(&s->line, p + i, j - i);
            if (rc == 0)
                rc = take_line(s, s->line.buf, s->line.len);
            tr_buf_reset(&s->line);
        } else {
            rc = take_line(s, p + i, j - i);
        }
        if (rc < 0)
            return rc;
        if (p[j] == '\r') {
            if (j + 1 < n) {
                if (p[j + 1] == '\n')
                    j++;
            } else {
                s->skip_lf = true;
            }
        }
        i = j + 1;
    }
    return 0;
}
