/*
 * lua_exec.c - trellis.exec (see lua_exec.h).
 *
 * One struct proc per call owns a process handle, two or three pipes and a
 * timer. It outlives its task when the task is stopped: the cancel function
 * only detaches it and starts the TERM/KILL sequence, and the struct frees
 * itself from the last close callback once the process is gone. So a worker
 * that stops keeps its loop running until every process it started has
 * ended (at most the grace period).
 *
 * The task resumes when the process has exited and both outputs reached
 * EOF; its continuation (exec_done) builds the result from the struct, then
 * the handles close.
 */
#include "worker/lua_exec.h"

#include <errno.h>
#include <string.h>
#include <lauxlib.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <uv.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/log.h"
#include "lib/wire/proto.h"
#include "worker/executor.h"
#include "worker/lua_worker.h"

extern char **environ;

#define ARGV_MAX 4096
#define ENV_MAX 4096
#define TIMEOUT_MAX_S (30.0 * 24 * 3600)

struct stream
{
    uv_pipe_t pipe;
    struct tr_buf kept;      /* up to keep_max bytes */
    size_t keep_max;
    uint64_t dropped;        /* bytes beyond that */
    char line[TR_TASK_LOG_LINE_MAX];
    size_t line_len;         /* a line not ended yet */
    bool eof;
    bool is_err;
};

struct proc
{
    uv_process_t handle;
    struct stream out, err;
    uv_pipe_t in;
    uv_write_t wreq;
    uv_timer_t timer;        /* the call's timeout, then the grace before SIGKILL */
    struct tr_task *task;    /* NULL once detached (task stopped) */
    char *stdin_data;        /* owned until written */
    size_t stdin_len;
    bool has_stdin;
    int pid;
    int open;                /* handles not closed yet */
    bool exited;
    bool killing;            /* SIGTERM sent, SIGKILL scheduled */
    bool timed_out;
    bool resumed;
    int64_t exit_status;
    int term_signal;
    double grace_s;
    double timeout_s;
    bool spawn_tried;        /* uv_spawn was called: the process handle needs closing */
    int spawn_rc;            /* its error, reported by the continuation */
    uv_stdio_container_t stdio[3];
    uv_process_options_t po; /* strings anchored on the yielded coroutine's stack */
};

/* Sends sig to the process's group; the group may be gone already. */
static void signal_group(struct proc *p, int sig)
{
    if (p->pid > 0 && kill(-p->pid, sig) != 0 && errno != ESRCH)
        tr_warn("cannot signal process group %d: %s", p->pid, strerror(errno));
}

static void on_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (--p->open > 0)
        return;
    tr_buf_release(&p->out.kept);
    tr_buf_release(&p->err.kept);
    tr_free(p->stdin_data);
    tr_free(p);
}

static void close_one(struct proc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_closed);
}

static void close_all(struct proc *p)
{
    close_one(p, (uv_handle_t *)&p->timer);
    close_one(p, (uv_handle_t *)&p->out.pipe);
    close_one(p, (uv_handle_t *)&p->err.pipe);
    if (p->has_stdin)
        close_one(p, (uv_handle_t *)&p->in);
    if (p->spawn_tried)
        close_one(p, (uv_handle_t *)&p->handle);
}

/* Everything is in: resume the task (which reads the result) and close. */
static void maybe_done(struct proc *p)
{
    if (!p->exited || !p->out.eof || !p->err.eof || p->resumed)
        return;
    p->resumed = true;
    uv_timer_stop(&p->timer);
    struct tr_task *t = p->task;
    p->task = NULL;
    if (t != NULL)
        tr_task_resume(t); /* runs exec_done, which reads p */
    close_all(p);
}

static void on_kill_timer(uv_timer_t *h)
{
    struct proc *p = h->data;
    if (!p->exited)
        signal_group(p, SIGKILL);
}

/* TERM now, KILL after the grace. */
static void start_killing(struct proc *p)
{
    if (p->killing || p->exited)
        return;
    p->killing = true;
    signal_group(p, SIGTERM);
    uv_timer_stop(&p->timer);
    uv_timer_start(&p->timer, on_kill_timer, (uint64_t)ceil(p->grace_s * 1000.0), 0);
}

static void on_timeout(uv_timer_t *h)
{
    struct proc *p = h->data;
    p->timed_out = true;
    static const char msg[] = "trellis.exec: timed out; ending the process group";
    if (p->task != NULL)
        tr_task_log(p->task, msg, sizeof(msg) - 1);
    start_killing(p);
}

static void on_proc_exit(uv_process_t *h, int64_t status, int sig)
{
    struct proc *p = h->data;
    p->exited = true;
    p->exit_status = status;
    p->term_signal = sig;
    /* Whatever the program left in its group would hold our pipes open (and
     * outlive the task): it goes with it. */
    signal_group(p, SIGKILL);
    maybe_done(p);
}

/* Cut lines out of data into the task log. */
static void log_lines(struct proc *p, struct stream *s, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (c != '\n' && s->line_len < sizeof(s->line)) {
            s->line[s->line_len++] = c;
            if (s->line_len < sizeof(s->line))
                continue;
        }
        if (p->task != NULL) {
            char buf[TR_TASK_LOG_LINE_MAX];
            size_t len = 0;
            if (s->is_err) {
                memcpy(buf, "[stderr] ", 9);
                len = 9;
            }
            size_t take = TR_MIN(s->line_len, sizeof(buf) - len);
            memcpy(buf + len, s->line, take);
            tr_task_log(p->task, buf, len + take);
        }
        s->line_len = 0;
        if (c != '\n' && i + 1 < n && data[i + 1] == '\n')
            i++; /* a full buffer flushed right before its newline: one line */
    }
}

static _Thread_local char read_buf[64 * 1024];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* Reads are consumed at once on this thread: one buffer serves every pipe. */
    *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    struct proc *p = h->data;
    struct stream *s = (uv_pipe_t *)h == &p->out.pipe ? &p->out : &p->err;
    if (n > 0) {
        size_t room = s->keep_max > s->kept.len ? s->keep_max - s->kept.len : 0;
        size_t keep = TR_MIN((size_t)n, room);
        if (keep > 0 && tr_buf_add(&s->kept, buf->base, keep) < 0)
            keep = 0;
        s->dropped += (size_t)n - keep;
        log_lines(p, s, buf->base, (size_t)n);
        return;
    }
    if (n == 0)
        return;
    /* EOF or an error: this output is over. */
    if (s->line_len > 0)
        log_lines(p, s, "\n", 1);
    uv_read_stop(h);
    s->eof = true;
    maybe_done(p);
}

static void on_written(uv_write_t *req, int status)
{
    struct proc *p = req->data;
    tr_free_null(&p->stdin_data);
    if (!uv_is_closing((uv_handle_t *)&p->in))
        uv_close((uv_handle_t *)&p->in, on_closed); /* EOF for the program */
}

/*
 * uv_spawn waits until the child has exec'd (to report a missing program),
 * about 2 ms here: a hundred tasks starting programs in one loop turn would
 * stall the loop for a fifth of a second. So each turn spawns for at most
 * SPAWN_BUDGET_NS; later calls wait for a following turn on their timer.
 * uv_now changes once per loop iteration (and when a task updates it), which
 * is what "turn" means here.
 */
#define SPAWN_BUDGET_NS (5 * 1000 * 1000)

static _Thread_local uint64_t turn_now = UINT64_MAX;
static _Thread_local uint64_t turn_spent_ns;

static bool spawn_budget_left(uv_loop_t *loop)
{
    uint64_t now = uv_now(loop);
    if (now != turn_now) {
        turn_now = now;
        turn_spent_ns = 0;
    }
    return turn_spent_ns < SPAWN_BUDGET_NS;
}

/* Starts the program and its I/O; 0 or a libuv error (the handle then needs closing only). */
static int spawn(struct proc *p)
{
    uv_loop_t *loop = p->timer.loop;
    uint64_t t0 = uv_hrtime();
    p->spawn_tried = true;
    p->open++;
    int rc = uv_spawn(loop, &p->handle, &p->po);
    turn_spent_ns += uv_hrtime() - t0;
    if (rc != 0) {
        p->spawn_rc = rc;
        p->exited = true;
        return rc;
    }
    p->pid = p->handle.pid;
    uv_read_start((uv_stream_t *)&p->out.pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&p->err.pipe, on_alloc, on_read);
    if (p->has_stdin) {
        uv_buf_t b = uv_buf_init(p->stdin_data, (unsigned)p->stdin_len);
        p->wreq.data = p;
        if (uv_write(&p->wreq, (uv_stream_t *)&p->in, &b, 1, on_written) != 0)
            uv_close((uv_handle_t *)&p->in, on_closed);
    }
    if (p->timeout_s > 0)
        uv_timer_start(&p->timer, on_timeout, (uint64_t)ceil(p->timeout_s * 1000.0), 0);
    return 0;
}

/* A deferred start: its turn, or wait another. */
static void on_spawn_turn(uv_timer_t *h)
{
    struct proc *p = h->data;
    if (!spawn_budget_left(h->loop)) {
        uv_timer_start(&p->timer, on_spawn_turn, 1, 0);
        return;
    }
    if (spawn(p) != 0) {
        /* The continuation raises the error; nothing to read. */
        p->out.eof = p->err.eof = true;
        maybe_done(p);
    }
}

/* The task was stopped (timeout, CANCEL, worker stopping): detach and end the group. */
static void exec_cancel(struct tr_task *t, void *op)
{
    struct proc *p = op;
    p->task = NULL;
    if (!p->spawn_tried) { /* still waiting for its turn to start */
        p->resumed = true;
        close_all(p);
        return;
    }
    if (p->exited) {
        /* Only the output's EOF is missing: the group is already being killed. */
        return;
    }
    start_killing(p);
}

/* Continuation in the task's coroutine: the result table. */
static int exec_done(lua_State *L, int status, lua_KContext kctx)
{
    struct proc *p = (struct proc *)kctx;
    if (p->spawn_rc != 0)
        return luaL_error(L, "trellis.exec: cannot start '%s': %s", p->po.file,
                          uv_strerror(p->spawn_rc));
    lua_createtable(L, 0, 7);
    int sig = p->term_signal;
    lua_pushinteger(L, sig ? 128 + sig : (lua_Integer)p->exit_status);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, sig);
    lua_setfield(L, -2, "signal");
    lua_pushlstring(L, p->out.kept.buf ? p->out.kept.buf : "", p->out.kept.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, p->err.kept.buf ? p->err.kept.buf : "", p->err.kept.len);
    lua_setfield(L, -2, "stderr");
    lua_pushinteger(L, (lua_Integer)p->out.dropped);
    lua_setfield(L, -2, "stdout_dropped");
    lua_pushinteger(L, (lua_Integer)p->err.dropped);
    lua_setfield(L, -2, "stderr_dropped");
    lua_pushboolean(L, p->timed_out);
    lua_setfield(L, -2, "timed_out");
    return 1;
}

/* ====================================================================== */
/* Arguments                                                               */
/* ====================================================================== */

/* Strings of the array field at the top of the stack into out (pointers into Lua strings). */
static int read_argv(lua_State *L, const char ***out)
{
    if (!lua_istable(L, -1))
        return luaL_error(L, "trellis.exec: argv must be a non-empty array of strings");
    lua_Integer n = luaL_len(L, -1);
    if (n < 1 || n > ARGV_MAX)
        return luaL_error(L, "trellis.exec: argv must hold 1 to %d strings", ARGV_MAX);
    const char **a = lua_newuserdatauv(L, sizeof(*a) * (size_t)(n + 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, -2, i) != LUA_TSTRING)
            return luaL_error(L, "trellis.exec: argv[%d] must be a string", (int)i);
        size_t len;
        a[i - 1] = lua_tolstring(L, -1, &len);
        if (strlen(a[i - 1]) != len)
            return luaL_error(L, "trellis.exec: argv[%d] contains a NUL byte", (int)i);
        lua_pop(L, 1); /* the argv table keeps it alive */
    }
    a[n] = NULL;
    *out = a;
    return 0; /* leaves the userdata on the stack (anchors a) */
}

/* "K=V" strings: the worker's environment, then env (table at index envi), then the GPUs. */
static const char **build_env(lua_State *L, int envi, struct tr_task *t)
{
    size_t n_base = 0;
    while (environ[n_base] != NULL)
        n_base++;
    size_t n_extra = 0;
    if (envi != 0) {
        lua_pushnil(L);
        while (lua_next(L, envi) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING ||
                (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                luaL_error(L, "trellis.exec: env must map names to strings");
            n_extra++;
            lua_pop(L, 1);
        }
        if (n_extra > ENV_MAX)
            luaL_error(L, "trellis.exec: env holds more than %d variables", ENV_MAX);
    }
    size_t cap = n_base + n_extra + 3;
    const char **e = lua_newuserdatauv(L, sizeof(*e) * cap, 0);
    int anchor = lua_gettop(L);
    size_t n = 0;
    /* Variables set below replace the worker's own. */
    for (size_t i = 0; i < n_base; i++) {
        const char *v = environ[i];
        if (strncmp(v, "CUDA_VISIBLE_DEVICES=", 21) == 0 ||
            strncmp(v, "CUDA_DEVICE_ORDER=", 18) == 0)
            continue;
        if (envi != 0) {
            const char *eq = strchr(v, '=');
            if (eq != NULL) {
                lua_pushlstring(L, v, (size_t)(eq - v));
                int ty = lua_rawget(L, envi);
                lua_pop(L, 1);
                if (ty != LUA_TNIL)
                    continue;
            }
        }
        e[n++] = v;
    }
    /* The strings made here are anchored in a table next to the array. */
    lua_createtable(L, (int)n_extra + 2, 0);
    int strs = lua_gettop(L);
    int k = 0;
    if (envi != 0) {
        lua_pushnil(L);
        while (lua_next(L, envi) != 0) {
            const char *key = lua_tostring(L, -2);
            if (strcmp(key, "CUDA_VISIBLE_DEVICES") != 0 && key[0] != '\0' &&
                strchr(key, '=') == NULL) {
                lua_pushfstring(L, "%s=%s", key, lua_tostring(L, -1));
                e[n++] = lua_tostring(L, -1);
                lua_rawseti(L, strs, ++k);
            }
            lua_pop(L, 1);
        }
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "CUDA_VISIBLE_DEVICES=");
    uint32_t ng = 0;
    const uint32_t *g = tr_task_gpus(t, &ng);
    for (uint32_t i = 0; i < ng; i++) {
        char num[16];
        snprintf(num, sizeof(num), i ? ",%u" : "%u", g[i]);
        luaL_addstring(&b, num);
    }
    luaL_pushresult(&b);
    e[n++] = lua_tostring(L, -1);
    lua_rawseti(L, strs, ++k);
    bool user_order = false;
    if (envi != 0) {
        user_order = lua_getfield(L, envi, "CUDA_DEVICE_ORDER") != LUA_TNIL;
        lua_pop(L, 1);
    }
    if (!user_order) /* CUDA numbers devices as NVML (and the scheduler) do */
        e[n++] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    e[n] = NULL;
    lua_settop(L, anchor + 1); /* the array's userdata and the strings' table stay */
    return e;
}

static double opt_seconds(lua_State *L, int opts, const char *name, double dflt)
{
    int ty = lua_getfield(L, opts, name);
    double v = dflt;
    if (ty == LUA_TNUMBER) {
        v = (double)lua_tonumber(L, -1);
        if (!isfinite(v) || v < 0)
            luaL_error(L, "trellis.exec: %s must be a number of seconds >= 0", name);
    } else if (ty != LUA_TNIL) {
        luaL_error(L, "trellis.exec: %s must be a number of seconds", name);
    }
    lua_pop(L, 1);
    return TR_MIN(v, TIMEOUT_MAX_S);
}

/* ====================================================================== */
/* trellis.exec                                                            */
/* ====================================================================== */

int tr_lua_exec(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct tr_task *t = tr_task_of(L);
    if (t == NULL)
        return luaL_error(L, "trellis.exec can only be called from a task's run function "
                             "(not while the pipeline loads, nor inside a coroutine the task "
                             "created)");
    lua_getfield(L, 1, "argv");
    const char **argv = NULL;
    read_argv(L, &argv); /* stack: opts, argv table, argv array */
    int ty = lua_getfield(L, 1, "env");
    int envi = 0;
    if (ty == LUA_TTABLE)
        envi = lua_gettop(L);
    else if (ty != LUA_TNIL)
        return luaL_error(L, "trellis.exec: env must be a table");
    const char **env = build_env(L, envi, t);
    const char *cwd = NULL;
    ty = lua_getfield(L, 1, "cwd");
    if (ty == LUA_TSTRING)
        cwd = lua_tostring(L, -1);
    else if (ty != LUA_TNIL)
        return luaL_error(L, "trellis.exec: cwd must be a string");
    size_t in_len = 0;
    const char *in = NULL;
    ty = lua_getfield(L, 1, "stdin");
    if (ty == LUA_TSTRING)
        in = lua_tolstring(L, -1, &in_len);
    else if (ty != LUA_TNIL)
        return luaL_error(L, "trellis.exec: stdin must be a string");
    double timeout = opt_seconds(L, 1, "timeout", 0);
    double grace = opt_seconds(L, 1, "grace", TR_EXEC_GRACE_S);
    lua_Integer max_out = TR_EXEC_MAX_OUTPUT;
    ty = lua_getfield(L, 1, "max_output");
    if (ty != LUA_TNIL) {
        int isint = 0;
        max_out = lua_tointegerx(L, -1, &isint);
        if (!isint || max_out < 0 || max_out > (lua_Integer)tr_mp_default_limits.max_str / 2)
            return luaL_error(L, "trellis.exec: max_output must be a byte count from 0 to %d",
                              (int)(tr_mp_default_limits.max_str / 2));
    }
    lua_pop(L, 1);

    /* Nothing below raises until the yield: every handle is accounted for. */
    struct proc *p = tr_calloc(1, sizeof(*p));
    char *in_copy = in != NULL ? tr_memdup(in, in_len ? in_len : 1) : NULL;
    if (p == NULL || (in != NULL && in_copy == NULL)) {
        tr_free(p);
        tr_free(in_copy);
        return luaL_error(L, "trellis.exec: out of memory");
    }
    uv_loop_t *loop = tr_executor_loop(tr_executor_of(L));
    p->task = t;
    p->grace_s = grace;
    p->out.is_err = false;
    p->err.is_err = true;
    p->out.keep_max = p->err.keep_max = (size_t)max_out;
    tr_buf_init(&p->out.kept, 0);
    tr_buf_init(&p->err.kept, 0);
    uv_timer_init(loop, &p->timer);
    uv_pipe_init(loop, &p->out.pipe, 0);
    uv_pipe_init(loop, &p->err.pipe, 0);
    p->open = 3;
    p->has_stdin = in != NULL;
    if (p->has_stdin) {
        uv_pipe_init(loop, &p->in, 0);
        p->open++;
        p->stdin_data = in_copy;
        p->stdin_len = in_len;
    }
    p->handle.data = p->timer.data = p->out.pipe.data = p->err.pipe.data = p->in.data = p;
    p->stdio[0] = (uv_stdio_container_t){
        .flags = p->has_stdin ? UV_CREATE_PIPE | UV_READABLE_PIPE : UV_IGNORE,
        .data.stream = (uv_stream_t *)&p->in};
    p->stdio[1] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                                         .data.stream = (uv_stream_t *)&p->out.pipe};
    p->stdio[2] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                                         .data.stream = (uv_stream_t *)&p->err.pipe};
    p->po = (uv_process_options_t){
        .exit_cb = on_proc_exit,
        .file = argv[0],
        .args = (char **)argv,
        .env = (char **)env,
        .cwd = cwd,
        .flags = UV_PROCESS_DETACHED, /* setsid: it leads its own process group */
        .stdio_count = 3,
        .stdio = p->stdio,
    };
    p->timeout_s = timeout;
    if (spawn_budget_left(loop)) {
        int rc = spawn(p);
        if (rc != 0) {
            p->task = NULL;
            p->resumed = true;
            close_all(p);
            return luaL_error(L, "trellis.exec: cannot start '%s': %s", argv[0],
                              uv_strerror(rc));
        }
    } else {
        uv_timer_start(&p->timer, on_spawn_turn, 1, 0);
    }
    return tr_task_yield(L, t, p, exec_cancel, (lua_KContext)p, exec_done);
}
