/*
 * batch.c - the per-turn batch (batch.h): queued records, one transaction,
 * then messages and replies.
 */
#include "scheduler/batch.h"

#include <errno.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"

void batch_init(struct batch *b, struct counters *cnt)
{
    memset(b, 0, sizeof(*b));
    b->cnt = cnt;
    tr_buf_init(&b->out_bytes, 0);
    msgpack_sbuffer_init(&b->sbuf);
    b->replies_tail = &b->replies;
}

void batch_release(struct batch *b)
{
    for (size_t i = 0; i < b->n_pipes; i++) {
        tr_free((char *)b->pipes[i].name);
        tr_free((char *)b->pipes[i].version);
        tr_free((char *)b->pipes[i].digest);
    }
    tr_free(b->insts);
    tr_free(b->runs);
    tr_free(b->pipes);
    tr_free(b->sources);
    tr_free(b->cache);
    tr_free(b->out);
    tr_buf_release(&b->out_bytes);
    msgpack_sbuffer_destroy(&b->sbuf);
}

void batch_set_extra(struct batch *b, const struct batch_extra *x)
{
    b->extra = *x;
}

/* ====================================================================== */
/* Filling                                                                 */
/* ====================================================================== */

void batch_add_inst(struct batch *b, struct inst *in)
{
    if (in->dirty)
        return;
    if (TR_VEC_PUSH(b->insts, b->n_insts, b->cap_insts, in) < 0)
        oom_fatal("queueing a task result");
    in->dirty = true;
}

void batch_add_run(struct batch *b, struct run *r)
{
    if (r->dirty)
        return;
    if (TR_VEC_PUSH(b->runs, b->n_runs, b->cap_runs, r) < 0)
        oom_fatal("queueing a run");
    r->dirty = true;
}

int batch_add_pipeline(struct batch *b, const struct pipeline_entry *pe)
{
    const struct tr_pipeline_def *def = pe->def;
    struct tr_pipeline_rec rec = {
        .name = tr_strdup(def->name),
        .version = tr_strdup(def->version),
        .digest = tr_strdup(def->digest),
        .source = def->source,
        .source_len = def->source_len,
        .registered_at = tr_now(),
        .n_tasks = def->n_tasks,
    };
    bool ok = rec.name && rec.version && rec.digest;
    if (!ok || TR_VEC_PUSH(b->pipes, b->n_pipes, b->cap_pipes, rec) < 0) {
        tr_free((char *)rec.name);
        tr_free((char *)rec.version);
        tr_free((char *)rec.digest);
        return TR_ENOMEM;
    }
    return 0;
}

int batch_add_source(struct batch *b, struct pipeline_entry *pe)
{
    if (pe->stored)
        return 0;
    if (TR_VEC_PUSH(b->sources, b->n_sources, b->cap_sources, pe) < 0)
        return TR_ENOMEM;
    pe->stored = true;
    return 0;
}

int batch_add_cache(struct batch *b, const char key[65], struct inst *in)
{
    struct cache_put cp = {.in = in};
    memcpy(cp.key, key, sizeof(cp.key));
    return TR_VEC_PUSH(b->cache, b->n_cache, b->cap_cache, cp);
}

int batch_add_msg(struct batch *s, const char *ident, size_t ident_len,
                  const struct tr_msg *m)
{
    msgpack_sbuffer_clear(&s->sbuf);
    int rc = tr_proto_encode(&s->sbuf, m);
    if (rc < 0)
        return rc;
    struct outmsg om = {
        .ident_off = (uint32_t)s->out_bytes.len,
        .ident_len = (uint32_t)ident_len,
        .data_off = (uint32_t)(s->out_bytes.len + ident_len),
        .data_len = (uint32_t)s->sbuf.size,
    };
    rc = TR_VEC_RESERVE(s->out, s->cap_out, s->n_out + 1);
    if (rc < 0)
        return rc;
    rc = tr_buf_add(&s->out_bytes, ident, ident_len);
    if (rc == 0)
        rc = tr_buf_add(&s->out_bytes, s->sbuf.data, s->sbuf.size);
    if (rc < 0)
        return rc;
    s->out[s->n_out++] = om;
    return 0;
}

void batch_send(struct batch *s, struct transport *t)
{
    if (s->n_out == 0)
        return;
    for (size_t i = 0; i < s->n_out; i++) {
        const struct outmsg *om = &s->out[i];
        int rc = t == NULL ? -EHOSTUNREACH
                           : transport_send(t, s->out_bytes.buf + om->ident_off, om->ident_len,
                                            s->out_bytes.buf + om->data_off, om->data_len);
        if (rc < 0 && rc != -EHOSTUNREACH)
            tr_warn("cannot send to worker '%.*s': %s", (int)om->ident_len,
                    s->out_bytes.buf + om->ident_off, tr_strerror(rc));
        /* An unreachable worker is found dead by its heartbeats; its tasks are
         * re-queued then, so nothing is lost by dropping the message here. */
    }
    s->n_out = 0;
    tr_buf_reset(&s->out_bytes);
    if (t != NULL)
        transport_flush(t);
}

static void on_reply_abort(struct tr_http_req *req, void *arg)
{
    struct pending_reply *p = arg;
    p->req = NULL;
}

int batch_add_reply_text(struct batch *s, struct tr_http_req *req, int status, char *text)
{
    struct pending_reply *p = text ? tr_calloc(1, sizeof(*p)) : NULL;
    if (p == NULL) {
        tr_free(text);
        tr_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return TR_ENOMEM;
    }
    p->req = req;
    p->status = status;
    p->body = text;
    p->len = strlen(text);
    tr_http_req_on_abort(req, on_reply_abort, p);
    *s->replies_tail = p;
    s->replies_tail = &p->next;
    return 0;
}

int batch_add_reply(struct batch *s, struct tr_http_req *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    /* jansson's allocation and ours differ: copy so that one free fits all. */
    char *copy = text ? tr_strdup(text) : NULL;
    free(text);
    return batch_add_reply_text(s, req, status, copy);
}

/* ====================================================================== */
/* The commit                                                              */
/* ====================================================================== */

static void fill_run_rec(struct run *r, struct tr_run_rec *rec)
{
    rec->id = r->id;
    rec->pipeline = r->pipe->def->name;
    rec->version = r->pipe->def->version;
    rec->digest = r->pipe->digest;
    rec->params_json = r->params_json;
    rec->state = tr_run_state_names[r->state];
    rec->created_at = r->created_at;
    rec->started_at = r->started_at;
    rec->finished_at = r->finished_at;
    rec->output_json = r->output_json;
    rec->error = r->error;
    rec->usage_json = r->usage_json;
}

static void fill_task_rec(struct inst *in, struct tr_task_rec *rec)
{
    rec->run_id = in->run->id;
    rec->name = in->run->pipe->def->tasks[in->task].name;
    rec->index = in->index;
    rec->state = tr_task_state_names[in->state];
    rec->attempts = in->attempts;
    rec->worker = in->worker_id;
    rec->started_at = in->started_at;
    rec->finished_at = in->finished_at;
    rec->output = in->output;
    rec->output_len = in->output_len;
    rec->error = in->error;
    rec->logs = in->logs ? in->logs->buf : NULL;
    rec->cached = in->cached;
    rec->usage = in->usage;
    rec->usage_len = in->usage_len;
}

bool batch_dirty(const struct batch *s)
{
    return s->n_insts || s->n_runs || s->n_pipes || s->n_sources || s->n_cache ||
           (s->extra.dirty != NULL && s->extra.dirty(s->extra.arg));
}

/* One transaction with everything this turn changed. */
int batch_commit(struct batch *s, struct tr_state *st)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_begin(st);
    for (size_t i = 0; rc == 0 && i < s->n_sources; i++) {
        const struct tr_pipeline_def *def = s->sources[i]->def;
        rc = tr_state_put_source(st, def->digest, def->source, def->source_len);
    }
    for (size_t i = 0; rc == 0 && i < s->n_pipes; i++)
        rc = tr_state_put_pipeline(st, &s->pipes[i]);
    for (size_t i = 0; rc == 0 && i < s->n_runs; i++) {
        struct tr_run_rec rec;
        fill_run_rec(s->runs[i], &rec);
        rc = tr_state_put_run(st, &rec);
    }
    for (size_t i = 0; rc == 0 && i < s->n_insts; i++) {
        struct inst *in = s->insts[i];
        if (!tr_task_state_final(in->state) && !in->waiting)
            continue; /* a waiting approval or subrun is written too (core_flow.h) */
        struct tr_task_rec rec;
        fill_task_rec(in, &rec);
        rc = tr_state_put_task(st, &rec);
    }
    for (size_t i = 0; rc == 0 && i < s->n_cache; i++) {
        struct cache_put *cp = &s->cache[i];
        rc = tr_state_put_cache(st, cp->key, cp->in->output, cp->in->output_len);
    }
    if (rc == 0 && s->extra.put != NULL)
        rc = s->extra.put(s->extra.arg, st);
    if (rc == 0)
        rc = tr_state_commit(st, &err);
    else
        tr_state_rollback(st);
    if (rc < 0) {
        s->cnt->commit_errors++;
        if (!s->failing)
            tr_err("cannot commit state: %s (%s); dispatch paused, retrying",
                   err.msg[0] ? err.msg : tr_strerror(rc), tr_err_name(rc));
        s->failing = true;
        return rc;
    }
    if (s->failing)
        tr_info("state commits work again");
    s->failing = false;
    s->cnt->commits++;
    if (s->extra.committed != NULL)
        s->extra.committed(s->extra.arg);
    for (size_t i = 0; i < s->n_insts; i++)
        s->insts[i]->dirty = false;
    for (size_t i = 0; i < s->n_runs; i++) {
        s->runs[i]->dirty = false;
        s->runs[i]->in_memory_only = false;
    }
    for (size_t i = 0; i < s->n_pipes; i++) {
        struct tr_pipeline_rec *p = &s->pipes[i];
        tr_free((char *)p->name);
        tr_free((char *)p->version);
        tr_free((char *)p->digest);
    }
    s->n_insts = s->n_runs = s->n_pipes = 0;
    s->n_sources = s->n_cache = 0;
    return 0;
}

void batch_reply(struct batch *s)
{
    struct pending_reply *p = s->replies;
    s->replies = NULL;
    s->replies_tail = &s->replies;
    while (p != NULL) {
        struct pending_reply *next = p->next;
        if (p->req != NULL) {
            tr_http_req_on_abort(p->req, NULL, NULL);
            tr_http_respond(p->req, p->status, "application/json", p->body, p->len);
        }
        tr_free(p->body);
        tr_free(p);
        p = next;
    }
}

void batch_refuse(struct batch *s)
{
    struct pending_reply *p = s->replies;
    s->replies = NULL;
    s->replies_tail = &s->replies;
    while (p != NULL) {
        struct pending_reply *next = p->next;
        if (p->req != NULL) {
            tr_http_req_on_abort(p->req, NULL, NULL);
            tr_http_respond_error(p->req, 503, "unavailable",
                                  "the scheduler stopped before this change was durable; "
                                  "retry against the leader");
        }
        tr_free(p->body);
        tr_free(p);
        p = next;
    }
}
