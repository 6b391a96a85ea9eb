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

/* The backends lib/state/state.c knows, one per file. */
extern const struct tr_state_ops tr_state_sqlite_ops;
extern const struct tr_state_ops tr_state_etcd_ops;

#endif
