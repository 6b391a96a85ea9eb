/*
 * task_delta.c - the tokens of streamed LLM calls, on their way to the
 * scheduler (executor.h, tr_task_llm_delta).
 *
 * A task gathers the tokens its calls receive; one timer per executor sends
 * each running task's gathered tokens as one LLM_DELTA every
 * TR_TASK_DELTA_MS, so a thousand streams cost at most forty messages a
 * second each whatever rate the providers send at, and RESULT sends the
 * rest first. A task holds at most TR_PROTO_DELTA_MAX unsent bytes: beyond
 * that tokens are dropped (the scheduler only relays them to watchers; the
 * call's answer is whole in the task) and the next message says how many.
 *
 * Loop thread only.
 */
#include <stdio.h>

#include "worker/exec_int.h"

void tr_task_llm_delta(struct tr_task *t, const char *text, size_t len)
{
    if (len == 0)
        return;
    if (t->delta.len + len > TR_PROTO_DELTA_MAX - 128 || tr_buf_add(&t->delta, text, len) < 0)
        t->delta_dropped += len;
    struct tr_executor *e = t->exec;
    if (!uv_is_active((uv_handle_t *)&e->delta_timer))
        uv_timer_start(&e->delta_timer, task_delta_on_timer, TR_TASK_DELTA_MS, 0);
}

void task_delta_flush(struct tr_executor *e, struct tr_task *t)
{
    if (t->delta.len == 0 && t->delta_dropped == 0)
        return;
    if (t->delta_dropped > 0) {
        /* Room was kept for the note (TR_PROTO_DELTA_MAX - 128 above). */
        char note[96];
        int n = snprintf(note, sizeof(note), " [trellis: %llu bytes of tokens dropped]",
                         (unsigned long long)t->delta_dropped);
        if (n > 0 && tr_buf_add(&t->delta, note, (size_t)n) < 0)
            tr_debug("cannot note dropped tokens");
    }
    struct tr_msg m = {.type = TR_MSG_LLM_DELTA};
    m.u.llm_delta.id = t->id;
    m.u.llm_delta.text = (struct tr_str){t->delta.buf, t->delta.len};
    exec_send(e, &m);
    tr_buf_reset(&t->delta);
    t->delta_dropped = 0;
}

void task_delta_on_timer(uv_timer_t *h)
{
    struct tr_executor *e = h->data;
    for (struct tr_task *t = e->running.head; t != NULL; t = t->next)
        task_delta_flush(e, t);
}
