/*
 * gpus.c - the devices of one worker and which are held (see gpus.h). The
 * GPU ready queue of each pool and the submit-time check are in dispatch.c
 * ("GPU tasks"), which knows the pools.
 */
#include "scheduler/gpus.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"

void worker_gpus_release(struct worker_gpus *g)
{
    tr_free_null(&g->dev);
    g->n = 0;
    g->busy = 0;
}

void worker_gpus_hello(struct worker_gpus *g, const char *id, const struct tr_msg_hello *h)
{
    worker_gpus_release(g);
    uint32_t n = h->n_gpu_info > 0 ? h->n_gpu_info : h->gpus;
    if (n > TR_PROTO_MAX_GPUS) {
        tr_warn("worker=%s offers %u GPUs; using the first %d", id, n, TR_PROTO_MAX_GPUS);
        n = TR_PROTO_MAX_GPUS;
    }
    if (n == 0)
        return;
    g->dev = tr_calloc(n, sizeof(*g->dev));
    if (g->dev == NULL) {
        tr_err("out of memory: worker=%s is used without its GPUs", id);
        return;
    }
    g->n = n;
    for (uint32_t i = 0; i < n; i++) {
        struct gpu_dev *d = &g->dev[i];
        d->util = -1;
        d->index = i;
        if (i < h->n_gpu_info) {
            const struct tr_gpu_info *gi = &h->gpu_info[i];
            d->index = gi->index;
            size_t len = TR_MIN(gi->name.len, sizeof(d->name) - 1);
            memcpy(d->name, gi->name.p, len);
            d->name[len] = '\0';
            d->mem_total_mb = gi->mem_total_mb;
            d->mem_used_mb = gi->mem_used_mb;
            d->util = gi->util;
        }
    }
}

void worker_gpus_heartbeat(struct worker_gpus *g, const struct tr_msg_heartbeat *hb)
{
    for (uint32_t k = 0; k < hb->n_gpus; k++) {
        const struct tr_gpu_info *gi = &hb->gpus[k];
        for (uint32_t i = 0; i < g->n; i++) {
            if (g->dev[i].index == gi->index) {
                g->dev[i].mem_total_mb = gi->mem_total_mb;
                g->dev[i].mem_used_mb = gi->mem_used_mb;
                g->dev[i].util = gi->util;
                break;
            }
        }
    }
}

uint32_t worker_gpus_free(const struct worker_gpus *g)
{
    uint64_t all = g->n >= 64 ? ~0ull : (1ull << g->n) - 1;
    return (uint32_t)__builtin_popcountll(all & ~g->busy);
}

uint64_t worker_gpus_take(struct worker_gpus *g, uint32_t n, struct tr_msg_task *t)
{
    uint64_t mask = 0;
    t->n_gpus = 0;
    for (uint32_t i = 0; i < g->n && t->n_gpus < n; i++) {
        if (g->busy & (1ull << i))
            continue;
        mask |= 1ull << i;
        t->gpus[t->n_gpus++] = g->dev[i].index;
    }
    TR_ASSERT(t->n_gpus == n);
    g->busy |= mask;
    return mask;
}

void worker_gpus_put(struct worker_gpus *g, uint64_t mask)
{
    g->busy &= ~mask;
}

json_t *worker_gpus_json(const struct worker_gpus *g)
{
    json_t *arr = json_array();
    for (uint32_t i = 0; arr && i < g->n; i++) {
        const struct gpu_dev *d = &g->dev[i];
        json_t *o = json_object();
        json_object_set_new(o, "index", json_integer(d->index));
        json_object_set_new(o, "name", json_string(d->name));
        json_object_set_new(o, "mem_total_mb", json_integer((json_int_t)d->mem_total_mb));
        json_object_set_new(o, "mem_used_mb", json_integer((json_int_t)d->mem_used_mb));
        json_object_set_new(o, "util", d->util >= 0 ? json_integer(d->util) : json_null());
        json_object_set_new(o, "busy", json_boolean(g->busy & (1ull << i)));
        json_array_append_new(arr, o);
    }
    return arr;
}

const char *const gpu_metric_names[GPU_METRIC_COUNT] = {
    "trellis_gpu_memory_total_bytes", "trellis_gpu_memory_used_bytes",
    "trellis_gpu_utilization_ratio", "trellis_gpu_assigned"};
const char *const gpu_metric_help[GPU_METRIC_COUNT] = {
    "GPU memory, per device of each worker.",
    "GPU memory in use, per device (from heartbeats).",
    "GPU busy fraction, per device (NVML; absent when unknown).",
    "1 while a task holds the device."};

int prom_label(struct tr_buf *b, const char *s)
{
    for (; *s; s++) {
        int rc = *s == '\\'  ? tr_buf_add(b, "\\\\", 2)
                 : *s == '"' ? tr_buf_add(b, "\\\"", 2)
                 : *s == '\n' ? tr_buf_add(b, "\\n", 2)
                              : tr_buf_addch(b, *s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int worker_gpus_metric(const struct worker_gpus *g, enum gpu_metric which, const char *worker,
                       const char *pool, struct tr_buf *b)
{
    for (uint32_t i = 0; i < g->n; i++) {
        const struct gpu_dev *d = &g->dev[i];
        if (which == GPU_UTIL && d->util < 0)
            continue;
        double v = which == GPU_MEM_TOTAL  ? (double)d->mem_total_mb * 1048576.0
                   : which == GPU_MEM_USED ? (double)d->mem_used_mb * 1048576.0
                   : which == GPU_UTIL     ? d->util / 100.0
                                           : (double)((g->busy >> i) & 1);
        int rc = tr_buf_addf(b, "%s{worker=\"", gpu_metric_names[which]);
        if (rc == 0)
            rc = prom_label(b, worker);
        if (rc == 0)
            rc = tr_buf_addstr(b, "\",pool=\"");
        if (rc == 0)
            rc = prom_label(b, pool);
        if (rc == 0)
            rc = tr_buf_addf(b, "\",gpu=\"%u\",name=\"", d->index);
        if (rc == 0)
            rc = prom_label(b, d->name);
        if (rc == 0)
            rc = tr_buf_addf(b, "\"} %.17g\n", v);
        if (rc < 0)
            return rc;
    }
    return 0;
}
