/*
 * exec_calls.c - a task's calls to the scheduler: CALL out, the coroutine
 * suspended on a pending operation, CALL_REPLY (or the deadline) resumes it.
 *
 * The pending operation is one small allocation per call: these calls are
 * a few per task (a registry lookup, a label request), not per element.
 * The reply is matched by the dispatch id (which task) and the call id (the
 * call that task is waiting on now), so a reply that comes after the
 * deadline, or for a task that ended, finds nothing and is dropped.
 *
 * Part of the executor (it includes exec_int.h); loop thread only.
 */
#include "worker/exec_calls.h"

#include <lauxlib.h>
#include <math.h>

#include "lib/base/alloc.h"
#include "lib/lua/lua_msgpack.h"
#include "worker/budget_client.h"
#include "worker/exec_int.h"

struct pending_call
{
    uint64_t id;
    char op[32];
    double timeout_s;
    bool timed_out;
    uint32_t status;
    char *body;      /* owned copy of CALL_REPLY's body */
    size_t len;
};

static uint64_t next_call_id = 1; /* loop thread only: unique for the process's life */

static void call_free(struct pending_call *pc)
{
    tr_free(pc->body);
    tr_free(pc);
}

static void call_cancel(struct tr_task *t, void *op)
{
    uv_timer_stop(tr_task_timer(t));
    call_free(op);
}

static void on_call_timeout(uv_timer_t *h)
{
    struct tr_task *t = h->data;
    struct pending_call *pc = t->op;
    pc->timed_out = true;
    tr_task_resume(t);
}

/* Runs in the task's coroutine once the answer (or the deadline) resumed it. */
static int call_done(lua_State *L, int status, lua_KContext kctx)
{
    struct pending_call *pc = (struct pending_call *)kctx;
    if (pc->timed_out) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s: no answer from the scheduler within %g s", pc->op,
                 pc->timeout_s);
        call_free(pc);
        return luaL_error(L, "%s", msg);
    }
    lua_pushinteger(L, pc->status);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_lua_unpack_bytes(L, pc->body, pc->len, &err);
    char op[32];
    snprintf(op, sizeof(op), "%s", pc->op);
    call_free(pc);
    if (rc < 0)
        return luaL_error(L, "%s: the scheduler's answer does not decode: %s", op, err.msg);
    return 2;
}

static int sb_write(void *data, const char *buf, size_t len)
{
    return tr_buf_add(data, buf, len) == 0 ? 0 : -1;
}

int tr_task_call(lua_State *L, struct tr_task *t, const char *op, int args, double timeout_s)
{
    args = lua_absindex(L, args);
    struct tr_buf body;
    tr_buf_init(&body, TR_PROTO_CALL_BODY_MAX);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, sb_write);
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_lua_pack_named(L, args, op, &pk, &err);
    if (rc < 0) {
        tr_buf_release(&body);
        if (rc == TR_ENOMEM && err.msg[0] == '\0')
            return luaL_error(L, "%s: the arguments are over %u bytes packed (or out of memory)",
                              op, TR_PROTO_CALL_BODY_MAX);
        return luaL_error(L, "%s: %s", op, err.msg[0] ? err.msg : tr_strerror(rc));
    }
    struct pending_call *pc = tr_calloc(1, sizeof(*pc));
    if (pc == NULL) {
        tr_buf_release(&body);
        return luaL_error(L, "%s: out of memory", op);
    }
    pc->id = next_call_id++;
    snprintf(pc->op, sizeof(pc->op), "%s", op);
    pc->timeout_s = timeout_s > 0 ? timeout_s : TR_CALL_TIMEOUT_S;
    struct tr_msg m = {.type = TR_MSG_CALL};
    m.u.call.id = pc->id;
    m.u.call.dispatch = t->id;
    m.u.call.op = tr_str_c(op);
    m.u.call.body = (struct tr_str){body.buf, body.len};
    exec_send(t->exec, &m);
    tr_buf_release(&body);
    uv_timer_t *timer = tr_task_timer(t);
    uv_update_time(timer->loop);
    uv_timer_start(timer, on_call_timeout, (uint64_t)ceil(pc->timeout_s * 1000.0), 0);
    return tr_task_yield(L, t, pc, call_cancel, (lua_KContext)pc, call_done);
}

void tr_executor_on_call_reply(struct tr_executor *e, const struct tr_msg_call_reply *m)
{
    if (m->dispatch == 0) {
        tr_budget_on_reply(e, m); /* a batch of LLM call reservations */
        return;
    }
    struct tr_task *t = tr_hmap_get(&e->tasks, &m->dispatch, sizeof(m->dispatch));
    if (t == NULL || t->where != T_RUNNING || t->op == NULL || t->op_cancel != call_cancel)
        return;
    struct pending_call *pc = t->op;
    if (pc->id != m->id)
        return;
    if (m->body.len > 0) {
        pc->body = tr_malloc(m->body.len);
        if (pc->body == NULL) {
            /* Answer nil rather than leave the task waiting for its deadline. */
            pc->len = 0;
        } else {
            memcpy(pc->body, m->body.p, m->body.len);
            pc->len = m->body.len;
        }
    }
    pc->status = m->status;
    uv_timer_stop(tr_task_timer(t));
    tr_task_resume(t);
}
