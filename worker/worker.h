/*
 * worker.h - one worker's connection to the scheduler.
 *
 * A ZeroMQ DEALER (a random routing id per connection; the worker id goes in
 * HELLO) on the caller's libuv loop.
 * It says HELLO every heartbeat interval until WELCOME comes, then
 * HEARTBEAT every interval (the one WELCOME gives). Liveness follows the
 * Paranoid Pirate pattern: when nothing at all came from the scheduler for
 * three intervals it is presumed dead, every task in flight is dropped (the
 * scheduler re-dispatches them; their results would be refused as stale),
 * and the worker opens a new socket to the next endpoint (round robin) and
 * says HELLO again. BYE from the scheduler ("unknown worker") drops the
 * tasks in flight and says HELLO again on the same socket.
 *
 * A watchdog thread (worker/watchdog.h) covers for a loop blocked inside a
 * task's code: it sends heartbeats for it, and past max_block_s it sends a
 * failed RESULT (error "worker_blocked: ...") for the task and BYE, and
 * exits the process with TR_WORKER_EXIT_BLOCKED for its supervisor to
 * restart it.
 *
 * Messages go to the executor (worker/executor.h), which runs the tasks and
 * answers through this connection. Frames that do not decode are counted
 * and logged at a limited rate; nothing the scheduler sends stops the worker.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_WORKER_H
#define TR_WORKER_WORKER_H

#include <uv.h>

#include "lib/wire/proto.h"

#define TR_WORKER_VERSION "0.1.0" /* kept in step with project(VERSION) in CMakeLists.txt */
#define TR_WORKER_MAX_ENDPOINTS 16
/* The exit status of a worker whose loop was blocked past max_block_s. */
#define TR_WORKER_EXIT_BLOCKED 70

struct tr_worker;

/* Borrowed by the worker: the strings must outlive it. */
struct tr_worker_config
{
    const char *endpoints[TR_WORKER_MAX_ENDPOINTS]; /* tcp://HOST:PORT, tried in turn */
    uint32_t n_endpoints;
    const char *id;                                 /* HELLO id */
    const char *pool;                               /* "cpu" */
    uint32_t slots;                                 /* tasks at once */
    uint32_t gpus;                                  /* --gpus N (unless gpus_auto) */
    bool gpus_auto;                                 /* --gpus auto: ask NVML */
    const char *nvml_lib;                           /* NVML file, NULL: the default */
    struct tr_kv labels[TR_PROTO_MAX_LABELS];
    uint32_t n_labels;
    size_t lua_mem_max;                             /* bytes per pipeline state, 0 = none */
    uint32_t heartbeat_ms;                          /* until WELCOME says otherwise; 0 = 1000 */
    const char *curve_server;  /* scheduler's Z85 public key, or NULL: no CURVE */
    const char *curve_public;  /* this worker's Z85 key pair (with curve_server) */
    const char *curve_secret;
    double max_block_s;        /* loop blocked this long: fail the task and exit; 0 = never */
};

/*
 * A new worker on loop, not connected yet. NULL with err set when out of
 * memory or when ZeroMQ cannot start.
 */
struct tr_worker *tr_worker_new(uv_loop_t *loop, const struct tr_worker_config *cfg,
                                struct tr_error *err) TR_MUST_CHECK;

/* Connects to the first endpoint and says HELLO. 0, or a negative code with err set. */
int tr_worker_start(struct tr_worker *w, struct tr_error *err) TR_MUST_CHECK;

/*
 * Says BYE (with reason) when connected, drops the tasks in flight, closes
 * the socket and every handle. The worker is freed from the last close
 * callback, so the loop must run afterwards; w must not be used after this
 * call. NULL-safe.
 */
void tr_worker_close(struct tr_worker *w, const char *reason);

#endif
