/*
 * coord.h - cluster coordination for schedulers sharing one state: leader
 * election through a lease, and leased registrations of live workers.
 *
 * The scheduler core includes only this header; which store coordinates
 * (etcd, lib/state/coord_etcd.c) stays behind it, as the state backend does behind
 * lib/state/state.h. A state without coordination (SQLite: one scheduler per file)
 * has no struct tr_coord at all: tr_coord_open hands back NULL and the
 * scheduler is always the leader.
 *
 * Everything runs on the caller's libuv loop, asynchronously: no function
 * here blocks, and every callback comes from the loop, never from inside the
 * call that started it. One thread (the loop's) uses a struct tr_coord.
 *
 * Keys (docs/state.md): <prefix>leader holds the leader's advertisement,
 * attached to the leader's lease; <prefix>workers/<id> holds a worker's
 * registration, attached to a lease of its own.
 */
#ifndef TR_COORD_H
#define TR_COORD_H

#include <uv.h>

#include "lib/base/error.h"

struct tr_coord;

enum tr_coord_event_type
{
    TR_COORD_LEADER = 0,   /* this member holds the leader key now */
    TR_COORD_FOLLOWER = 1, /* another member leads: leader/len is its advertisement */
    TR_COORD_NO_LEADER = 2, /* the leader key is gone (expired, revoked, deleted): campaigning */
    TR_COORD_LOST = 3      /* this member led and no longer may: its lease expired or was
                              revoked, or the leader key was taken or deleted. Final. */
};

/* One change of the election, borrowed for the duration of the callback. */
struct tr_coord_event
{
    enum tr_coord_event_type type;
    const char *leader;    /* FOLLOWER: the leader's advertisement (NUL-terminated) */
    size_t len;
    const char *why;       /* LOST, NO_LEADER: what happened, for the log */
};

typedef void (*tr_coord_event_fn)(void *arg, const struct tr_coord_event *ev);

/*
 * Opens the coordination of the state at state_url on loop. For a state
 * without coordination (any scheme but etcd) sets *out to NULL and returns
 * 0. For etcd (the URL's endpoints, prefix and TLS options, as in
 * docs/state.md) connects lazily. TR_EINVAL for a malformed URL, TR_ENOMEM.
 * Loop thread.
 */
int tr_coord_open(uv_loop_t *loop, const char *state_url, struct tr_coord **out,
                  struct tr_error *err) TR_MUST_CHECK;

/*
 * Starts the election: grants this member's lease of ttl_s seconds, keeps it
 * alive from the loop (a renewal every third of the TTL), and campaigns with
 * a transaction that puts <prefix>leader = advert with the lease only if the
 * key does not exist. The outcome and every later change comes through cb:
 * LEADER, or FOLLOWER with the leader's advertisement; when the key goes,
 * NO_LEADER and a new campaign. Unreachable etcd is retried with a backoff.
 * Once only per handle. 0, TR_EINVAL (ttl_s 0, called twice), TR_ENOMEM.
 */
int tr_coord_campaign(struct tr_coord *c, uint32_t ttl_s, const char *advert, size_t len,
                      tr_coord_event_fn cb, void *arg) TR_MUST_CHECK;

/*
 * The tr_mono_ns() time until which this member's lease is known to be alive
 * (the send time of the last answered renewal plus the TTL); 0 before the
 * first answer. A leader acts only well before it.
 */
uint64_t tr_coord_lease_expiry_ns(const struct tr_coord *c);

/* True while this member holds the leader key (from LEADER until LOST). */
bool tr_coord_is_leader(const struct tr_coord *c);

/*
 * Registers worker id: puts <prefix>workers/<id> = value (copied) with a
 * lease of its own of ttl_s seconds, kept alive until tr_coord_worker_down.
 * A worker put again replaces its registration (the old lease is revoked).
 * Failures (etcd unreachable) are logged once and retried every second, and
 * a lease that expired meanwhile is granted anew; nothing is returned but
 * TR_ENOMEM, since a registration is an observation, not state the
 * scheduler depends on.
 */
int tr_coord_worker_up(struct tr_coord *c, const char *id, const char *value, size_t len,
                       uint32_t ttl_s) TR_MUST_CHECK;

/* Revokes worker id's lease, which deletes its key. Unknown ids are ignored. */
void tr_coord_worker_down(struct tr_coord *c, const char *id);

/*
 * Watches the feedback statistics of every pipeline (<prefix>feedback_stats/,
 * docs/state.md) from now on: cb gets each new value's record as JSON text
 * (what tr_state_decode_feedback_stats reads), whoever wrote it, this
 * member included. When history was lost (compacted while the stream was
 * down) or etcd ended the watch, cb gets json NULL (read everything again)
 * and the watch starts anew from the present. One watch per handle: a
 * second call replaces the first. 0, TR_ENOMEM, TR_ECANCELED (closing).
 * A state without coordination has no handle and so no watch: its
 * scheduler is the only writer and evaluates after its own commits.
 */
typedef void (*tr_coord_stats_fn)(void *arg, const char *json, size_t len);
int tr_coord_watch_stats(struct tr_coord *c, tr_coord_stats_fn cb, void *arg) TR_MUST_CHECK;
/* Stops that watch; cb is not called again. NULL-safe. */
void tr_coord_unwatch_stats(struct tr_coord *c);

/*
 * Closes c: a leader revokes its lease so that a standby takes over at once,
 * worker leases are revoked, and the client is freed once those answered (or
 * after one second). Run the loop until it is empty afterwards. NULL-safe.
 */
void tr_coord_close(struct tr_coord *c);

#endif
