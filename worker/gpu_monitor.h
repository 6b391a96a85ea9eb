/*
 * gpu_monitor.h - the GPUs a worker offers, and their memory and load.
 *
 * `--gpus N` offers N devices (indices 0..N-1) that nothing measures (no
 * NVIDIA library needed: machines without NVML, tests, a GPU given by
 * hand). `--gpus auto` asks NVML (worker/nvml.h) at start; without a driver
 * (no library, nvmlInit failing) the worker offers 0 GPUs and logs why.
 * With NVML, each heartbeat asks for a fresh reading on libuv's thread pool
 * (the driver may take a while), and the next heartbeat carries it.
 *
 * Loop thread only (the reading itself runs on the thread pool).
 */
#ifndef TR_WORKER_GPU_MONITOR_H
#define TR_WORKER_GPU_MONITOR_H

#include <uv.h>

#include "lib/wire/proto.h"

struct tr_gpu_monitor;

/*
 * auto_detect: ask NVML (nvml_path, or TRELLIS_NVML_LIB, or the default
 * name); otherwise offer `fixed` unmeasured devices. Never fails for want of
 * a GPU: NULL only when out of memory.
 */
struct tr_gpu_monitor *tr_gpu_monitor_open(uv_loop_t *loop, bool auto_detect, uint32_t fixed,
                                           const char *nvml_path) TR_MUST_CHECK;

/* Devices offered. */
uint32_t tr_gpu_monitor_count(const struct tr_gpu_monitor *m);

/* The latest reading into out (views valid until the next refresh completes). */
uint32_t tr_gpu_monitor_fill(const struct tr_gpu_monitor *m, struct tr_gpu_info *out,
                             uint32_t max);

/* Starts a reading in the thread pool unless one runs or nothing is measured. */
void tr_gpu_monitor_refresh(struct tr_gpu_monitor *m);

/* Frees it (after a reading in flight ends). NULL-safe. */
void tr_gpu_monitor_close(struct tr_gpu_monitor *m);

#endif
