/*
 * loader.h - pipeline graphs by digest, read off the loop thread (loader.c).
 *
 * Part "loader", low in the scheduler's order: it knows the model and the
 * sandbox (the child processes that evaluate pipeline files). Runs hold
 * references to its entries; the API and recovery load through it.
 */
#ifndef TR_SCHED_LOADER_H
#define TR_SCHED_LOADER_H

#include <uv.h>

#include "lib/base/error.h"
#include "lib/base/hmap.h"
#include "scheduler/model.h"
#include "scheduler/sandbox.h"

struct pipes
{
    uv_loop_t *loop;
    struct sandbox *sandbox;  /* reads the files (set once it is open) */
    struct tr_hmap map;       /* digest -> struct pipeline_entry */
    uint32_t loads_in_flight;
    bool stopping;            /* loads finishing now are answered "cancelled" */
};

/* Called on the loop, exactly once per load: pe, or NULL and err. */
typedef void (*load_done_fn)(struct pipeline_entry *pe, struct tr_error *err, void *arg);

void pipes_init(struct pipes *p, uv_loop_t *loop);
/* Frees every entry (no run may hold one any more). */
void pipes_release(struct pipes *p);
struct pipeline_entry *pipe_lookup(struct pipes *p, const char *digest);
void pipe_ref(struct pipeline_entry *pe);
void pipe_unref(struct pipeline_entry *pe);
/* Loads src (copied) in a sandbox process (sandbox.h); done is called on the
 * loop, exactly once, possibly before this returns. */
int pipe_load_async(struct pipes *p, const char *src, size_t len, const char *name,
                    load_done_fn done, void *arg) TR_MUST_CHECK;
/* Takes a graph read elsewhere into the cache (def is taken), or returns the
 * entry already there for its digest; NULL when out of memory. */
struct pipeline_entry *pipe_add(struct pipes *p, struct tr_pipeline_def *def, const char *name);

#endif
