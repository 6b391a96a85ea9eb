/*
 * fuzz_sse.c - the server-sent events parser (worker/sse.c).
 *
 * The first byte picks how the rest is cut into feeds (1 to 16 bytes, as a
 * network may deliver it); the stream is parsed once whole and once cut. Both
 * must give the same events (a cut inside a line or a CRLF changes nothing),
 * unless one of them hit the size cap, which only the cut feed applies to a
 * line that does not end inside one feed. An event named "stop" makes the
 * callback return an error, which must stop the feed and come back from it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SSE_MAX 4096
#define STOPPED -1000

/* Events seen, as "event\0data\0" records. */
struct seen
{
    struct tr_buf log;
    size_t events;
};

static int on_event(void *arg, struct tr_str event, struct tr_str data)
{
    struct seen *s = arg;
    if (event.len == 0 || event.p == NULL || (data.len > 0 && data.p == NULL))
        abort(); /* "message" when the stream named none; data a valid view */
    s->events++;
    if (tr_buf_add(&s->log, event.p, event.len) < 0 || tr_buf_addch(&s->log, '\0') < 0 ||
        tr_buf_add(&s->log, data.p, data.len) < 0 || tr_buf_addch(&s->log, '\0') < 0)
        abort();
    if (event.len == 4 && memcmp(event.p, "stop", 4) == 0)
        return STOPPED;
    return 0;
}

/* Parses p in feeds of at most step bytes; the first error, or 0. */
static int parse(const char *p, size_t n, size_t step, struct seen *out)
{
    struct tr_sse s;
    tr_sse_init(&s, SSE_MAX, on_event, out);
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += step) {
        size_t k = n - off < step ? n - off : step;
        rc = tr_sse_feed(&s, p + off, k);
    }
    if (rc == 0)
        rc = tr_sse_feed(&s, p + n, 0); /* an empty feed changes nothing */
    tr_sse_release(&s);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t step = (size_t)(data[0] % 16) + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    struct seen whole = {.events = 0}, cut = {.events = 0};
    tr_buf_init(&whole.log, 0);
    tr_buf_init(&cut.log, 0);
    int rw = parse(p, n, n ? n : 1, &whole);
    int rc = parse(p, n, step, &cut);
    if ((rw != 0 && rw != TR_E2BIG && rw != STOPPED) || (rc != 0 && rc != TR_E2BIG && rc != STOPPED))
        abort();
    if (rw != TR_E2BIG && rc != TR_E2BIG) {
        if (rw != rc || whole.events != cut.events || whole.log.len != cut.log.len ||
            (whole.log.len && memcmp(whole.log.buf, cut.log.buf, whole.log.len) != 0))
            abort(); /* where the network cut the stream changed what it meant */
    }
    tr_buf_release(&whole.log);
    tr_buf_release(&cut.log);
    return 0;
}
