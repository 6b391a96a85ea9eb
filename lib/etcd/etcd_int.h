/*
 * etcd_int.h - what the files of the etcd client (lib/etcd/) share.
 *
 * The only header that includes gRPC and the generated protobuf-c code;
 * nothing outside lib/etcd/ includes it.
 *
 * Pieces:
 *   - struct etcd_tag: the tag of one started gRPC batch. The completion
 *     queue thread links completed tags into the client's list (a tag has at
 *     most one batch in flight, so the link lives in the tag), and the loop
 *     calls tag->done(tag, ok).
 *   - struct etcd_obj: every call, watch and keep-alive is registered on
 *     the client until it is finished, so that tr_etcd_close can cancel it
 *     and the shutdown waits for it.
 *   - struct etcd_chan: a refcounted gRPC channel to one endpoint. Calls
 *     hold a reference, so a channel replaced after UNAVAILABLE is destroyed
 *     only once its last call is done.
 *   - struct etcd_stream: one bidi streaming call (watch, keep-alive) with
 *     at most one send, one receive and the status op in flight.
 */
#ifndef TR_ETCD_INT_H
#define TR_ETCD_INT_H

#include <pthread.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "lib/etcd/etcd.h"
#include "proto/etcd/rpc.pb-c.h"

#define ETCD_CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* gRPC method paths (no service blocks in proto/etcd/rpc.proto). */
#define ETCD_M_RANGE "/etcdserverpb.KV/Range"
#define ETCD_M_PUT "/etcdserverpb.KV/Put"
#define ETCD_M_DELETE "/etcdserverpb.KV/DeleteRange"
#define ETCD_M_TXN "/etcdserverpb.KV/Txn"
#define ETCD_M_COMPACT "/etcdserverpb.KV/Compact"
#define ETCD_M_LEASE_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define ETCD_M_LEASE_REVOKE "/etcdserverpb.Lease/LeaseRevoke"
#define ETCD_M_LEASE_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define ETCD_M_LEASE_TTL "/etcdserverpb.Lease/LeaseTimeToLive"
#define ETCD_M_WATCH "/etcdserverpb.Watch/Watch"

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_MSG_MAX 512 /* bytes of a failure message handed to callbacks */

struct etcd_tag
{
    void (*done)(struct etcd_tag *t, bool ok); /* runs on the loop */
    struct etcd_tag *next;                     /* completed-list link */
    bool ok;                                   /* the event's success flag */
};

struct etcd_obj
{
    struct etcd_obj *prev; /* registration list links */
    struct etcd_obj *next;
    void (*cancel)(struct etcd_obj *o); /* called once by tr_etcd_close */
};

struct etcd_chan
{
    grpc_channel *ch; /* the gRPC channel */
    uint32_t refs;    /* the client's own (while current) + one per call */
    uint32_t ep;      /* index into the client's endpoints */
};

struct tr_etcd
{
    uv_loop_t *loop;               /* borrowed */
    uv_async_t wake;               /* the cq thread's doorbell */
    uv_timer_t rotate;             /* delayed switch to the next endpoint */
    int open_handles;              /* wake + rotate until both close callbacks ran */
    grpc_completion_queue *cq;     /* the one queue of every call */
    pthread_t thread;              /* blocks in grpc_completion_queue_next */
    bool thread_started;           /* thread is joinable */
    pthread_mutex_t mu;            /* guards done_head / done_tail */
    struct etcd_tag *done_head;    /* completed batches, oldest first */
    struct etcd_tag *done_tail;
    grpc_channel_credentials *creds; /* insecure or SSL, shared by channels */
    char *endpoints[ETCD_MAX_ENDPOINTS]; /* owned "host:port" strings */
    uint32_t n_endpoints;
    struct etcd_chan *chan;        /* current channel, created lazily */
    uint32_t next_ep;              /* endpoint of the next channel made */
    uint32_t switch_failures;      /* endpoint switches since an answer */
    uint32_t timeouts_in_row;      /* deadlines passed on chan since an answer */
    uint32_t deadline_ms;          /* unary deadline */
    uint32_t backoff_min_ms;       /* first reconnect / resume delay */
    uint32_t backoff_max_ms;       /* longest such delay */
    uint32_t keepalive_ms;         /* HTTP/2 ping period */
    uint32_t keepalive_timeout_ms; /* unanswered ping closes the connection */
    uint64_t rng;                  /* xorshift state for backoff jitter */
    struct etcd_obj objs;          /* list head of live calls and streams */
    uint32_t n_objs;
    bool closing;                  /* tr_etcd_close was called */
    bool torn_down;                /* gRPC side destroyed */
    struct tr_etcd_stats stats;    /* tr_etcd_get_stats */
};

/* ---- etcd.c: client, channels, completion thread ------------------------ */

/* Registers / unregisters o; the last unregistration of a closing client
 * completes its shutdown. */
void etcd_obj_add(struct tr_etcd *e, struct etcd_obj *o);
void etcd_obj_del(struct tr_etcd *e, struct etcd_obj *o);

/* The current channel with a reference for the caller; NULL when out of
 * memory (gRPC itself never fails to make one: a bad target gives a channel
 * whose calls fail). Release with etcd_chan_release. */
struct etcd_chan *etcd_chan_get(struct tr_etcd *e);
void etcd_chan_release(struct tr_etcd *e, struct etcd_chan *c);

/*
 * Tells the client how a call on c ended, so that UNAVAILABLE (or a second
 * timeout in a row) moves it to the next endpoint, after a backoff once
 * switches fail in a row, and an answer from etcd resets that backoff.
 */
void etcd_chan_report(struct tr_etcd *e, struct etcd_chan *c, grpc_status_code st);

/* A deadline ms from now, and "never" for streams. */
gpr_timespec etcd_deadline(uint32_t ms);

/* Backoff before retry number failures (from 1), jittered, within the
 * client's bounds, in ms. */
uint64_t etcd_backoff_ms(struct tr_etcd *e, uint32_t failures);

/* TR_E* for a gRPC status (0 for OK). */
int etcd_status_err(grpc_status_code st);

/* "UNAVAILABLE" and friends. */
const char *etcd_status_name(grpc_status_code st);

/* Formats "etcd <what> failed: <STATUS>: <details>" into out. */
void etcd_status_msg(char *out, size_t size, const char *what, grpc_status_code st,
                     grpc_slice details);

/* ---- etcd_call.c: codec, unary calls, streams --------------------------- */

/* The allocator protobuf-c decodes with (lib/base/alloc.h, so failures are
 * testable). */
extern ProtobufCAllocator etcd_pb_allocator;

/* Packs m into a new byte buffer (the caller destroys it). */
grpc_byte_buffer *etcd_pack(const ProtobufCMessage *m);

/* Decodes bb into a message of desc; NULL when malformed or out of memory.
 * Free with protobuf_c_message_free_unpacked(m, &etcd_pb_allocator). */
ProtobufCMessage *etcd_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/*
 * Converts a decoded answer into the callback's result view. res->type is
 * set by the caller. kvs must have room for etcd_result_count_kvs(...) views,
 * subs for etcd_result_count_subs(...) results (txn responses).
 */
size_t etcd_result_count_kvs(enum tr_etcd_op_type type, const ProtobufCMessage *m);
size_t etcd_result_count_subs(enum tr_etcd_op_type type, const ProtobufCMessage *m);
void etcd_result_fill(enum tr_etcd_op_type type, const ProtobufCMessage *m,
                      struct tr_etcd_result *res, struct tr_etcd_kv **kvs,
                      struct tr_etcd_result **subs);

/* Copies a decoded key-value into a view. */
void etcd_kv_view(const Mvccpb__KeyValue *src, struct tr_etcd_kv *dst);

/*
 * Starts a unary call of method with request m; cb gets the answer decoded
 * as type. Returns 0, TR_ENOMEM, TR_EUNAVAIL (gRPC made no call) or
 * TR_ECANCELED.
 */
int etcd_unary(struct tr_etcd *e, enum tr_etcd_op_type type, const char *method,
               const ProtobufCMessage *m, tr_etcd_fn cb, void *arg);

struct etcd_stream;

/* Answers of a stream: m is borrowed for the call. */
typedef void (*etcd_stream_msg_fn)(struct etcd_stream *s, const ProtobufCMessage *m);

/*
 * The stream ended and every batch is back: err is the TR_E* of the status
 * (TR_ECANCELED after etcd_stream_cancel), st the gRPC status, msg a
 * description. The stream can be opened again from here.
 */
typedef void (*etcd_stream_end_fn)(struct etcd_stream *s, int err, grpc_status_code st,
                                   const char *msg);

/* Called when a send completed, so the owner may send what it held back. */
typedef void (*etcd_stream_sent_fn)(struct etcd_stream *s);

struct etcd_stream
{
    struct tr_etcd *e;                  /* the client */
    const char *method;                 /* gRPC path */
    const ProtobufCMessageDescriptor *resp_desc; /* answers decode as this */
    etcd_stream_msg_fn on_msg;          /* each answer */
    etcd_stream_end_fn on_end;          /* the call is over */
    etcd_stream_sent_fn on_sent;        /* a send completed; may be NULL */
    struct etcd_chan *chan;             /* channel of the open call */
    grpc_call *call;                    /* NULL when closed */
    struct etcd_tag send_tag;           /* SEND_MESSAGE (+ initial metadata) */
    struct etcd_tag recv_tag;           /* RECV_MESSAGE (+ initial metadata) */
    struct etcd_tag status_tag;         /* RECV_STATUS_ON_CLIENT */
    grpc_byte_buffer *send_bb;          /* message of the send in flight */
    grpc_byte_buffer *recv_bb;          /* filled by RECV_MESSAGE */
    grpc_metadata lead_md;              /* "hasleader: true", sent at open */
    grpc_metadata_array init_md;        /* etcd's headers (required, unused) */
    grpc_metadata_array trail_md;       /* etcd's trailers (unused) */
    grpc_status_code status;            /* the call's status, once status_done */
    grpc_slice details;                 /* its text */
    const char *error_string;           /* gRPC's debug text, gpr_free'd */
    int pending;                        /* batches in flight */
    bool sending;                       /* a send batch in flight */
    bool status_done;                   /* RECV_STATUS_ON_CLIENT came back */
    bool cancelled;                     /* etcd_stream_cancel was called */
    bool got_msg;                       /* an answer arrived on this call */
};

/* Sets up a closed stream (no gRPC objects yet). */
void etcd_stream_init(struct etcd_stream *s, struct tr_etcd *e, const char *method,
                      const ProtobufCMessageDescriptor *resp_desc, etcd_stream_msg_fn on_msg,
                      etcd_stream_end_fn on_end, etcd_stream_sent_fn on_sent);

/* Opens the call on the current channel and sends first. 0, TR_ENOMEM,
 * TR_EUNAVAIL (gRPC made no call) or TR_ECANCELED. */
int etcd_stream_open(struct etcd_stream *s, const ProtobufCMessage *first);

/* Sends m; TR_EAGAIN while a send is in flight or the call is closing. */
int etcd_stream_send(struct etcd_stream *s, const ProtobufCMessage *m);

/* Ends the open call with CANCELLED (reported as TR_ECANCELED). */
void etcd_stream_cancel(struct etcd_stream *s);

/* Ends the open call with status st and details why (a local failure). */
void etcd_stream_abort(struct etcd_stream *s, grpc_status_code st, const char *why);

static inline bool etcd_stream_is_open(const struct etcd_stream *s)
{
    return s->call != NULL;
}

/* ---- etcd_kv.c: request building ---------------------------------------- */

/* Key range of a request after its flags: key/key_len possibly replaced by
 * "\0" and end filled in. Owns end_buf. */
struct etcd_range
{
    ProtobufCBinaryData key;
    ProtobufCBinaryData end;
    uint8_t *end_buf; /* tr_malloc'd, or NULL */
};

/* Resolves key / range_end / PREFIX / FROM_KEY into r. 0, TR_EINVAL,
 * TR_ENOMEM. Release with etcd_range_release. */
int etcd_range_make(struct etcd_range *r, const void *key, size_t key_len, const void *range_end,
                    size_t range_end_len, unsigned flags);
void etcd_range_release(struct etcd_range *r);

#endif
