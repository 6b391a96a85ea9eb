/*
 * turn.c - the end of each loop turn (schedule, commit, send, reply) and the
 * scheduler's life cycle.
 */
#include "scheduler/sched.h"
#include "scheduler/feedback.h"
#include "scheduler/sandbox.h"

#include <zmq.h>

#include "lib/base/alloc.h"

/* ====================================================================== */
/* The end of a loop turn                                                  */
/* ====================================================================== */

static void fill_run_rec(struct run *r, struct tr_run_rec *rec)
{
    rec->id = r->id;
    rec->pipeline = r->pipe->def->name;
    rec->version = r->pipe->def->version;
    rec->digest = r->pipe->digest;
    rec->params_json = r->params_json;
    rec->state = run_state_names[r->state];
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
    rec->state = inst_state_names[in->state];
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

static bool have_dirty(struct sched *s)
{
    return s->n_dirty_insts || s->n_dirty_runs || s->n_dirty_pipes || s->n_dirty_sources ||
           s->n_dirty_cache || fb_have_dirty(s);
}

/* One transaction with everything this turn changed. */
static int commit_batch(struct sched *s)
{
    struct tr_error err;
    tr_error_init(&err);
    int rc = tr_state_begin(s->state);
    for (size_t i = 0; rc == 0 && i < s->n_dirty_sources; i++) {
        const struct tr_pipeline_def *def = s->dirty_sources[i]->def;
        rc = tr_state_put_source(s->state, def->digest, def->source, def->source_len);
    }
    for (size_t i = 0; rc == 0 && i < s->n_dirty_pipes; i++)
        rc = tr_state_put_pipeline(s->state, &s->dirty_pipes[i]);
    for (size_t i = 0; rc == 0 && i < s->n_dirty_runs; i++) {
        struct tr_run_rec rec;
        fill_run_rec(s->dirty_runs[i], &rec);
        rc = tr_state_put_run(s->state, &rec);
    }
    for (size_t i = 0; rc == 0 && i < s->n_dirty_insts; i++) {
        struct inst *in = s->dirty_insts[i];
        if (!inst_state_final(in->state))
            continue;
        struct tr_task_rec rec;
        fill_task_rec(in, &rec);
        rc = tr_state_put_task(s->state, &rec);
    }
    for (size_t i = 0; rc == 0 && i < s->n_dirty_cache; i++) {
        struct cache_put *cp = &s->dirty_cache[i];
        rc = tr_state_put_cache(s->state, cp->key, cp->in->output, cp->in->output_len);
    }
    if (rc == 0)
        rc = fb_put_dirty(s);
    if (rc == 0)
        rc = tr_state_commit(s->state, &err);
    else
        tr_state_rollback(s->state);
    if (rc < 0) {
        s->m.commit_errors++;
        if (!s->commit_failing)
            tr_err("cannot commit state: %s (%s); dispatch paused, retrying",
                   err.msg[0] ? err.msg : tr_strerror(rc), tr_err_name(rc));
        s->commit_failing = true;
        if (!uv_is_active((uv_handle_t *)&s->commit_retry))
            uv_timer_start(&s->commit_retry, (uv_timer_cb)s->commit_retry.timer_cb, 200, 0);
        return rc;
    }
    if (s->commit_failing)
        tr_info("state commits work again");
    s->commit_failing = false;
    s->m.commits++;
    fb_committed(s);
    for (size_t i = 0; i < s->n_dirty_insts; i++)
        s->dirty_insts[i]->dirty = false;
    for (size_t i = 0; i < s->n_dirty_runs; i++) {
        s->dirty_runs[i]->dirty = false;
        s->dirty_runs[i]->in_memory_only = false;
    }
    for (size_t i = 0; i < s->n_dirty_pipes; i++) {
        struct tr_pipeline_rec *p = &s->dirty_pipes[i];
        tr_free((char *)p->name);
        tr_free((char *)p->version);
        tr_free((char *)p->digest);
    }
    s->n_dirty_insts = s->n_dirty_runs = s->n_dirty_pipes = 0;
    s->n_dirty_sources = s->n_dirty_cache = 0;
    return 0;
}

static void flush_replies(struct sched *s)
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

/* Answers every pending reply with 503: its change was not made durable. */
static void refuse_replies(struct sched *s)
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

/*
 * The order of one turn, after the I/O callbacks have applied what arrived:
 * schedule everything that became ready, make the turn's changes durable in
 * one transaction, and only then send (TASK, CANCEL) and answer HTTP calls.
 * Sending first would let a dependant start on a result a crash could still
 * lose, or tell a client about a run that a restart would not know.
 */
static void on_commit_retry(uv_timer_t *h);

static void end_of_turn(struct sched *s)
{
    /* A leader whose lease is in doubt, or a standby, neither commits nor
     * sends: another scheduler may be leading (leader.c). */
    if (!leader_may_act(s))
        return;
    /* A turn stopped at its byte bound goes on at once, after this turn's
     * commit and sends, through the commit retry timer (nothing to retry:
     * the commit is not failing). */
    if (!s->commit_failing && sched_dispatch_all(s))
        uv_timer_start(&s->commit_retry, on_commit_retry, 0, 0);
    if (have_dirty(s) && commit_batch(s) < 0)
        return;
    sched_send_queued(s);
    flush_replies(s);
    if (s->n_finished_in_memory > s->cfg.keep_runs)
        runs_evict(s);
}

static void on_prepare(uv_prepare_t *h)
{
    end_of_turn(h->data);
}

static void on_check(uv_check_t *h)
{
    end_of_turn(h->data);
}

static void on_commit_retry(uv_timer_t *h)
{
    struct sched *s = h->data;
    if (!leader_may_act(s))
        return;
    if (have_dirty(s) && commit_batch(s) < 0)
        return;
    end_of_turn(s);
}

static void on_reply_abort(struct tr_http_req *req, void *arg)
{
    struct pending_reply *p = arg;
    p->req = NULL;
}

int sched_queue_reply_text(struct sched *s, struct tr_http_req *req, int status, char *text)
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

int sched_queue_reply(struct sched *s, struct tr_http_req *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    /* jansson's allocation and ours differ: copy so that one free fits all. */
    char *copy = text ? tr_strdup(text) : NULL;
    free(text);
    return sched_queue_reply_text(s, req, status, copy);
}

/* ====================================================================== */
/* Life cycle                                                              */
/* ====================================================================== */

static void on_signal(uv_signal_t *h, int signum)
{
    struct sched *s = h->data;
    tr_info("signal %d: stopping", signum);
    s->stopping = true;
    uv_stop(s->loop);
}

int sched_init(struct sched *s, uv_loop_t *loop, const struct sched_config *cfg,
               struct tr_error *err)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = *cfg;
    tr_hmap_init(&s->workers);
    tr_hmap_init(&s->worker_ids);
    tr_hmap_init(&s->pools);
    tr_hmap_init(&s->dispatches);
    tr_hmap_init(&s->pipes);
    tr_hmap_init(&s->runs);
    tr_buf_init(&s->out_bytes, 0);
    msgpack_sbuffer_init(&s->sbuf);
    s->replies_tail = &s->replies;
    srand((unsigned)tr_mono_ns());

    int rc = tr_state_open(cfg->state_url, &s->state, err);
    if (rc == 0)
        rc = fb_open(s, err);
    if (rc < 0)
        return rc;

    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->timer.timer_cb = on_timer;
    uv_timer_init(loop, &s->commit_retry);
    s->commit_retry.data = s;
    s->commit_retry.timer_cb = on_commit_retry;
    uv_prepare_init(loop, &s->turn);
    s->turn.data = s;
    uv_prepare_start(&s->turn, on_prepare);
    uv_check_init(loop, &s->turn_check);
    s->turn_check.data = s;
    uv_check_start(&s->turn_check, on_check);
    uv_signal_init(loop, &s->sigint);
    uv_signal_init(loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);

    /* Before the election: a leader's recovery reads pipelines through it. */
    struct sandbox_config sc = {
        .exe = "/proc/self/exe", /* this very binary, even if its file was replaced */
        .limits = cfg->limits,
        .warm = 2,
        .max = 16,
        .grace_s = 0.5,
    };
    rc = sandbox_open(loop, &sc, &s->sandbox, err);
    if (rc < 0)
        return rc;

    /* The election's first outcome comes before the API listens (leader.c),
     * unless the API port is picked at random: then it must be bound first to
     * be advertised. */
    rc = leader_open(s, err);
    if (rc == 0 && cfg->api_port == 0 && cfg->advertise_api == NULL)
        rc = api_init(s, err);
    if (rc == 0)
        rc = leader_start(s, err);
    if (rc == 0 && s->http == NULL)
        rc = api_init(s, err);
    if (rc < 0)
        return rc;
    tr_info("scheduler ready role=%s api=%s:%d workers=%s state=%s", leader_role_name(s),
            cfg->api_host, tr_http_server_port(s->http), cfg->listen, cfg->state_url);
    return 0;
}

int sched_lead(struct sched *s, struct tr_error *err)
{
    int rc = tr_state_next_epoch(s->state, &s->epoch);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot read the scheduler epoch from the state");
    fb_reset(s);
    rc = sched_recover(s, err);
    if (rc < 0)
        return rc;
    rc = workers_init(s, err);
    if (rc < 0)
        return rc;
    tr_info("scheduler leads epoch=%llu workers=%s", (unsigned long long)s->epoch,
            s->cfg.listen);
    return 0;
}

void sched_close(struct sched *s)
{
    s->stopping = true;
    /* Whatever is still dirty gets one last chance to become durable. When
     * it cannot (the commit fails, or leadership was lost), the answers that
     * waited for that commit must not claim a change that was never kept. */
    bool kept = !have_dirty(s);
    if (!kept && s->state && leader_may_act(s) && commit_batch(s) == 0) {
        sched_send_queued(s);
        kept = true;
    }
    if (!kept)
        refuse_replies(s);
    flush_replies(s);
    waiters_close_all(s);
    api_close(s);
    /* Pending loads are answered (cancelled) while the runs and caches they
     * would touch still exist; the children are killed and reaped later. */
    sandbox_close(s->sandbox);
    s->sandbox = NULL;
    recover_close(s);
    workers_close(s);
    leader_close(s);
    size_t it = 0;
    struct run *r;
    while ((r = tr_hmap_next(&s->runs, &it)) != NULL)
        run_free(r);
    tr_hmap_release(&s->runs);
    pipes_close(s);
    tr_hmap_release(&s->pipes);
    tr_hmap_release(&s->dispatches);
    tr_free(s->dirty_insts);
    tr_free(s->dirty_runs);
    tr_free(s->dirty_pipes);
    tr_free(s->dirty_sources);
    tr_free(s->dirty_cache);
    tr_free(s->out);
    tr_free(s->timers);
    tr_buf_release(&s->out_bytes);
    msgpack_sbuffer_destroy(&s->sbuf);
    uv_close((uv_handle_t *)&s->timer, NULL);
    uv_close((uv_handle_t *)&s->commit_retry, NULL);
    uv_close((uv_handle_t *)&s->turn, NULL);
    uv_close((uv_handle_t *)&s->turn_check, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    fb_close(s);
    tr_state_close(s->state);
    s->state = NULL;
}
