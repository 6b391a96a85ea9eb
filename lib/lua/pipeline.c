/*
 * pipeline.c - reads a pipeline file into a validated graph.
 *
 * The file runs once in a fresh sandbox (lib/lua/lua_rt.h) under the caller's
 * limits; then a C walk, itself inside lua_pcall because a few API calls may
 * allocate, copies the returned tables into struct tr_pipeline_def. The walk
 * uses raw access only, so no Lua code runs after the limits are lifted, and
 * it checks every task again: a file may change a task table after
 * trellis.task accepted it.
 *
 * Memory per task is the task struct, its name, its after array and, for
 * tasks that others depend on, its downstream array: a def for 100,000 tasks
 * takes about 15 MB (150 bytes a task) once the Lua state is closed. Names
 * are found through a tr_hmap during the walk and through a sorted index
 * (by_name) afterwards.
 *
 * Any thread; touches no shared state.
 */
#include "lib/lua/pipeline.h"

#include <lauxlib.h>
#include <openssl/evp.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/hmap.h"
#include "lib/base/vec.h"
#include "lib/lua/lua_msgpack.h"
#include "lib/lua/lua_rt.h"
#include "lib/lua/lua_trellis.h"
#include "lib/lua/pipeline_controls.h"
#include "lib/lua/pipeline_trigger.h"
#include "lib/wire/proto.h"

const struct tr_pipeline_limits tr_pipeline_default_limits = {
    .mem_max = 256u << 20,
    .instr_max = 200000000,
    .wall_max_s = 10,
    .max_tasks = 1000000,
};

#define MAX_POOLS UINT16_MAX

/* State of one walk over the returned pipeline table. */
struct walk
{
    struct tr_pipeline_def *def;
    const struct tr_pipeline_limits *lim;
    struct tr_error *err;
    const char *chunk;
    int rc;                 /* the walk's result */
    struct tr_hmap names;   /* task name (def's copy) -> index + 1 */
    struct tr_hmap pools;   /* pool name (def's copy) -> index + 1 */
    uint32_t *stamp;        /* per task: 1 + the last task that listed it as upstream */
    uint32_t *scratch;      /* per task: counters, then a path while finding a cycle */
    struct tr_str *refs;    /* upstream names as written, all tasks' after lists in a row */
    size_t n_refs;
    size_t refs_cap;
    size_t pools_cap;      /* allocated entries of def->pools */
    struct tr_str *maps;    /* per task: the map name as written, or {NULL, 0} */
};

/*
 * The views in refs and maps point into Lua strings that the returned tables
 * keep alive (Lua's collector does not move objects), so the second pass
 * resolves names without touching the Lua heap again.
 */

/* ====================================================================== */
/* Definition helpers                                                     */
/* ====================================================================== */

void tr_pipeline_def_free(struct tr_pipeline_def *def)
{
    if (def == NULL)
        return;
    tr_pipeline_free_controls(def);
    for (uint32_t i = 0; def->tasks != NULL && i < def->n_tasks; i++) {
        tr_free(def->tasks[i].name);
        tr_free(def->tasks[i].after);
        tr_free(def->tasks[i].downstream);
        tr_free(def->tasks[i].subrun);
    }
    for (uint32_t i = 0; def->pools != NULL && i < def->n_pools; i++)
        tr_free(def->pools[i]);
    tr_free(def->pools);
    tr_free(def->tasks);
    tr_free(def->topo);
    tr_free(def->sinks);
    tr_free(def->by_name);
    tr_pipeline_free_triggers(def);
    tr_pipeline_free_budget(def);
    tr_free(def->params);
    tr_free(def->source);
    tr_free(def->version);
    tr_free(def->name);
    tr_free(def);
}

int32_t tr_pipeline_find_task(const struct tr_pipeline_def *def, const char *name)
{
    if (def->by_name == NULL) {
        for (uint32_t i = 0; i < def->n_tasks; i++) {
            if (strcmp(def->tasks[i].name, name) == 0)
                return (int32_t)i;
        }
        return -1;
    }
    uint32_t lo = 0;
    uint32_t hi = def->n_tasks;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(def->tasks[def->by_name[mid]].name, name);
        if (c == 0)
            return (int32_t)def->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

void tr_sha256_hex(const void *p, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = '\0';
    if (EVP_Digest(p, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return;
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0f];
    }
    out[64] = '\0';
}

static int cmp_by_name(const void *a, const void *b, void *arg)
{
    const struct tr_task_def *tasks = arg;
    return strcmp(tasks[*(const uint32_t *)a].name, tasks[*(const uint32_t *)b].name);
}

/* ====================================================================== */
/* The walk                                                               */
/* ====================================================================== */

static int nomem(struct walk *w)
{
    return tr_error_set(w->err, TR_ENOMEM, "%s: out of memory", w->chunk);
}

/* Index of the task called s (len bytes), or -1. */
static int32_t lookup(struct walk *w, const char *s, size_t len)
{
    void *v = tr_hmap_get(&w->names, s, len);
    return v == NULL ? -1 : (int32_t)((uintptr_t)v - 1);
}

/* The pool index of name, interning it. */
static int intern_pool(struct walk *w, const char *s, size_t len, uint16_t *out)
{
    struct tr_pipeline_def *def = w->def;
    void *v = tr_hmap_get(&w->pools, s, len);
    if (v != NULL) {
        *out = (uint16_t)((uintptr_t)v - 1);
        return 0;
    }
    if (def->n_pools >= MAX_POOLS)
        return tr_error_set(w->err, TR_ELIMIT, "%s: more than %u distinct pools", w->chunk,
                            MAX_POOLS);
    if (TR_VEC_RESERVE(def->pools, w->pools_cap, (size_t)def->n_pools + 1) != 0)
        return nomem(w);
    char *copy = tr_strndup(s, len);
    if (copy == NULL)
        return nomem(w);
    if (tr_hmap_put(&w->pools, copy, len, (void *)(uintptr_t)(def->n_pools + 1)) != 0) {
        tr_free(copy);
        return nomem(w);
    }
    def->pools[def->n_pools] = copy;
    *out = (uint16_t)def->n_pools++;
    return 0;
}

/* Puts "cpu" first, as the header promises, renumbering the tasks' pools. */
static void cpu_pool_first(struct tr_pipeline_def *def)
{
    uint32_t k = 0;
    while (k < def->n_pools && strcmp(def->pools[k], "cpu") != 0)
        k++;
    if (k == 0 || k == def->n_pools)
        return;
    char *cpu = def->pools[k];
    memmove(def->pools + 1, def->pools, k * sizeof(*def->pools));
    def->pools[0] = cpu;
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        uint16_t p = def->tasks[i].pool;
        def->tasks[i].pool = p == k ? 0 : p < k ? (uint16_t)(p + 1) : p;
    }
}

struct buf_sink
{
    struct tr_buf *b;
    int rc; /* the buffer's error, when a write failed */
};

static int sink_write(void *data, const char *p, size_t n)
{
    struct buf_sink *s = data;
    int rc = tr_buf_add(s->b, p, n);
    if (rc != 0) {
        s->rc = rc;
        return -1;
    }
    return 0;
}

/* Packs the params table at idx into b; params travel in frames, so they are capped. */
static int pack_params(lua_State *L, int idx, struct tr_buf *b, struct walk *w)
{
    struct buf_sink sink = {b, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sink, sink_write);
    int rc = tr_lua_pack_named(L, idx, "params", &pk, w->err);
    if (rc == TR_ENOMEM && sink.rc == TR_E2BIG)
        return tr_error_set(w->err, TR_ELIMIT, "pipeline '%s': params take more than %zu bytes "
                            "encoded", w->def->name, b->max);
    return rc;
}

/* The top-level fields: name, version, params. Table at index 1. */
static int walk_header(lua_State *L, struct walk *w)
{
    struct tr_pipeline_def *def = w->def;
    lua_pushliteral(L, "name");
    lua_rawget(L, 1);
    size_t len;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (s == NULL || len == 0 || memchr(s, '\0', len) != NULL)
        return tr_error_set(w->err, TR_EINVAL, "%s: the pipeline's name must be a non-empty "
                            "string", w->chunk);
    def->name = tr_strndup(s, len);
    lua_pop(L, 1);
    if (def->name == NULL)
        return nomem(w);

    lua_pushliteral(L, "version");
    lua_rawget(L, 1);
    int vt = lua_type(L, -1);
    if (vt == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushliteral(L, "");
    } else if (vt == LUA_TNUMBER) {
        lua_tolstring(L, -1, NULL);
    } else if (vt != LUA_TSTRING) {
        return tr_error_set(w->err, TR_EINVAL, "pipeline '%s': version must be a string or a "
                            "number", def->name);
    }
    s = lua_tolstring(L, -1, &len);
    if (memchr(s, '\0', len) != NULL)
        return tr_error_set(w->err, TR_EINVAL, "pipeline '%s': version contains a NUL byte",
                            def->name);
    def->version = tr_strndup(s, len);
    lua_pop(L, 1);
    if (def->version == NULL)
        return nomem(w);

    lua_pushliteral(L, "params");
    lua_rawget(L, 1);
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        return tr_error_set(w->err, TR_EINVAL, "pipeline '%s': params must be a table",
                            def->name);
    struct tr_buf b;
    tr_buf_init(&b, tr_mp_default_limits.max_str);
    int rc = 0;
    if (lua_isnil(L, -1)) {
        rc = tr_buf_addch(&b, (char)0x80) == 0 ? 0 : nomem(w);
    } else {
        rc = pack_params(L, lua_gettop(L), &b, w);
        if (rc == 0) {
            unsigned char first = (unsigned char)b.buf[0];
            if (first == 0x90) {
                b.buf[0] = (char)0x80; /* {} packs as an empty array; params are a map */
            } else if (!((first & 0xf0) == 0x80 || first == 0xde || first == 0xdf)) {
                rc = tr_error_set(w->err, TR_EINVAL, "pipeline '%s': params must be a table of "
                                  "named values", def->name);
            }
        }
    }
    lua_pop(L, 1);
    if (rc == 0) {
        def->params = tr_buf_detach(&b, &def->params_len);
        if (def->params == NULL)
            rc = nomem(w);
    }
    tr_buf_release(&b);
    return rc;
}

/* Appends the name at the top of the stack to w->refs. */
static int add_ref(lua_State *L, struct walk *w)
{
    if (TR_VEC_RESERVE(w->refs, w->refs_cap, w->n_refs + 1) != 0)
        return nomem(w);
    struct tr_str *r = &w->refs[w->n_refs++];
    r->p = lua_tolstring(L, -1, &r->len);
    return 0;
}

/* Control-flow fields (lib/lua/lua_flow.c). */
static int walk_flow(struct tr_task_def *t, const struct tr_task_fields *f, struct walk *w)
{
    t->trigger_rule = f->trigger_rule;
    t->kind = f->kind;
    t->approve_default = f->approve_default;
    if (f->kind != TR_KIND_RUN && f->map != NULL)
        return tr_error_set(w->err, TR_EINVAL, "task '%s': %s cannot have 'map'", t->name,
                            f->kind == TR_KIND_SUBRUN ? "a subrun" : "an approval");
    if (f->subrun != NULL) {
        t->subrun = tr_strndup(f->subrun, f->subrun_len);
        if (t->subrun == NULL)
            return nomem(w);
    }
    return 0;
}

/*
 * First pass over tasks (array at tidx): checks, names, pools, scalar
 * fields, and the upstream names as written.
 */
static int walk_tasks(lua_State *L, struct walk *w, int tidx)
{
    struct tr_pipeline_def *def = w->def;
    char why[TR_TASK_WHY_MAX];
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        struct tr_task_def *t = &def->tasks[i];
        struct tr_task_fields f;
        t->map = -1;
        lua_rawgeti(L, tidx, (lua_Integer)i + 1);
        int task_idx = lua_gettop(L);
        if (!tr_lua_is_task(L, task_idx))
            return tr_error_set(w->err, TR_EINVAL, "pipeline '%s': tasks[%u] is not a "
                                "trellis.task", def->name, i + 1);
        if (tr_task_check(L, task_idx, &f, why, sizeof(why)) != 0)
            return tr_error_set(w->err, TR_EINVAL, "%s", why);
        t->name = tr_strndup(f.name, f.name_len);
        if (t->name == NULL)
            return nomem(w);
        if (tr_hmap_get(&w->names, t->name, f.name_len) != NULL)
            return tr_error_set(w->err, TR_EDUP, "duplicate task name '%s'", t->name);
        if (tr_hmap_put(&w->names, t->name, f.name_len, (void *)(uintptr_t)(i + 1)) != 0)
            return nomem(w);
        int rc = intern_pool(w, f.pool, f.pool_len, &t->pool);
        if (rc != 0)
            return rc;
        t->retries = f.retries;
        t->priority = f.priority;
        t->backoff = f.backoff;
        t->timeout = f.timeout;
        t->cache = f.cache;
        t->gpus = f.gpus;
        rc = walk_flow(t, &f, w);
        if (rc != 0)
            return rc;
        w->maps[i] = (struct tr_str){f.map, f.map_len};
        if (f.n_after > 0) {
            t->after = tr_calloc(f.n_after, sizeof(*t->after));
            if (t->after == NULL)
                return nomem(w);
            /* n_after counts the names resolved so far; until then, reserved. */
            lua_pushliteral(L, "after");
            lua_rawget(L, task_idx);
            for (uint32_t k = 0; k < f.n_after; k++) {
                if (f.after_type == LUA_TTABLE)
                    lua_rawgeti(L, -1, (lua_Integer)k + 1);
                else
                    lua_pushvalue(L, -1);
                rc = add_ref(L, w);
                lua_pop(L, 1);
                if (rc != 0)
                    return rc;
            }
            lua_pop(L, 1);
        }
        w->scratch[i] = f.n_after; /* walk_edges reads it back */
        lua_pop(L, 1);
    }
    return 0;
}

/* Index of the task named r, or an error naming task i's unknown dependency. */
static int resolve(struct walk *w, uint32_t i, struct tr_str r, uint32_t *out)
{
    int32_t u = lookup(w, r.p, r.len);
    if (u < 0)
        return tr_error_set(w->err, TR_EDEP, "task '%s' depends on unknown task '%.*s'",
                            w->def->tasks[i].name, (int)TR_MIN(r.len, 256), r.p);
    *out = (uint32_t)u;
    return 0;
}

/* Second pass: after and map into indices, duplicates refused, fan-in counted. */
static int walk_edges(struct walk *w)
{
    struct tr_pipeline_def *def = w->def;
    uint32_t *n_down = w->scratch; /* holds each task's after count on entry */
    size_t ref = 0;
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        struct tr_task_def *t = &def->tasks[i];
        uint32_t n_after = n_down[i];
        n_down[i] = 0; /* tasks before i are done with their counts */
        for (uint32_t k = 0; k < n_after; k++) {
            uint32_t u = 0;
            int rc = resolve(w, i, w->refs[ref++], &u);
            if (rc != 0)
                return rc;
            if (w->stamp[u] == i + 1)
                return tr_error_set(w->err, TR_EINVAL, "task '%s' lists '%s' twice in after",
                                    t->name, def->tasks[u].name);
            w->stamp[u] = i + 1;
            t->after[t->n_after++] = u;
        }
        t->n_upstream = t->n_after;
        if (w->maps[i].p != NULL) {
            uint32_t m = 0;
            int rc = resolve(w, i, w->maps[i], &m);
            if (rc != 0)
                return rc;
            t->map = (int32_t)m;
            /* A map source also listed in after is one upstream task, not two. */
            if (w->stamp[m] != i + 1) {
                w->stamp[m] = i + 1;
                t->n_upstream++;
            }
        }
    }
    /* Fan-in counts, now that every count slot has been read. */
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        const struct tr_task_def *t = &def->tasks[i];
        for (uint32_t k = 0; k < t->n_after; k++)
            n_down[t->after[k]]++;
        if (t->map >= 0 && t->n_upstream > t->n_after)
            n_down[t->map]++;
    }
    for (uint32_t u = 0; u < def->n_tasks; u++) {
        if (n_down[u] == 0)
            continue;
        def->tasks[u].downstream = tr_calloc(n_down[u], sizeof(uint32_t));
        if (def->tasks[u].downstream == NULL)
            return nomem(w);
    }
    /* Filled in task order, so each downstream list is sorted. */
    for (uint32_t i = 0; i < def->n_tasks; i++) {
        const struct tr_task_def *t = &def->tasks[i];
        for (uint32_t k = 0; k < t->n_after; k++) {
            struct tr_task_def *up = &def->tasks[t->after[k]];
            up->downstream[up->n_downstream++] = i;
        }
        if (t->map >= 0 && t->n_upstream > t->n_after) {
            struct tr_task_def *up = &def->tasks[t->map];
            up->downstream[up->n_downstream++] = i;
        }
    }
    return 0;
}

/* An upstream task of v that Kahn's pass left unprocessed (indeg > 0). */
static uint32_t pending_upstream(const struct tr_task_def *t, const uint32_t *indeg)
{
    for (uint32_t k = 0; k < t->n_after; k++) {
        if (indeg[t->after[k]] > 0)
            return t->after[k];
    }
    TR_ASSERT(t->map >= 0 && indeg[t->map] > 0);
    return (uint32_t)t->map;
}

/*
 * Names the tasks on one cycle among those Kahn's pass left (indeg > 0):
 * each has an unprocessed upstream task, so walking upstream from any of
 * them must come back to a task already on the walk.
 */
static int report_cycle(struct walk *w, const uint32_t *indeg)
{
    struct tr_pipeline_def *def = w->def;
    uint32_t *pos = w->stamp;    /* 1 + position on the walk, 0 = not on it */
    uint32_t *path = w->scratch; /* path[k + 1] is an upstream task of path[k] */
    memset(pos, 0, def->n_tasks * sizeof(*pos));
    uint32_t v = 0;
    while (indeg[v] == 0)
        v++;
    uint32_t len = 0;
    while (pos[v] == 0) {
        path[len] = v;
        pos[v] = ++len;
        v = pending_upstream(&def->tasks[v], indeg);
    }
    /* path[pos[v]-1 .. len-1] is the cycle, each step going upstream; print
     * it in the direction outputs flow: v, then path[len-1] down to v again. */
    char msg[TR_ERROR_MSG_MAX - 64];
    size_t n = (size_t)snprintf(msg, sizeof(msg), "cycle: %s", def->tasks[v].name);
    uint32_t start = pos[v] - 1;
    for (uint32_t k = len; k-- > start;) {
        const char *name = def->tasks[path[k]].name;
        if (n + strlen(name) + 16 >= sizeof(msg)) {
            snprintf(msg + n, sizeof(msg) - n, " -> ...");
            break;
        }
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, " -> %s", name);
    }
    return tr_error_set(w->err, TR_ECYCLE, "%s", msg);
}

/* Topological order (Kahn), sinks, the name index; refuses cycles. */
static int build_order(struct walk *w)
{
    struct tr_pipeline_def *def = w->def;
    uint32_t n = def->n_tasks;
    uint32_t *indeg = w->scratch;
    def->topo = tr_calloc(n, sizeof(*def->topo));
    def->by_name = tr_calloc(n, sizeof(*def->by_name));
    if (def->topo == NULL || def->by_name == NULL)
        return nomem(w);
    uint32_t tail = 0;
    uint32_t n_sinks = 0;
    for (uint32_t i = 0; i < n; i++) {
        indeg[i] = def->tasks[i].n_upstream;
        if (indeg[i] == 0)
            def->topo[tail++] = i;
        n_sinks += def->tasks[i].n_downstream == 0;
    }
    for (uint32_t head = 0; head < tail; head++) {
        const struct tr_task_def *t = &def->tasks[def->topo[head]];
        for (uint32_t k = 0; k < t->n_downstream; k++) {
            if (--indeg[t->downstream[k]] == 0)
                def->topo[tail++] = t->downstream[k];
        }
    }
    if (tail < n) {
        /* report_cycle reuses scratch, so keep the in-degrees elsewhere. */
        memcpy(def->by_name, indeg, n * sizeof(*indeg));
        int rc = report_cycle(w, def->by_name);
        tr_free_null(&def->by_name);
        return rc;
    }
    def->sinks = tr_calloc(n_sinks, sizeof(*def->sinks));
    if (def->sinks == NULL)
        return nomem(w);
    for (uint32_t i = 0; i < n; i++) {
        if (def->tasks[i].n_downstream == 0)
            def->sinks[def->n_sinks++] = i;
        def->by_name[i] = i;
    }
    qsort_r(def->by_name, n, sizeof(*def->by_name), cmp_by_name, def->tasks);
    return 0;
}

/* `extra_params`: absent (false) or a boolean. Table at index 1. */
static int walk_extra_params(lua_State *L, struct walk *w)
{
    lua_pushliteral(L, "extra_params");
    lua_rawget(L, 1);
    int t = lua_type(L, -1);
    w->def->extra_params = t == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        return tr_error_set(w->err, TR_EINVAL, "pipeline '%s': extra_params must be a boolean",
                            w->def->name);
    return 0;
}

static int walk(lua_State *L, struct walk *w)
{
    struct tr_pipeline_def *def = w->def;
    if (!tr_lua_is_pipeline(L, 1))
        return tr_error_set(w->err, TR_ELUA, "%s: the file must return trellis.pipeline{...} "
                            "(it returned %s)", w->chunk, luaL_typename(L, 1));
    int rc = walk_header(L, w);
    if (rc == 0)
        rc = walk_extra_params(L, w);
    if (rc != 0)
        return rc;
    lua_pushliteral(L, "tasks");
    lua_rawget(L, 1);
    if (!lua_istable(L, -1))
        return tr_error_set(w->err, TR_EINVAL, "pipeline '%s': tasks must be an array of tasks",
                            def->name);
    int tidx = lua_gettop(L);
    size_t n = lua_rawlen(L, tidx);
    if (n == 0)
        return tr_error_set(w->err, TR_EINVAL, "pipeline '%s' has no tasks", def->name);
    if (n > w->lim->max_tasks)
        return tr_error_set(w->err, TR_ELIMIT, "pipeline '%s' has %zu tasks, more than the "
                            "limit of %u", def->name, n, w->lim->max_tasks);
    def->tasks = tr_calloc(n, sizeof(*def->tasks));
    w->stamp = tr_calloc(n, sizeof(*w->stamp));
    w->scratch = tr_calloc(n, sizeof(*w->scratch));
    w->maps = tr_calloc(n, sizeof(*w->maps));
    if (def->tasks == NULL || w->stamp == NULL || w->scratch == NULL || w->maps == NULL)
        return nomem(w);
    def->n_tasks = (uint32_t)n;
    rc = walk_tasks(L, w, tidx);
    if (rc == 0)
        rc = walk_edges(w);
    if (rc == 0)
        rc = build_order(w);
    if (rc == 0)
        cpu_pool_first(def);
    if (rc == 0)
        rc = tr_pipeline_read_triggers(L, 1, def, w->err);
    if (rc == 0)
        rc = tr_pipeline_read_controls(L, 1, def, w->err);
    if (rc == 0)
        rc = tr_pipeline_read_budget(L, 1, def, w->err);
    return rc;
}

/* lua_CFunction: (pipeline value, struct walk *). Raises only on memory errors. */
static int walk_protected(lua_State *L)
{
    struct walk *w = lua_touserdata(L, 2);
    lua_settop(L, 1);
    luaL_checkstack(L, 16, NULL);
    w->rc = walk(L, w);
    return 0;
}

/* ====================================================================== */
/* Loading                                                                */
/* ====================================================================== */

/*
 * The worker's modules (trellis.llm, trellis.index, ...) exist only on
 * workers. A pipeline may still require them at its top level, as the
 * examples do: here they are tables whose functions raise when called, which
 * the scheduler never does since it does not run tasks.
 */
static const char *const worker_modules[] = {"trellis.http",   "trellis.llm",
                                             "trellis.json",   "trellis.ingest",
                                             "trellis.index",  "trellis.prompt",
                                             "trellis.eval",   "trellis.al",
                                             "trellis.rerank"};

static int worker_only(lua_State *L)
{
    return luaL_error(L, "%s.%s runs on workers only: call it inside a task's run function",
                      lua_tostring(L, lua_upvalueindex(1)), lua_tostring(L, lua_upvalueindex(2)));
}

static int standin_index(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1)); /* module name */
    lua_pushvalue(L, 2);                   /* field */
    lua_pushcclosure(L, worker_only, 2);
    return 1;
}

static int open_worker_standin(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_pushcclosure(L, standin_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}

/* A fresh sandbox with the worker modules' stand-ins; NULL when out of memory. */
static lua_State *pipeline_state(const struct tr_pipeline_limits *lim)
{
    struct tr_lua_limits ll = {lim->mem_max, lim->instr_max, lim->wall_max_s};
    lua_State *L = tr_lua_new(&ll);
    if (L == NULL)
        return NULL;
    for (size_t i = 0; i < TR_ARRAY_LEN(worker_modules); i++) {
        if (tr_lua_register_module(L, worker_modules[i], open_worker_standin) < 0) {
            tr_lua_free(L);
            return NULL;
        }
    }
    return L;
}

/* lua_CFunction: (pipeline, trigger name) -> the `when` function, or raises. */
static int find_when(lua_State *L)
{
    const char *name = lua_tostring(L, 2);
    lua_pushliteral(L, "triggers");
    lua_rawget(L, 1);
    if (!lua_istable(L, -1))
        return luaL_error(L, "no trigger '%s'", name);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (tr_lua_is_trigger(L, -1)) {
            lua_getfield(L, -1, "name");
            bool same = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), name) == 0;
            lua_pop(L, 1);
            if (same) {
                lua_getfield(L, -1, "when");
                if (!lua_isfunction(L, -1))
                    return luaL_error(L, "trigger '%s': when must be a function", name);
                return 1;
            }
        }
        lua_pop(L, 1);
    }
    return luaL_error(L, "no trigger '%s'", name);
}

int tr_pipeline_when(const char *src, size_t len, const char *chunkname,
                     const struct tr_pipeline_limits *lim, const char *trigger,
                     const void *stats, size_t stats_len, bool *out, struct tr_error *err)
{
    if (lim == NULL)
        lim = &tr_pipeline_default_limits;
    const char *chunk = chunkname != NULL ? chunkname : "pipeline";
    lua_State *L = pipeline_state(lim);
    if (L == NULL)
        return tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);
    int rc = tr_lua_eval(L, src, len, chunk, err);
    if (rc == 0 && !tr_lua_is_pipeline(L, -1))
        rc = tr_error_set(err, TR_ELUA, "%s: the file must return trellis.pipeline{...}", chunk);
    if (rc == 0) {
        lua_pushcfunction(L, find_when);
        lua_insert(L, -2);
        lua_pushstring(L, trigger);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
            const char *m = lua_tostring(L, -1);
            rc = tr_error_set(err, strstr(m ? m : "", "no trigger") ? TR_ENOENT : TR_EINVAL,
                              "%s: %s", chunk, m ? m : "cannot find the trigger");
        }
    }
    if (rc == 0) {
        /* The call runs as a chunk of its own, under fresh limits, with the
         * function and its argument as globals of the file's sandbox. */
        lua_setglobal(L, "__trellis_when");
        rc = tr_lua_unpack_bytes(L, stats, stats_len, err);
        if (rc == 0 && !lua_istable(L, -1))
            rc = tr_error_set(err, TR_EINVAL, "%s: stats must be a map", chunk);
        if (rc == 0) {
            lua_setglobal(L, "__trellis_stats");
            static const char call[] = "return __trellis_when(__trellis_stats)";
            char name[256];
            snprintf(name, sizeof(name), "=%s:when(%s)", chunk, trigger);
            rc = tr_lua_eval(L, call, sizeof(call) - 1, name, err);
        }
    }
    if (rc == 0) {
        if (!lua_isboolean(L, -1))
            rc = tr_error_set(err, TR_EINVAL, "%s: trigger '%s': when returned %s, not a boolean",
                              chunk, trigger, luaL_typename(L, -1));
        else
            *out = lua_toboolean(L, -1);
    }
    tr_lua_free(L);
    return rc;
}

int tr_pipeline_load(const char *src, size_t len, const char *chunkname,
                     const struct tr_pipeline_limits *lim, struct tr_pipeline_def **out,
                     struct tr_error *err)
{
    *out = NULL;
    if (lim == NULL)
        lim = &tr_pipeline_default_limits;
    const char *chunk = chunkname != NULL ? chunkname : "pipeline";
    struct tr_pipeline_def *def = tr_calloc(1, sizeof(*def));
    if (def == NULL)
        return tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);
    def->source = tr_strndup(src, len);
    def->source_len = len;
    tr_sha256_hex(src, len, def->digest);
    if (def->source == NULL || def->digest[0] == '\0') {
        tr_pipeline_def_free(def);
        return tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);
    }

    lua_State *L = pipeline_state(lim);
    if (L == NULL) {
        tr_pipeline_def_free(def);
        return tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);
    }
    int rc = tr_lua_eval(L, src, len, chunk, err);
    if (rc == 0) {
        struct walk w = {.def = def, .lim = lim, .err = err, .chunk = chunk};
        tr_hmap_init(&w.names);
        tr_hmap_init(&w.pools);
        lua_pushcfunction(L, walk_protected);
        lua_insert(L, -2);
        lua_pushlightuserdata(L, &w);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            /* Only an allocation can fail here: near the cap it is the cap's doing. */
            if (lim->mem_max != 0 && tr_lua_mem_used(L) + (64u << 10) >= lim->mem_max)
                rc = tr_error_set(err, TR_ELIMIT, "%s: memory limit of %zu bytes exceeded",
                                  chunk, lim->mem_max);
            else
                rc = tr_error_set(err, TR_ENOMEM, "%s: out of memory", chunk);
        } else {
            rc = w.rc;
        }
        tr_hmap_release(&w.names);
        tr_hmap_release(&w.pools);
        tr_free(w.stamp);
        tr_free(w.scratch);
        tr_free(w.refs);
        tr_free(w.maps);
    }
    tr_lua_free(L);
    if (rc != 0) {
        tr_pipeline_def_free(def);
        return rc;
    }
    *out = def;
    return 0;
}
