/*
 * gpus.h - the GPUs of one worker: what its HELLO and heartbeats say about
 * each device, and which devices dispatches hold (gpus.c).
 *
 * Part "gpus", just below the fleet in the scheduler's order: struct worker
 * embeds a struct worker_gpus; dispatch takes devices for a task
 * (worker_gpus_take) and the fleet gives them back when the dispatch ends
 * (worker_gpus_put, from worker_inflight_del). A worker's devices are the
 * bits of a 64-bit mask, in the order its HELLO lists them (the index NVML
 * gave, or 0..N-1 for --gpus N). docs/gpus.md.
 *
 * Loop thread only.
 */
#ifndef TR_SCHED_GPUS_H
#define TR_SCHED_GPUS_H

#include <jansson.h>

#include "lib/base/buf.h"
#include "lib/wire/proto.h"

/* One device, as the worker's HELLO and heartbeats describe it. */
struct gpu_dev
{
    uint32_t index;          /* device index, as TASK names it */
    char name[96];
    uint64_t mem_total_mb;
    uint64_t mem_used_mb;
    int32_t util;            /* percent, -1 unknown */
};

struct worker_gpus
{
    uint32_t n;              /* devices: dev[0..n), bit i of busy */
    uint64_t busy;           /* devices held by dispatches */
    struct gpu_dev *dev;     /* owned, NULL without GPUs */
};

/* From HELLO (gpu_info, or `gpus` unmeasured devices); id names the worker in logs. */
void worker_gpus_hello(struct worker_gpus *g, const char *id, const struct tr_msg_hello *h);
/* Fresh memory and load from a heartbeat. */
void worker_gpus_heartbeat(struct worker_gpus *g, const struct tr_msg_heartbeat *hb);
/* Devices not held. */
uint32_t worker_gpus_free(const struct worker_gpus *g);
/* Holds n free devices (n <= worker_gpus_free), names them in t; returns their mask. */
uint64_t worker_gpus_take(struct worker_gpus *g, uint32_t n, struct tr_msg_task *t);
/* Gives back the devices of mask. */
void worker_gpus_put(struct worker_gpus *g, uint64_t mask);
void worker_gpus_release(struct worker_gpus *g);
/* The devices as a JSON array for GET /v1/workers. */
json_t *worker_gpus_json(const struct worker_gpus *g);

/* The /metrics gauges, in this order; worker_gpus_metric appends one's samples. */
enum gpu_metric
{
    GPU_MEM_TOTAL = 0,
    GPU_MEM_USED,
    GPU_UTIL,
    GPU_ASSIGNED,
    GPU_METRIC_COUNT
};
extern const char *const gpu_metric_names[GPU_METRIC_COUNT];
extern const char *const gpu_metric_help[GPU_METRIC_COUNT];
int worker_gpus_metric(const struct worker_gpus *g, enum gpu_metric which, const char *worker,
                       const char *pool, struct tr_buf *b) TR_MUST_CHECK;
/* Appends s escaped as a Prometheus label value (backslash, quote, newline). */
int prom_label(struct tr_buf *b, const char *s) TR_MUST_CHECK;

#endif
