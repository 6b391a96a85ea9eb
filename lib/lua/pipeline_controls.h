/*
 * pipeline_controls.h - the run controls of a pipeline file: a task's
 * `labels` (placement) and `concurrency`, a pipeline's `timeout` and
 * `max_active_runs` (docs/pipelines.md "Placement and run controls").
 *
 * Internal to lib/lua: trellis.task and trellis.pipeline call the checks
 * (their `why` is what the user sees, with the file's line), the loader
 * copies the fields into the def, the codec carries them. Raw access only:
 * no Lua code runs. Any thread.
 */
#ifndef TR_PIPELINE_CONTROLS_H
#define TR_PIPELINE_CONTROLS_H

#include <lua.h>
#include <stdbool.h>

#include "lib/lua/pipeline.h"

#define TR_LABEL_KEY_MAX 63      /* bytes of a label's key */
#define TR_LABEL_VALUE_MAX 255   /* bytes of a label's value */
#define TR_TASK_LABELS_MAX 32    /* labels one task may ask for (TR_PROTO_MAX_LABELS) */
#define TR_CONC_KEY_MAX 128      /* bytes of a concurrency key */
#define TR_CONC_LIMIT_MAX 1000000

/* Checks a task's `labels` (at the top of the stack) for the task named
 * who; 0, or -1 with why. Needs 3 free stack slots. */
int tr_check_task_labels(lua_State *L, const char *who, size_t who_len, char *why,
                         size_t why_len);
/* Checks a task's `concurrency` (top of the stack): { key = "...", limit = N }. */
int tr_check_task_concurrency(lua_State *L, const char *who, size_t who_len, char *why,
                              size_t why_len);
/* Checks a pipeline's `timeout` or `max_active_runs` (field, at the top of the
 * stack; nil is allowed); 0, or -1 with why. */
int tr_check_pipeline_control(lua_State *L, const char *field, char *why, size_t why_len);

/* Copies the run controls of the pipeline table at idx (checked already by
 * trellis.pipeline/trellis.task; checked again here) into def, whose tasks
 * were read in order from the array `tasks`. 0, TR_EINVAL or TR_ENOMEM. */
int tr_pipeline_read_controls(lua_State *L, int idx, struct tr_pipeline_def *def,
                              struct tr_error *err);
/* Frees what tr_pipeline_read_controls (or the codec) put in def. */
void tr_pipeline_free_controls(struct tr_pipeline_def *def);
/* True when a task has labels or a concurrency key (it takes the slower way
 * through dispatch). */
static inline bool tr_task_has_controls(const struct tr_task_def *t)
{
    return t->n_labels > 0 || t->conc_key != NULL;
}

#endif
