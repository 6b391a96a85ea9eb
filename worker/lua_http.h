/*
 * lua_http.h - `require "trellis.http"`: non-blocking HTTP for tasks.
 *
 * http.request{method, url, headers, body, timeout, max_response_bytes,
 * follow_redirects, verify_tls, sse} yields the task's coroutine while curl
 * works on the worker's loop (worker/http_multi.h) and returns
 * {status, headers, body}; a non-2xx status is a response, not an error.
 * Failures raise "http_error: ..." and an expired timeout "http_timeout: ...".
 * Messages name the scheme and host of the URL only: paths and query
 * strings may carry secrets. See docs/llm.md.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_LUA_HTTP_H
#define TR_WORKER_LUA_HTTP_H

#include <lua.h>

#define TR_HTTP_DEFAULT_TIMEOUT_S 60.0
#define TR_HTTP_MAX_TIMEOUT_S 86400.0
#define TR_HTTP_DEFAULT_MAX_RESPONSE (16u << 20)
#define TR_HTTP_MAX_RESPONSE (1u << 30)
#define TR_HTTP_MAX_REQUEST_BODY (64u << 20)
#define TR_HTTP_MAX_HEADERS 128
#define TR_HTTP_MAX_REDIRECTS 5

/*
 * lua_CFunction that require runs: returns the module table. Raises outside
 * a worker's pipeline state or when curl cannot start.
 */
int tr_lua_http_open(lua_State *L);

#endif
