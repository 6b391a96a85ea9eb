/*
 * fake_scheduler.c - a scripted stand-in for trellis-scheduler's worker
 * side, used by tests/e2e/test_worker.sh to drive the real trellis-worker.
 *
 * It binds a ROUTER on tcp://127.0.0.1:0, prints {"type":"PORT","port":N},
 * then runs the script (a file, or stdin with "-") one command per line.
 * Every message the worker sends is printed on stdout as one JSON line
 * ({"type":"RESULT","id":3,"ok":true,"output":...}), so the test checks
 * them afterwards. Unless told otherwise it behaves like a scheduler:
 * WELCOME for every HELLO, HEARTBEAT every interval, PIPELINE for every
 * PIPELINE_GET of a registered pipeline (an error for an unknown digest),
 * and every LLM call reservation granted (the batched CALL op "budget").
 *
 * Commands (options are key=value, JSON values without spaces):
 *   heartbeat MS                 interval in WELCOME and of our HEARTBEATs (200)
 *   heartbeats on|off            stop sending HEARTBEAT (and answering anything)
 *   pipeline NAME FILE           register FILE's source under NAME
 *   pipeline-lie NAME FILE OTHER advertise FILE's digest, send OTHER's source
 *   pipeline-unknown NAME        a digest the scheduler has no source for
 *   hold-pipelines on|off        keep PIPELINE_GET unanswered while on
 *   release-pipelines            answer the held PIPELINE_GETs
 *   task ID PIPE TASK [args=JSON] [params=JSON] [timeout=S] [attempt=N] [index=N] [run=R]
 *   tasks FIRST COUNT PIPE TASK [options as for task]
 *   cancel ID [REASON]
 *   bye REASON                   send BYE
 *   send-random N                a frame of N random bytes
 *   send-truncated               a valid TASK frame cut in half
 *   expect TYPE SECONDS          wait for one more message of TYPE than consumed so far
 *   drain TYPE                   count every message of TYPE received so far as consumed
 *   wait-results SECONDS ID...   wait for a RESULT for each id
 *   wait-results-range SECONDS FIRST COUNT
 *   sleep SECONDS                keep serving meanwhile
 * A failed wait prints {"type":"FAIL",...} and exits 1; the end of the
 * script exits 0.
 */
#include "lib/base/base.h"

#include <jansson.h>
#include <unistd.h>
#include <zmq.h>

#include "lib/base/alloc.h"
#include "lib/wire/mp_json.h"
#include "lib/wire/mp_read.h"
#include "lib/lua/pipeline.h"
#include "lib/wire/proto.h"

#define MAX_PIPES 32
#define MAX_HELD 64
#define EPOCH 7

struct src
{
    char name[64];
    char file[64];   /* basename of the file, sent as PIPELINE's name */
    char digest[65];
    char *source; /* NULL: unknown to this scheduler */
    size_t len;
};

struct fake
{
    void *ctx;
    void *router;
    char ident[256];                 /* the worker's routing id (from its last HELLO) */
    size_t ident_len;
    uint32_t hb_ms;
    bool heartbeats;                 /* send HEARTBEAT and answer messages */
    bool hold;                       /* keep PIPELINE_GET unanswered */
    uint64_t next_hb_ns;
    struct src pipes[MAX_PIPES];
    uint32_t n_pipes;
    char held[MAX_HELD][65];
    uint32_t n_held;
    uint32_t seen[TR_MSG_TYPE_MAX + 1];
    uint32_t consumed[TR_MSG_TYPE_MAX + 1];
    uint64_t *results;               /* ids of RESULTs received */
    size_t n_results;
    size_t cap_results;
    struct tr_proto_decoder dec;
    msgpack_sbuffer sb;
};

static double now_s(void)
{
    return (double)tr_mono_ns() / 1e9;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s != NULL) {
        printf("%s\n", s);
        fflush(stdout);
        free(s);
    }
    json_decref(j);
}

static void fail(const char *what)
{
    print_json(json_pack("{s:s, s:s}", "type", "FAIL", "what", what));
    fprintf(stderr, "fake_scheduler: %s\n", what);
    exit(1);
}

static json_t *jstr(struct tr_str s)
{
    return json_stringn_nocheck(s.p, s.len);
}

struct fake;
static void grant_budget(struct fake *f, const struct tr_msg_call *c);

static void send_msg(struct fake *f, const struct tr_msg *m)
{
    if (f->ident_len == 0)
        return;
    msgpack_sbuffer_clear(&f->sb);
    if (tr_proto_encode(&f->sb, m) < 0)
        fail("cannot encode a message");
    zmq_send(f->router, f->ident, f->ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(f->router, f->sb.data, f->sb.size, ZMQ_DONTWAIT);
}

static struct src *find_digest(struct fake *f, struct tr_str d)
{
    for (uint32_t i = 0; i < f->n_pipes; i++) {
        if (d.len == 64 && memcmp(f->pipes[i].digest, d.p, 64) == 0)
            return &f->pipes[i];
    }
    return NULL;
}

static void answer_pipeline(struct fake *f, const char *digest)
{
    struct tr_msg m = {.type = TR_MSG_PIPELINE};
    m.u.pipeline.digest = (struct tr_str){digest, 64};
    struct src *s = find_digest(f, m.u.pipeline.digest);
    if (s != NULL && s->source != NULL) {
        m.u.pipeline.source = (struct tr_str){s->source, s->len};
        m.u.pipeline.name = tr_str_c(s->file);
    }
    else
        m.u.pipeline.error = TR_STR("unknown pipeline digest");
    send_msg(f, &m);
}

/* Prints one message from the worker and plays the scheduler's part. */
static void on_message(struct fake *f, const void *ident, size_t ident_len, const void *data,
                       size_t len)
{
    struct tr_msg m;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_proto_decode(&f->dec, data, len, &m, &err) < 0) {
        print_json(json_pack("{s:s, s:s}", "type", "BAD", "why", err.msg));
        return;
    }
    f->seen[m.type]++;
    json_t *j = json_pack("{s:s}", "type", tr_msg_type_name(m.type));
    switch (m.type) {
    case TR_MSG_HELLO: {
        const struct tr_msg_hello *h = &m.u.hello;
        json_t *labels = json_object();
        for (uint32_t i = 0; i < h->n_labels; i++) {
            char k[128];
            snprintf(k, sizeof(k), "%.*s", (int)TR_MIN(h->labels[i].key.len, 120u),
                     h->labels[i].key.p);
            json_object_set_new(labels, k, jstr(h->labels[i].value));
        }
        json_object_set_new(j, "id", jstr(h->worker_id));
        json_object_set_new(j, "ident", json_stringn_nocheck(ident, ident_len));
        json_object_set_new(j, "pool", jstr(h->pool));
        json_object_set_new(j, "slots", json_integer(h->slots));
        json_object_set_new(j, "gpus", json_integer(h->gpus));
        json_object_set_new(j, "cpus", json_integer(h->cpus));
        json_object_set_new(j, "mem_mb", json_integer((json_int_t)h->mem_mb));
        json_object_set_new(j, "version", jstr(h->version));
        json_object_set_new(j, "labels", labels);
        if (ident_len > 0 && ident_len <= sizeof(f->ident)) {
            memcpy(f->ident, ident, ident_len);
            f->ident_len = ident_len;
        }
        if (f->heartbeats) {
            struct tr_msg w = {.type = TR_MSG_WELCOME};
            w.u.welcome.heartbeat_ms = f->hb_ms;
            w.u.welcome.epoch = EPOCH;
            send_msg(f, &w);
        }
        break;
    }
    case TR_MSG_RESULT: {
        const struct tr_msg_result *r = &m.u.result;
        json_t *logs = json_array();
        for (uint32_t i = 0; i < r->n_logs; i++)
            json_array_append_new(logs, jstr(r->logs[i]));
        json_t *out = r->output.len ? tr_mp_bytes_to_json(r->output.p, r->output.len, &err)
                                    : json_null();
        json_object_set_new(j, "id", json_integer((json_int_t)r->id));
        json_object_set_new(j, "epoch", json_integer((json_int_t)r->epoch));
        json_object_set_new(j, "attempt", json_integer(r->attempt));
        json_object_set_new(j, "ok", json_boolean(r->ok));
        json_object_set_new(j, "output", out ? out : json_string("<undecodable>"));
        json_object_set_new(j, "error", jstr(r->error));
        json_object_set_new(j, "timed_out", json_boolean(r->timed_out));
        json_object_set_new(j, "cancelled", json_boolean(r->cancelled));
        json_object_set_new(j, "started_at", json_real(r->started_at));
        json_object_set_new(j, "finished_at", json_real(r->finished_at));
        json_object_set_new(j, "logs", logs);
        if (r->usage.len > 0) {
            json_t *usage = tr_mp_bytes_to_json(r->usage.p, r->usage.len, &err);
            json_object_set_new(j, "usage", usage ? usage : json_string("<undecodable>"));
        }
        if (f->n_results == f->cap_results) {
            f->cap_results = f->cap_results ? f->cap_results * 2 : 1024;
            f->results = tr_reallocarray(f->results, f->cap_results, sizeof(*f->results));
            if (f->results == NULL)
                fail("out of memory");
        }
        f->results[f->n_results++] = r->id;
        break;
    }
    case TR_MSG_LOG: {
        json_t *logs = json_array();
        for (uint32_t i = 0; i < m.u.log.n_logs; i++)
            json_array_append_new(logs, jstr(m.u.log.logs[i]));
        json_object_set_new(j, "id", json_integer((json_int_t)m.u.log.id));
        json_object_set_new(j, "logs", logs);
        break;
    }
    case TR_MSG_PIPELINE_GET: {
        struct tr_str d = m.u.pipeline_get.digest;
        json_object_set_new(j, "digest", jstr(d));
        if (d.len == 64 && f->hold && f->n_held < MAX_HELD) {
            memcpy(f->held[f->n_held], d.p, 64);
            f->held[f->n_held++][64] = '\0';
        } else if (d.len == 64 && f->heartbeats) {
            char dg[65];
            memcpy(dg, d.p, 64);
            dg[64] = '\0';
            answer_pipeline(f, dg);
        }
        break;
    }
    case TR_MSG_CALL:
        json_object_set_new(j, "op", jstr(m.u.call.op));
        if (tr_str_eq(m.u.call.op, "budget") && f->heartbeats)
            grant_budget(f, &m.u.call);
        break;
    case TR_MSG_BYE:
        json_object_set_new(j, "reason", jstr(m.u.bye.reason));
        break;
    default:
        break;
    }
    print_json(j);
}

/* Grants every reservation of a budget CALL (scheduler/budgets.c has the format:
 * [settlements, reports, reservations] -> [[seq, 0, id, 0, "fail", ""], ...]). */
static void grant_budget(struct fake *f, const struct tr_msg_call *c)
{
    static uint64_t next_id = 1;
    struct tr_mp_rd r;
    tr_mp_rd_init(&r, c->body.p, c->body.len);
    if (tr_mp_rd_array(&r) != 3)
        return;
    tr_mp_rd_skip(&r);
    tr_mp_rd_skip(&r);
    uint32_t n = tr_mp_rd_array(&r);
    if (r.err != 0 || n == 0)
        return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n && r.err == 0; i++) {
        uint32_t k = tr_mp_rd_array(&r);
        uint64_t seq = tr_mp_rd_uint(&r);
        for (uint32_t x = 1; x < k; x++)
            tr_mp_rd_skip(&r);
        msgpack_pack_array(&pk, 6);
        msgpack_pack_uint64(&pk, seq);
        msgpack_pack_uint8(&pk, 0);
        msgpack_pack_uint64(&pk, next_id++);
        msgpack_pack_double(&pk, 0);
        msgpack_pack_str_with_body(&pk, "fail", 4);
        msgpack_pack_str_with_body(&pk, "", 0);
    }
    struct tr_msg m = {.type = TR_MSG_CALL_REPLY};
    m.u.call_reply.id = c->id;
    m.u.call_reply.status = 200;
    m.u.call_reply.body = (struct tr_str){sb.data, sb.size};
    send_msg(f, &m);
    msgpack_sbuffer_destroy(&sb);
}

/* Serves for up to ms milliseconds. */
static void serve(struct fake *f, long ms)
{
    uint64_t now = tr_mono_ns();
    if (f->heartbeats && now >= f->next_hb_ns) {
        struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
        send_msg(f, &hb);
        f->next_hb_ns = now + (uint64_t)f->hb_ms * 1000000u;
    }
    zmq_pollitem_t item = {f->router, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, ms) <= 0)
        return;
    for (;;) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, f->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return;
        }
        zmq_msg_init(&body);
        if (zmq_msg_more(&id) && zmq_msg_recv(&body, f->router, ZMQ_DONTWAIT) >= 0)
            on_message(f, zmq_msg_data(&id), zmq_msg_size(&id), zmq_msg_data(&body),
                       zmq_msg_size(&body));
        zmq_msg_close(&body);
        zmq_msg_close(&id);
    }
}

static bool have_result(struct fake *f, uint64_t id)
{
    for (size_t i = 0; i < f->n_results; i++) {
        if (f->results[i] == id)
            return true;
    }
    return false;
}

/* ====================================================================== */
/* Script                                                                 */
/* ====================================================================== */

static int msg_type_of(const char *name)
{
    for (int t = 1; t <= TR_MSG_TYPE_MAX; t++) {
        if (strcmp(tr_msg_type_name(t), name) == 0)
            return t;
    }
    return -1;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    struct tr_buf b;
    tr_buf_init(&b, 0);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
        if (tr_buf_add(&b, chunk, n) < 0)
            break;
    }
    fclose(fp);
    return tr_buf_detach(&b, len);
}

static struct src *add_pipe(struct fake *f, const char *name)
{
    if (f->n_pipes == MAX_PIPES)
        fail("too many pipelines");
    struct src *s = &f->pipes[f->n_pipes++];
    snprintf(s->name, sizeof(s->name), "%s", name);
    return s;
}

static struct src *pipe_named(struct fake *f, const char *name)
{
    for (uint32_t i = 0; i < f->n_pipes; i++) {
        if (strcmp(f->pipes[i].name, name) == 0)
            return &f->pipes[i];
    }
    fail("unknown pipeline name in script");
    return NULL;
}

/* Packs a JSON text (or dflt when NULL) as msgpack into buf. */
static void json_to_mp(const char *text, const char *dflt, msgpack_sbuffer *buf)
{
    json_error_t jerr;
    json_t *j = json_loads(text ? text : dflt, JSON_DECODE_ANY, &jerr);
    if (j == NULL)
        fail("bad JSON in script");
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    if (tr_json_to_mp(j, &pk) < 0)
        fail("cannot pack JSON");
    json_decref(j);
}

static const char *opt(char **tok, int ntok, int from, const char *key)
{
    size_t kl = strlen(key);
    for (int i = from; i < ntok; i++) {
        if (strncmp(tok[i], key, kl) == 0 && tok[i][kl] == '=')
            return tok[i] + kl + 1;
    }
    return NULL;
}

/* Sends TASK id for pipeline tok[pi], task tok[pi+1], options from tok[pi+2]. */
static void send_task(struct fake *f, uint64_t id, char **tok, int ntok, int pi)
{
    if (pi + 1 >= ntok)
        fail("task needs a pipeline and a task name");
    struct src *s = pipe_named(f, tok[pi]);
    msgpack_sbuffer params, args;
    msgpack_sbuffer_init(&params);
    msgpack_sbuffer_init(&args);
    json_to_mp(opt(tok, ntok, pi + 2, "params"), "{}", &params);
    json_to_mp(opt(tok, ntok, pi + 2, "args"), "[]", &args);
    const char *timeout = opt(tok, ntok, pi + 2, "timeout");
    const char *attempt = opt(tok, ntok, pi + 2, "attempt");
    const char *index = opt(tok, ntok, pi + 2, "index");
    const char *run = opt(tok, ntok, pi + 2, "run");
    struct tr_msg m = {.type = TR_MSG_TASK};
    struct tr_msg_task *t = &m.u.task;
    t->id = id;
    t->epoch = EPOCH;
    t->attempt = attempt ? (uint32_t)strtoul(attempt, NULL, 10) : 1;
    t->index = index ? (uint32_t)strtoul(index, NULL, 10) : 0;
    t->run_id = tr_str_c(run ? run : "run-1");
    t->task = tr_str_c(tok[pi + 1]);
    t->digest = (struct tr_str){s->digest, 64};
    t->params = (struct tr_str){params.data, params.size};
    t->args = (struct tr_str){args.data, args.size};
    t->timeout = timeout ? strtod(timeout, NULL) : 0;
    send_msg(f, &m);
    msgpack_sbuffer_destroy(&params);
    msgpack_sbuffer_destroy(&args);
}

static void wait_for(struct fake *f, double secs, bool (*done)(struct fake *, void *), void *arg,
                     const char *what)
{
    double end = now_s() + secs;
    while (!done(f, arg)) {
        if (now_s() > end)
            fail(what);
        serve(f, 10);
    }
}

static bool got_type(struct fake *f, void *arg)
{
    int t = *(int *)arg;
    return f->seen[t] > f->consumed[t];
}

struct id_set
{
    uint64_t *ids;
    size_t n;
};

static bool got_results(struct fake *f, void *arg)
{
    struct id_set *s = arg;
    for (size_t i = 0; i < s->n; i++) {
        if (!have_result(f, s->ids[i]))
            return false;
    }
    return true;
}

static void run_line(struct fake *f, char *line)
{
    char *tok[64];
    int ntok = 0;
    char *save = NULL;
    for (char *p = strtok_r(line, " \t\r\n", &save); p != NULL && ntok < 64;
         p = strtok_r(NULL, " \t\r\n", &save))
        tok[ntok++] = p;
    if (ntok == 0 || tok[0][0] == '#')
        return;
    const char *cmd = tok[0];
    char what[512];
    snprintf(what, sizeof(what), "timed out: %s%s%s", cmd, ntok > 1 ? " " : "",
             ntok > 1 ? tok[1] : "");
    if (strcmp(cmd, "heartbeat") == 0 && ntok == 2) {
        f->hb_ms = (uint32_t)strtoul(tok[1], NULL, 10);
    } else if (strcmp(cmd, "heartbeats") == 0 && ntok == 2) {
        f->heartbeats = strcmp(tok[1], "on") == 0;
    } else if (strcmp(cmd, "pipeline") == 0 && ntok == 3) {
        struct src *s = add_pipe(f, tok[1]);
        s->source = read_file(tok[2], &s->len);
        if (s->source == NULL)
            fail("cannot read pipeline file");
        tr_sha256_hex(s->source, s->len, s->digest);
        const char *base = strrchr(tok[2], '/');
        snprintf(s->file, sizeof(s->file), "%s", base ? base + 1 : tok[2]);
    } else if (strcmp(cmd, "pipeline-lie") == 0 && ntok == 4) {
        struct src *s = add_pipe(f, tok[1]);
        size_t len;
        char *claimed = read_file(tok[2], &len);
        s->source = read_file(tok[3], &s->len);
        if (claimed == NULL || s->source == NULL)
            fail("cannot read pipeline file");
        tr_sha256_hex(claimed, len, s->digest);
        tr_free(claimed);
    } else if (strcmp(cmd, "pipeline-unknown") == 0 && ntok == 2) {
        struct src *s = add_pipe(f, tok[1]);
        tr_sha256_hex(tok[1], strlen(tok[1]), s->digest);
    } else if (strcmp(cmd, "hold-pipelines") == 0 && ntok == 2) {
        f->hold = strcmp(tok[1], "on") == 0;
    } else if (strcmp(cmd, "release-pipelines") == 0) {
        for (uint32_t i = 0; i < f->n_held; i++)
            answer_pipeline(f, f->held[i]);
        f->n_held = 0;
        f->hold = false;
    } else if (strcmp(cmd, "task") == 0 && ntok >= 4) {
        send_task(f, strtoull(tok[1], NULL, 10), tok, ntok, 2);
    } else if (strcmp(cmd, "tasks") == 0 && ntok >= 5) {
        uint64_t first = strtoull(tok[1], NULL, 10);
        uint64_t count = strtoull(tok[2], NULL, 10);
        for (uint64_t i = 0; i < count; i++)
            send_task(f, first + i, tok, ntok, 3);
    } else if (strcmp(cmd, "cancel") == 0 && ntok >= 2) {
        struct tr_msg m = {.type = TR_MSG_CANCEL};
        m.u.cancel.id = strtoull(tok[1], NULL, 10);
        m.u.cancel.reason = tr_str_c(ntok > 2 ? tok[2] : "");
        send_msg(f, &m);
    } else if (strcmp(cmd, "bye") == 0) {
        struct tr_msg m = {.type = TR_MSG_BYE};
        m.u.bye.reason = tr_str_c(ntok > 1 ? tok[1] : "unknown worker: say HELLO");
        send_msg(f, &m);
    } else if (strcmp(cmd, "send-random") == 0 && ntok == 2) {
        size_t n = strtoul(tok[1], NULL, 10);
        unsigned char *p = tr_malloc(n ? n : 1);
        if (p == NULL)
            fail("out of memory");
        for (size_t i = 0; i < n; i++)
            p[i] = (unsigned char)(rand() & 0xff);
        zmq_send(f->router, f->ident, f->ident_len, ZMQ_SNDMORE);
        zmq_send(f->router, p, n, 0);
        tr_free(p);
    } else if (strcmp(cmd, "send-truncated") == 0) {
        struct tr_msg m = {.type = TR_MSG_TASK};
        m.u.task.id = 999999;
        m.u.task.task = TR_STR("truncated");
        m.u.task.digest = TR_STR("00000000000000000000000000000000"
                                 "00000000000000000000000000000000");
        msgpack_sbuffer_clear(&f->sb);
        if (tr_proto_encode(&f->sb, &m) < 0)
            fail("cannot encode");
        zmq_send(f->router, f->ident, f->ident_len, ZMQ_SNDMORE);
        zmq_send(f->router, f->sb.data, f->sb.size / 2, 0);
    } else if (strcmp(cmd, "expect") == 0 && ntok == 3) {
        int t = msg_type_of(tok[1]);
        if (t < 0)
            fail("unknown message type in expect");
        wait_for(f, strtod(tok[2], NULL), got_type, &t, what);
        f->consumed[t]++;
    } else if (strcmp(cmd, "drain") == 0 && ntok == 2) {
        int t = msg_type_of(tok[1]);
        if (t < 0)
            fail("unknown message type in drain");
        serve(f, 0);
        f->consumed[t] = f->seen[t];
    } else if (strcmp(cmd, "wait-results") == 0 && ntok >= 3) {
        uint64_t ids[60];
        struct id_set s = {ids, 0};
        for (int i = 2; i < ntok && s.n < 60; i++)
            ids[s.n++] = strtoull(tok[i], NULL, 10);
        wait_for(f, strtod(tok[1], NULL), got_results, &s, what);
    } else if (strcmp(cmd, "wait-results-range") == 0 && ntok == 4) {
        uint64_t first = strtoull(tok[2], NULL, 10);
        size_t count = strtoul(tok[3], NULL, 10);
        uint64_t *ids = tr_calloc(count ? count : 1, sizeof(*ids));
        if (ids == NULL)
            fail("out of memory");
        for (size_t i = 0; i < count; i++)
            ids[i] = first + i;
        struct id_set s = {ids, count};
        wait_for(f, strtod(tok[1], NULL), got_results, &s, what);
        tr_free(ids);
    } else if (strcmp(cmd, "sleep") == 0 && ntok == 2) {
        double end = now_s() + strtod(tok[1], NULL);
        while (now_s() < end)
            serve(f, 10);
    } else {
        snprintf(what, sizeof(what), "bad script line: %s", cmd);
        fail(what);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fake_scheduler SCRIPT|-\n");
        return 2;
    }
    FILE *script = strcmp(argv[1], "-") == 0 ? stdin : fopen(argv[1], "r");
    if (script == NULL) {
        fprintf(stderr, "fake_scheduler: cannot open '%s'\n", argv[1]);
        return 2;
    }
    srand((unsigned)getpid());
    static struct fake f;
    f.hb_ms = 200;
    f.heartbeats = true;
    tr_proto_decoder_init(&f.dec, NULL);
    msgpack_sbuffer_init(&f.sb);
    f.ctx = zmq_ctx_new();
    f.router = zmq_socket(f.ctx, ZMQ_ROUTER);
    int one = 1, zero = 0, hwm = 1000000;
    zmq_setsockopt(f.router, ZMQ_ROUTER_HANDOVER, &one, sizeof(one));
    zmq_setsockopt(f.router, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(f.router, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(f.router, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (zmq_bind(f.router, "tcp://127.0.0.1:0") != 0) {
        fprintf(stderr, "fake_scheduler: cannot bind: %s\n", zmq_strerror(errno));
        return 1;
    }
    char last[256];
    size_t sz = sizeof(last);
    zmq_getsockopt(f.router, ZMQ_LAST_ENDPOINT, last, &sz);
    const char *colon = strrchr(last, ':');
    int port = colon ? (int)strtol(colon + 1, NULL, 10) : 0;
    print_json(json_pack("{s:s, s:i}", "type", "PORT", "port", port));

    char line[8192];
    while (fgets(line, sizeof(line), script) != NULL)
        run_line(&f, line);
    if (script != stdin)
        fclose(script);
    print_json(json_pack("{s:s}", "type", "END"));
    zmq_close(f.router);
    zmq_ctx_term(f.ctx);
    for (uint32_t i = 0; i < f.n_pipes; i++)
        tr_free(f.pipes[i].source);
    tr_free(f.results);
    tr_proto_decoder_release(&f.dec);
    msgpack_sbuffer_destroy(&f.sb);
    return 0;
}
