/*
 * sandbox.h - reading pipeline files in a pool of child processes.
 *
 * A pipeline file is user Lua; evaluating it may run one C call the
 * instruction hook cannot interrupt (a backtracking string pattern), so it
 * is never evaluated in the scheduler's process. It goes to a sandbox child:
 * the scheduler's own binary started again as `trellis-scheduler
 * --sandbox-child` (through /proc/self/exe). A child that does not answer
 * within the wall-clock limit (plus a small grace) is killed, its whole
 * process group with SIGKILL, the request is answered TR_ELIMIT, and the
 * child is replaced. The pool keeps `warm` children started and grows on
 * demand up to `max`; beyond that, requests wait in order.
 *
 * Wire: each way, frames of a 4-byte big-endian length then a msgpack body,
 * bounded (SANDBOX_REQ_MAX, SANDBOX_RESP_MAX). A request is a map whose "op"
 * says what to do: "load" evaluates "src" under the limits given and returns
 * the graph; "when" evaluates it and calls triggers[trigger]'s `when`
 * function with "stats" (issue 8). A reply is a map {"id", "rc", "msg"} ("value"
 * too for "when") followed, for a load that succeeded, by the graph
 * (lib/lua/pipeline_codec.h). A new kind of request adds an "op"
 * (sandbox_child.c answers an unknown one with TR_EINVAL).
 *
 * Loop thread only (the child's side is sandbox_child_main).
 */
#ifndef TR_SANDBOX_H
#define TR_SANDBOX_H

#include <uv.h>

#include "lib/lua/pipeline.h"

#define SANDBOX_CHILD_FLAG "--sandbox-child"
#define SANDBOX_ENV_MARK "TRELLIS_SANDBOX_CHILD" /* set in children: they start no pool */
#define SANDBOX_REQ_MAX (40u << 20)   /* a source (the API takes 32 MiB bodies) and fields */
#define SANDBOX_RESP_MAX (256u << 20) /* a graph of a million tasks with long names */

struct sandbox_config
{
    const char *exe;                  /* the binary to start; "/proc/self/exe" */
    struct tr_pipeline_limits limits; /* for every evaluation */
    uint32_t warm;                    /* children kept started (default 2) */
    uint32_t max;                     /* children at most (default 16) */
    double grace_s;                   /* beyond limits.wall_max_s before the kill (0.5) */
};

struct sandbox_stats
{
    uint64_t spawned;   /* children started */
    uint64_t killed;    /* children killed at the deadline */
    uint64_t crashed;   /* children that died while evaluating, by their own limits or not */
    uint32_t alive;     /* children now */
    uint32_t queued;    /* requests waiting for a child */
};

struct sandbox;

/*
 * A load's outcome: def (the caller's to free; its source is the src given
 * to sandbox_load) or NULL and err. Called on the loop, exactly once; with
 * TR_ECANCELED when the pool closes first.
 */
typedef void (*sandbox_load_fn)(void *arg, struct tr_pipeline_def *def, struct tr_error *err);

/*
 * A trigger's verdict: 1 (fire) or 0, or -1 and err. Called on the loop,
 * exactly once (TR_ECANCELED when the pool closes first).
 */
typedef void (*sandbox_when_fn)(void *arg, int verdict, struct tr_error *err);

int sandbox_open(uv_loop_t *loop, const struct sandbox_config *cfg, struct sandbox **out,
                 struct tr_error *err) TR_MUST_CHECK;
/* Answers every request not answered yet (TR_ECANCELED) before it returns, and
 * kills every child; the loop reaps them and closes their handles afterwards. */
void sandbox_close(struct sandbox *sb);

/* Evaluates src (copied; name is the chunk name for messages) in a child. */
int sandbox_load(struct sandbox *sb, const char *src, size_t len, const char *name,
                 sandbox_load_fn done, void *arg) TR_MUST_CHECK;

/*
 * Evaluates src in a child and calls trigger's `when` function with stats
 * (stats_len bytes of a msgpack map) under the same limits (tr_pipeline_when).
 */
int sandbox_when(struct sandbox *sb, const char *src, size_t len, const char *name,
                 const char *trigger, const void *stats, size_t stats_len, sandbox_when_fn done,
                 void *arg) TR_MUST_CHECK;

void sandbox_get_stats(const struct sandbox *sb, struct sandbox_stats *out);

/* main() of the hidden mode: argv is {exe, SANDBOX_CHILD_FLAG, parent pid, memory cap}. */
int sandbox_child_main(int argc, char **argv);

#endif
