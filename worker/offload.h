/*
 * offload.h - the blocking part of a Lua call (SQLite, a cosine scan over
 * many vectors, chunking a big text) run in libuv's thread pool while the
 * calling task waits, so that the worker's loop goes on turning.
 *
 * A call builds a job with tr_offload_job_new (C memory owned by a userdata
 * on the Lua stack, so an error raised while filling it leaks nothing),
 * copies into it everything the work needs (the work must not touch the Lua
 * state), and returns tr_offload_run(...). When the caller is a task's own
 * coroutine that can yield, the work runs in the pool and the task waits on
 * it as on any pending operation (timeouts and CANCEL stop the wait at once;
 * the work itself runs to its end and its job is then freed). Otherwise (a
 * file's top level, a coroutine the task created, a metamethod) the work
 * runs right there, as before. Either way `done` then runs in the calling
 * coroutine to turn the job's results into Lua values; it may raise.
 *
 * A lane serializes the jobs that share one resource (one SQLite handle is
 * used by one thread at a time): a job waits in its lane's FIFO until the
 * previous one ended. A call that cannot wait finds a busy lane an error.
 *
 * Loop thread only, but for the work functions, which run on pool threads.
 */
#ifndef TR_WORKER_OFFLOAD_H
#define TR_WORKER_OFFLOAD_H

#include <lua.h>
#include <stdbool.h>

struct tr_offload_op;

/* Embedded by the owner of a shared resource; all fields private. */
struct tr_offload_lane
{
    struct tr_offload_op *running;     /* the job in the pool, or NULL */
    struct tr_offload_op *head, *tail; /* jobs waiting their turn */
    /* Called (loop thread) when the lane runs nothing and holds nothing:
     * the owner may free itself there. NULL: nothing to do. */
    void (*on_idle)(struct tr_offload_lane *lane);
};

/* An empty lane. */
void tr_offload_lane_init(struct tr_offload_lane *lane);

/* True while a job of the lane runs or waits. */
bool tr_offload_lane_busy(const struct tr_offload_lane *lane);

/*
 * Pushes a userdata owning a zeroed job of size bytes, and returns the job.
 * When the job is no longer needed, release(job) frees what it holds (it
 * must accept a job filled only in part), then the job itself is freed.
 * May raise (memory).
 */
void *tr_offload_job_new(lua_State *L, size_t size, void (*release)(void *job));

/*
 * Runs work(job) for the job whose userdata is at stack index idx (an
 * absolute index), then returns done(L, LUA_OK, idx). Use as the return
 * statement of a lua_CFunction. lane may be NULL. May raise.
 */
int tr_offload_run(lua_State *L, int idx, struct tr_offload_lane *lane, void (*work)(void *job),
                   lua_KFunction done);

/* The job of the userdata at idx (in done). */
void *tr_offload_job(lua_State *L, int idx);

#endif
