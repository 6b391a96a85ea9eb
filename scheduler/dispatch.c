/*
 * dispatch.c - ready queues per pool and credit-based dispatch.
 *
 * Each pool keeps a binary heap of ready instances, highest priority first
 * and FIFO among equals. A worker may hold its slots plus a prefetch window
 * in flight. The window hides the round trip (as Celery's prefetch does), so
 * it is sized to cover PREFETCH_COVER_S of the worker's work at its recent
 * task run time: tasks of a few microseconds get a deep window (up to the
 * --prefetch cap), tasks of seconds get one extra task, so long tasks never
 * pile up on one worker while another idles. TASK messages wait in the
 * batch for the turn's commit.
 *
 * GPU tasks (gpus = N) wait in a second heap of their pool (q->gpu), so one
 * that cannot be placed now holds back no GPU-less task. They go only to a
 * worker with a free slot (never into the prefetch window, where they would
 * hold devices they do not use yet) and N free devices, the fewest free first
 * (best fit), in priority order without backfill: a task waiting for two
 * devices is not starved by one-device tasks queued after it. docs/gpus.md.
 */
#include "scheduler/dispatch.h"
#include "scheduler/dispatch_int.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"

/* ====================================================================== */
/* Pools and their ready heaps                                             */
/* ====================================================================== */

static bool heap_before(const struct inst *a, const struct inst *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static void heap_set(struct ready_queue *p, size_t i, struct inst *in)
{
    p->heap[i] = in;
    in->heap_pos = (int32_t)i;
}

static void heap_up(struct ready_queue *p, size_t i)
{
    struct inst *in = p->heap[i];
    while (i > 0 && heap_before(in, p->heap[(i - 1) / 2])) {
        heap_set(p, i, p->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(p, i, in);
}

static void heap_down(struct ready_queue *p, size_t i)
{
    struct inst *in = p->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct inst *best = in;
        if (l < p->n_heap && heap_before(p->heap[l], best)) {
            m = l;
            best = p->heap[l];
        }
        if (r < p->n_heap && heap_before(p->heap[r], best))
            m = r;
        if (m == i)
            break;
        heap_set(p, i, p->heap[m]);
        i = m;
    }
    heap_set(p, i, in);
}

int rq_push(struct ready_queue *p, struct inst *in)
{
    if (TR_VEC_PUSH(p->heap, p->n_heap, p->cap_heap, in) < 0)
        return TR_ENOMEM;
    heap_up(p, p->n_heap - 1);
    return 0;
}

struct inst *rq_pop(struct ready_queue *p)
{
    struct inst *top = p->heap[0];
    top->heap_pos = -1;
    if (--p->n_heap > 0) {
        p->heap[0] = p->heap[p->n_heap];
        heap_down(p, 0);
    }
    return top;
}

void rq_remove(struct ready_queue *p, struct inst *in)
{
    size_t i = (size_t)in->heap_pos;
    in->heap_pos = -1;
    if (i == --p->n_heap)
        return;
    p->heap[i] = p->heap[p->n_heap];
    heap_down(p, i);
    heap_up(p, (size_t)p->heap[i]->heap_pos);
}

static uint32_t gpus_of(const struct inst *in)
{
    return in->run->pipe->def->tasks[in->task].gpus;
}

/* The ready queue of the pool of this name, made when new. */
static struct ready_queue *queue_get(struct dispatch *d, const char *name)
{
    size_t len = strlen(name);
    struct ready_queue *q = tr_hmap_get(&d->queues, name, len);
    if (q != NULL)
        return q;
    q = tr_calloc(1, sizeof(*q));
    if (q == NULL || (q->pool = fleet_pool(d->fleet, name, len)) == NULL ||
        tr_hmap_put(&d->queues, q->pool->name, len, q) < 0) {
        tr_err("out of memory creating pool '%s'", name);
        exit(70);
    }
    return q;
}

/* The ready queue of in's pool, made when new. */
static struct ready_queue *pool_queue(struct dispatch *d, const struct inst *in)
{
    const struct tr_pipeline_def *def = in->run->pipe->def;
    return queue_get(d, def->pools[def->tasks[in->task].pool]);
}

void dispatch_pools_ref(struct dispatch *d, const struct tr_pipeline_def *def, int delta)
{
    for (uint32_t i = 0; i < def->n_pools; i++) {
        struct ready_queue *q = queue_get(d, def->pools[i]);
        if (delta > 0)
            q->runs++;
        else if (q->runs > 0)
            q->runs--;
    }
}

static bool pool_has_queue(void *arg, const struct pool *p)
{
    struct dispatch *d = arg;
    return tr_hmap_get(&d->queues, p->name, strlen(p->name)) != NULL;
}

/*
 * Pool names come from pipelines and HELLOs: without this, every name ever
 * seen would stay in memory and in /metrics for good.
 */
void dispatch_sweep(struct dispatch *d)
{
    size_t it = 0;
    struct ready_queue *q;
    while ((q = tr_hmap_next(&d->queues, &it)) != NULL) {
        if (q->runs == 0 && q->n_heap == 0 && (q->gpu == NULL || q->gpu->n_heap == 0) &&
            q->pool->n_workers == 0 && place_labeled_empty(q)) {
            tr_hmap_del(&d->queues, q->pool->name, strlen(q->pool->name));
            place_labeled_free(q);
            if (q->gpu != NULL)
                tr_free(q->gpu->heap);
            tr_free(q->gpu);
            tr_free(q->heap);
            tr_free(q);
        }
    }
    fleet_sweep_pools(d->fleet, pool_has_queue, d);
}

/* The queue in waits in: its pool's, that pool's GPU queue, the queue of its
 * labels, or its concurrency key's (dispatch_place.c). */
struct ready_queue *rq_of(struct dispatch *d, const struct inst *in)
{
    if (in->conc_wait)
        return place_conc_queue(d, in);
    struct ready_queue *q = pool_queue(d, in);
    if (gpus_of(in) == 0)
        return inst_def(in)->n_labels == 0 ? q : place_label_queue(q, inst_def(in));
    if (q->gpu == NULL) {
        q->gpu = tr_calloc(1, sizeof(*q->gpu));
        if (q->gpu == NULL) {
            tr_err("out of memory creating the GPU queue of pool '%s'", q->pool->name);
            exit(70);
        }
        q->gpu->pool = q->pool;
    }
    return q->gpu;
}

size_t dispatch_gpu_ready_count(struct dispatch *d, const char *pool, size_t len)
{
    struct ready_queue *q = tr_hmap_get(&d->queues, pool, len);
    return q && q->gpu ? q->gpu->n_heap : 0;
}

size_t dispatch_ready_count(struct dispatch *d, const char *pool, size_t len)
{
    struct ready_queue *q = tr_hmap_get(&d->queues, pool, len);
    return q ? q->n_heap : 0;
}

void dispatch_unready(struct dispatch *d, struct inst *in)
{
    if (in->conc_wait) {
        place_conc_unwait(d, in); /* it holds no place */
        return;
    }
    if (in->heap_pos >= 0)
        rq_remove(rq_of(d, in), in);
    if (in->conc_held)
        dispatch_conc_release(d, in);
}

void dispatch_ready(struct dispatch *d, struct inst *in)
{
    if (d->hooks.gate != NULL && d->hooks.gate(d->hooks.gate_arg, in))
        return; /* held, still pending, outside any worker slot */
    struct run *r = in->run;
    inst_set_state(in, TR_TASK_READY);
    in->seq = ++d->next_seq;
    in->priority = r->pipe->def->tasks[in->task].priority;
    if (inst_def(in)->conc_key != NULL && !place_admit(d, in))
        return; /* waits for a place of its concurrency key */
    if (rq_push(rq_of(d, in), in) < 0) {
        tr_err("out of memory queueing run=%s", r->id);
        exit(70);
    }
}

/* ====================================================================== */
/* Dispatch                                                                */
/* ====================================================================== */

/* Work a worker's prefetch window should cover: a few round trips. */
#define PREFETCH_COVER_S 0.005

uint32_t worker_prefetch(const struct dispatch *s, const struct worker *w)
{
    /* Unknown run time: assume a millisecond until results say otherwise. */
    double run_s = w->ewma_run_s > 0 ? w->ewma_run_s : 0.001;
    double per_slot = PREFETCH_COVER_S / (run_s > 1e-6 ? run_s : 1e-6);
    double want = per_slot * w->slots;
    uint32_t cap = s->prefetch;
    if (want < 1)
        return cap < 1 ? cap : 1;
    return want > cap ? cap : (uint32_t)want;
}

/* Whether w may run in: a worker whose key is restricted to a tenant runs
 * only that tenant's tasks (the one string compare costs only there). */
bool tenant_fits(struct dispatch *s, const struct worker *w, const struct inst *in)
{
    if (w->tenant == NULL)
        return true;
    const char *t = s->hooks.tenant ? s->hooks.tenant(s->hooks.tenant_arg, in->run) : NULL;
    return strcmp(w->tenant, t ? t : "default") == 0;
}

static struct worker *pick_worker(struct dispatch *s, struct pool *p, const struct inst *in)
{
    for (size_t k = 0; k < p->n_workers; k++) {
        struct worker *w = p->workers[(p->rr + k) % p->n_workers];
        if (w->tenant != NULL && !tenant_fits(s, w, in))
            continue;
        uint32_t credit = w->slots + worker_prefetch(s, w);
        if (w->inflight < TR_MIN(credit, w->window)) {
            p->rr = (p->rr + k + 1) % p->n_workers;
            return w;
        }
    }
    return NULL;
}

#define RESTRICTED_SCAN 256 /* ready tasks looked at for a tenant-restricted worker */

/*
 * When the first ready task fits no worker with credit, a worker restricted
 * to a tenant may still take a later task of its tenant: the first of the
 * heap's first RESTRICTED_SCAN entries that fits (heap order, not strict
 * priority order: a restricted worker is a tenant's own capacity). Costs
 * nothing in pools without restricted workers.
 */
static struct worker *pick_restricted(struct dispatch *s, struct ready_queue *q,
                                      struct inst **out)
{
    struct pool *p = q->pool;
    for (size_t k = 0; k < p->n_workers; k++) {
        struct worker *w = p->workers[k];
        uint32_t credit = w->slots + worker_prefetch(s, w);
        if (w->tenant == NULL || w->inflight >= TR_MIN(credit, w->window))
            continue;
        size_t n = TR_MIN(q->n_heap, (size_t)RESTRICTED_SCAN);
        for (size_t i = 0; i < n; i++) {
            if (tenant_fits(s, w, q->heap[i])) {
                *out = q->heap[i];
                return w;
            }
        }
    }
    return NULL;
}

/*
 * Dispatch ids are fencing tokens a result must quote: random, so a peer
 * cannot guess the next one, and unique among the dispatches in flight. Read
 * from the kernel in batches: one getrandom per 64 dispatches.
 */
static uint64_t new_dispatch_id(struct dispatch *s)
{
    static uint64_t pool[64];
    static size_t left;
    for (;;) {
        if (left == 0) {
            size_t got = 0;
            while (got < sizeof(pool)) {
                ssize_t n = getrandom((char *)pool + got, sizeof(pool) - got, 0);
                if (n < 0 && errno != EINTR) {
                    tr_err("getrandom failed: %s", strerror(errno));
                    exit(70);
                }
                got += n > 0 ? (size_t)n : 0;
            }
            left = TR_ARRAY_LEN(pool);
        }
        uint64_t id = pool[--left];
        if (id != 0 && tr_hmap_get(&s->ids, &id, sizeof(id)) == NULL)
            return id;
    }
}

void dispatch_one(struct dispatch *s, struct worker *w, struct inst *in, struct tr_buf *args)
{
    struct run *r = in->run;
    const struct tr_task_def *td = &r->pipe->def->tasks[in->task];
    tr_buf_reset(args);
    if (inst_build_args(in, args) < 0) {
        s->hooks.fail(s->hooks.arg, in, "out of memory building the task's arguments");
        return;
    }
    if (td->cache && s->hooks.cached(s->hooks.arg, in, (struct tr_str){args->buf, args->len}))
        return;
    in->attempts++;
    in->dispatch_id = new_dispatch_id(s);
    in->dispatched_at = tr_now();
    struct tr_msg m = {.type = TR_MSG_TASK};
    struct tr_msg_task *t = &m.u.task;
    t->id = in->dispatch_id;
    t->epoch = s->epoch;
    t->attempt = in->attempts;
    t->run_id = tr_str_c(r->id);
    t->task = tr_str_c(td->name);
    t->index = in->index;
    t->digest = (struct tr_str){r->pipe->digest, 64};
    t->params = (struct tr_str){r->params_mp, r->params_mp_len};
    t->args = (struct tr_str){args->buf, args->len};
    t->timeout = td->timeout;
    if (td->gpus > 0)
        in->gpu_mask = worker_gpus_take(&w->g, td->gpus, t);
    if (batch_add_msg(s->batch, w->ident, w->ident_len, &m) < 0 ||
        tr_hmap_put(&s->ids, &in->dispatch_id, sizeof(in->dispatch_id), in) < 0) {
        tr_err("out of memory dispatching run=%s task=%s", r->id, td->name);
        exit(70);
    }
    r->outstanding++;
    worker_inflight_add(w, in);
    inst_set_state(in, w->running < w->slots ? TR_TASK_RUNNING : TR_TASK_DISPATCHED);
    if (in->state == TR_TASK_RUNNING) {
        w->running++;
        in->on_slot = true;
        in->started_at = in->dispatched_at;
    }
    s->cnt->dispatched++;
    if (r->state == TR_RUN_QUEUED) {
        r->state = TR_RUN_RUNNING;
        r->started_at = in->dispatched_at;
        batch_add_run(s->batch, r);
    }
    if (td->timeout > 0)
        timers_push(s->timers, mono_s() + td->timeout + s->timeout_grace_s, in,
                    in->dispatch_id);
}

/* ====================================================================== */
/* GPU tasks                                                               */
/* ====================================================================== */

/* The worker of p with a free slot and n free devices, the fewest free first. */
static struct worker *pick_gpu_worker(struct dispatch *s, struct pool *p, uint32_t n,
                                      const struct inst *in)
{
    const struct tr_task_def *td = inst_def(in);
    struct worker *best = NULL;
    uint32_t best_free = UINT32_MAX;
    for (size_t k = 0; k < p->n_workers; k++) {
        struct worker *w = p->workers[k];
        if (w->inflight >= w->slots || (td->n_labels > 0 && !worker_matches(w, td)) ||
            (w->tenant != NULL && !tenant_fits(s, w, in)))
            continue;
        uint32_t f = worker_gpus_free(&w->g);
        if (f >= n && f < best_free) {
            best = w;
            best_free = f;
        }
    }
    return best;
}

/* Places the pool's GPU tasks in order while the first one fits somewhere. */
static void dispatch_gpu(struct dispatch *s, struct ready_queue *g, struct tr_buf *args)
{
    while (g->n_heap > 0) {
        struct worker *w = pick_gpu_worker(s, g->pool, gpus_of(g->heap[0]), g->heap[0]);
        if (w == NULL)
            return;
        dispatch_one(s, w, rq_pop(g), args);
    }
}

static uint32_t pool_max_gpus(const struct pool *p)
{
    uint32_t m = 0;
    for (size_t i = 0; i < p->n_workers; i++)
        m = TR_MAX(m, p->workers[i]->g.n);
    return m;
}

int dispatch_gpu_check(struct dispatch *d, const struct tr_pipeline_def *def,
                       struct tr_error *err)
{
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        const struct tr_task_def *td = &def->tasks[i];
        if (td->gpus == 0)
            continue;
        const char *name = def->pools[td->pool];
        const struct pool *p = tr_hmap_get(&d->fleet->pools, name, strlen(name));
        if (p == NULL || p->n_workers == 0)
            continue; /* nobody to ask: it waits, and the task list says for what */
        uint32_t m = pool_max_gpus(p);
        if (m < td->gpus)
            return tr_error_set(err, TR_EINVAL,
                                "task '%s' asks for %u GPUs, but no worker of pool '%s' has "
                                "that many (the largest of its %zu workers has %u)",
                                td->name, td->gpus, name, p->n_workers, m);
    }
    return 0;
}

bool dispatch_gpu_waiting(struct dispatch *d, struct inst *in, char *why, size_t size)
{
    if (in->state != TR_TASK_READY || gpus_of(in) == 0)
        return false;
    const struct pool *p = pool_queue(d, in)->pool;
    uint32_t n = gpus_of(in), m = pool_max_gpus(p);
    if (p->n_workers == 0)
        snprintf(why, size, "for a worker of pool '%.200s' with %u GPUs (none connected)",
                 p->name, n);
    else if (m < n)
        snprintf(why, size, "for a worker of pool '%.200s' with %u GPUs (the largest has %u)",
                 p->name, n, m);
    else
        snprintf(why, size, "for %u free GPUs on a worker of pool '%.200s'", n, p->name);
    return true;
}

/* ====================================================================== */


bool dispatch_all(struct dispatch *s)
{
    size_t it = 0;
    struct ready_queue *q;
    struct tr_buf args;
    bool more = false;
    tr_buf_init(&args, 0);
    while (!more && (q = tr_hmap_next(&s->queues, &it)) != NULL) {
        if (q->gpu != NULL) /* first: they need a free slot, not a prefetch place */
            dispatch_gpu(s, q->gpu, &args);
        while (q->n_heap > 0) {
            if (s->batch->out_bytes.len >= DISPATCH_TURN_BYTES) {
                more = true;
                break;
            }
            struct worker *w = pick_worker(s, q->pool, q->heap[0]);
            if (w != NULL) {
                dispatch_one(s, w, rq_pop(q), &args);
                continue;
            }
            struct inst *in = NULL;
            if ((w = pick_restricted(s, q, &in)) == NULL)
                break;
            rq_remove(q, in);
            dispatch_one(s, w, in, &args);
        }
        if (!more && q->labeled != NULL)
            more = place_dispatch(s, q, &args);
    }
    tr_buf_release(&args);
    return more;
}

struct inst *dispatch_find(struct dispatch *d, uint64_t id)
{
    return tr_hmap_get(&d->ids, &id, sizeof(id));
}

void dispatch_end(struct dispatch *d, struct inst *in)
{
    if (in->dispatch_id) {
        tr_hmap_del(&d->ids, &in->dispatch_id, sizeof(in->dispatch_id));
        in->run->outstanding--;
    }
    if (in->worker)
        worker_inflight_del(in->worker, in);
    in->dispatch_id = 0;
    in->worker = NULL;
}

void dispatch_init(struct dispatch *d, const struct sched_config *cfg, struct fleet *fleet,
                   struct batch *batch, struct timers *timers, struct counters *cnt,
                   const struct dispatch_hooks *hooks)
{
    memset(d, 0, sizeof(*d));
    tr_hmap_init(&d->queues);
    tr_hmap_init(&d->ids);
    d->prefetch = cfg->prefetch;
    d->timeout_grace_s = cfg->timeout_grace_s;
    d->fleet = fleet;
    d->batch = batch;
    d->timers = timers;
    d->cnt = cnt;
    d->hooks = *hooks;
    tr_hmap_init(&d->conc);
    d->unschedulable_s = cfg->unschedulable_s;
}

void dispatch_release(struct dispatch *d)
{
    size_t it = 0;
    struct ready_queue *q;
    while ((q = tr_hmap_next(&d->queues, &it)) != NULL) {
        if (q->gpu != NULL)
            tr_free(q->gpu->heap);
        tr_free(q->gpu);
        place_labeled_free(q);
        tr_free(q->heap);
        tr_free(q);
    }
    tr_hmap_release(&d->queues);
    tr_hmap_release(&d->ids);
    place_release(d);
}
