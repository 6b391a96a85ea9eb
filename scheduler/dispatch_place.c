/*
 * dispatch_place.c - placement by labels and concurrency keys, part
 * "dispatch" (docs/pipelines.md "Placement and run controls").
 *
 * Tasks without labels or a concurrency key never come here: their way
 * through dispatch.c is unchanged (one flag and one count tested).
 *
 * Labels. A task with labels waits in a queue of its pool kept for its label
 * set (sorted, so tasks asking for the same labels share one), and goes only
 * to a worker of the pool whose HELLO carried every one of them, with the
 * same credit as any task. Label sets per pool are few, so the queues are a
 * list. A queue that no connected worker can serve is reported (a log line,
 * the task's `waiting`, a gauge) and, after --unschedulable-timeout seconds
 * without such a worker, its tasks fail `unschedulable`, as a pod no node
 * can take stays Pending in Kubernetes but a task here should not wait for
 * ever for a worker nobody started.
 *
 * Concurrency keys. A key's places are counted here, cluster-wide and across
 * runs: a ready instance takes one before it enters the ready queues and
 * gives it back when it ends, fails an attempt (a retry takes one again) or
 * is cancelled; a lost worker's instance keeps its place while it is queued
 * again. Over the limit, it waits in the key's own heap (priority, then
 * FIFO), holding no worker slot. The places are in memory only: after a
 * restart or failover, recovery readies the unfinished instances again and
 * they take their places anew, so the count is rebuilt from what is
 * dispatched again. Two tasks naming one key with different limits: the
 * lowest limit among the instances holding or waiting for the key wins (a
 * key's entry, and so its limit, is dropped when nothing holds or awaits it).
 */
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "scheduler/dispatch_int.h"

struct conc_key
{
    char *key;                /* owned; the key of dispatch.conc */
    uint32_t limit;
    uint32_t held;            /* places taken: ready, dispatched or running */
    struct ready_queue wait;  /* instances over the limit */
};

/* ====================================================================== */
/* Labels                                                                  */
/* ====================================================================== */

static bool matches(const struct worker *w, char *const *labels, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_object_get(w->labels, labels[2 * i]));
        if (v == NULL || strcmp(v, labels[2 * i + 1]) != 0)
            return false;
    }
    return true;
}

bool worker_matches(const struct worker *w, const struct tr_task_def *td)
{
    return matches(w, td->labels, td->n_labels);
}

static bool same_labels(const struct ready_queue *lq, const struct tr_task_def *td)
{
    if (lq->n_labels != td->n_labels)
        return false;
    for (uint32_t k = 0; k < 2u * td->n_labels; k++) {
        if (strcmp(lq->labels[k], td->labels[k]) != 0)
            return false;
    }
    return true;
}

struct ready_queue *place_label_queue(struct ready_queue *q, const struct tr_task_def *td)
{
    for (struct ready_queue *lq = q->labeled; lq != NULL; lq = lq->labeled) {
        if (same_labels(lq, td))
            return lq;
    }
    struct ready_queue *lq = tr_calloc(1, sizeof(*lq));
    if (lq == NULL || (lq->labels = tr_calloc(2u * td->n_labels, sizeof(char *))) == NULL)
        oom_fatal("a label queue");
    lq->pool = q->pool;
    for (uint32_t k = 0; k < 2u * td->n_labels; k++) {
        if ((lq->labels[k] = tr_strdup(td->labels[k])) == NULL)
            oom_fatal("a label queue");
    }
    lq->n_labels = td->n_labels;
    lq->labeled = q->labeled;
    q->labeled = lq;
    return lq;
}

bool place_labeled_empty(const struct ready_queue *q)
{
    for (const struct ready_queue *lq = q->labeled; lq != NULL; lq = lq->labeled) {
        if (lq->n_heap > 0)
            return false;
    }
    return true;
}

void place_labeled_free(struct ready_queue *q)
{
    struct ready_queue *lq = q->labeled;
    while (lq != NULL) {
        struct ready_queue *next = lq->labeled;
        for (uint32_t k = 0; k < 2u * lq->n_labels; k++)
            tr_free(lq->labels[k]);
        tr_free(lq->labels);
        tr_free(lq->heap);
        tr_free(lq);
        lq = next;
    }
    q->labeled = NULL;
}

/* A matching worker of p with credit, round robin (pick_worker's rule). */
static struct worker *pick_labeled(struct dispatch *s, struct pool *p,
                                   const struct ready_queue *lq)
{
    for (size_t k = 0; k < p->n_workers; k++) {
        struct worker *w = p->workers[(p->rr + k) % p->n_workers];
        uint32_t credit = w->slots + worker_prefetch(s, w);
        if (w->inflight < TR_MIN(credit, w->window) && matches(w, lq->labels, lq->n_labels) &&
            (w->tenant == NULL || tenant_fits(s, w, lq->heap[0]))) {
            p->rr = (p->rr + k + 1) % p->n_workers;
            return w;
        }
    }
    return NULL;
}

bool place_dispatch(struct dispatch *s, struct ready_queue *q, struct tr_buf *args)
{
    for (struct ready_queue *lq = q->labeled; lq != NULL; lq = lq->labeled) {
        while (lq->n_heap > 0) {
            if (s->batch->out_bytes.len >= DISPATCH_TURN_BYTES)
                return true;
            struct worker *w = pick_labeled(s, q->pool, lq);
            if (w == NULL)
                break;
            dispatch_one(s, w, rq_pop(lq), args);
        }
    }
    return false;
}

static bool pool_has_match(const struct ready_queue *lq)
{
    for (size_t k = 0; k < lq->pool->n_workers; k++) {
        if (matches(lq->pool->workers[k], lq->labels, lq->n_labels))
            return true;
    }
    return false;
}

/* "zone=a,gpu=x" into out. */
static void labels_text(const struct ready_queue *lq, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (uint16_t i = 0; i < lq->n_labels && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%.100s=%.100s", i ? "," : "",
                              lq->labels[2 * i], lq->labels[2 * i + 1]);
}

/* Fails in `unschedulable` (its label queue has had no matching worker too long). */
static void fail_unschedulable(struct dispatch *d, struct inst *in)
{
    char labels[256], msg[512];
    if (in->state != TR_TASK_READY || in->heap_pos >= 0)
        return; /* an earlier failure of the batch changed it */
    struct ready_queue *lq = rq_of(d, in);
    labels_text(lq, labels, sizeof(labels));
    snprintf(msg, sizeof(msg), "unschedulable: no worker with labels %s in pool %s joined "
             "within %g s (--unschedulable-timeout)", labels, lq->pool->name,
             d->unschedulable_s);
    d->cnt->tasks_unschedulable++;
    d->hooks.fail(d->hooks.arg, in, msg);
}

void dispatch_place_check(struct dispatch *d, double now)
{
    size_t it = 0;
    struct ready_queue *q;
    char labels[256];
    struct inst **doomed = NULL;
    size_t n_doomed = 0, cap_doomed = 0;
    while ((q = tr_hmap_next(&d->queues, &it)) != NULL) {
        for (struct ready_queue *lq = q->labeled; lq != NULL; lq = lq->labeled) {
            if (lq->n_heap == 0 || pool_has_match(lq)) {
                lq->unmatched_since = 0;
                continue;
            }
            labels_text(lq, labels, sizeof(labels));
            if (lq->unmatched_since == 0) {
                lq->unmatched_since = now;
                tr_warn("%zu task(s) cannot be placed: no worker with labels %s in pool %s%s",
                        lq->n_heap, labels, q->pool->name,
                        d->unschedulable_s > 0 ? " (they fail if none joins in time)" : "");
                continue;
            }
            if (d->unschedulable_s <= 0 || now - lq->unmatched_since < d->unschedulable_s)
                continue;
            tr_warn("failing %zu task(s) unschedulable: no worker with labels %s in pool %s",
                    lq->n_heap, labels, q->pool->name);
            while (lq->n_heap > 0) {
                if (TR_VEC_PUSH(doomed, n_doomed, cap_doomed, rq_pop(lq)) < 0)
                    oom_fatal("failing unschedulable tasks");
            }
            lq->unmatched_since = 0;
        }
    }
    /* Failed after the walk: a failure can end a run and start another
     * (max_active_runs), whose tasks may need new queues. */
    for (size_t i = 0; i < n_doomed; i++)
        fail_unschedulable(d, doomed[i]);
    tr_free(doomed);
}

size_t dispatch_unschedulable_count(struct dispatch *d)
{
    size_t it = 0, n = 0;
    struct ready_queue *q;
    while ((q = tr_hmap_next(&d->queues, &it)) != NULL) {
        for (struct ready_queue *lq = q->labeled; lq != NULL; lq = lq->labeled) {
            if (lq->n_heap > 0 && !pool_has_match(lq))
                n += lq->n_heap;
        }
    }
    return n;
}

/* ====================================================================== */
/* Concurrency keys                                                        */
/* ====================================================================== */

static struct conc_key *conc_find(struct dispatch *d, const char *key)
{
    return tr_hmap_get(&d->conc, key, strlen(key));
}

static void conc_free(struct dispatch *d, struct conc_key *ck)
{
    tr_hmap_del(&d->conc, ck->key, strlen(ck->key));
    tr_free(ck->wait.heap);
    tr_free(ck->key);
    tr_free(ck);
}

struct ready_queue *place_conc_queue(struct dispatch *d, const struct inst *in)
{
    struct conc_key *ck = conc_find(d, inst_def(in)->conc_key);
    TR_ASSERT(ck != NULL);
    return &ck->wait;
}

bool place_admit(struct dispatch *d, struct inst *in)
{
    if (in->conc_held)
        return true; /* requeued after its worker was lost: it kept its place */
    const struct tr_task_def *td = inst_def(in);
    struct conc_key *ck = conc_find(d, td->conc_key);
    if (ck == NULL) {
        ck = tr_calloc(1, sizeof(*ck));
        if (ck == NULL || (ck->key = tr_strdup(td->conc_key)) == NULL ||
            tr_hmap_put(&d->conc, ck->key, strlen(ck->key), ck) < 0)
            oom_fatal("a concurrency key");
        ck->limit = td->conc_limit;
    }
    if (td->conc_limit < ck->limit)
        ck->limit = td->conc_limit; /* the lowest limit wins */
    if (ck->held < ck->limit) {
        ck->held++;
        in->conc_held = true;
        return true;
    }
    in->conc_wait = true;
    if (rq_push(&ck->wait, in) < 0)
        oom_fatal("queueing on a concurrency key");
    return false;
}

void place_conc_unwait(struct dispatch *d, struct inst *in)
{
    struct conc_key *ck = conc_find(d, inst_def(in)->conc_key);
    if (in->heap_pos >= 0)
        rq_remove(&ck->wait, in);
    in->conc_wait = false;
    if (ck->held == 0 && ck->wait.n_heap == 0)
        conc_free(d, ck);
}

void dispatch_conc_release(struct dispatch *d, struct inst *in)
{
    if (!in->conc_held)
        return;
    in->conc_held = false;
    struct conc_key *ck = conc_find(d, inst_def(in)->conc_key);
    TR_ASSERT(ck != NULL && ck->held > 0);
    ck->held--;
    while (ck->held < ck->limit && ck->wait.n_heap > 0) {
        struct inst *next = rq_pop(&ck->wait);
        next->conc_wait = false;
        next->conc_held = true;
        ck->held++;
        if (rq_push(rq_of(d, next), next) < 0)
            oom_fatal("queueing a ready task");
    }
    if (ck->held == 0 && ck->wait.n_heap == 0)
        conc_free(d, ck);
}

void dispatch_conc_each(struct dispatch *d,
                        void (*fn)(void *arg, const char *key, uint32_t held, uint32_t limit,
                                   size_t waiting),
                        void *arg)
{
    size_t it = 0;
    struct conc_key *ck;
    while ((ck = tr_hmap_next(&d->conc, &it)) != NULL)
        fn(arg, ck->key, ck->held, ck->limit, ck->wait.n_heap);
}

void place_release(struct dispatch *d)
{
    size_t it = 0;
    struct conc_key *ck;
    while ((ck = tr_hmap_next(&d->conc, &it)) != NULL) {
        tr_free(ck->wait.heap);
        tr_free(ck->key);
        tr_free(ck);
    }
    tr_hmap_release(&d->conc);
}

/* ====================================================================== */

bool dispatch_place_waiting(struct dispatch *d, struct inst *in, char *why, size_t size)
{
    if (in->state != TR_TASK_READY)
        return false;
    const struct tr_task_def *td = inst_def(in);
    if (in->conc_wait) {
        struct conc_key *ck = conc_find(d, td->conc_key);
        snprintf(why, size, "for a place of concurrency key '%.128s' (%u of %u held)",
                 td->conc_key, ck ? ck->held : 0, ck ? ck->limit : td->conc_limit);
        return true;
    }
    if (td->n_labels == 0 || td->gpus > 0)
        return false;
    struct ready_queue *lq = rq_of(d, in);
    char labels[256];
    labels_text(lq, labels, sizeof(labels));
    if (pool_has_match(lq))
        snprintf(why, size, "for a free slot on a worker with labels %s in pool %.64s", labels,
                 lq->pool->name);
    else
        snprintf(why, size, "no worker with labels %s in pool %.64s", labels, lq->pool->name);
    return true;
}

bool dispatch_run_waiting(struct dispatch *d, struct run *r, char *why, size_t size)
{
    if (run_is_final(r) || r->counts[TR_TASK_READY] == 0)
        return false;
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t t = 0; t < def->n_tasks; t++) {
        const struct tr_task_def *td = &def->tasks[t];
        if (td->n_labels == 0 || td->gpus > 0 || !r->tasks[t].expanded)
            continue;
        struct task_rt *trt = &r->tasks[t];
        uint32_t n = trt->mapped ? trt->n_inst : 1;
        for (uint32_t i = 0; i < n; i++) {
            struct inst *in = task_inst(trt, i);
            if (in->state != TR_TASK_READY || in->conc_wait)
                continue;
            struct ready_queue *lq = rq_of(d, in);
            if (pool_has_match(lq))
                break; /* the task's other instances wait for the same workers */
            char labels[256];
            labels_text(lq, labels, sizeof(labels));
            snprintf(why, size, "task '%.100s' waits: no worker with labels %s in pool %.64s",
                     td->name, labels, lq->pool->name);
            return true;
        }
    }
    return false;
}
