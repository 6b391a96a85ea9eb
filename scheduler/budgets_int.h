/*
 * budgets_int.h - what budgets.c (budgets, reservations, the batched CALL,
 * the API) and quotas.c (provider quotas and the gate that holds tasks of
 * a provider out of quota) share. Loop thread only.
 */
#ifndef TR_SCHED_BUDGETS_INT_H
#define TR_SCHED_BUDGETS_INT_H

#include <jansson.h>
#include <uv.h>

#include "lib/base/hmap.h"
#include "scheduler/api.h"
#include "scheduler/budgets.h"

#define NAME_MAX_LEN 63

enum period { P_TOTAL, P_DAY, P_MONTH };

struct tenant
{
    char name[NAME_MAX_LEN + 1];
    double lim_cost, lim_tokens;   /* 0: no limit */
    uint8_t period;
    int64_t period_key;            /* which day or month spent counts (P_TOTAL: 0) */
    double spent_cost, spent_tokens;
    double res_cost, res_tokens;
    uint64_t refused;              /* reservations that did not fit */
    double updated_at;
    bool dirty;
};

struct resv;

struct brun
{
    char id[40];
    double lim_cost, lim_tokens;
    uint8_t on_budget;
    double spent_cost, spent_tokens;
    double res_cost, res_tokens;
    struct resv *head;             /* its reservations */
};

/* An instance held by the gate: found again by its run id, not by pointer
 * (the run may end and be freed meanwhile). */
struct parked
{
    char run_id[40];
    uint32_t task, index;
};

struct quota
{
    char key[NAME_MAX_LEN * 2 + 2];
    struct parked *parked;         /* FIFO: head..n */
    size_t head, n_parked, cap_parked;
    double admitted;               /* let through the gate, their first call not seen yet */
    double admitted_at;
    double rpm, tpm;               /* 0: no limit */
    double req, tok;               /* what the buckets hold now */
    double at;                     /* monotonic seconds of the last refill */
    double blocked_until;          /* the provider said 0 left until then */
    uint64_t granted, waited, held;
    bool known;                    /* a worker said its limits (else: declared by a task only) */
};

struct resv
{
    uint64_t id;
    struct tenant *t;
    struct brun *r;
    struct worker *w;
    double cost, tokens;
    struct resv *prev, *next;      /* in r's list */
};

/* Which quota a task of a pipeline version calls: learned from its calls. */
struct learned
{
    char key[64 + 12];             /* digest:task */
    struct quota *q;
};
#define LEARNED_MAX 100000u
#define QUOTAS_MAX 10000u
#define GATE_TICK_MS 20

struct budgets
{
    struct tr_hmap learned;        /* digest:task -> struct learned */
    uv_timer_t tick;               /* releases held instances while any are held */
    bool tick_open;
    size_t n_parked;
    bool releasing;                /* the gate lets everything through (its own releases) */
    struct api *a;
    struct tr_hmap tenants;        /* name -> struct tenant */
    struct tr_hmap runs;           /* run id -> struct brun (runs with reservations or spend) */
    struct tr_hmap resv;           /* id (8 bytes) -> struct resv */
    struct tr_hmap quotas;         /* key -> struct quota */
    uint64_t next_id;
    bool dirty;
};

static inline struct budgets *bud_of(struct api *a)
{
    return a->bud;
}

static inline double bud_mono_s(void)
{
    return (double)tr_mono_ns() / 1e9;
}

/* quotas.c */
/* Refills q's token buckets up to now (monotonic seconds). */
void quota_refill(struct quota *q, double now);
/* The quota of key, created when rpm or tpm > 0; its limits updated (< 0: unchanged). NULL:
 * no limit known, or out of memory. */
struct quota *quota_get(struct budgets *b, struct tr_str key, double rpm, double tpm);
/* Seconds until q can take one request of tokens (0: now). */
double quota_wait(struct quota *q, double tokens, double now);
/* Notes that in's task calls q (or, unlearn, a provider without a quota). */
void quota_learn(struct budgets *b, const struct inst *in, struct quota *q);
void quota_unlearn(struct budgets *b, const struct inst *in);
/* A worker's report of a provider's rate-limit headers (-1: not said). */
void quota_report(struct budgets *b, struct tr_str key, double rem_req, double rem_tok,
                  double reset_req, double reset_tok);
/* The quotas for GET /v1/budgets. */
json_t *quotas_json(struct budgets *b);

#endif
