/*
 * watchdog.c - the watchdog thread (see watchdog.h).
 *
 * A turn is marked by a prepare handle, and a timer makes even an idle loop
 * turn every TURN_MS, so "no turn for long" means "stuck in a callback"
 * (I/O callbacks run inside the poll phase, so the time around poll cannot
 * tell busy from idle). Shared between the threads, under mu: the last turn
 * and the span the executor marked. The loop thread takes mu once per turn
 * and twice per task resume, uncontended but for the watchdog's short look
 * every tick: a few tens of nanoseconds each.
 */
#include "worker/watchdog.h"

#include <stdatomic.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

#define WATCHDOG_TICK_MS 50
#define TURN_MS 100                         /* a healthy loop turns at least this often */
#define COVER_AFTER_NS (250ull * 1000000u) /* a loop stuck this long gets heartbeats sent for it */
#define COVER_EVERY_NS (100ull * 1000000u)

struct tr_watchdog
{
    struct tr_watchdog_config cfg;
    uv_prepare_t prepare;          /* marks each loop turn */
    uv_timer_t turn;               /* makes an idle loop turn every TURN_MS */
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;                /* wakes the thread early to stop */
    int closing;                   /* handles still closing */
    /* Under mu. */
    bool stop;
    uint64_t turn_ns;              /* when the loop last turned */
    bool in_span;
    struct tr_watch_info info;     /* run and task are filled at block time... */
    struct tr_str run, task;       /* ... from these views, stable while the loop is stuck */
    uint64_t last_cover_ns;
    atomic_bool covered;           /* cover() ran since the loop's last turn */
};

static void on_prepare(uv_prepare_t *h)
{
    struct tr_watchdog *wd = h->data;
    uint64_t now = tr_mono_ns();
    uv_mutex_lock(&wd->mu);
    wd->turn_ns = now;
    uv_mutex_unlock(&wd->mu);
    if (atomic_exchange(&wd->covered, false) && wd->cfg.after_cover != NULL)
        wd->cfg.after_cover(wd->cfg.arg);
}

static void on_turn(uv_timer_t *h)
{
    /* Nothing: waking the loop is the point. */
}

static void watch(void *arg)
{
    struct tr_watchdog *wd = arg;
    uint64_t limit = (uint64_t)(wd->cfg.max_block_s * 1e9);
    uv_mutex_lock(&wd->mu);
    while (!wd->stop) {
        uv_cond_timedwait(&wd->cond, &wd->mu, WATCHDOG_TICK_MS * 1000000ull);
        if (wd->stop)
            break;
        uint64_t now = tr_mono_ns();
        uint64_t busy = now - wd->turn_ns;
        if (busy >= limit) {
            /* The loop thread, if it ever leaves the span, waits on mu
             * in tr_watchdog_leave: blocked() owns what the loop owns. */
            struct tr_watch_info info = wd->info;
            tr_log_escape(info.run, sizeof(info.run), wd->run.p, TR_MIN(wd->run.len, (size_t)64));
            tr_log_escape(info.task, sizeof(info.task), wd->task.p,
                          TR_MIN(wd->task.len, (size_t)64));
            wd->cfg.blocked(wd->cfg.arg, wd->in_span ? &info : NULL, (double)busy / 1e9);
            continue; /* only reached when blocked() returned (tests) */
        }
        if (wd->in_span && busy >= COVER_AFTER_NS && now - wd->last_cover_ns >= COVER_EVERY_NS &&
            wd->cfg.cover != NULL) {
            wd->last_cover_ns = now;
            wd->cfg.cover(wd->cfg.arg);
            atomic_store(&wd->covered, true);
        }
    }
    uv_mutex_unlock(&wd->mu);
}

struct tr_watchdog *tr_watchdog_new(uv_loop_t *loop, const struct tr_watchdog_config *cfg,
                                    struct tr_error *err)
{
    struct tr_watchdog *wd = tr_calloc(1, sizeof(*wd));
    if (wd == NULL) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    wd->cfg = *cfg;
    wd->turn_ns = tr_mono_ns();
    atomic_init(&wd->covered, false);
    if (uv_mutex_init(&wd->mu) != 0) {
        tr_free(wd);
        tr_error_set(err, TR_ENOMEM, "cannot create the watchdog's lock");
        return NULL;
    }
    if (uv_cond_init(&wd->cond) != 0) {
        uv_mutex_destroy(&wd->mu);
        tr_free(wd);
        tr_error_set(err, TR_ENOMEM, "cannot create the watchdog's condition");
        return NULL;
    }
    if (uv_thread_create(&wd->thread, watch, wd) != 0) {
        uv_cond_destroy(&wd->cond);
        uv_mutex_destroy(&wd->mu);
        tr_free(wd);
        tr_error_set(err, TR_EIO, "cannot start the watchdog thread");
        return NULL;
    }
    uv_prepare_init(loop, &wd->prepare);
    uv_timer_init(loop, &wd->turn);
    wd->prepare.data = wd->turn.data = wd;
    uv_prepare_start(&wd->prepare, on_prepare);
    uv_timer_start(&wd->turn, on_turn, TURN_MS, TURN_MS);
    /* Neither handle keeps the loop alive on its own. */
    uv_unref((uv_handle_t *)&wd->prepare);
    uv_unref((uv_handle_t *)&wd->turn);
    return wd;
}

static void on_closed(uv_handle_t *h)
{
    struct tr_watchdog *wd = h->data;
    if (--wd->closing > 0)
        return;
    uv_cond_destroy(&wd->cond);
    uv_mutex_destroy(&wd->mu);
    tr_free(wd);
}

void tr_watchdog_free(struct tr_watchdog *wd)
{
    if (wd == NULL)
        return;
    uv_mutex_lock(&wd->mu);
    wd->stop = true;
    uv_cond_signal(&wd->cond);
    uv_mutex_unlock(&wd->mu);
    uv_thread_join(&wd->thread);
    wd->closing = 2;
    uv_close((uv_handle_t *)&wd->prepare, on_closed);
    uv_close((uv_handle_t *)&wd->turn, on_closed);
}

void tr_watchdog_enter(struct tr_watchdog *wd, uint64_t id, uint64_t epoch, uint32_t attempt,
                       struct tr_str run, struct tr_str task)
{
    if (wd == NULL)
        return;
    uv_mutex_lock(&wd->mu);
    wd->in_span = true;
    wd->info.id = id;
    wd->info.epoch = epoch;
    wd->info.attempt = attempt;
    wd->run = run;
    wd->task = task;
    uv_mutex_unlock(&wd->mu);
}

void tr_watchdog_leave(struct tr_watchdog *wd)
{
    if (wd == NULL)
        return;
    uv_mutex_lock(&wd->mu);
    wd->in_span = false;
    uv_mutex_unlock(&wd->mu);
}
