/*
 * workers.h - the fleet: the worker registry, pools of workers, heartbeats,
 * and each worker's in-flight list and credit (workers.c).
 *
 * Part "fleet", below dispatch in the scheduler's order: it knows the model
 * and the transport. What the fleet cannot decide alone (a worker joined or
 * left: its tasks go back to the ready queue, leadership registers it) goes
 * up through the hooks given at init.
 */
#ifndef TR_SCHED_WORKERS_H
#define TR_SCHED_WORKERS_H

#include <jansson.h>
#include <uv.h>

#include "lib/base/hmap.h"
#include "lib/wire/proto.h"
#include "scheduler/gpus.h"
#include "scheduler/model.h"
#include "scheduler/transport.h"

/* The workers of one pool (named by tasks' and workers' `pool`). */
struct pool
{
    char *name;
    struct worker **workers; /* connected workers of this pool */
    size_t n_workers;
    size_t cap_workers;
    size_t rr;               /* round-robin position for dispatch */
};

struct worker
{
    char *id;                /* routing id = worker id (owned); also the map key */
    size_t id_len;
    struct pool *pool;
    uint32_t slots;
    uint32_t inflight;       /* dispatched, no result yet */
    uint32_t running;        /* of those, counted as running (within slots) */
    uint32_t gpus, cpus;
    uint64_t mem_mb;
    json_t *labels;          /* object */
    char *version;
    double connected_at;
    double last_seen;        /* wall clock */
    uint64_t last_seen_ns;   /* monotonic */
    double ewma_run_s;       /* moving average of its tasks' run time, 0 until known */
    struct inst *head;       /* in-flight list, oldest first */
    struct inst *tail;
    struct worker_gpus g;    /* its GPUs, and which are held (gpus.h) */
};

struct fleet_hooks
{
    void *arg;
    /* A worker registered (before its WELCOME is sent). May be NULL. */
    void (*up)(void *arg, struct worker *w);
    /* A worker is being removed: its in-flight tasks must leave it (the
     * callee requeues them) before it is freed. */
    void (*down)(void *arg, struct worker *w);
};

struct fleet
{
    struct tr_hmap workers;   /* id -> struct worker */
    struct tr_hmap pools;     /* name -> struct pool */
    struct transport *tp;     /* NULL until fleet_start */
    uv_timer_t heartbeat;     /* heartbeats and dead-worker checks */
    bool heartbeat_on;
    uint32_t heartbeat_ms;
    uint64_t epoch;           /* told to workers in WELCOME */
    struct fleet_hooks hooks;
};

void fleet_init(struct fleet *f, uint32_t heartbeat_ms, const struct fleet_hooks *hooks);
/* Leading: sends through tp and starts heartbeats on loop. */
void fleet_start(struct fleet *f, uv_loop_t *loop, struct transport *tp, uint64_t epoch);
/* Says BYE to every worker and frees them and the pools. */
void fleet_release(struct fleet *f);

/* The pool of this name, made when new; NULL when out of memory. */
struct pool *fleet_pool(struct fleet *f, const char *name, size_t len);
struct worker *fleet_find(struct fleet *f, const void *ident, size_t len);
/* Registers a worker from its HELLO (a previous session of the same id is
 * removed first) and answers WELCOME; NULL when out of memory. */
struct worker *fleet_hello(struct fleet *f, const void *ident, size_t ident_len,
                           const struct tr_msg_hello *h);
/* The worker was heard from. */
void fleet_seen(struct worker *w);
/* Removes a worker (hooks.down requeues its tasks) and frees it. */
void fleet_remove(struct fleet *f, struct worker *w, const char *why);

/* In-flight bookkeeping, in dispatch order. */
void worker_inflight_add(struct worker *w, struct inst *in);
void worker_inflight_del(struct worker *w, struct inst *in);

#endif
