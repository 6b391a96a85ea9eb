/*
 * runctl.h - run control (api_runctl.c; docs/api.md "Run control"):
 * Idempotency-Key on POST /v1/runs, POST /v1/runs/{id}/retry, DELETE
 * /v1/runs/{id}, --retention, the check of a run's params against the
 * pipeline's declared defaults, and GET /v1/pipelines/{name}/versions/{v}/source.
 *
 * Part "api". Its records (keys, retry links, deletions) join the loop
 * turn's transaction through the batch's extra hooks (sched.c). Loop thread.
 */
#ifndef TR_SCHED_RUNCTL_H
#define TR_SCHED_RUNCTL_H

#include "scheduler/api.h"

/* Creates the run control of a (timers on a's loop). 0 or TR_ENOMEM. */
int rc_open(struct api *a, struct tr_error *err) TR_MUST_CHECK;
/* Stops its timers and frees it. NULL-safe on a never opened. */
void rc_close(struct api *a);

/* The batch's extra hooks (sched.c chains them after the feedback loop's). */
bool rc_have_dirty(struct api *a);
int rc_put_dirty(struct api *a) TR_MUST_CHECK;
void rc_committed(struct api *a);

/* A run reached a final state (api_run_final): frees what a retry reused. */
void rc_run_final(struct api *a, struct run *r);

/*
 * POST /v1/runs with an Idempotency-Key header. Returns true when the
 * request was answered (a replay, a conflict, a bad key); otherwise *key is
 * the key to hand to rc_idem_created or rc_idem_release (NULL without one;
 * the caller owns it).
 */
bool rc_idem_begin(struct api *a, struct tr_http_req *req, char **key);
/* The run made under key (owned by the caller still): its key is queued. */
void rc_idem_created(struct api *a, const char *key, const struct run *r);
/* The request under key ended without a run (frees key). NULL-safe. */
void rc_idem_release(struct api *a, char *key);

/* Checks params against def's declared defaults; false after answering 400 invalid_params. */
bool rc_params_check(struct tr_http_req *req, const struct tr_pipeline_def *def,
                     json_t *params);

/* GET /v1/runs/{id} of a run read from the state: adds "retry_of" when it has one. */
void rc_add_retry_of(struct api *a, json_t *run);

/* Shared by api_runctl.c and api_retry.c. */
/* A stored run's state, or TR_ENOENT. */
struct run_brief
{
    bool found;
    char state[16];
    char digest[65];
    char pipeline[128];
    char *params_json;
};

/* tr_state_get_run's callback filling a struct run_brief (params_json copied: free it). */
int rc_brief_cb(const struct tr_run_rec *rec, void *arg);
/* The {id} route parameter into out; false after answering 404. */
bool rc_route_id(struct tr_http_req *req, char *out, size_t size);
void rc_no_run(struct tr_http_req *req, const char *id);
/* False after answering 404 when run id is another tenant's (tenants.h): it
 * answers as an unknown id does, after the same state read. */
bool rc_run_visible(struct api *a, struct tr_http_req *req, const char *id);
/* False after answering 503 when writes are paused. */
bool rc_writes_ok(struct api *a, struct tr_http_req *req);
/* A retry link to put at the next commit. */
void rc_queue_link(struct api *a, const char *run_id, const char *retry_of);

void h_run_delete(struct tr_http_req *req, void *arg);
void h_run_retry(struct tr_http_req *req, void *arg);
void h_pipeline_source(struct tr_http_req *req, void *arg);

#endif
