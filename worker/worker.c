/*
 * worker.c - the worker's connection: DEALER socket, HELLO/WELCOME,
 * heartbeats both ways, reconnection, and dispatch of what the scheduler
 * sends to the executor.
 *
 * The connection owns one heartbeat timer. Each tick either says HELLO (not
 * welcomed yet) or HEARTBEAT plus the executor's tick (log lines), after
 * checking liveness: nothing received for three intervals means the
 * scheduler is presumed dead. A tick that comes much later than due means
 * the loop itself was blocked (a long CPU-bound task without a timeout):
 * messages may be waiting unread, so the scheduler gets a fresh window
 * rather than being presumed dead for our own stall.
 *
 * The socket is only ever replaced from the timer callback, never from
 * inside the message callback, because lib/wire/zmq_uv.c keeps using the socket
 * after the callback returns.
 *
 * Loop thread only.
 */
#include "worker/worker.h"

#include <sys/random.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <zmq.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/wire/zmq_uv.h"
#include "worker/exec_calls.h"
#include "worker/executor.h"
#include "worker/modules.h"
#include "worker/gpu_monitor.h"

#define MISSED_BEATS 3         /* silent intervals before the scheduler is presumed dead */
#define HWM 100000             /* messages queued per direction before sends fail */
#define RECONNECT_IVL_MS 100   /* ZeroMQ's own reconnection, first try */
#define RECONNECT_MAX_MS 1000  /* and its back-off cap */
#define CLOSE_LINGER_MS 200    /* time BYE gets to leave when we stop */
#define SBUF_KEEP (1u << 20)   /* the frame buffer is kept up to this size */
#define HEARTBEAT_MIN_MS 10
#define HEARTBEAT_MAX_MS 600000

struct tr_worker
{
    uv_loop_t *loop;
    struct tr_worker_config cfg;   /* borrowed strings */
    void *zctx;                    /* ZeroMQ context */
    void *sock;                    /* DEALER, or NULL between connections */
    struct tr_zmq_uv *zuv;         /* sock on the loop */
    uint32_t ep;                   /* index of the endpoint in use */
    uv_timer_t tick;               /* heartbeat interval */
    uint32_t hb_ms;                /* current interval */
    bool welcomed;                 /* WELCOME came on this connection */
    bool lost;                     /* presumed the scheduler dead; not welcomed since */
    uint64_t epoch;                /* the scheduler's epoch from WELCOME */
    uint64_t last_rx_ns;           /* monotonic time of the last frame received */
    uint64_t last_tick_ns;         /* monotonic time of the previous tick */
    struct tr_proto_decoder dec;   /* reused for every frame */
    msgpack_sbuffer sb;            /* reused for every frame sent */
    struct tr_executor *exec;      /* runs the tasks */
    struct tr_log_limiter bad_lim; /* malformed or unexpected frames */
    struct tr_log_limiter send_lim;
    uint64_t n_bad;                /* frames dropped */
    uint64_t n_send_fail;          /* frames that could not be queued */
    bool in_frame;                 /* inside the message callback: no kick needed */
    bool closing;
    uint32_t cpus;                 /* advertised in HELLO */
    uint64_t mem_mb;
    struct tr_watchdog *wd;        /* NULL when max_block_s is 0 */
    struct tr_gpu_monitor *gpus;   /* devices offered, and their readings */
};

/* ====================================================================== */
/* Sending                                                                */
/* ====================================================================== */

static void send_msg(struct tr_worker *w, const struct tr_msg *m)
{
    if (w->zuv == NULL)
        return;
    msgpack_sbuffer_clear(&w->sb);
    int rc = tr_proto_encode(&w->sb, m);
    if (rc == 0)
        rc = tr_zmq_uv_send(w->zuv, NULL, 0, w->sb.data, w->sb.size);
    if (rc < 0) {
        w->n_send_fail++;
        char what[128];
        snprintf(what, sizeof(what), "cannot send %s to the scheduler: %s (%llu so far)",
                 tr_msg_type_name(m->type), tr_strerror(rc),
                 (unsigned long long)w->n_send_fail);
        tr_log_limited(&w->send_lim, what, w->sb.data, w->sb.size);
    }
    if (w->sb.alloc > SBUF_KEEP) {
        msgpack_sbuffer_destroy(&w->sb);
        msgpack_sbuffer_init(&w->sb);
    }
    /* A send may consume ZMQ_FD's edge: outside the drain, look again. */
    if (!w->in_frame)
        tr_zmq_uv_kick(w->zuv);
}

static void exec_send_cb(void *arg, const struct tr_msg *m)
{
    send_msg(arg, m);
}

/* ====================================================================== */
/* For the watchdog thread, while the loop thread is stuck in a task       */
/* ====================================================================== */

/* Sends m straight on the socket (the loop thread is not using it). */
static void send_from_watchdog(struct tr_worker *w, const struct tr_msg *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (tr_proto_encode(&sb, m) == 0)
        (void)zmq_send(w->sock, sb.data, sb.size, ZMQ_DONTWAIT);
    msgpack_sbuffer_destroy(&sb);
}

static void wd_cover(void *arg)
{
    struct tr_worker *w = arg;
    if (w->sock == NULL || !w->welcomed)
        return;
    struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
    send_from_watchdog(w, &hb);
}

static void wd_after_cover(void *arg)
{
    struct tr_worker *w = arg;
    if (w->zuv != NULL)
        tr_zmq_uv_kick(w->zuv);
}

static void wd_blocked(void *arg, const struct tr_watch_info *info, double busy_s)
{
    struct tr_worker *w = arg;
    if (info == NULL) {
        tr_err("worker loop blocked for %.1f s (limit %g s) outside any task worker=%s: "
               "exiting with status %d", busy_s, w->cfg.max_block_s, w->cfg.id,
               TR_WORKER_EXIT_BLOCKED);
    } else {
        tr_err("worker loop blocked for %.1f s (limit %g s) by task '%s' run=%s id=%llu "
               "attempt=%u worker=%s: reporting the attempt failed (worker_blocked) and exiting "
               "with status %d", busy_s, w->cfg.max_block_s, info->task, info->run,
               (unsigned long long)info->id, info->attempt, w->cfg.id, TR_WORKER_EXIT_BLOCKED);
    }
    if (info != NULL && w->sock != NULL && w->welcomed) {
        char why[320];
        snprintf(why, sizeof(why), "worker_blocked: task '%s' held the worker's loop for %.0f s "
                 "in one call that cannot be interrupted (such as a pattern match); the worker "
                 "restarted", info->task, busy_s);
        struct tr_msg r = {.type = TR_MSG_RESULT};
        r.u.result.id = info->id;
        r.u.result.epoch = info->epoch;
        r.u.result.attempt = info->attempt;
        r.u.result.error = tr_str_c(why);
        r.u.result.started_at = r.u.result.finished_at = tr_now();
        send_from_watchdog(w, &r);
        struct tr_msg bye = {.type = TR_MSG_BYE};
        bye.u.bye.reason = TR_STR("worker blocked: restarting");
        send_from_watchdog(w, &bye);
        /* Give both a moment to leave. */
        int linger = CLOSE_LINGER_MS * 5;
        zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof(linger));
        zmq_close(w->sock);
        zmq_ctx_term(w->zctx);
    }
    fflush(stderr);
    _exit(TR_WORKER_EXIT_BLOCKED);
}

static void send_hello(struct tr_worker *w)
{
    struct tr_msg m = {.type = TR_MSG_HELLO};
    struct tr_msg_hello *h = &m.u.hello;
    h->worker_id = tr_str_c(w->cfg.id);
    h->pool = tr_str_c(w->cfg.pool);
    h->slots = w->cfg.slots;
    h->n_gpu_info = tr_gpu_monitor_fill(w->gpus, h->gpu_info, TR_PROTO_MAX_GPUS);
    h->gpus = h->n_gpu_info;
    h->cpus = w->cpus;
    h->mem_mb = w->mem_mb;
    h->n_labels = w->cfg.n_labels;
    memcpy(h->labels, w->cfg.labels, sizeof(h->labels[0]) * w->cfg.n_labels);
    h->version = TR_STR(TR_WORKER_VERSION);
    send_msg(w, &m);
}

/* ====================================================================== */
/* The socket                                                             */
/* ====================================================================== */

static void close_socket(struct tr_worker *w)
{
    tr_zmq_uv_close(w->zuv);
    w->zuv = NULL;
    if (w->sock != NULL)
        zmq_close(w->sock);
    w->sock = NULL;
    w->welcomed = false;
}

static void on_frame(void *arg, const void *ident, size_t ident_len, const void *data,
                     size_t len, int nparts);

static int open_socket(struct tr_worker *w, struct tr_error *err)
{
    const char *ep = w->cfg.endpoints[w->ep];
    void *s = zmq_socket(w->zctx, ZMQ_DEALER);
    if (s == NULL)
        return tr_error_set(err, TR_EIO, "cannot create a socket: %s", zmq_strerror(errno));
    int zero = 0, hwm = HWM, ivl = RECONNECT_IVL_MS, ivl_max = RECONNECT_MAX_MS;
    int64_t maxmsg = (int64_t)tr_mp_default_limits.max_frame;
    /* The routing id names this connection, not the worker (whose id goes in
     * HELLO): random, so no other peer can guess it and speak in its name. */
    unsigned char rnd[16];
    char rid[2 * sizeof(rnd) + 2] = "c";
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        zmq_close(s);
        return tr_error_set(err, TR_EIO, "getrandom failed: %s", strerror(errno));
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(rid + 1 + 2 * i, 3, "%02x", rnd[i]);
    if (zmq_setsockopt(s, ZMQ_ROUTING_ID, rid, strlen(rid)) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl)) != 0 ||
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max)) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) {
        int rc = tr_error_set(err, TR_EINVAL, "cannot set socket options: %s",
                              zmq_strerror(errno));
        zmq_close(s);
        return rc;
    }
    if (w->cfg.curve_server != NULL &&
        (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, w->cfg.curve_server, 41) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, w->cfg.curve_public, 41) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, w->cfg.curve_secret, 41) != 0)) {
        int rc = tr_error_set(err, TR_EINVAL, "cannot set the CURVE keys: %s",
                              zmq_strerror(errno));
        zmq_close(s);
        return rc;
    }
    if (zmq_connect(s, ep) != 0) {
        int rc = tr_error_set(err, TR_EINVAL, "cannot connect to '%s': %s", ep,
                              zmq_strerror(errno));
        zmq_close(s);
        return rc;
    }
    w->zuv = tr_zmq_uv_open(w->loop, s, false, 0, on_frame, w);
    if (w->zuv == NULL) {
        zmq_close(s);
        return tr_error_set(err, TR_ENOMEM, "cannot watch the socket of '%s'", ep);
    }
    w->sock = s;
    w->welcomed = false;
    w->last_rx_ns = tr_mono_ns();
    return 0;
}

/* Presumes the scheduler dead: drops the tasks and moves to the next endpoint. */
static void reconnect(struct tr_worker *w, uint64_t silent_ms)
{
    uint32_t dropped = tr_executor_abort_all(w->exec);
    const char *old = w->cfg.endpoints[w->ep];
    close_socket(w);
    w->ep = (w->ep + 1) % w->cfg.n_endpoints;
    if (!w->lost || dropped > 0)
        tr_warn("lost the scheduler '%s' worker=%s: nothing heard for %llu ms; dropped %u "
                "tasks; connecting to '%s'", old, w->cfg.id, (unsigned long long)silent_ms,
                dropped, w->cfg.endpoints[w->ep]);
    else
        tr_debug("no scheduler at '%s'; trying '%s'", old, w->cfg.endpoints[w->ep]);
    w->lost = true;
    struct tr_error err;
    tr_error_init(&err);
    if (open_socket(w, &err) < 0) {
        /* Try again at the next tick, as for a silent scheduler. */
        tr_err("cannot reconnect worker=%s: %s", w->cfg.id, err.msg);
        w->last_rx_ns = tr_mono_ns();
        return;
    }
    send_hello(w);
}

/* ====================================================================== */
/* Receiving                                                              */
/* ====================================================================== */

static void on_tick(uv_timer_t *h);

static void on_welcome(struct tr_worker *w, const struct tr_msg_welcome *m)
{
    bool first = !w->welcomed;
    w->welcomed = true;
    w->lost = false;
    w->epoch = m->epoch;
    if (m->heartbeat_ms != 0 && m->heartbeat_ms != w->hb_ms) {
        w->hb_ms = TR_MAX(HEARTBEAT_MIN_MS, TR_MIN(m->heartbeat_ms, HEARTBEAT_MAX_MS));
        uv_timer_start(&w->tick, on_tick, w->hb_ms, w->hb_ms);
    }
    if (first)
        tr_info("connected to scheduler '%s' worker=%s epoch=%llu heartbeat_ms=%u",
                w->cfg.endpoints[w->ep], w->cfg.id, (unsigned long long)w->epoch, w->hb_ms);
}

static void on_bye(struct tr_worker *w, const struct tr_msg_bye *m)
{
    char reason[160];
    tr_log_escape(reason, sizeof(reason), m->reason.p, TR_MIN(m->reason.len, (size_t)120));
    if (!w->welcomed) {
        /* HELLO is already on its way (and repeated every tick). A restarted
         * scheduler answers each message we sent before that HELLO with a
         * BYE; acting on those would only drop the tasks of the new session. */
        tr_debug("scheduler said BYE worker=%s (%s) while we wait for WELCOME", w->cfg.id,
                 reason);
        return;
    }
    uint32_t dropped = tr_executor_abort_all(w->exec);
    tr_warn("scheduler said BYE worker=%s (%s): dropped %u tasks; saying HELLO again",
            w->cfg.id, reason, dropped);
    w->welcomed = false;
    send_hello(w);
}

static void drop_frame(struct tr_worker *w, const char *why, const void *data, size_t len)
{
    w->n_bad++;
    char what[400];
    snprintf(what, sizeof(what),
             "dropped a frame from the scheduler worker=%.255s: %.64s (%llu so far)", w->cfg.id,
             why, (unsigned long long)w->n_bad);
    tr_log_limited(&w->bad_lim, what, data, len);
}

static void on_frame(void *arg, const void *ident, size_t ident_len, const void *data,
                     size_t len, int nparts)
{
    struct tr_worker *w = arg;
    w->last_rx_ns = tr_mono_ns();
    if (data == NULL || nparts != 1) {
        drop_frame(w, "multipart message", "", 0);
        return;
    }
    struct tr_msg m;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_proto_decode(&w->dec, data, len, &m, &err) < 0) {
        drop_frame(w, err.msg, data, len);
        return;
    }
    w->in_frame = true;
    switch (m.type) {
    case TR_MSG_WELCOME:
        on_welcome(w, &m.u.welcome);
        break;
    case TR_MSG_HEARTBEAT:
        break;
    case TR_MSG_TASK:
        tr_executor_on_task(w->exec, &m.u.task);
        break;
    case TR_MSG_CANCEL:
        tr_executor_on_cancel(w->exec, &m.u.cancel);
        break;
    case TR_MSG_PIPELINE:
        tr_executor_on_pipeline(w->exec, &m.u.pipeline);
        break;
    case TR_MSG_CALL_REPLY:
        tr_executor_on_call_reply(w->exec, &m.u.call_reply);
        break;
    case TR_MSG_BYE:
        on_bye(w, &m.u.bye);
        break;
    default: {
        char why[64];
        snprintf(why, sizeof(why), "unexpected %s", tr_msg_type_name(m.type));
        drop_frame(w, why, data, len);
        break;
    }
    }
    w->in_frame = false;
}

static void on_tick(uv_timer_t *h)
{
    struct tr_worker *w = h->data;
    uint64_t now = tr_mono_ns();
    uint64_t interval = (uint64_t)w->hb_ms * 1000000u;
    if (w->last_tick_ns != 0 && now - w->last_tick_ns > 2 * interval)
        w->last_rx_ns = now; /* the loop was blocked, not the scheduler silent */
    w->last_tick_ns = now;
    if (now - w->last_rx_ns > MISSED_BEATS * interval) {
        reconnect(w, (now - w->last_rx_ns) / 1000000u);
        return;
    }
    if (w->zuv == NULL) {
        /* The last reconnection failed; the silence check above retries it. */
        return;
    }
    if (!w->welcomed) {
        send_hello(w);
        return;
    }
    struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
    hb.u.heartbeat.n_gpus = tr_gpu_monitor_fill(w->gpus, hb.u.heartbeat.gpus, TR_PROTO_MAX_GPUS);
    send_msg(w, &hb);
    tr_gpu_monitor_refresh(w->gpus); /* for the next heartbeat */
    tr_executor_tick(w->exec);
}

/* ====================================================================== */
/* Life cycle                                                             */
/* ====================================================================== */

struct tr_worker *tr_worker_new(uv_loop_t *loop, const struct tr_worker_config *cfg,
                                struct tr_error *err)
{
    struct tr_worker *w = tr_calloc(1, sizeof(*w));
    if (w == NULL) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    w->loop = loop;
    w->cfg = *cfg;
    w->hb_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 1000;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    w->cpus = ncpu > 0 ? (uint32_t)ncpu : 1;
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        w->mem_mb = (uint64_t)si.totalram * si.mem_unit / (1024 * 1024);
    tr_proto_decoder_init(&w->dec, NULL);
    msgpack_sbuffer_init(&w->sb);
    if (cfg->max_block_s > 0) {
        struct tr_watchdog_config wc = {
            .max_block_s = cfg->max_block_s,
            .cover = wd_cover,
            .blocked = wd_blocked,
            .after_cover = wd_after_cover,
            .arg = w,
        };
        w->wd = tr_watchdog_new(loop, &wc, err);
        if (w->wd == NULL) {
            tr_proto_decoder_release(&w->dec);
            msgpack_sbuffer_destroy(&w->sb);
            tr_free(w);
            return NULL;
        }
    }
    struct tr_executor_config ec = {
        .slots = cfg->slots,
        .lua_mem_max = cfg->lua_mem_max,
        .max_states = 16,
        .send = exec_send_cb,
        .send_arg = w,
        .watchdog = w->wd,
        .open_modules = tr_worker_open_modules,
    };
    w->exec = tr_executor_new(loop, &ec);
    w->zctx = zmq_ctx_new();
    w->gpus = tr_gpu_monitor_open(loop, cfg->gpus_auto, cfg->gpus, cfg->nvml_lib);
    if (w->exec == NULL || w->zctx == NULL || w->gpus == NULL) {
        tr_error_set(err, w->zctx ? TR_ENOMEM : TR_EIO, "cannot start: %s",
                     w->zctx ? "out of memory" : "no ZeroMQ context");
        tr_executor_free(w->exec);
        tr_watchdog_free(w->wd);
        tr_gpu_monitor_close(w->gpus);
        if (w->zctx)
            zmq_ctx_term(w->zctx);
        tr_proto_decoder_release(&w->dec);
        msgpack_sbuffer_destroy(&w->sb);
        tr_free(w);
        return NULL;
    }
    uv_timer_init(loop, &w->tick);
    w->tick.data = w;
    return w;
}

int tr_worker_start(struct tr_worker *w, struct tr_error *err)
{
    int rc = open_socket(w, err);
    if (rc < 0)
        return rc;
    tr_info("worker starting worker=%s pool=%s slots=%u gpus=%u scheduler=%s", w->cfg.id,
            w->cfg.pool, w->cfg.slots, tr_gpu_monitor_count(w->gpus), w->cfg.endpoints[w->ep]);
    send_hello(w);
    w->last_tick_ns = tr_mono_ns();
    uv_timer_start(&w->tick, on_tick, w->hb_ms, w->hb_ms);
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    tr_free(h->data);
}

void tr_worker_close(struct tr_worker *w, const char *reason)
{
    if (w == NULL || w->closing)
        return;
    w->closing = true;
    uv_timer_stop(&w->tick);
    if (w->zuv != NULL) {
        struct tr_msg bye = {.type = TR_MSG_BYE};
        bye.u.bye.reason = tr_str_c(reason);
        send_msg(w, &bye);
        /* Give BYE a moment to leave; the context waits at most this long. */
        int linger = CLOSE_LINGER_MS;
        zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof(linger));
    }
    tr_executor_free(w->exec);
    w->exec = NULL;
    tr_watchdog_free(w->wd);
    w->wd = NULL;
    tr_gpu_monitor_close(w->gpus);
    w->gpus = NULL;
    close_socket(w);
    zmq_ctx_term(w->zctx);
    w->zctx = NULL;
    tr_proto_decoder_release(&w->dec);
    msgpack_sbuffer_destroy(&w->sb);
    if (w->n_bad > 0)
        tr_info("worker=%s dropped %llu malformed frames in all", w->cfg.id,
                (unsigned long long)w->n_bad);
    uv_close((uv_handle_t *)&w->tick, on_closed);
}
