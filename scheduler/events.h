/*
 * events.h - live events of runs over server-sent events (events.c):
 * GET /v1/runs/{id}/events and GET /v1/events (docs/api.md, "Events").
 *
 * Part "api" (it serves routes and reads the core). The core tells it of
 * every task-state, run-state and log change through the run observer
 * (model.h), LLM token deltas included; it writes to
 * its clients only after the loop turn's commit (events_flush, called by
 * sched.c's end_of_turn), so a client never sees a change a crash could
 * still undo.
 *
 * What is kept: every run counts its events (run->ev_seq), which costs one
 * increment when nobody watches. Once a client watches a run, the run keeps
 * a log of its formatted events (at most EV_RUN_EVENTS events and
 * EV_RUN_BYTES bytes; older ones go first) until it leaves memory
 * (--keep-runs), or, once finished and unwatched, until the logs of all runs
 * pass EV_LOGS_BUDGET; a resuming client (Last-Event-ID) is replayed from it. One log of at most
 * EV_ALL_EVENTS events serves GET /v1/events once a client has asked for it.
 * Anything older is summed up by the current state (a new client's opening
 * snapshot).
 */
#ifndef TR_SCHED_EVENTS_H
#define TR_SCHED_EVENTS_H

#include <uv.h>

#include "lib/base/log.h"
#include "lib/http/http_server.h"
#include "scheduler/core.h"
#include "scheduler/webhooks.h"

#define EV_RUN_EVENTS 8192          /* events kept per watched run */
#define EV_RUN_BYTES (2u << 20)     /* bytes of them */
#define EV_ALL_EVENTS 8192          /* events kept for GET /v1/events */
#define EV_ALL_BYTES (8u << 20)     /* bytes of them */
#define EV_LOGS_BUDGET (64u << 20)  /* bytes of the logs of finished runs nobody watches */
#define EV_HEARTBEAT_MS 15000       /* a comment line to every client this often */
#define EV_GRACE_MS 2000            /* a resumed client is not dropped for slowness before this */

struct api;
struct ev_conn;
struct ev_ring;

struct events
{
    uv_loop_t *loop;
    struct core *core;
    struct tr_state *state;
    const uint64_t *epoch;        /* the dispatch's epoch: the high half of event ids */
    uint32_t max_sse;             /* --max-sse: open streams at most */
    size_t queue_max;             /* --sse-queue-bytes: unread bytes per client at most */
    struct run_observer obs;      /* given to the core */
    struct ev_conn *conns;        /* every open stream */
    uint32_t n_conns;
    struct ev_run *dirty;         /* runs with events or clients to serve at the flush */
    bool all_dirty;               /* GET /v1/events has something to send */
    bool all_grew;                /* events were added to its log since the last flush */
    struct ev_ring *all;          /* the log of GET /v1/events, once asked for */
    uint64_t all_seq;             /* events of GET /v1/events so far */
    size_t logs_bytes;            /* bytes in the runs' logs */
    uv_timer_t heartbeat;
    bool open;
    /* Counters for /metrics. */
    uint64_t n_sent;              /* events written to clients */
    uint64_t n_slow;              /* clients dropped for falling behind */
    uint64_t n_refused;           /* streams refused at --max-sse */
    struct tr_log_limiter slow_log;
    struct webhooks *wh;          /* told of every run that ends, or NULL (webhooks.h) */
    struct api *api;              /* for tenants (set by the handlers) */
};

void events_init(struct events *ev, uv_loop_t *loop, struct core *core, struct tr_state *state,
                 const uint64_t *epoch, uint32_t max_sse, size_t queue_max);
/* Ends every stream (the server is closing) and frees the logs. */
void events_release(struct events *ev);
/* Writes what the turn made durable to the clients (sched.c, after the commit). */
void events_flush(struct events *ev);

/* Appends the event streams' and webhooks' lines of /metrics to *text (tr_malloc'd, *len
 * bytes), reallocating it: 0 or TR_ENOMEM. */
int events_metrics(const struct events *ev, char **text, size_t *len) TR_MUST_CHECK;

/* Route handlers (arg: the struct api). */
void h_run_events(struct tr_http_req *req, void *arg);
void h_events(struct tr_http_req *req, void *arg);

#endif
