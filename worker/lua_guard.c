/*
 * lua_guard.c - the C half of trellis.guard (worker/lua/trellis/guard.lua):
 * the PII scan and redaction of worker/guard_pii.c, which run over whole
 * prompts and answers and are the part worth writing in C (docs/guardrails.md
 * has the figures). The Lua half receives these functions as `...`.
 */
#include <lauxlib.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "worker/executor.h"
#include "worker/guard_pii.h"
#include "worker/lua_embed.h"
#include "worker/lua_guard.h"

/* The kinds named in the optional table at idx ({"email", "card"}), or all. */
static unsigned kinds_mask(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return (1u << TR_PII_KIND_COUNT) - 1;
    luaL_checktype(L, idx, LUA_TTABLE);
    unsigned mask = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        const char *k = lua_tostring(L, -1);
        bool known = false;
        for (int j = 0; k != NULL && j < TR_PII_KIND_COUNT; j++) {
            if (strcmp(k, tr_pii_kind_names[j]) == 0) {
                mask |= 1u << j;
                known = true;
            }
        }
        if (!known)
            return (unsigned)luaL_error(L, "unknown kind of personal data '%s' (known: email, "
                                        "phone, card, iban)", k ? k : "?");
        lua_pop(L, 1);
    }
    return mask;
}

/* pii_scan(text [, kinds]) -> { {kind, start, stop, value}, ... } (1-based, inclusive) */
static int l_pii_scan(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned mask = kinds_mask(L, 2);
    struct tr_pii_span spans[64];
    lua_newtable(L);
    lua_Integer k = 0;
    size_t pos = 0;
    for (;;) {
        size_t total = tr_pii_scan(s + pos, len - pos, mask, spans, TR_ARRAY_LEN(spans));
        size_t got = TR_MIN(total, TR_ARRAY_LEN(spans));
        for (size_t j = 0; j < got; j++) {
            size_t a = pos + spans[j].start, b = pos + spans[j].end;
            lua_createtable(L, 0, 4);
            lua_pushstring(L, tr_pii_kind_names[spans[j].kind]);
            lua_setfield(L, -2, "kind");
            lua_pushinteger(L, (lua_Integer)a + 1);
            lua_setfield(L, -2, "start");
            lua_pushinteger(L, (lua_Integer)b);
            lua_setfield(L, -2, "stop");
            lua_pushlstring(L, s + a, b - a);
            lua_setfield(L, -2, "value");
            lua_rawseti(L, -2, ++k);
        }
        if (total <= TR_ARRAY_LEN(spans))
            break;
        pos += spans[got - 1].end;
    }
    return 1;
}

/* Protected: pushes the buffer at light userdata 1 as a string. */
static int push_buf(lua_State *L)
{
    struct tr_buf *b = lua_touserdata(L, 1);
    lua_pushlstring(L, b->buf != NULL ? b->buf : "", b->len);
    return 1;
}

/* redact(text [, kinds]) -> redacted text, number of replacements */
static int l_redact(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned mask = kinds_mask(L, 2);
    struct tr_buf b;
    tr_buf_init(&b, 0);
    size_t n = 0;
    if (tr_pii_redact(s, len, mask, &b, &n) < 0) {
        tr_buf_release(&b);
        return luaL_error(L, "not enough memory to redact");
    }
    if (n == 0) {
        tr_buf_release(&b);
        lua_settop(L, 1);
        lua_pushinteger(L, 0);
        return 2;
    }
    /* Pushing may raise (the state's memory cap): free b whatever happens. */
    lua_pushcfunction(L, push_buf);
    lua_pushlightuserdata(L, &b);
    int status = lua_pcall(L, 1, 1, 0);
    tr_buf_release(&b);
    if (status != LUA_OK)
        return lua_error(L);
    lua_pushinteger(L, (lua_Integer)n);
    return 2;
}

/* luhn(digits) -> boolean; iban_ok(text without spaces) -> boolean */
static int l_luhn(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    lua_pushboolean(L, tr_pii_luhn(s, n));
    return 1;
}

static int l_iban_ok(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, tr_pii_iban_ok(s, n));
    return 1;
}

/* blocked_record(check, stage) -> true: counts a blocked call in the task's usage list */
static int l_blocked_record(lua_State *L)
{
    const char *check = luaL_checkstring(L, 1);
    const char *stage = luaL_checkstring(L, 2);
    struct tr_task *t = tr_task_running(L);
    lua_pushboolean(L, t != NULL && tr_task_guard_add(t, check, stage) == 0);
    return 1;
}

int tr_lua_guard_push_native(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"pii_scan", l_pii_scan}, {"redact", l_redact},
        {"luhn", l_luhn},         {"iban_ok", l_iban_ok},
        {"blocked_record", l_blocked_record},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}

int tr_lua_guard_open(lua_State *L)
{
    tr_lua_guard_push_native(L);
    tr_lua_embedded_call(L, "trellis.guard", 1);
    return 1;
}
