/*
 * batch.h - what one loop turn changed, waiting for the group commit.
 *
 * Part "batch", at the bottom of the scheduler's working parts: the others
 * fill it only through these functions, and the loop turn (sched.c) commits
 * it in one transaction, then sends its messages, then answers its replies,
 * in that order. Nothing a commit covers leaves the process before the
 * commit succeeds: a crash can lose a dispatch, never a result a dependant
 * or a client already saw.
 */
#ifndef TR_SCHED_BATCH_H
#define TR_SCHED_BATCH_H

#include <jansson.h>
#include <msgpack.h>

#include "lib/base/buf.h"
#include "lib/http/http_server.h"
#include "lib/state/state.h"
#include "lib/wire/proto.h"
#include "scheduler/counters.h"
#include "scheduler/model.h"
#include "scheduler/transport.h"

/* A message waiting for the commit before it may be sent. */
struct outmsg
{
    uint32_t ident_off, ident_len; /* in batch.out_bytes */
    uint32_t data_off, data_len;
};

/* An HTTP answer waiting for the commit. */
struct pending_reply
{
    struct tr_http_req *req;  /* NULL once the client went away */
    int status;
    char *body;               /* owned JSON */
    size_t len;
    struct pending_reply *next;
};

/* An output to store in the task cache at the commit. */
struct cache_put
{
    char key[65];
    struct inst *in;
};

/* Records of a part above the batch written in the same transaction (the
 * feedback loop's), reached through these hooks. */
struct batch_extra
{
    void *arg;
    bool (*dirty)(void *arg);                      /* has records for the commit */
    int (*put)(void *arg, struct tr_state *st);    /* puts them in the transaction */
    void (*committed)(void *arg);                  /* the transaction committed */
};

struct batch
{
    struct inst **insts;      /* instances whose record changed */
    size_t n_insts, cap_insts;
    struct run **runs;        /* runs whose record changed */
    size_t n_runs, cap_runs;
    struct tr_pipeline_rec *pipes; /* registrations (strings owned) */
    size_t n_pipes, cap_pipes;
    struct pipeline_entry **sources; /* pipelines whose source must be stored */
    size_t n_sources, cap_sources;
    struct cache_put *cache;  /* outputs to store in the task cache */
    size_t n_cache, cap_cache;
    struct outmsg *out;       /* TASK and CANCEL messages */
    size_t n_out, cap_out;
    struct tr_buf out_bytes;
    msgpack_sbuffer sbuf;     /* scratch for encoding */
    struct pending_reply *replies;
    struct pending_reply **replies_tail;
    bool failing;             /* the last commit failed: dispatch pauses, writes answer 503 */
    struct counters *cnt;
    struct batch_extra extra; /* all NULL when unused */
};

void batch_init(struct batch *b, struct counters *cnt);
/* Frees what is left (replies must have been answered or refused). */
void batch_release(struct batch *b);
void batch_set_extra(struct batch *b, const struct batch_extra *x);

/* Queue a record to write at the commit; each one is written once, with its
 * values at commit time. Out of memory is fatal (oom_fatal). */
void batch_add_inst(struct batch *b, struct inst *in);
void batch_add_run(struct batch *b, struct run *r);
/* A registration of pe's pipeline (POST /v1/pipelines). 0 or TR_ENOMEM. */
int batch_add_pipeline(struct batch *b, const struct pipeline_entry *pe) TR_MUST_CHECK;
/* pe's source, unless it is stored or queued already. 0 or TR_ENOMEM. */
int batch_add_source(struct batch *b, struct pipeline_entry *pe) TR_MUST_CHECK;
/* in's output under the cache key. 0 or TR_ENOMEM (the entry is only lost). */
int batch_add_cache(struct batch *b, const char key[65], struct inst *in) TR_MUST_CHECK;
/* A message to the worker with this identity, sent after the commit. */
int batch_add_msg(struct batch *b, const char *ident, size_t ident_len,
                  const struct tr_msg *m) TR_MUST_CHECK;
/* An HTTP answer (body taken), sent after the commit. 0 or TR_ENOMEM (then
 * answered 500 at once). The text variant answers 500 for a NULL text. */
int batch_add_reply(struct batch *b, struct tr_http_req *req, int status, json_t *body);
int batch_add_reply_text(struct batch *b, struct tr_http_req *req, int status, char *text);

/* Records are waiting for a commit. */
bool batch_dirty(const struct batch *b);
/* One transaction with every queued record; 0, or a negative code with
 * b->failing set (the records stay queued for the next try). */
int batch_commit(struct batch *b, struct tr_state *st);
/* Sends the queued messages (after a commit); t NULL drops them. */
void batch_send(struct batch *b, struct transport *t);
/* Answers the queued replies (after a commit). */
void batch_reply(struct batch *b);
/* Answers every queued reply 503: its change was not made durable. */
void batch_refuse(struct batch *b);

#endif
