/*
 * nvml.h - NVIDIA's management library, loaded at run time.
 *
 * The worker binary does not link NVML: `--gpus auto` dlopen()s
 * libnvidia-ml.so.1 (or the file TRELLIS_NVML_LIB names) and looks up the
 * few functions it uses, so the same binary runs on machines without an
 * NVIDIA driver (and reports 0 GPUs there, saying why).
 *
 * tr_nvml_open and tr_nvml_read may block in the driver for a moment: the
 * worker calls tr_nvml_read from libuv's thread pool, never on its loop.
 * An open library may be read from one thread at a time.
 */
#ifndef TR_WORKER_NVML_H
#define TR_WORKER_NVML_H

#include "lib/base/error.h"

struct tr_nvml;

/* One device as NVML reports it. */
struct tr_nvml_gpu
{
    uint32_t index;
    char name[96];
    uint64_t mem_total_mb;
    uint64_t mem_used_mb;
    int32_t util;          /* percent, -1 when NVML does not say */
};

/*
 * Loads NVML (path, or TRELLIS_NVML_LIB, or libnvidia-ml.so.1) and calls
 * nvmlInit_v2. Returns the handle, or NULL with err saying why (no library,
 * a missing symbol, or the error nvmlInit gave).
 */
struct tr_nvml *tr_nvml_open(const char *path, struct tr_error *err) TR_MUST_CHECK;

/* Devices NVML sees (at most max are read); 0 or a negative TR_E* code with err set. */
int tr_nvml_count(struct tr_nvml *n, uint32_t *count, struct tr_error *err) TR_MUST_CHECK;

/*
 * Reads devices 0..count-1 into out (count entries). A device whose memory or
 * utilisation cannot be read keeps 0 / -1 there; a device that cannot be
 * opened is an error. 0 or TR_EIO with err set.
 */
int tr_nvml_read(struct tr_nvml *n, struct tr_nvml_gpu *out, uint32_t count,
                 struct tr_error *err) TR_MUST_CHECK;

/* nvmlShutdown and dlclose. NULL-safe. */
void tr_nvml_close(struct tr_nvml *n);

#endif
