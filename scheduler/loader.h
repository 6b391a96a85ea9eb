/*
 * loader.h - pipeline graphs by digest, read off the loop thread (loader.c).
 *
 * Part "loader", low in the scheduler's order: it knows only the model and
 * lib/lua. Runs hold references to its entries; the API loads through it;
 * recovery loads through it too.
 */
#ifndef TR_SCHED_LOADER_H
#define TR_SCHED_LOADER_H

#include <uv.h>

#include "lib/base/error.h"
#include "lib/base/hmap.h"
#include "scheduler/model.h"

struct pipes
{
    uv_loop_t *loop;
    struct tr_pipeline_limits limits; /* the sandbox for reading pipelines */
    struct tr_hmap map;       /* digest -> struct pipeline_entry */
    uint32_t loads_in_flight;
    bool stopping;            /* loads finishing now are answered "cancelled" */
};

/* Called on the loop, exactly once per load: pe, or NULL and err. */
typedef void (*load_done_fn)(struct pipeline_entry *pe, struct tr_error *err, void *arg);

void pipes_init(struct pipes *p, uv_loop_t *loop, const struct tr_pipeline_limits *limits);
/* Frees every entry (no run may hold one any more). */
void pipes_release(struct pipes *p);
struct pipeline_entry *pipe_lookup(struct pipes *p, const char *digest);
void pipe_ref(struct pipeline_entry *pe);
void pipe_unref(struct pipeline_entry *pe);
/* Loads src (copied) off the loop; done is called on the loop, exactly once. */
int pipe_load_async(struct pipes *p, const char *src, size_t len, const char *name,
                    load_done_fn done, void *arg) TR_MUST_CHECK;
/* Synchronous load, for recovery at start-up only. */
int pipe_load_sync(struct pipes *p, const char *src, size_t len, const char *name,
                   struct pipeline_entry **out, struct tr_error *err) TR_MUST_CHECK;

#endif
