/*
 * triggers.h - the feedback loop's triggers in the scheduler (docs/feedback.md
 * "Triggers").
 *
 * A pipeline registered with `triggers = { trellis.trigger{...} }` declares
 * them; the leading scheduler keeps every declared trigger in memory with
 * its durable state (armed or not, last firing, next cron time, the error
 * that disabled it), evaluates `when(stats)` in a sandbox process whenever
 * the statistics it watches change, fires `schedule` triggers at their cron
 * times, and writes each firing, the trigger's new state and the run it
 * starts in one state transaction (the end-of-turn commit).
 *
 * The rest of the scheduler sees this header only: hooks for the turn, the
 * life cycle and registration, and the route table. Loop thread only.
 */
#ifndef TR_SCHED_TRIGGERS_H
#define TR_SCHED_TRIGGERS_H

#include "lib/base/error.h"
#include "lib/http/http_server.h"
#include "lib/lua/pipeline.h"

struct api;

/* Environment variable (tests only): a file holding the seconds since the
 * epoch that triggers take as "now", read at each cron tick. */
#define TRG_CLOCK_ENV "TRELLIS_TESTING_CLOCK_FILE"

int trg_open(struct api *s, struct tr_error *err) TR_MUST_CHECK;
/* Before sandbox_close: evaluations in flight are answered cancelled afterwards. */
void trg_close(struct api *s);
/* The scheduler starts to lead: reads the triggers and their state from the
 * state, re-evaluates every feedback and labels trigger, and fires the
 * schedule triggers whose time passed while no scheduler led (once each). */
int trg_lead(struct api *s, struct tr_error *err) TR_MUST_CHECK;

/*
 * Registration (POST /v1/pipelines) and submission: answers 400
 * `unknown_pipeline` when a trigger's `run` names no registered pipeline
 * (nor def itself) and returns false; true when def may be stored.
 */
bool trg_check(struct api *s, const struct tr_pipeline_def *def, struct tr_http_req *req);
/* def was registered in this turn: its triggers replace the pipeline's
 * previous ones, written in the same commit. 0 or TR_ENOMEM. */
int trg_register(struct api *s, const struct tr_pipeline_def *def) TR_MUST_CHECK;

/*
 * The state's watch of the feedback statistics (tr_coord_watch_stats; arg is
 * the struct api): a pipeline's statistics changed, whoever wrote them, and
 * its feedback and labels triggers whose statistics moved are evaluated;
 * json NULL: history was lost, every trigger is evaluated on statistics
 * read again.
 */
void trg_on_stats(void *arg, const char *json, size_t len);

/* The turn has writes for the commit. */
bool trg_have_dirty(const struct api *s);
/* Puts them into the batch (after fb_put_dirty: it also notes which
 * pipelines' statistics this batch changes). */
int trg_put_dirty(struct api *s) TR_MUST_CHECK;
/* The batch committed: evaluates the triggers whose statistics it changed. */
void trg_committed(struct api *s);

void h_triggers_list(struct tr_http_req *req, void *arg);
void h_trigger_firings(struct tr_http_req *req, void *arg);

/* Their roles are in api.c's route table (auth.h). */

#endif
