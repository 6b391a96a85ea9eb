/*
 * gpus.c - GPU placement: which devices of each worker are busy, the ready
 * queue of tasks that need GPUs, and what the API and /metrics show of them.
 *
 * A task with gpus = N never enters its pool's ordinary ready heap: it waits
 * in the pool's GPU heap (same order: priority, then FIFO), so a GPU task
 * that cannot be placed now holds back no GPU-less task of its pool. It is
 * dispatched only to a worker with a free slot (never into the prefetch
 * window, where it would sit on devices it does not use yet) and N free
 * devices; the devices are named in TASK and marked busy until the dispatch
 * ends (result, worker lost, deadline), which worker_inflight_del reports.
 * GPU tasks are placed strictly in order, without backfill: a task waiting
 * for two free devices is not starved by a stream of one-device tasks behind
 * it (GPU-less tasks still pass it).
 *
 * A worker's devices are the bits of a 64-bit mask, in the order its HELLO
 * lists them (the index NVML gave, or 0..N-1 for --gpus N).
 *
 * Loop thread only.
 */
#include "scheduler/sched.h"

#include "lib/base/alloc.h"

bool gpus_wanted(const struct inst *in)
{
    return in->run->pipe->def->tasks[in->task].gpus > 0;
}

static uint32_t need_of(const struct inst *in)
{
    return in->run->pipe->def->tasks[in->task].gpus;
}

/* ====================================================================== */
/* The GPU ready heap of a pool                                            */
/* ====================================================================== */

static bool before(const struct inst *a, const struct inst *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

static void set(struct pool *p, size_t i, struct inst *in)
{
    p->gheap[i] = in;
    in->heap_pos = (int32_t)i;
}

static void up(struct pool *p, size_t i)
{
    struct inst *in = p->gheap[i];
    while (i > 0 && before(in, p->gheap[(i - 1) / 2])) {
        set(p, i, p->gheap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    set(p, i, in);
}

static void down(struct pool *p, size_t i)
{
    struct inst *in = p->gheap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct inst *best = in;
        if (l < p->n_gheap && before(p->gheap[l], best)) {
            m = l;
            best = p->gheap[l];
        }
        if (r < p->n_gheap && before(p->gheap[r], best))
            m = r;
        if (m == i)
            break;
        set(p, i, p->gheap[m]);
        i = m;
    }
    set(p, i, in);
}

int gpus_push_ready(struct pool *p, struct inst *in)
{
    if (VEC_PUSH(p->gheap, p->n_gheap, p->cap_gheap, in) < 0)
        return TR_ENOMEM;
    up(p, p->n_gheap - 1);
    return 0;
}

void gpus_remove(struct pool *p, struct inst *in)
{
    size_t i = (size_t)in->heap_pos;
    in->heap_pos = -1;
    if (i == --p->n_gheap)
        return;
    p->gheap[i] = p->gheap[p->n_gheap];
    down(p, i);
    up(p, (size_t)p->gheap[i]->heap_pos);
}

/* ====================================================================== */
/* Devices                                                                 */
/* ====================================================================== */

static uint32_t free_count(const struct worker *w)
{
    uint64_t all = w->n_dev >= 64 ? ~0ull : (1ull << w->n_dev) - 1;
    return (uint32_t)__builtin_popcountll(all & ~w->gpu_busy);
}

void gpus_worker_hello(struct worker *w, const struct tr_msg_hello *h)
{
    uint32_t n = h->n_gpu_info > 0 ? h->n_gpu_info : h->gpus;
    if (n > TR_PROTO_MAX_GPUS) {
        tr_warn("worker=%s offers %u GPUs; using the first %d", w->id, n, TR_PROTO_MAX_GPUS);
        n = TR_PROTO_MAX_GPUS;
    }
    tr_free_null(&w->dev);
    w->n_dev = 0;
    w->gpus = n;
    if (n == 0)
        return;
    w->dev = tr_calloc(n, sizeof(*w->dev));
    if (w->dev == NULL) {
        tr_err("out of memory: worker=%s is used without its GPUs", w->id);
        return;
    }
    w->n_dev = n;
    for (uint32_t i = 0; i < n; i++) {
        struct gpu_dev *d = &w->dev[i];
        memset(d, 0, sizeof(*d));
        d->util = -1;
        d->index = i;
        if (i < h->n_gpu_info) {
            const struct tr_gpu_info *g = &h->gpu_info[i];
            d->index = g->index;
            size_t len = TR_MIN(g->name.len, sizeof(d->name) - 1);
            memcpy(d->name, g->name.p, len);
            d->name[len] = '\0';
            d->mem_total_mb = g->mem_total_mb;
            d->mem_used_mb = g->mem_used_mb;
            d->util = g->util;
        }
    }
}

void gpus_worker_heartbeat(struct worker *w, const struct tr_msg_heartbeat *hb)
{
    for (uint32_t k = 0; k < hb->n_gpus; k++) {
        const struct tr_gpu_info *g = &hb->gpus[k];
        for (uint32_t i = 0; i < w->n_dev; i++) {
            if (w->dev[i].index == g->index) {
                w->dev[i].mem_total_mb = g->mem_total_mb;
                w->dev[i].mem_used_mb = g->mem_used_mb;
                w->dev[i].util = g->util;
                break;
            }
        }
    }
}

/* Marks the first n free devices of w busy for in and names them in t. */
static void take(struct worker *w, struct inst *in, struct tr_msg_task *t, uint32_t n)
{
    in->gpu_mask = 0;
    t->n_gpus = 0;
    for (uint32_t i = 0; i < w->n_dev && t->n_gpus < n; i++) {
        if (w->gpu_busy & (1ull << i))
            continue;
        in->gpu_mask |= 1ull << i;
        t->gpus[t->n_gpus++] = w->dev[i].index;
    }
    TR_ASSERT(t->n_gpus == n);
    w->gpu_busy |= in->gpu_mask;
}

void gpus_assign(struct worker *w, struct inst *in, struct tr_msg_task *t)
{
    uint32_t n = need_of(in);
    if (n > 0)
        take(w, in, t, n);
}

void gpus_release(struct worker *w, struct inst *in)
{
    w->gpu_busy &= ~in->gpu_mask;
    in->gpu_mask = 0;
}

/* The worker of p with a free slot and n free devices, the fewest free first (best fit). */
static struct worker *pick(struct pool *p, uint32_t n)
{
    struct worker *best = NULL;
    uint32_t best_free = UINT32_MAX;
    for (size_t k = 0; k < p->n_workers; k++) {
        struct worker *w = p->workers[k];
        if (w->inflight >= w->slots)
            continue;
        uint32_t f = free_count(w);
        if (f >= n && f < best_free) {
            best = w;
            best_free = f;
        }
    }
    return best;
}

void gpus_dispatch(struct sched *s, struct pool *p, struct tr_buf *args)
{
    while (p->n_gheap > 0) {
        struct inst *top = p->gheap[0];
        struct worker *w = pick(p, need_of(top));
        if (w == NULL)
            return;
        gpus_remove(p, top);
        dispatch_inst(s, w, top, args);
    }
}

/* ====================================================================== */
/* Submit-time check and what the API shows                                */
/* ====================================================================== */

static uint32_t pool_max_gpus(const struct pool *p)
{
    uint32_t m = 0;
    for (size_t i = 0; i < p->n_workers; i++)
        m = TR_MAX(m, p->workers[i]->n_dev);
    return m;
}

int gpus_check_fit(struct sched *s, const struct tr_pipeline_def *def, struct tr_error *err)
{
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        const struct tr_task_def *td = &def->tasks[i];
        if (td->gpus == 0)
            continue;
        const char *name = def->pools[td->pool];
        const struct pool *p = tr_hmap_get(&s->pools, name, strlen(name));
        if (p == NULL || p->n_workers == 0)
            continue; /* nobody to ask: it waits, and the API says for what */
        uint32_t m = pool_max_gpus(p);
        if (m < td->gpus)
            return tr_error_set(err, TR_EINVAL,
                                "task '%s' asks for %u GPUs, but no worker of pool '%s' has "
                                "that many (the largest of its %zu workers has %u)",
                                td->name, td->gpus, name, p->n_workers, m);
    }
    return 0;
}

json_t *gpus_waiting_json(struct inst *in)
{
    if (in->state != ST_READY || !gpus_wanted(in))
        return NULL;
    struct pool *p = inst_pool(in);
    uint32_t n = need_of(in), m = pool_max_gpus(p);
    char msg[256 + 64];
    if (p->n_workers == 0)
        snprintf(msg, sizeof(msg), "for a worker of pool '%.200s' with %u GPUs (none connected)",
                 p->name, n);
    else if (m < n)
        snprintf(msg, sizeof(msg), "for a worker of pool '%.200s' with %u GPUs (the largest "
                 "has %u)", p->name, n, m);
    else
        snprintf(msg, sizeof(msg), "for %u free GPUs on a worker of pool '%.200s'", n, p->name);
    return json_string(msg);
}

json_t *gpus_worker_json(const struct worker *w)
{
    json_t *arr = json_array();
    for (uint32_t i = 0; arr && i < w->n_dev; i++) {
        const struct gpu_dev *d = &w->dev[i];
        json_t *o = json_object();
        json_object_set_new(o, "index", json_integer(d->index));
        json_object_set_new(o, "name", json_string(d->name));
        json_object_set_new(o, "mem_total_mb", json_integer((json_int_t)d->mem_total_mb));
        json_object_set_new(o, "mem_used_mb", json_integer((json_int_t)d->mem_used_mb));
        json_object_set_new(o, "util", d->util >= 0 ? json_integer(d->util) : json_null());
        json_object_set_new(o, "busy", json_boolean(w->gpu_busy & (1ull << i)));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* Appends v to b escaped as a Prometheus label value (backslash, quote, newline). */
static int add_label(struct tr_buf *b, const char *v)
{
    for (; *v; v++) {
        int rc = *v == '\\' ? tr_buf_add(b, "\\\\", 2)
                 : *v == '"' ? tr_buf_add(b, "\\\"", 2)
                 : *v == '\n' ? tr_buf_add(b, "\\n", 2)
                              : tr_buf_addch(b, *v);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One sample line: name{worker=..,pool=..,gpu=..,name=..} value. */
static int add_sample(struct tr_buf *b, const char *metric, const struct worker *w,
                      const struct gpu_dev *d, double v)
{
    int rc = tr_buf_addf(b, "%s{worker=\"", metric);
    if (rc == 0)
        rc = add_label(b, w->id);
    if (rc == 0)
        rc = tr_buf_addstr(b, "\",pool=\"");
    if (rc == 0)
        rc = add_label(b, w->pool->name);
    if (rc == 0)
        rc = tr_buf_addf(b, "\",gpu=\"%u\",name=\"", d->index);
    if (rc == 0)
        rc = add_label(b, d->name);
    if (rc == 0)
        rc = tr_buf_addf(b, "\"} %.17g\n", v);
    return rc;
}

int gpus_metrics(struct sched *s, struct tr_buf *b)
{
    static const struct
    {
        const char *name, *help;
    } m[] = {
        {"trellis_gpu_memory_total_bytes", "GPU memory, per device of each worker."},
        {"trellis_gpu_memory_used_bytes", "GPU memory in use, per device (heartbeats)."},
        {"trellis_gpu_utilization_ratio", "GPU busy fraction, per device (NVML; absent if "
                                          "unknown)."},
        {"trellis_gpu_assigned", "1 while a task holds the device."},
    };
    int rc = 0;
    for (size_t k = 0; k < TR_ARRAY_LEN(m) && rc == 0; k++) {
        rc = tr_buf_addf(b, "# HELP %s %s\n# TYPE %s gauge\n", m[k].name, m[k].help, m[k].name);
        size_t it = 0;
        struct worker *w;
        while (rc == 0 && (w = tr_hmap_next(&s->workers, &it)) != NULL) {
            for (uint32_t i = 0; i < w->n_dev && rc == 0; i++) {
                const struct gpu_dev *d = &w->dev[i];
                double v = k == 0   ? (double)d->mem_total_mb * 1048576.0
                           : k == 1 ? (double)d->mem_used_mb * 1048576.0
                           : k == 2 ? d->util / 100.0
                                    : (double)((w->gpu_busy >> i) & 1);
                if (k == 2 && d->util < 0)
                    continue;
                rc = add_sample(b, m[k].name, w, d, v);
            }
        }
    }
    if (rc == 0)
        rc = tr_buf_addstr(b, "# HELP trellis_gpu_ready_tasks Ready task instances waiting for "
                              "GPUs, by pool.\n# TYPE trellis_gpu_ready_tasks gauge\n");
    size_t it = 0;
    struct pool *p;
    while (rc == 0 && (p = tr_hmap_next(&s->pools, &it)) != NULL) {
        rc = tr_buf_addstr(b, "trellis_gpu_ready_tasks{pool=\"");
        if (rc == 0)
            rc = add_label(b, p->name);
        if (rc == 0)
            rc = tr_buf_addf(b, "\"} %zu\n", p->n_gheap);
    }
    return rc;
}
