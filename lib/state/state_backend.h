/*
 * state_backend.h - what a state backend shares with lib/state/state.c.
 *
 * Private: only lib/state/state.c and the backends (lib/state/state_*.c)
 * include it; the scheduler core sees struct tr_state as opaque through
 * lib/state/state.h.
 *
 * Every backend's handle embeds struct tr_state as its first member, so that
 * lib/state/state.c can reach the vtable of any handle, and the backend can turn
 * the struct tr_state * it is given back into its own type with a cast.
 * lib/state/state.c sets `ops` after a successful open and has already checked the
 * arguments (non-NULL handle, records and callbacks; required record fields;
 * the batch rules belong to the backend) before forwarding.
 */
#ifndef TR_STATE_BACKEND_H
#define TR_STATE_BACKEND_H

#include "lib/state/state.h"

/* The common head of every backend's handle. */
struct tr_state
{
    const struct tr_state_ops *ops; /* the backend that opened this handle */
};

/*
 * The feedback loop's records reach a backend as rows: a kind, a key of one
 * to three components, two filter fields, a sort field, and the record
 * encoded as JSON text by lib/state/state_loop.c. So the two backends store
 * nine record types with four functions and order them identically.
 */
enum tr_row_kind
{
    TR_ROW_FEEDBACK,      /* key: pipeline, id;   grp pipeline, sub run_id,  ord created_at */
    TR_ROW_STATS,         /* key: pipeline;       grp pipeline */
    TR_ROW_LABEL,         /* key: id;             grp pipeline, sub state,   ord uncertainty */
    TR_ROW_MODEL,         /* key: name */
    TR_ROW_MODEL_VERSION, /* key: name, version;  grp name,                  ord version */
    TR_ROW_MODEL_ALIAS,   /* key: name, alias;    grp name */
    TR_ROW_ALIAS_MOVE,    /* key: name, seq;      grp name,                  ord seq */
    TR_ROW_FIRING,        /* key: pipeline, trigger, time; grp pipeline, sub trigger, ord fired_at */
    TR_ROW_TRIGGER,       /* key: pipeline, trigger;  grp pipeline, sub trigger */
    TR_ROW_AUDIT,         /* key: tenant, id;     grp tenant,                ord at */
    TR_ROW_OWNER,         /* key: kind, name;     grp kind */
    TR_ROW_IDEM,          /* key: idempotency key;    ord created_at */
    TR_ROW_RUN_LINK,      /* key: run_id;             ord created_at */
    TR_ROW_BUDGET,        /* key: tenant (scheduler/budgets.c) */
    TR_ROW_KIND_COUNT
};

/* What a backend needs to know of a kind. */
struct tr_row_kind_info
{
    const char *section;  /* etcd: the key section ("feedback/"); SQLite: the kind's name */
    bool grp_is_prefix;   /* grp is the key's first component (etcd lists grp's keys only) */
    bool desc;            /* listings: ord then key, descending (else ascending) */
    bool late;            /* etcd: written with runs in a batch's second phase */
};

extern const struct tr_row_kind_info tr_row_kinds[TR_ROW_KIND_COUNT];

struct tr_state_row
{
    int kind;                 /* enum tr_row_kind */
    const char *comps[3];     /* the key, n_comps components, none empty */
    size_t n_comps;
    const char *grp;          /* NULL: none */
    const char *sub;          /* NULL: none */
    double ord;
    const char *value;        /* JSON text */
    size_t value_len;
};

/* The backends lib/state/state.c knows, one per file. */
extern const struct tr_state_ops tr_state_sqlite_ops;
extern const struct tr_state_ops tr_state_etcd_ops;

#endif
