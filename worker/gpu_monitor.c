/*
 * gpu_monitor.c - see gpu_monitor.h.
 *
 * Two snapshots: `cur` is what heartbeats read on the loop thread, `next`
 * is written by the thread-pool job; the after-work callback (on the loop)
 * copies next into cur, so the two threads never touch the same memory.
 */
#include "worker/gpu_monitor.h"

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "worker/nvml.h"

struct tr_gpu_monitor
{
    uv_loop_t *loop;
    struct tr_nvml *nvml;     /* NULL: nothing to measure */
    uint32_t n;
    struct tr_nvml_gpu cur[TR_PROTO_MAX_GPUS];
    struct tr_nvml_gpu next[TR_PROTO_MAX_GPUS];
    int next_rc;
    uv_work_t work;
    bool busy;                /* a reading is in flight */
    bool closing;             /* free once it lands */
    struct tr_log_limiter lim;
};

struct tr_gpu_monitor *tr_gpu_monitor_open(uv_loop_t *loop, bool auto_detect, uint32_t fixed,
                                           const char *nvml_path)
{
    struct tr_gpu_monitor *m = tr_calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->loop = loop;
    if (!auto_detect) {
        m->n = TR_MIN(fixed, (uint32_t)TR_PROTO_MAX_GPUS);
        for (uint32_t i = 0; i < m->n; i++)
            m->cur[i] = (struct tr_nvml_gpu){.index = i, .util = -1};
        return m;
    }
    struct tr_error err;
    tr_error_init(&err);
    uint32_t count = 0;
    m->nvml = tr_nvml_open(nvml_path, &err);
    if (m->nvml == NULL || tr_nvml_count(m->nvml, &count, &err) < 0 ||
        tr_nvml_read(m->nvml, m->cur, TR_MIN(count, (uint32_t)TR_PROTO_MAX_GPUS), &err) < 0) {
        tr_info("--gpus auto: no GPU offered: %s", err.msg);
        tr_nvml_close(m->nvml);
        m->nvml = NULL;
        return m;
    }
    if (count > TR_PROTO_MAX_GPUS)
        tr_warn("--gpus auto: NVML sees %u GPUs; offering the first %d", count,
                TR_PROTO_MAX_GPUS);
    m->n = TR_MIN(count, (uint32_t)TR_PROTO_MAX_GPUS);
    for (uint32_t i = 0; i < m->n; i++)
        tr_info("--gpus auto: GPU %u '%s' memory %llu/%llu MiB", m->cur[i].index,
                m->cur[i].name, (unsigned long long)m->cur[i].mem_used_mb,
                (unsigned long long)m->cur[i].mem_total_mb);
    if (m->n == 0)
        tr_info("--gpus auto: NVML loaded but sees no GPU");
    return m;
}

uint32_t tr_gpu_monitor_count(const struct tr_gpu_monitor *m)
{
    return m ? m->n : 0;
}

uint32_t tr_gpu_monitor_fill(const struct tr_gpu_monitor *m, struct tr_gpu_info *out,
                             uint32_t max)
{
    uint32_t n = m ? TR_MIN(m->n, max) : 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct tr_nvml_gpu *g = &m->cur[i];
        out[i] = (struct tr_gpu_info){
            .index = g->index,
            .name = tr_str_c(g->name),
            .mem_total_mb = g->mem_total_mb,
            .mem_used_mb = g->mem_used_mb,
            .util = g->util,
        };
    }
    return n;
}

static void read_work(uv_work_t *req)
{
    struct tr_gpu_monitor *m = req->data;
    struct tr_error err;
    tr_error_init(&err);
    m->next_rc = tr_nvml_read(m->nvml, m->next, m->n, &err);
}

static void read_done(uv_work_t *req, int status)
{
    struct tr_gpu_monitor *m = req->data;
    m->busy = false;
    if (m->closing) {
        tr_nvml_close(m->nvml);
        tr_free(m);
        return;
    }
    if (status == 0 && m->next_rc == 0)
        memcpy(m->cur, m->next, sizeof(m->cur[0]) * m->n);
    else
        tr_log_limited(&m->lim, "cannot read the GPUs' memory and load from NVML", "", 0);
}

void tr_gpu_monitor_refresh(struct tr_gpu_monitor *m)
{
    if (m == NULL || m->nvml == NULL || m->busy || m->n == 0)
        return;
    m->work.data = m;
    if (uv_queue_work(m->loop, &m->work, read_work, read_done) == 0)
        m->busy = true;
}

void tr_gpu_monitor_close(struct tr_gpu_monitor *m)
{
    if (m == NULL)
        return;
    if (m->busy) {
        m->closing = true;
        return;
    }
    tr_nvml_close(m->nvml);
    tr_free(m);
}
