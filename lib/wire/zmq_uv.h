/*
 * zmq_uv.h - a ZeroMQ socket on a libuv loop.
 *
 * The one place that bridges ZeroMQ into libuv. ZMQ_FD is edge-triggered: it
 * signals "look at ZMQ_EVENTS", and after any send or receive the edge may
 * already have been consumed. So this module drains the socket until
 * ZMQ_EVENTS reports no ZMQ_POLLIN, at most `batch` messages per loop turn
 * (the rest continue from a uv_idle handle so other handles are not
 * starved), and the owner calls tr_zmq_uv_kick after every batch of sends
 * made outside the message callback.
 *
 * The socket stays the caller's: tr_zmq_uv_close does not close it, and the
 * caller must not close it from inside the message callback (the drain goes
 * on reading it after the callback returns): call tr_zmq_uv_close, then close
 * the socket from a later callback, as the worker's reconnect timer does.
 * Loop thread only.
 */
#ifndef TR_ZMQ_UV_H
#define TR_ZMQ_UV_H

#include <uv.h>

#include "lib/base/error.h"

struct tr_zmq_uv;

/*
 * One received message. For a ROUTER socket `ident` is the peer's routing id;
 * for a DEALER it is empty. Views valid during the callback only.
 */
typedef void (*tr_zmq_msg_fn)(void *arg, const void *ident, size_t ident_len, const void *data,
                              size_t len, int nparts);

/*
 * Puts zsock on loop. is_router: messages carry an identity frame first.
 * batch: messages handled per turn at most (0 = 4096). NULL when out of memory
 * or when ZMQ_FD cannot be read.
 */
struct tr_zmq_uv *tr_zmq_uv_open(uv_loop_t *loop, void *zsock, bool is_router, uint32_t batch,
                                tr_zmq_msg_fn on_msg, void *arg) TR_MUST_CHECK;

/*
 * Sends one message (identity frame first when ident is not NULL), without
 * blocking. 0, TR_EAGAIN (high-water mark reached), or a negative errno
 * (-EHOSTUNREACH for an unknown ROUTER peer). Call tr_zmq_uv_kick after a
 * batch of sends made outside the message callback.
 */
int tr_zmq_uv_send(struct tr_zmq_uv *z, const void *ident, size_t ident_len, const void *data,
                   size_t len) TR_MUST_CHECK;

/* Re-checks ZMQ_EVENTS and schedules a drain if messages are waiting. */
void tr_zmq_uv_kick(struct tr_zmq_uv *z);

/* Stops watching; frees z from the handles' close callbacks. NULL-safe. */
void tr_zmq_uv_close(struct tr_zmq_uv *z);

/*
 * During the message callback of a ROUTER: the "User-Id" the ZAP handler
 * set for the peer's connection (lib/wire/curve.c sets the peer's public
 * key, Z85), or NULL without authentication. Valid during the callback only.
 */
const char *tr_zmq_uv_peer_user(struct tr_zmq_uv *z);

/* Messages with more parts than expected, counted (they are dropped). */
uint64_t tr_zmq_uv_bad_parts(const struct tr_zmq_uv *z);

#endif
