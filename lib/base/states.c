/*
 * states.c - the names of run and task states (see states.h).
 */
#include "lib/base/states.h"

const char *const tr_run_state_names[TR_RUN_STATE_COUNT] = {
    "queued", "running", "succeeded", "failed", "cancelled"};

const char *const tr_task_state_names[TR_TASK_STATE_COUNT] = {
    "pending", "ready", "dispatched", "running", "retry_wait",
    "succeeded", "failed", "skipped", "cancelled"};

static int parse(const char *name, const char *const *names, int n)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(name, names[i]) == 0)
            return i;
    }
    return -1;
}

int tr_run_state_parse(const char *name)
{
    return parse(name, tr_run_state_names, TR_RUN_STATE_COUNT);
}

int tr_task_state_parse(const char *name)
{
    return parse(name, tr_task_state_names, TR_TASK_STATE_COUNT);
}
