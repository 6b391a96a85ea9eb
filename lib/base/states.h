/*
 * states.h - the names of run and task states, in one place.
 *
 * The scheduler, the state backends, the API and the CLI all spell these
 * strings (they are part of the HTTP contract and of stored records), so the
 * enums and their names live here, at the bottom of the layers.
 */
#ifndef TR_STATES_H
#define TR_STATES_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* A run: queued -> running -> succeeded | failed | cancelled. */
enum tr_run_state
{
    TR_RUN_QUEUED = 0,
    TR_RUN_RUNNING,
    TR_RUN_SUCCEEDED,
    TR_RUN_FAILED,
    TR_RUN_CANCELLED,
    TR_RUN_STATE_COUNT
};

/* A task instance: pending -> ready -> dispatched -> running -> a final state,
 * with retry_wait between attempts. The final states come last. */
enum tr_task_state
{
    TR_TASK_PENDING = 0,
    TR_TASK_READY,
    TR_TASK_DISPATCHED,
    TR_TASK_RUNNING,
    TR_TASK_RETRY_WAIT,
    TR_TASK_SUCCEEDED,
    TR_TASK_FAILED,
    TR_TASK_SKIPPED,
    TR_TASK_CANCELLED,
    TR_TASK_STATE_COUNT
};

extern const char *const tr_run_state_names[TR_RUN_STATE_COUNT];
extern const char *const tr_task_state_names[TR_TASK_STATE_COUNT];

static inline bool tr_run_state_final(int s)
{
    return s >= TR_RUN_SUCCEEDED && s < TR_RUN_STATE_COUNT;
}

static inline bool tr_task_state_final(int s)
{
    return s >= TR_TASK_SUCCEEDED && s < TR_TASK_STATE_COUNT;
}

/* The enum value of a run state's name, or -1. */
int tr_run_state_parse(const char *name);
/* The enum value of a task state's name, or -1. */
int tr_task_state_parse(const char *name);

#endif
