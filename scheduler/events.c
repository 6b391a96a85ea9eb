/*
 * events.c - live events over server-sent events (events.h).
 *
 * An event id is (epoch << 32) + n, where n counts the run's events (or the
 * events of GET /v1/events) from 1 and epoch is the leadership's: ids only
 * grow, and an id from before a restart is recognised as such (the client
 * then gets the current state, as a new client does).
 *
 * A client is a struct ev_conn on a streamed answer (lib/http). Its handler
 * only registers it; everything it receives is written by events_flush,
 * after the turn's commit: first its start (a snapshot of the run's current
 * state, or a replay of the run's log after its Last-Event-ID), then the
 * events of its run's log past its cursor. A client is written to only
 * while the bytes it has not read are within --sse-queue-bytes (that is all
 * the scheduler buffers for it); when it has read them (the stream's
 * drained callback) it is served again. A client that does not keep up
 * (its unread bytes at that bound while its log grows, and more than half
 * the log behind: EV_RUN_EVENTS / 2 events or EV_RUN_BYTES / 2 bytes) gets
 * an `error` event (code slow_client, with the id of the last event written
 * to it) and is disconnected: its missing events are still in the log, so
 * it resumes without loss if it comes back soon. Catching up on a log that
 * does not grow, and a snapshot, go at the client's pace, never dropped;
 * a resumed client, which starts behind, has EV_GRACE_MS to catch up.
 */
#include "scheduler/events.h"

#include <stdio.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "scheduler/api.h"
#include "scheduler/auth.h"
#include "scheduler/tenants.h"

/* One formatted event: "id: ...\nevent: ...\ndata: {...}\n\n". */
struct ev_item
{
    uint64_t seq;
    char *frame;            /* owned; for GET /v1/events followed by the pipeline's name */
    uint32_t len;           /* bytes of the frame */
    const char *state;      /* static state name, or NULL (log, llm): the ?state= filter */
    uint64_t end_off;       /* bytes of every event pushed so far, this one included */
    bool is_run;            /* a run event (the ?state= filter keeps only those) */
};

/* A bounded log of events with consecutive numbers, oldest first. */
struct ev_ring
{
    struct ev_item *items;
    uint32_t cap, head, n;
    size_t bytes;
    uint32_t max_items;
    size_t max_bytes;
    uint64_t have_from;     /* every event numbered above it is in the log */
    uint64_t pushed;        /* bytes of every event ever pushed */
    size_t *total;          /* bytes of every run's log (events.logs_bytes), or NULL */
};

struct ev_run
{
    struct run *run;
    struct ev_ring ring;
    struct ev_conn *watchers;
    uint32_t n_watchers;
    struct ev_run *dirty_next;
    bool in_dirty;
    bool grew;                   /* events were added since the last flush */
};

enum ev_snap
{
    SNAP_DONE = 0, /* no snapshot, or written whole */
    SNAP_RUN,      /* the run's event is next */
    SNAP_TASKS,    /* instance snap_i of task topo[snap_t], its log from snap_log */
    SNAP_END       /* the run's final event, if it had ended */
};

struct ev_conn
{
    struct events *ev;
    struct tr_http_stream *st;
    struct ev_run *er;           /* the run watched; NULL for GET /v1/events */
    uint64_t cursor;             /* number of the last event sent */
    uint64_t resume;             /* until started: the Last-Event-ID's number */
    bool fresh;                  /* start with a snapshot rather than a replay */
    bool started;
    uint8_t snap;                /* enum ev_snap: where its snapshot is */
    bool snap_final;             /* the run had ended when the snapshot began */
    bool snap_told;              /* the task event of instance snap_i is written */
    uint32_t snap_t, snap_i;
    size_t snap_log;             /* offset of the next log line of that instance */
    uint64_t snap_seq;           /* the run's last event when the snapshot began */
    uint64_t since_ms;           /* loop time it connected */
    char pipeline[128];          /* GET /v1/events filters; "" for any */
    char state[16];
    char tenant[AUTH_TENANT_MAX];   /* GET /v1/events under tenants: only its runs; "" all */
    struct ev_conn *prev, *next;    /* ev->conns */
    struct ev_conn *wprev, *wnext;  /* er->watchers */
};

static uint64_t ev_id(const struct events *ev, uint64_t seq)
{
    return (*ev->epoch << 32) + (seq & 0xffffffffu);
}

/* ====================================================================== */
/* Formatting                                                              */
/* ====================================================================== */

/* Appends s as the inside of a JSON string (control bytes escaped). */
static int json_esc(struct tr_buf *b, const char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        rc = tr_buf_add(b, p + start, i - start);
        start = i + 1;
        if (rc != 0)
            break;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            rc = tr_buf_add(b, e, 2);
        } else if (ch == '\n') {
            rc = tr_buf_addstr(b, "\\n");
        } else if (ch == '\t') {
            rc = tr_buf_addstr(b, "\\t");
        } else if (ch == '\r') {
            rc = tr_buf_addstr(b, "\\r");
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            rc = tr_buf_add(b, e, 6);
        }
    }
    return rc == 0 ? tr_buf_add(b, p + start, len - start) : rc;
}

static int json_kstr(struct tr_buf *b, const char *key, const char *p, size_t len)
{
    int rc = tr_buf_addf(b, ",\"%s\":\"", key);
    if (rc == 0)
        rc = json_esc(b, p, len);
    return rc == 0 ? tr_buf_addch(b, '"') : rc;
}

static const char *inst_worker(const struct inst *in)
{
    return in->worker != NULL ? in->worker->id : in->worker_id;
}

/* The data of a task event. */
static int task_json(struct tr_buf *b, const struct inst *in)
{
    const struct run *r = in->run;
    const char *name = r->pipe->def->tasks[in->task].name;
    const char *w = inst_worker(in);
    int rc = tr_buf_addf(b, "{\"run\":\"%s\"", r->id);
    if (rc == 0)
        rc = json_kstr(b, "name", name, strlen(name));
    if (rc == 0)
        rc = tr_buf_addf(b, ",\"index\":%u,\"state\":\"%s\",\"attempt\":%u", in->index,
                         tr_task_state_names[in->state], (unsigned)in->attempts);
    if (rc == 0)
        rc = w != NULL ? json_kstr(b, "worker", w, strlen(w)) : tr_buf_addstr(b, ",\"worker\":null");
    return rc == 0 ? tr_buf_addch(b, '}') : rc;
}

static int run_json(struct tr_buf *b, const char *id, const char *pipeline, const char *state,
                    const char *error)
{
    int rc = tr_buf_addf(b, "{\"run\":\"%s\"", id);
    if (rc == 0)
        rc = json_kstr(b, "pipeline", pipeline, strlen(pipeline));
    if (rc == 0)
        rc = tr_buf_addf(b, ",\"state\":\"%s\"", state);
    if (rc == 0 && error != NULL)
        rc = json_kstr(b, "error", error, strlen(error));
    return rc == 0 ? tr_buf_addch(b, '}') : rc;
}

/* The data of a log line or an LLM delta (key "line" or "delta"). */
static int text_json(struct tr_buf *b, const struct inst *in, const char *key, struct tr_str t)
{
    const char *name = in->run->pipe->def->tasks[in->task].name;
    int rc = tr_buf_addf(b, "{\"run\":\"%s\"", in->run->id);
    if (rc == 0)
        rc = json_kstr(b, "task", name, strlen(name));
    if (rc == 0)
        rc = tr_buf_addf(b, ",\"index\":%u", in->index);
    if (rc == 0)
        rc = json_kstr(b, key, t.p, t.len);
    return rc == 0 ? tr_buf_addch(b, '}') : rc;
}

static int frame(struct tr_buf *out, uint64_t id, const char *type, const struct tr_buf *data)
{
    int rc = tr_buf_addf(out, "id: %llu\nevent: %s\ndata: ", (unsigned long long)id, type);
    if (rc == 0)
        rc = tr_buf_add(out, data->buf, data->len);
    return rc == 0 ? tr_buf_addstr(out, "\n\n") : rc;
}

/* ====================================================================== */
/* Logs                                                                    */
/* ====================================================================== */

static void ring_init(struct ev_ring *g, uint32_t max_items, size_t max_bytes, uint64_t from)
{
    memset(g, 0, sizeof(*g));
    g->max_items = max_items;
    g->max_bytes = max_bytes;
    g->have_from = from;
}

static struct ev_item *ring_at(const struct ev_ring *g, uint32_t i)
{
    return &g->items[(g->head + i) % g->cap];
}

static void ring_pop(struct ev_ring *g)
{
    struct ev_item *it = ring_at(g, 0);
    g->have_from = it->seq;
    g->bytes -= it->len;
    if (g->total != NULL)
        *g->total -= it->len;
    tr_free(it->frame);
    g->head = (g->head + 1) % g->cap;
    g->n--;
}

static void ring_release(struct ev_ring *g)
{
    while (g->n > 0)
        ring_pop(g);
    tr_free(g->items);
    g->items = NULL;
    g->cap = 0;
}

/* Takes frame (owned) as event number seq; a frame it cannot keep leaves a gap. */
static void ring_push(struct ev_ring *g, uint64_t seq, char *frame, uint32_t len,
                      const char *state)
{
    while (g->n > 0 && (g->n >= g->max_items || g->bytes + len > g->max_bytes))
        ring_pop(g);
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? TR_MIN(g->cap * 2, g->max_items) : 64;
        struct ev_item *items = tr_malloc(cap * sizeof(*items));
        if (items == NULL) {
            tr_free(frame);
            while (g->n > 0)
                ring_pop(g);
            g->have_from = seq;
            return;
        }
        for (uint32_t i = 0; i < g->n; i++)
            items[i] = *ring_at(g, i);
        tr_free(g->items);
        g->items = items;
        g->cap = cap;
        g->head = 0;
    }
    g->pushed += len;
    *ring_at(g, g->n) = (struct ev_item){seq, frame, len, state, g->pushed,
                                         strncmp(frame + strcspn(frame, "\n"), "\nevent: run\n",
                                                 12) == 0};
    g->n++;
    g->bytes += len;
    if (g->total != NULL)
        *g->total += len;
}

/*
 * Whether a client whose last event is cursor is more than half the log
 * behind: it is then dropped while the events it lacks are still there, so
 * that it can resume without loss.
 */
static bool ring_behind(const struct ev_ring *g, uint64_t cursor)
{
    if (g->n == 0)
        return false;
    uint64_t first = ring_at(g, 0)->seq;
    const struct ev_item *last = ring_at(g, g->n - 1);
    if (cursor >= last->seq)
        return false;
    if (last->seq - cursor > g->max_items / 2)
        return true;
    uint64_t done = cursor >= first ? ring_at(g, (uint32_t)(cursor - first))->end_off
                                    : ring_at(g, 0)->end_off - ring_at(g, 0)->len;
    return last->end_off - done > g->max_bytes / 2;
}

/* A frame that does not fit leaves a gap: the log is complete only after it. */
static void ring_gap(struct ev_ring *g, uint64_t seq)
{
    while (g->n > 0)
        ring_pop(g);
    g->have_from = seq;
}

static void mark_dirty(struct events *ev, struct ev_run *er)
{
    if (er->in_dirty)
        return;
    er->in_dirty = true;
    er->dirty_next = ev->dirty;
    ev->dirty = er;
}

/*
 * Records one event of r whose data is in data (type "task", "run", ...):
 * in the run's log when it has one, and in the log of GET /v1/events when
 * global is set and that log exists.
 */
static void record(struct events *ev, struct run *r, const char *type, const struct tr_buf *data,
                   const char *state, bool global)
{
    struct tr_buf f;
    if (r->ev != NULL) {
        tr_buf_init(&f, 0);
        if (frame(&f, ev_id(ev, r->ev_seq), type, data) == 0 && f.len < UINT32_MAX) {
            uint32_t len = (uint32_t)f.len;
            ring_push(&r->ev->ring, r->ev_seq, tr_buf_detach(&f, NULL), len, state);
        } else {
            ring_gap(&r->ev->ring, r->ev_seq);
        }
        tr_buf_release(&f);
        r->ev->grew = true;
        if (r->ev->n_watchers > 0)
            mark_dirty(ev, r->ev);
    }
    if (!global || ev->all == NULL)
        return;
    ev->all_seq++;
    tr_buf_init(&f, 0);
    const char *pipe = r->pipe->def->name;
    if (frame(&f, ev_id(ev, ev->all_seq), type, data) == 0 && f.len < UINT32_MAX &&
        tr_buf_add(&f, pipe, strlen(pipe) + 1) == 0) {
        uint32_t len = (uint32_t)(f.len - strlen(pipe) - 1);
        ring_push(ev->all, ev->all_seq, tr_buf_detach(&f, NULL), len, state);
    } else {
        ring_gap(ev->all, ev->all_seq);
    }
    tr_buf_release(&f);
    ev->all_dirty = true;
    ev->all_grew = true;
}

static bool wanted(const struct events *ev, const struct run *r)
{
    return r->ev != NULL || ev->all != NULL;
}

/* ====================================================================== */
/* The run observer                                                        */
/* ====================================================================== */

static void obs_task(void *arg, struct inst *in)
{
    struct events *ev = arg;
    struct run *r = in->run;
    r->ev_seq++;
    if (!wanted(ev, r))
        return;
    struct tr_buf d;
    tr_buf_init(&d, 0);
    if (task_json(&d, in) == 0)
        record(ev, r, "task", &d, tr_task_state_names[in->state], true);
    else if (r->ev != NULL)
        ring_gap(&r->ev->ring, r->ev_seq);
    tr_buf_release(&d);
}

static void obs_run(void *arg, struct run *r)
{
    struct events *ev = arg;
    r->ev_seq++;
    if (ev->wh != NULL && run_is_final(r))
        webhooks_run_final(ev->wh, r);
    if (!wanted(ev, r))
        return;
    struct tr_buf d;
    tr_buf_init(&d, 0);
    if (run_json(&d, r->id, r->pipe->def->name, tr_run_state_names[r->state], r->error) == 0)
        record(ev, r, "run", &d, tr_run_state_names[r->state], true);
    else if (r->ev != NULL)
        ring_gap(&r->ev->ring, r->ev_seq);
    tr_buf_release(&d);
}

static void obs_text(struct events *ev, struct inst *in, const char *type, const char *key,
                     struct tr_str t)
{
    struct run *r = in->run;
    r->ev_seq++;
    if (r->ev == NULL)
        return;
    struct tr_buf d;
    tr_buf_init(&d, 0);
    if (text_json(&d, in, key, t) == 0)
        record(ev, r, type, &d, NULL, false);
    else
        ring_gap(&r->ev->ring, r->ev_seq);
    tr_buf_release(&d);
}

static void obs_logs(void *arg, struct inst *in, const struct tr_str *lines, uint32_t n)
{
    if (run_is_final(in->run))
        return;
    for (uint32_t i = 0; i < n; i++)
        obs_text(arg, in, "log", "line", (struct tr_str){lines[i].p, TR_MIN(lines[i].len, 1024)});
}

static void obs_delta(void *arg, struct inst *in, struct tr_str text)
{
    if (run_is_final(in->run) || text.len == 0)
        return;
    obs_text(arg, in, "llm", "delta", text);
}

static void conn_end(struct ev_conn *c);

static void er_free(struct events *ev, struct ev_run *er)
{
    while (er->watchers != NULL)
        conn_end(er->watchers);
    if (er->in_dirty) {
        for (struct ev_run **p = &ev->dirty; *p != NULL; p = &(*p)->dirty_next) {
            if (*p == er) {
                *p = er->dirty_next;
                break;
            }
        }
    }
    ring_release(&er->ring);
    er->run->ev = NULL;
    tr_free(er);
}

static void obs_freed(void *arg, struct run *r)
{
    if (r->ev != NULL)
        er_free(arg, r->ev);
}

/* ====================================================================== */
/* Clients                                                                 */
/* ====================================================================== */

static void conn_unlink(struct ev_conn *c)
{
    struct events *ev = c->ev;
    if (c->prev)
        c->prev->next = c->next;
    else
        ev->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ev->n_conns--;
    struct ev_run *er = c->er;
    if (er != NULL) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            er->watchers = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        er->n_watchers--;
    }
}

/* The client went away first. */
static void on_gone(void *arg)
{
    struct ev_conn *c = arg;
    conn_unlink(c);
    tr_free(c);
}

/* Ends c's stream once what is queued is out. */
static void conn_end(struct ev_conn *c)
{
    conn_unlink(c);
    tr_http_stream_end(c->st);
    tr_free(c);
}

/* Tells c it fell behind, with the id to resume from, and ends it. */
static void conn_kick(struct ev_conn *c)
{
    struct events *ev = c->ev;
    ev->n_slow++;
    /* Mid-snapshot there is nothing to resume from: the client starts again. */
    uint64_t id = ev_id(ev, c->cursor);
    char resume[96] = "";
    if (c->snap == SNAP_DONE)
        snprintf(resume, sizeof(resume), ",\"last_event_id\":\"%llu\"", (unsigned long long)id);
    char msg[400];
    int n = snprintf(msg, sizeof(msg),
                     ": too slow: the client fell more than %u events or %zu bytes behind\n"
                     "event: error\ndata: {\"code\":\"slow_client\",\"message\":\"the client "
                     "fell behind its events; reconnect with Last-Event-ID\"%s}\n\n",
                     (c->er ? EV_RUN_EVENTS : EV_ALL_EVENTS) / 2,
                     (c->er ? (size_t)EV_RUN_BYTES : (size_t)EV_ALL_BYTES) / 2, resume);
    if (tr_http_stream_write(c->st, msg, (size_t)n) < 0)
        tr_debug("cannot tell a slow client why it is dropped");
    tr_log_limited(&ev->slow_log, "disconnecting a slow event stream client", "", 0);
    conn_end(c);
}

/*
 * Whether c is too slow: its unread bytes are at the bound while the log it
 * reads grew and it is more than half that log behind. A client catching up
 * on a log that does not grow (a finished run) is never dropped, nor one in
 * its first EV_GRACE_MS (a resumed client starts behind).
 */
static bool too_slow(const struct ev_conn *c, const struct ev_ring *g, bool grew);

/* Whether c may take more now: its unread bytes are within --sse-queue-bytes. */
static bool room(const struct ev_conn *c)
{
    return tr_http_stream_queued(c->st) <= c->ev->queue_max;
}

/* Writes p to c (which has room): false when c is gone. */
static bool conn_write(struct ev_conn *c, const char *p, size_t len)
{
    if (tr_http_stream_write(c->st, p, len) < 0) {
        conn_kick(c);
        return false;
    }
    c->ev->n_sent++;
    return true;
}

/* Writes one snapshot event built by jrc == 0 into data; false when c is gone. */
static bool snap(struct ev_conn *c, const char *type, const struct tr_buf *data, int jrc)
{
    struct tr_buf f;
    tr_buf_init(&f, 0);
    bool ok;
    if (jrc == 0 && frame(&f, ev_id(c->ev, c->snap_seq), type, data) == 0) {
        ok = conn_write(c, f.buf, f.len);
    } else {
        conn_kick(c); /* out of memory: it may come back */
        ok = false;
    }
    tr_buf_release(&f);
    return ok;
}

/*
 * Writes the current state of c's run as events, as long as c has room
 * (it goes on when c has drained): the run, then each instance that left
 * pending with its log lines, then the run's end if it had ended when the
 * snapshot began. All carry the id of the run's last event at that moment;
 * the run's log follows from there, so a change made meanwhile may be seen
 * twice (its new state in the snapshot, then its event), never missed.
 * Returns false when c is gone; c->snap is SNAP_DONE once it is whole.
 */
static bool write_snapshot(struct ev_conn *c)
{
    struct run *r = c->er->run;
    const struct tr_pipeline_def *def = r->pipe->def;
    struct tr_buf d;
    tr_buf_init(&d, 0);
    bool ok = true;
    if (c->snap == SNAP_RUN && room(c)) {
        /* A final run's own event goes last: it ends the stream. */
        const char *st = c->snap_final ? tr_run_state_names[TR_RUN_RUNNING]
                                       : tr_run_state_names[r->state];
        ok = snap(c, "run", &d, run_json(&d, r->id, def->name, st, NULL));
        c->snap = SNAP_TASKS;
    }
    while (ok && c->snap == SNAP_TASKS && room(c)) {
        if (c->snap_t >= def->n_tasks) {
            c->snap = SNAP_END;
            break;
        }
        struct task_rt *trt = &r->tasks[def->topo[c->snap_t]];
        uint32_t n = trt->mapped ? trt->n_inst : (trt->expanded ? 1 : 0);
        if (c->snap_i >= n) {
            c->snap_t++;
            c->snap_i = 0;
            continue;
        }
        struct inst *in = task_inst(trt, c->snap_i);
        if (c->snap_log == 0 && !c->snap_told) {
            c->snap_told = true;
            if (in->state != TR_TASK_PENDING || in->logs != NULL) {
                tr_buf_reset(&d);
                ok = snap(c, "task", &d, task_json(&d, in));
                continue;
            }
        }
        if (in->logs != NULL && c->snap_log < in->logs->len) {
            const char *p = in->logs->buf + c->snap_log;
            const char *end = in->logs->buf + in->logs->len;
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *e = nl ? nl : end;
            tr_buf_reset(&d);
            ok = snap(c, "log", &d, text_json(&d, in, "line", (struct tr_str){p, (size_t)(e - p)}));
            c->snap_log = (size_t)(e - in->logs->buf) + 1;
            continue;
        }
        c->snap_i++;
        c->snap_log = 0;
        c->snap_told = false;
    }
    if (ok && c->snap == SNAP_END && room(c)) {
        if (c->snap_final) {
            tr_buf_reset(&d);
            ok = snap(c, "run", &d,
                      run_json(&d, r->id, def->name, tr_run_state_names[r->state], r->error));
        }
        c->snap = SNAP_DONE;
    }
    tr_buf_release(&d);
    return ok;
}

/* Sends c what it has not had, as far as it has room; false when c is gone. */
static bool serve_run_conn(struct ev_conn *c)
{
    struct ev_run *er = c->er;
    struct run *r = er->run;
    struct ev_ring *g = &er->ring;
    if (!c->started) {
        c->started = true;
        if (c->fresh || c->resume < g->have_from) {
            c->snap = SNAP_RUN;
            c->snap_seq = c->cursor = r->ev_seq;
            c->snap_final = run_is_final(r);
        } else {
            c->cursor = c->resume;
        }
    }
    if (c->snap != SNAP_DONE && (!write_snapshot(c) || c->snap != SNAP_DONE))
        return true;
    if (c->cursor < g->have_from) {
        conn_kick(c); /* its events left the log before it could take them */
        return false;
    }
    if (g->n > 0) {
        uint64_t first = ring_at(g, 0)->seq;
        for (uint64_t s = TR_MAX(c->cursor + 1, first); s < first + g->n && room(c); s++) {
            struct ev_item *it = ring_at(g, (uint32_t)(s - first));
            if (!conn_write(c, it->frame, it->len))
                return false;
            c->cursor = s;
        }
    }
    if (run_is_final(r) && c->cursor >= r->ev_seq) {
        conn_end(c);
        return false;
    }
    if (too_slow(c, g, er->grew)) {
        conn_kick(c);
        return false;
    }
    return true;
}

static bool all_match(const struct ev_conn *c, const struct ev_item *it)
{
    if (c->state[0] != '\0' && (!it->is_run || strcmp(it->state, c->state) != 0))
        return false;
    const char *pipe = it->frame + it->len;
    if (c->pipeline[0] != '\0' && strcmp(pipe, c->pipeline) != 0)
        return false;
    return c->tenant[0] == '\0' ||
           strcmp(tenant_owner(c->ev->api, TENANT_PIPELINE, pipe), c->tenant) == 0;
}

static void serve_all_conn(struct ev_conn *c)
{
    struct ev_ring *g = c->ev->all;
    if (!c->started) {
        c->started = true;
        c->cursor = c->fresh || c->resume < g->have_from ? c->ev->all_seq : c->resume;
        /* A new client starts with what happens next; a comment says so. */
        if (!conn_write(c, ": events of every run from now on\n\n", 35))
            return;
    }
    if (c->cursor < g->have_from) {
        conn_kick(c);
        return;
    }
    if (g->n == 0)
        return;
    uint64_t first = ring_at(g, 0)->seq;
    for (uint64_t s = TR_MAX(c->cursor + 1, first); s < first + g->n && room(c); s++) {
        struct ev_item *it = ring_at(g, (uint32_t)(s - first));
        if (all_match(c, it) && !conn_write(c, it->frame, it->len))
            return;
        c->cursor = s;
    }
    if (too_slow(c, g, c->ev->all_grew))
        conn_kick(c);
}

static bool too_slow(const struct ev_conn *c, const struct ev_ring *g, bool grew)
{
    return grew && !room(c) && (c->fresh || uv_now(c->ev->loop) - c->since_ms >= EV_GRACE_MS) &&
           ring_behind(g, c->cursor);
}

/* The client read everything written: serve it again at the next flush. */
static void on_drained(void *arg)
{
    struct ev_conn *c = arg;
    if (c->er != NULL)
        mark_dirty(c->ev, c->er);
    else
        c->ev->all_dirty = true;
}

void events_flush(struct events *ev)
{
    if (ev->wh != NULL)
        webhooks_committed(ev->wh);
    while (ev->dirty != NULL) {
        struct ev_run *er = ev->dirty;
        ev->dirty = er->dirty_next;
        er->in_dirty = false;
        struct ev_conn *next;
        for (struct ev_conn *c = er->watchers; c != NULL; c = next) {
            next = c->wnext;
            (void)serve_run_conn(c);
        }
        er->grew = false;
        /* The log of a final run nobody watches is kept for clients that come back
         * (until the run leaves memory) within EV_LOGS_BUDGET; past it, a late
         * client gets the run's state. */
        if (er->n_watchers == 0 && run_is_final(er->run) && ev->logs_bytes > EV_LOGS_BUDGET)
            er_free(ev, er);
    }
    if (ev->all_dirty) {
        ev->all_dirty = false;
        struct ev_conn *next;
        for (struct ev_conn *c = ev->conns; c != NULL; c = next) {
            next = c->next;
            if (c->er == NULL)
                serve_all_conn(c);
        }
        ev->all_grew = false;
    }
}

static void on_heartbeat(uv_timer_t *t)
{
    struct events *ev = t->data;
    struct ev_conn *next;
    for (struct ev_conn *c = ev->conns; c != NULL; c = next) {
        next = c->next;
        if (c->started && room(c))
            (void)conn_write(c, ":\n\n", 3);
    }
}

/* ====================================================================== */
/* Handlers                                                                */
/* ====================================================================== */

static void refuse_503(struct tr_http_req *req, const char *code, const char *msg)
{
    char *body;
    size_t len = 0;
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (body == NULL) {
        tr_http_respond_error(req, 503, code, msg);
        return;
    }
    len = strlen(body);
    tr_http_respond_extra(req, 503, "application/json", "Retry-After: 5\r\n", body, len);
    free(body);
}

/*
 * Reads Last-Event-ID (the header, or ?last_event_id= for clients that
 * cannot set headers): 0 when absent and *id set; -1 after answering 400.
 */
static int last_event_id(struct tr_http_req *req, bool *have, uint64_t *id)
{
    char q[32];
    struct tr_str h = tr_http_req_header(req, "last-event-id");
    *have = false;
    if (h.p == NULL && tr_http_req_query(req, "last_event_id", q, sizeof(q)))
        h = tr_str_c(q);
    else if (h.p == NULL && tr_http_req_query_string(req).len > 0 &&
             strstr(tr_http_req_query_string(req).p, "last_event_id=") != NULL)
        h = TR_STR("x"); /* present but too long or not text: garbage */
    if (h.p == NULL)
        return 0;
    while (h.len > 0 && (h.p[h.len - 1] == ' ' || h.p[h.len - 1] == '\t'))
        h.len--;
    uint64_t v = 0;
    bool ok = h.len > 0 && h.len <= 20;
    for (size_t i = 0; ok && i < h.len; i++) {
        unsigned d = (unsigned)(h.p[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            ok = false;
        else
            v = v * 10 + d;
    }
    if (!ok) {
        tr_http_respond_error(req, 400, "bad_last_event_id",
                              "Last-Event-ID must be the id of an event of this stream "
                              "(a decimal number)");
        return -1;
    }
    *have = true;
    *id = v;
    return 0;
}

static struct ev_conn *conn_open(struct events *ev, struct tr_http_req *req)
{
    if (ev->n_conns >= ev->max_sse || !tr_http_req_may_hold(req)) {
        ev->n_refused++;
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "%u event streams are open, the most this scheduler serves (--max-sse); "
                 "retry later",
                 ev->n_conns);
        refuse_503(req, "too_many_streams", msg);
        return NULL;
    }
    struct ev_conn *c = tr_calloc(1, sizeof(*c));
    if (c == NULL) {
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return NULL;
    }
    c->ev = ev;
    c->since_ms = uv_now(ev->loop);
    c->st = tr_http_stream_start(req, "text/event-stream; charset=utf-8", NULL, on_gone,
                                 on_drained, c);
    if (c->st == NULL) {
        tr_free(c);
        tr_http_respond_error(req, 500, "out_of_memory", "cannot start the event stream");
        return NULL;
    }
    c->next = ev->conns;
    if (ev->conns)
        ev->conns->prev = c;
    ev->conns = c;
    ev->n_conns++;
    return c;
}

struct stored_run
{
    char state[16];
    char pipeline[128];
    char *error;
};

static int stored_run_cb(const struct tr_run_rec *rec, void *arg)
{
    struct stored_run *s = arg;
    snprintf(s->state, sizeof(s->state), "%s", rec->state ? rec->state : "");
    snprintf(s->pipeline, sizeof(s->pipeline), "%s", rec->pipeline ? rec->pipeline : "");
    s->error = rec->error ? tr_strdup(rec->error) : NULL;
    return 0;
}

/* A run only the state still knows (finished long ago): its final event, then the end. */
static void stored_run_events(struct events *ev, struct tr_http_req *req, const char *id,
                              bool have_last)
{
    struct stored_run s = {{0}, {0}, NULL};
    if (tr_state_get_run(ev->state, id, stored_run_cb, &s) != 0 || s.state[0] == '\0' ||
        !tenant_sees(ev->api, req, TENANT_PIPELINE, s.pipeline)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "no run '%.100s'", id);
        tr_http_respond_error(req, 404, "not_found", msg);
        tr_free(s.error);
        return;
    }
    if (have_last) {
        tr_http_respond(req, 204, NULL, NULL, 0); /* it had the end already */
        tr_free(s.error);
        return;
    }
    struct ev_conn *c = conn_open(ev, req);
    if (c != NULL) {
        struct tr_buf d, f;
        tr_buf_init(&d, 0);
        tr_buf_init(&f, 0);
        if (run_json(&d, id, s.pipeline, s.state, s.error) == 0 && frame(&f, 0, "run", &d) == 0)
            if (tr_http_stream_write(c->st, f.buf, f.len) < 0)
                tr_debug("cannot write a stored run's event");
        tr_buf_release(&d);
        tr_buf_release(&f);
        conn_end(c);
    }
    tr_free(s.error);
}

void h_run_events(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    struct events *ev = &a->ev;
    ev->api = a;
    struct tr_str idp = tr_http_req_param(req, "id");
    char id[64];
    if (idp.len == 0 || idp.len >= sizeof(id)) {
        tr_http_respond_error(req, 404, "not_found", "no such run");
        return;
    }
    memcpy(id, idp.p, idp.len);
    id[idp.len] = '\0';
    bool have = false;
    uint64_t last = 0;
    if (last_event_id(req, &have, &last) < 0)
        return;
    struct run *r = run_find(ev->core, id);
    /* Another tenant's run is answered as the state would answer an unknown id. */
    if (r == NULL || !tenant_sees(a, req, TENANT_PIPELINE, r->pipe->def->name)) {
        stored_run_events(ev, req, id, have);
        return;
    }
    bool same_epoch = have && (last >> 32) == *ev->epoch;
    uint64_t seq = last & 0xffffffffu;
    if (same_epoch && seq > r->ev_seq) {
        tr_http_respond_error(req, 400, "bad_last_event_id",
                              "Last-Event-ID names an event this run has not had");
        return;
    }
    if (same_epoch && seq == r->ev_seq && run_is_final(r)) {
        tr_http_respond(req, 204, NULL, NULL, 0); /* it has had the end: stop reconnecting */
        return;
    }
    struct ev_run *er = r->ev;
    if (er == NULL) {
        er = tr_calloc(1, sizeof(*er));
        if (er == NULL) {
            tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
            return;
        }
        er->run = r;
        ring_init(&er->ring, EV_RUN_EVENTS, EV_RUN_BYTES, r->ev_seq);
        er->ring.total = &ev->logs_bytes;
        r->ev = er;
    }
    struct ev_conn *c = conn_open(ev, req);
    if (c == NULL) {
        if (er->n_watchers == 0 && er->ring.n == 0)
            er_free(ev, er);
        return;
    }
    c->er = er;
    c->fresh = !same_epoch;
    c->resume = seq;
    c->wnext = er->watchers;
    if (er->watchers)
        er->watchers->wprev = c;
    er->watchers = c;
    er->n_watchers++;
    mark_dirty(ev, er);
}

void h_events(struct tr_http_req *req, void *arg)
{
    struct api *a = arg;
    struct events *ev = &a->ev;
    ev->api = a;
    bool have = false;
    uint64_t last = 0;
    if (last_event_id(req, &have, &last) < 0)
        return;
    char pipeline[128] = "", state[16] = "";
    struct tr_str qs = tr_http_req_query_string(req);
    if ((!tr_http_req_query(req, "pipeline", pipeline, sizeof(pipeline)) &&
         qs.len > 0 && strstr(qs.p, "pipeline=") != NULL) ||
        (!tr_http_req_query(req, "state", state, sizeof(state)) && qs.len > 0 &&
         strstr(qs.p, "state=") != NULL)) {
        tr_http_respond_error(req, 400, "invalid_request",
                              "'pipeline' or 'state' is too long or not text");
        return;
    }
    if (state[0] != '\0' && tr_run_state_parse(state) < 0) {
        tr_http_respond_error(req, 400, "invalid_request",
                              "'state' must be a run state (queued, running, succeeded, "
                              "failed, cancelled)");
        return;
    }
    bool same_epoch = have && (last >> 32) == *ev->epoch;
    if (same_epoch && (last & 0xffffffffu) > ev->all_seq) {
        tr_http_respond_error(req, 400, "bad_last_event_id",
                              "Last-Event-ID names an event this stream has not had");
        return;
    }
    if (ev->all == NULL) {
        ev->all = tr_calloc(1, sizeof(*ev->all));
        if (ev->all == NULL) {
            tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
            return;
        }
        ring_init(ev->all, EV_ALL_EVENTS, EV_ALL_BYTES, ev->all_seq);
    }
    /* The caller's tenant, read before conn_open: the stream takes over the
     * connection and frees the request. */
    char tenant[128] = "";
    if (auth_enabled(a->auth))
        snprintf(tenant, sizeof(tenant), "%s", auth_tenant(req));
    struct ev_conn *c = conn_open(ev, req);
    if (c == NULL)
        return;
    c->fresh = !same_epoch;
    c->resume = last & 0xffffffffu;
    memcpy(c->pipeline, pipeline, sizeof(pipeline));
    memcpy(c->state, state, sizeof(state));
    if (tenant[0] != '\0')
        snprintf(c->tenant, sizeof(c->tenant), "%s", tenant);
    ev->all_dirty = true;
}

int events_metrics(const struct events *ev, char **text, size_t *len)
{
    struct tr_buf b;
    tr_buf_init(&b, 0);
    int rc = tr_buf_add(&b, *text, *len);
    if (rc == 0)
        rc = tr_buf_addf(
            &b,
            "# HELP trellis_event_streams Open event streams (SSE).\n"
            "# TYPE trellis_event_streams gauge\ntrellis_event_streams %u\n"
            "# HELP trellis_events_sent_total Events written to event stream clients.\n"
            "# TYPE trellis_events_sent_total counter\ntrellis_events_sent_total %llu\n"
            "# HELP trellis_event_clients_dropped_total Clients dropped for falling behind.\n"
            "# TYPE trellis_event_clients_dropped_total counter\n"
            "trellis_event_clients_dropped_total %llu\n"
            "# HELP trellis_event_streams_refused_total Streams refused at --max-sse.\n"
            "# TYPE trellis_event_streams_refused_total counter\n"
            "trellis_event_streams_refused_total %llu\n",
            ev->n_conns, (unsigned long long)ev->n_sent, (unsigned long long)ev->n_slow,
            (unsigned long long)ev->n_refused);
    const struct webhooks *wh = ev->wh;
    if (rc == 0 && wh != NULL)
        rc = tr_buf_addf(&b,
                         "# HELP trellis_webhook_deliveries_total Webhook deliveries by outcome.\n"
                         "# TYPE trellis_webhook_deliveries_total counter\n"
                         "trellis_webhook_deliveries_total{outcome=\"delivered\"} %llu\n"
                         "trellis_webhook_deliveries_total{outcome=\"failed\"} %llu\n"
                         "trellis_webhook_deliveries_total{outcome=\"dropped\"} %llu\n"
                         "# HELP trellis_webhook_retries_total Webhook tries after a failure.\n"
                         "# TYPE trellis_webhook_retries_total counter\n"
                         "trellis_webhook_retries_total %llu\n",
                         (unsigned long long)wh->n_delivered, (unsigned long long)wh->n_failed,
                         (unsigned long long)wh->n_dropped, (unsigned long long)wh->n_retried);
    if (rc < 0) {
        tr_buf_release(&b);
        return rc;
    }
    tr_free(*text);
    *text = tr_buf_detach(&b, len);
    tr_buf_release(&b);
    return *text != NULL ? 0 : TR_ENOMEM;
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

void events_init(struct events *ev, uv_loop_t *loop, struct core *core, struct tr_state *state,
                 const uint64_t *epoch, uint32_t max_sse, size_t queue_max)
{
    memset(ev, 0, sizeof(*ev));
    ev->loop = loop;
    ev->core = core;
    ev->state = state;
    ev->epoch = epoch;
    ev->max_sse = max_sse;
    ev->queue_max = queue_max;
    ev->obs = (struct run_observer){ev, obs_task, obs_run, obs_logs, obs_freed, obs_delta};
    core->run_obs = &ev->obs;
    uv_timer_init(loop, &ev->heartbeat);
    ev->heartbeat.data = ev;
    uv_timer_start(&ev->heartbeat, on_heartbeat, EV_HEARTBEAT_MS, EV_HEARTBEAT_MS);
    ev->open = true;
}

void events_release(struct events *ev)
{
    if (!ev->open)
        return;
    ev->open = false;
    while (ev->conns != NULL)
        conn_end(ev->conns);
    size_t it = 0;
    struct run *r;
    while ((r = tr_hmap_next(&ev->core->runs, &it)) != NULL) {
        if (r->ev != NULL)
            er_free(ev, r->ev);
    }
    ev->dirty = NULL;
    ev->core->run_obs = NULL;
    if (ev->all != NULL) {
        ring_release(ev->all);
        tr_free(ev->all);
        ev->all = NULL;
    }
    uv_close((uv_handle_t *)&ev->heartbeat, NULL);
}
