/*
 * pipeline_trigger.h - the loader's reading of a pipeline's triggers.
 *
 * Private to lib/lua (pipeline.c calls it while it walks the returned
 * pipeline; pipeline_codec.c frees with it). Any thread.
 */
#ifndef TR_PIPELINE_TRIGGER_H
#define TR_PIPELINE_TRIGGER_H

#include <lua.h>

#include "lib/lua/pipeline.h"

#define TR_TRIGGERS_MAX 64u       /* triggers in one pipeline */
#define TR_TRIGGER_NAME_MAX 128u  /* bytes of a trigger's name */
#define TR_TRIGGER_RUN_MAX 256u   /* bytes of "pipeline[@version]" */

/*
 * Reads triggers of the pipeline table at idx into def (def->name set).
 * Returns 0, TR_ETRIGGER or TR_ECRON with err saying which trigger and why,
 * TR_ELIMIT, TR_ENOMEM. Needs a few free stack slots; does not raise except
 * on memory errors.
 */
int tr_pipeline_read_triggers(lua_State *L, int idx, struct tr_pipeline_def *def,
                              struct tr_error *err) TR_MUST_CHECK;

/* Frees def's triggers (NULL-safe, leaves none). */
void tr_pipeline_free_triggers(struct tr_pipeline_def *def);

/* A trigger name: 1..127 of [A-Za-z0-9._-] (it is a path segment of the API). */
bool tr_trigger_name_ok(const char *s, size_t len);

#endif
