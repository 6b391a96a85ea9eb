/*
 * timers.c - delayed actions: retries becoming ready after their backoff,
 * and dispatch deadlines (a task's timeout plus a grace period, after which
 * the scheduler stops waiting for a worker that may be wedged).
 *
 * One min-heap by monotonic time and one uv timer armed at its earliest
 * entry. Entries are not removed when what they wait for changes: each one
 * checks on firing that its instance is still in the state it was set for.
 */
#include "scheduler/sched.h"

#include <math.h>

/* ====================================================================== */
/* Timers: retries and dispatch deadlines                                  */
/* ====================================================================== */

static void timers_swap(struct sched *s, size_t a, size_t b)
{
    struct timer_entry t = s->timers[a];
    s->timers[a] = s->timers[b];
    s->timers[b] = t;
}

static void timers_arm(struct sched *s)
{
    if (s->n_timers == 0) {
        uv_timer_stop(&s->timer);
        return;
    }
    double delay = s->timers[0].when - mono_s(s);
    uint64_t ms = delay <= 0 ? 0 : (uint64_t)ceil(delay * 1000);
    uv_timer_start(&s->timer, on_timer, ms, 0);
}

void timers_push(struct sched *s, double when, struct inst *in, uint64_t dispatch_id)
{
    struct timer_entry e = {when, in, dispatch_id};
    if (TR_VEC_PUSH(s->timers, s->n_timers, s->cap_timers, e) < 0)
        oom_fatal("scheduling a timer");
    size_t i = s->n_timers - 1;
    while (i > 0 && s->timers[(i - 1) / 2].when > s->timers[i].when) {
        timers_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    if (i == 0)
        timers_arm(s);
}

static struct timer_entry timers_pop(struct sched *s)
{
    struct timer_entry top = s->timers[0];
    s->timers[0] = s->timers[--s->n_timers];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->n_timers && s->timers[l].when < s->timers[m].when)
            m = l;
        if (r < s->n_timers && s->timers[r].when < s->timers[m].when)
            m = r;
        if (m == i)
            break;
        timers_swap(s, i, m);
        i = m;
    }
    return top;
}

static void timer_fire(struct sched *s, struct timer_entry e)
{
    struct inst *in = e.inst;
    if (e.dispatch_id == 0) {
        if (in->state == TR_TASK_RETRY_WAIT && !run_is_final(in->run)) {
            inst_set_state(in, TR_TASK_PENDING);
            inst_make_ready(in);
        }
        return;
    }
    if (in->dispatch_id != e.dispatch_id ||
        (in->state != TR_TASK_DISPATCHED && in->state != TR_TASK_RUNNING))
        return;
    /* The worker did not report within timeout plus grace: it may be wedged.
     * Tell it to stop, and treat the attempt as timed out. */
    const struct tr_task_def *td = &in->run->pipe->def->tasks[in->task];
    struct tr_msg cancel = {.type = TR_MSG_CANCEL};
    cancel.u.cancel.id = in->dispatch_id;
    cancel.u.cancel.reason = tr_str_c("timeout");
    if (in->worker && sched_queue_msg(s, in->worker, &cancel) < 0)
        tr_warn("cannot queue cancel for task '%s': out of memory", td->name);
    char msg[200];
    snprintf(msg, sizeof(msg), "task '%s' timed out after %g s (no answer from worker)",
             td->name, td->timeout);
    inst_end_dispatch(in);
    inst_attempt_failed(in, tr_str_c(msg), true);
}

void on_timer(uv_timer_t *h)
{
    struct sched *s = h->data;
    double now = mono_s(s);
    while (s->n_timers > 0 && s->timers[0].when <= now)
        timer_fire(s, timers_pop(s));
    timers_arm(s);
}

/* Removes the timer entries of a run about to be freed. */
void timers_forget_run(struct sched *s, struct run *r)
{
    size_t n = s->n_timers;
    s->n_timers = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->timers[i].inst->run != r) {
            struct timer_entry e = s->timers[i];
            s->n_timers++;
            s->timers[s->n_timers - 1] = e;
        }
    }
    /* Re-heapify. */
    for (size_t i = s->n_timers / 2; i-- > 0;) {
        size_t j = i;
        for (;;) {
            size_t l = 2 * j + 1, rr = l + 1, m = j;
            if (l < s->n_timers && s->timers[l].when < s->timers[m].when)
                m = l;
            if (rr < s->n_timers && s->timers[rr].when < s->timers[m].when)
                m = rr;
            if (m == j)
                break;
            timers_swap(s, j, m);
            j = m;
        }
    }
    timers_arm(s);
}

