/*
 * bench_h.c - workload H: 2,000 tasks, each one HTTP call that a local server
 * answers after 200 ms, on one worker with 1,000 slots (issue 4's target:
 * under 1.5 s).
 *
 * The server is bench/slow_server.py (--h-server): one asyncio loop that
 * answers every request after the `ms` of its query string (--h-latency-ms),
 * listens with a backlog of 4,096 and counts the most requests it held at
 * once (max_in_flight in GET /stats), which H reports as in_flight. The
 * requests are chat completions for the model "latency-<ms>", so that
 * tests/llm/fake_llm.py answers them the same way (--h-server PATH to it);
 * with its thread per connection it measures its own thread start-up too. The cluster is
 * a scheduler of its own and one trellis-worker --slots 1000 (--h-slots). The
 * time is W1's: from the POST of the run until the client holds its finished
 * answer, after the usual warm-up run. The server alone sets a floor of
 * ceil(n / slots) x latency: 0.4 s for the defaults.
 *
 * A thousand calls in flight hold a thousand sockets in the worker and in the
 * server: the soft limit on open files is raised to the hard limit before
 * they start (children inherit it).
 */
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "lib/base/alloc.h"

/* Seconds the server gets to print its port. */
#define SERVER_START_S 15.0

static void raise_nofile(rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            tr_bench_log("H: cannot raise the open-file limit: %s", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < need)
        tr_bench_log("H: warning: open files are limited to %llu, fewer than the %llu the "
                     "calls in flight need (raise the hard limit: ulimit -Hn)",
                     (unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

/* The port the server prints as its first line; 0 until the line is whole. */
static int read_port(const char *log_path)
{
    FILE *f = fopen(log_path, "r");
    if (f == NULL)
        return 0;
    char line[64];
    int port = 0;
    if (fgets(line, sizeof(line), f) != NULL) {
        char *end;
        long v = strtol(line, &end, 10);
        if (end != line && *end == '\n' && v > 0 && v < 65536)
            port = (int)v;
    }
    fclose(f);
    return port;
}

/* Starts the server in dir and waits for its port. */
static int start_server(const struct tr_bench_opts *o, const char *dir, pid_t *pid, int *port,
                        struct tr_error *err)
{
    const char *py = getenv("PYTHON");
    if (py == NULL || py[0] == '\0')
        py = "/usr/bin/python3";
    char log[320];
    snprintf(log, sizeof(log), "%s/h-server.log", dir);
    char *argv[] = {(char *)py, o->h_server, NULL};
    int rc = tr_bench_spawn(argv, dir, log, pid, err);
    if (rc < 0)
        return rc;
    uint64_t deadline = tr_mono_ns() + (uint64_t)(SERVER_START_S * 1e9);
    while ((*port = read_port(log)) == 0) {
        int st;
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            tr_bench_stop_pid(pid, "H's server");
            return tr_error_set(err, TR_EIO, "H's server '%s %s' exited at start; see %s", py,
                                o->h_server, log);
        }
        if (tr_mono_ns() >= deadline)
            return tr_error_set(err, TR_ETIMEDOUT,
                                "H's server '%s %s' printed no port within %.0f s; see %s", py,
                                o->h_server, SERVER_START_S, log);
        tr_bench_sleep(0.05);
    }
    return 0;
}

/* Adds the server's max_in_flight to r as in_flight (logged, not failed, when unreadable). */
static void add_in_flight(int port, struct tr_bench_result *r)
{
    char hostport[32];
    snprintf(hostport, sizeof(hostport), "127.0.0.1:%d", port);
    struct tr_bench_http *h = tr_bench_http_new(hostport);
    struct tr_error err;
    tr_error_init(&err);
    json_t *stats = NULL;
    if (h == NULL || tr_bench_get_json(h, "/stats", 10.0, &stats, &err) < 0) {
        tr_bench_log("H: cannot read the server's /stats: %s", h ? err.msg : "out of memory");
    } else {
        json_t *m = json_object_get(stats, "max_in_flight");
        if (json_is_integer(m))
            tr_bench_field_add(r, "in_flight", (double)json_integer_value(m), 0);
    }
    json_decref(stats);
    tr_bench_http_free(h);
}

void tr_bench_run_h(const struct tr_bench_opts *o, struct tr_bench_result *r)
{
    r->ran = true;
    r->ok = true;
    struct tr_error err;
    tr_error_init(&err);
    raise_nofile((rlim_t)o->h_slots + 256);
    struct tr_bench_opts one = *o;
    one.workers = 1;
    one.slots = o->h_slots;
    struct tr_bench_cluster c;
    if (tr_bench_cluster_start(&c, &one, "h", &err) < 0) {
        tr_bench_log("cannot run H: %s", err.msg);
        tr_bench_fail(r, &err);
        return;
    }
    pid_t server = 0;
    int port = 0;
    if (start_server(o, c.dir, &server, &port, &err) < 0 ||
        tr_bench_warmup(&c, &one, &err) < 0) {
        tr_bench_log("cannot run H: %s", err.msg);
        tr_bench_fail(r, &err);
        tr_bench_stop_pid(&server, "H's server");
        tr_bench_cluster_stop(&c, true);
        return;
    }
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions?ms=%u", port,
             o->h_latency_ms);
    tr_bench_log("H: starting: %u tasks, each one call answered after %u ms, one worker "
                 "with %u slots", o->n[TR_BENCH_HTTP], o->h_latency_ms, o->h_slots);
    tr_bench_h(&c, &one, url, r);
    if (r->ok)
        add_in_flight(port, r);
    if (tr_bench_cluster_check(&c, &err) < 0)
        tr_bench_fail(r, &err);
    tr_bench_stop_pid(&server, "H's server");
    tr_bench_cluster_stop(&c, o->keep || !r->ok);
}
