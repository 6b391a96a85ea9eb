/*
 * lua_http.c - trellis.http: the Lua face of worker/http_multi.c.
 *
 * A request's pending operation is a "box", a userdata on the task's
 * coroutine stack that owns the request. Whoever finishes with the request
 * frees it and clears the box: the continuation once the task is resumed,
 * the cancel function when the task is stopped, and the box's __gc when an
 * error unwound the stack in between (out of memory while building the
 * result). So a request is freed exactly once whatever happens.
 *
 * Every argument is checked before anything is allocated outside Lua, so an
 * error raised while reading them leaks nothing.
 *
 * Loop thread only.
 */
#include "worker/lua_http.h"

#include <ctype.h>
#include <jansson.h>
#include <lauxlib.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "lib/base/alloc.h"
#include "worker/executor.h"
#include "worker/http_multi.h"
#include "worker/traces.h"

#define BOX_MT "trellis.http.request"
#define HOLDER_MT "trellis.http.multi"

struct box
{
    struct tr_http_call *r; /* NULL once freed */
    struct tr_task *t;     /* the waiting task */
    int deltas;            /* DELTAS_*: relay the tokens of an LLM stream */
    char origin[160];      /* scheme://host[:port] for messages */
};

struct holder
{
    struct tr_http_multi *m; /* one reference, dropped by __gc */
};

struct opts
{
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    double timeout;
    lua_Integer max_bytes;
    bool follow;
    bool verify;
    bool sse;
    int deltas;            /* relay tokens of an LLM stream: DELTAS_* */
    bool has_headers;
};

enum
{
    DELTAS_NONE = 0,
    DELTAS_OPENAI,         /* chat.completion.chunk: choices[1].delta.content */
    DELTAS_ANTHROPIC       /* content_block_delta: delta.text */
};

static int box_gc(lua_State *L)
{
    struct box *b = luaL_checkudata(L, 1, BOX_MT);
    tr_http_call_free(b->r);
    b->r = NULL;
    return 0;
}

static int holder_gc(lua_State *L)
{
    struct holder *h = luaL_checkudata(L, 1, HOLDER_MT);
    tr_http_multi_unref(h->m);
    h->m = NULL;
    return 0;
}

/* scheme://host[:port] of url, without user info, path or query (they may hold secrets). */
static void url_origin(const char *url, char *out, size_t size)
{
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    if (at != NULL)
        host = at + 1;
    int scheme_len = p ? (int)(p - url) : 0;
    snprintf(out, size, "%.*s%s%.*s", TR_MIN(scheme_len, 16), url, p ? "://" : "",
             (int)TR_MIN((size_t)(end - host), 120u), host);
}

/* ====================================================================== */
/* Arguments                                                              */
/* ====================================================================== */

static const char *opt_string(lua_State *L, const char *k, const char *def, size_t *len)
{
    lua_getfield(L, 1, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (len)
            *len = def ? strlen(def) : 0;
        return def;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "http_error: field '%s' must be a string, not %s", k, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* the argument table keeps the string alive */
    return s;
}

static bool opt_bool(lua_State *L, const char *k, bool def)
{
    lua_getfield(L, 1, k);
    bool v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static double opt_number(lua_State *L, const char *k, double def)
{
    lua_getfield(L, 1, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return def;
    }
    int ok;
    double v = lua_tonumberx(L, -1, &ok);
    if (!ok || !isfinite(v) || v <= 0)
        luaL_error(L, "http_error: field '%s' must be a positive number", k);
    lua_pop(L, 1);
    return v;
}

static bool header_text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    }
    return true;
}

/* Checks the headers table at the top of the stack; leaves it there. */
static void check_headers(lua_State *L)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "http_error: header names must be strings");
        size_t kl, vl = 0;
        const char *k = lua_tolstring(L, -2, &kl);
        if (kl == 0 || kl > 256 || !header_text_ok(k, kl) || memchr(k, ':', kl) != NULL ||
            memchr(k, ' ', kl) != NULL)
            luaL_error(L, "http_error: bad header name '%s'", k);
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING) {
            const char *v = lua_tolstring(L, -1, &vl);
            if (vl > 16384 || !header_text_ok(v, vl))
                luaL_error(L, "http_error: bad value for header '%s'", k);
        } else if (t != LUA_TNUMBER) {
            luaL_error(L, "http_error: header '%s' must be a string or a number", k);
        }
        if (++n > TR_HTTP_MAX_HEADERS)
            luaL_error(L, "http_error: more than %d headers", TR_HTTP_MAX_HEADERS);
        lua_pop(L, 1);
    }
}

static void read_opts(lua_State *L, struct opts *o)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t ml, ul;
    o->method = opt_string(L, "method", "GET", &ml);
    o->url = opt_string(L, "url", NULL, &ul);
    if (o->url == NULL || ul == 0 || strlen(o->url) != ul)
        luaL_error(L, "http_error: field 'url' must be a non-empty string");
    if (ml == 0 || ml > 16)
        luaL_error(L, "http_error: bad method '%s'", o->method);
    for (size_t i = 0; i < ml; i++) {
        if (!isupper((unsigned char)o->method[i]))
            luaL_error(L, "http_error: bad method '%s' (upper-case letters expected)", o->method);
    }
    o->body = opt_string(L, "body", NULL, &o->body_len);
    if (o->body_len > TR_HTTP_MAX_REQUEST_BODY)
        luaL_error(L, "http_error: request body of %d bytes is over the limit of %d bytes",
                   (int)TR_MIN(o->body_len, (size_t)INT32_MAX), (int)TR_HTTP_MAX_REQUEST_BODY);
    o->timeout = opt_number(L, "timeout", TR_HTTP_DEFAULT_TIMEOUT_S);
    if (o->timeout > TR_HTTP_MAX_TIMEOUT_S)
        o->timeout = TR_HTTP_MAX_TIMEOUT_S;
    double mb = opt_number(L, "max_response_bytes", TR_HTTP_DEFAULT_MAX_RESPONSE);
    o->max_bytes = (lua_Integer)TR_MIN(mb, (double)TR_HTTP_MAX_RESPONSE);
    o->follow = opt_bool(L, "follow_redirects", false);
    o->verify = opt_bool(L, "verify_tls", true);
    o->sse = opt_bool(L, "sse", false);
    /* Set by trellis.llm for `stream = true` calls: their tokens go to the run's
     * watchers as they arrive (docs/api.md, "Events"). */
    size_t dl = 0;
    const char *d = opt_string(L, "llm_deltas", NULL, &dl);
    o->deltas = d == NULL                   ? DELTAS_NONE
                : strcmp(d, "openai") == 0    ? DELTAS_OPENAI
                : strcmp(d, "anthropic") == 0 ? DELTAS_ANTHROPIC
                                              : -1;
    if (o->deltas < 0)
        luaL_error(L, "http_error: field 'llm_deltas' must be \"openai\" or \"anthropic\"");
    lua_getfield(L, 1, "headers");
    o->has_headers = lua_type(L, -1) == LUA_TTABLE;
    if (o->has_headers)
        check_headers(L);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "http_error: field 'headers' must be a table");
    /* The headers table (or nil) stays at the top for build_headers. */
}

/* The task's trace context (traces.h), unless the caller set its own. */
static int add_traceparent(const struct tr_task *t, struct tr_http_call *r)
{
    for (const struct curl_slist *h = r->headers; h != NULL; h = h->next) {
        if (strncasecmp(h->data, "traceparent:", 12) == 0)
            return 0;
    }
    char line[80] = "traceparent: ";
    tr_traces_traceparent(t, line + strlen(line));
    struct curl_slist *l = curl_slist_append(r->headers, line);
    if (l == NULL)
        return TR_ENOMEM;
    r->headers = l;
    return 0;
}

/* Adds the checked headers table at the top of the stack to r. Never raises. */
static int build_headers(lua_State *L, struct tr_http_call *r)
{
    char line[17000];
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        size_t kl, vl = 0;
        const char *k = lua_tolstring(L, -2, &kl);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *v = lua_tolstring(L, -1, &vl);
            /* "Name;" is curl's way to send a header with an empty value. */
            if (vl == 0)
                snprintf(line, sizeof(line), "%s;", k);
            else
                snprintf(line, sizeof(line), "%s: %s", k, v);
        } else if (lua_isinteger(L, -1)) {
            snprintf(line, sizeof(line), "%s: %lld", k, (long long)lua_tointeger(L, -1));
        } else {
            snprintf(line, sizeof(line), "%s: %.17g", k, lua_tonumber(L, -1));
        }
        lua_pop(L, 1);
        struct curl_slist *l = curl_slist_append(r->headers, line);
        if (l == NULL) {
            lua_pop(L, 1);
            return TR_ENOMEM;
        }
        r->headers = l;
    }
    return 0;
}

/* ====================================================================== */
/* The request                                                            */
/* ====================================================================== */

static void on_done(struct tr_http_call *r, void *arg)
{
    struct box *b = arg;
    tr_task_resume(b->t);
}

static void http_cancel(struct tr_task *t, void *op)
{
    struct box *b = op;
    tr_http_call_free(b->r);
    b->r = NULL;
}

/* Pushes the response headers as a table: lower-case names, repeats joined with ", ". */
static void push_headers(lua_State *L, const struct tr_buf *raw)
{
    lua_newtable(L);
    const char *p = raw->buf, *end = raw->buf + raw->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        const char *le = eol ? eol : end;
        if (le > p && le[-1] == '\r')
            le--;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL && colon > p && memcmp(p, "HTTP/", 5) != 0) {
            char name[257];
            size_t nl = TR_MIN((size_t)(colon - p), sizeof(name) - 1);
            for (size_t i = 0; i < nl; i++)
                name[i] = (char)tolower((unsigned char)p[i]);
            name[nl] = '\0';
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = le;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (lua_getfield(L, -1, name) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_setfield(L, -2, name);
        }
        p = next;
    }
}

/* Pushes the events of r as an array of {event =, data =}. */
static void push_events(lua_State *L, const struct tr_buf *ev)
{
    lua_newtable(L);
    lua_Integer i = 0;
    size_t off = 0;
    while (off + 4 <= ev->len) {
        uint32_t el, dl;
        memcpy(&el, ev->buf + off, 4);
        const char *e = ev->buf + off + 4;
        memcpy(&dl, e + el, 4);
        const char *d = e + el + 4;
        off += 8 + el + dl;
        lua_createtable(L, 0, 2);
        lua_pushlstring(L, e, el);
        lua_setfield(L, -2, "event");
        lua_pushlstring(L, d, dl);
        lua_setfield(L, -2, "data");
        lua_rawseti(L, -2, ++i);
    }
}

/* The text of one streamed event of an LLM provider, or NULL. */
static const char *delta_text(json_t *j, int kind)
{
    if (kind == DELTAS_OPENAI) {
        json_t *delta = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
        return json_string_value(json_object_get(delta, "content"));
    }
    const char *type = json_string_value(json_object_get(j, "type"));
    if (type == NULL || strcmp(type, "content_block_delta") != 0)
        return NULL;
    return json_string_value(json_object_get(json_object_get(j, "delta"), "text"));
}

/* An event of a streamed LLM answer: its tokens go to the scheduler at once. */
static void on_llm_event(void *arg, struct tr_str event, struct tr_str data)
{
    struct box *b = arg;
    (void)event;
    if (data.len == 0 || data.len > TR_PROTO_DELTA_MAX || data.p[0] != '{')
        return; /* "[DONE]", or larger than any token chunk */
    json_error_t jerr;
    json_t *j = json_loadb(data.p, data.len, 0, &jerr);
    const char *text = j != NULL ? delta_text(j, b->deltas) : NULL;
    if (text != NULL)
        tr_task_llm_delta(b->t, text, strlen(text));
    json_decref(j);
}

/* The continuation: runs in the task's coroutine once the request ended. */
static int request_done(lua_State *L, int status, lua_KContext kctx)
{
    struct box *b = (struct box *)kctx;
    struct tr_http_call *r = b->r;
    if (r->result != CURLE_OK || r->bad_stream) {
        char msg[512];
        /* Curl refuses a declared Content-Length over the limit before any
         * byte; the write callback catches the rest (chunked, lying). */
        if (r->too_big || r->result == CURLE_FILESIZE_EXCEEDED)
            snprintf(msg, sizeof(msg), "http_error: response from '%s' larger than %zu bytes",
                     b->origin, r->max_bytes);
        else if (r->result == CURLE_OPERATION_TIMEDOUT)
            snprintf(msg, sizeof(msg), "http_timeout: no complete response from '%s' in time",
                     b->origin);
        else if (r->bad_stream)
            snprintf(msg, sizeof(msg), "http_error: cannot read the event stream from '%s'",
                     b->origin);
        else
            snprintf(msg, sizeof(msg), "http_error: %s from '%s'%s%s",
                     curl_easy_strerror(r->result), b->origin, r->errbuf[0] ? ": " : "",
                     r->errbuf);
        tr_http_call_free(r);
        b->r = NULL;
        lua_pushstring(L, msg);
        return lua_error(L);
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    push_headers(L, &r->resp_headers);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->resp.buf, r->resp.len);
    lua_setfield(L, -2, "body");
    if (r->sse && r->status >= 200 && r->status < 300) {
        push_events(L, &r->events);
        lua_setfield(L, -2, "events");
    }
    tr_http_call_free(r);
    b->r = NULL;
    return 1;
}

static int l_request(lua_State *L)
{
    struct tr_task *t = tr_task_of(L);
    if (t == NULL)
        return luaL_error(L, "http_error: trellis.http.request can only be called from a "
                             "task's run function (not while the pipeline loads, nor inside a "
                             "coroutine the task created)");
    struct holder *h = lua_touserdata(L, lua_upvalueindex(1));
    struct opts o;
    read_opts(L, &o); /* pushes the headers table or nil */
    struct box *b = lua_newuserdatauv(L, sizeof(*b), 0);
    memset(b, 0, sizeof(*b));
    luaL_setmetatable(L, BOX_MT);
    b->t = t;
    url_origin(o.url, b->origin, sizeof(b->origin));
    if (h->m == NULL) {
        /* Attached at the first request: the module may have been required
         * while the file loaded in the thread pool, away from the loop. */
        h->m = tr_http_multi_ref(tr_executor_loop(tr_executor_of(L)));
        if (h->m == NULL)
            return luaL_error(L, "http_error: cannot start curl");
    }
    b->r = tr_http_call_new(h->m, (size_t)o.max_bytes);
    if (b->r == NULL)
        return luaL_error(L, "http_error: not enough memory for a request");
    struct tr_http_call *r = b->r;
    CURL *e = r->easy;
    lua_pushvalue(L, -2);
    int rc = o.has_headers ? build_headers(L, r) : 0;
    lua_pop(L, 1);
    if (rc == 0)
        rc = add_traceparent(t, r);
    /* Waiting for "100 Continue" before sending a body costs a round trip. */
    struct curl_slist *l = rc == 0 ? curl_slist_append(r->headers, "Expect:") : NULL;
    if (l == NULL)
        return luaL_error(L, "http_error: not enough memory for a request");
    r->headers = l;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_URL, o.url);
    if (o.body != NULL) {
        r->body = tr_memdup(o.body, o.body_len + 1);
        if (r->body == NULL)
            return luaL_error(L, "http_error: not enough memory for a request body");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o.body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    }
    if (strcmp(o.method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(o.method, "GET") != 0 || o.body != NULL)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o.method);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)ceil(o.timeout * 1000.0));
    if (o.follow) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)TR_HTTP_MAX_REDIRECTS);
    }
    if (!o.verify) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    r->sse = o.sse;
    if (o.sse && o.deltas != DELTAS_NONE) {
        b->deltas = o.deltas;
        r->on_event = on_llm_event;
        r->on_event_arg = b;
    }
    if (tr_http_call_start(r, on_done, b) < 0)
        return luaL_error(L, "http_error: cannot start a request to '%s'", b->origin);
    return tr_task_yield(L, t, b, http_cancel, (lua_KContext)b, request_done);
}

int tr_lua_http_open(lua_State *L)
{
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, HOLDER_MT)) {
        lua_pushcfunction(L, holder_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    struct holder *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->m = NULL;
    luaL_setmetatable(L, HOLDER_MT);
    lua_pushcclosure(L, l_request, 1);
    lua_setfield(L, -2, "request");
    return 1;
}
