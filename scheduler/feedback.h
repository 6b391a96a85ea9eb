/*
 * feedback.h - the feedback loop in the scheduler: feedback, its statistics,
 * the labelling queue and the model registry (docs/feedback.md).
 *
 * What the loop keeps in memory (feedback.c): each pipeline's statistics,
 * loaded from the state on first use and then updated incrementally, and
 * each model's latest version and aliases; plus the writes of the turn, put
 * into the turn's batch by the end-of-turn commit (fb_put_dirty), so that a
 * feedback and the statistics it changed are one transaction, and every
 * answer is sent only once its change is durable (batch_add_reply).
 *
 * The rest of the scheduler sees this header only: five calls for the
 * turn and the life cycle, and the route table. Part "api" of the
 * scheduler's order (scheduler/sched.h): its handlers get the struct api.
 */
#ifndef TR_SCHED_FEEDBACK_H
#define TR_SCHED_FEEDBACK_H

#include "lib/base/error.h"
#include "lib/http/http_server.h"

struct api;

int fb_open(struct api *s, struct tr_error *err) TR_MUST_CHECK;
void fb_close(struct api *s);
/* Forgets what memory holds, so that a scheduler that starts to lead reads the state. */
void fb_reset(struct api *s);
/*
 * A statistics record (JSON, as the state stores it) seen on the state's
 * watch, whoever wrote it: memory takes it unless it holds the same or
 * newer statistics, or a write of this turn. *pipeline is then its pipeline
 * (owned: the triggers to evaluate), else NULL. 0, TR_EPROTO, TR_ENOMEM.
 */
int fb_stats_seen(struct api *s, const char *json, size_t len, char **pipeline) TR_MUST_CHECK;
/* The turn has writes for the commit. */
bool fb_have_dirty(const struct api *s);
/* Puts the turn's writes into the batch in progress. */
int fb_put_dirty(struct api *s) TR_MUST_CHECK;
/* The batch holding them committed: they are durable. */
void fb_committed(struct api *s);

/* The routes of api_feedback.c and api_models.c, for api.c's table. */
void h_feedback_post(struct tr_http_req *req, void *arg);
void h_feedback_list(struct tr_http_req *req, void *arg);
void h_pipeline_stats(struct tr_http_req *req, void *arg);
void h_labels_post(struct tr_http_req *req, void *arg);
void h_labels_list(struct tr_http_req *req, void *arg);
void h_label_post(struct tr_http_req *req, void *arg);
void h_models_list(struct tr_http_req *req, void *arg);
void h_model_get(struct tr_http_req *req, void *arg);
void h_model_version_post(struct tr_http_req *req, void *arg);
void h_model_version_get(struct tr_http_req *req, void *arg);
void h_model_alias_put(struct tr_http_req *req, void *arg);
void h_model_alias_delete(struct tr_http_req *req, void *arg);
void h_model_history(struct tr_http_req *req, void *arg);

/* Their roles are in api.c's route table (auth.h). */

#endif
