/*
 * etcd.h - an asynchronous etcd v3 client driven from a libuv loop.
 *
 * KV (range, put, delete, txn, compact), leases (grant, revoke, time to live,
 * a managed keep-alive stream) and watches (resumed after a broken stream),
 * over gRPC's C core and protobuf-c. Neither library shows in this header:
 * callers see plain structs, byte views and TR_E* codes.
 *
 * Threading: a client belongs to the thread that runs its loop. Every
 * function here is called from that thread only, and every callback runs on
 * it. gRPC's completion queue is drained by one thread per client that does
 * nothing but hand (tag, success) pairs to the loop through a uv_async_t; no
 * call here blocks the loop (docs/etcd-client.md, "Threading").
 *
 * The callback contract (docs/etcd-client.md, "Callbacks"): when a function
 * that takes a callback returns an error, the callback is never called. Otherwise a one-shot
 * callback (tr_etcd_fn) is called exactly once, from the loop, never from
 * inside the call that started it. A streaming callback (watch, keep-alive)
 * may be called many times and is called one last time with a final status,
 * after which its handle is gone. tr_etcd_close and the cancel/stop functions
 * complete what they stop with TR_ECANCELED.
 *
 * Errors of a call (status of a callback):
 *   TR_EUNAVAIL   no etcd member could be reached (gRPC UNAVAILABLE, a broken
 *                 connection); the client moves to the next endpoint.
 *   TR_ETIMEDOUT  the deadline passed. The outcome is UNKNOWN: a write may
 *                 or may not have been applied. Make writes idempotent or
 *                 guard them with a txn compare.
 *   TR_ECANCELED  the call was cancelled (tr_etcd_close); outcome unknown too.
 *   TR_ESTATE     etcd refused the request (any other gRPC status: a
 *                 compacted revision, too many txn ops, request too large,
 *                 lease not found...). res->message carries etcd's words and
 *                 res->grpc_status the gRPC code.
 *   TR_EPROTO     an answer that does not decode.
 *   TR_ENOMEM     out of memory while decoding the answer.
 *
 * Keys and values are bytes (pointer + length, NUL bytes allowed). Request
 * buffers are copied before the starting call returns; result buffers are
 * borrowed for the duration of the callback only.
 */
#ifndef TR_ETCD_H
#define TR_ETCD_H

#include <uv.h>

#include "lib/base/error.h"

struct tr_etcd;
struct tr_etcd_watch;
struct tr_etcd_keepalive;

/* etcd's defaults, for callers that split work into requests it accepts. */
#define TR_ETCD_DEFAULT_MAX_TXN_OPS 128             /* --max-txn-ops */
#define TR_ETCD_DEFAULT_MAX_REQUEST_BYTES 1572864u  /* --max-request-bytes */

/* ===================================================================== */
/* Client                                                                */
/* ===================================================================== */

struct tr_etcd_config
{
    const char *endpoints;     /* "host:port[,host:port...]"; an entry may start
                                  with http:// or https:// (https means TLS) */
    const char *ca_file;       /* PEM CA bundle for the server certificate; TLS
                                  when set (NULL with https:// = gRPC's roots) */
    const char *cert_file;     /* PEM client certificate chain; with key_file */
    const char *key_file;      /* PEM private key of cert_file */
    uint32_t deadline_ms;      /* deadline of every unary call; 0 = 5000 */
    uint32_t backoff_min_ms;   /* first reconnect / resume delay; 0 = 100 */
    uint32_t backoff_max_ms;   /* longest such delay; 0 = 5000 */
    uint32_t keepalive_ms;     /* HTTP/2 ping period while calls are open;
                                  0 = 10000 (etcd refuses pings under 5 s) */
    uint32_t keepalive_timeout_ms; /* a ping unanswered this long closes the
                                      connection; 0 = 5000 */
};

/*
 * Creates a client on loop: parses the endpoints, reads the TLS files,
 * initialises gRPC (refcounted across clients) and starts the completion
 * queue thread. Connects lazily, on the first call. Returns the client, or
 * NULL with err set (err may be NULL): TR_EINVAL for an empty or malformed
 * endpoint list or a key without a certificate, TR_EIO for an unreadable
 * TLS file, TR_ENOMEM. Loop thread.
 */
struct tr_etcd *tr_etcd_open(uv_loop_t *loop, const struct tr_etcd_config *cfg,
                            struct tr_error *err) TR_MUST_CHECK;

/*
 * Cancels every call, watch and keep-alive of e; each of their callbacks
 * completes once with TR_ECANCELED, from the loop, after this returns. Then
 * shuts down in gRPC's order: calls released, channels destroyed, the
 * completion queue shut down and drained, its thread joined, grpc_shutdown,
 * and the client's uv handles closed. Run the loop until it has nothing left
 * (uv_run with UV_RUN_DEFAULT) before uv_loop_close. NULL-safe. From a
 * completing callback, e may still be passed to the functions below, which
 * then fail with TR_ECANCELED. Loop thread.
 */
void tr_etcd_close(struct tr_etcd *e);

/* The endpoint ("host:port") calls currently go to; borrowed until the next
 * loop turn. */
const char *tr_etcd_endpoint(const struct tr_etcd *e);

struct tr_etcd_stats
{
    uint64_t calls;             /* unary calls started */
    uint64_t calls_failed;      /* unary calls completed with an error */
    uint64_t endpoint_switches; /* channels replaced after UNAVAILABLE */
    uint64_t stream_restarts;   /* watch / keep-alive streams re-created */
};

/* Copies e's counters into out. */
void tr_etcd_get_stats(const struct tr_etcd *e, struct tr_etcd_stats *out);

/* ===================================================================== */
/* Requests and results                                                  */
/* ===================================================================== */

enum tr_etcd_flags
{
    TR_ETCD_PREFIX = 1 << 0,       /* every key that starts with key */
    TR_ETCD_FROM_KEY = 1 << 1,     /* every key >= key */
    TR_ETCD_PREV_KV = 1 << 2,      /* put, delete, watch: return the key-value
                                      as it was before */
    TR_ETCD_KEYS_ONLY = 1 << 3,    /* range: keys without values */
    TR_ETCD_COUNT_ONLY = 1 << 4,   /* range: only the count */
    TR_ETCD_SERIALIZABLE = 1 << 5, /* range: answered by the member alone,
                                      without a quorum read (may be stale) */
    TR_ETCD_IGNORE_VALUE = 1 << 6, /* put: keep the current value */
    TR_ETCD_IGNORE_LEASE = 1 << 7, /* put: keep the current lease */
    TR_ETCD_NO_PUT = 1 << 8,       /* watch: filter out PUT events */
    TR_ETCD_NO_DELETE = 1 << 9,    /* watch: filter out DELETE events */
    TR_ETCD_PROGRESS_NOTIFY = 1 << 10 /* watch: etcd sends periodic progress */
};

/* What a request does; also tags each result. */
enum tr_etcd_op_type
{
    TR_ETCD_OP_RANGE = 0,
    TR_ETCD_OP_PUT = 1,
    TR_ETCD_OP_DELETE = 2,
    TR_ETCD_OP_TXN = 3,
    TR_ETCD_OP_COMPACT = 4,
    TR_ETCD_OP_LEASE_GRANT = 5,
    TR_ETCD_OP_LEASE_REVOKE = 6,
    TR_ETCD_OP_LEASE_TTL = 7
};

/*
 * One KV request: a range, a put or a delete. Zero-initialise it and set
 * what applies. The key range is key alone, or [key, range_end) when
 * range_end is set, or the prefix / from-key range when the flag says so
 * (range_end and those flags exclude each other). An empty key with
 * TR_ETCD_PREFIX means every key.
 */
struct tr_etcd_op
{
    enum tr_etcd_op_type type;  /* RANGE, PUT or DELETE: used inside a txn;
                                   tr_etcd_range/put/delete ignore it */
    const void *key;            /* the key, or the start of the range */
    size_t key_len;
    const void *range_end;      /* exclusive end of the range, or NULL */
    size_t range_end_len;
    const void *value;          /* put: the value (may be empty) */
    size_t value_len;
    int64_t lease;              /* put: attach to this lease; 0 = none */
    int64_t limit;              /* range: at most this many keys; 0 = all */
    int64_t revision;           /* range: read at this revision; 0 = latest */
    unsigned flags;             /* enum tr_etcd_flags */
};

/* What a txn compare looks at (etcd's CompareTarget numbering). */
enum tr_etcd_cmp_target
{
    TR_ETCD_CMP_VERSION = 0, /* number of puts since creation; 0 = absent */
    TR_ETCD_CMP_CREATE = 1,  /* create_revision */
    TR_ETCD_CMP_MOD = 2,     /* mod_revision */
    TR_ETCD_CMP_VALUE = 3,   /* the value's bytes */
    TR_ETCD_CMP_LEASE = 4    /* the lease id; 0 = none */
};

/* How a compare holds: target <result> operand (etcd's CompareResult). */
enum tr_etcd_cmp_result
{
    TR_ETCD_EQUAL = 0,
    TR_ETCD_GREATER = 1,
    TR_ETCD_LESS = 2,
    TR_ETCD_NOT_EQUAL = 3
};

struct tr_etcd_compare
{
    const void *key;                /* the key compared */
    size_t key_len;
    enum tr_etcd_cmp_target target;
    enum tr_etcd_cmp_result result;
    int64_t number;                 /* operand of VERSION/CREATE/MOD/LEASE */
    const void *value;              /* operand of VALUE */
    size_t value_len;
    unsigned flags;                 /* TR_ETCD_PREFIX: every key under key
                                       must hold */
};

/*
 * A transaction: if every compare holds, the success ops run, otherwise the
 * failure ops, all at one revision. etcd accepts TR_ETCD_DEFAULT_MAX_TXN_OPS
 * ops per branch unless configured otherwise, and no key put twice.
 */
struct tr_etcd_txn
{
    const struct tr_etcd_compare *compares;
    size_t n_compares;
    const struct tr_etcd_op *success;
    size_t n_success;
    const struct tr_etcd_op *failure;
    size_t n_failure;
};

/* A key-value as etcd stores it. Views into the answer. */
struct tr_etcd_kv
{
    const void *key;
    size_t key_len;
    const void *value;        /* NULL with value_len 0 when empty or keys-only */
    size_t value_len;
    int64_t create_revision;  /* revision of the put that created the key */
    int64_t mod_revision;     /* revision of the last change */
    int64_t version;          /* puts since creation (1 after the first) */
    int64_t lease;            /* lease id, 0 = none */
};

/*
 * The answer to one request, borrowed for the duration of the callback. The
 * fields of other request types are zero.
 */
struct tr_etcd_result
{
    enum tr_etcd_op_type type;    /* the request this answers */
    int64_t revision;             /* the store's revision when answered */
    const struct tr_etcd_kv *kvs; /* range: the keys found; lease TTL with
                                     keys: the attached keys (key only) */
    size_t n_kvs;
    bool more;                    /* range: more keys than the limit */
    int64_t count;                /* range: keys in the range in all */
    int64_t deleted;              /* delete: keys deleted */
    const struct tr_etcd_kv *prev_kvs; /* put, delete with TR_ETCD_PREV_KV */
    size_t n_prev_kvs;
    bool succeeded;               /* txn: the compares held */
    const struct tr_etcd_result *responses; /* txn: one per op of the branch
                                               that ran, in order */
    size_t n_responses;
    int64_t lease_id;             /* lease grant, TTL: the lease */
    int64_t ttl;                  /* lease grant: granted TTL (s); lease TTL:
                                     seconds left, -1 when expired or unknown */
    int64_t granted_ttl;          /* lease TTL: the TTL it was granted with */
    int grpc_status;              /* failure: gRPC status code, -1 if none */
    const char *message;          /* failure: what went wrong; "" on success */
};

/*
 * Completion of a one-shot call: status is 0 or a TR_E* code (see the top of
 * this file); res is never NULL and is borrowed until the callback returns.
 */
typedef void (*tr_etcd_fn)(void *arg, int status, const struct tr_etcd_result *res);

/* ===================================================================== */
/* KV                                                                    */
/* ===================================================================== */

/*
 * Starts a Range / Put / DeleteRange described by op (its type is ignored)
 * with the client's deadline. Returns 0 (cb will be called), TR_EINVAL for a
 * contradictory op (range_end with a range flag, a range on a put),
 * TR_ENOMEM, or TR_ECANCELED when e is being freed. Loop thread.
 */
int tr_etcd_range(struct tr_etcd *e, const struct tr_etcd_op *op, tr_etcd_fn cb,
                  void *arg) TR_MUST_CHECK;
int tr_etcd_put(struct tr_etcd *e, const struct tr_etcd_op *op, tr_etcd_fn cb,
                void *arg) TR_MUST_CHECK;
int tr_etcd_delete(struct tr_etcd *e, const struct tr_etcd_op *op, tr_etcd_fn cb,
                   void *arg) TR_MUST_CHECK;

/*
 * Starts a Txn. res->succeeded says which branch ran and res->responses
 * holds one result per op of that branch. Same returns as tr_etcd_range; an
 * op type other than RANGE, PUT or DELETE is TR_EINVAL.
 */
int tr_etcd_txn(struct tr_etcd *e, const struct tr_etcd_txn *txn, tr_etcd_fn cb,
                void *arg) TR_MUST_CHECK;

/*
 * Compacts the history up to revision: older revisions can no longer be read
 * or watched from. physical: answer only once the space is reclaimed. Same
 * returns as tr_etcd_range. Loop thread.
 */
int tr_etcd_compact(struct tr_etcd *e, int64_t revision, bool physical, tr_etcd_fn cb,
                    void *arg) TR_MUST_CHECK;

/*
 * Writes the exclusive end of the range of keys starting with prefix into
 * out (room for len bytes, at least 1) and returns its length: the prefix with trailing
 * 0xff bytes dropped and the last byte incremented. When no such key exists
 * (empty or all-0xff prefix) writes a single 0 byte, etcd's "to the end".
 */
size_t tr_etcd_prefix_end(const void *prefix, size_t len, uint8_t *out);

/* ===================================================================== */
/* Leases                                                                */
/* ===================================================================== */

/*
 * Grants a lease of ttl_s seconds; id 0 lets etcd choose it. res->lease_id
 * and res->ttl carry the answer. Same returns as tr_etcd_range.
 */
int tr_etcd_lease_grant(struct tr_etcd *e, int64_t ttl_s, int64_t id, tr_etcd_fn cb,
                        void *arg) TR_MUST_CHECK;

/*
 * Revokes lease id, deleting every key attached to it. An unknown lease
 * completes with TR_ESTATE (grpc_status 5, NOT_FOUND). Same returns.
 */
int tr_etcd_lease_revoke(struct tr_etcd *e, int64_t id, tr_etcd_fn cb,
                         void *arg) TR_MUST_CHECK;

/*
 * Asks for the time left on lease id: res->ttl (-1 when it expired or never
 * existed), res->granted_ttl and, with keys, the attached keys in res->kvs.
 * Same returns.
 */
int tr_etcd_lease_time_to_live(struct tr_etcd *e, int64_t id, bool keys, tr_etcd_fn cb,
                               void *arg) TR_MUST_CHECK;

/*
 * Keep-alive progress of one lease. status 0: etcd renewed the lease to ttl
 * seconds. TR_EUNAVAIL / TR_ETIMEDOUT / TR_ESTATE with final false: a renewal
 * failed and the stream is being re-created after a backoff; the lease may
 * still expire meanwhile (see tr_etcd_keepalive_expiry_ns). Final calls:
 * TR_ENOENT (the lease expired or was revoked: etcd answered TTL 0) and
 * TR_ECANCELED (stopped, or the client freed). After a final call the handle
 * is gone.
 */
typedef void (*tr_etcd_keepalive_fn)(void *arg, int status, int64_t ttl, bool final);

/*
 * Keeps lease id alive: one LeaseKeepAlive stream, a renewal sent at once and
 * every interval_ms from the loop (pick a third of the TTL or less), at most
 * one unanswered at a time; a renewal unanswered within the client deadline
 * re-creates the stream. On 0, *out is the handle, valid until cb's final
 * call. TR_EINVAL (interval_ms 0, id <= 0), TR_ENOMEM, TR_ECANCELED when e is
 * being freed. Loop thread.
 */
int tr_etcd_lease_keepalive_start(struct tr_etcd *e, int64_t id, uint32_t interval_ms,
                                  tr_etcd_keepalive_fn cb, void *arg,
                                  struct tr_etcd_keepalive **out) TR_MUST_CHECK;

/*
 * Stops renewing (the lease itself stays until its TTL runs out; revoke it
 * to end it at once). cb's final call, TR_ECANCELED, comes from the loop
 * later. Must not be called after cb's final call. Loop thread.
 */
void tr_etcd_lease_keepalive_stop(struct tr_etcd_keepalive *k);

/*
 * The tr_mono_ns() time until which the lease is known to be alive: when the
 * last answered renewal was sent plus the TTL it granted. 0 before the first
 * answer. A leader uses it to stop acting before its lease can have expired.
 */
uint64_t tr_etcd_keepalive_expiry_ns(const struct tr_etcd_keepalive *k);

/* ===================================================================== */
/* Watches                                                               */
/* ===================================================================== */

enum tr_etcd_event_type
{
    TR_ETCD_EVENT_PUT = 0,
    TR_ETCD_EVENT_DELETE = 1
};

struct tr_etcd_event
{
    enum tr_etcd_event_type type;
    struct tr_etcd_kv kv;      /* after the change; for DELETE the key and
                                  mod_revision (the delete's revision) */
    bool has_prev_kv;          /* with TR_ETCD_PREV_KV, when the key existed */
    struct tr_etcd_kv prev_kv; /* the key-value before the change */
};

/* One delivery of a watch, borrowed for the duration of the callback. */
struct tr_etcd_watch_result
{
    int64_t revision;         /* the store's revision when sent */
    const struct tr_etcd_event *events; /* in revision order, never repeated */
    size_t n_events;
    bool created;             /* etcd confirmed the watch (once, first time) */
    bool progress;            /* a progress answer: every event up to
                                 revision has been delivered */
    int64_t compact_revision; /* TR_ESTALE: the oldest revision left */
    int grpc_status;          /* final failure: gRPC status, -1 if none */
    const char *message;      /* final failure: what went wrong; else "" */
};

/*
 * Watch deliveries. status 0: events (n_events > 0), the creation notice or
 * a progress answer. Any other status is the final call, after which the
 * handle is gone: TR_ECANCELED (cancelled, or the client freed), TR_ESTALE
 * (the revision to start or resume from was compacted; res->compact_revision
 * says from where history is left: read the state again, then watch from
 * res->revision + 1), TR_ESTATE (etcd refused or cancelled the watch;
 * res->message says why).
 */
typedef void (*tr_etcd_watch_fn)(void *arg, int status, const struct tr_etcd_watch_result *res);

struct tr_etcd_watch_opts
{
    const void *key;        /* the key, or the start of the range */
    size_t key_len;
    const void *range_end;  /* exclusive end, or NULL (then flags decide) */
    size_t range_end_len;
    int64_t start_revision; /* first revision delivered; 0 = changes after
                               etcd receives the watch */
    unsigned flags;         /* TR_ETCD_PREFIX, TR_ETCD_FROM_KEY,
                               TR_ETCD_PREV_KV, TR_ETCD_NO_PUT,
                               TR_ETCD_NO_DELETE, TR_ETCD_PROGRESS_NOTIFY */
};

/*
 * Watches a key or range on its own gRPC stream. When the stream breaks
 * (etcd restarted, connection lost) the watch is re-created after an
 * exponential backoff from the last revision delivered + 1, so no event is
 * lost or repeated. On 0, *out is the handle, valid until cb's final call.
 * TR_EINVAL (contradictory range), TR_ENOMEM, TR_ECANCELED when e is being
 * freed. Loop thread.
 */
int tr_etcd_watch(struct tr_etcd *e, const struct tr_etcd_watch_opts *o, tr_etcd_watch_fn cb,
                  void *arg, struct tr_etcd_watch **out) TR_MUST_CHECK;

/*
 * Asks etcd for a progress answer (res->progress) on w once it has caught up;
 * coalesced with one already pending. 0, or TR_EAGAIN while the watch is
 * being re-created (nothing is sent then). Loop thread.
 */
int tr_etcd_watch_progress(struct tr_etcd_watch *w) TR_MUST_CHECK;

/*
 * Cancels w; cb's final call, TR_ECANCELED, comes from the loop later. Must
 * not be called after cb's final call. Loop thread.
 */
void tr_etcd_watch_cancel(struct tr_etcd_watch *w);

/* The highest revision w has delivered events or progress for (0 = none). */
int64_t tr_etcd_watch_revision(const struct tr_etcd_watch *w);

#endif
