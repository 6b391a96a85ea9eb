/*
 * dispatch.h - ready queues per pool, priority, credit, and the dispatch ids
 * that fence results (dispatch.c).
 *
 * Part "dispatch", between the core and the fleet in the scheduler's order:
 * it knows the fleet (whose workers have credit), the timers (deadlines),
 * the batch (TASK messages wait for the commit) and the model. What only the
 * core can do for an instance about to be sent (serve it from the cache,
 * fail it) goes up through the hooks given at init.
 */
#ifndef TR_SCHED_DISPATCH_H
#define TR_SCHED_DISPATCH_H

#include "lib/base/hmap.h"
#include "scheduler/batch.h"
#include "scheduler/counters.h"
#include "scheduler/model.h"
#include "scheduler/timers.h"
#include "scheduler/workers.h"

/* The ready instances of one pool: a binary heap, highest priority first and
 * FIFO among equals. */
struct ready_queue
{
    struct pool *pool;       /* the fleet's pool of the same name */
    uint32_t runs;           /* unfinished runs with a task in this pool */
    struct inst **heap;
    size_t n_heap;
    size_t cap_heap;
    struct ready_queue *gpu; /* the pool's tasks that need GPUs (same order), NULL until one */
    /* Placement (dispatch_place.c). In a pool's queue: its label queues, one
     * per distinct label set. In a label queue: the labels and the next one. */
    struct ready_queue *labeled;
    char **labels;           /* key, value, ... (owned copies), n_labels pairs */
    uint16_t n_labels;
    double unmatched_since;  /* wall clock since no connected worker matches, 0 when one does */
};

struct dispatch_hooks
{
    void *arg;
    /* A cache=true task about to be sent: true when the core served it from
     * the cache (it is then complete and is not sent). */
    bool (*cached)(void *arg, struct inst *in, struct tr_str args);
    /* The instance cannot be sent (out of memory for its arguments). */
    void (*fail)(void *arg, struct inst *in, const char *error);
    /* The tenant of a run (asked only for workers restricted to a tenant). */
    void *tenant_arg;
    const char *(*tenant)(void *tenant_arg, const struct run *r);
    /* Optional: true when the gate holds the instance instead of the ready
     * queue (budgets.c: the provider it calls is out of quota); the gate
     * readies it again later. */
    bool (*gate)(void *gate_arg, struct inst *in);
    void *gate_arg;
};

struct dispatch
{
    struct tr_hmap queues;    /* pool name -> struct ready_queue */
    struct tr_hmap ids;       /* dispatch id (8 bytes) -> struct inst: the fencing table */
    uint64_t epoch;           /* of this leadership, in every TASK (fencing) */
    uint64_t next_seq;        /* FIFO order of ready instances */
    uint32_t prefetch;        /* --prefetch */
    double timeout_grace_s;
    struct fleet *fleet;
    struct batch *batch;
    struct timers *timers;
    struct counters *cnt;
    struct dispatch_hooks hooks;
    /* Run controls (dispatch_place.c). */
    struct tr_hmap conc;      /* concurrency key -> struct conc_key */
    double unschedulable_s;   /* --unschedulable-timeout: a labelled task nobody can take fails */
};

void dispatch_init(struct dispatch *d, const struct sched_config *cfg, struct fleet *fleet,
                   struct batch *batch, struct timers *timers, struct counters *cnt,
                   const struct dispatch_hooks *hooks);
void dispatch_release(struct dispatch *d);

/* Queues a pending instance in its pool's ready queue. */
void dispatch_ready(struct dispatch *d, struct inst *in);
/* Takes an instance out of its ready queue, if it is in one. */
void dispatch_unready(struct dispatch *d, struct inst *in);
/* Sends ready instances to workers with credit, pool by pool (TASK messages
 * go to the batch), at most DISPATCH_TURN_BYTES of them; true when it stopped
 * there with work left (the caller makes another turn come at once). */
bool dispatch_all(struct dispatch *d);
/* Takes (+1) or drops (-1) a reference to each pool of a run's pipeline. */
void dispatch_pools_ref(struct dispatch *d, const struct tr_pipeline_def *def, int delta);
/* Frees the pools nothing refers to (no ready task, no worker, no unfinished
 * run): their queues and the fleet's entries. Not while pools are iterated. */
void dispatch_sweep(struct dispatch *d);
/* The instance of a current dispatch, or NULL (an old or unknown id). */
struct inst *dispatch_find(struct dispatch *d, uint64_t id);
/* Ends the current dispatch of in: forgets its id and frees the worker's credit. */
void dispatch_end(struct dispatch *d, struct inst *in);
/* Tasks a worker may hold beyond its slots now (adaptive, at most --prefetch). */
uint32_t worker_prefetch(const struct dispatch *d, const struct worker *w);
/* Ready instances of the pool of this name (without those waiting for GPUs). */
size_t dispatch_ready_count(struct dispatch *d, const char *pool, size_t len);
/* Ready instances of the pool of this name that wait for GPUs. */
size_t dispatch_gpu_ready_count(struct dispatch *d, const char *pool, size_t len);
/*
 * Submit time: TR_EINVAL with a message when a task of def asks for more GPUs
 * than every connected worker of its pool has; 0 when each fits, or when its
 * pool has no worker connected (the task then waits, see dispatch_gpu_waiting).
 */
int dispatch_gpu_check(struct dispatch *d, const struct tr_pipeline_def *def,
                       struct tr_error *err) TR_MUST_CHECK;
/* For a ready task that needs GPUs: what it waits for into why; false otherwise. */
bool dispatch_gpu_waiting(struct dispatch *d, struct inst *in, char *why, size_t size);

/* Placement and concurrency (dispatch_place.c). */

/* A ready instance's concurrency place is given back: called when it ends,
 * fails an attempt or is cancelled; the next waiter of its key becomes ready.
 * No-op when it holds none. */
void dispatch_conc_release(struct dispatch *d, struct inst *in);
/* For a ready instance held back by placement or concurrency: what it waits
 * for into why; false otherwise. */
bool dispatch_place_waiting(struct dispatch *d, struct inst *in, char *why, size_t size);
/* For an unfinished run with a ready task whose labels no connected worker
 * carries: which, into why; false otherwise. O(tasks of its pipeline). */
bool dispatch_run_waiting(struct dispatch *d, struct run *r, char *why, size_t size);
/* Once a second: reports label queues that no connected worker can serve
 * (log line, gauge), and fails their tasks `unschedulable` once they waited
 * longer than unschedulable_s (0: never). */
void dispatch_place_check(struct dispatch *d, double now);
/* Ready instances that no connected worker's labels match (the gauge). */
size_t dispatch_unschedulable_count(struct dispatch *d);
/* Dispatched or ready places held per concurrency key, for /metrics: calls
 * fn for each key in use. */
void dispatch_conc_each(struct dispatch *d,
                        void (*fn)(void *arg, const char *key, uint32_t held, uint32_t limit,
                                   size_t waiting),
                        void *arg);

#endif
