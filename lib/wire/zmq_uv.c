/*
 * zmq_uv.c - drives a ZeroMQ socket from a libuv loop (see zmq_uv.h).
 *
 * Owns a uv_poll_t on ZMQ_FD and a uv_idle_t that keeps draining when a turn's
 * batch ran out while messages were still waiting. Both handles are embedded
 * in struct tr_zmq_uv, which is freed when the second close callback runs.
 */
#include "lib/wire/zmq_uv.h"

#include <zmq.h>

#include "lib/base/alloc.h"

#define MAX_PARTS 4

struct tr_zmq_uv
{
    uv_poll_t poll;       /* readable on ZMQ_FD: "look at ZMQ_EVENTS" */
    uv_idle_t idle;       /* active while a drain is pending */
    void *zsock;          /* borrowed socket */
    bool is_router;       /* first frame is the peer identity */
    uint32_t batch;       /* messages per turn at most */
    tr_zmq_msg_fn on_msg; /* owner's callback */
    void *arg;
    int closing;          /* handles whose close callback is still due */
    bool in_drain;        /* re-entrancy guard: sends from on_msg call kick */
    uint64_t bad_parts;   /* messages with too many frames, dropped */
    zmq_msg_t *cur;       /* the data frame during the callback, for its metadata */
};

static bool has_pollin(struct tr_zmq_uv *z)
{
    int events = 0;
    size_t sz = sizeof(events);
    if (zmq_getsockopt(z->zsock, ZMQ_EVENTS, &events, &sz) != 0)
        return false;
    return (events & ZMQ_POLLIN) != 0;
}

/* Receives one whole message; returns false when none is waiting. */
static bool recv_one(struct tr_zmq_uv *z)
{
    zmq_msg_t parts[MAX_PARTS];
    int n = 0;
    bool more = true;
    bool overflow = false;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_t *m = n < MAX_PARTS ? &parts[n] : &tmp;
        zmq_msg_init(m);
        /* Frames after the first are already there (atomic delivery). */
        if (zmq_msg_recv(m, z->zsock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (n < MAX_PARTS) {
            n++;
        } else {
            overflow = true;
            zmq_msg_close(m);
        }
    }
    if (n == 0)
        return false;
    int want = z->is_router ? 2 : 1;
    if (overflow || n != want) {
        z->bad_parts++;
        /* Hand the owner what came so it can count and log it as garbage. */
        if (n >= want)
            z->on_msg(z->arg, z->is_router ? zmq_msg_data(&parts[0]) : NULL,
                      z->is_router ? zmq_msg_size(&parts[0]) : 0, NULL, 0, n);
    } else if (z->is_router) {
        z->cur = &parts[1];
        z->on_msg(z->arg, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]),
                  zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), n);
        z->cur = NULL;
    } else {
        z->on_msg(z->arg, NULL, 0, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), n);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
    return true;
}

static void on_idle(uv_idle_t *h);

const char *tr_zmq_uv_peer_user(struct tr_zmq_uv *z)
{
    return z->cur != NULL ? zmq_msg_gets(z->cur, "User-Id") : NULL;
}

static void drain(struct tr_zmq_uv *z)
{
    if (z->in_drain || z->closing)
        return;
    z->in_drain = true;
    uint32_t handled = 0;
    while (handled < z->batch && has_pollin(z)) {
        if (!recv_one(z))
            break;
        handled++;
    }
    z->in_drain = false;
    /* ZMQ_EVENTS read last decides: an edge consumed by our own sends or
     * receives would otherwise leave messages waiting with no wake-up. */
    if (!z->closing && has_pollin(z))
        uv_idle_start(&z->idle, on_idle);
}

static void on_idle(uv_idle_t *h)
{
    struct tr_zmq_uv *z = h->data;
    uv_idle_stop(&z->idle);
    drain(z);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct tr_zmq_uv *z = h->data;
    drain(z);
}

struct tr_zmq_uv *tr_zmq_uv_open(uv_loop_t *loop, void *zsock, bool is_router, uint32_t batch,
                                tr_zmq_msg_fn on_msg, void *arg)
{
    int fd = -1;
    size_t sz = sizeof(fd);
    if (zmq_getsockopt(zsock, ZMQ_FD, &fd, &sz) != 0)
        return NULL;
    struct tr_zmq_uv *z = tr_calloc(1, sizeof(*z));
    if (z == NULL)
        return NULL;
    z->zsock = zsock;
    z->is_router = is_router;
    z->batch = batch ? batch : 4096;
    z->on_msg = on_msg;
    z->arg = arg;
    if (uv_poll_init(loop, &z->poll, fd) != 0) {
        tr_free(z);
        return NULL;
    }
    uv_idle_init(loop, &z->idle);
    z->poll.data = z;
    z->idle.data = z;
    uv_poll_start(&z->poll, UV_READABLE, on_poll);
    /* Messages may have arrived before the poll started: no edge for them. */
    uv_idle_start(&z->idle, on_idle);
    return z;
}

int tr_zmq_uv_send(struct tr_zmq_uv *z, const void *ident, size_t ident_len, const void *data,
                   size_t len)
{
    if (ident != NULL && zmq_send(z->zsock, ident, ident_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0)
        return errno == EAGAIN ? TR_EAGAIN : -errno;
    if (zmq_send(z->zsock, data, len, ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? TR_EAGAIN : -errno;
    return 0;
}

void tr_zmq_uv_kick(struct tr_zmq_uv *z)
{
    if (z->closing || z->in_drain)
        return;
    if (has_pollin(z))
        uv_idle_start(&z->idle, on_idle);
}

static void on_close(uv_handle_t *h)
{
    struct tr_zmq_uv *z = h->data;
    if (--z->closing == 0)
        tr_free(z);
}

void tr_zmq_uv_close(struct tr_zmq_uv *z)
{
    if (z == NULL)
        return;
    z->closing = 2;
    uv_close((uv_handle_t *)&z->poll, on_close);
    uv_close((uv_handle_t *)&z->idle, on_close);
}

uint64_t tr_zmq_uv_bad_parts(const struct tr_zmq_uv *z)
{
    return z->bad_parts;
}
