/*
 * pipeline_trigger.c - reading and checking trellis.trigger declarations
 * (docs/feedback.md "Triggers").
 *
 * A trigger is kept as data, except `when`: the loader records that it is
 * a function, and the scheduler calls it only in a sandbox process
 * (tr_pipeline_when). Every check that can fail on a user's file is here,
 * with its own code, so that registration answers `invalid_trigger` or
 * `invalid_cron` rather than a generic error.
 */
#include "lib/lua/pipeline_trigger.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/cron.h"
#include "lib/lua/lua_msgpack.h"
#include "lib/lua/lua_trellis.h"
#include "lib/wire/proto.h"

const char *const tr_trigger_on_names[3] = {"feedback", "labels", "schedule"};

bool tr_trigger_name_ok(const char *s, size_t len)
{
    if (len == 0 || len >= TR_TRIGGER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

void tr_pipeline_free_triggers(struct tr_pipeline_def *def)
{
    for (uint32_t i = 0; def->triggers != NULL && i < def->n_triggers; i++) {
        struct tr_trigger_def *t = &def->triggers[i];
        tr_free(t->name);
        tr_free(t->run);
        tr_free(t->params);
        tr_free(t->cron);
    }
    tr_free(def->triggers);
    def->triggers = NULL;
    def->n_triggers = 0;
}

const struct tr_trigger_def *tr_pipeline_find_trigger(const struct tr_pipeline_def *def,
                                                      const char *name)
{
    for (uint32_t i = 0; i < def->n_triggers; i++) {
        if (strcmp(def->triggers[i].name, name) == 0)
            return &def->triggers[i];
    }
    return NULL;
}

struct sink
{
    struct tr_buf *b;
    int rc;
};

static int sink_write(void *data, const char *p, size_t n)
{
    struct sink *s = data;
    if (tr_buf_add(s->b, p, n) != 0) {
        s->rc = TR_E2BIG;
        return -1;
    }
    return 0;
}

/* The string field k of the table at idx, or NULL (also for a non-string: *bad). */
static const char *str_field(lua_State *L, int idx, const char *k, size_t *len, bool *bad)
{
    lua_getfield(L, idx, k); /* a trigger table has no metamethods for reads */
    int t = lua_type(L, -1);
    const char *s = t == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    *bad = t != LUA_TNIL && t != LUA_TSTRING;
    lua_pop(L, 1); /* the string stays alive in the trigger table */
    return s;
}

/* One trigger: the trellis.trigger table at idx into t. */
static int read_one(lua_State *L, int idx, const struct tr_pipeline_def *def, uint32_t pos,
                    struct tr_trigger_def *t, struct tr_error *err)
{
    const char *p = def->name;
    size_t len = 0;
    bool bad = false;
    const char *name = str_field(L, idx, "name", &len, &bad);
    if (name == NULL || !tr_trigger_name_ok(name, len))
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': triggers[%u]: name must be 1 to "
                            "127 of A-Z a-z 0-9 . _ -", p, pos + 1);
    if ((t->name = tr_strndup(name, len)) == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    const char *on = str_field(L, idx, "on", &len, &bad);
    int which = -1;
    for (int i = 0; on != NULL && i < 3; i++) {
        if (strlen(tr_trigger_on_names[i]) == len && memcmp(on, tr_trigger_on_names[i], len) == 0)
            which = i;
    }
    if (which < 0)
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': on must be "
                            "\"feedback\", \"labels\" or \"schedule\" (got %s%.*s%s)", p, t->name,
                            on ? "\"" : "", on ? (int)TR_MIN(len, 64) : 0, on ? on : "",
                            on ? "\"" : (bad ? "a non-string" : "nothing"));
    t->on = (uint8_t)which;

    lua_getfield(L, idx, "when");
    int wt = lua_type(L, -1);
    lua_pop(L, 1);
    if (wt != LUA_TNIL && wt != LUA_TFUNCTION)
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': when must be a "
                            "function", p, t->name);
    t->has_when = wt == LUA_TFUNCTION;
    if (!t->has_when && t->on != TR_TRIGGER_SCHEDULE)
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': on = \"%s\" needs "
                            "when = function(stats) ... end", p, t->name,
                            tr_trigger_on_names[t->on]);

    const char *run = str_field(L, idx, "run", &len, &bad);
    if (run == NULL || len == 0 || len >= TR_TRIGGER_RUN_MAX || memchr(run, '\0', len) != NULL)
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': run must name a "
                            "pipeline, \"name\" or \"name@version\"", p, t->name);
    if ((t->run = tr_strndup(run, len)) == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");

    const char *cron = str_field(L, idx, "cron", &len, &bad);
    if (bad || (cron == NULL) != (t->on != TR_TRIGGER_SCHEDULE))
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': %s", p, t->name,
                            t->on == TR_TRIGGER_SCHEDULE ? "on = \"schedule\" needs cron = "
                            "\"minute hour day month weekday\"" : "cron is for on = \"schedule\"");
    if (cron != NULL) {
        if ((t->cron = tr_strndup(cron, len)) == NULL)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        struct tr_cron c;
        struct tr_error cerr;
        tr_error_init(&cerr);
        if (tr_cron_parse(t->cron, &c, &cerr) < 0)
            return tr_error_set(err, TR_ECRON, "pipeline '%s': trigger '%s': %s", p, t->name,
                                cerr.msg);
    }

    lua_getfield(L, idx, "cooldown");
    int ct = lua_type(L, -1);
    t->cooldown = ct == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    if ((ct != LUA_TNIL && ct != LUA_TNUMBER) || !(t->cooldown >= 0) || !isfinite(t->cooldown))
        return tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': cooldown must be "
                            "seconds >= 0", p, t->name);

    lua_getfield(L, idx, "params");
    int pt = lua_type(L, -1);
    struct tr_buf b;
    tr_buf_init(&b, tr_mp_default_limits.max_str);
    int rc = 0;
    if (pt == LUA_TNIL) {
        rc = tr_buf_addch(&b, (char)0x80) == 0 ? 0 : TR_ENOMEM;
    } else if (pt != LUA_TTABLE) {
        rc = tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': params must be a "
                          "table", p, t->name);
    } else {
        struct sink sk = {&b, 0};
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sk, sink_write);
        rc = tr_lua_pack_named(L, lua_gettop(L), "params", &pk, err);
        if (rc == 0) {
            unsigned char first = (unsigned char)b.buf[0];
            if (first == 0x90)
                b.buf[0] = (char)0x80; /* {} packs as an empty array */
            else if (!((first & 0xf0) == 0x80 || first == 0xde || first == 0xdf))
                rc = tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': params must "
                                  "be a table of named values", p, t->name);
        } else if (sk.rc == TR_E2BIG) {
            rc = tr_error_set(err, TR_ELIMIT, "pipeline '%s': trigger '%s': params too large",
                              p, t->name);
        } else if (rc != TR_ENOMEM) {
            rc = tr_error_set(err, TR_ETRIGGER, "pipeline '%s': trigger '%s': %s", p, t->name,
                              err->msg);
        }
    }
    lua_pop(L, 1);
    if (rc == 0) {
        t->params = tr_buf_detach(&b, &t->params_len);
        if (t->params == NULL)
            rc = TR_ENOMEM;
    }
    tr_buf_release(&b);
    if (rc == TR_ENOMEM)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    return rc;
}

int tr_pipeline_read_triggers(lua_State *L, int idx, struct tr_pipeline_def *def,
                              struct tr_error *err)
{
    idx = lua_absindex(L, idx);
    lua_pushliteral(L, "triggers");
    lua_rawget(L, idx);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    int tidx = lua_gettop(L);
    size_t n = lua_rawlen(L, tidx);
    int rc = 0;
    size_t keys = 0;
    lua_pushnil(L);
    while (lua_next(L, tidx) != 0) {
        keys++;
        lua_pop(L, 1);
    }
    if (keys != n)
        rc = tr_error_set(err, TR_ETRIGGER, "pipeline '%s': triggers must be an array of "
                          "trellis.trigger{...}", def->name);
    else if (n > TR_TRIGGERS_MAX)
        rc = tr_error_set(err, TR_ELIMIT, "pipeline '%s' has %zu triggers, more than the limit "
                          "of %u", def->name, n, TR_TRIGGERS_MAX);
    if (rc == 0 && n > 0 && (def->triggers = tr_calloc(n, sizeof(*def->triggers))) == NULL)
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        lua_rawgeti(L, tidx, (lua_Integer)i + 1);
        if (!tr_lua_is_trigger(L, -1)) {
            rc = tr_error_set(err, TR_ETRIGGER, "pipeline '%s': triggers[%zu] is not a "
                              "trellis.trigger{...}", def->name, i + 1);
        } else {
            def->n_triggers++;
            rc = read_one(L, lua_gettop(L), def, (uint32_t)i, &def->triggers[i], err);
        }
        lua_pop(L, 1);
        for (size_t j = 0; rc == 0 && j < i; j++) {
            if (strcmp(def->triggers[j].name, def->triggers[i].name) == 0)
                rc = tr_error_set(err, TR_ETRIGGER, "pipeline '%s': two triggers are named "
                                  "'%s'", def->name, def->triggers[i].name);
        }
    }
    lua_pop(L, 1);
    return rc;
}
