/*
 * sandbox.c - the pool of sandbox children that read pipeline files.
 *
 * A child is one process with a pipe each way, a deadline timer and at most
 * one request in flight. Requests wait in a FIFO until a child is idle; the
 * pool starts a child when none is idle and fewer than cfg.max live, and
 * keeps cfg.warm started so that ordinary submissions do not pay for an
 * exec. Every child is started detached (its own session, so its process
 * group is its pid) and killed as a group, and every one is reaped through
 * its exit callback before its handles are closed: closing an uv_process_t
 * before its exit would leave a zombie.
 *
 * A reply is decoded on the loop when small; a large graph (a million
 * tasks is a few hundred MB of msgpack) is decoded on libuv's thread pool,
 * which is safe there because decoding is our own bounded code, not Lua.
 *
 * Lifetimes: a job lives until it is answered and its write has completed
 * (a killed child's pending write completes with an error later); a child
 * lives until its exit callback and the close callbacks of its four
 * handles; the pool itself, once closed, lives until its last child and its
 * last off-loop decode are gone.
 */
#include "scheduler/sandbox.h"

#include <signal.h>

#include "lib/base/alloc.h"
#include "lib/base/buf.h"
#include "lib/base/log.h"
#include "lib/lua/pipeline_codec.h"
#include "lib/wire/mp_read.h"

#define TRANSFER_S 30.0              /* once a reply has begun, for the rest of it */
#define DECODE_OFF_LOOP (1u << 20)   /* replies larger than this are decoded off the loop */
#define READ_CHUNK (64u << 10)
#define RETIRE_SLACK 4               /* idle children kept beyond cfg.warm after a burst */

enum job_op
{
    OP_LOAD,                      /* "load": the graph */
    OP_WHEN                       /* "when": a trigger's verdict */
};

struct job
{
    struct job *next;             /* in the queue */
    struct sandbox *sb;
    enum job_op op;
    uint64_t id;
    char *src;                    /* NUL-terminated copy; becomes the def's source */
    size_t len;
    char *name;
    char digest[65];              /* sha256 of src: the reply's graph must carry it */
    sandbox_load_fn done;         /* OP_LOAD */
    sandbox_when_fn when_done;    /* OP_WHEN */
    void *arg;
    char *trigger;                /* OP_WHEN: the trigger's name and the stats (msgpack) */
    char *stats;
    size_t stats_len;
    bool verdict;                 /* OP_WHEN: the answer */
    char *frame;                  /* the request frame (malloc'd by msgpack-c) */
    size_t frame_len;
    uv_write_t wr;
    bool writing;                 /* wr not completed yet */
    bool answered;
    /* Decoding the reply */
    uv_work_t work;
    char *resp;                   /* the reply's body (owned) */
    size_t resp_len;
    struct tr_pipeline_def *def;
    struct tr_error err;
};

enum child_state
{
    C_IDLE,
    C_BUSY,
    C_DYING                       /* killed or lost; waiting for its exit */
};

struct child
{
    struct child *next;
    struct sandbox *sb;
    uv_process_t proc;
    uv_pipe_t in;                 /* the child's stdin: requests */
    uv_pipe_t out;                /* the child's stdout: replies */
    uv_timer_t timer;             /* the deadline of the request in flight */
    int open;                     /* handles not closed yet */
    enum child_state state;
    bool spawned;
    bool extended;                /* the deadline was moved once for a reply in transfer */
    struct job *job;              /* in flight, or NULL */
    struct tr_buf rbuf;           /* the reply so far, length prefix included */
    uint32_t served;
};

struct sandbox
{
    uv_loop_t *loop;
    struct sandbox_config cfg;
    char exe[4096];
    char ppid[24];
    char mem[32];
    char **env;                   /* the environment plus SANDBOX_ENV_MARK (owned) */
    struct child *children;
    uint32_t n_children;
    struct job *head, *tail;      /* waiting for a child */
    uint32_t n_queued;
    uint32_t n_decoding;          /* replies being decoded off the loop */
    struct job *decoding;         /* those jobs (linked by next) */
    uint64_t next_id;
    uint64_t last_fail_ms;        /* uv_now of the last failed start or early death */
    bool closing;
    struct sandbox_stats stats;
    char readbuf[READ_CHUNK];     /* every read lands here first; one loop thread */
};

static void pump(struct sandbox *sb);
static uint32_t count_idle(const struct sandbox *sb);

/* ====================================================================== */
/* Jobs                                                                    */
/* ====================================================================== */

static void job_free(struct job *j)
{
    tr_free(j->src);
    tr_free(j->name);
    tr_free(j->trigger);
    tr_free(j->stats);
    free(j->frame);
    tr_free(j->resp);
    tr_pipeline_def_free(j->def);
    tr_free(j);
}

static void job_maybe_free(struct job *j)
{
    if (j->answered && !j->writing)
        job_free(j);
}

/* Calls the job's callback once: with j->def (taken by the caller) or the error given. */
static void job_answer(struct job *j, int code, const char *fmt, ...) TR_PRINTF(3, 4);

static void job_answer(struct job *j, int code, const char *fmt, ...)
{
    if (j->answered)
        return;
    j->answered = true;
    if (code != 0) {
        tr_pipeline_def_free(j->def);
        j->def = NULL;
        if (fmt != NULL) {
            va_list ap;
            va_start(ap, fmt);
            char msg[TR_ERROR_MSG_MAX];
            vsnprintf(msg, sizeof(msg), fmt, ap);
            va_end(ap);
            tr_error_set(&j->err, code, "%s", msg);
        }
    }
    if (j->op == OP_WHEN) {
        bool ok = code == 0 && j->err.code == 0;
        j->when_done(j->arg, ok ? (int)j->verdict : -1, ok ? NULL : &j->err);
        job_maybe_free(j);
        return;
    }
    struct tr_pipeline_def *def = j->def;
    j->def = NULL;
    j->done(j->arg, def, def != NULL ? NULL : &j->err);
    job_maybe_free(j);
}

static void on_written(uv_write_t *wr, int status)
{
    struct job *j = wr->data;
    (void)status; /* a failed write means a dead child: its exit answers the job */
    j->writing = false;
    job_maybe_free(j);
}

static int be32(const void *p)
{
    const unsigned char *b = p;
    return (int)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
}

static void put_be32(void *p, uint32_t n)
{
    unsigned char *b = p;
    b[0] = (unsigned char)(n >> 24);
    b[1] = (unsigned char)(n >> 16);
    b[2] = (unsigned char)(n >> 8);
    b[3] = (unsigned char)n;
}

static int kv_str(msgpack_packer *pk, const char *k, const char *v, size_t n)
{
    size_t kn = strlen(k);
    return msgpack_pack_str(pk, kn) || msgpack_pack_str_body(pk, k, kn) ||
           msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, v, n);
}

static int key(msgpack_packer *pk, const char *k)
{
    size_t kn = strlen(k);
    return msgpack_pack_str(pk, kn) || msgpack_pack_str_body(pk, k, kn);
}

/* The request frame: length, then {op, id, name, src, limits..., [trigger, stats]}. */
static int job_encode(struct job *j, const struct tr_pipeline_limits *lim)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    static const char zero[4];
    bool when = j->op == OP_WHEN;
    int rc = msgpack_sbuffer_write(&sb, zero, 4) || msgpack_pack_map(&pk, when ? 10 : 8) ||
             (when ? kv_str(&pk, "op", "when", 4) : kv_str(&pk, "op", "load", 4)) ||
             key(&pk, "id") || msgpack_pack_uint64(&pk, j->id) ||
             kv_str(&pk, "name", j->name, strlen(j->name)) || key(&pk, "src") ||
             msgpack_pack_bin(&pk, j->len) || msgpack_pack_bin_body(&pk, j->src, j->len) ||
             key(&pk, "mem_max") || msgpack_pack_uint64(&pk, lim->mem_max) ||
             key(&pk, "instr_max") || msgpack_pack_uint64(&pk, lim->instr_max) ||
             key(&pk, "wall_max") || msgpack_pack_double(&pk, lim->wall_max_s) ||
             key(&pk, "max_tasks") || msgpack_pack_uint32(&pk, lim->max_tasks);
    if (rc == 0 && when)
        rc = kv_str(&pk, "trigger", j->trigger, strlen(j->trigger)) || key(&pk, "stats") ||
             msgpack_pack_bin(&pk, j->stats_len) ||
             msgpack_pack_bin_body(&pk, j->stats, j->stats_len);
    if (rc != 0 || sb.size - 4 > SANDBOX_REQ_MAX) {
        msgpack_sbuffer_destroy(&sb);
        return rc != 0 ? TR_ENOMEM : TR_E2BIG;
    }
    put_be32(sb.data, (uint32_t)(sb.size - 4));
    j->frame_len = sb.size;
    j->frame = msgpack_sbuffer_release(&sb);
    return 0;
}

/* Any thread: the reply body into j->def or j->err. */
static void job_decode(struct job *j, const struct tr_pipeline_limits *lim)
{
    struct tr_mp_rd r;
    tr_mp_rd_init(&r, j->resp, j->resp_len);
    uint64_t id = UINT64_MAX;
    int64_t code = 1;
    struct tr_str msg = {"", 0};
    uint32_t n = tr_mp_rd_map(&r);
    for (uint32_t i = 0; i < n && r.err == 0; i++) {
        struct tr_str k = tr_mp_rd_str(&r);
        if (tr_str_eq(k, "id"))
            id = tr_mp_rd_uint(&r);
        else if (tr_str_eq(k, "rc"))
            code = tr_mp_rd_int(&r);
        else if (tr_str_eq(k, "msg"))
            msg = tr_mp_rd_str(&r);
        else if (tr_str_eq(k, "value"))
            j->verdict = tr_mp_rd_bool(&r);
        else
            tr_mp_rd_skip(&r);
    }
    if (r.err != 0 || id != j->id || code > 0 || code < -4095) {
        tr_error_set(&j->err, TR_EPROTO, "%s: malformed reply from the sandbox", j->name);
        return;
    }
    if (code < 0) {
        tr_error_set(&j->err, (int)code, "%.*s", (int)TR_MIN(msg.len, TR_ERROR_MSG_MAX - 1),
                     msg.p);
        return;
    }
    if (j->op == OP_WHEN) {
        if (tr_mp_rd_left(&r) != 0)
            tr_error_set(&j->err, TR_EPROTO, "%s: malformed reply from the sandbox", j->name);
        return;
    }
    size_t used = 0;
    size_t at = j->resp_len - tr_mp_rd_left(&r);
    int rc = tr_pipeline_def_unpack(j->resp + at, j->resp_len - at, lim, &j->def, &used,
                                    &j->err);
    if (rc == 0 && (at + used != j->resp_len || strcmp(j->def->digest, j->digest) != 0)) {
        tr_pipeline_def_free(j->def);
        j->def = NULL;
        tr_error_set(&j->err, TR_EPROTO, "%s: the sandbox returned another graph", j->name);
    }
    if (j->def != NULL) {
        j->def->source = j->src;
        j->def->source_len = j->len;
        j->src = NULL;
    }
}

static void decode_work(uv_work_t *w)
{
    struct job *j = w->data;
    job_decode(j, &j->sb->cfg.limits);
}

static void env_free(char **env)
{
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        tr_free(env[i]);
    tr_free(env);
}

static void sandbox_maybe_free(struct sandbox *sb)
{
    if (sb->closing && sb->n_children == 0 && sb->n_decoding == 0) {
        env_free(sb->env);
        tr_free(sb);
    }
}

/* A copy of the environment with the mark that tells a child it is one. */
static char **env_with_mark(void)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = tr_calloc(n + 2, sizeof(*env));
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], SANDBOX_ENV_MARK "=", strlen(SANDBOX_ENV_MARK) + 1) == 0)
            continue;
        if ((env[k++] = tr_strdup(environ[i])) == NULL) {
            env_free(env);
            return NULL;
        }
    }
    if ((env[k] = tr_strdup(SANDBOX_ENV_MARK "=1")) == NULL) {
        env_free(env);
        return NULL;
    }
    return env;
}

static void decode_after(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct sandbox *sb = j->sb;
    sb->n_decoding--;
    for (struct job **pp = &sb->decoding; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    }
    j->next = NULL;
    if (j->answered) {
        /* sandbox_close answered it while it was being decoded. */
        job_maybe_free(j);
        sandbox_maybe_free(sb);
        return;
    }
    if (status != 0)
        job_answer(j, TR_ECANCELED, "pipeline load cancelled: the scheduler is stopping");
    else
        job_answer(j, 0, NULL);
}

/* Answers a job whose reply a pool thread is decoding without touching what
 * that thread writes (def, err, verdict); decode_after frees it. */
static void cancel_decoding(struct job *j)
{
    struct tr_error e;
    tr_error_init(&e);
    tr_error_set(&e, TR_ECANCELED, "pipeline load cancelled: the scheduler is stopping");
    j->answered = true;
    if (j->op == OP_WHEN)
        j->when_done(j->arg, -1, &e);
    else
        j->done(j->arg, NULL, &e);
}

/* ====================================================================== */
/* Children                                                                */
/* ====================================================================== */

static void child_unlink(struct child *c)
{
    struct sandbox *sb = c->sb;
    for (struct child **pp = &sb->children; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            return;
        }
    }
}

static void on_child_closed(uv_handle_t *h)
{
    struct child *c = h->data;
    if (--c->open > 0)
        return;
    struct sandbox *sb = c->sb;
    tr_buf_release(&c->rbuf);
    tr_free(c);
    sb->n_children--;
    if (sb->closing)
        sandbox_maybe_free(sb);
    else
        pump(sb);
}

/* After the exit (or a failed spawn): closes every handle; the last close frees c. */
static void child_close(struct child *c)
{
    child_unlink(c);
    uv_close((uv_handle_t *)&c->in, on_child_closed);
    uv_close((uv_handle_t *)&c->out, on_child_closed);
    uv_close((uv_handle_t *)&c->timer, on_child_closed);
    uv_close((uv_handle_t *)&c->proc, on_child_closed);
}

/* Kills the child's process group; its exit callback reaps and closes it. */
static void child_kill(struct child *c)
{
    if (c->state == C_DYING)
        return;
    c->state = C_DYING;
    uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->out);
    if (kill(-c->proc.pid, SIGKILL) != 0)
        (void)uv_process_kill(&c->proc, SIGKILL);
}

static void on_child_exit(uv_process_t *p, int64_t status, int sig)
{
    struct child *c = p->data;
    struct sandbox *sb = c->sb;
    struct job *j = c->job;
    c->job = NULL;
    if (j != NULL) {
        /* It died while evaluating, not by our hand: its own fences (SIGXCPU,
         * an allocation refused by RLIMIT_AS) or a crash. */
        sb->stats.crashed++;
        if (sig == SIGXCPU || sig == SIGKILL)
            job_answer(j, TR_ELIMIT, "%s: CPU limit exceeded (the sandbox process was killed "
                       "by signal %d)", j->name, sig);
        else
            job_answer(j, TR_EIO, "%s: the sandbox process ended while reading the pipeline "
                       "(status %lld, signal %d)", j->name, (long long)status, sig);
    }
    if (j == NULL && c->served == 0 && c->state != C_DYING)
        sb->last_fail_ms = uv_now(sb->loop) + 1; /* died on its own before any work */
    if (j == NULL && c->state != C_DYING && !sb->closing) {
        tr_warn("sandbox child pid=%d ended (status %lld, signal %d)", p->pid,
                (long long)status, sig);
    }
    child_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct child *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->sb->readbuf, sizeof(c->sb->readbuf));
}

/*
 * After a burst the pool holds more idle children than it keeps warm; the
 * surplus beyond a few (hysteresis, so that a steady load does not start
 * and end a process per file) ends.
 */
static void retire_surplus(struct child *c)
{
    struct sandbox *sb = c->sb;
    if (c->state == C_IDLE && count_idle(sb) > sb->cfg.warm + RETIRE_SLACK)
        child_kill(c);
}

/* The whole reply is in c->rbuf: hands it to decoding and frees the child. */
static void child_complete(struct child *c)
{
    struct sandbox *sb = c->sb;
    struct job *j = c->job;
    uv_timer_stop(&c->timer);
    c->job = NULL;
    c->state = C_IDLE;
    c->served++;
    size_t len = 0;
    char *all = tr_buf_detach(&c->rbuf, &len);
    j->resp_len = len - 4;
    j->resp = all;
    memmove(j->resp, all + 4, j->resp_len);
    if (j->resp_len > DECODE_OFF_LOOP) {
        j->work.data = j;
        if (uv_queue_work(sb->loop, &j->work, decode_work, decode_after) == 0) {
            sb->n_decoding++;
            j->next = sb->decoding;
            sb->decoding = j;
            pump(sb);
            retire_surplus(c);
            return;
        }
    }
    job_decode(j, &sb->cfg.limits);
    job_answer(j, 0, NULL);
    pump(sb);
    retire_surplus(c);
}

/* Drops a child that broke the protocol: its job fails with why. */
static void child_broken(struct child *c, const char *why)
{
    struct job *j = c->job;
    c->job = NULL;
    tr_warn("sandbox child pid=%d: %s; killing it", c->proc.pid, why);
    child_kill(c);
    if (j != NULL)
        job_answer(j, TR_EPROTO, "%s: %s", j->name, why);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct child *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF: the child is ending; its exit callback answers a job in flight. */
        uv_read_stop(s);
        return;
    }
    if (c->job == NULL) {
        child_broken(c, "bytes from the sandbox with no request in flight");
        return;
    }
    if (tr_buf_add(&c->rbuf, buf->base, (size_t)nread) != 0) {
        child_broken(c, "reply from the sandbox too large");
        return;
    }
    if (c->rbuf.len < 4)
        return;
    uint32_t n = (uint32_t)be32(c->rbuf.buf);
    if (n > SANDBOX_RESP_MAX) {
        child_broken(c, "reply from the sandbox too large");
    } else if (c->rbuf.len > 4 + (size_t)n) {
        child_broken(c, "bytes from the sandbox beyond its reply");
    } else if (c->rbuf.len == 4 + (size_t)n) {
        child_complete(c);
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct child *c = t->data;
    struct sandbox *sb = c->sb;
    struct job *j = c->job;
    if (j == NULL)
        return;
    if (c->rbuf.len > 0 && !c->extended) {
        /* Evaluated in time; the graph is on its way. */
        c->extended = true;
        uv_timer_start(&c->timer, on_deadline, (uint64_t)(TRANSFER_S * 1000), 0);
        return;
    }
    c->job = NULL;
    sb->stats.killed++;
    tr_warn("sandbox child pid=%d: %s took longer than %g s; killed", c->proc.pid, j->name,
            sb->cfg.limits.wall_max_s);
    child_kill(c);
    job_answer(j, TR_ELIMIT, "%s: time limit of %g s exceeded (the sandbox process was killed)",
               j->name, sb->cfg.limits.wall_max_s);
    pump(sb);
}

static int spawn(struct sandbox *sb)
{
    struct child *c = tr_calloc(1, sizeof(*c));
    if (c == NULL)
        return TR_ENOMEM;
    c->sb = sb;
    c->state = C_IDLE;
    tr_buf_init(&c->rbuf, (size_t)SANDBOX_RESP_MAX + 4);
    uv_pipe_init(sb->loop, &c->in, 0);
    uv_pipe_init(sb->loop, &c->out, 0);
    uv_timer_init(sb->loop, &c->timer);
    c->in.data = c->out.data = c->timer.data = c->proc.data = c;
    c->open = 4;
    char *args[] = {sb->exe, SANDBOX_CHILD_FLAG, sb->ppid, sb->mem, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&c->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out},
        {.flags = UV_IGNORE},
    };
    uv_process_options_t opt = {
        .exit_cb = on_child_exit,
        .file = sb->exe,
        .args = args,
        .env = sb->env,
        .flags = UV_PROCESS_DETACHED, /* setsid: its own process group, killed as one */
        .stdio_count = 3,
        .stdio = stdio,
    };
    /* Counted at once, so that a failed spawn's close does not undercount. */
    sb->n_children++;
    c->next = sb->children;
    sb->children = c;
    int rc = uv_spawn(sb->loop, &c->proc, &opt);
    if (rc < 0) {
        tr_err("cannot start a sandbox process (%s): %s", sb->exe, uv_strerror(rc));
        sb->last_fail_ms = uv_now(sb->loop) + 1;
        c->state = C_DYING;
        child_close(c);
        return rc;
    }
    c->spawned = true;
    sb->stats.spawned++;
    rc = uv_read_start((uv_stream_t *)&c->out, on_alloc, on_read);
    if (rc < 0) {
        child_kill(c);
        return rc;
    }
    return 0;
}

static void assign(struct child *c, struct job *j)
{
    struct sandbox *sb = c->sb;
    c->job = j;
    c->state = C_BUSY;
    c->extended = false;
    tr_buf_reset(&c->rbuf);
    uv_buf_t b = uv_buf_init(j->frame, (unsigned)j->frame_len);
    j->wr.data = j;
    int rc = uv_write(&j->wr, (uv_stream_t *)&c->in, &b, 1, on_written);
    if (rc < 0) {
        child_broken(c, "cannot write to the sandbox");
        return;
    }
    j->writing = true;
    if (sb->cfg.limits.wall_max_s > 0) {
        /* A trigger is two evaluations, the file and then the call. */
        double s = sb->cfg.limits.wall_max_s * (j->op == OP_WHEN ? 2 : 1) + sb->cfg.grace_s;
        uv_timer_start(&c->timer, on_deadline, (uint64_t)(s * 1000), 0);
    }
}

static struct child *idle_child(struct sandbox *sb)
{
    for (struct child *c = sb->children; c != NULL; c = c->next) {
        if (c->state == C_IDLE && c->spawned)
            return c;
    }
    return NULL;
}

/* Children ready for a request. */
static uint32_t count_idle(const struct sandbox *sb)
{
    uint32_t n = 0;
    for (const struct child *c = sb->children; c != NULL; c = c->next)
        n += c->spawned && c->state == C_IDLE;
    return n;
}

/* Children started and not dying. */
static uint32_t live_children(const struct sandbox *sb)
{
    uint32_t n = 0;
    for (const struct child *c = sb->children; c != NULL; c = c->next)
        n += c->spawned && c->state != C_DYING;
    return n;
}

static void pump(struct sandbox *sb)
{
    if (sb->closing)
        return;
    bool failed = false;
    while (sb->head != NULL) {
        struct child *c = idle_child(sb);
        if (c == NULL) {
            if (sb->n_children >= sb->cfg.max)
                break;
            failed = spawn(sb) != 0;
            if (failed)
                break;
            continue;
        }
        struct job *j = sb->head;
        sb->head = j->next;
        if (sb->head == NULL)
            sb->tail = NULL;
        sb->n_queued--;
        j->next = NULL;
        assign(c, j);
    }
    if (sb->head != NULL && failed && live_children(sb) == 0) {
        /* Nothing runs and nothing can be started: fail rather than wait. */
        while (sb->head != NULL) {
            struct job *j = sb->head;
            sb->head = j->next;
            sb->n_queued--;
            job_answer(j, TR_EUNAVAIL, "%s: no sandbox process can be started", j->name);
        }
        sb->tail = NULL;
    }
    /* Warm children: `warm` idle ones ready beside the busy ones, so that a
     * burst of slow files does not make an ordinary one wait for an exec.
     * After a failed start, none before a second has passed, so that a
     * binary that cannot start does not make the loop spin. */
    bool cooled = sb->last_fail_ms == 0 || uv_now(sb->loop) >= sb->last_fail_ms + 1000;
    while (cooled && count_idle(sb) < sb->cfg.warm && sb->n_children < sb->cfg.max) {
        if (spawn(sb) != 0)
            break;
    }
}

/* ====================================================================== */
/* Interface                                                               */
/* ====================================================================== */

int sandbox_open(uv_loop_t *loop, const struct sandbox_config *cfg, struct sandbox **out,
                 struct tr_error *err)
{
    struct sandbox *sb = tr_calloc(1, sizeof(*sb));
    if (sb == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    sb->loop = loop;
    sb->cfg = *cfg;
    if (sb->cfg.max == 0)
        sb->cfg.max = 16;
    if (sb->cfg.warm > sb->cfg.max)
        sb->cfg.warm = sb->cfg.max;
    snprintf(sb->exe, sizeof(sb->exe), "%s", cfg->exe);
    /* A binary started as a child that does not know the hidden mode (a test
     * program, say) would start children of its own, and so on: refused. */
    if (getenv(SANDBOX_ENV_MARK) != NULL) {
        tr_free(sb);
        return tr_error_set(err, TR_EINVAL, "a sandbox process cannot start a sandbox (%s is "
                            "set)", SANDBOX_ENV_MARK);
    }
    sb->env = env_with_mark();
    if (sb->env == NULL) {
        tr_free(sb);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    snprintf(sb->ppid, sizeof(sb->ppid), "%ld", (long)getpid());
    snprintf(sb->mem, sizeof(sb->mem), "%zu", cfg->limits.mem_max);
    for (uint32_t i = 0; i < sb->cfg.warm; i++) {
        int rc = spawn(sb);
        if (rc < 0) {
            sandbox_close(sb);
            return tr_error_set(err, rc, "cannot start the pipeline sandbox (%s): %s", cfg->exe,
                                uv_strerror(rc));
        }
    }
    *out = sb;
    return 0;
}

void sandbox_close(struct sandbox *sb)
{
    if (sb == NULL)
        return;
    sb->closing = true;
    while (sb->head != NULL) {
        struct job *j = sb->head;
        sb->head = j->next;
        job_answer(j, TR_ECANCELED, "pipeline load cancelled: the scheduler is stopping");
    }
    sb->tail = NULL;
    sb->n_queued = 0;
    for (struct job *j = sb->decoding; j != NULL; j = j->next)
        cancel_decoding(j);
    for (struct child *c = sb->children; c != NULL; c = c->next) {
        struct job *j = c->job;
        c->job = NULL;
        if (c->spawned)
            child_kill(c);
        if (j != NULL)
            job_answer(j, TR_ECANCELED, "pipeline load cancelled: the scheduler is stopping");
    }
    sandbox_maybe_free(sb);
}

static struct job *job_new(struct sandbox *sb, enum job_op op, const char *src, size_t len,
                           const char *name)
{
    struct job *j = tr_calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->sb = sb;
    j->op = op;
    j->id = ++sb->next_id;
    j->src = tr_strndup(src, len);
    j->len = len;
    j->name = tr_strdup(name);
    tr_error_init(&j->err);
    tr_sha256_hex(src, len, j->digest);
    if (j->src == NULL || j->name == NULL || j->digest[0] == '\0') {
        job_free(j);
        return NULL;
    }
    return j;
}

static int job_enqueue(struct sandbox *sb, struct job *j)
{
    int rc = job_encode(j, &sb->cfg.limits);
    if (rc < 0) {
        job_free(j);
        return rc;
    }
    if (sb->tail != NULL)
        sb->tail->next = j;
    else
        sb->head = j;
    sb->tail = j;
    sb->n_queued++;
    pump(sb);
    return 0;
}

int sandbox_load(struct sandbox *sb, const char *src, size_t len, const char *name,
                 sandbox_load_fn done, void *arg)
{
    if (sb->closing)
        return TR_ECANCELED;
    struct job *j = job_new(sb, OP_LOAD, src, len, name);
    if (j == NULL)
        return TR_ENOMEM;
    j->done = done;
    j->arg = arg;
    return job_enqueue(sb, j);
}

int sandbox_when(struct sandbox *sb, const char *src, size_t len, const char *name,
                 const char *trigger, const void *stats, size_t stats_len, sandbox_when_fn done,
                 void *arg)
{
    if (sb->closing)
        return TR_ECANCELED;
    struct job *j = job_new(sb, OP_WHEN, src, len, name);
    if (j == NULL)
        return TR_ENOMEM;
    j->when_done = done;
    j->arg = arg;
    j->trigger = tr_strdup(trigger);
    j->stats = tr_memdup(stats, stats_len ? stats_len : 1);
    j->stats_len = stats_len;
    if (j->trigger == NULL || j->stats == NULL) {
        job_free(j);
        return TR_ENOMEM;
    }
    return job_enqueue(sb, j);
}

void sandbox_get_stats(const struct sandbox *sb, struct sandbox_stats *out)
{
    *out = sb->stats;
    out->alive = sb->n_children;
    out->queued = sb->n_queued;
}
