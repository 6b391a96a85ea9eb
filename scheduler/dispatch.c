/*
 * dispatch.c - ready queues per pool and credit-based dispatch.
 *
 * Each pool keeps a binary heap of ready instances, highest priority first
 * and FIFO among equals. A worker may hold its slots plus a prefetch window
 * in flight. The window hides the round trip (as Celery's prefetch does), so
 * it is sized to cover PREFETCH_COVER_S of the worker's work at its recent
 * task run time: tasks of a few microseconds get a deep window (up to the
 * --prefetch cap), tasks of seconds get one extra task, so long tasks never
 * pile up on one worker while another idles. Messages are queued here and
 * sent by sched_send_queued after the turn's commit.
 */
#include "scheduler/sched.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <zmq.h>

#include "lib/base/alloc.h"
#include "lib/wire/zmq_uv.h"

/* ====================================================================== */
/* Pools and their ready heaps                                             */
/* ====================================================================== */

bool pool_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

struct pool *pool_get(struct sched *s, const char *name, size_t len)
{
    struct pool *p = tr_hmap_get(&s->pools, name, len);
    if (p != NULL)
        return p;
    p = tr_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->name = tr_strndup(name, len);
    if (p->name == NULL || tr_hmap_put(&s->pools, p->name, len, p) < 0) {
        tr_free(p->name);
        tr_free(p);
        return NULL;
    }
    return p;
}

static void pool_free(struct pool *p)
{
    tr_free(p->heap);
    tr_free(p->workers);
    tr_free(p->name);
    tr_free(p);
}

void pools_ref_run(struct run *r, int delta)
{
    const struct tr_pipeline_def *def = r->pipe->def;
    for (uint32_t i = 0; i < def->n_pools; i++) {
        struct pool *p = pool_get(r->sched, def->pools[i], strlen(def->pools[i]));
        if (p == NULL) {
            tr_err("out of memory creating pool '%s'", def->pools[i]);
            exit(70);
        }
        if (delta > 0)
            p->runs++;
        else if (p->runs > 0)
            p->runs--;
    }
}

/*
 * Pool names come from pipelines and HELLOs: without this, every name ever
 * seen would stay in memory and in /metrics for good.
 */
void pools_sweep(struct sched *s)
{
    size_t it = 0;
    struct pool *p;
    while ((p = tr_hmap_next(&s->pools, &it)) != NULL) {
        if (p->runs == 0 && p->n_workers == 0 && p->n_heap == 0) {
            tr_hmap_del(&s->pools, p->name, strlen(p->name));
            pool_free(p);
        }
    }
}

struct pool *inst_pool(struct inst *in)
{
    const struct tr_pipeline_def *def = in->run->pipe->def;
    const char *name = def->pools[def->tasks[in->task].pool];
    struct pool *p = pool_get(in->run->sched, name, strlen(name));
    if (p == NULL) {
        tr_err("out of memory creating pool '%s'", name);
        exit(70);
    }
    return p;
}

static bool heap_before(const struct inst *a, const struct inst *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static void heap_set(struct pool *p, size_t i, struct inst *in)
{
    p->heap[i] = in;
    in->heap_pos = (int32_t)i;
}

static void heap_up(struct pool *p, size_t i)
{
    struct inst *in = p->heap[i];
    while (i > 0 && heap_before(in, p->heap[(i - 1) / 2])) {
        heap_set(p, i, p->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(p, i, in);
}

static void heap_down(struct pool *p, size_t i)
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

int pool_push_ready(struct pool *p, struct inst *in)
{
    if (p->n_heap == p->cap_heap) {
        size_t cap = p->cap_heap ? p->cap_heap * 2 : 256;
        struct inst **h = tr_reallocarray(p->heap, cap, sizeof(*h));
        if (h == NULL)
            return TR_ENOMEM;
        p->heap = h;
        p->cap_heap = cap;
    }
    p->heap[p->n_heap++] = in;
    heap_up(p, p->n_heap - 1);
    return 0;
}

static struct inst *pool_pop(struct pool *p)
{
    struct inst *top = p->heap[0];
    top->heap_pos = -1;
    if (--p->n_heap > 0) {
        p->heap[0] = p->heap[p->n_heap];
        heap_down(p, 0);
    }
    return top;
}

void pool_remove(struct pool *p, struct inst *in)
{
    size_t i = (size_t)in->heap_pos;
    in->heap_pos = -1;
    if (i == --p->n_heap)
        return;
    p->heap[i] = p->heap[p->n_heap];
    heap_down(p, i);
    heap_up(p, (size_t)p->heap[i]->heap_pos);
}

void inst_make_ready(struct inst *in)
{
    struct run *r = in->run;
    if (r->recovering != NULL) {
        recover_apply(in);
        if (in->state != ST_PENDING)
            return;
    }
    inst_set_state(in, ST_READY);
    in->seq = ++r->sched->next_seq;
    in->priority = r->pipe->def->tasks[in->task].priority;
    if (pool_push_ready(inst_pool(in), in) < 0) {
        tr_err("out of memory queueing run=%s", r->id);
        exit(70);
    }
}

/* ====================================================================== */
/* Dispatch                                                                */
/* ====================================================================== */

int sched_queue_msg(struct sched *s, const struct worker *w, const struct tr_msg *m)
{
    msgpack_sbuffer_clear(&s->sbuf);
    int rc = tr_proto_encode(&s->sbuf, m);
    if (rc < 0)
        return rc;
    struct outmsg om = {
        .ident_off = (uint32_t)s->out_bytes.len,
        .ident_len = (uint32_t)w->ident_len,
        .data_off = (uint32_t)(s->out_bytes.len + w->ident_len),
        .data_len = (uint32_t)s->sbuf.size,
    };
    if (s->n_out == s->cap_out) {
        size_t cap = s->cap_out ? s->cap_out * 2 : 256;
        struct outmsg *o = tr_reallocarray(s->out, cap, sizeof(*o));
        if (o == NULL)
            return TR_ENOMEM;
        s->out = o;
        s->cap_out = cap;
    }
    rc = tr_buf_add(&s->out_bytes, w->ident, w->ident_len);
    if (rc == 0)
        rc = tr_buf_add(&s->out_bytes, s->sbuf.data, s->sbuf.size);
    if (rc < 0)
        return rc;
    s->out[s->n_out++] = om;
    return 0;
}

void sched_send_queued(struct sched *s)
{
    if (s->n_out == 0)
        return;
    for (size_t i = 0; i < s->n_out; i++) {
        const struct outmsg *om = &s->out[i];
        int rc = tr_zmq_uv_send(s->zuv, s->out_bytes.buf + om->ident_off, om->ident_len,
                                s->out_bytes.buf + om->data_off, om->data_len);
        if (rc < 0 && rc != -EHOSTUNREACH)
            tr_warn("cannot send to worker '%.*s': %s", (int)om->ident_len,
                    s->out_bytes.buf + om->ident_off, tr_strerror(rc));
        /* An unreachable worker is found dead by its heartbeats; its tasks are
         * re-queued then, so nothing is lost by dropping the message here. */
    }
    s->n_out = 0;
    tr_buf_reset(&s->out_bytes);
    tr_zmq_uv_kick(s->zuv);
}

/* Work a worker's prefetch window should cover: a few round trips. */
#define PREFETCH_COVER_S 0.005

uint32_t worker_prefetch(const struct sched *s, const struct worker *w)
{
    /* Unknown run time: assume a millisecond until results say otherwise. */
    double run_s = w->ewma_run_s > 0 ? w->ewma_run_s : 0.001;
    double per_slot = PREFETCH_COVER_S / (run_s > 1e-6 ? run_s : 1e-6);
    double want = per_slot * w->slots;
    uint32_t cap = s->cfg.prefetch;
    if (want < 1)
        return cap < 1 ? cap : 1;
    return want > cap ? cap : (uint32_t)want;
}

void worker_window_grow(struct worker *w)
{
    w->window = w->window > UINT32_MAX - WINDOW_STEP ? UINT32_MAX : w->window + WINDOW_STEP;
}

static struct worker *pick_worker(struct sched *s, struct pool *p)
{
    for (size_t k = 0; k < p->n_workers; k++) {
        struct worker *w = p->workers[(p->rr + k) % p->n_workers];
        uint32_t credit = w->slots + worker_prefetch(s, w);
        if (w->inflight < TR_MIN(credit, w->window)) {
            p->rr = (p->rr + k + 1) % p->n_workers;
            return w;
        }
    }
    return NULL;
}

/* Serves a cache=true task from the cache when an output is stored for its inputs. */
static bool try_cache(struct sched *s, struct inst *in, const struct tr_str *args)
{
    const struct tr_task_def *td = &in->run->pipe->def->tasks[in->task];
    struct tr_buf k;
    tr_buf_init(&k, 0);
    char key[65];
    bool hit = false;
    if (tr_buf_addstr(&k, in->run->pipe->digest) == 0 &&
        tr_buf_add(&k, td->name, strlen(td->name) + 1) == 0 &&
        tr_buf_add(&k, args->p, args->len) == 0) {
        tr_sha256_hex(k.buf, k.len, key);
        void *out = NULL;
        size_t len = 0;
        if (tr_state_get_cache(s->state, key, &out, &len) == 0) {
            in->started_at = in->finished_at = tr_now();
            inst_complete(in, out, len, true);
            tr_free(out);
            hit = true;
        }
    }
    tr_buf_release(&k);
    return hit;
}

/*
 * Dispatch ids are fencing tokens a result must quote: random, so a peer
 * cannot guess the next one, and unique among the dispatches in flight. Read
 * from the kernel in batches: one getrandom per 64 dispatches.
 */
static uint64_t new_dispatch_id(struct sched *s)
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
        if (id != 0 && tr_hmap_get(&s->dispatches, &id, sizeof(id)) == NULL)
            return id;
    }
}

static void dispatch_one(struct sched *s, struct worker *w, struct inst *in, struct tr_buf *args)
{
    struct run *r = in->run;
    const struct tr_task_def *td = &r->pipe->def->tasks[in->task];
    tr_buf_reset(args);
    if (inst_build_args(in, args) < 0) {
        inst_fail_final(in, "out of memory building the task's arguments");
        return;
    }
    if (td->cache && try_cache(s, in, &(struct tr_str){args->buf, args->len}))
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
    if (sched_queue_msg(s, w, &m) < 0 ||
        tr_hmap_put(&s->dispatches, &in->dispatch_id, sizeof(in->dispatch_id), in) < 0) {
        tr_err("out of memory dispatching run=%s task=%s", r->id, td->name);
        exit(70);
    }
    r->outstanding++;
    worker_inflight_add(w, in);
    inst_set_state(in, w->running < w->slots ? ST_RUNNING : ST_DISPATCHED);
    if (in->state == ST_RUNNING) {
        w->running++;
        in->on_slot = true;
        in->started_at = in->dispatched_at;
    }
    s->m.dispatched++;
    if (r->state == RUN_QUEUED) {
        r->state = RUN_RUNNING;
        r->started_at = in->dispatched_at;
        run_mark_dirty(r);
    }
    if (td->timeout > 0)
        timers_push(s, (double)tr_mono_ns() / 1e9 + td->timeout + s->cfg.timeout_grace_s, in,
                    in->dispatch_id);
}

/* TASK bytes queued in one turn at most: each TASK carries its run's params
 * (up to --max-params-bytes), so credit alone does not bound a turn's work. */
#define DISPATCH_TURN_BYTES (64u << 20)

bool sched_dispatch_all(struct sched *s)
{
    size_t it = 0;
    struct pool *p;
    struct tr_buf args;
    bool more = false;
    tr_buf_init(&args, 0);
    while (!more && (p = tr_hmap_next(&s->pools, &it)) != NULL) {
        while (p->n_heap > 0) {
            if (s->out_bytes.len >= DISPATCH_TURN_BYTES) {
                more = true;
                break;
            }
            struct worker *w = pick_worker(s, p);
            if (w == NULL)
                break;
            dispatch_one(s, w, pool_pop(p), &args);
        }
    }
    tr_buf_release(&args);
    return more;
}
