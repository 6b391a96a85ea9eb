/*
 * lua_trellis.h - the built-in "trellis" Lua module: trellis.task and
 * trellis.pipeline, the checks they make, and the marks that tell a task or
 * pipeline table from any other table.
 *
 * Internal to lib/: lua_rt.c opens the module in every sandbox, pipeline.c
 * re-checks the tables the file returned (a file may change a task table
 * after trellis.task accepted it) with the same code. Every check here uses
 * raw access only, so it never runs Lua code (no metamethods) and never
 * raises; the `why` text is what the user sees.
 *
 * A lua_State is used by one thread.
 */
#ifndef TR_LUA_TRELLIS_H
#define TR_LUA_TRELLIS_H

#include <lua.h>

#include "lib/base/error.h"

#define TR_TASK_NAME_MAX 256  /* bytes in a task, pool or pipeline name */
#define TR_TASK_WHY_MAX 320   /* bytes of a check's message */

/* Metatable names (registry keys) of task and pipeline tables. */
#define TR_LUA_TASK_MT "trellis.task"
#define TR_LUA_PIPELINE_MT "trellis.pipeline"
#define TR_LUA_TRIGGER_MT "trellis.trigger"

/* A task table's fields after the checks, defaults filled in. */
struct tr_task_fields
{
    const char *name;    /* borrowed from the Lua string in the table */
    size_t name_len;
    int after_type;      /* LUA_TNIL, LUA_TSTRING (one name) or LUA_TTABLE (array) */
    uint32_t n_after;    /* names in after */
    const char *map;     /* NULL when the task is not mapped */
    size_t map_len;
    const char *pool;    /* "cpu" by default */
    size_t pool_len;
    uint16_t retries;
    int32_t priority;
    double backoff;
    double timeout;
    bool cache;
    uint16_t gpus;       /* GPUs the task needs on one worker, 0..TR_TASK_GPUS_MAX */
    /* Control flow (lua_flow.c): enum tr_trigger_rule, enum tr_task_kind, the
     * child pipeline of a subrun ("name[@version]", NULL otherwise) and an
     * approval's default decision (true: approve). */
    uint8_t trigger_rule;
    uint8_t kind;
    const char *subrun;
    size_t subrun_len;
    bool approve_default;
};

/*
 * lua_CFunction that builds the module table (task, pipeline) and the
 * metatables of task and pipeline tables. May raise (memory).
 */
int tr_lua_open_trellis(lua_State *L);

/*
 * Checks the task table at idx (raw access, no metamethods) and fills *f.
 * Returns 0, or -1 with why set ("task 'a': field 'run' must be a function
 * (got nil)"). Never raises; needs 3 free stack slots.
 */
int tr_task_check(lua_State *L, int idx, struct tr_task_fields *f, char *why, size_t why_len);

/* True when the value at idx is a table marked by trellis.task / trellis.pipeline. */
bool tr_lua_is_task(lua_State *L, int idx);
bool tr_lua_is_pipeline(lua_State *L, int idx);
/* The value at idx was made by trellis.trigger. */
bool tr_lua_is_trigger(lua_State *L, int idx);

/*
 * True when the value at idx is the error that the last failed check of
 * trellis.task or trellis.pipeline raised, so that a loader can report it as
 * TR_EINVAL rather than TR_ELUA. Never raises.
 */
bool tr_lua_is_check_error(lua_State *L, int idx);

/* trellis.task itself (the function), for trellis.subrun and trellis.approval. */
int tr_lua_task(lua_State *L);

/* ---- Control flow (lua_flow.c) ---------------------------------------- */

/* Which control-flow field a task key names: 1 trigger_rule, 2 subrun, 3 approval, 0 none. */
int tr_flow_field_of(const char *k, size_t len);
/* Checks the value at the top of the stack for flow field which (1..3); fills f. Never raises. */
int tr_flow_check_field(lua_State *L, int which, struct tr_task_fields *f, char *why,
                        size_t why_len);
/* Adds skip, subrun and approval to the module table at the top of the stack. May raise. */
void tr_flow_open(lua_State *L);
/*
 * True when the value at idx is what trellis.skip(reason) returned; *reason
 * (len bytes, borrowed from the value) is its reason. Never raises.
 */
bool tr_lua_skip_reason(lua_State *L, int idx, const char **reason, size_t *len);

#endif
