/*
 * timers.c - delayed actions on instances (timers.h): retries becoming ready
 * after their backoff, and dispatch deadlines (a task's timeout plus a grace
 * period, after which the scheduler stops waiting for a worker that may be
 * wedged).
 *
 * One min-heap by monotonic time and one uv timer armed at its earliest
 * entry. Entries are not removed when what they wait for changes: each one
 * checks on firing that its instance is still in the state it was set for.
 */
#include "scheduler/timers.h"

#include <math.h>

#include "lib/base/vec.h"

static void on_timer(uv_timer_t *h);

void timers_init(struct timers *t, uv_loop_t *loop, timers_fire_fn fire, void *arg)
{
    memset(t, 0, sizeof(*t));
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    t->fire = fire;
    t->arg = arg;
}

void timers_release(struct timers *t)
{
    tr_free(t->heap);
    t->heap = NULL;
    t->n = t->cap = 0;
    uv_close((uv_handle_t *)&t->timer, NULL);
}

static void timers_swap(struct timers *s, size_t a, size_t b)
{
    struct timer_entry t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
}

static void timers_arm(struct timers *s)
{
    if (s->n == 0) {
        uv_timer_stop(&s->timer);
        return;
    }
    double delay = s->heap[0].when - mono_s();
    uint64_t ms = delay <= 0 ? 0 : (uint64_t)ceil(delay * 1000);
    uv_timer_start(&s->timer, on_timer, ms, 0);
}

void timers_push(struct timers *s, double when, struct inst *in, uint64_t dispatch_id)
{
    struct timer_entry e = {when, in, dispatch_id};
    if (TR_VEC_PUSH(s->heap, s->n, s->cap, e) < 0)
        oom_fatal("scheduling a timer");
    size_t i = s->n - 1;
    while (i > 0 && s->heap[(i - 1) / 2].when > s->heap[i].when) {
        timers_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    if (i == 0)
        timers_arm(s);
}

static struct timer_entry timers_pop(struct timers *s)
{
    struct timer_entry top = s->heap[0];
    s->heap[0] = s->heap[--s->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->n && s->heap[l].when < s->heap[m].when)
            m = l;
        if (r < s->n && s->heap[r].when < s->heap[m].when)
            m = r;
        if (m == i)
            break;
        timers_swap(s, i, m);
        i = m;
    }
    return top;
}

void timers_run(struct timers *s, double now)
{
    while (s->n > 0 && s->heap[0].when <= now) {
        struct timer_entry e = timers_pop(s);
        s->fire(s->arg, e.inst, e.dispatch_id);
    }
    timers_arm(s);
}

static void on_timer(uv_timer_t *h)
{
    timers_run(h->data, mono_s());
}

void timers_forget_run(struct timers *s, const struct run *r)
{
    size_t n = s->n;
    s->n = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->heap[i].inst->run != r) {
            struct timer_entry e = s->heap[i];
            s->n++;
            s->heap[s->n - 1] = e;
        }
    }
    /* Re-heapify. */
    for (size_t i = s->n / 2; i-- > 0;) {
        size_t j = i;
        for (;;) {
            size_t l = 2 * j + 1, rr = l + 1, m = j;
            if (l < s->n && s->heap[l].when < s->heap[m].when)
                m = l;
            if (rr < s->n && s->heap[rr].when < s->heap[m].when)
                m = rr;
            if (m == j)
                break;
            timers_swap(s, j, m);
            j = m;
        }
    }
    timers_arm(s);
}

