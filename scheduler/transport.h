/*
 * transport.h - how the scheduler talks to workers, behind a small interface.
 *
 * Part "transport", low in the scheduler's order: it knows the counters and
 * lib/wire. A struct transport sends one frame to one worker identity; the
 * daemon's is the ZeroMQ ROUTER of transport.c, unit tests put one of their
 * own that captures what would be sent. Frames that arrive are bounded and
 * decoded here (undecodable ones counted and dropped), then handed up to the
 * callback given at open: the transport calls no other part.
 */
#ifndef TR_SCHED_TRANSPORT_H
#define TR_SCHED_TRANSPORT_H

#include <msgpack.h>
#include <uv.h>

#include "lib/base/error.h"
#include "lib/wire/proto.h"
#include "scheduler/config.h"
#include "scheduler/counters.h"

struct transport_ops
{
    /* Sends one frame to the worker with this routing identity; 0 or a
     * negative code (-EHOSTUNREACH: no such peer now). */
    int (*send)(void *impl, const void *ident, size_t ident_len, const void *data, size_t len);
    /* After a burst of sends: lets the implementation flush. May be NULL. */
    void (*flush)(void *impl);
    /* During the message callback: the authenticated key of the peer's
     * connection (CURVE, Z85), or NULL without authentication. May be NULL. */
    const char *(*peer_key)(void *impl);
    /* During the message callback: the pool and tenant the peer's key is
     * restricted to (NULL each when not restricted). May be NULL. */
    void (*peer_limits)(void *impl, const char **pool, const char **tenant);
};

struct transport
{
    const struct transport_ops *ops;
    void *impl;
    msgpack_sbuffer sbuf;     /* scratch for encoding */
};

/* For transports that are not the ROUTER (tests): ops and impl, and the scratch. */
void transport_init(struct transport *t, const struct transport_ops *ops, void *impl);
void transport_release(struct transport *t);
int transport_send(struct transport *t, const void *ident, size_t ident_len, const void *data,
                   size_t len);
/* Encodes m and sends it now (not through the batch): WELCOME, HEARTBEAT, BYE,
 * PIPELINE. Failures are logged (an unreachable peer silently). */
void transport_send_msg(struct transport *t, const void *ident, size_t ident_len,
                        const struct tr_msg *m);
void transport_flush(struct transport *t);
/* See transport_ops.peer_key; NULL when the transport has none. */
const char *transport_peer_key(struct transport *t);

/* See transport_ops.peer_limits; NULLs when the transport has none. */
void transport_peer_limits(struct transport *t, const char **pool, const char **tenant);

/* A decoded frame from a worker (identity, message, and its raw bytes). */
typedef void (*transport_msg_fn)(void *arg, const void *ident, size_t ident_len,
                                 const struct tr_msg *m, const void *data, size_t len);

/* The ZeroMQ ROUTER on cfg->listen (CURVE with cfg->curve_key/allow). */
struct zmq_router;
int zmq_router_open(struct zmq_router **out, uv_loop_t *loop, const struct sched_config *cfg,
                    struct counters *cnt, transport_msg_fn on_msg, void *arg,
                    struct tr_error *err) TR_MUST_CHECK;
void zmq_router_close(struct zmq_router *z);
struct transport *zmq_router_transport(struct zmq_router *z);
/* Worker connections refused by CURVE authentication (0 without CURVE or z). */
uint64_t zmq_router_auth_refused(const struct zmq_router *z);

#endif
