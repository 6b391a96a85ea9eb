/*
 * core_controls.c - run controls of the core (core.h): a pipeline's
 * max_active_runs and its timeout (docs/pipelines.md "Placement and run
 * controls").
 *
 * max_active_runs counts, per pipeline name (any version, as Airflow counts
 * per DAG), the runs started under a version that declares it and not final
 * yet. A run beyond the limit stays `queued`, its tasks pending, and starts
 * when one finishes, in submission order (created_at). Nothing of this is
 * stored: a queued run is an unfinished run in the state, so after a restart
 * recovery resumes it, and it queues again here (runs that were running are
 * counted first, whatever the limit; the queued ones start in order once
 * recovery is over).
 *
 * The timeout runs from the run's start (its first dispatch, stored with the
 * run, so a restart keeps the deadline; or, before any dispatch, from the
 * moment it was let start). A run past it fails with `run_timeout`: pending
 * tasks are cancelled and running ones told to stop, as by a cancel.
 */
#include <string.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"
#include "scheduler/core.h"

struct run_gate
{
    char *name;               /* owned; the key of core.gates */
    uint32_t active;          /* runs counted */
    struct run *head;         /* runs waiting, oldest first (gate_next) */
    uint32_t n_waiting;
};

static struct run_gate *gate_of(struct core *c, const char *name, bool make)
{
    struct run_gate *g = tr_hmap_get(&c->gates, name, strlen(name));
    if (g != NULL || !make)
        return g;
    g = tr_calloc(1, sizeof(*g));
    if (g == NULL || (g->name = tr_strdup(name)) == NULL ||
        tr_hmap_put(&c->gates, g->name, strlen(g->name), g) < 0)
        oom_fatal("a max_active_runs gate");
    return g;
}

static void gate_gc(struct core *c, struct run_gate *g)
{
    if (g->active > 0 || g->head != NULL)
        return;
    tr_hmap_del(&c->gates, g->name, strlen(g->name));
    tr_free(g->name);
    tr_free(g);
}

/* Queues r in submission order. */
static void gate_wait(struct run_gate *g, struct run *r)
{
    struct run **pp = &g->head;
    while (*pp != NULL && (*pp)->created_at <= r->created_at)
        pp = &(*pp)->gate_next;
    r->gate_next = *pp;
    *pp = r;
    r->gate_waiting = true;
    g->n_waiting++;
}

bool core_gate_admit(struct run *r)
{
    if (r->gate_counted)
        return true;
    const struct tr_pipeline_def *def = r->pipe->def;
    struct run_gate *g = gate_of(r->core, def->name, true);
    /* A run that was running before a restart was admitted then: counted,
     * whatever the count. A queued one being recovered waits until recovery
     * is over (core_controls_tick), so that running ones are counted first. */
    bool recovering = r->replay != NULL;
    if (r->state == TR_RUN_RUNNING ||
        (!recovering && g->head == NULL && g->active < def->max_active_runs)) {
        g->active++;
        r->gate_counted = true;
        return true;
    }
    gate_wait(g, r);
    tr_info("run queued run=%s pipeline=%s: %u active of max_active_runs=%u", r->id, def->name,
            g->active, def->max_active_runs);
    return false;
}

/* Starts the waiting runs of g while its head's limit allows. */
static void gate_pump(struct core *c, struct run_gate *g)
{
    while (g->head != NULL && g->active < g->head->pipe->def->max_active_runs) {
        struct run *r = g->head;
        g->head = r->gate_next;
        r->gate_next = NULL;
        r->gate_waiting = false;
        g->n_waiting--;
        g->active++;
        r->gate_counted = true;
        tr_info("run starts run=%s pipeline=%s (max_active_runs)", r->id, g->name);
        run_start(r);
    }
    gate_gc(c, g);
}

void core_gate_leave(struct run *r)
{
    if (!r->gate_counted && !r->gate_waiting)
        return;
    struct core *c = r->core;
    struct run_gate *g = gate_of(c, r->pipe->def->name, false);
    if (g == NULL)
        return;
    if (r->gate_waiting) {
        struct run **pp = &g->head;
        while (*pp != NULL && *pp != r)
            pp = &(*pp)->gate_next;
        if (*pp == r) {
            *pp = r->gate_next;
            g->n_waiting--;
        }
        r->gate_next = NULL;
        r->gate_waiting = false;
    }
    if (r->gate_counted) {
        r->gate_counted = false;
        g->active--;
    }
    gate_pump(c, g);
}

bool core_run_waiting(struct core *c, const struct run *r, char *why, size_t size)
{
    if (!r->gate_waiting)
        return false;
    struct run_gate *g = gate_of(c, r->pipe->def->name, false);
    snprintf(why, size, "for one of the %u active runs of pipeline '%.128s' to finish "
             "(max_active_runs = %u, %u queued)", g ? g->active : 0, r->pipe->def->name,
             r->pipe->def->max_active_runs, g ? g->n_waiting : 0);
    return true;
}

void core_controls_tick(struct core *c, double now)
{
    size_t it = 0;
    struct run *r;
    struct run **late = NULL;
    size_t n_late = 0, cap_late = 0;
    while ((r = tr_hmap_next(&c->runs, &it)) != NULL) {
        double t = r->pipe->def->timeout;
        if (t <= 0 || run_is_final(r) || r->gate_waiting)
            continue;
        double since = r->started_at > 0 ? r->started_at : r->ctl_since;
        if (since > 0 && now >= since + t && TR_VEC_PUSH(late, n_late, cap_late, r) < 0)
            oom_fatal("stopping runs at their timeout");
    }
    /* Stopped after the walk: a stop may start other runs (max_active_runs). */
    char msg[256];
    for (size_t i = 0; i < n_late; i++) {
        r = late[i];
        if (run_is_final(r))
            continue;
        snprintf(msg, sizeof(msg), "run_timeout: the run took longer than its pipeline's "
                 "timeout of %g s", r->pipe->def->timeout);
        c->cnt->runs_timed_out++;
        if (run_stop(r, msg, TR_RUN_FAILED) < 0)
            tr_warn("cannot stop run=%s at its timeout", r->id);
    }
    tr_free(late);
    struct run_gate *g;
    it = 0;
    while ((g = tr_hmap_next(&c->gates, &it)) != NULL) {
        if (g->head != NULL && g->active < g->head->pipe->def->max_active_runs) {
            gate_pump(c, g); /* may free g: start the walk again */
            it = 0;
        }
    }
}

void core_controls_release(struct core *c)
{
    size_t it = 0;
    struct run_gate *g;
    while ((g = tr_hmap_next(&c->gates, &it)) != NULL) {
        tr_free(g->name);
        tr_free(g);
    }
    tr_hmap_release(&c->gates);
}
