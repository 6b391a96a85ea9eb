/*
 * watchdog.h - a thread that notices the worker's loop has stopped turning.
 *
 * Preemption keeps Lua code from holding the loop, so what is left is one
 * long C call inside a task (a pattern match with exponential backtracking,
 * say). The loop marks each turn (a prepare handle, and a timer that makes
 * an idle loop turn every 100 ms), and the executor marks the span in
 * which a task's code runs (enter/leave around lua_resume). The watchdog
 * thread wakes every WATCHDOG_TICK_MS and, while the loop is busy inside
 * such a span:
 *
 * - past a short while, calls cover(): the worker sends a heartbeat for the
 *   blocked loop, so that the scheduler does not drop it and re-send the
 *   task elsewhere before the attempt is counted;
 * - past max_block seconds, calls blocked(): the worker reports the attempt
 *   as failed and exits, so that its supervisor restarts it.
 *
 * Both callbacks run on the watchdog thread while it holds the span's lock:
 * the loop thread, if it ever leaves the span, waits in tr_watchdog_leave
 * until the callback returns, so the callback may use what the loop thread
 * owns outside Lua code (the DEALER socket). A loop blocked outside any span
 * is only logged by blocked() with a NULL info: nothing of the loop's is safe
 * to touch then.
 *
 * tr_watchdog_enter/leave are called on the loop thread; a NULL watchdog is
 * allowed there and does nothing.
 */
#ifndef TR_WORKER_WATCHDOG_H
#define TR_WORKER_WATCHDOG_H

#include <uv.h>

#include "lib/base/error.h"
#include "lib/base/buf.h"

struct tr_watchdog;

/* What the loop thread was running when it blocked; strings NUL-terminated. */
struct tr_watch_info
{
    uint64_t id;     /* dispatch id */
    uint64_t epoch;
    uint32_t attempt;
    char run[80];    /* run id, escaped */
    char task[80];   /* task name, escaped */
};

struct tr_watchdog_config
{
    double max_block_s; /* a busy loop past this is blocked; 0 = no watchdog */
    /* Watchdog thread, span lock held: keep the worker listed. */
    void (*cover)(void *arg);
    /* Watchdog thread: the loop is blocked; info is NULL outside any span.
     * Expected not to return (it exits the process). */
    void (*blocked)(void *arg, const struct tr_watch_info *info, double busy_s);
    /* Loop thread, at the next turn after cover() ran: the socket was used
     * behind the loop's back (ZMQ_FD's edge may be gone). */
    void (*after_cover)(void *arg);
    void *arg;
};

/*
 * Starts the watchdog thread and its two handles on loop. NULL with err set
 * when the thread cannot start. Loop thread.
 */
struct tr_watchdog *tr_watchdog_new(uv_loop_t *loop, const struct tr_watchdog_config *cfg,
                                    struct tr_error *err) TR_MUST_CHECK;

/* Stops the thread and closes the handles; freed from their close callbacks. NULL-safe. */
void tr_watchdog_free(struct tr_watchdog *wd);

/*
 * The loop thread starts running the code of the task named here; run and
 * task must stay valid until tr_watchdog_leave.
 */
void tr_watchdog_enter(struct tr_watchdog *wd, uint64_t id, uint64_t epoch, uint32_t attempt,
                       struct tr_str run, struct tr_str task);

/* ... and is done with it; may wait while the watchdog's callback runs. */
void tr_watchdog_leave(struct tr_watchdog *wd);

#endif
