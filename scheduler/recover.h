/*
 * recover.h - resuming unfinished runs after a restart or a takeover
 * (recover.c).
 *
 * Part "recover", above the core and leadership in the scheduler's order:
 * it reads the state, loads pipelines through the loader (the sandbox) and
 * rebuilds runs through the core's ordinary functions.
 */
#ifndef TR_SCHED_RECOVER_H
#define TR_SCHED_RECOVER_H

#include <uv.h>

#include "lib/state/state.h"
#include "scheduler/core.h"
#include "scheduler/leader.h"
#include "scheduler/loader.h"

struct recovery;

/* The parts recovery works with. */
struct recover_parts
{
    struct core *core;
    struct pipes *pipes;
    struct tr_state *state;
    uv_loop_t *loop;
    struct leader *leader;    /* failed runs are written only while it may act */
    const bool *stopping;     /* the scheduler's */
};

/*
 * Starts resuming the unfinished runs (asynchronously: their pipelines are
 * read by the sandbox first, unless cached); *slot holds the recovery while
 * it lasts and is cleared when it ends. Fails only when the runs cannot be
 * listed.
 */
int recover_start(struct recovery **slot, const struct recover_parts *parts,
                  struct tr_error *err) TR_MUST_CHECK;
/* After sandbox_close: drops what recovery still holds (NULL: nothing). */
void recover_close(struct recovery *rv);

#endif
