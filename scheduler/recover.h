/*
 * recover.h - resuming unfinished runs after a restart or a takeover
 * (recover.c).
 *
 * Part "recover", above the core in the scheduler's order: it reads the
 * state, loads pipelines through the loader and rebuilds runs through the
 * core's ordinary functions.
 */
#ifndef TR_SCHED_RECOVER_H
#define TR_SCHED_RECOVER_H

#include "lib/state/state.h"
#include "scheduler/core.h"
#include "scheduler/loader.h"

/* Rebuilds every run the state lists as queued or running. */
int recover_runs(struct core *c, struct pipes *p, struct tr_state *st,
                 struct tr_error *err) TR_MUST_CHECK;

#endif
