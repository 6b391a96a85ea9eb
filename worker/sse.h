/*
 * sse.h - an incremental parser of server-sent events (text/event-stream),
 * as the WHATWG HTML standard defines them, for streamed LLM answers.
 *
 * Bytes arrive in whatever pieces the network gives: a line, a field or a
 * CRLF may be split across two feeds, so the parser keeps the unfinished
 * line. "data:" lines of one event are joined with "\n"; a blank line
 * dispatches the event; lines starting with ':' are comments; "id:" and
 * "retry:" are ignored (an LLM stream is never resumed). An event with no
 * data line is not dispatched, as the standard says.
 *
 * Not thread-safe; one parser per stream.
 */
#ifndef TR_SSE_H
#define TR_SSE_H

#include "lib/base/buf.h"

/*
 * Called once per dispatched event. event is "message" when the stream named
 * none. Both views are valid during the call only. A negative return stops
 * the feed, which returns it.
 */
typedef int (*tr_sse_event_fn)(void *arg, struct tr_str event, struct tr_str data);

struct tr_sse
{
    struct tr_buf line;  /* the unfinished line */
    struct tr_buf event; /* the event type of the event being built */
    struct tr_buf data;  /* its data lines, joined with \n */
    bool has_data;       /* a data line was seen since the last dispatch */
    bool skip_lf;        /* the last byte was CR: a LF right after it ends nothing */
    tr_sse_event_fn fn;
    void *arg;
};

/* A parser that calls fn; lines and events longer than max bytes make feed fail. */
void tr_sse_init(struct tr_sse *s, size_t max, tr_sse_event_fn fn, void *arg);

/* Frees the buffers; the parser may be initialised again. NULL-safe. */
void tr_sse_release(struct tr_sse *s);

/*
 * Parses n more bytes. Returns 0, TR_ENOMEM, TR_E2BIG (a line or an event
 * over the max) or what fn returned. The stream's end is not an event
 * boundary: an unfinished event is dropped, as the standard says.
 */
int tr_sse_feed(struct tr_sse *s, const char *p, size_t n) TR_MUST_CHECK;

#endif
