/*
 * result.c - how a task ends: its output packed, or its error with a
 * traceback built from its coroutine, sent in one RESULT with the last log
 * lines and the model calls of the attempt (tr_task_usage_add); then the
 * task is released and its slot filled.
 *
 * Error texts are built under lua_pcall on the state's main thread, with the
 * heap cap raised a little, because converting an error object may run its
 * __tostring and a traceback allocates: a task that ran out of memory still
 * gets its traceback, and a failure there falls back to the bare message.
 *
 * Loop thread only.
 */
#include <lauxlib.h>

#include "lib/lua/lua_msgpack.h"
#include "lib/lua/lua_rt.h"
#include "lib/lua/lua_trellis.h"
#include "worker/budget_client.h"
#include "worker/exec_int.h"
#include "worker/secrets.h"

#define BUF_KEEP (1u << 20)           /* the output buffer is kept up to this size */
#define TRACEBACK_HEADROOM (1u << 20) /* heap a traceback may use past the cap */
#define ERROR_MAX (64u << 10)         /* bytes of an error message in RESULT */
#define OUTPUT_MAX (48u << 20)        /* bytes of an output: RESULT must fit a 64 MiB frame
                                       * with logs and usage (docs/pipelines.md) */
#define GUARD_NS (1000ull * 1000000u) /* a failed task's __tostring runs at most this long */

struct outcome
{
    bool ok;
    bool skipped;     /* trellis.skip(reason): error is the reason */
    struct tr_str output;
    struct tr_str error;
    bool timed_out;
    bool cancelled;
};

static void complete_redacted(struct tr_executor *e, struct tr_task *t, const struct outcome *o);

/*
 * A value trellis.secret gave out never leaves in clear (secrets.h): the
 * output's strings and the error are redacted first. When that cannot be
 * done (out of memory, an output that does not decode), the task fails
 * with a message of its own rather than send the bytes.
 */
static void complete(struct tr_executor *e, struct tr_task *t, const struct outcome *o)
{
    if (!tr_secrets_any()) {
        complete_redacted(e, t, o);
        return;
    }
    struct outcome r = *o;
    struct tr_buf out, err;
    tr_buf_init(&out, 0);
    tr_buf_init(&err, 0);
    int rc = o->output.len ? tr_secrets_redact_mp(o->output.p, o->output.len, &out) : 0;
    if (rc > 0)
        r.output = (struct tr_str){out.buf, out.len};
    int erc = o->error.len ? tr_secrets_redact(o->error.p, o->error.len, &err) : 0;
    if (erc > 0)
        r.error = (struct tr_str){err.buf, err.len};
    if (rc < 0 || erc < 0) {
        r.ok = false;
        r.output = (struct tr_str){NULL, 0};
        r.error = TR_STR("task failed: its output or error could not be checked for secrets");
    }
    complete_redacted(e, t, &r);
    tr_buf_release(&out);
    tr_buf_release(&err);
}

/* Sends t's RESULT, logs the line the end-to-end tests grep, frees t and fills the slot. */
static void complete_redacted(struct tr_executor *e, struct tr_task *t, const struct outcome *o)
{
    double now = tr_now();
    /* RESULT carries at most TR_PROTO_MAX_LOGS lines: older ones go in LOG first. */
    task_logs_flush(e, t, t->log_dropped ? TR_PROTO_MAX_LOGS - 1 : TR_PROTO_MAX_LOGS);

    struct tr_msg m = {.type = TR_MSG_RESULT};
    struct tr_msg_result *r = &m.u.result;
    char note[128];
    uint32_t taken;
    r->id = t->id;
    r->epoch = t->epoch;
    r->attempt = t->attempt;
    r->ok = o->ok;
    r->output = o->output;
    r->error = o->error;
    r->timed_out = o->timed_out;
    r->cancelled = o->cancelled;
    r->skipped = o->skipped;
    r->started_at = t->started_at > 0 ? t->started_at : now;
    r->finished_at = now;
    r->n_logs = task_logs_take(t, r->logs, note, sizeof(note), &taken);
    if (t->n_usage > 0) {
        /* The array32 header reserved by tr_task_usage_add, big-endian count. */
        uint32_t n = t->n_usage;
        unsigned char *h = (unsigned char *)t->usage.buf;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
        r->usage = (struct tr_str){t->usage.buf, t->usage.len};
    }
    /* The settlements of its LLM calls reach the scheduler before its end does. */
    tr_budget_flush(e);
    exec_send(e, &m);
    task_logs_consume(t, taken);

    char run[80], name[80];
    tr_log_escape(run, sizeof(run), t->run_id.p, TR_MIN(t->run_id.len, (size_t)64));
    tr_log_escape(name, sizeof(name), t->name.p, TR_MIN(t->name.len, (size_t)64));
    uint64_t ms = t->start_ns ? (tr_mono_ns() - t->start_ns) / 1000000u : 0;
    const char *why = o->ok ? "" : o->skipped ? " reason=skipped" : o->timed_out ? " reason=timed_out"
                                 : o->cancelled ? " reason=cancelled" : " reason=error";
    tr_info("task done run=%s task=%s index=%u attempt=%u id=%llu ok=%d ms=%llu%s", run, name,
            t->index, t->attempt, (unsigned long long)t->id, o->ok ? 1 : 0,
            (unsigned long long)ms, why);
    t->start_ns = 0;
    exec_release(e, t);
    exec_pump(e);
}

/* The error text in e->msg, or a fixed one when building it ran out of memory. */
static struct tr_str msg_view(struct tr_executor *e)
{
    if (e->msg.len == 0)
        return TR_STR("task failed (its error message was lost: worker out of memory)");
    return (struct tr_str){e->msg.buf, e->msg.len};
}

void exec_fail_task(struct tr_task *t, const char *fmt, ...)
{
    struct tr_executor *e = t->exec;
    va_list ap;
    va_start(ap, fmt);
    tr_buf_reset(&e->msg);
    if (tr_buf_vaddf(&e->msg, fmt, ap) < 0)
        tr_buf_reset(&e->msg);
    va_end(ap);
    struct outcome o = {.error = msg_view(e)};
    complete(e, t, &o);
}

struct tb_args
{
    lua_State *co;   /* the coroutine the traceback describes */
    const char *msg; /* the message, or NULL: the error object on top of co */
};

/* Protected: pushes msg (or tostring of co's error object) plus co's traceback. */
static int traceback_protected(lua_State *L)
{
    struct tb_args *a = lua_touserdata(L, 1);
    const char *msg = a->msg;
    if (msg == NULL) {
        lua_xmove(a->co, L, 1);
        msg = luaL_tolstring(L, -1, NULL); /* a table's __tostring runs here */
    }
    luaL_traceback(L, a->co, msg, 0);
    return 1;
}

/*
 * Builds the error text of a failed task into e->msg: msg (or the error
 * object on top of t->co when msg is NULL) and the traceback of t->co. The
 * heap cap is raised a little meanwhile, so that a task that ran out of
 * memory still gets its traceback.
 */
static void build_error(struct tr_executor *e, struct tr_task *t, const char *msg)
{
    lua_State *L = t->pipe->L;
    if (t->co == NULL) {
        /* It never ran: there is no stack to show. */
        tr_buf_reset(&e->msg);
        if (tr_buf_addstr(&e->msg, msg ? msg : "task failed") < 0)
            tr_buf_reset(&e->msg);
        return;
    }
    struct tb_args a = {t->co, msg};
    int top = lua_gettop(L);
    size_t cap = e->cfg.lua_mem_max;
    if (cap != 0)
        tr_lua_set_mem_max(L, cap + TRACEBACK_HEADROOM);
    int status = LUA_ERRMEM;
    if (lua_checkstack(L, 6)) {
        /* A __tostring is the file's code: it sees the run's globals, is
         * watched, and gets GUARD_NS before the hook stops it. */
        pipe_env_enter(t->pipe, t);
        tr_watchdog_enter(e->cfg.watchdog, t->id, t->epoch, t->attempt, t->run_id, t->name);
        e->guard_ns = tr_mono_ns() + GUARD_NS;
        lua_pushcfunction(L, traceback_protected);
        lua_pushlightuserdata(L, &a);
        status = lua_pcall(L, 1, 1, 0);
        e->guard_ns = 0;
        tr_watchdog_leave(e->cfg.watchdog);
        pipe_env_leave(t->pipe);
        tr_lua_set_stopping(L, false);
        lua_sethook(L, exec_task_hook, LUA_MASKCOUNT, TR_EXEC_HOOK_COUNT);
    }
    if (cap != 0)
        tr_lua_set_mem_max(L, cap);
    tr_buf_reset(&e->msg);
    size_t len = 0;
    const char *s = status == LUA_OK ? lua_tolstring(L, -1, &len) : NULL;
    int rc = s ? tr_buf_add(&e->msg, s, TR_MIN(len, (size_t)ERROR_MAX)) : -1;
    if (rc < 0 || s == NULL) {
        tr_buf_reset(&e->msg);
        if (msg != NULL)
            rc = tr_buf_addstr(&e->msg, msg);
        else
            rc = tr_buf_addstr(&e->msg, "(error object could not be converted to a string)");
        if (rc < 0)
            tr_buf_reset(&e->msg);
    }
    lua_settop(L, top);
}

void exec_finish_killed(struct tr_executor *e, struct tr_task *t)
{
    char msg[320];
    char name[80];
    snprintf(name, sizeof(name), "%.*s", (int)TR_MIN(t->name.len, (size_t)64), t->name.p);
    if (t->kill == KILL_TIMEOUT)
        snprintf(msg, sizeof(msg), "task '%s' timed out after %g s", name, t->timeout);
    else if (t->kill_reason[0])
        snprintf(msg, sizeof(msg), "task '%s' was cancelled: %s", name, t->kill_reason);
    else
        snprintf(msg, sizeof(msg), "task '%s' was cancelled", name);
    build_error(e, t, msg);
    struct outcome o = {.error = msg_view(e),
                        .timed_out = t->kill == KILL_TIMEOUT,
                        .cancelled = t->kill == KILL_CANCEL};
    complete(e, t, &o);
}

void exec_finish_ok(struct tr_executor *e, struct tr_task *t, int nres)
{
    msgpack_sbuffer_clear(&e->out);
    struct tr_error err;
    tr_error_init(&err);
    int rc = 0;
    const char *reason;
    size_t reason_len;
    if (nres > 0 && tr_lua_skip_reason(t->co, lua_gettop(t->co) - nres + 1, &reason,
                                       &reason_len)) {
        struct outcome o = {.skipped = true, .error = {reason, reason_len}};
        complete(e, t, &o);
        return;
    }
    if (nres == 0) {
        rc = msgpack_sbuffer_write(&e->out, "\xc0", 1) == 0 ? 0 : TR_ENOMEM;
    } else {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &e->out, msgpack_sbuffer_write);
        rc = tr_lua_pack_named(t->co, lua_gettop(t->co) - nres + 1, "output", &pk, &err);
    }
    if (rc < 0) {
        exec_fail_task(t, "cannot encode output of task '%s': %s", tr_task_name(t),
                       err.msg[0] ? err.msg : tr_strerror(rc));
        return;
    }
    if (e->out.size > OUTPUT_MAX) {
        exec_fail_task(t, "output of task '%s' is too large: %zu bytes encoded, at most %u",
                       tr_task_name(t), e->out.size, OUTPUT_MAX);
        return;
    }
    struct outcome o = {.ok = true, .output = {e->out.data, e->out.size}};
    complete(e, t, &o);
    if (e->out.alloc > BUF_KEEP) {
        /* One huge output must not pin its buffer for the process's life. */
        msgpack_sbuffer_destroy(&e->out);
        msgpack_sbuffer_init(&e->out);
    }
}

void exec_finish_error(struct tr_executor *e, struct tr_task *t, int status)
{
    if (status == LUA_ERRMEM) {
        char msg[320];
        snprintf(msg, sizeof(msg), "task '%s' ran out of memory (the pipeline's Lua heap is "
                 "capped at %zu MiB)", tr_task_name(t), e->cfg.lua_mem_max >> 20);
        build_error(e, t, e->cfg.lua_mem_max ? msg : "not enough memory");
    } else {
        build_error(e, t, NULL);
    }
    struct outcome o = {.error = msg_view(e)};
    complete(e, t, &o);
}

/* ====================================================================== */
/* Usage of model calls, sent with RESULT                                 */
/* ====================================================================== */

static int usage_write(void *data, const char *buf, size_t len)
{
    return tr_buf_add(data, buf, len) == 0 ? 0 : -1;
}

static int pack_kstr(msgpack_packer *pk, const char *k, const char *v)
{
    size_t kl = strlen(k), vl = strlen(v);
    if (msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, k, kl) ||
        msgpack_pack_str(pk, vl) || msgpack_pack_str_body(pk, v, vl))
        return -1;
    return 0;
}

static int pack_key(msgpack_packer *pk, const char *k)
{
    size_t kl = strlen(k);
    return msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, k, kl) ? -1 : 0;
}

int tr_task_usage_add(struct tr_task *t, const struct tr_task_usage *u)
{
    if (t->n_usage >= TR_TASK_USAGE_MAX) {
        t->usage_dropped++;
        return TR_E2BIG;
    }
    size_t mark = t->usage.len;
    int rc = 0;
    if (t->n_usage == 0 && mark == 0)
        rc = tr_buf_add(&t->usage, "\xdd\0\0\0\0", 5);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &t->usage, usage_write);
    if (rc == 0 &&
        (msgpack_pack_map(&pk, 8) || pack_kstr(&pk, "provider", u->provider) ||
         pack_kstr(&pk, "model", u->model) || pack_kstr(&pk, "prompt_digest", u->prompt_digest) ||
         pack_key(&pk, "prompt_tokens") || msgpack_pack_uint64(&pk, u->prompt_tokens) ||
         pack_key(&pk, "completion_tokens") || msgpack_pack_uint64(&pk, u->completion_tokens) ||
         pack_key(&pk, "cost") || msgpack_pack_double(&pk, u->cost) ||
         pack_key(&pk, "latency_ms") || msgpack_pack_double(&pk, u->latency_ms) ||
         pack_key(&pk, "cached") ||
         (u->cached ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk))))
        rc = TR_ENOMEM;
    if (rc < 0) {
        /* Keep the list whole: drop the partial entry (and a lone header). */
        t->usage.len = t->n_usage == 0 ? 0 : mark;
        if (t->usage.alloc > 0)
            t->usage.buf[t->usage.len] = '\0';
        t->usage_dropped++;
        return rc;
    }
    t->n_usage++;
    return 0;
}
