/*
 * executor.c - the life of a task on the worker: received, waiting for its
 * pipeline or for a slot, running as a coroutine, suspended on a pending
 * operation, and finished with exactly one RESULT (unless the connection it
 * came on is abandoned, when it is dropped silently).
 *
 * Invariants:
 * - A task is in exactly one list (its pipeline's waiting list, the FIFO run
 *   queue, the running list) or in the free pool, and in the id map unless
 *   free.
 * - A running task is on the C stack (e->current, inside lua_resume),
 *   suspended on a pending operation (t->op != NULL), or preempted (in the
 *   ready queue, resumed from an idle handle on a later loop turn). Loop
 *   callbacks only ever see the last two kinds, so a timeout or CANCEL can
 *   always stop it there.
 * - Every task coroutine has a count hook (exec_task_hook). It enforces the
 *   deadline: once the task must stop it raises at every instruction of
 *   every thread it is on, so that no pcall in the task can swallow the
 *   kill. And it preempts: after SLICE_NS of running it yields the task's
 *   coroutine (when Lua allows a yield there), so that heartbeats, results
 *   and the other tasks keep flowing while a task computes. A coroutine the
 *   hook raised in is never reused (Lua leaves its hooks off).
 * - The C side allocates nothing per task in the steady state: task
 *   structs, their buffers and timers, and the coroutines are reused; the
 *   output and error buffers and the msgpack zone are the executor's. (Lua
 *   allocates each task's ctx and decoded arguments, and collects them.)
 * - Every Lua API call on a state's main thread that may allocate runs under
 *   lua_pcall, so running out of Lua memory fails a task, never the process.
 *
 * Loop thread only.
 */
#include <lauxlib.h>
#include <math.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/lua/lua_msgpack.h"
#include "lib/lua/lua_rt.h"
#include "worker/budget_client.h"
#include "worker/exec_int.h"
#include "worker/lua_worker.h"

#define SLICE_NS (10ull * 1000000u)          /* a task runs this long before it is preempted */
#define READY_TURN_NS (50ull * 1000000u)     /* preempted tasks resumed in one loop turn, at most */
#define TIMEOUT_MAX_S (30.0 * 24 * 3600)     /* longer timeouts are clamped */
#define TASK_DATA_KEEP (64u << 10)           /* a pooled task keeps a buffer this large */
#define ARGS_MAX 100000                      /* arguments of one task (outputs it waits for) */
#define WAITING_MAX 100000                   /* tasks held beyond the slots: a bound on memory */

/* ====================================================================== */
/* Lists and the task pool                                                */
/* ====================================================================== */

void task_list_push(struct task_list *l, struct tr_task *t)
{
    t->list = l;
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    l->n++;
}

void task_list_remove(struct tr_task *t)
{
    struct task_list *l = t->list;
    if (l == NULL)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->prev = t->next = NULL;
    t->list = NULL;
    l->n--;
}

static struct tr_task *task_get(struct tr_executor *e)
{
    struct tr_task *t = e->pool;
    if (t != NULL) {
        e->pool = t->next;
        t->next = NULL;
        return t;
    }
    t = tr_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->exec = e;
    t->co_ref = LUA_NOREF;
    tr_buf_init(&t->data, 0);
    tr_buf_init(&t->usage, 4u << 20);
    tr_buf_init(&t->delta, TR_PROTO_DELTA_MAX);
    uv_timer_init(e->loop, &t->timeout_timer);
    uv_timer_init(e->loop, &t->op_timer);
    t->timeout_timer.data = t;
    t->op_timer.data = t;
    e->n_alloc++;
    return t;
}

static void task_put(struct tr_executor *e, struct tr_task *t)
{
    t->where = T_FREE;
    t->pipe = NULL;
    t->kill = KILL_NONE;
    t->op = NULL;
    t->op_cancel = NULL;
    t->deadline_ns = 0;
    t->started_at = 0;
    if (t->data.alloc > TASK_DATA_KEEP)
        tr_buf_release(&t->data);
    else
        tr_buf_reset(&t->data);
    if (t->usage.alloc > TASK_DATA_KEEP)
        tr_buf_release(&t->usage);
    else
        tr_buf_reset(&t->usage);
    t->n_usage = 0;
    t->llm_span[0] = '\0';
    t->usage_dropped = 0;
    t->next = e->pool;
    e->pool = t;
}

/* Takes t out of the ready queue (a short list: at most the slots). */
static void ready_remove(struct tr_executor *e, struct tr_task *t)
{
    struct tr_task **pp = &e->ready_head, *prev = NULL;
    while (*pp != NULL && *pp != t) {
        prev = *pp;
        pp = &(*pp)->ready_next;
    }
    if (*pp == NULL)
        return;
    *pp = t->ready_next;
    if (e->ready_tail == t)
        e->ready_tail = prev;
    t->ready_next = NULL;
    t->preempted = false;
}

void exec_release(struct tr_executor *e, struct tr_task *t)
{
    tr_buf_reset(&t->delta);
    t->delta_dropped = 0;
    uv_timer_stop(&t->timeout_timer);
    uv_timer_stop(&t->op_timer);
    if (t->preempted)
        ready_remove(e, t);
    if (t->co != NULL) {
        /* A coroutine that returned is clean already. One that raised, or
         * was stopped while suspended, needs its call stack unwound and its
         * pending to-be-closed variables closed (errors there are ignored);
         * the task counts as running meanwhile, so that the hook still stops
         * a __close handler that would never end. One the hook raised in has
         * its hooks off for good (Lua does not restore them after an error
         * thrown from a hook): it is dropped, its __close handlers unrun,
         * since they would run beyond every limit. */
        bool reuse = !t->hook_raised;
        if (reuse && lua_status(t->co) != LUA_OK) {
            struct tr_task *prev = e->current;
            e->current = t;
            pipe_env_enter(t->pipe, t);
            tr_watchdog_enter(e->cfg.watchdog, t->id, t->epoch, t->attempt, t->run_id, t->name);
            lua_resetthread(t->co);
            tr_watchdog_leave(e->cfg.watchdog);
            pipe_env_leave(t->pipe);
            tr_lua_set_stopping(t->pipe->L, false);
            e->current = prev;
            reuse = !t->hook_raised;
        }
        lua_settop(t->co, 0);
        if (reuse) {
            lua_sethook(t->co, exec_task_hook, LUA_MASKCOUNT, TR_EXEC_HOOK_COUNT);
            pipe_give_coroutine(t->pipe, t->co, t->co_ref);
        } else {
            /* Removing a registry entry never allocates. */
            luaL_unref(t->pipe->L, LUA_REGISTRYINDEX, t->co_ref);
        }
        t->co = NULL;
        t->co_ref = LUA_NOREF;
    }
    if (t->env != NULL)
        pipe_env_detach(t->pipe, t);
    t->hook_raised = false;
    task_list_remove(t);
    tr_hmap_del(&e->tasks, &t->id, sizeof(t->id));
    if (t->pipe != NULL) {
        t->pipe->active--;
        t->pipe->used_tick = ++e->clock;
    }
    task_logs_clear(t);
    task_put(e, t);
}

/* ====================================================================== */
/* Running                                                                */
/* ====================================================================== */

/*
 * The count hook of every task coroutine. It runs on the task's coroutine
 * and on coroutines the task created (they inherit hooks), so it finds the
 * task through the executor. Outside any task it only enforces e->guard_ns
 * (pipeline code the executor runs for a task that ended: a __tostring).
 */
void exec_task_hook(lua_State *L, lua_Debug *ar)
{
    struct tr_executor *e = tr_executor_of(L);
    if (e == NULL)
        return;
    struct tr_task *t = e->current;
    if (t == NULL) {
        if (e->guard_ns == 0 || tr_mono_ns() < e->guard_ns)
            return;
    } else if (t->kill == KILL_NONE) {
        uint64_t now = tr_mono_ns();
        if (t->deadline_ns == 0 || now < t->deadline_ns) {
            /* Only the task's own coroutine is preempted: a yield of a
             * coroutine the task created would go to the task's code. */
            if (L == t->co && now - e->slice_start_ns >= SLICE_NS && lua_isyieldable(L)) {
                t->preempted = true;
                lua_yield(L, 0);
            }
            return;
        }
        t->kill = KILL_TIMEOUT;
    }
    /* Stay armed at every instruction, here and on the task's coroutine,
     * so that a pcall that swallows this error meets the next one at once;
     * and tell the sandbox, which then skips xpcall handlers (Lua runs
     * them with hooks off). */
    tr_lua_set_stopping(L, true);
    lua_sethook(L, exec_task_hook, LUA_MASKCOUNT, 1);
    if (t != NULL) {
        t->hook_raised = true;
        if (L != t->co)
            lua_sethook(t->co, exec_task_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushliteral(L, "task stopped");
    lua_error(L);
}

static void on_ready(uv_idle_t *h);

/* Resumes t's coroutine with nargs values on its stack and handles what comes back. */
static void resume(struct tr_executor *e, struct tr_task *t, int nargs)
{
    struct tr_task *prev = e->current;
    lua_State *L = t->pipe->L;
    e->current = t;
    e->slice_start_ns = tr_mono_ns();
    tr_lua_set_stopping(L, false);
    pipe_env_enter(t->pipe, t);
    tr_watchdog_enter(e->cfg.watchdog, t->id, t->epoch, t->attempt, t->run_id, t->name);
    int nres = 0;
    int status = lua_resume(t->co, NULL, nargs, &nres);
    tr_watchdog_leave(e->cfg.watchdog);
    pipe_env_leave(t->pipe);
    tr_lua_set_stopping(L, false);
    e->current = prev;
    if (t->kill != KILL_NONE && status != LUA_YIELD) {
        exec_finish_killed(e, t);
    } else if (status == LUA_YIELD) {
        if (t->op != NULL)
            return; /* suspended until its operation completes or is cancelled */
        lua_pop(t->co, nres);
        if (t->preempted) {
            /* Its turn is over: it goes on once the loop has turned. */
            t->ready_next = NULL;
            if (e->ready_tail != NULL)
                e->ready_tail->ready_next = t;
            else
                e->ready_head = t;
            e->ready_tail = t;
            uv_idle_start(&e->ready_idle, on_ready);
            return;
        }
        exec_fail_task(t, "task '%s' yielded outside of a trellis operation (coroutine.yield "
                          "must be called inside a coroutine the task created)",
                       tr_task_name(t));
    } else if (status == LUA_OK) {
        exec_finish_ok(e, t, nres);
    } else {
        exec_finish_error(e, t, status);
    }
}

/* Resumes the tasks the hook preempted, oldest first, for a bounded time per turn. */
static void on_ready(uv_idle_t *h)
{
    struct tr_executor *e = h->data;
    uint64_t t0 = tr_mono_ns();
    struct tr_task *last = e->ready_tail; /* those preempted in this call wait a turn */
    while (e->ready_head != NULL) {
        struct tr_task *t = e->ready_head;
        bool was_last = t == last;
        e->ready_head = t->ready_next;
        if (e->ready_head == NULL)
            e->ready_tail = NULL;
        t->ready_next = NULL;
        t->preempted = false;
        resume(e, t, 0);
        if (was_last || tr_mono_ns() - t0 >= READY_TURN_NS)
            break;
    }
    if (e->ready_head == NULL)
        uv_idle_stop(h);
}

/*
 * Validates and unpacks one msgpack value from b into obj, in the executor's
 * zone (valid until the next call). May raise, naming what and the task.
 */
static void unpack_bytes(struct tr_executor *e, lua_State *L, struct tr_str b, const char *what,
                       msgpack_object *obj)
{
    long n = tr_mp_check(b.p, b.len, &tr_mp_default_limits);
    size_t off = 0;
    msgpack_zone_clear(&e->zone);
    if (n < 0 || (size_t)n != b.len ||
        msgpack_unpack(b.p, b.len, &off, &e->zone, obj) != MSGPACK_UNPACK_SUCCESS)
        luaL_error(L, "cannot decode the %s of task '%s': malformed msgpack", what,
                   tr_task_name(lua_touserdata(L, 1)));
}

/*
 * Protected, with the task at 1: takes a coroutine and puts on it the run
 * function, ctx and the arguments. Returns the number of values to resume
 * with, as an integer.
 */
static int setup_protected(lua_State *L)
{
    struct tr_task *t = lua_touserdata(L, 1);
    struct tr_executor *e = t->exec;
    int ref = pipe_run_ref(t->pipe, t->name);
    if (ref == LUA_NOREF)
        return luaL_error(L, "pipeline '%s' has no task '%s'", t->pipe->label, tr_task_name(t));
    pipe_take_coroutine(t->pipe, &t->co, &t->co_ref);
    lua_sethook(t->co, exec_task_hook, LUA_MASKCOUNT, TR_EXEC_HOOK_COUNT);
    pipe_env_attach(t->pipe, t);
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);

    lua_createtable(L, 0, 6);
    if (t->params.len > 0) {
        msgpack_object obj;
        unpack_bytes(e, L, t->params, "params", &obj);
        if (obj.type != MSGPACK_OBJECT_MAP || tr_lua_push_mp(L, &obj) < 0)
            return luaL_error(L, "cannot decode the params of task '%s'", tr_task_name(t));
    } else {
        lua_newtable(L);
    }
    lua_setfield(L, -2, "params");
    lua_pushlstring(L, t->run_id.p, t->run_id.len);
    lua_setfield(L, -2, "run_id");
    lua_pushlstring(L, t->name.p, t->name.len);
    lua_setfield(L, -2, "task");
    lua_pushinteger(L, (lua_Integer)t->index);
    lua_setfield(L, -2, "index");
    lua_pushinteger(L, (lua_Integer)t->attempt);
    lua_setfield(L, -2, "attempt");
    tr_lua_worker_push_log(L);
    lua_setfield(L, -2, "log");
    lua_createtable(L, (int)t->n_gpus, 0);
    for (uint32_t i = 0; i < t->n_gpus; i++) {
        lua_pushinteger(L, (lua_Integer)t->gpus[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "gpus");

    if (t->args.len > 0) {
        msgpack_object obj;
        unpack_bytes(e, L, t->args, "arguments", &obj);
        if (obj.type != MSGPACK_OBJECT_ARRAY)
            return luaL_error(L, "the arguments of task '%s' are not an array",
                              tr_task_name(t));
        if (obj.via.array.size > ARGS_MAX)
            return luaL_error(L, "task '%s' has %d arguments, at most %d", tr_task_name(t),
                              (int)obj.via.array.size, ARGS_MAX);
        luaL_checkstack(L, (int)obj.via.array.size + 4, "too many arguments");
        for (uint32_t i = 0; i < obj.via.array.size; i++) {
            int rc = tr_lua_push_mp(L, &obj.via.array.ptr[i]);
            if (rc == TR_ENOMEM)
                return luaL_error(L, "not enough memory");
            if (rc < 0)
                return luaL_error(L, "cannot decode argument %d of task '%s': %s", (int)i + 1,
                                  tr_task_name(t), tr_strerror(rc));
        }
    }
    int n = lua_gettop(L) - base;
    if (!lua_checkstack(t->co, n + LUA_MINSTACK))
        return luaL_error(L, "not enough memory");
    lua_xmove(L, t->co, n);
    lua_pushinteger(L, n - 1);
    return 1;
}

/* Stops a running task that is suspended on an operation, and answers. */
static void kill_running(struct tr_executor *e, struct tr_task *t, enum task_kill why)
{
    TR_ASSERT(e->current != t);
    t->kill = why;
    if (t->op != NULL) {
        tr_task_cancel_fn cancel = t->op_cancel;
        void *op = t->op;
        t->op = NULL;
        t->op_cancel = NULL;
        cancel(t, op);
    }
    exec_finish_killed(e, t);
}

static void on_timeout(uv_timer_t *h)
{
    struct tr_task *t = h->data;
    if (t->where == T_RUNNING)
        kill_running(t->exec, t, KILL_TIMEOUT);
}

static void start(struct tr_executor *e, struct tr_task *t)
{
    t->where = T_RUNNING;
    task_list_push(&e->running, t);
    t->started_at = tr_now();
    t->start_ns = tr_mono_ns();
    char run[80], name[80];
    tr_log_escape(run, sizeof(run), t->run_id.p, TR_MIN(t->run_id.len, (size_t)64));
    tr_log_escape(name, sizeof(name), t->name.p, TR_MIN(t->name.len, (size_t)64));
    tr_info("task start run=%s task=%s index=%u attempt=%u id=%llu", run, name, t->index,
            t->attempt, (unsigned long long)t->id);

    lua_State *L = t->pipe->L;
    if (!lua_checkstack(L, 3)) {
        exec_fail_task(t, "cannot start task '%s': not enough memory", tr_task_name(t));
        return;
    }
    lua_pushcfunction(L, setup_protected);
    lua_pushlightuserdata(L, t);
    int status = lua_pcall(L, 1, 1, 0);
    if (status != LUA_OK) {
        const char *why = status == LUA_ERRMEM ? NULL : lua_tostring(L, -1);
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", why ? why : "not enough memory");
        lua_pop(L, 1);
        exec_fail_task(t, "cannot start task '%s': %s", tr_task_name(t), msg);
        return;
    }
    int nargs = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (t->timeout > 0) {
        double s = TR_MIN(t->timeout, TIMEOUT_MAX_S);
        t->deadline_ns = t->start_ns + (uint64_t)(s * 1e9);
        uv_update_time(e->loop); /* the turn's clock may be stale by a long task */
        uv_timer_start(&t->timeout_timer, on_timeout, (uint64_t)ceil(s * 1000.0), 0);
    }
    resume(e, t, nargs);
}

void exec_pump(struct tr_executor *e)
{
    if (e->pumping || e->freeing)
        return;
    /* A task may finish inside start and call us again: the outer loop
     * carries on instead of recursing. */
    e->pumping = true;
    while (e->queue.head != NULL && e->running.n < e->cfg.slots) {
        struct tr_task *t = e->queue.head;
        task_list_remove(t);
        start(e, t);
    }
    e->pumping = false;
}

/* ====================================================================== */
/* What the scheduler sends                                               */
/* ====================================================================== */

static bool is_digest(struct tr_str d)
{
    if (d.len != 64)
        return false;
    for (size_t i = 0; i < 64; i++) {
        char c = d.p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

/* Answers a TASK that could not even be stored. */
static void fail_unstored(struct tr_executor *e, const struct tr_msg_task *m, const char *why)
{
    struct tr_msg r = {.type = TR_MSG_RESULT};
    r.u.result.id = m->id;
    r.u.result.epoch = m->epoch;
    r.u.result.attempt = m->attempt;
    r.u.result.error = tr_str_c(why);
    r.u.result.started_at = r.u.result.finished_at = tr_now();
    exec_send(e, &r);
    char what[160];
    snprintf(what, sizeof(what), "refused a task: %s", why);
    tr_log_limited(&e->refused, what, m->task.p, m->task.len);
}

static int copy_task(struct tr_task *t, const struct tr_msg_task *m)
{
    struct tr_buf *b = &t->data;
    tr_buf_reset(b);
    if (tr_buf_add(b, m->run_id.p, m->run_id.len) < 0 || tr_buf_addch(b, '\0') < 0 ||
        tr_buf_add(b, m->task.p, m->task.len) < 0 || tr_buf_addch(b, '\0') < 0 ||
        tr_buf_add(b, m->params.p, m->params.len) < 0 ||
        tr_buf_add(b, m->args.p, m->args.len) < 0)
        return TR_ENOMEM;
    /* Views are taken once the buffer has stopped moving. */
    const char *p = b->buf;
    t->run_id = (struct tr_str){p, m->run_id.len};
    p += m->run_id.len + 1;
    t->name = (struct tr_str){p, m->task.len};
    p += m->task.len + 1;
    t->params = (struct tr_str){p, m->params.len};
    p += m->params.len;
    t->args = (struct tr_str){p, m->args.len};
    return 0;
}

void tr_executor_on_task(struct tr_executor *e, const struct tr_msg_task *m)
{
    if (tr_hmap_get(&e->tasks, &m->id, sizeof(m->id)) != NULL) {
        tr_warn("ignoring a second TASK with id=%llu", (unsigned long long)m->id);
        return;
    }
    /* The scheduler sends at most the free slots plus a small prefetch; a
     * peer that sends far more gets failures, not our memory. */
    if (tr_hmap_count(&e->tasks) >= (size_t)e->cfg.slots + WAITING_MAX) {
        fail_unstored(e, m, "worker queue is full");
        return;
    }
    struct tr_task *t = task_get(e);
    if (t == NULL) {
        fail_unstored(e, m, "worker out of memory");
        return;
    }
    t->id = m->id;
    t->epoch = m->epoch;
    t->attempt = m->attempt;
    t->index = m->index;
    t->timeout = isfinite(m->timeout) && m->timeout > 0 ? m->timeout : 0;
    t->n_gpus = m->n_gpus;
    memcpy(t->gpus, m->gpus, sizeof(t->gpus[0]) * m->n_gpus);
    t->kill_reason[0] = '\0';
    t->start_ns = 0;
    if (copy_task(t, m) < 0 || tr_hmap_put(&e->tasks, &t->id, sizeof(t->id), t) < 0) {
        task_put(e, t);
        fail_unstored(e, m, "worker out of memory");
        return;
    }
    if (!is_digest(m->digest)) {
        exec_fail_task(t, "task '%s' names no valid pipeline digest", tr_task_name(t));
        return;
    }
    struct pipe *p = pipe_find(e, m->digest);
    if (p == NULL)
        p = pipe_request(e, m->digest);
    if (p == NULL) {
        exec_fail_task(t, "cannot run task '%s': worker out of memory", tr_task_name(t));
        return;
    }
    t->pipe = p;
    p->active++;
    if (p->state == P_LOADING) {
        t->where = T_WAIT_PIPE;
        task_list_push(&p->waiting, t);
        return;
    }
    t->where = T_QUEUED;
    task_list_push(&e->queue, t);
    exec_pump(e);
}

void tr_executor_on_cancel(struct tr_executor *e, const struct tr_msg_cancel *m)
{
    struct tr_task *t = tr_hmap_get(&e->tasks, &m->id, sizeof(m->id));
    if (t == NULL) {
        tr_debug("ignoring CANCEL of unknown task id=%llu", (unsigned long long)m->id);
        return;
    }
    tr_log_escape(t->kill_reason, sizeof(t->kill_reason), m->reason.p,
                  TR_MIN(m->reason.len, (size_t)100));
    if (t->where == T_RUNNING) {
        kill_running(e, t, KILL_CANCEL);
        return;
    }
    t->kill = KILL_CANCEL;
    exec_finish_killed(e, t);
}

uint32_t tr_executor_abort_all(struct tr_executor *e)
{
    uint32_t n = 0;
    while (e->running.head != NULL) {
        struct tr_task *t = e->running.head;
        if (t->op != NULL) {
            tr_task_cancel_fn cancel = t->op_cancel;
            void *op = t->op;
            t->op = NULL;
            cancel(t, op);
        }
        exec_release(e, t);
        n++;
    }
    while (e->queue.head != NULL) {
        exec_release(e, e->queue.head);
        n++;
    }
    size_t it = 0;
    struct pipe *p;
    while ((p = tr_hmap_next(&e->pipes, &it)) != NULL) {
        if (p->state != P_LOADING)
            continue;
        while (p->waiting.head != NULL) {
            exec_release(e, p->waiting.head);
            n++;
        }
        /* Its PIPELINE_GET went to a connection we no longer trust. */
        pipe_free(e, p);
    }
    return n;
}

void tr_executor_tick(struct tr_executor *e)
{
    for (struct tr_task *t = e->running.head; t != NULL; t = t->next) {
        if (t->log_n > 0 || t->log_dropped > 0)
            task_logs_flush(e, t, 0);
    }
    pipe_tick(e);
}

uint32_t tr_executor_running(const struct tr_executor *e)
{
    return e->running.n;
}

uint32_t tr_executor_waiting(const struct tr_executor *e)
{
    return (uint32_t)tr_hmap_count(&e->tasks) - e->running.n;
}

/* ====================================================================== */
/* Life cycle                                                             */
/* ====================================================================== */

struct tr_executor *tr_executor_new(uv_loop_t *loop, const struct tr_executor_config *cfg)
{
    struct tr_executor *e = tr_calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->loop = loop;
    e->cfg = *cfg;
    if (e->cfg.slots == 0)
        e->cfg.slots = 1;
    tr_hmap_init(&e->pipes);
    tr_hmap_init(&e->tasks);
    tr_buf_init(&e->msg, 0);
    msgpack_sbuffer_init(&e->out);
    if (!msgpack_zone_init(&e->zone, 8192)) {
        tr_free(e);
        return NULL;
    }
    uv_idle_init(loop, &e->ready_idle);
    e->ready_idle.data = e;
    uv_timer_init(loop, &e->delta_timer);
    e->delta_timer.data = e;
    return e;
}

/* Frees the executor once its last handle has closed and its last job ended. */
void exec_closed_one(struct tr_executor *e)
{
    if (--e->closing == 0)
        tr_free(e);
}

static void on_task_closed(uv_handle_t *h)
{
    struct tr_task *t = h->data;
    struct tr_executor *e = t->exec;
    if (--t->closing == 0) {
        tr_buf_release(&t->data);
        tr_buf_release(&t->usage);
        tr_buf_release(&t->delta);
        tr_free(t->logs);
        tr_free(t);
    }
    exec_closed_one(e);
}

static void on_idle_closed(uv_handle_t *h)
{
    exec_closed_one(h->data);
}

void tr_executor_free(struct tr_executor *e)
{
    if (e == NULL)
        return;
    e->freeing = true;
    uint32_t n = tr_executor_abort_all(e);
    if (n > 0)
        tr_info("dropped %u tasks on shutdown", n);
    tr_budget_client_free(e);
    size_t it = 0;
    struct pipe *p;
    while ((p = tr_hmap_next(&e->pipes, &it)) != NULL)
        pipe_free(e, p);
    tr_hmap_release(&e->pipes);
    tr_hmap_release(&e->tasks);
    tr_buf_release(&e->msg);
    msgpack_sbuffer_destroy(&e->out);
    msgpack_zone_destroy(&e->zone);
    /* Every task is in the pool now; each is freed when both its timers
     * closed, and the executor with its last handle. */
    e->closing = 2 + 2 * e->n_alloc + e->n_jobs;
    uv_close((uv_handle_t *)&e->ready_idle, on_idle_closed);
    uv_close((uv_handle_t *)&e->delta_timer, on_idle_closed);
    for (struct tr_task *t = e->pool; t != NULL; t = t->next) {
        t->closing = 2;
        uv_close((uv_handle_t *)&t->timeout_timer, on_task_closed);
        uv_close((uv_handle_t *)&t->op_timer, on_task_closed);
    }
}

/* ====================================================================== */
/* For the Lua functions tasks call                                       */
/* ====================================================================== */

struct tr_task *tr_task_running(lua_State *L)
{
    struct tr_executor *e = tr_executor_of(L);
    return e ? e->current : NULL;
}

struct tr_task *tr_task_of(lua_State *L)
{
    struct tr_task *t = tr_task_running(L);
    return t != NULL && t->co == L ? t : NULL;
}

const uint32_t *tr_task_gpus(const struct tr_task *t, uint32_t *n)
{
    *n = t->n_gpus;
    return t->gpus;
}

int tr_task_yield(lua_State *L, struct tr_task *t, void *op, tr_task_cancel_fn cancel,
                  lua_KContext kctx, lua_KFunction k)
{
    if (!lua_isyieldable(L)) {
        cancel(t, op);
        return luaL_error(L, "cannot wait here: the task is inside a C call that cannot yield "
                             "(a metamethod, an iterator or a sort comparator)");
    }
    t->op = op;
    t->op_cancel = cancel;
    return lua_yieldk(L, 0, kctx, k);
}

void tr_task_resume(struct tr_task *t)
{
    struct tr_executor *e = t->exec;
    TR_ASSERT(t->where == T_RUNNING && t->op != NULL && e->current == NULL);
    t->op = NULL;
    t->op_cancel = NULL;
    resume(e, t, 0);
}

uv_timer_t *tr_task_timer(struct tr_task *t)
{
    return &t->op_timer;
}

uv_loop_t *tr_executor_loop(const struct tr_executor *e)
{
    return e->loop;
}

const char *tr_task_name(const struct tr_task *t)
{
    return t->name.len ? t->name.p : "?";
}
