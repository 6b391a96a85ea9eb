/*
 * proto.h - the worker protocol: one msgpack frame per message,
 * [protocol_version, type, body], over ZeroMQ ROUTER (scheduler) / DEALER
 * (worker). docs/protocol.md is the contract; this is its code.
 *
 * User data (task arguments, params, outputs) travels as msgpack wrapped in
 * `bin`, so the scheduler stores and forwards it without decoding it.
 *
 * Decoding never trusts a frame: tr_proto_decode first walks the bytes with
 * tr_mp_check (sizes, nesting depth, element counts against the bytes that
 * remain) and only then lets msgpack-c unpack them. Decoded messages hold
 * views (struct tr_str) into the frame and into the decoder's zone: they are
 * valid until the next tr_proto_decode on the same decoder or its release.
 *
 * Any thread may use these functions on objects it owns.
 */
#ifndef TR_PROTO_H
#define TR_PROTO_H

#include <msgpack.h>

#include "lib/base/buf.h"
#include "lib/base/error.h"

#define TR_PROTO_VERSION 1

enum tr_msg_type
{
    TR_MSG_HELLO = 1,        /* worker -> scheduler: who I am, what I offer */
    TR_MSG_WELCOME = 2,      /* scheduler -> worker: accepted, heartbeat interval */
    TR_MSG_HEARTBEAT = 3,    /* both ways */
    TR_MSG_TASK = 4,         /* scheduler -> worker: run one task instance */
    TR_MSG_RESULT = 5,       /* worker -> scheduler: the outcome of one attempt */
    TR_MSG_CANCEL = 6,       /* scheduler -> worker: stop one attempt */
    TR_MSG_PIPELINE_GET = 7, /* worker -> scheduler: send me the source of a digest */
    TR_MSG_PIPELINE = 8,     /* scheduler -> worker: the source (or an error) */
    TR_MSG_BYE = 9,          /* either way: I am going, or: say HELLO again */
    TR_MSG_LOG = 10,         /* worker -> scheduler: log lines of a running task */
    TR_MSG_CALL = 11,        /* worker -> scheduler: a task asks the scheduler (registry, labels) */
    TR_MSG_CALL_REPLY = 12,  /* scheduler -> worker: the answer to one CALL */
    TR_MSG_TYPE_MAX = 12
};

/* Caps applied to every frame before msgpack-c sees it. */
struct tr_mp_limits
{
    size_t max_frame;      /* bytes in one frame */
    uint32_t max_depth;    /* nesting of arrays and maps */
    uint32_t max_elements; /* elements in one array or map */
    uint32_t max_str;      /* bytes in one str, bin or ext */
};

/* The defaults: 64 MiB frames, depth 32 (what msgpack-c unpacks), 1,000,000 elements, 64 MiB strings. */
extern const struct tr_mp_limits tr_mp_default_limits;

/*
 * Walks one msgpack value at data without allocating and checks it against
 * lim: every declared length and count must fit in the bytes that remain.
 * Returns the value's encoded size (> 0), or TR_EPROTO (malformed or
 * truncated) or TR_ELIMIT (a cap was exceeded).
 */
long tr_mp_check(const void *data, size_t len, const struct tr_mp_limits *lim);

/* Labels, resources and the like: a small list of key/value string views. */
struct tr_kv
{
    struct tr_str key;
    struct tr_str value;
};

#define TR_PROTO_MAX_LABELS 32
#define TR_PROTO_MAX_LOGS 64
#define TR_PROTO_MAX_GPUS 64 /* devices one worker describes, and one task may hold */

/* One GPU as a worker describes it (HELLO, HEARTBEAT). */
struct tr_gpu_info
{
    uint32_t index;        /* device index (what CUDA_VISIBLE_DEVICES names) */
    struct tr_str name;    /* "NVIDIA A100-SXM4-40GB", or empty when unknown */
    uint64_t mem_total_mb; /* 0 when unknown */
    uint64_t mem_used_mb;
    int32_t util;          /* percent busy, -1 when unknown */
};

struct tr_msg_hello
{
    struct tr_str worker_id; /* stable for the worker process's life */
    struct tr_str pool;      /* "cpu", "gpu", or any name */
    uint32_t slots;          /* tasks it runs at once */
    uint32_t gpus;           /* GPUs it offers (resources) */
    uint32_t cpus;           /* CPU cores it has (resources) */
    uint64_t mem_mb;         /* memory it has (resources) */
    uint32_t n_labels;
    struct tr_kv labels[TR_PROTO_MAX_LABELS];
    struct tr_str version;   /* worker software version */
    uint32_t n_gpu_info;     /* optional "gpu_info": one entry per GPU (absent: none) */
    struct tr_gpu_info gpu_info[TR_PROTO_MAX_GPUS];
};

/* HEARTBEAT: the worker's may carry its GPUs' current memory and load. */
struct tr_msg_heartbeat
{
    uint32_t n_gpus;         /* optional "gpus" (absent: none, or not measured) */
    struct tr_gpu_info gpus[TR_PROTO_MAX_GPUS];
};

struct tr_msg_welcome
{
    uint32_t heartbeat_ms; /* interval both sides use; 3 missed = presumed dead */
    uint64_t epoch;        /* the scheduler's epoch (changes at each start) */
};

struct tr_msg_task
{
    uint64_t id;           /* dispatch id: the fencing token, echoed in RESULT */
    uint64_t epoch;        /* the scheduler epoch that dispatched it */
    uint32_t attempt;      /* 1 for the first dispatch of this instance */
    struct tr_str run_id;
    struct tr_str task;    /* task name in the pipeline */
    uint32_t index;        /* map element (from 1), 0 for an unmapped task */
    struct tr_str digest;  /* pipeline source digest (sha256 hex) */
    struct tr_str params;  /* msgpack map */
    struct tr_str args;    /* msgpack array: the task's arguments after ctx */
    double timeout;        /* seconds, 0 = none */
    uint32_t n_gpus;       /* optional "gpus": device indices given to this attempt */
    uint32_t gpus[TR_PROTO_MAX_GPUS];
};

struct tr_msg_result
{
    uint64_t id;            /* the dispatch id from TASK */
    uint64_t epoch;
    uint32_t attempt;
    bool ok;                /* true: output is set; false: error is set */
    struct tr_str output;   /* msgpack value (may be empty when ok is false) */
    struct tr_str error;    /* message with traceback when !ok */
    bool timed_out;         /* the attempt was stopped by its timeout */
    bool cancelled;         /* the attempt was stopped by CANCEL */
    double started_at;      /* wall-clock seconds */
    double finished_at;
    uint32_t n_logs;
    struct tr_str logs[TR_PROTO_MAX_LOGS]; /* ctx.log lines not yet sent with LOG */
    struct tr_str usage;   /* optional msgpack array of maps, one per model call
                            * (provider, model, prompt_digest, prompt_tokens,
                            * completion_tokens, cost, latency_ms, cached);
                            * empty: none (and absent from the frame) */
    bool skipped;          /* the task returned trellis.skip(reason): ok is false,
                            * error is the reason (absent from the frame when false) */
};

struct tr_msg_cancel
{
    uint64_t id; /* dispatch id to stop */
    struct tr_str reason;
};

struct tr_msg_pipeline_get
{
    struct tr_str digest;
};

struct tr_msg_pipeline
{
    struct tr_str digest;
    struct tr_str source; /* empty when error is set */
    struct tr_str error;
    struct tr_str name;   /* file name for messages ("rag.lua"), may be empty */
};

struct tr_msg_bye
{
    struct tr_str reason;
};

struct tr_msg_log
{
    uint64_t id;
    uint32_t n_logs;
    struct tr_str logs[TR_PROTO_MAX_LOGS];
};

/* Largest body of a CALL or CALL_REPLY: a call carries one registry or label
 * write (inline artifacts are at most 256 KiB), so more is an error. */
#define TR_PROTO_CALL_BODY_MAX (1u << 20)

struct tr_msg_call
{
    uint64_t id;          /* call id, unique within the worker's life; echoed in CALL_REPLY */
    uint64_t dispatch;    /* the dispatch id of the task that calls (must be the worker's) */
    struct tr_str op;     /* "label", "registry.get", "registry.register", "registry.promote" */
    struct tr_str body;   /* msgpack map: the op's arguments */
};

struct tr_msg_call_reply
{
    uint64_t id;          /* the call id */
    uint64_t dispatch;    /* the dispatch id of the call */
    uint32_t status;      /* HTTP status of the same call through the API (200, 201, 404, ...) */
    struct tr_str body;   /* msgpack: the API's JSON answer (an error: {error = {code, message}}) */
};

struct tr_msg
{
    enum tr_msg_type type;
    union
    {
        struct tr_msg_hello hello;
        struct tr_msg_welcome welcome;
        struct tr_msg_heartbeat heartbeat;
        struct tr_msg_task task;
        struct tr_msg_result result;
        struct tr_msg_cancel cancel;
        struct tr_msg_pipeline_get pipeline_get;
        struct tr_msg_pipeline pipeline;
        struct tr_msg_bye bye;
        struct tr_msg_log log;
        struct tr_msg_call call;
        struct tr_msg_call_reply call_reply;
    } u;
};

/* Decoder state: reused across frames to avoid reallocating the zone. */
struct tr_proto_decoder
{
    msgpack_unpacked unpacked;   /* private: msgpack-c's result and zone */
    struct tr_mp_limits limits;  /* caps for this decoder */
};

void tr_proto_decoder_init(struct tr_proto_decoder *d, const struct tr_mp_limits *lim);
void tr_proto_decoder_release(struct tr_proto_decoder *d);

/*
 * Decodes one frame into out. On failure returns TR_EPROTO (malformed, wrong
 * version, unknown type, missing field) or TR_ELIMIT, and sets err to a
 * short reason (which is also the drop counter's label: "bad_msgpack",
 * "too_large", "bad_version", "unknown_type", "bad_body").
 */
int tr_proto_decode(struct tr_proto_decoder *d, const void *data, size_t len, struct tr_msg *out,
                    struct tr_error *err) TR_MUST_CHECK;

/*
 * Encoders: append one whole frame to sb (msgpack-c's sbuffer, which the
 * caller owns and clears). They return 0 or TR_ENOMEM.
 */
int tr_proto_encode(msgpack_sbuffer *sb, const struct tr_msg *m) TR_MUST_CHECK;

/* A C string as a view, for filling messages. */
static inline struct tr_str tr_str_c(const char *s)
{
    return (struct tr_str){s, s ? strlen(s) : 0};
}

/* Name of a message type for logs ("TASK"); "?" when unknown. */
const char *tr_msg_type_name(int type);

#endif
