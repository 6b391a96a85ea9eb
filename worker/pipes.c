/*
 * pipes.c - the executor's pipeline states: one sandboxed lua_State per
 * pipeline digest, built from the source the scheduler sends.
 *
 * A task whose digest is unknown waits in a state in P_LOADING while one
 * PIPELINE_GET is outstanding for it. When PIPELINE comes, the source is
 * checked against its digest and evaluated once, in the thread pool (no Lua
 * evaluation on the loop thread), and each task's run function is pinned
 * in the registry and indexed by name; the waiting tasks then join
 * the run queue in the order they came. A load error fails each of them with
 * the reason and forgets the state, so that a later task asks again.
 *
 * States are kept after their tasks finish (loading costs an evaluation of
 * the whole file); beyond cfg.max_states the least recently used state with
 * no task is closed. Each state also keeps finished coroutines for reuse, so
 * a task costs no lua_newthread in the steady state.
 *
 * Loop thread only, but for the load job's work (see struct load_job).
 */
#include <lauxlib.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/lua/lua_rt.h"
#include "lib/lua/pipeline.h"
#include "worker/exec_int.h"
#include "worker/lua_loop.h"
#include "worker/lua_worker.h"

#define PIPELINE_RETRY_NS (10ull * 1000000000ull) /* ask again after this long without an answer */
#define EVAL_WALL_MAX_S 10.0 /* evaluating the file at load, as the scheduler allows */

/* Registry key of the light userdata that points at the executor. */
static const char exec_key = 'x';

struct tr_executor *tr_executor_of(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &exec_key);
    struct tr_executor *e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return e;
}

/* ====================================================================== */
/* Lookup and life cycle                                                  */
/* ====================================================================== */

struct pipe *pipe_find(struct tr_executor *e, struct tr_str digest)
{
    struct pipe *p = e->last_pipe;
    if (p != NULL && digest.len == 64 && memcmp(p->digest, digest.p, 64) == 0)
        return p;
    p = tr_hmap_get(&e->pipes, digest.p, digest.len);
    if (p != NULL)
        e->last_pipe = p;
    return p;
}

static void send_get(struct tr_executor *e, struct pipe *p)
{
    struct tr_msg m = {.type = TR_MSG_PIPELINE_GET};
    m.u.pipeline_get.digest = (struct tr_str){p->digest, 64};
    p->requested_ns = tr_mono_ns();
    exec_send(e, &m);
}

struct pipe *pipe_request(struct tr_executor *e, struct tr_str digest)
{
    struct pipe *p = tr_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    memcpy(p->digest, digest.p, 64);
    p->digest[64] = '\0';
    p->chunk_ref = p->globals_ref = p->env_mt_ref = LUA_NOREF;
    p->guards_ref = LUA_NOREF;
    tr_hmap_init(&p->by_name);
    tr_hmap_init(&p->run_envs);
    if (tr_hmap_put(&e->pipes, p->digest, 64, p) < 0) {
        tr_free(p);
        return NULL;
    }
    tr_debug("fetching pipeline digest=%s", p->digest);
    send_get(e, p);
    return p;
}

void pipe_destroy(struct pipe *p)
{
    /* Closing the state frees the coroutines and everything the refs pinned. */
    tr_lua_free(p->L);
    for (uint32_t i = 0; i < p->n_runs; i++)
        tr_free(p->runs[i].name);
    tr_free(p->runs);
    tr_free(p->idle);
    tr_free(p->label);
    tr_hmap_release(&p->by_name);
    size_t it = 0;
    struct run_env *env;
    while ((env = tr_hmap_next(&p->run_envs, &it)) != NULL)
        tr_free(env);
    tr_hmap_release(&p->run_envs);
    tr_free(p);
}

void pipe_free(struct tr_executor *e, struct pipe *p)
{
    if (p == NULL)
        return;
    TR_ASSERT(p->active == 0 && p->waiting.n == 0);
    tr_hmap_del(&e->pipes, p->digest, 64);
    if (e->last_pipe == p)
        e->last_pipe = NULL;
    if (p->job != NULL) {
        /* The pool still evaluates the file into p: load_done frees it. */
        p->orphaned = true;
        return;
    }
    pipe_destroy(p);
}

void pipe_evict(struct tr_executor *e)
{
    uint32_t max = e->cfg.max_states ? e->cfg.max_states : 16;
    while (tr_hmap_count(&e->pipes) > max) {
        struct pipe *victim = NULL;
        size_t it = 0;
        struct pipe *p;
        while ((p = tr_hmap_next(&e->pipes, &it)) != NULL) {
            if (p->state == P_READY && p->active == 0 &&
                (victim == NULL || p->used_tick < victim->used_tick))
                victim = p;
        }
        if (victim == NULL)
            return; /* every state has tasks: keep them all for now */
        tr_info("closing idle pipeline state '%s' digest=%.12s", victim->label, victim->digest);
        pipe_free(e, victim);
    }
}

void pipe_tick(struct tr_executor *e)
{
    uint64_t now = tr_mono_ns();
    size_t it = 0;
    struct pipe *p;
    while ((p = tr_hmap_next(&e->pipes, &it)) != NULL) {
        if (p->state == P_LOADING && p->job == NULL && now - p->requested_ns > PIPELINE_RETRY_NS) {
            tr_warn("no answer for pipeline digest=%s: asking again", p->digest);
            send_get(e, p);
        }
    }
}

int pipe_run_ref(struct pipe *p, struct tr_str name)
{
    struct run_fn *r = tr_hmap_get(&p->by_name, name.p, name.len);
    return r ? r->ref : LUA_NOREF;
}

/* ====================================================================== */
/* Coroutines                                                             */
/* ====================================================================== */

void pipe_take_coroutine(struct pipe *p, lua_State **co, int *ref)
{
    if (p->n_idle > 0) {
        struct idle_co *c = &p->idle[--p->n_idle];
        *co = c->co;
        *ref = c->ref;
        return;
    }
    /* Both are set only once the thread is pinned: an unpinned one would be
     * collected while the task still uses it. */
    lua_State *c = lua_newthread(p->L);
    int r = luaL_ref(p->L, LUA_REGISTRYINDEX);
    *co = c;
    *ref = r;
}

void pipe_give_coroutine(struct pipe *p, lua_State *co, int ref)
{
    if (p->idle == NULL)
        p->idle = tr_calloc(TR_EXEC_IDLE_COROUTINES, sizeof(*p->idle));
    if (p->idle != NULL && p->n_idle < TR_EXEC_IDLE_COROUTINES) {
        p->idle[p->n_idle++] = (struct idle_co){co, ref};
        return;
    }
    /* Removing a registry entry never allocates. */
    luaL_unref(p->L, LUA_REGISTRYINDEX, ref);
}

/* ====================================================================== */
/* Per-run globals                                                        */
/* ====================================================================== */

/*
 * Every function of the pipeline file shares the chunk's _ENV upvalue. While
 * a task runs it points at its run's table, whose misses read the shared
 * globals (the libraries and what the file's top level defined): a global
 * that a run assigns is the run's own, and the next run starts without it.
 * Swapping one upvalue costs nothing per global access, unlike a proxy.
 */

static void set_env(struct pipe *p, int ref)
{
    lua_State *L = p->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->chunk_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_setupvalue(L, -2, 1);
    lua_pop(L, 1);
}

void pipe_env_enter(struct pipe *p, struct tr_task *t)
{
    if (t->env != NULL)
        set_env(p, t->env->ref);
}

void pipe_env_leave(struct pipe *p)
{
    if (p->chunk_ref != LUA_NOREF)
        set_env(p, p->globals_ref);
}

void pipe_env_attach(struct pipe *p, struct tr_task *t)
{
    lua_State *L = p->L;
    struct run_env *env = tr_hmap_get(&p->run_envs, t->run_id.p, t->run_id.len);
    if (env == NULL) {
        lua_createtable(L, 0, 4);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->env_mt_ref);
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "_G"); /* _G.x is the run's x too */
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        env = tr_malloc(sizeof(*env) + t->run_id.len + 1);
        if (env != NULL) {
            memcpy(env->key, t->run_id.p, t->run_id.len);
            env->key[t->run_id.len] = '\0';
            env->len = (uint32_t)t->run_id.len;
            env->ref = ref;
            env->tasks = 0;
        }
        if (env == NULL || tr_hmap_put(&p->run_envs, env->key, env->len, env) < 0) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            tr_free(env);
            luaL_error(L, "not enough memory");
            return;
        }
    }
    env->tasks++;
    t->env = env;
}

void pipe_env_detach(struct pipe *p, struct tr_task *t)
{
    struct run_env *env = t->env;
    t->env = NULL;
    if (--env->tasks > 0)
        return;
    luaL_unref(p->L, LUA_REGISTRYINDEX, env->ref);
    tr_hmap_del(&p->run_envs, env->key, env->len);
    tr_free(env);
}

/* load() without an env gives the loaded chunk the running task's run globals. */
static int run_load(lua_State *L)
{
    struct tr_task *t = tr_task_running(L);
    if (t != NULL && t->env != NULL && lua_gettop(L) < 4) {
        lua_settop(L, 3);
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->env->ref);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/*
 * Protected, with the pipe at 1 and the chunk function at 2: pins the chunk
 * and its globals, makes the run tables' metatable, and wraps load.
 */
static int env_protected(lua_State *L)
{
    struct pipe *p = lua_touserdata(L, 1);
    if (lua_getupvalue(L, 2, 1) == NULL || !lua_istable(L, -1))
        return luaL_error(L, "the chunk has no _ENV");
    int g = lua_gettop(L);
    lua_getfield(L, g, "load");
    lua_pushcclosure(L, run_load, 1);
    lua_setfield(L, g, "load");
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, g);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    p->env_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->globals_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    p->chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ====================================================================== */
/* Loading                                                                */
/* ====================================================================== */

/* Protected: makes the executor reachable from L (loop thread, once loaded). */
static int attach_protected(lua_State *L)
{
    lua_pushvalue(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &exec_key);
    return 0;
}

/* Protected, with the modules' opener (or NULL) at 1: adds the worker's functions. */
static int install_protected(lua_State *L)
{
    lua_CFunction open_modules = (lua_CFunction)(uintptr_t)lua_touserdata(L, 1);
    lua_pushcfunction(L, tr_lua_worker_open);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, tr_lua_loop_open);
    lua_call(L, 0, 0);
    if (open_modules != NULL) {
        lua_pushcfunction(L, open_modules);
        lua_call(L, 0, 0);
    }
    return 0;
}

/* The string field k of table idx (raw access), or NULL. */
static const char *raw_string(lua_State *L, int idx, const char *k, size_t *len)
{
    lua_pushstring(L, k);
    lua_rawget(L, idx);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    lua_pop(L, 1); /* the table still holds the string */
    return s;
}

/* A registry ref of the table field k of table idx (raw access), or LUA_NOREF. May raise. */
static int raw_table_ref(lua_State *L, int idx, const char *k)
{
    lua_pushstring(L, k);
    if (lua_rawget(L, idx) != LUA_TTABLE) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void tr_task_push_guards(lua_State *L, const struct tr_task *t)
{
    struct pipe *p = t->pipe;
    struct run_fn *r = p != NULL ? tr_hmap_get(&p->by_name, t->name.p, t->name.len) : NULL;
    if (p != NULL && p->L != NULL && p->guards_ref != LUA_NOREF && p->guards_ref != 0)
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->guards_ref);
    else
        lua_pushnil(L);
    if (r != NULL && r->guards_ref != LUA_NOREF && r->guards_ref != 0)
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->guards_ref);
    else
        lua_pushnil(L);
}

/*
 * Protected, with the pipe at 1 and the pipeline table at 2: pins each run
 * function and indexes it by task name. Everything it allocates hangs off the
 * pipe at once, so an error raised midway leaks nothing.
 */
static int index_protected(lua_State *L)
{
    struct pipe *p = lua_touserdata(L, 1);
    if (lua_type(L, 2) != LUA_TTABLE)
        return luaL_error(L, "the file returned a %s, not trellis.pipeline{...}",
                          luaL_typename(L, 2));
    size_t nl = 0, vl = 0;
    const char *name = raw_string(L, 2, "name", &nl);
    const char *version = raw_string(L, 2, "version", &vl);
    char label[320];
    snprintf(label, sizeof(label), "%.*s@%.*s", (int)TR_MIN(nl, 200u), name ? name : "",
             (int)TR_MIN(vl, 100u), version ? version : "");
    p->label = tr_strdup(label);
    lua_pushliteral(L, "tasks");
    if (lua_rawget(L, 2) != LUA_TTABLE)
        return luaL_error(L, "the pipeline has no tasks table");
    lua_Unsigned n = lua_rawlen(L, 3);
    if (n > UINT32_MAX)
        return luaL_error(L, "too many tasks");
    p->runs = tr_calloc(n ? n : 1, sizeof(*p->runs));
    if (p->label == NULL || p->runs == NULL)
        return luaL_error(L, "not enough memory");
    p->guards_ref = raw_table_ref(L, 2, "guards");
    for (lua_Unsigned i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 3, (lua_Integer)i) != LUA_TTABLE)
            return luaL_error(L, "tasks[%I] is not a task", (lua_Integer)i);
        size_t tl;
        const char *tn = raw_string(L, 4, "name", &tl);
        lua_pushliteral(L, "run");
        if (tn == NULL || lua_rawget(L, 4) != LUA_TFUNCTION)
            return luaL_error(L, "tasks[%I] has no name or no run function", (lua_Integer)i);
        struct run_fn *r = &p->runs[p->n_runs];
        r->name = tr_strndup(tn, tl);
        if (r->name == NULL)
            return luaL_error(L, "not enough memory");
        r->ref = LUA_NOREF;
        r->guards_ref = LUA_NOREF;
        p->n_runs++;
        r->guards_ref = raw_table_ref(L, 4, "guards");
        r->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops the function */
        if (tr_hmap_put(&p->by_name, r->name, tl, r) < 0)
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1);
    }
    return 0;
}

/*
 * A pipeline file evaluated in the thread pool: a file's top level may
 * compute for up to EVAL_WALL_MAX_S, or sit in one long C call, and the
 * loop must go on meanwhile. The work builds p's state (a lua_State is not
 * bound to a thread) and fills p's run index, which the loop does not read
 * while p is loading; the loop then makes the executor reachable from the
 * state and starts the waiting tasks. Until then tr_executor_of(L) is NULL,
 * so nothing the top level calls can reach the loop's tasks.
 */
struct load_job
{
    uv_work_t req;
    struct tr_executor *e;
    struct pipe *p;
    size_t mem_max;
    lua_CFunction open_modules;
    char *src;         /* owned copy of the source */
    size_t len;
    char chunk[200];   /* the file name for messages */
    int rc;
    struct tr_error err;
    uint64_t t0;
};

/* Thread pool: builds p's state from the job's source; 0, or a negative code with err set. */
static int load(struct load_job *j)
{
    struct pipe *p = j->p;
    struct tr_error *err = &j->err;
    char digest[65];
    tr_sha256_hex(j->src, j->len, digest);
    if (memcmp(digest, p->digest, 64) != 0)
        return tr_error_set(err, TR_EPROTO, "the source received has digest %.12s, not %.12s",
                            digest, p->digest);
    struct tr_lua_limits lim = {.mem_max = j->mem_max, .wall_max_s = EVAL_WALL_MAX_S};
    p->L = tr_lua_new(&lim);
    if (p->L == NULL)
        return tr_error_set(err, TR_ENOMEM, "not enough memory for a Lua state");
    lua_State *L = p->L;
    lua_pushcfunction(L, install_protected);
    lua_pushlightuserdata(L, (void *)(uintptr_t)j->open_modules);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        return tr_error_set(err, TR_ENOMEM, "not enough memory for a Lua state");
    }
    int rc = tr_lua_eval_chunk(L, j->src, j->len, j->chunk, err);
    if (rc < 0)
        return rc;
    lua_pushcfunction(L, index_protected);
    lua_pushlightuserdata(L, p);
    lua_pushvalue(L, -3);
    int status = lua_pcall(L, 2, 0, 0);
    if (status == LUA_OK) {
        lua_pushcfunction(L, env_protected);
        lua_pushlightuserdata(L, p);
        lua_pushvalue(L, -4);
        status = lua_pcall(L, 2, 0, 0);
    }
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        rc = tr_error_set(err, status == LUA_ERRMEM ? TR_ENOMEM : TR_EINVAL, "%s",
                          status == LUA_ERRMEM || msg == NULL ? "not enough memory" : msg);
        lua_settop(L, 0);
        return rc;
    }
    lua_settop(L, 0);
    /* Every thread of the state runs under the executor's hook: the main
     * thread (coroutines created later inherit it), and coroutines the top
     * level created (they take it over from the eval's hook). */
    lua_sethook(L, exec_task_hook, LUA_MASKCOUNT, TR_EXEC_HOOK_COUNT);
    tr_lua_set_host_hook(L, exec_task_hook, TR_EXEC_HOOK_COUNT);
    return 0;
}

static void load_work(uv_work_t *req)
{
    struct load_job *j = req->data;
    j->rc = load(j);
}

static void fail_waiters(struct tr_executor *e, struct pipe *p, const char *msg);

static void load_done(uv_work_t *req, int status)
{
    struct load_job *j = req->data;
    struct tr_executor *e = j->e;
    struct pipe *p = j->p;
    p->job = NULL;
    e->n_jobs--;
    if (p->orphaned) {
        /* Forgotten while it loaded (lost scheduler, shutdown). */
        pipe_destroy(p);
    } else {
        if (j->rc == 0 && status != 0)
            j->rc = tr_error_set(&j->err, TR_ECANCELED, "loading was cancelled");
        if (j->rc == 0) {
            lua_State *L = p->L;
            lua_pushcfunction(L, attach_protected);
            lua_pushlightuserdata(L, e);
            if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
                lua_pop(L, 1);
                j->rc = tr_error_set(&j->err, TR_ENOMEM, "not enough memory for a Lua state");
            }
        }
        if (j->rc == 0) {
            p->state = P_READY;
            p->used_tick = ++e->clock;
            tr_info("loaded pipeline '%s' digest=%.12s tasks=%u in %.1f ms", p->label, p->digest,
                    p->n_runs, (double)(tr_mono_ns() - j->t0) / 1e6);
            /* The waiting tasks join the run queue in the order they came. */
            while (p->waiting.head != NULL) {
                struct tr_task *t = p->waiting.head;
                task_list_remove(t);
                t->where = T_QUEUED;
                task_list_push(&e->queue, t);
            }
            exec_pump(e);
            pipe_evict(e);
        } else {
            fail_waiters(e, p, j->err.msg);
        }
    }
    tr_free(j->src);
    tr_free(j);
    if (e->freeing)
        exec_closed_one(e);
}

/* Fails every task waiting for p with msg, then forgets p. */
static void fail_waiters(struct tr_executor *e, struct pipe *p, const char *msg)
{
    char esc[400];
    tr_log_escape(esc, sizeof(esc), msg, TR_MIN(strlen(msg), (size_t)300));
    tr_warn("cannot load pipeline digest=%s: %s", p->digest, esc);
    while (p->waiting.head != NULL)
        exec_fail_task(p->waiting.head, "cannot load pipeline %.12s: %s", p->digest, msg);
    pipe_free(e, p);
}

void tr_executor_on_pipeline(struct tr_executor *e, const struct tr_msg_pipeline *m)
{
    struct pipe *p = m->digest.len == 64 ? pipe_find(e, m->digest) : NULL;
    if (p == NULL || p->state != P_LOADING) {
        tr_debug("ignoring pipeline nobody waits for digest=%.*s", (int)TR_MIN(m->digest.len, 64u),
                 m->digest.p);
        return;
    }
    if (p->job != NULL) {
        tr_debug("ignoring a second answer for pipeline digest=%.12s", p->digest);
        return;
    }
    struct tr_error err;
    tr_error_init(&err);
    if (m->error.len > 0) {
        char why[256];
        tr_log_escape(why, sizeof(why), m->error.p, TR_MIN(m->error.len, (size_t)200));
        tr_error_set(&err, TR_ENOENT, "the scheduler says: %s", why);
        fail_waiters(e, p, err.msg);
        return;
    }
    struct load_job *j = tr_calloc(1, sizeof(*j));
    char *src = j ? tr_malloc(m->source.len + 1) : NULL;
    if (src == NULL) {
        tr_free(j);
        fail_waiters(e, p, "worker out of memory");
        return;
    }
    memcpy(src, m->source.p, m->source.len);
    j->e = e;
    j->p = p;
    j->mem_max = e->cfg.lua_mem_max;
    j->open_modules = e->cfg.open_modules;
    j->src = src;
    j->len = m->source.len;
    snprintf(j->chunk, sizeof(j->chunk), "pipeline");
    if (m->name.len > 0 && m->name.len < sizeof(j->chunk) &&
        memchr(m->name.p, '\0', m->name.len) == NULL) {
        memcpy(j->chunk, m->name.p, m->name.len);
        j->chunk[m->name.len] = '\0';
    }
    tr_error_init(&j->err);
    j->t0 = tr_mono_ns();
    j->req.data = j;
    if (uv_queue_work(e->loop, &j->req, load_work, load_done) != 0) {
        tr_free(j->src);
        tr_free(j);
        fail_waiters(e, p, "cannot queue the pipeline's evaluation");
        return;
    }
    p->job = j;
    e->n_jobs++;
}
