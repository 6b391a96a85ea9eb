/*
 * pipeline_codec.h - a pipeline graph (struct tr_pipeline_def) as msgpack.
 *
 * The scheduler reads pipeline files in sandbox child processes
 * (scheduler/sandbox.c), which send the graph back over a pipe in this form.
 * The decoder treats its input as untrusted: every index is checked against
 * the counts, topo and the name index must be permutations (the name index
 * sorted), and sizes are bounded by the limits, so a child that was
 * subverted can make the load fail but cannot make the parent read out of
 * bounds or allocate without limit.
 *
 * The form is one msgpack array, positional, its first element the format
 * version (1):
 *   [1, name, version, digest, source (bin, or nil), params (bin), [pool...],
 *    [[name, pool, retries, priority, backoff, timeout, cache, map,
 *      [after...], n_upstream, [downstream...]]...], [topo...], [sinks...],
 *    [by_name...] or nil, [[name, on, run, params (bin), cooldown, cron or nil,
 *    has_when]...], [timeout, max_active_runs, [[task, [label key, value, ...],
 *    concurrency key or nil, limit]...]]]
 * (a graph of 12 elements, from before triggers, has none; one of 13 has no
 * run controls)
 *
 * Any thread.
 */
#ifndef TR_PIPELINE_CODEC_H
#define TR_PIPELINE_CODEC_H

#include <msgpack.h>

#include "lib/lua/pipeline.h"

/* Packs def; without its source when with_source is false (the reader has it). */
int tr_pipeline_def_pack(msgpack_packer *pk, const struct tr_pipeline_def *def,
                         bool with_source) TR_MUST_CHECK;

/*
 * Reads one packed def from len bytes at p into *out (owned by the caller;
 * its source is NULL when it was packed without). *used, when not NULL, gets
 * the bytes read. At most lim->max_tasks tasks (NULL: the defaults).
 * Returns 0, TR_EPROTO (malformed or inconsistent; err says where),
 * TR_ELIMIT or TR_ENOMEM.
 */
int tr_pipeline_def_unpack(const void *p, size_t len, const struct tr_pipeline_limits *lim,
                           struct tr_pipeline_def **out, size_t *used,
                           struct tr_error *err) TR_MUST_CHECK;

#endif
