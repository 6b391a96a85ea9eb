/*
 * api_int.h - what the API's files (api.c, api_runs.c) share; part "api".
 */
#ifndef TR_API_INT_H
#define TR_API_INT_H

#include "scheduler/api.h"
#include "scheduler/usage.h"

#define WAIT_MAX_S 300.0
#define LOG_LINES_MAX 200

/* A long-poll on a run: answered when the run ends or its timer fires. */
struct waiter
{
    uv_timer_t timer;       /* the wait's deadline; the struct is freed from its close cb */
    struct tr_http_req *req; /* NULL once answered or aborted */
    struct run *run;
    struct waiter *prev, *next;
};

/* A run known only to the state (finished before this process, or evicted). */
struct rec_ctx
{
    json_t *out;
    bool with_output;
    uint32_t counts[TR_TASK_STATE_COUNT];
    json_t *usage;           /* the LLM calls of its task records, summed (usage.c) */
};

json_t *json_str_or_null(const char *s);
/* api_runs.c: at least the values of a JSON text less one (',' '[' '{' outside
 * strings), counted up to stop: a bound checked before parsing. */
size_t json_count_values(const char *p, size_t n, size_t stop);
/* api_runs.c: a query number, strictly decimal (digits, and with frac an
 * optional '.' and 1-6 digits); no sign, space, exponent or hex. */
bool query_decimal(const char *q, bool frac, double *out);
json_t *run_to_json(struct run *r, bool with_output);
/* The run's whole JSON as text (caller frees with tr_free); NULL when out of memory. */
char *run_json_text(struct run *r, size_t *len);
/* Answers 200 with the run's JSON (params and output included). */
void respond_run(struct tr_http_req *req, struct run *r);
/* Answers at once with body (taken). */
void respond_json(struct tr_http_req *req, int status, json_t *body);
/* The request's body as a JSON object (a new reference), or NULL after answering
 * 400 malformed_json. Callers bound the body's number of values first. */
json_t *api_json_object(struct tr_http_req *req);
/* The HTTP status for a TR_E* code. */
int status_of(int code);
void respond_err(struct tr_http_req *req, const struct tr_error *err);
json_t *counts_json(const uint32_t *counts);
json_t *parse_or_null(const char *text);
int count_task(const struct tr_task_rec *rec, void *arg);
int run_rec_json(const struct tr_run_rec *rec, void *arg);
void on_waiter_timeout(uv_timer_t *h);
void on_waiter_abort(struct tr_http_req *req, void *arg);

/* Route handlers of api_runs.c. */
void h_runs_post(struct tr_http_req *req, void *arg);
void h_pipelines_post(struct tr_http_req *req, void *arg);
void h_run_get(struct tr_http_req *req, void *arg);
void h_run_tasks(struct tr_http_req *req, void *arg);
void h_run_logs(struct tr_http_req *req, void *arg);
void h_run_cancel(struct tr_http_req *req, void *arg);
void h_runs_list(struct tr_http_req *req, void *arg);

/* Control flow (api_flow.c): POST /v1/runs/{id}/approvals/{task}; a run's
 * parent and children added to o; why an instance waits in the scheduler, or NULL. */
void h_run_approval(struct tr_http_req *req, void *arg);
void api_flow_run_json(struct run *r, json_t *o);
const char *api_flow_waiting(const struct inst *in);

#endif
