/*
 * client.h - a small blocking HTTP/JSON client for the scheduler's API.
 *
 * One libcurl easy handle, reused across calls so that a command's requests
 * share one keep-alive connection. Requests and answers are JSON (jansson).
 * Failures come back as a TR_E* code plus a message in a struct tr_error
 * that can be shown to the user as it is:
 *   - TR_EUNAVAIL: no answer at all ("cannot reach scheduler at
 *     http://127.0.0.1:8420: connection refused");
 *   - TR_ECANCELED: the call was interrupted (tr_client_set_interrupt);
 *   - TR_EPROTO: the answer was not the API's JSON;
 *   - any other code: the scheduler said no; the message is the API's
 *     `message` and tr_client_error_code() gives its stable `code`.
 * Single-threaded: one client belongs to one thread. The token is never
 * written to any message.
 */
#ifndef TR_CLI_CLIENT_H
#define TR_CLI_CLIENT_H

#include <jansson.h>
#include <signal.h>

#include "lib/base/error.h"

struct tr_client;

/*
 * A client for the API at base_url ("http://127.0.0.1:8420"; a trailing
 * slash is ignored). token (may be NULL) is sent as a bearer token; the
 * client keeps its own copy. Returns NULL when out of memory or when libcurl
 * cannot make a handle. curl_global_init must have been called.
 */
struct tr_client *tr_client_open(const char *base_url, const char *token) TR_MUST_CHECK;

/* Frees the client and its connection. NULL-safe. */
void tr_client_close(struct tr_client *c);

/* The base URL without its trailing slash; borrowed, valid while c lives. */
const char *tr_client_url(const struct tr_client *c);

/*
 * Makes every later call return TR_ECANCELED soon after *flag becomes
 * non-zero (checked while waiting for the answer, at least once a second).
 * The flag is typically set by a SIGINT handler. NULL turns this off.
 */
void tr_client_set_interrupt(struct tr_client *c, volatile sig_atomic_t *flag);

/*
 * Sends `method path` (path starts with "/", query included) with body as
 * JSON when body is not NULL, and waits for the answer for at most
 * timeout_s seconds (connecting counts against a 5-second limit of its own).
 * On 2xx returns 0 and *out holds the parsed answer (a new reference the
 * caller releases with json_decref; JSON null for an empty body). Otherwise
 * returns a negative code as described at the top of this file, sets err and
 * leaves *out NULL. TR_ENOMEM when out of memory.
 */
int tr_client_call(struct tr_client *c, const char *method, const char *path,
                   const json_t *body, long timeout_s, json_t **out,
                   struct tr_error *err) TR_MUST_CHECK;

/* tr_client_call for GET and POST with the default timeout (30 s). */
int tr_client_get(struct tr_client *c, const char *path, json_t **out,
                  struct tr_error *err) TR_MUST_CHECK;
int tr_client_post(struct tr_client *c, const char *path, const json_t *body, json_t **out,
                   struct tr_error *err) TR_MUST_CHECK;

/*
 * The API's error code of the last call that the scheduler refused
 * ("not_found", "conflict"), or "" when the last call did not fail that way.
 * Borrowed, valid until the next call.
 */
const char *tr_client_error_code(const struct tr_client *c);

/* The HTTP status of the last call's answer, 0 when none came. */
long tr_client_status(const struct tr_client *c);

/*
 * s percent-encoded for use as one path segment or query value, owned by the
 * caller (tr_free); NULL when out of memory.
 */
char *tr_client_escape(const char *s) TR_MUST_CHECK;

/*
 * One server-sent event: its type ("message" when it named none), its data
 * (data lines joined with "\n") and the stream's last event id ("" when
 * none). Borrowed for the call. Returning non-zero stops the stream.
 */
typedef int (*tr_client_event_fn)(void *arg, const char *type, const char *data,
                                  const char *id);

/*
 * GETs path (an event stream, docs/api.md "Events") and calls fn for each
 * event as it arrives, with "Last-Event-ID: last_event_id" when that is not
 * NULL. No overall timeout: the scheduler writes a comment line every 15 s,
 * and 45 s of silence count as a lost connection. Returns 0 when the
 * scheduler ended the stream (or answered 204: nothing more to send), 1 when
 * fn stopped it, or a negative code as tr_client_call does (TR_EUNAVAIL:
 * no answer, or the connection broke mid-stream; the caller may resume).
 */
int tr_client_stream(struct tr_client *c, const char *path, const char *last_event_id,
                     tr_client_event_fn fn, void *arg, struct tr_error *err) TR_MUST_CHECK;

#endif
