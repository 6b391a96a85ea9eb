/*
 * dispatch_int.h - what dispatch.c and dispatch_place.c share inside the
 * part "dispatch": the ready heaps and the placement of labelled tasks and
 * concurrency keys. Not for other parts.
 */
#ifndef TR_SCHED_DISPATCH_INT_H
#define TR_SCHED_DISPATCH_INT_H

#include "scheduler/dispatch.h"

/* TASK bytes queued in one turn at most: each TASK carries its run's params
 * (up to --max-params-bytes), so credit alone does not bound a turn's work. */
#define DISPATCH_TURN_BYTES (64u << 20)

/* The ready heaps (dispatch.c): highest priority first, FIFO among equals. */
int rq_push(struct ready_queue *p, struct inst *in) TR_MUST_CHECK;
struct inst *rq_pop(struct ready_queue *p);
void rq_remove(struct ready_queue *p, struct inst *in);
/* The heap in waits in (or would wait in). */
struct ready_queue *rq_of(struct dispatch *d, const struct inst *in);
/* Sends in to w (TASK into the batch); args is scratch. */
void dispatch_one(struct dispatch *s, struct worker *w, struct inst *in, struct tr_buf *args);

/* Whether w may run in: a worker whose CURVE key is restricted to a tenant
 * runs only that tenant's tasks (dispatch.c). */
bool tenant_fits(struct dispatch *s, const struct worker *w, const struct inst *in);

/* Placement (dispatch_place.c). */

/* The label queue of pool queue q for td's labels, made when new. */
struct ready_queue *place_label_queue(struct ready_queue *q, const struct tr_task_def *td);
/* The wait heap of in's concurrency key (in->conc_wait). */
struct ready_queue *place_conc_queue(struct dispatch *d, const struct inst *in);
/* Takes a place of in's concurrency key: true when it has one (it may be
 * queued for dispatch), false when it now waits in the key's heap. */
bool place_admit(struct dispatch *d, struct inst *in);
/* Takes a waiting in out of its key's heap. */
void place_conc_unwait(struct dispatch *d, struct inst *in);
/* Dispatches q's label queues to matching workers with credit; true when it
 * stopped at the turn's byte bound with work left. */
bool place_dispatch(struct dispatch *s, struct ready_queue *q, struct tr_buf *args);
/* w carries every label td asks for. */
bool worker_matches(const struct worker *w, const struct tr_task_def *td);
bool place_labeled_empty(const struct ready_queue *q);
void place_labeled_free(struct ready_queue *q);
/* Frees the concurrency keys. */
void place_release(struct dispatch *d);

#endif
