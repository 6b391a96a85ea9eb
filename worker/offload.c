/*
 * offload.c - jobs of Lua calls in the thread pool (see offload.h).
 *
 * Ownership: a job belongs to its userdata (the holder) until it is queued;
 * while its work may run, the operation (struct tr_offload_op) holds it too.
 * Whichever of the two is left when the other goes frees it: a holder
 * collected while its work runs (the task was stopped) leaves the job to the
 * operation, and the operation hands it back to the holder when the work
 * ends. Both sides live on the loop thread, so no lock is needed.
 */
#include "worker/offload.h"

#include <lauxlib.h>
#include <uv.h>

#include "lib/base/alloc.h"
#include "worker/executor.h"

#define HOLDER_MT "trellis.offload.job"

struct holder
{
    void *job;
    void (*release)(void *job);
    struct tr_offload_op *op; /* while the job is queued or running */
};

struct tr_offload_op
{
    uv_work_t req;
    uv_loop_t *loop;
    struct tr_task *t;            /* NULL once the task stopped waiting */
    struct holder *h;             /* NULL once the holder was collected */
    void *job;
    void (*release)(void *job);
    void (*work)(void *job);
    struct tr_offload_lane *lane; /* or NULL */
    struct tr_offload_op *next;   /* in the lane's FIFO */
};

void tr_offload_lane_init(struct tr_offload_lane *lane)
{
    lane->running = lane->head = lane->tail = NULL;
    lane->on_idle = NULL;
}

bool tr_offload_lane_busy(const struct tr_offload_lane *lane)
{
    return lane->running != NULL || lane->head != NULL;
}

static void job_free(void *job, void (*release)(void *job))
{
    if (job == NULL)
        return;
    if (release != NULL)
        release(job);
    tr_free(job);
}

static int holder_gc(lua_State *L)
{
    struct holder *h = lua_touserdata(L, 1);
    if (h->op != NULL) {
        h->op->h = NULL; /* the operation frees the job when its work ends */
        h->op = NULL;
    } else {
        job_free(h->job, h->release);
    }
    h->job = NULL;
    return 0;
}

void *tr_offload_job_new(lua_State *L, size_t size, void (*release)(void *job))
{
    struct holder *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->job = NULL;
    h->release = release;
    h->op = NULL;
    if (luaL_newmetatable(L, HOLDER_MT)) {
        lua_pushcfunction(L, holder_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    h->job = tr_calloc(1, size);
    if (h->job == NULL)
        luaL_error(L, "not enough memory");
    return h->job;
}

void *tr_offload_job(lua_State *L, int idx)
{
    struct holder *h = lua_touserdata(L, idx);
    return h->job;
}

static void run_work(uv_work_t *req)
{
    struct tr_offload_op *op = req->data;
    op->work(op->job);
}

static void after_work(uv_work_t *req, int status);

static int queue(struct tr_offload_op *op)
{
    op->req.data = op;
    return uv_queue_work(op->loop, &op->req, run_work, after_work);
}

/* Ends op: the job goes back to its holder (or is freed), op is freed. */
static void op_end(struct tr_offload_op *op)
{
    if (op->h != NULL)
        op->h->op = NULL;
    else
        job_free(op->job, op->release);
    tr_free(op);
}

/* Starts the next waiting job of lane, if any; tells the owner when idle. */
static void lane_next(struct tr_offload_lane *lane)
{
    while (lane->running == NULL && lane->head != NULL) {
        struct tr_offload_op *op = lane->head;
        lane->head = op->next;
        if (lane->head == NULL)
            lane->tail = NULL;
        op->next = NULL;
        lane->running = op;
        if (queue(op) != 0) {
            /* Cannot happen with a valid loop; run it here rather than lose it. */
            run_work(&op->req);
            after_work(&op->req, 0);
        }
    }
    if (!tr_offload_lane_busy(lane) && lane->on_idle != NULL)
        lane->on_idle(lane); /* may free the lane */
}

static void after_work(uv_work_t *req, int status)
{
    struct tr_offload_op *op = req->data;
    struct tr_task *t = op->t;
    struct tr_offload_lane *lane = op->lane;
    if (lane != NULL)
        lane->running = NULL;
    op_end(op);
    /* The lane moves on before the task does: the task may close the
     * resource, which frees the lane. */
    if (lane != NULL)
        lane_next(lane);
    if (t != NULL)
        tr_task_resume(t);
}

/* The task stopped waiting (timeout, CANCEL, lost scheduler). */
static void op_cancel(struct tr_task *t, void *arg)
{
    struct tr_offload_op *op = arg;
    op->t = NULL;
    struct tr_offload_lane *lane = op->lane;
    if (lane == NULL || lane->running == op)
        return; /* in the pool: after_work ends it */
    /* Still waiting its turn: take it out of the FIFO and end it now. */
    struct tr_offload_op **pp = &lane->head, *prev = NULL;
    while (*pp != NULL && *pp != op) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == op) {
        *pp = op->next;
        if (lane->tail == op)
            lane->tail = prev;
    }
    op_end(op);
    if (!tr_offload_lane_busy(lane) && lane->on_idle != NULL)
        lane->on_idle(lane);
}

int tr_offload_run(lua_State *L, int idx, struct tr_offload_lane *lane, void (*work)(void *job),
                   lua_KFunction done)
{
    struct holder *h = lua_touserdata(L, idx);
    struct tr_task *t = tr_task_of(L);
    if (t == NULL || !lua_isyieldable(L)) {
        if (lane != NULL && tr_offload_lane_busy(lane))
            return luaL_error(L, "the resource is in use by a call of another task; call it "
                                 "from the task's own code (not a coroutine or a metamethod) "
                                 "to wait for its turn");
        work(h->job);
        return done(L, LUA_OK, (lua_KContext)idx);
    }
    struct tr_offload_op *op = tr_calloc(1, sizeof(*op));
    if (op == NULL)
        return luaL_error(L, "not enough memory");
    op->loop = tr_executor_loop(tr_executor_of(L));
    op->t = t;
    op->h = h;
    op->job = h->job;
    op->release = h->release;
    op->work = work;
    op->lane = lane;
    if (lane != NULL && lane->running != NULL) {
        if (lane->tail != NULL)
            lane->tail->next = op;
        else
            lane->head = op;
        lane->tail = op;
    } else {
        if (lane != NULL)
            lane->running = op;
        if (queue(op) != 0) {
            if (lane != NULL)
                lane->running = NULL;
            tr_free(op);
            return luaL_error(L, "cannot queue work in the thread pool");
        }
    }
    h->op = op;
    return tr_task_yield(L, t, op, op_cancel, (lua_KContext)idx, done);
}
