/*
 * sandbox_child.c - the hidden mode `trellis-scheduler --sandbox-child`.
 *
 * Started by sandbox.c with a pipe on stdin and one on stdout (stderr is
 * /dev/null), it reads one request frame at a time, evaluates it and writes
 * the reply frame. Blocking I/O: the child does one thing at a time and the
 * parent watches the clock.
 *
 * Fences, in the order they are set up: the parent's death kills the child
 * (PR_SET_PDEATHSIG, checked against the pid the parent gave, since the
 * parent may have died before prctl); every file descriptor but 0, 1 and 2
 * is closed (the scheduler's database, sockets and epoll must not be
 * reachable even through a bug in the Lua sandbox); no core files; the
 * address space is capped at what the process maps at start plus the Lua
 * memory limit plus a margin (RLIMIT_AS, skipped under AddressSanitizer,
 * whose shadow memory needs terabytes of address space); and before each
 * evaluation RLIMIT_CPU is set to the CPU time used so far plus the wall
 * limit plus two seconds, so a child the parent somehow failed to kill
 * still dies by SIGXCPU.
 */
#include "scheduler/sandbox.h"

#include <dirent.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/lua/pipeline_codec.h"
#include "lib/wire/mp_read.h"

#if defined(__SANITIZE_ADDRESS__)
#define CHILD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHILD_ASAN 1
#endif
#endif

#define AS_MARGIN (128u << 20)

/* 0, 1 at EOF before the first byte, -1 on an error or a short read. */
static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r == 0 && got == 0 ? 1 : -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n)
{
    size_t put = 0;
    while (put < n) {
        ssize_t w = write(fd, (const char *)p + put, n - put);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        put += (size_t)w;
    }
    return 0;
}

static void close_other_fds(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
        return;
    }
    int keep = dirfd(d);
    int fds[1024];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < TR_ARRAY_LEN(fds)) {
        int fd = (int)strtol(e->d_name, NULL, 10);
        if (fd > 2 && fd != keep)
            fds[n++] = fd;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void cap_address_space(size_t mem_max)
{
#ifndef CHILD_ASAN
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    if (pages == 0 || mem_max == 0)
        return;
    rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + mem_max + AS_MARGIN;
    struct rlimit rl = {cap, cap};
    (void)setrlimit(RLIMIT_AS, &rl);
#else
    (void)mem_max;
#endif
}

static void cap_cpu(double wall_max_s)
{
    struct rusage ru;
    if (wall_max_s <= 0 || getrusage(RUSAGE_SELF, &ru) != 0)
        return;
    rlim_t used = (rlim_t)ru.ru_utime.tv_sec + (rlim_t)ru.ru_stime.tv_sec + 1;
    struct rlimit rl = {used + (rlim_t)wall_max_s + 2, RLIM_INFINITY};
    (void)setrlimit(RLIMIT_CPU, &rl);
}

struct request
{
    struct tr_str op;
    uint64_t id;
    struct tr_str name;
    struct tr_str src;
    struct tr_pipeline_limits lim;
    struct tr_str trigger;  /* "when" */
    struct tr_str stats;
};

static int parse_request(const void *p, size_t len, struct request *rq)
{
    struct tr_mp_rd r;
    tr_mp_rd_init(&r, p, len);
    rq->lim = tr_pipeline_default_limits;
    uint32_t n = tr_mp_rd_map(&r);
    for (uint32_t i = 0; i < n && r.err == 0; i++) {
        struct tr_str k = tr_mp_rd_str(&r);
        if (tr_str_eq(k, "op"))
            rq->op = tr_mp_rd_str(&r);
        else if (tr_str_eq(k, "id"))
            rq->id = tr_mp_rd_uint(&r);
        else if (tr_str_eq(k, "name"))
            rq->name = tr_mp_rd_str(&r);
        else if (tr_str_eq(k, "src"))
            rq->src = tr_mp_rd_bytes(&r);
        else if (tr_str_eq(k, "mem_max"))
            rq->lim.mem_max = (size_t)tr_mp_rd_uint(&r);
        else if (tr_str_eq(k, "instr_max"))
            rq->lim.instr_max = tr_mp_rd_uint(&r);
        else if (tr_str_eq(k, "wall_max"))
            rq->lim.wall_max_s = tr_mp_rd_double(&r);
        else if (tr_str_eq(k, "max_tasks"))
            rq->lim.max_tasks = (uint32_t)tr_mp_rd_uint(&r);
        else if (tr_str_eq(k, "trigger"))
            rq->trigger = tr_mp_rd_str(&r);
        else if (tr_str_eq(k, "stats"))
            rq->stats = tr_mp_rd_bytes(&r);
        else
            tr_mp_rd_skip(&r);
    }
    return r.err;
}

static int pack_str(msgpack_packer *pk, const char *k, const char *v)
{
    size_t kn = strlen(k), vn = strlen(v);
    return msgpack_pack_str(pk, kn) || msgpack_pack_str_body(pk, k, kn) ||
           msgpack_pack_str(pk, vn) || msgpack_pack_str_body(pk, v, vn);
}

/* The reply frame into sb: length, {"id","rc","msg"[,"value"]}, then def when there is one;
 * verdict is -1 for a reply without "value". */
static int reply(msgpack_sbuffer *sb, uint64_t id, const struct tr_error *err,
                 const struct tr_pipeline_def *def, int verdict)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    static const char zero[4];
    int rc = msgpack_sbuffer_write(sb, zero, 4);
    rc = rc || msgpack_pack_map(&pk, verdict >= 0 ? 4 : 3) || msgpack_pack_str(&pk, 2) ||
         msgpack_pack_str_body(&pk, "id", 2) || msgpack_pack_uint64(&pk, id) ||
         msgpack_pack_str(&pk, 2) || msgpack_pack_str_body(&pk, "rc", 2) ||
         msgpack_pack_int(&pk, err->code) || pack_str(&pk, "msg", err->msg);
    if (rc == 0 && verdict >= 0)
        rc = msgpack_pack_str(&pk, 5) || msgpack_pack_str_body(&pk, "value", 5) ||
             (verdict ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
    if (rc == 0 && def != NULL)
        rc = tr_pipeline_def_pack(&pk, def, false);
    if (rc != 0 || sb->size - 4 > SANDBOX_RESP_MAX)
        return TR_ENOMEM;
    uint32_t n = (uint32_t)(sb->size - 4);
    unsigned char *h = (unsigned char *)sb->data;
    h[0] = (unsigned char)(n >> 24);
    h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8);
    h[3] = (unsigned char)n;
    return 0;
}

/* Answers one request into sb. */
static void serve(const char *body, size_t len, msgpack_sbuffer *sb)
{
    struct request rq = {0};
    struct tr_error err;
    tr_error_init(&err);
    struct tr_pipeline_def *def = NULL;
    int verdict = -1;
    char name[256] = "";
    if (parse_request(body, len, &rq) != 0) {
        tr_error_set(&err, TR_EPROTO, "malformed sandbox request");
    } else if (tr_str_eq(rq.op, "when")) {
        snprintf(name, sizeof(name), "%.*s", (int)TR_MIN(rq.name.len, 255), rq.name.p);
        char trigger[256];
        snprintf(trigger, sizeof(trigger), "%.*s", (int)TR_MIN(rq.trigger.len, 255),
                 rq.trigger.p);
        /* Two evaluations (the file, then the call): twice the CPU fence. */
        cap_cpu(2 * rq.lim.wall_max_s);
        bool v = false;
        if (tr_pipeline_when(rq.src.p, rq.src.len, name, &rq.lim, trigger, rq.stats.p,
                             rq.stats.len, &v, &err) == 0)
            verdict = v;
    } else if (tr_str_eq(rq.op, "load")) {
        snprintf(name, sizeof(name), "%.*s", (int)TR_MIN(rq.name.len, 255), rq.name.p);
        cap_cpu(rq.lim.wall_max_s);
        int rc = tr_pipeline_load(rq.src.p, rq.src.len, name, &rq.lim, &def, &err);
        if (rc < 0 && err.code == 0)
            tr_error_set(&err, rc, "cannot load pipeline '%s': %s", name, tr_strerror(rc));
    } else {
        tr_error_set(&err, TR_EINVAL, "unknown sandbox request '%.*s'",
                     (int)TR_MIN(rq.op.len, 64), rq.op.p);
    }
    if (reply(sb, rq.id, &err, def, verdict) != 0) {
        struct tr_error big;
        tr_error_init(&big);
        tr_error_set(&big, TR_ELIMIT, "pipeline graph too large to return (over %u MiB)",
                     SANDBOX_RESP_MAX >> 20);
        if (reply(sb, rq.id, &big, NULL, -1) != 0)
            msgpack_sbuffer_clear(sb);
    }
    tr_pipeline_def_free(def);
}

int sandbox_child_main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    pid_t parent = (pid_t)strtol(argv[2], NULL, 10);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        return 1;
    close_other_fds();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
    cap_address_space((size_t)strtoull(argv[3], NULL, 10));

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char *body = NULL;
    int code = 0;
    for (;;) {
        unsigned char h[4];
        int r = read_full(0, h, 4);
        if (r != 0) {
            code = r < 0;
            break;
        }
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n > SANDBOX_REQ_MAX || (body = tr_malloc(n ? n : 1)) == NULL ||
            read_full(0, body, n) != 0) {
            code = 1;
            break;
        }
        serve(body, n, &sb);
        tr_free_null(&body);
        if (sb.size == 0 || write_full(1, sb.data, sb.size) != 0) {
            code = 1;
            break;
        }
        /* Give back what a large graph left in the heap before waiting. */
        msgpack_sbuffer_destroy(&sb);
        msgpack_sbuffer_init(&sb);
        malloc_trim(0);
    }
    tr_free(body);
    msgpack_sbuffer_destroy(&sb);
    return code;
}
