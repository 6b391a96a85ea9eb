/*
 * triggers_int.h - what triggers.c and api_triggers.c share: a trigger in
 * memory and the loop's trigger state (triggers.c's file comment has the
 * invariants).
 */
#ifndef TR_SCHED_TRIGGERS_INT_H
#define TR_SCHED_TRIGGERS_INT_H

#include "lib/base/alloc.h"
#include "lib/base/cron.h"
#include "lib/base/log.h"
#include "scheduler/feedback_int.h"
#include "scheduler/triggers.h"

struct trg
{
    char *key;                /* "pipeline\x1ftrigger", owned; the map's key */
    char *pipeline;           /* the declaring pipeline */
    char *name;
    /* The declaration */
    uint8_t on;               /* enum tr_trigger_on */
    bool has_when;
    char *run;                /* "pipeline[@version]" */
    char *params_json;        /* a JSON object */
    double cooldown;
    char *cron;               /* NULL unless schedule */
    struct tr_cron cr;
    char digest[65];          /* the declaring source, where `when` is read from */
    char *version;
    /* Durable state */
    int last;                 /* -1 never evaluated, 0 false (armed), 1 true */
    double fired_at;          /* 0: never */
    uint64_t fired;           /* firings so far */
    uint64_t suppressed;      /* crossings inside the cooldown, not fired */
    double next_due;          /* schedule: the next cron time not fired yet */
    char *error;              /* NULL, or why it is disabled */
    char *last_run;           /* the run of the last firing */
    bool removed;             /* the pipeline's newest version no longer declares it */
    /* Run time */
    bool dirty;               /* its state row goes into the next batch */
    bool in_flight;           /* an evaluation is in a sandbox process */
    bool again;               /* the statistics changed meanwhile */
    bool firing;              /* its run's pipeline is being read */
    uint64_t seen_fb, seen_lq, seen_ll; /* the counts its last evaluation saw */
    char *src;                /* the declaring source, read once (owned) */
    size_t src_len;
};

struct firing
{
    struct trg *t;
    double at;
    char run_id[40];
    char *stats;              /* JSON text (owned) */
};

struct trg_loop
{
    struct tr_hmap map;       /* key -> struct trg */
    struct trg **all;         /* in creation order */
    size_t n_all, cap_all;
    struct firing *firings;   /* the turn's firings, for the commit */
    size_t n_firings, cap_firings;
    char **changed;           /* pipelines whose statistics the batch changes */
    size_t n_changed, cap_changed;
    uv_timer_t tick;          /* schedule triggers */
    char *clock_file;         /* TRG_CLOCK_ENV, or NULL */
    uint64_t gen;             /* bumped when memory is rebuilt; stale answers are dropped */
};

static inline struct trg_loop *loop_of(const struct api *s)
{
    return s->trg;
}

/* "Now" for triggers: the wall clock, or the test clock's file (TRG_CLOCK_ENV). */
double trg_now(struct trg_loop *l);
/* A new trigger in memory (never evaluated), or NULL when out of memory. */
struct trg *trg_add(struct trg_loop *l, const char *pipeline, const char *name);
/* Its state row: declaration and durable state as JSON text (free()), or NULL. */
char *trg_row_json(const struct trg *t);
/* tr_state_trigger_fn: a row into memory (arg: the struct trg_loop). */
int trg_load_row(const struct tr_trigger_rec *r, void *arg);
/* The trigger (pipeline, name) in memory, or NULL. */
struct trg *trg_find(struct trg_loop *l, const char *pipeline, const char *name);

#endif
