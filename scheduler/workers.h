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
    char *id;                /* worker id from its HELLO (owned); key of fleet.worker_ids */
    size_t id_len;
    char *ident;             /* routing id of the connection that said HELLO (owned); key
                              * of fleet.workers: messages count as this worker's only
                              * when they come on that connection */
    size_t ident_len;
    char key[41];            /* CURVE public key of that connection (Z85), "" without CURVE */
    struct pool *pool;
    uint32_t slots;          /* claimed in HELLO, at most --max-slots */
    uint32_t window;         /* tasks it may hold now: grows with the results it returns */
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
    char *tenant;            /* its key runs only this tenant's tasks; NULL: any (owned) */
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

/*
 * Slow start: a worker's claimed slots are not trusted until it runs tasks.
 * It may hold WINDOW_START tasks at first and WINDOW_STEP more for each
 * result it returns (never more than its slots plus prefetch), so one that
 * claims much and returns nothing holds little, while a real one reaches its
 * slots within two of its task run times.
 */
#define WINDOW_START 16
#define WINDOW_STEP 64
#define MAX_SLOTS_DEFAULT 10000

struct counters;

struct fleet
{
    struct tr_hmap workers;   /* connection routing id -> struct worker */
    struct tr_hmap worker_ids; /* worker id -> struct worker */
    struct counters *cnt;     /* refused HELLOs are counted here (NULL: not counted) */
    uint32_t max_slots;       /* --max-slots (0: MAX_SLOTS_DEFAULT) */
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
/*
 * Registers a worker from its HELLO and answers WELCOME; NULL when out of
 * memory or refused (answered BYE and counted: a bad worker id or pool name,
 * or the id of a live worker of another connection or CURVE key). A previous
 * session on the same connection is removed first.
 */
struct worker *fleet_hello(struct fleet *f, const void *ident, size_t ident_len,
                           const struct tr_msg_hello *h);
/* The worker was heard from. */
void fleet_seen(struct worker *w);
/* It returned a result: its window grows (slow start). */
void worker_window_grow(struct worker *w);
/* Pool names go into metrics and logs: 1 to 63 of [A-Za-z0-9_.-]. */
bool pool_name_valid(const char *name, size_t len);
/* Frees the pools with no worker for which keep(arg, pool) is false. */
void fleet_sweep_pools(struct fleet *f, bool (*keep)(void *arg, const struct pool *p),
                       void *arg);
/* Removes a worker (hooks.down requeues its tasks) and frees it. */
void fleet_remove(struct fleet *f, struct worker *w, const char *why);

/* In-flight bookkeeping, in dispatch order. */
void worker_inflight_add(struct worker *w, struct inst *in);
void worker_inflight_del(struct worker *w, struct inst *in);

#endif
